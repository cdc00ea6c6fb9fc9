"""Non-learned retry policies for the closed-loop evaluation: fixed schedules, a payday heuristic, hyperswitch.

Each policy is a function `next_retry(state) -> times` over the invoices still being retried,
returning the UTC time of each one's next retry, or NaT to stop. Policies see only what a billing
scheduler knows (`LoopState`), never the simulator's truth. They know no card-network rules on
purpose: the evaluator measures their rule violations instead of hiding them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr

from features.geo import resolve_timezones
from features.taxonomy import decline_category
from features.timing import local_time_features, to_local_wall_time

NS_PER_HOUR = 3_600_000_000_000
NS_PER_DAY = 24 * NS_PER_HOUR
NAT = np.iinfo(np.int64).min  # pandas' integer view of NaT


@dataclass(frozen=True)
class LoopState:
    """What a policy may see of the invoices it is asked about: facts a scheduler has, no truth.

    Times are int64 ns since the epoch (UTC). `times` and the code matrices hold every attempt
    so far, column j being attempt j (the first failure is column 0); columns past
    `retries_made` are NaT / None.
    """

    invoice_ids: np.ndarray
    context: pd.DataFrame  # observable invoice columns (amount, currency, card_*, customer_timezone, ...)
    retries_made: np.ndarray  # retries after the first failure, so far
    max_retries: int
    window_end: np.ndarray  # last moment a retry may happen
    times: np.ndarray  # (n, max_retries + 1) attempt times
    decline_codes: np.ndarray  # (n, max_retries + 1)
    network_codes: np.ndarray
    advice_codes: np.ndarray
    # When the account updater refreshed the card (int64 ns, NaT when it never does): a scheduler
    # learns it through a card-update event at that time, and may ask for a new decision then.
    card_updated_at: np.ndarray | None = None

    def subset(self, rows: np.ndarray) -> LoopState:
        """The state of some of the invoices (positions in this state)."""
        return LoopState(
            invoice_ids=self.invoice_ids[rows],
            context=self.context.iloc[rows].reset_index(drop=True),
            retries_made=self.retries_made[rows],
            max_retries=self.max_retries,
            window_end=self.window_end[rows],
            times=self.times[rows],
            decline_codes=self.decline_codes[rows],
            network_codes=self.network_codes[rows],
            advice_codes=self.advice_codes[rows],
            card_updated_at=None if self.card_updated_at is None else self.card_updated_at[rows],
        )

    @property
    def rows(self) -> np.ndarray:
        """0..n-1, to index the attempt matrices."""
        return np.arange(len(self.invoice_ids))

    @property
    def first_at(self) -> np.ndarray:
        """Time of the first (failed) charge."""
        return self.times[:, 0]

    @property
    def last_at(self) -> np.ndarray:
        """Time of the latest attempt."""
        return self.times[self.rows, self.retries_made]

    @property
    def last_decline_code(self) -> np.ndarray:
        """Decline code of the latest attempt."""
        return self.decline_codes[self.rows, self.retries_made]

    @property
    def timezones(self) -> pd.Series:
        """The customer's zone, else the card country's default zone (what the feature library uses)."""
        return resolve_timezones(
            self.context["customer_timezone"].reset_index(drop=True),
            self.context["card_country"].reset_index(drop=True),
        )


Policy = Callable[[LoopState], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Fixed schedules (Kill Bill, Lago, Polar, Stripe's "8 tries in 2 weeks"): days after the first failure.
# ---------------------------------------------------------------------------------------------
def spread_days(tries: int, days: float) -> tuple[int, ...]:
    """`tries` retries spread evenly over `days`, rounded to whole days (half up) to keep the clock time."""
    return tuple(int(np.floor(days * i / tries + 0.5)) for i in range(1, tries + 1))


def cumulative_days(gaps: Sequence[float]) -> tuple[float, ...]:
    """Retry days after the first failure from the gaps between retries."""
    return tuple(float(x) for x in np.cumsum(gaps))


FIXED_SCHEDULES: dict[str, tuple[float, ...]] = {
    "fixed_1_3_5_7": (1, 3, 5, 7),
    "fixed_8_in_14": spread_days(8, 14),  # Stripe's recommendation: 2, 4, 5, 7, 9, 11, 12, 14
    "fixed_every_8_days": (8, 16, 24, 32, 40, 48, 56, 64),  # Kill Bill's 8, 8, 8
    "fixed_2_5_7_7": cumulative_days((2, 5, 7, 7)),  # Polar: 2, 7, 14, 21
}


def fixed_schedule(days: Sequence[float]) -> Policy:
    """Retry k (k = 0, 1, ...) at first failure + days[k], the same clock time; stop past the list."""
    offsets = (np.asarray(days, dtype=np.float64) * NS_PER_DAY).astype(np.int64)

    def next_retry(state: LoopState) -> np.ndarray:
        k = state.retries_made
        has = k < offsets.size
        return np.where(has, state.first_at + offsets[np.minimum(k, offsets.size - 1)], NAT)

    return next_retry


# ---------------------------------------------------------------------------------------------
# A payday heuristic: the next 1st, 15th or Friday at 10:00 local time.
# ---------------------------------------------------------------------------------------------
PAYDAY_HOUR = 10
PAYDAY_MONTH_DAYS = (1, 15)
FRIDAY = 4


def localize(local_ns: np.ndarray, zones: pd.Series) -> np.ndarray:
    """UTC ns of local wall-clock times in each row's zone (DST gap: shifted forward; overlap: first)."""
    out = np.empty(local_ns.shape, dtype=np.int64)
    for zone, index in zones.groupby(zones.to_numpy(), sort=False).groups.items():
        rows = np.asarray(index)
        wall = pd.DatetimeIndex(local_ns[rows].view("M8[ns]"))
        utc = wall.tz_localize(str(zone), ambiguous=np.ones(rows.size, dtype=bool), nonexistent="shift_forward")
        out[rows] = utc.tz_convert("UTC").as_unit("ns").asi8
    return out


