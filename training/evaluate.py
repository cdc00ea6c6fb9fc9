"""Closed-loop policy evaluation: replay retry policies against the simulator's truth.

A held-out simulated world (a later period and another seed than the shipped model's training
data) gives failed invoices and, through `World`, the true success probability of any retry. Each
policy decides, after every failure, when to retry next (or to stop) from what a scheduler knows;
the truth decides the outcome. All policies face the same random numbers (common random
numbers): the uniform that decides retry r of invoice i is the same for every policy, so a
difference in recovery is the policies', not the dice's.

Policies: the fixed schedules, the payday heuristic and hyperswitch's slot scorer
(`training/baselines.py`), the learned policy (the served `decide_batch` with the model bundle),
and an oracle (the same `decide_batch` scoring slots with the true probabilities). Baselines know
no card-network rules; their retries that the rules table forbids are counted, not prevented.
A diagnostic policy, run only when named, is the oracle without the customer's pay calendar
(`CalendarBlindScorer`): how much of the oracle's lead no model of the observables could close.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.candidates import FEATURE_COLUMNS, planned_wait
from features.customer import CUSTOMER_CONTEXT_COLUMNS, customer_history, invoice_events
from features.money import amount_usd
from serving.policy.rules import RULES, Effect, evaluate_rules
from serving.policy.scoring import Scorer
from serving.schemas import DecisionRequest
from serving.settings import Settings
from training.baselines import (
    FIXED_SCHEDULES,
    NAT,
    NS_PER_DAY,
    NS_PER_HOUR,
    LoopState,
    Policy,
    fit_hyperswitch,
    fixed_schedule,
    hyperswitch_policy,
    payday_heuristic,
)
from training.simulate import SimulationResult, World, simulate

FIXED_POLICIES: tuple[str, ...] = tuple(FIXED_SCHEDULES)
POLICIES: tuple[str, ...] = (*FIXED_POLICIES, "payday_heuristic", "hyperswitch", "learned", "oracle")
# Run only when asked (`--policy`): it tells how much of the learned policy's gap to the oracle is
# the customer's own pay calendar, and costs `calendar_samples` times the oracle's time.
DIAGNOSTIC_POLICIES: tuple[str, ...] = ("oracle_without_calendar",)
# What a scheduler knows about an invoice besides its attempts (contract §1/§2 fields); never the truth.
OBSERVABLE_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "amount",
    "currency",
    "card_brand",
    "card_funding",
    "card_country",
    "customer_timezone",
    "card_fingerprint",
    "billing_interval",
    "customer_created_at",
)
DECISION_DELAY = pd.Timedelta(minutes=5)  # the scheduler asks for a decision shortly after each failure
_OUTCOME_STREAM, _DECLINE_STREAM, _PICK_STREAM, _CALENDAR_STREAM = 1, 2, 3, 4  # separate random streams of one seed


@dataclass(frozen=True)
class EvaluationConfig:
    """The held-out world, the retry budget and window, and the hyperswitch history."""

    invoices: int = 3000
    seed: int = 2026
    start: str = "2026-02-01"
    days: int = 90
    max_retries: int = 4
    window_days: float = 14
    history_invoices: int = 20000
    history_seed: int = 99
    batch_size: int = 400
    # The same customers' invoices in the days before the window, retried by the legacy
    # schedulers: the customer history a decision sees (features.customer).
    customer_history_days: int = 180
    # Pay calendars drawn per invoice by the oracle_without_calendar diagnostic.
    calendar_samples: int = 16
    # Whether it also weighs the draws by the customer's earlier invoices.
    calendar_from_history: bool = True


@dataclass(frozen=True)
class HeldOut:
    """The failed invoices to recover, their truth, and the dice every policy shares."""

    world: World
    invoice_ids: np.ndarray
    context: pd.DataFrame  # OBSERVABLE_COLUMNS, one row per invoice (positional)
    first_attempts: pd.DataFrame  # time and codes of each first failure (positional)
    uniforms: np.ndarray  # (invoices, max_retries): retry r of invoice i succeeds iff u < p
    seed: int
    card_updated_at: np.ndarray | None = None  # account-updater refresh per invoice (ns, NaT if none)
    # The simulation the invoices came from: their customers' earlier invoices, with truth.
    history: SimulationResult | None = None


@dataclass(frozen=True)
class PolicyRun:
    """Every attempt one policy made and what came of it."""

    times: np.ndarray  # (n, max_retries + 1) int64 ns, NAT where no attempt
    retries: np.ndarray  # retries made per invoice
    recovered: np.ndarray
    recovered_at: np.ndarray  # int64 ns, NAT when not recovered
    violations: np.ndarray  # retries the rules table forbids, per invoice
    seconds: float


@dataclass(frozen=True)
class EvaluationResult:
    """One row per policy (`table`) and one row per (policy, invoice) (`per_invoice`)."""

    table: pd.DataFrame
    per_invoice: pd.DataFrame
    model_version: str | None = None
    settings: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The held-out world.
# ---------------------------------------------------------------------------------------------
def held_out_world(config: EvaluationConfig) -> HeldOut:
    """Fresh invoices failing in the window (their truth only), with their customers' earlier history.

    One simulation covers `customer_history_days` before the window and the window itself; the
    invoices failing in the window are held out (at most `invoices` of them, a random subset when
    more). Earlier invoices were retried by the legacy schedulers: each held-out invoice's context
    carries its customer's history as it stood at its first failure (`features.customer`); what
    the evaluated policy does to other held-out invoices is not fed back.
    """
    span = config.customer_history_days + config.days
    start = pd.Timestamp(config.start, tz="UTC") - pd.Timedelta(days=config.customer_history_days)
    total = max(config.invoices, round(config.invoices * span / config.days))
    result = simulate(total, config.seed, start=start.strftime("%Y-%m-%d"), days=span)
    invoices = result.invoices
    in_window = np.flatnonzero(
        _utc_ns(invoices["first_attempt_at"]) >= start.value + config.customer_history_days * NS_PER_DAY
    )
    pick_rng = np.random.default_rng([config.seed, _PICK_STREAM])
    if in_window.size > config.invoices:
        in_window = np.sort(pick_rng.choice(in_window, size=config.invoices, replace=False))
    held_ids = invoices.index.to_numpy(dtype=object)[in_window]
    history = customer_history(
        invoice_events(result.attempts),
        pd.DataFrame(
            {
                "customer_id": invoices["customer_id"].to_numpy(dtype=object)[in_window],
                "at": invoices["first_attempt_at"].iloc[in_window],
            }
        ),
    )
    invoices = invoices.iloc[in_window]
    world = World(invoices)
    rng = np.random.default_rng([config.seed, _OUTCOME_STREAM])
    context = invoices.loc[:, list(OBSERVABLE_COLUMNS)].reset_index(drop=True)
    for name in CUSTOMER_CONTEXT_COLUMNS:
        context[name] = history[name].to_numpy()
    return HeldOut(
        world=world,
        invoice_ids=held_ids,
        context=context,
        first_attempts=world.first_attempts().reset_index(drop=True),
        uniforms=rng.random((len(invoices), config.max_retries)),
        seed=config.seed,
        card_updated_at=_utc_ns(invoices["updater_refresh_at"]),
        history=result,
    )


def _as_codes(values: pd.Series) -> np.ndarray:
    """Codes as an object array with None for missing."""
    out = values.astype(object).to_numpy(copy=True)
    out[pd.isna(out)] = None
    return out


def _utc_ns(values: Any) -> np.ndarray:
    """Timestamps (Series, Index, array) as int64 ns UTC; NaT as NAT."""
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8.copy()


def _index(ns: np.ndarray) -> pd.DatetimeIndex:
    """int64 ns as a UTC DatetimeIndex."""
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("M8[ns]")).tz_localize("UTC")


# ---------------------------------------------------------------------------------------------
# Rule violations: would `evaluate_rules` forbid this retry, given the history at that moment?
# ---------------------------------------------------------------------------------------------
def _smallest_cap(settings: Settings) -> int:
    """The fewest attempts any attempt cap of the rules table counts before it can bind."""
    limits = [int(getattr(settings, r.setting)) for r in RULES if r.effect is Effect.CAP and r.setting]
    return min(limits, default=10**9)


@dataclass
class RuleChecker:
    """`evaluate_rules` on each retry's history, memoised where the answer cannot depend on the times.

    With fewer attempts than the smallest cap, no cap can bind, so the verdict is a function of the
    codes and brand only: whether a stop rule fires and how long after the last attempt the earliest
    retry is. Longer histories are evaluated every time.
    """

    settings: Settings
    cache: dict[tuple[object, ...], tuple[bool, int]] = field(default_factory=dict)

    def violates(self, state: LoopState, rows: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Whether each retry (state row, time) breaks a rule: a stop fired, or before `not_before`."""
        out = np.zeros(rows.size, dtype=bool)
        brands = state.context["card_brand"].astype(str).str.lower().to_numpy()
        cap = _smallest_cap(self.settings)
        for j, (row, when) in enumerate(zip(rows, at, strict=True)):
            n = int(state.retries_made[row]) + 1
            codes = (
                tuple(state.decline_codes[row, :n]),
                tuple(state.network_codes[row, :n]),
                tuple(state.advice_codes[row, :n]),
            )
            key = (brands[row], *codes)
            last = int(state.times[row, n - 1])
            updated = NAT if state.card_updated_at is None else int(state.card_updated_at[row])
            if updated != NAT and last < updated <= int(when):
                continue  # a new card since the last failure: the old card's rules no longer apply
            if n < cap and key in self.cache:
                stops, wait = self.cache[key]
            else:
                attempts = pd.DataFrame(
                    {
                        "attempted_at": _index(state.times[row, :n]),
                        "decline_code": pd.Series(codes[0], dtype="string"),
                        "network_decline_code": pd.Series(codes[1], dtype="string"),
                        "merchant_advice_code": pd.Series(codes[2], dtype="string"),
                    }
                )
                verdict = evaluate_rules(attempts, brands[row], self.settings)
                stops, wait = bool(verdict.stops), int(verdict.not_before.value) - last
                if n < cap:
                    self.cache[key] = (stops, wait)
            out[j] = stops or int(when) < last + wait
        return out


