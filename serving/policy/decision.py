"""The retry decision: (request, model, settings, clock) → retry at a time, or stop and say why.

Pure: no I/O, no global state; the route supplies the clock and the model. Order of work:
card-network and decline rules first, then the budget and the window, then one feature call and
one model call over every candidate time of every request in the batch, then the planner per
request, then one explanation call for the chosen slots and the reasons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

from features.candidates import (
    FEATURE_COLUMNS,
    candidate_times,
    feature_frame,
    project_retry_rows,
    retry_feature_matrix,
)
from features.customer import CUSTOMER_CONTEXT_COLUMNS
from serving.policy import reasons
from serving.policy.card import NO_HISTORY, CardHistory
from serving.policy.context import DecisionContext, InvalidFieldError, resolve_context
from serving.policy.control import Arm, control_plan
from serving.policy.planner import Plan, plan_retries
from serving.policy.rules import (
    CARD_RECOVERED,
    NO_STEP,
    NOTIFY_CUSTOMER,
    NextStep,
    Verdict,
    evaluate_rules,
    fresh_card_verdict,
)
from serving.policy.scoring import (
    FloatArray,
    Scorer,
    contexts_frame,
    history_frame,
    last_decline_categories,
    last_decline_category,
)
from serving.schemas import DecisionRequest
from serving.settings import Settings

Action = Literal["retry", "stop"]


@dataclass(frozen=True)
class PlannedRetry:
    """One retry of the schedule."""

    at: pd.Timestamp
    success_probability: float


@dataclass(frozen=True)
class Decision:
    """What the policy decided, before it gets an id and an HTTP shape."""

    action: Action
    model_version: str
    reasons: tuple[str, ...]
    schedule: tuple[PlannedRetry, ...] = ()
    expected_recovered_amount: int = 0  # amount × P(the schedule recovers the invoice)
    next_step: NextStep | None = None
    n_candidates: int = field(default=0, compare=False)  # how many times were scored
    blocked_by_rule: str | None = None  # the rules-table row that stopped or held back the retry
    window_end: pd.Timestamp | None = None  # the effective window and budget the decision used
    max_retries: int | None = None
    policy: Arm = "learned"  # which arm decided: the learned planner or the fixed control schedule
    recovery_probability: float = 0.0  # P(the planned schedule recovers the invoice by window_end)
    expected_hours_to_recovery: float | None = None  # from now to the success, given the plan recovers it

    @property
    def retry_at(self) -> pd.Timestamp | None:
        """The first planned retry (None on stop)."""
        return self.schedule[0].at if self.schedule else None

    @property
    def success_probability(self) -> float | None:
        """P(success) of the first planned retry (None on stop)."""
        return self.schedule[0].success_probability if self.schedule else None


def _stop(
    model_version: str,
    why: list[str],
    next_step: NextStep | None = NOTIFY_CUSTOMER,
    n_candidates: int = 0,
    rule: str | None = None,
) -> Decision:
    """A stop decision with its reasons (and the rule behind it, when a rule stopped it).

    A stop that no rule gave a next step for (budget, window, cap, nothing worth it) leaves a soft
    decline unrecovered: the customer should hear about it.
    """
    return Decision(
        "stop", model_version, tuple(why), next_step=next_step, n_candidates=n_candidates, blocked_by_rule=rule
    )


def _room_for(span_hours: float, spacing_hours: float) -> int:
    """How many retries `spacing_hours` apart fit in `span_hours` (at least one)."""
    if spacing_hours <= 0:
        return 10**6
    return math.floor(span_hours / spacing_hours) + 1


def _candidate_grid(earliest: pd.Timestamp, ctx: DecisionContext, step: pd.Timedelta) -> pd.DatetimeIndex:
    """Whole-step times from the earliest allowed one to the window's end, all after now."""
    times = candidate_times(earliest - step, ctx.window_end, step)
    return times[(times >= earliest) & (times > ctx.now)]


def _budget(ctx: DecisionContext, verdict: Verdict, times: pd.DatetimeIndex, settings: Settings) -> int:
    """Retries worth planning: the budget left, the network caps, and what fits in the window."""
    budget = ctx.retries_left
    if verdict.max_retries_by_caps is not None:
        budget = min(budget, verdict.max_retries_by_caps)
    span = (times[-1] - times[0]) / pd.Timedelta(hours=1)
    return min(budget, _room_for(span, settings.min_retry_spacing_hours))


