"""`POST /v1/retry-decisions` and its batch form: HTTP ↔ `serving.policy.decide_batch`."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any
from uuid import uuid4

import pandas as pd
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from features.customer import customer_history
from serving.deps import ClockDep, MetricsDep, ScorerDep, SettingsDep
from serving.metrics import Metrics
from serving.policy import Decision, decide_batch
from serving.policy.card import NO_HISTORY, CardAttempt, CardHistory
from serving.policy.control import Arm, policy_arm
from serving.policy.fallback import FALLBACK_VERSION
from serving.policy.rules import longest_cap_period
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
from serving.store import DecisionRecord, card_update_times, record_decisions
from serving.store.cards import card_attempts, planned_retries
from serving.store.customers import customer_events

router = APIRouter(prefix="/v1", tags=["decisions"])
log = logging.getLogger(__name__)
STORE_DOWN = (OperationalError, InterfaceError)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON."},
    401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key (when the service has a key)."},
    413: {"model": ErrorResponse, "description": "Request body over the size limit; split the batch."},
    422: {"model": ErrorResponse, "description": "Invalid request; `field` names the offending field."},
    503: {"model": ErrorResponse, "description": "No model loaded, or the store is unreachable."},
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
        next_step=decision.next_step or "none",
        recovery_probability=round(decision.recovery_probability, 4),
        expected_hours_to_recovery=(
            round(decision.expected_hours_to_recovery, 1) if decision.expected_hours_to_recovery is not None else None
        ),
    )


def decision_record(request: DecisionRequest, decision: Decision, decision_id: str, clock: datetime) -> DecisionRecord:
    """What the store keeps of a decision: the request's summary, the choice, and why."""
    last = request.attempts[-1]
    return DecisionRecord(
        decision_id=decision_id,
        invoice_id=request.invoice_id,
        customer_id=request.customer_id,
        card_brand=request.card.brand,
        card_fingerprint=request.card.fingerprint,
        card_country=request.card.country,
        card_funding=request.card.funding,
        card_exp_month=request.card.exp_month,
        card_exp_year=request.card.exp_year,
        customer_timezone=request.customer_timezone,
        billing_interval=request.billing_interval,
        customer_created_at=request.customer_created_at,
        decline_code=last.decline_code,
        attempt_count=len(request.attempts),
        amount=request.amount,
        currency=request.currency,
        decided_at=request.now or clock,
        action=decision.action,
        retry_at=decision.retry_at.to_pydatetime() if decision.retry_at is not None else None,
        success_probability=decision.success_probability,
        expected_recovered_amount=decision.expected_recovered_amount,
        schedule=[
            {"retry_at": s.at.isoformat(), "success_probability": s.success_probability} for s in decision.schedule
        ],
        reasons=list(decision.reasons),
        next_step=decision.next_step,
        recovery_probability=decision.recovery_probability,
        expected_hours_to_recovery=decision.expected_hours_to_recovery,
        model_version=decision.model_version,
        policy=decision.policy,
        window_end=(decision.window_end or pd.Timestamp(clock)).to_pydatetime(),
        max_retries=decision.max_retries if decision.max_retries is not None else 0,
        blocked_by_rule=decision.blocked_by_rule,
    )


def card_updated_at(session: Session, requests: list[DecisionRequest]) -> list[datetime | None]:
    """Per request, the latest card update of its customer that applies to its invoice (or None)."""
    latest: dict[tuple[str, str | None], datetime] = {
        (customer, invoice): at
        for customer, invoice, at in card_update_times(session, [r.customer_id for r in requests])
    }
    found = []
    for request in requests:
        times = [latest.get((request.customer_id, None)), latest.get((request.customer_id, request.invoice_id))]
        known = [t for t in times if t is not None]
        found.append(max(known) if known else None)
    return found


def _utc(at: datetime | None, clock: datetime) -> pd.Timestamp:
    """A request's `now` (or the clock) as a UTC timestamp."""
    stamp = pd.Timestamp(at if at is not None else clock)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def card_histories(session: Session, requests: list[DecisionRequest], clock: datetime) -> list[CardHistory]:
    """Per request, what the other invoices on its card did (within the caps' period) and plan."""
    fingerprints = sorted({r.card.fingerprint for r in requests if r.card.fingerprint is not None})
    if not fingerprints:
        return [NO_HISTORY] * len(requests)
    nows = [_utc(r.now, clock) for r in requests]
    since = (min(nows) - longest_cap_period()).to_pydatetime()
    attempts = card_attempts(session, fingerprints, since, max(nows).to_pydatetime())
    planned = planned_retries(session, fingerprints, min(nows).to_pydatetime())
    histories = []
    for request, now in zip(requests, nows, strict=True):
        key, own = request.card.fingerprint, request.invoice_id
        if key is None:
            histories.append(NO_HISTORY)
            continue
        histories.append(
            CardHistory(
                attempts=tuple(
                    CardAttempt(pd.Timestamp(a.attempted_at), a.invoice_id, a.first, a.succeeded)
                    for a in attempts
                    if a.card_fingerprint == key
                    and a.invoice_id != own
                    and now - longest_cap_period() <= a.attempted_at <= now
                ),
                planned=tuple(
                    (p.invoice_id, pd.Timestamp(p.retry_at))
                    for p in planned
                    if p.card_fingerprint == key and p.invoice_id != own and p.retry_at > now
                ),
            )
        )
    return histories


