"""`POST /v1/retry-decisions`: HTTP ↔ `serving.policy.decide`."""

from __future__ import annotations

import time
from typing import Any
from uuid import uuid4

from fastapi import APIRouter

from serving.deps import BundleDep, ClockDep, MetricsDep, SettingsDep
from serving.policy import Decision, decide
from serving.schemas import DecisionRequest, DecisionResponse, ErrorResponse, ScheduledRetry

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


@router.post("/retry-decisions", response_model=DecisionResponse, responses=ERROR_RESPONSES)
def create_retry_decision(
    body: DecisionRequest, settings: SettingsDep, bundle: BundleDep, metrics: MetricsDep, clock: ClockDep
) -> DecisionResponse:
    """Decide whether and when to retry a failed recurring payment, with the planned schedule and why."""
    started = time.perf_counter()
    decision = decide(body, bundle, settings, clock)
    metrics.decision_seconds.observe(time.perf_counter() - started)
    metrics.decisions.labels(action=decision.action).inc()
    return to_response(decision, new_decision_id())