def _retry_reasons(
    pending: _Pending, plan: Plan, chosen: pd.Series, contributions: FloatArray, settings: Settings
) -> list[str]:
    """Rules that shaped the plan, the model's view of the chosen slot, and the numbers."""
    verdict, ctx = pending.verdict, pending.ctx
    why = [firing.reason() for firing in verdict.firings]
    if pending.arm != "learned":
        why.append(reasons.fixed_schedule_reason(pending.arm, settings.control_schedule_days))
        why.append(reasons.probability_reason(plan.probabilities[0], plan.total_probability, len(plan.slots)))
        return why
    if verdict.cap is not None and pending.budget == verdict.max_retries_by_caps and pending.budget < ctx.retries_left:
        why.append(verdict.cap.reason())
    if ctx.window_cut:
        why.append(reasons.window_cut_reason(settings.max_window_days))
    why.extend(reasons.model_reasons(contributions, FEATURE_COLUMNS, chosen))
    why.append(reasons.search_reason(len(pending.times), ctx.now, pending.times[-1]))
    why.append(reasons.probability_reason(plan.probabilities[0], plan.total_probability, len(plan.slots)))
    return why


def _holding_rule(pending: _Pending) -> str | None:
    """The rule that pushed the first retry later than the planner could otherwise go, if any."""
    delays = [f for f in pending.verdict.firings if f.rule.hours or f.rule.period_days]
    return delays[-1].rule.name if delays else None


@dataclass(frozen=True)
class _Pending:
    """A request the rules let through: it needs the model, then the planner."""

    index: int  # position in the batch
    request: DecisionRequest
    ctx: DecisionContext
    attempts: pd.DataFrame
    verdict: Verdict
    times: pd.DatetimeIndex
    budget: int
    arm: Arm


def _plan_end(ctx: DecisionContext, verdict: Verdict, fresh_card: bool, settings: Settings) -> pd.Timestamp:
    """The last time the planner may use: the window, or a short horizon when the retry must be prompt."""
    if fresh_card:
        prompt = settings.card_update_retry_hours
    elif any(f.rule is CARD_RECOVERED for f in verdict.firings):
        prompt = settings.card_success_retry_hours
    else:
        return ctx.window_end
    return min(ctx.window_end, max(verdict.not_before, ctx.now) + pd.Timedelta(hours=prompt))


def _away_from(times: pd.DatetimeIndex, taken: list[pd.Timestamp], gap_minutes: float) -> pd.DatetimeIndex:
    """Drop candidate times within `gap_minutes` of a retry another invoice on the card holds."""
    if not taken or gap_minutes <= 0 or len(times) == 0:
        return times
    held = pd.DatetimeIndex(taken).as_unit("ns").asi8
    at = times.as_unit("ns").asi8
    gap = int(pd.Timedelta(minutes=gap_minutes).value)
    near = (np.abs(at[:, None] - held[None, :]) < gap).any(axis=1)
    return times[~near]


def _prepare(
    index: int,
    request: DecisionRequest,
    arm: Arm,
    model_version: str,
    settings: Settings,
    clock: datetime,
    card_updated_at: datetime | None = None,
    card: CardHistory = NO_HISTORY,
) -> Decision | _Pending:
    """Rules, budget and window: a stop decision, or what the model must score."""
    ctx = resolve_context(request, settings, clock)
    attempts = history_frame([request], [str(index)])  # the columns the rules read
    fresh_card = card_updated_at is not None and pd.Timestamp(card_updated_at) > ctx.last_attempt
    if fresh_card and card_updated_at is not None:
        # A new card since the last failure: the old card's declines and spacing no longer apply.
        verdict = fresh_card_verdict(pd.Timestamp(card_updated_at), ctx.now, settings)
    else:
        verdict = evaluate_rules(attempts, request.card.brand, settings, card)
    if verdict.stops:
        return _stop(
            model_version, [f.reason() for f in verdict.stops], verdict.next_step, rule=verdict.stops[0].rule.name
        )
    if ctx.retries_left <= 0:
        return _stop(model_version, [reasons.budget_reason(ctx.retries_made, ctx.max_retries)])
    if ctx.now >= ctx.window_end:
        return _stop(model_version, [reasons.window_over_reason(ctx.window_end)])

    earliest = max(ctx.now, verdict.not_before)
    grid = _candidate_grid(
        earliest,
        replace(ctx, window_end=_plan_end(ctx, verdict, fresh_card, settings)),
        pd.Timedelta(minutes=settings.candidate_step_minutes),
    )
    times = _away_from(grid, card.planned_times(), settings.card_slot_gap_minutes)
    if len(times) == 0 and len(grid) > 0:
        return _stop(model_version, [reasons.card_slots_taken_reason(len(card.planned), earliest, grid[-1])])
    if len(times) == 0:
        rule_reasons = [f.reason() for f in verdict.firings]
        rule = verdict.firings[-1].rule.name if verdict.firings and verdict.not_before > ctx.now else None
        return _stop(model_version, [reasons.no_time_left_reason(earliest, ctx.window_end), *rule_reasons], rule=rule)
    budget = _budget(ctx, verdict, times, settings)
    if budget <= 0 and verdict.cap is not None:
        return _stop(model_version, [verdict.cap.reason()], rule=verdict.cap.rule.name)
    return _Pending(index, request, ctx, attempts, verdict, times, budget, arm)


