"""The retry decision: (request, model, settings, clock) → retry at a time, or stop and say why.

Pure: no I/O, no global state; the route supplies the clock and the loaded model. Order of
work: card-network and decline rules first, then the budget and the window, then one model
call over every candidate time, then the planner, then the reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import pandas as pd

from features.candidates import FEATURE_COLUMNS, candidate_times
from serving.policy import reasons
from serving.policy.context import DecisionContext, resolve_context
from serving.policy.planner import Plan, plan_retries
from serving.policy.rules import NextStep, Verdict, evaluate_rules
from serving.policy.scoring import Scorer, attempts_frame, candidates_frame, score_retries
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

    @property
    def retry_at(self) -> pd.Timestamp | None:
        """The first planned retry (None on stop)."""
        return self.schedule[0].at if self.schedule else None

    @property
    def success_probability(self) -> float | None:
        """P(success) of the first planned retry (None on stop)."""
        return self.schedule[0].success_probability if self.schedule else None


def _stop(scorer: Scorer, why: list[str], next_step: NextStep | None = None, n_candidates: int = 0) -> Decision:
    """A stop decision with its reasons."""
    return Decision("stop", scorer.model_version, tuple(why), next_step=next_step, n_candidates=n_candidates)


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
    verdict: Verdict,
    ctx: DecisionContext,
    plan: Plan,
    budget: int,
    scorer: Scorer,
    features: pd.DataFrame,
    settings: Settings,
) -> list[str]:
    """Rules that shaped the plan, the model's view of the chosen slot, and the numbers."""
    why = [firing.reason() for firing in verdict.firings]
    if verdict.cap is not None and budget == verdict.max_retries_by_caps and budget < ctx.retries_left:
        why.append(verdict.cap.reason())
    if ctx.window_cut:
        why.append(reasons.window_cut_reason(settings.max_window_days))
    chosen = features.iloc[[plan.slots[0]]]
    contributions = scorer.contributions(chosen)[0]
    why.extend(reasons.model_reasons(contributions, FEATURE_COLUMNS, chosen.iloc[0]))
    why.append(reasons.search_reason(len(features), ctx.now, ctx.window_end))
    why.append(reasons.probability_reason(plan.probabilities[0], plan.total_probability, len(plan.slots)))
    return why


def decide(request: DecisionRequest, scorer: Scorer, settings: Settings, clock: datetime) -> Decision:
    """Retry when and how often, or stop and why; `clock` is the server time (a request's `now` wins)."""
    ctx = resolve_context(request, settings, clock)
    attempts = attempts_frame(request)
    verdict = evaluate_rules(attempts, request.card.brand, settings)
    if verdict.stops:
        return _stop(scorer, [f.reason() for f in verdict.stops], verdict.next_step)
    if ctx.retries_left <= 0:
        return _stop(scorer, [reasons.budget_reason(ctx.retries_made, ctx.max_retries)])
    if ctx.now >= ctx.window_end:
        return _stop(scorer, [reasons.window_over_reason(ctx.window_end)])

    earliest = max(ctx.now, verdict.not_before)
    times = _candidate_grid(earliest, ctx, pd.Timedelta(minutes=settings.candidate_step_minutes))
    if len(times) == 0:
        rule_reasons = [f.reason() for f in verdict.firings]
        return _stop(scorer, [reasons.no_time_left_reason(earliest, ctx.window_end), *rule_reasons])
    budget = _budget(ctx, verdict, times, settings)
    if budget <= 0 and verdict.cap is not None:
        return _stop(scorer, [verdict.cap.reason()])

    features, probs = score_retries(
        scorer, attempts, candidates_frame(request, times), budget, settings.min_retry_spacing_hours
    )
    plan = plan_retries(
        times,
        probs,
        amount=float(request.amount),
        spacing_hours=settings.min_retry_spacing_hours,
        attempt_cost=settings.attempt_cost * request.amount,
        discount_per_day=settings.time_discount_per_day,
        now=ctx.now,
    )
    if not plan.slots:
        best = plan.best_slot if plan.best_slot is not None else 0
        why = reasons.not_worth_reason(float(probs[0, best]), times[best], settings.attempt_cost)
        return _stop(scorer, [why], n_candidates=len(times))

    schedule = tuple(PlannedRetry(at, p) for at, p in zip(plan.times, plan.probabilities, strict=True))
    return Decision(
        action="retry",
        model_version=scorer.model_version,
        reasons=tuple(_retry_reasons(verdict, ctx, plan, budget, scorer, features, settings)),
        schedule=schedule,
        expected_recovered_amount=round(request.amount * plan.total_probability),
        n_candidates=len(times),
    )
