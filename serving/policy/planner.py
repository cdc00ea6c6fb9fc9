"""Plan the remaining retries of an invoice: dynamic programming over (retry index, time slot).

The value of making the k-th remaining retry at slot t is what it recovers now, discounted for
the wait, minus the attempt's cost, plus — if it fails — the best value of the retries still
allowed after the spacing:

    V_k(t) = p_k(t)·A·d(t) − c + (1 − p_k(t))·max(0, max_{t' ≥ t + spacing} V_{k+1}(t'))

computed backwards with suffix maxima, so the whole plan is O(B·n) numpy work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Plan:
    """The planned retries (possibly none), earliest first."""

    slots: tuple[int, ...]  # index of each planned retry's time in the candidate times
    times: tuple[pd.Timestamp, ...]
    probabilities: tuple[float, ...]  # p_k at each planned time
    value: float  # V_0 of the first retry, in the amount's units (≤ 0 → not worth it)
    best_slot: int | None  # argmax of V_0, even when not worth an attempt

    @property
    def total_probability(self) -> float:
        """Probability that at least one planned retry succeeds: 1 − Π(1 − p_k)."""
        return float(1.0 - np.prod(1.0 - np.asarray(self.probabilities, dtype=np.float64)))

    def expected_hours_to_recovery(self, now: pd.Timestamp) -> float | None:
        """Expected hours from `now` to the first success, given that the plan recovers the invoice."""
        p = np.asarray(self.probabilities, dtype=np.float64)
        total = 1.0 - np.prod(1.0 - p)
        if len(p) == 0 or total <= 0.0:
            return None
        # P(the k-th retry is the first success) = p_k · Π_{j<k} (1 − p_j).
        first_success = p * np.concatenate([[1.0], np.cumprod(1.0 - p)[:-1]])
        hours = np.array([(t - now) / pd.Timedelta(hours=1) for t in self.times], dtype=np.float64)
        return float(np.dot(first_success, hours) / total)


def discount_factors(hours_from_now: FloatArray, discount_per_day: float) -> FloatArray:
    """(1 − r)^days: a unit recovered later is worth a little less."""
    days = np.maximum(hours_from_now, 0.0) / 24.0
    return np.power(1.0 - discount_per_day, days)


def suffix_argmax(values: FloatArray) -> tuple[FloatArray, IntArray]:
    """For each j, max(values[j:]) and the earliest index reaching it (ties prefer earlier)."""
    n = len(values)
    best = np.maximum.accumulate(values[::-1])[::-1]
    # values[j] == best[j] marks a slot no later slot beats; the earliest such slot at or after
    # j holds the suffix maximum, and being earliest it is the tie-break we want.
    index = np.where(values == best, np.arange(n), n)
    first = np.minimum.accumulate(index[::-1])[::-1]
    return best, first.astype(np.int64)


def plan_retries(
    times: pd.DatetimeIndex,
    probs: FloatArray,
    amount: float,
    spacing_hours: float,
    attempt_cost: float,
    discount_per_day: float,
    now: pd.Timestamp,
) -> Plan:
    """Best schedule of up to B = probs.shape[0] retries at the given times (sorted, UTC).

    `probs[k, t]` is the success probability of the k-th remaining retry at `times[t]`;
    `attempt_cost` is in the amount's units. Retries are at least `spacing_hours` apart.
    """
    budget, n = probs.shape
    if budget == 0 or n == 0:
        return Plan((), (), (), 0.0, None)
    hours = np.asarray((times - now) / pd.Timedelta(hours=1), dtype=np.float64)
    gain = amount * discount_factors(hours, discount_per_day)
    # nxt[t]: the first slot at least `spacing` after slot t (n when none is left).
    nxt = np.searchsorted(hours, hours + spacing_hours, side="left")

    values = np.empty((budget, n), dtype=np.float64)
    arg_next = np.empty((budget, n), dtype=np.int64)
    later = np.zeros(n, dtype=np.float64)  # max(0, best V_{k+1} reachable after each slot)
    for k in range(budget - 1, -1, -1):
        p = probs[k]
        values[k] = p * gain - attempt_cost + (1.0 - p) * later
        best, arg_next[k] = suffix_argmax(values[k])
        padded = np.append(np.maximum(best, 0.0), 0.0)  # index n: nothing left in the window
        later = padded[nxt]

    first = int(np.argmax(values[0]))  # argmax returns the earliest of equal maxima
    if values[0, first] <= 0.0:
        return Plan((), (), (), float(values[0, first]), first)
    slots = [first]
    for k in range(1, budget):
        start = int(nxt[slots[-1]])
        if start >= n:
            break
        slot = int(arg_next[k, start])
        if values[k, slot] <= 0.0:
            break
        slots.append(slot)
    return Plan(
        slots=tuple(slots),
        times=tuple(times[s] for s in slots),
        probabilities=tuple(float(probs[k, s]) for k, s in enumerate(slots)),
        value=float(values[0, first]),
        best_slot=first,
    )
