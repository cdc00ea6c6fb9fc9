"""`POST /v1/retry-decisions` and its batch form: HTTP ↔ `serving.policy.decide_batch`."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from uuid import uuid4

from fastapi import APIRouter

from serving.deps import ClockDep, MetricsDep, ScorerDep, SettingsDep
from serving.metrics import Metrics
from serving.policy import Decision, decide_batch
from serving.policy.scoring import Scorer
from serving.schemas import (
    BatchDecisionRequest,
    BatchDecisionResponse,
    DecisionRequest,
    DecisionResponse,
    ErrorResponse,
    ScheduledRetry,
)
from serving.settings import Settings

router = APIRouter(prefix="/v1", tags=["decisions"])

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON."},
    422: {"model": ErrorResponse, "description": "Invalid request; `field` names the offending field."},
    503: {"model": ErrorResponse, "description": "No model loaded."},
}


def new_decision_id() -> str:
    """A unique decision id, `dec_` + 32 hex digits, for outcomes to refer back to."""
    return f"dec_{uuid4().hex}"


def to_response(decision: Decision, decision_id: str) -> DecisionResponse:
    """The policy's decision in the contract's shape."""
    schedule = [
        ScheduledRetry(retry_at=item.at.to_pydatetime(), success_probability=round(item.success_probability, 4))
        for item in decision.schedule
    ]
    return DecisionResponse(
        decision_id=decision_id,
        action=decision.action,
        retry_at=schedule[0].retry_at if schedule else None,
        success_probability=schedule[0].success_probability if schedule else None,
        expected_recovered_amount=decision.expected_recovered_amount,
        schedule=schedule,
        reasons=list(decision.reasons),
        model_version=decision.model_version,
        next_step=decision.next_step,
    )


def decide_and_count(
    requests: list[DecisionRequest],
    scorer: Scorer,
    settings: Settings,
    clock: datetime,
    metrics: Metrics,
    *,
    batch: bool,
) -> list[DecisionResponse]:
    """Run the policy on the requests, record the metrics, and shape the responses."""
    started = time.perf_counter()
    decisions = decide_batch(requests, scorer, settings, clock, name_items=batch)
    metrics.decision_seconds.observe(time.perf_counter() - started)
    for decision in decisions:
        metrics.decisions.labels(action=decision.action).inc()
    return [to_response(decision, new_decision_id()) for decision in decisions]


@router.post("/retry-decisions", response_model=DecisionResponse, responses=ERROR_RESPONSES)
def create_retry_decision(
    body: DecisionRequest, settings: SettingsDep, scorer: ScorerDep, metrics: MetricsDep, clock: ClockDep
) -> DecisionResponse:
    """Decide whether and when to retry a failed recurring payment, with the planned schedule and why."""
    return decide_and_count([body], scorer, settings, clock, metrics, batch=False)[0]


@router.post("/retry-decisions/batch", response_model=BatchDecisionResponse, responses=ERROR_RESPONSES)
def create_retry_decisions(
    body: BatchDecisionRequest, settings: SettingsDep, scorer: ScorerDep, metrics: MetricsDep, clock: ClockDep
) -> BatchDecisionResponse:
    """Decide many invoices at once (one model call for all); decisions come back in request order."""
    return BatchDecisionResponse(
        decisions=decide_and_count(body.requests, scorer, settings, clock, metrics, batch=True)
    )