# ---------------------------------------------------------------------------------------------
# The closed loop.
# ---------------------------------------------------------------------------------------------
def run_policy(
    held: HeldOut, policy: Policy, config: EvaluationConfig, checker: RuleChecker, *, check_rules: bool = True
) -> PolicyRun:
    """Replay one policy round by round over all invoices: decide, charge against the truth, record."""
    started = time.perf_counter()
    world, n, budget = held.world, len(held.invoice_ids), config.max_retries
    first = held.first_attempts
    times = np.full((n, budget + 1), NAT, dtype=np.int64)
    codes = np.full((n, budget + 1), None, dtype=object)
    network = np.full((n, budget + 1), None, dtype=object)
    advice = np.full((n, budget + 1), None, dtype=object)
    times[:, 0] = _utc_ns(first["attempted_at"])
    codes[:, 0] = _as_codes(first["decline_code"])
    network[:, 0] = _as_codes(first["network_decline_code"])
    advice[:, 0] = _as_codes(first["merchant_advice_code"])
    window_end = times[:, 0] + int(config.window_days * NS_PER_DAY)
    retries = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    recovered = np.zeros(n, dtype=bool)
    recovered_at = np.full(n, NAT, dtype=np.int64)
    violations = np.zeros(n, dtype=np.int64)
    everyone = np.arange(n)

    for r in range(1, budget + 1):
        active = everyone[~done]
        if active.size == 0:
            break
        state = LoopState(
            invoice_ids=held.invoice_ids[active],
            context=held.context.iloc[active].reset_index(drop=True),
            retries_made=retries[active],
            max_retries=budget,
            window_end=window_end[active],
            times=times[active],
            decline_codes=codes[active],
            network_codes=network[active],
            advice_codes=advice[active],
            card_updated_at=None if held.card_updated_at is None else held.card_updated_at[active],
        )
        last = state.last_at
        wanted = np.asarray(policy(state), dtype=np.int64)
        early = (wanted != NAT) & (wanted <= last)
        if early.any():
            raise ValueError(f"a policy asked for a retry at or before the last attempt ({int(early.sum())} invoices)")
        # A retry after the window or beyond the budget is not made: the invoice is given up.
        made = (wanted != NAT) & (wanted <= state.window_end)
        done[active[~made]] = True
        go, at = active[made], wanted[made]
        if go.size == 0:
            continue
        if check_rules:
            violations[go] += checker.violates(state, np.flatnonzero(made), at)

        last_code, last_advice = state.last_decline_code[made], advice[go, r - 1]
        p = world.success_probability(
            held.invoice_ids[go], _index(at), retries[go] + 1, _index(last[made]), last_code, last_advice
        )
        ok = held.uniforms[go, r - 1] < p
        # Decline codes are drawn for every invoice each round from a per-round stream, so the
        # draws line up across policies as far as the simulator's draws allow; only failures keep theirs.
        at_all = times[everyone, retries] + NS_PER_HOUR
        at_all[go] = at
        rng = np.random.default_rng([held.seed, _DECLINE_STREAM, r])
        declines = world.decline(
            held.invoice_ids,
            _index(at_all),
            codes[everyone, retries],
            rng,
            last_attempt_at=_index(times[everyone, retries]),
        )
        failed = go[~ok]
        times[go, r] = at
        codes[failed, r] = _as_codes(declines["decline_code"])[failed]
        network[failed, r] = _as_codes(declines["network_decline_code"])[failed]
        advice[failed, r] = _as_codes(declines["merchant_advice_code"])[failed]
        retries[go] = r
        recovered[go[ok]] = True
        recovered_at[go[ok]] = at[ok]
        done[go[ok]] = True
    return PolicyRun(times, retries, recovered, recovered_at, violations, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Learned and oracle policies: the served decision function, with the model or the truth.
# ---------------------------------------------------------------------------------------------
def _optional(value: object) -> object:
    """None for a missing value (NaN, NA, NaT, None), else the value."""
    return None if value is None or pd.isna(value) else value  # type: ignore[call-overload]


def customer_columns(context: pd.DataFrame) -> pd.DataFrame | None:
    """The customer-history columns of invoice contexts (`decide_batch`'s `customers`), None without them."""
    if not all(name in context for name in CUSTOMER_CONTEXT_COLUMNS):
        return None
    return context.loc[:, list(CUSTOMER_CONTEXT_COLUMNS)].reset_index(drop=True)


def decision_requests(state: LoopState, world: World, now_ns: np.ndarray | None = None) -> list[DecisionRequest]:
    """One decision request per invoice, as the scheduler would send it right after the latest failure.

    `now_ns` overrides when it asks (e.g. when a card-update event arrives later).
    """
    now = _index(state.last_at + int(DECISION_DELAY.value) if now_ns is None else now_ns)
    expiry = world.card_expiry(state.invoice_ids, now)  # the card on file then (after any updater refresh)
    window_end = _index(state.window_end)
    times = [_index(row) for row in state.times]
    requests = []
    for i, row in enumerate(state.context.to_dict("records")):
        n = int(state.retries_made[i]) + 1
        invoice_id = str(state.invoice_ids[i])
        body = {
            "invoice_id": invoice_id,
            "customer_id": row["customer_id"],
            "amount": int(row["amount"]),
            "currency": row["currency"],
            "card": {
                "brand": row["card_brand"],
                "funding": _optional(row["card_funding"]),
                "country": _optional(row["card_country"]),
                "exp_month": int(expiry["card_exp_month"].iloc[i]),
                "exp_year": int(expiry["card_exp_year"].iloc[i]),
                "fingerprint": _optional(row["card_fingerprint"]),
            },
            "customer_timezone": _optional(row["customer_timezone"]),
            "attempts": [
                {
                    "attempt_id": f"{invoice_id}_{j + 1}",
                    "attempted_at": times[i][j],
                    "decline_code": state.decline_codes[i, j],
                    "network_decline_code": state.network_codes[i, j],
                    "merchant_advice_code": state.advice_codes[i, j],
                }
                for j in range(n)
            ],
            "now": now[i],
            "window_end": window_end[i],
            "max_retries": state.max_retries,
            "billing_interval": _optional(row["billing_interval"]),
            "customer_created_at": _optional(row["customer_created_at"]),
        }
        requests.append(DecisionRequest.model_validate(body))
    return requests


class OracleScorer:
    """A Scorer answering with the simulator's true probabilities: the policy's best case with this planner.

    Slot k > 0 uses the planner's own approximation (k more failures with the same decline and
    advice codes, evenly spaced since the last real attempt and at least `spacing_hours` apart), so
    the oracle differs from the learned policy only in knowing the truth.
    """

    def __init__(self, world: World, requests: Sequence[DecisionRequest], spacing_hours: float) -> None:
        """Index the batch's requests (slot rows refer to them by position)."""
        self._world = world
        self._spacing = int(spacing_hours * NS_PER_HOUR)
        self._ids = np.array([r.invoice_id for r in requests], dtype=object)
        self._attempts = np.array([len(r.attempts) for r in requests], dtype=np.int64)
        self._last_at = _utc_ns([r.attempts[-1].attempted_at for r in requests])
        self._code = np.array([r.attempts[-1].decline_code for r in requests], dtype=object)
        self._advice = np.array([r.attempts[-1].merchant_advice_code for r in requests], dtype=object)

    @property
    def model_version(self) -> str:
        """Reported with each decision."""
        return "oracle"

    def _slot_rows(self, slots: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each slot row's request, time, attempts before it and the attempt before it (ns)."""
        req = slots["request"].to_numpy(dtype=np.int64)
        k = slots["retry_index"].to_numpy(dtype=np.int64)
        at = _utc_ns(slots["candidate_at"])
        # The planner's projection of later retries (`features.candidates.planned_wait`), in ns.
        gap = planned_wait((at - self._last_at[req]).astype(np.float64), k, self._spacing).astype(np.int64)
        last = np.where(k == 0, self._last_at[req], at - gap)
        return req, at, self._attempts[req] + k, last

    def score(self, slots: pd.DataFrame, features: pd.DataFrame) -> np.ndarray:
        """True P(success) of each slot row, under the planner's approximation for later retries."""
        req, at, prior, last = self._slot_rows(slots)
        return self._world.success_probability(
            self._ids[req], _index(at), prior, _index(last), self._code[req], self._advice[req]
        )

    def contributions(self, features: pd.DataFrame) -> np.ndarray:
        """No model, no contributions: zeros, so the reasons name no feature."""
        return np.zeros((len(features), len(FEATURE_COLUMNS) + 1))


ScorerFactory = Callable[[Sequence[DecisionRequest]], "Scorer"]


def decision_policy(world: World, make_scorer: ScorerFactory, settings: Settings, batch_size: int) -> Policy:
    """A policy that asks `decide_batch` (rules, budget, window, model, planner) after every failure."""
    from serving.policy.decision import decide_batch

    def ask(state: LoopState, rows: np.ndarray, now_ns: np.ndarray, out: np.ndarray) -> None:
        """Decide the given rows as of `now_ns`, telling the policy of card updates known by then."""
        requests = decision_requests(state.subset(rows), world, now_ns)
        customers = customer_columns(state.context.iloc[rows])
        updated = state.card_updated_at[rows] if state.card_updated_at is not None else np.full(len(rows), NAT)
        known = [
            None if u == NAT or u > t else _index(np.array([u]))[0].to_pydatetime()
            for u, t in zip(updated, now_ns, strict=True)
        ]
        for start in range(0, len(requests), batch_size):
            batch = requests[start : start + batch_size]
            clock = _index(now_ns[start : start + 1])[0].to_pydatetime()
            decisions = decide_batch(
                batch,
                make_scorer(batch),
                settings,
                clock,
                card_updated_at=known[start : start + batch_size],
                customers=customers.iloc[start : start + batch_size] if customers is not None else None,
            )
            for j, decision in enumerate(decisions):
                if decision.action == "retry" and decision.retry_at is not None:
                    out[rows[start + j]] = pd.Timestamp(decision.retry_at).as_unit("ns").value

    def next_retry(state: LoopState) -> np.ndarray:
        out = np.full(len(state.invoice_ids), NAT, dtype=np.int64)
        # A scheduler asks only while the window is open (a retry may have landed at its very end).
        now = state.last_at + int(DECISION_DELAY.value)
        asking = np.flatnonzero(now < state.window_end)
        ask(state, asking, now[asking], out)
        if state.card_updated_at is not None:
            # A stopped invoice whose card is refreshed later in the window is asked about again
            # when the card-update event arrives.
            later = state.card_updated_at + int(DECISION_DELAY.value)
            again = np.flatnonzero(
                (out == NAT)
                & (state.card_updated_at != NAT)
                & (state.card_updated_at > state.last_at)
                & (later < state.window_end)
                & (later > now)
            )
            if again.size:
                ask(state, again, later[again], out)
        return out

    return next_retry


def build_policy(
    name: str, bundle_dir: Path, config: EvaluationConfig, held: HeldOut, settings: Settings
) -> tuple[Policy, str | None]:
    """One named policy (and the model version it serves, for the learned one)."""
    spacing = settings.min_retry_spacing_hours
    if name in FIXED_SCHEDULES:
        return fixed_schedule(FIXED_SCHEDULES[name]), None
    if name == "payday_heuristic":
        return (lambda state: payday_heuristic(state, spacing)), None
    if name == "hyperswitch":
        history = simulate(config.history_invoices, config.history_seed).attempts
        return hyperswitch_policy(fit_hyperswitch(history), spacing), None
    if name == "learned":
        from features.bundle import load_bundle
        from serving.policy.scoring import BundleScorer

        bundle = load_bundle(bundle_dir)
        if settings.compiled_inference:
            bundle.compile_now(settings.compiled_cache_dir)  # as served, but ready before the first decision
        scorer = BundleScorer(bundle)
        return decision_policy(held.world, lambda _batch: scorer, settings, config.batch_size), scorer.model_version
    if name == "oracle":
        world = held.world
        factory: ScorerFactory = lambda batch: OracleScorer(world, batch, spacing)  # noqa: E731
        return decision_policy(world, factory, settings, config.batch_size), None
    if name == "oracle_without_calendar":
        world = held.world
        calendars = world.with_calendars_redrawn(
            config.calendar_samples, np.random.default_rng([held.seed, _CALENDAR_STREAM])
        )
        earlier = earlier_attempts_log_likelihood(held, calendars) if config.calendar_from_history else None
        blind: ScorerFactory = lambda batch: CalendarBlindScorer(world, calendars, batch, spacing, earlier)  # noqa: E731
        return decision_policy(world, blind, settings, config.batch_size), None
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES + DIAGNOSTIC_POLICIES)}")