def local_ns(utc_ns: np.ndarray, zones: pd.Series) -> np.ndarray:
    """Local wall-clock time (ns, naive) of UTC instants in each row's zone."""
    at = pd.Series(pd.DatetimeIndex(utc_ns.view("M8[ns]")).tz_localize("UTC"))
    local = to_local_wall_time(at, zones.reset_index(drop=True))
    return np.asarray(local, dtype="datetime64[ns]").view(np.int64)


def payday_heuristic(state: LoopState, spacing_hours: float = 24) -> np.ndarray:
    """The first 1st, 15th or Friday at 10:00 local time that is at least `spacing_hours` after the last attempt."""
    zones = state.timezones
    earliest = state.last_at + int(spacing_hours * NS_PER_HOUR)
    day0 = local_ns(earliest, zones) // NS_PER_DAY
    # A Friday comes every 7 days, so 8 days ahead (the first one may be too early in the day) always hold one.
    days = day0[:, None] + np.arange(9)[None, :]
    dates = days.astype("datetime64[D]")
    month_day = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    payday = np.isin(month_day, PAYDAY_MONTH_DAYS) | (weekday == FRIDAY)
    wall = days * NS_PER_DAY + PAYDAY_HOUR * NS_PER_HOUR
    utc = localize(wall.ravel(), zones.repeat(days.shape[1]).reset_index(drop=True)).reshape(days.shape)
    ok = payday & (utc >= earliest[:, None])
    first = ok.argmax(axis=1)
    return np.where(ok.any(axis=1), utc[state.rows, first], NAT)


# ---------------------------------------------------------------------------------------------
# hyperswitch's statistical slot scorer, ported from its public description (no code copied):
# per failure cluster, Laplace-smoothed success rates per local weekday, day of month and hour;
# each slot scored by its confidence of beating every other slot; softmax over the candidate
# days of each calendar axis (max of the two per day) and over the hours; budget-aware pick.
# ---------------------------------------------------------------------------------------------
AXES: dict[str, int] = {"local_weekday": 7, "local_day": 31, "local_hour": 24}
ALL_CLUSTERS = "*"


@dataclass(frozen=True)
class SlotCounts:
    """Retries and successes per slot of each calendar axis, for one failure cluster."""

    trials: Mapping[str, np.ndarray]  # axis -> counts per slot (weekday 0-6, day 1-31 at index 0-30, hour 0-23)
    successes: Mapping[str, np.ndarray]