def customer_histories(session: Session, requests: list[DecisionRequest], clock: datetime) -> pd.DataFrame:
    """Per request, the customer's earlier invoices as they stood at this invoice's first failure."""
    firsts = [_utc(r.attempts[0].attempted_at, clock) for r in requests]
    events = customer_events(session, [r.customer_id for r in requests], max(firsts).to_pydatetime())
    queries = pd.DataFrame({"customer_id": [r.customer_id for r in requests], "at": pd.DatetimeIndex(firsts)})
    return customer_history(events, queries)


def decide_and_record(
    requests: list[DecisionRequest],
    scorer: Scorer,
    settings: Settings,
    clock: datetime,
    metrics: Metrics,
    session: Session,
    *,
    batch: bool,
) -> list[DecisionResponse]:
    """Run the policy (control arm by invoice hash, card updates from the store), store the decisions, respond."""
    started = time.perf_counter()
    fallback = scorer.model_version == FALLBACK_VERSION
    arms: list[Arm] = ["fallback" if fallback else policy_arm(r.invoice_id, settings.control_share) for r in requests]
    try:
        updated_at = card_updated_at(session, requests)
        cards = card_histories(session, requests, clock)
        customers: pd.DataFrame | None = customer_histories(session, requests, clock)
        store_up = True
    except STORE_DOWN as exc:
        # Decisions keep working without the store: no card updates or other invoices known, nothing
        # recorded (the caps then count this invoice's own attempts only).
        log.warning("store unavailable, deciding without card updates and without recording: %s", exc)
        session.rollback()
        updated_at, cards, customers, store_up = [None] * len(requests), None, None, False
    decisions = decide_batch(
        requests,
        scorer,
        settings,
        clock,
        name_items=batch,
        arms=arms,
        card_updated_at=updated_at,
        cards=cards,
        customers=customers,
    )
    ids = [new_decision_id() for _ in decisions]
    if store_up:
        try:
            record_decisions(
                session, [decision_record(r, d, i, clock) for r, d, i in zip(requests, decisions, ids, strict=True)]
            )
        except STORE_DOWN as exc:
            log.warning("store unavailable, %d decisions answered but not recorded: %s", len(decisions), exc)
            session.rollback()
    metrics.decision_seconds.observe(time.perf_counter() - started)
    for decision in decisions:
        metrics.decisions.labels(action=decision.action).inc()
    return [to_response(decision, decision_id) for decision, decision_id in zip(decisions, ids, strict=True)]


def _decide_json(
    requests: list[DecisionRequest],
    scorer: Scorer,
    settings: Settings,
    clock: datetime,
    metrics: Metrics,
    sessions: sessionmaker[Session],
    *,
    batch: bool,
) -> bytes:
    """The routes' whole blocking part, in one worker thread: a store session, decide and record, the JSON body."""
    with sessions() as session:
        decisions = decide_and_record(requests, scorer, settings, clock, metrics, session, batch=batch)
    if batch:
        return BatchDecisionResponse(decisions=decisions).model_dump_json().encode()
    return decisions[0].model_dump_json().encode()


# The routes are `async def` and run their blocking part with one `run_in_threadpool` call: as plain
# `def` routes with a session dependency, FastAPI hopped to its threadpool for the route, for the
# session's opening and closing, and for re-validating the returned model against `response_model`.
# The body is serialised once, by the model that made it; `response_model` still documents it.
@router.post("/retry-decisions", response_model=DecisionResponse, responses=ERROR_RESPONSES)
async def create_retry_decision(
    request: Request,
    body: DecisionRequest,
    settings: SettingsDep,
    scorer: ScorerDep,
    metrics: MetricsDep,
    clock: ClockDep,
) -> Response:
    """Decide whether and when to retry a failed recurring payment, with the planned schedule and why."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    content = await run_in_threadpool(_decide_json, [body], scorer, settings, clock, metrics, sessions, batch=False)
    return Response(content, media_type="application/json")


@router.post("/retry-decisions/batch", response_model=BatchDecisionResponse, responses=ERROR_RESPONSES)
async def create_retry_decisions(
    request: Request,
    body: BatchDecisionRequest,
    settings: SettingsDep,
    scorer: ScorerDep,
    metrics: MetricsDep,
    clock: ClockDep,
) -> Response:
    """Decide many invoices at once (one model call for all); decisions come back in request order."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    content = await run_in_threadpool(
        _decide_json, body.requests, scorer, settings, clock, metrics, sessions, batch=True
    )
    return Response(content, media_type="application/json")