def earlier_attempts_log_likelihood(held: HeldOut, calendars: World) -> np.ndarray:
    """(held world row, calendar draw): log-likelihood of the customer's earlier attempts under each draw.

    Earlier: attempts of the customer's other invoices before the invoice's first failure (what
    `features.customer` sees). Each is replayed with its own invoice's truth and the drawn
    calendar: a success counts p, a failed retry 1 − p, an insufficient-funds first failure 1 − p.
    """
    world = held.world
    n = len(world.invoices)
    samples = len(calendars.invoices) // n
    out = np.zeros((n, samples))
    if held.history is None:
        return out
    attempts = held.history.attempts  # oldest first within invoice
    by_invoice = attempts.groupby("invoice_id", sort=False)
    evidence = pd.DataFrame(
        {
            "invoice_id": attempts["invoice_id"].to_numpy(dtype=object),
            "customer_id": attempts["customer_id"].to_numpy(dtype=object),
            "at": _utc_ns(attempts["attempted_at"]),
            "succeeded": attempts["succeeded"].to_numpy(dtype=bool),
            "number": by_invoice.cumcount().to_numpy() + 1,
            "last_at": _utc_ns(by_invoice["attempted_at"].shift()),
            "last_code": _as_codes(by_invoice["decline_code"].shift()),
            "last_advice": _as_codes(by_invoice["merchant_advice_code"].shift()),
        }
    )
    held_rows = pd.DataFrame(
        {
            "row": np.arange(n),
            "customer_id": world.invoices["customer_id"].to_numpy(dtype=object),
            "held_id": world.invoices.index.to_numpy(dtype=object),
            "first_at": _utc_ns(world.invoices["first_attempt_at"]),
        }
    )
    pairs = evidence.merge(held_rows, on="customer_id")
    pairs = pairs[(pairs["at"] < pairs["first_at"]) & (pairs["invoice_id"] != pairs["held_id"])]
    earlier = World(held.history.invoices)
    cause = held.history.invoices["root_cause"].astype(str).reindex(pairs["invoice_id"]).to_numpy()
    pairs = pairs[(pairs["number"].to_numpy() > 1) | (cause == "insufficient_funds")]
    if pairs.empty:
        return out
    # One replayed row per (earlier invoice, held-out invoice) pair and calendar draw.
    key = pairs.groupby(["invoice_id", "row"], sort=False).ngroup().to_numpy()
    first_of_key = np.unique(key, return_index=True)[1]
    key_invoice = earlier.positions(pairs["invoice_id"].to_numpy()[first_of_key])
    key_row = pairs["row"].to_numpy()[first_of_key]
    m = first_of_key.size
    replay = earlier.with_calendars_from(
        np.tile(key_invoice, samples), calendars, (np.arange(samples)[:, None] * n + key_row[None, :]).ravel()
    )
    return outcomes_log_likelihood(
        replay,
        key,
        m,
        samples,
        (
            pairs["at"].to_numpy(),
            np.maximum(pairs["number"].to_numpy() - 1, 1),
            pairs["last_at"].to_numpy(),
            pairs["last_code"].to_numpy(),
            pairs["last_advice"].to_numpy(),
        ),
        pairs["succeeded"].to_numpy(),
        pairs["row"].to_numpy(),
        n,
    )