def laplace_rate(successes: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """(k + 1) / (n + 2): an unseen slot sits at 1/2 instead of an undefined or extreme rate."""
    return (successes + 1.0) / (trials + 2.0)


def relative_scores(successes: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Each slot's score against the others: the mean log-odds of its confidence of beating each one.

    Confidence that slot i beats slot j: Φ((p̂ᵢ − p̂ⱼ) / √(SEᵢ² + SEⱼ²)) on Laplace rates, so a slot
    seen a handful of times cannot dominate. Slots never tried carry no evidence and score 0
    (neutral), which also keeps them from hijacking the pick.
    """
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    p = laplace_rate(successes, trials)
    se2 = p * (1.0 - p) / (trials + 2.0)
    seen = trials > 0
    z = (p[:, None] - p[None, :]) / np.sqrt(se2[:, None] + se2[None, :])
    c = np.clip(ndtr(z), 1e-6, 1 - 1e-6)
    logit = np.log(c / (1.0 - c))
    others = seen[None, :] & ~np.eye(p.size, dtype=bool)
    n_others = others.sum(axis=1)
    score = np.where(others, logit, 0.0).sum(axis=1) / np.maximum(n_others, 1)
    return np.where(seen, score, 0.0)


def masked_softmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax along the last axis over the entries where `mask` holds (0 elsewhere; all 0 if none)."""
    x = np.where(mask, scores, -np.inf)
    top = np.max(x, axis=-1, keepdims=True)
    e = np.where(mask, np.exp(x - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def retry_history(attempts: pd.DataFrame) -> pd.DataFrame:
    """The retries of a history (attempt 2+ up to the first success) with the cluster and local calendar slot."""
    ordered = attempts.sort_values(["invoice_id", "attempted_at"], kind="stable").reset_index(drop=True)
    by_invoice = ordered.groupby("invoice_id", sort=False)
    number = by_invoice.cumcount()
    previous_code = by_invoice["decline_code"].shift(1)
    wins_before = by_invoice["succeeded"].cumsum() - ordered["succeeded"].astype(int)
    keep = (number >= 1) & (wins_before == 0)
    rows = ordered.loc[keep].reset_index(drop=True)
    zones = resolve_timezones(rows["customer_timezone"], rows["card_country"])
    calendar = local_time_features(rows["attempted_at"], zones)  # the feature library's local calendar
    return pd.DataFrame(
        {
            "cluster": decline_category(previous_code.loc[keep].reset_index(drop=True)).astype(str).to_numpy(),
            "local_weekday": calendar["local_weekday"].to_numpy(dtype=np.int64),
            "local_day": calendar["local_day"].to_numpy(dtype=np.int64) - 1,
            "local_hour": calendar["local_hour"].to_numpy(dtype=np.int64),
            "succeeded": rows["succeeded"].astype(bool).to_numpy(),
        }
    )


def slot_counts(retries: pd.DataFrame) -> SlotCounts:
    """Trials and successes per slot of each axis over the given retries."""
    trials = {a: np.bincount(retries[a].to_numpy(int), minlength=n).astype(float) for a, n in AXES.items()}
    wins = {
        a: np.bincount(retries[a].to_numpy(int), weights=retries["succeeded"].to_numpy(float), minlength=n)
        for a, n in AXES.items()
    }
    return SlotCounts(trials, wins)


@dataclass(frozen=True)
class HyperswitchModel:
    """Slot scores per failure cluster (the decline category being retried), with a pooled fallback."""

    scores: Mapping[str, Mapping[str, np.ndarray]]  # cluster -> axis -> score per slot

    def axis_scores(self, clusters: np.ndarray, axis: str) -> np.ndarray:
        """(n, slots) scores of one axis for each row's cluster (pooled when the cluster is unseen)."""
        table = np.stack([self.scores.get(str(c), self.scores[ALL_CLUSTERS])[axis] for c in clusters])
        return table.reshape(len(clusters), AXES[axis])


def fit_hyperswitch(attempts: pd.DataFrame, min_cluster_retries: int = 200) -> HyperswitchModel:
    """Slot scores from a history of attempts: pooled, and per cluster with enough retries."""
    retries = retry_history(attempts)

    def scored(part: pd.DataFrame) -> dict[str, np.ndarray]:
        counts = slot_counts(part)
        return {a: relative_scores(counts.successes[a], counts.trials[a]) for a in AXES}

    scores = {ALL_CLUSTERS: scored(retries)}
    for cluster, part in retries.groupby("cluster"):
        if len(part) >= min_cluster_retries:
            scores[str(cluster)] = scored(part)
    return HyperswitchModel(scores)


@dataclass(frozen=True)
class CandidateSlots:
    """Whole-hour candidate retry times of each invoice, with their local calendar positions."""

    utc: np.ndarray  # (n, S) int64 ns, NAT where no candidate
    valid: np.ndarray  # (n, S)
    day_index: np.ndarray  # (n, S) local day of the candidate, counted from the first candidate's local day
    weekday: np.ndarray  # (n, D) of each candidate day
    month_day: np.ndarray  # (n, D), 0-based
    hour: np.ndarray  # (n, S) local hour


def candidate_slots(earliest: np.ndarray, window_end: np.ndarray, zones: pd.Series) -> CandidateSlots:
    """Every whole UTC hour from `earliest` to the window's end, in each invoice's local calendar."""
    start = -((-earliest) // NS_PER_HOUR) * NS_PER_HOUR  # ceil to the hour
    n_slots = int(max(((window_end - start) // NS_PER_HOUR).max(initial=-1) + 1, 1))
    utc = start[:, None] + np.arange(n_slots)[None, :] * NS_PER_HOUR
    valid = utc <= window_end[:, None]
    n = len(earliest)
    local = local_ns(utc.ravel(), zones.repeat(n_slots).reset_index(drop=True)).reshape(n, n_slots)
    day = local // NS_PER_DAY
    day_index = day - day[:, :1]
    n_days = int(day_index.max(initial=0)) + 1
    days = day[:, :1] + np.arange(n_days)[None, :]
    dates = days.astype("datetime64[D]")
    return CandidateSlots(
        utc=np.where(valid, utc, NAT),
        valid=valid,
        day_index=day_index,
        weekday=(days + 3) % 7,
        month_day=(dates - dates.astype("datetime64[M]")).astype(np.int64),
        hour=(local % NS_PER_DAY) // NS_PER_HOUR,
    )


def slot_weights(model: HyperswitchModel, clusters: np.ndarray, slots: CandidateSlots) -> np.ndarray:
    """Weight of each candidate slot, summing to 1 per invoice: day weight × hour weight, renormalised.

    A day's weight is the larger of its weekday and day-of-month softmaxes over the candidate days;
    an hour's is the softmax of the hour scores over the day's 24 hours.
    """
    rows = np.arange(len(clusters))[:, None]
    n_days = slots.weekday.shape[1]
    day_valid = np.stack([(slots.valid & (slots.day_index == d)).any(axis=1) for d in range(n_days)], axis=1)
    dow = model.axis_scores(clusters, "local_weekday")[rows, slots.weekday]
    dom = model.axis_scores(clusters, "local_day")[rows, slots.month_day]
    day_weight = np.maximum(masked_softmax(dow, day_valid), masked_softmax(dom, day_valid))
    hour_scores = model.axis_scores(clusters, "local_hour")
    hour_weight = masked_softmax(hour_scores, np.ones(hour_scores.shape, dtype=bool))
    weight = day_weight[rows, slots.day_index] * hour_weight[rows, slots.hour]
    return masked_softmax(np.log(np.where(slots.valid, weight, 1.0)), slots.valid)


def hyperswitch_policy(model: HyperswitchModel, spacing_hours: float = 24) -> Policy:
    """Retry at the best-weighted slot that leaves room for the remaining retries, `spacing_hours` apart."""
    spacing = int(spacing_hours * NS_PER_HOUR)

    def next_retry(state: LoopState) -> np.ndarray:
        earliest = state.last_at + spacing
        out = np.full(len(state.invoice_ids), NAT, dtype=np.int64)
        open_ = earliest <= state.window_end
        if not open_.any():
            return out
        sub = np.flatnonzero(open_)
        clusters = decline_category(pd.Series(state.last_decline_code[sub], dtype=object)).astype(str).to_numpy()
        slots = candidate_slots(earliest[sub], state.window_end[sub], state.timezones.iloc[sub])
        weights = slot_weights(model, clusters, slots)
        # Runway guard: the retries still allowed after this one must fit before the window ends.
        after = (state.max_retries - state.retries_made[sub] - 1).clip(min=0)
        latest = state.window_end[sub] - after * spacing
        room = slots.valid & (slots.utc <= latest[:, None])
        usable = np.where(room.any(axis=1)[:, None], room, slots.valid)  # no room for all: still use the window
        pick = np.where(usable, weights, -1.0).argmax(axis=1)
        out[sub] = slots.utc[np.arange(sub.size), pick]
        return out

    return next_retry