@dataclass(frozen=True)
class _Scored:
    """The model's view of every pending request: next-retry features and P(success)[k, t]."""

    features: pd.DataFrame  # k = 0 rows of all pending requests, concatenated (a view of one float matrix)
    offsets: tuple[int, ...]  # where each pending request's rows start in `features`
    probabilities: tuple[FloatArray, ...]  # per pending request, shape (budget, n_times)


# Stacked (retry k × slot) rows scored per model call: a 10,000-request batch holds ~7.5M of them
# (1.4 GB as float64), so they are built and scored a slice of whole requests at a time.
_SCORE_SLICE_ROWS = 1 << 18


def _score(
    pending: Sequence[_Pending], scorer: Scorer, settings: Settings, customers: pd.DataFrame | None = None
) -> _Scored:
    """Features of all candidates in one library call, projected per retry index, scored in slices.

    The feature library computes each request's context once and broadcasts it to its candidate
    times (`retry_feature_matrix`); the k × slot matrix is one gather of that float matrix,
    projected in place, built and scored at most `_SCORE_SLICE_ROWS` rows at a time.
    """

    attempts = history_frame([p.request for p in pending], [str(p.index) for p in pending])
    sizes = np.array([len(p.times) for p in pending], dtype=np.int64)
    budgets = np.array([p.budget for p in pending], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    at_ns = np.concatenate([p.times.as_unit("ns").asi8 for p in pending]).astype(np.int64, copy=False)
    contexts = contexts_frame([p.request for p in pending], [str(p.index) for p in pending])
    if customers is not None:
        known = customers.iloc[[p.index for p in pending]]
        for name in CUSTOMER_CONTEXT_COLUMNS:
            contexts[name] = known[name].to_numpy()
    base = retry_feature_matrix(attempts, contexts, np.repeat(np.arange(len(pending)), sizes), at_ns)
    n_attempts = np.array([len(p.attempts) for p in pending], dtype=np.int64)
    if np.all(n_attempts > 0):
        categories = last_decline_categories(attempts, np.cumsum(n_attempts) - 1)
    else:
        categories = np.array([last_decline_category(p.attempts) for p in pending], dtype=object)
    requests = np.array([p.index for p in pending], dtype=np.int64)

    stacked_sizes = sizes * budgets
    flat = np.empty(int(stacked_sizes.sum()), dtype=np.float64)
    start = 0
    while start < len(pending):
        # Whole requests per slice, at least one.
        stop = start + 1
        rows_in_slice = int(stacked_sizes[start])
        while stop < len(pending) and rows_in_slice + stacked_sizes[stop] <= _SCORE_SLICE_ROWS:
            rows_in_slice += int(stacked_sizes[stop])
            stop += 1
        part = range(start, stop)
        # Row r of the stacked matrix is candidate `rows[r]` scored as retry `k[r]` of its request.
        rows = np.concatenate([offsets[i] + np.tile(np.arange(sizes[i]), budgets[i]) for i in part])
        k = np.concatenate([np.repeat(np.arange(budgets[i]), sizes[i]) for i in part])
        owner = np.repeat(np.arange(start, stop), stacked_sizes[start:stop])
        stacked = project_retry_rows(base, rows, k, settings.min_retry_spacing_hours, categories[owner])
        slots = pd.DataFrame(
            {
                "request": requests[owner],
                "retry_index": k,
                "candidate_at": pd.DatetimeIndex(at_ns[rows].view("datetime64[ns]"), tz="UTC"),
            }
        )
        first = int(stacked_sizes[:start].sum())
        flat[first : first + len(rows)] = np.asarray(scorer.score(slots, feature_frame(stacked)), dtype=np.float64)
        del stacked, slots, rows, k, owner
        start = stop
    ends = np.cumsum(stacked_sizes)
    parts = np.split(flat, ends[:-1])
    probabilities = tuple(part.reshape(b, n) for part, n, b in zip(parts, sizes, budgets, strict=True))
    return _Scored(feature_frame(base), tuple(int(o) for o in offsets), probabilities)


def _plan(pending: _Pending, probs: FloatArray, settings: Settings) -> Plan:
    """The planner's schedule for one request (the fixed schedule for the control arm)."""
    if pending.arm != "learned":
        return control_plan(pending.times, probs, pending.ctx, settings)
    return plan_retries(
        pending.times,
        probs,
        amount=float(pending.request.amount),
        spacing_hours=settings.min_retry_spacing_hours,
        attempt_cost=settings.attempt_cost * pending.request.amount,
        discount_per_day=settings.time_discount_per_day,
        now=pending.ctx.now,
    )


def _waves(requests: Sequence[DecisionRequest]) -> list[list[int]]:
    """Split a batch so that no card appears twice in one wave (later waves see earlier plans)."""
    waves: list[list[int]] = []
    seen: dict[str, int] = {}  # fingerprint -> the wave of its latest request
    for i, request in enumerate(requests):
        key = request.card.fingerprint
        wave = 0 if key is None else seen.get(key, -1) + 1
        if key is not None:
            seen[key] = wave
        while len(waves) <= wave:
            waves.append([])
        waves[wave].append(i)
    return waves


def _positions_by_card(requests: Sequence[DecisionRequest]) -> dict[str, list[int]]:
    """Positions of the requests on each card that appears more than once in the batch."""
    positions: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        if request.card.fingerprint is not None:
            positions.setdefault(request.card.fingerprint, []).append(i)
    return {card: found for card, found in positions.items() if len(found) > 1}


def _with_planned(card: CardHistory, invoice_id: str, decision: Decision) -> CardHistory:
    """The card's history once `decision` (another invoice's) planned its next retry."""
    if decision.retry_at is None:
        return card
    return replace(card, planned=(*card.planned, (invoice_id, decision.retry_at)))


def _next_step(probability: float, settings: Settings) -> NextStep:
    """notify_customer when the whole plan is unlikely to recover the invoice, else none."""
    return NOTIFY_CUSTOMER if probability < settings.notify_customer_below else NO_STEP


def decide_batch(
    requests: Sequence[DecisionRequest],
    scorer: Scorer,
    settings: Settings,
    clock: datetime,
    *,
    name_items: bool = True,
    arms: Sequence[Arm] | None = None,
    card_updated_at: Sequence[datetime | None] | None = None,
    cards: Sequence[CardHistory] | None = None,
    customers: pd.DataFrame | None = None,
) -> list[Decision]:
    """Decide many invoices with one feature-library call, one model call and one explanation call.

    Raises InvalidFieldError when a request contradicts itself; with `name_items` its field is
    prefixed `requests.<i>.` as in the batch body. `arms` assigns each request to the learned
    planner (default) or the fixed control schedule; both obey the same rules. `card_updated_at`
    gives, per request, the latest card update of its customer (None when there is none); `cards`
    the other invoices on its card (per-card caps and joint planning); `customers` the customer's
    earlier invoices (`features.customer.CUSTOMER_CONTEXT_COLUMNS`, one row per request, positional;
    None: unknown). Requests sharing a card are planned one after another (in waves), each seeing
    the retries planned before it.
    """
    histories = list(cards) if cards is not None else [NO_HISTORY] * len(requests)
    out: list[Decision | None] = [None] * len(requests)
    later_on_card = _positions_by_card(requests)
    for wave in _waves(requests):
        decided = _decide_wave(
            [requests[i] for i in wave],
            scorer,
            settings,
            clock,
            indices=wave,
            name_items=name_items,
            arms=[arms[i] if arms is not None else "learned" for i in wave],
            card_updated_at=[card_updated_at[i] if card_updated_at is not None else None for i in wave],
            cards=[histories[i] for i in wave],
            customers=customers,
        )
        for i, decision in zip(wave, decided, strict=True):
            out[i] = decision
            key = requests[i].card.fingerprint
            for j in later_on_card.get(key, []) if key is not None else []:
                if j > i and requests[j].invoice_id != requests[i].invoice_id:
                    histories[j] = _with_planned(histories[j], requests[i].invoice_id, decision)
    return [d for d in out if d is not None]


def _decide_wave(
    requests: Sequence[DecisionRequest],
    scorer: Scorer,
    settings: Settings,
    clock: datetime,
    *,
    indices: Sequence[int],
    name_items: bool,
    arms: Sequence[Arm],
    card_updated_at: Sequence[datetime | None],
    cards: Sequence[CardHistory],
    customers: pd.DataFrame | None = None,
) -> list[Decision]:
    """`decide_batch` for requests on distinct cards; `indices` are their positions in the batch."""
    prepared: list[Decision | _Pending] = []
    for i, request in zip(indices, requests, strict=True):
        j = len(prepared)
        try:
            item = _prepare(i, request, arms[j], scorer.model_version, settings, clock, card_updated_at[j], cards[j])
            if isinstance(item, Decision):
                ctx = resolve_context(request, settings, clock)
                item = replace(item, window_end=ctx.window_end, max_retries=ctx.max_retries)
            prepared.append(item)
        except InvalidFieldError as exc:
            if not name_items:
                raise
            raise InvalidFieldError(f"requests.{i}.{exc.field}", exc.message) from None
    pending = [p for p in prepared if isinstance(p, _Pending)]
    if not pending:
        return [p for p in prepared if isinstance(p, Decision)]

    scored = _score(pending, scorer, settings, customers)
    probabilities = {p.index: probs for p, probs in zip(pending, scored.probabilities, strict=True)}
    plans = {p.index: _plan(p, probabilities[p.index], settings) for p in pending}
    planned = [(p, offset) for p, offset in zip(pending, scored.offsets, strict=True) if plans[p.index].slots]
    chosen = scored.features.iloc[[offset + plans[p.index].slots[0] for p, offset in planned]]
    contributions = scorer.contributions(chosen) if len(chosen) else np.empty((0, 0))
    explained = {p.index: (chosen.iloc[j], contributions[j]) for j, (p, _) in enumerate(planned)}

    decisions: list[Decision] = []
    for item in prepared:
        if isinstance(item, Decision):
            decisions.append(item)
            continue
        arm = item.arm
        plan = plans[item.index]
        probs = probabilities[item.index]
        if not plan.slots and arm != "learned":
            why = (
                reasons.fixed_schedule_reason(arm, settings.control_schedule_days)
                + ": no scheduled retry left in the window"
            )
            stop = _stop(scorer.model_version, [why], n_candidates=len(item.times))
            decisions.append(
                replace(stop, policy=arm, window_end=item.ctx.window_end, max_retries=item.ctx.max_retries)
            )
            continue
        if not plan.slots:
            best = plan.best_slot if plan.best_slot is not None else 0
            why = reasons.not_worth_reason(float(probs[0, best]), item.times[best], settings.attempt_cost)
            stop = _stop(scorer.model_version, [why], n_candidates=len(item.times))
            decisions.append(
                replace(stop, policy=arm, window_end=item.ctx.window_end, max_retries=item.ctx.max_retries)
            )
            continue
        row, contribution = explained[item.index]
        schedule = tuple(PlannedRetry(at, p) for at, p in zip(plan.times, plan.probabilities, strict=True))
        recovery = plan.total_probability
        decisions.append(
            Decision(
                action="retry",
                model_version=scorer.model_version,
                reasons=tuple(_retry_reasons(item, plan, row, contribution, settings)),
                schedule=schedule,
                expected_recovered_amount=round(item.request.amount * recovery),
                next_step=_next_step(recovery, settings),
                n_candidates=len(item.times),
                blocked_by_rule=_holding_rule(item),
                policy=arm,
                window_end=item.ctx.window_end,
                max_retries=item.ctx.max_retries,
                recovery_probability=recovery,
                expected_hours_to_recovery=plan.expected_hours_to_recovery(item.ctx.now),
            )
        )
    return decisions


def decide(
    request: DecisionRequest,
    scorer: Scorer,
    settings: Settings,
    clock: datetime,
    *,
    card_updated_at: datetime | None = None,
    cards: CardHistory = NO_HISTORY,
    customer: pd.DataFrame | None = None,
) -> Decision:
    """Retry when and how often, or stop and why; `clock` is the server time (a request's `now` wins).

    `customer`: the customer's earlier invoices, one row of `CUSTOMER_CONTEXT_COLUMNS` (None: unknown).
    """
    return decide_batch(
        [request],
        scorer,
        settings,
        clock,
        name_items=False,
        card_updated_at=[card_updated_at],
        cards=[cards],
        customers=customer,
    )[0]