def outcomes_log_likelihood(
    calendars: World,
    base: np.ndarray,
    stride: int,
    samples: int,
    charges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    succeeded: np.ndarray,
    group: np.ndarray,
    groups: int,
) -> np.ndarray:
    """(group, draw): the log-likelihood of charges' outcomes under each calendar draw.

    Charge r under draw s is `calendars` row s * stride + base[r]; `charges` holds its time, attempts
    before it, the attempt before it and that attempt's codes (`World.success_probability_at`).
    """
    out = np.zeros((groups, samples))
    for s in range(samples):
        p = np.clip(calendars.success_probability_at(s * stride + base, *charges), 1e-12, 1.0 - 1e-12)
        out[:, s] = np.bincount(group, np.where(succeeded, np.log(p), np.log1p(-p)), groups)
    return out


class CalendarBlindScorer(OracleScorer):
    """The oracle without the customer's pay calendar: what a perfect model of the observables could know.

    It knows every latent of the invoice but when the customer is paid. Each slot's probability is
    the truth averaged over `calendars` (the invoice with its calendar redrawn from its country's
    mix, `World.with_calendars_redrawn`), each weighted by how likely it makes the declines seen so
    far: every failed retry, and an insufficient-funds first failure (the simulator keeps one only
    where the charge would have failed); with `earlier` (`earlier_attempts_log_likelihood`), also
    by the customer's earlier invoices, as the learned policy's customer features see them. Its gap
    to the oracle is what knowing the customer's own calendar is worth; the learned policy's gap to
    it is what a better model of these observables could still win.
    """

    def __init__(
        self,
        world: World,
        calendars: World,
        requests: Sequence[DecisionRequest],
        spacing_hours: float,
        earlier: np.ndarray | None = None,
    ) -> None:
        """Weigh each request's calendar draws by the likelihood of its declines (plus `earlier`, by world row)."""
        super().__init__(world, requests, spacing_hours)
        self._calendars = calendars
        self._n = len(world.invoices)
        self._samples = len(calendars.invoices) // self._n
        self._pos = world.positions(self._ids)
        nsf = world.invoices["root_cause"].astype(str).to_numpy()[self._pos] == "insufficient_funds"
        rows, at, prior, last, code, advice = [], [], [], [], [], []
        for i, request in enumerate(requests):
            for j, attempt in enumerate(request.attempts):
                if j == 0 and not nsf[i]:
                    continue  # other first failures carry no likelihood of the calendar here
                previous = request.attempts[j - 1] if j else None
                rows.append(i)
                at.append(attempt.attempted_at)
                prior.append(max(j, 1))
                last.append(previous.attempted_at if previous else pd.NaT)
                code.append(previous.decline_code if previous else None)
                advice.append(previous.merchant_advice_code if previous else None)
        row = np.asarray(rows, dtype=np.int64)
        charges = (
            _utc_ns(pd.Series(at, dtype=object)),
            np.asarray(prior, dtype=np.int64),
            _utc_ns(pd.Series(last, dtype=object)),
            np.asarray(code, dtype=object),
            np.asarray(advice, dtype=object),
        )
        declined = np.zeros(row.size, dtype=bool)  # every attempt in a request failed
        log_likelihood = outcomes_log_likelihood(
            calendars, self._pos[row], self._n, self._samples, charges, declined, row, len(requests)
        )
        if earlier is not None:
            log_likelihood += earlier[self._pos]
        weights = np.exp(log_likelihood - log_likelihood.max(axis=1, keepdims=True))
        self.weights = weights / weights.sum(axis=1, keepdims=True)  # (request, calendar draw)

    @property
    def model_version(self) -> str:
        """Reported with each decision."""
        return "oracle_without_calendar"

    def score(self, slots: pd.DataFrame, features: pd.DataFrame) -> np.ndarray:
        """The calendar draws' true P(success) of each slot row, averaged with the requests' weights."""
        req, at, prior, last = self._slot_rows(slots)
        out = np.zeros(len(req))
        for s in range(self._samples):
            p = self._calendars.success_probability_at(
                self._pos[req] + s * self._n, at, prior, last, self._code[req], self._advice[req]
            )
            out += self.weights[req, s] * p
        return out


# ---------------------------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------------------------
def invoice_rows(name: str, held: HeldOut, run: PolicyRun) -> pd.DataFrame:
    """One row per invoice of one policy's run."""
    truth = held.world.invoices
    first = _utc_ns(held.first_attempts["attempted_at"])
    days = np.where(run.recovered, (run.recovered_at - first) / NS_PER_DAY, np.nan)
    return pd.DataFrame(
        {
            "policy": name,
            "invoice_id": held.invoice_ids,
            "root_cause": truth["root_cause"].astype(str).to_numpy(),
            "first_decline_code": held.first_attempts["decline_code"].astype(str).to_numpy(),
            "amount_usd": amount_usd(held.context["amount"], held.context["currency"]).to_numpy(),
            "first_failure_at": _index(first),
            "last_attempt_at": _index(run.times[np.arange(len(first)), run.retries]),
            "retries": run.retries,
            "recovered": run.recovered,
            "recovered_at": _index(run.recovered_at),
            "days_to_recovery": days,
            "violations": run.violations,
        }
    )


def policy_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """Recovery by count and amount, time to recovery, retry effort and rule violations of one policy."""
    recovered = rows["recovered"].to_numpy(bool)
    usd = rows["amount_usd"].fillna(0.0).to_numpy(float)
    retries = rows["retries"].to_numpy(float)
    return {
        "invoices": float(len(rows)),
        "recovery_rate": float(recovered.mean()) if len(rows) else float("nan"),
        "amount_recovery_rate": float(usd[recovered].sum() / usd.sum()) if usd.sum() > 0 else float("nan"),
        "median_days_to_recovery": float(np.median(rows["days_to_recovery"][recovered])) if recovered.any() else np.nan,
        "retries_per_invoice": float(retries.mean()) if len(rows) else float("nan"),
        "retries_per_recovery": float(retries.sum() / recovered.sum()) if recovered.any() else float("nan"),
        "rule_violations": float(rows["violations"].sum()),
        "violating_invoices": float((rows["violations"] > 0).sum()),
    }


def uplift_capture(table: pd.DataFrame) -> pd.Series:
    """(policy − best fixed schedule) / (oracle − best fixed schedule), on recovery rate by count."""
    rate = table.set_index("policy")["recovery_rate"]
    fixed = rate[rate.index.isin(FIXED_POLICIES)]
    if fixed.empty or "oracle" not in rate.index or rate["oracle"] <= fixed.max():
        return pd.Series(np.nan, index=table.index)
    return ((table["recovery_rate"] - fixed.max()) / (rate["oracle"] - fixed.max())).set_axis(table.index)


def summarise(per_invoice: pd.DataFrame, seconds: dict[str, float]) -> pd.DataFrame:
    """The per-policy table, in the order the policies ran."""
    order = list(dict.fromkeys(per_invoice["policy"]))
    table = pd.DataFrame(
        [{"policy": name, **policy_metrics(per_invoice[per_invoice["policy"] == name])} for name in order]
    )
    table["uplift_capture"] = uplift_capture(table)
    table["seconds"] = [seconds.get(name, np.nan) for name in order]
    return table


def breakdown(result: EvaluationResult, by: str = "root_cause") -> pd.DataFrame:
    """Recovery rate by count per policy (columns) and group (rows), with the group sizes.

    By the simulator's latent root cause it shows where a policy wins or loses, e.g. expired cards
    that only rule-breaking schedules recover after an account-updater refresh.
    """
    rows = result.per_invoice
    order = list(dict.fromkeys(rows["policy"]))
    table = rows.pivot_table(index=by, columns="policy", values="recovered", aggfunc="mean")[order]
    table.insert(0, "invoices", rows[rows["policy"] == order[0]].groupby(by).size())
    return table


def policy_names(policies: Sequence[str] | None) -> list[str]:
    """The policies to run (default: all of `POLICIES`); ValueError naming any unknown one."""
    names = list(policies) if policies else list(POLICIES)
    unknown = [n for n in names if n not in POLICIES + DIAGNOSTIC_POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; known: {', '.join(POLICIES + DIAGNOSTIC_POLICIES)}")
    return names


def run_evaluation(
    bundle_dir: Path,
    config: EvaluationConfig,
    policies: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> EvaluationResult:
    """Replay every policy (default: all of `POLICIES`) on the same held-out invoices and dice."""
    names = policy_names(policies)
    settings = settings or Settings()
    held = held_out_world(config)
    checker = RuleChecker(settings)
    frames, seconds, version = [], {}, None
    for name in names:
        policy, served = build_policy(name, Path(bundle_dir), config, held, settings)
        version = served or version
        run = run_policy(held, policy, config, checker)
        frames.append(invoice_rows(name, held, run))
        seconds[name] = run.seconds
    per_invoice = pd.concat(frames, ignore_index=True)
    return EvaluationResult(
        table=summarise(per_invoice, seconds),
        per_invoice=per_invoice,
        model_version=version,
        settings=settings.model_dump(mode="json"),
    )


# ---------------------------------------------------------------------------------------------
# Reporting: text table, chart, MLflow.
# ---------------------------------------------------------------------------------------------
def _percent(value: Any) -> str:
    """A rate as a percentage with one decimal; blank when undefined."""
    return "" if pd.isna(value) else f"{100 * value:.1f}%"


def _decimal(value: Any) -> str:
    """Two decimals; blank when undefined."""
    return "" if pd.isna(value) else f"{value:.2f}"


def _count(value: Any) -> str:
    """A whole number; blank when undefined."""
    return "" if pd.isna(value) else f"{value:.0f}"


_FORMATS: dict[str, Callable[[Any], str]] = {
    "invoices": _count,
    "recovery_rate": _percent,
    "amount_recovery_rate": _percent,
    "median_days_to_recovery": _decimal,
    "retries_per_invoice": _decimal,
    "retries_per_recovery": _decimal,
    "rule_violations": _count,
    "violating_invoices": _count,
    "uplift_capture": _percent,
    "seconds": lambda v: "" if pd.isna(v) else f"{v:.1f}",
}


def format_table(result: EvaluationResult) -> str:
    """The per-policy table as aligned text (rates in %, days and retries with 2 decimals)."""
    table = result.table
    formatters = {c: f for c, f in _FORMATS.items() if c in table.columns}
    return table.to_string(index=False, formatters=formatters)


def save_chart(result: EvaluationResult, path: Path) -> Path:
    """Bar charts of recovery rate by count and by amount per policy (PNG, matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result.table
    colours = [
        "#9e9e9e" if p in FIXED_POLICIES else "#2e7d32" if p == "learned" else "#212121" if p == "oracle" else "#1565c0"
        for p in table["policy"]
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, column, title in (
        (axes[0], "recovery_rate", "Recovery rate (count)"),
        (axes[1], "amount_recovery_rate", "Recovery rate (amount, USD)"),
    ):
        values = 100 * table[column].to_numpy(float)
        bars = ax.bar(table["policy"], values, color=colours)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8)
        ax.set_title(title)
        ax.set_ylabel("%")
        ax.tick_params(axis="x", rotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    n = int(table["invoices"].max()) if len(table) else 0
    fig.suptitle(f"Closed-loop evaluation on {n:,} held-out failed invoices")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_evaluation(result: EvaluationResult, config: EvaluationConfig) -> str | None:
    """Log the evaluation as an MLflow run (call `configure_mlflow` first); returns the run id, None if empty."""
    if result.table.empty:
        return None
    import tempfile

    import mlflow

    metrics = {}
    for row in result.table.to_dict("records"):
        for key, value in row.items():
            if key != "policy" and isinstance(value, int | float) and np.isfinite(value):
                metrics[f"{row['policy']}.{key}"] = float(value)
    with mlflow.start_run(run_name=f"evaluate-{result.model_version or 'baselines'}") as run:
        mlflow.set_tag("retryopt.kind", "policy_evaluation")
        mlflow.log_params({f"eval.{k}": v for k, v in asdict(config).items()})
        mlflow.log_params({"model_version": result.model_version or "", "policies": ",".join(result.table["policy"])})
        mlflow.log_metrics(metrics)
        mlflow.log_text(format_table(result), "evaluation/table.txt")
        mlflow.log_text(result.table.to_csv(index=False), "evaluation/table.csv")
        mlflow.log_text(breakdown(result).to_csv(), "evaluation/recovery_by_root_cause.csv")
        with tempfile.TemporaryDirectory() as tmp:
            chart = save_chart(result, Path(tmp) / "recovery.png")
            mlflow.log_artifact(str(chart), artifact_path="evaluation")
            per_invoice = Path(tmp) / "per_invoice.csv"
            result.per_invoice.to_csv(per_invoice, index=False)
            mlflow.log_artifact(str(per_invoice), artifact_path="evaluation")
        return str(run.info.run_id)
