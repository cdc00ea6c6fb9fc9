"""`POST /v1/outcomes` and `POST /v1/card-updates`: what the scheduler did and learned, stored once."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from sqlalchemy.orm import Session

from serving.deps import SessionDep
from serving.schemas import CardUpdateAck, CardUpdateIn, ErrorResponse, OutcomeAck, OutcomeIn
from serving.store import CardUpdateRecord, OutcomeRecord, get_decision, record_card_update, record_outcome
from serving.store.cards import is_first_attempt, planned_retries

router = APIRouter(prefix="/v1", tags=["outcomes"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Already stored with the same content (idempotent repeat)."},
    400: {"model": ErrorResponse, "description": "Malformed JSON."},
    401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key (when the service has a key)."},
    409: {"model": ErrorResponse, "description": "The id is already stored with different content."},
    413: {"model": ErrorResponse, "description": "Request body over the size limit."},
    422: {"model": ErrorResponse, "description": "Invalid body; `field` names the offending field."},
    503: {
        "model": ErrorResponse,
        "description": "The store is unreachable; not acknowledged. Resend the same request after Retry-After (repeats are safe).",
    },
}


@router.post("/outcomes", status_code=status.HTTP_201_CREATED, response_model=OutcomeAck, responses=RESPONSES)
def report_outcome(body: OutcomeIn, session: SessionDep, response: Response) -> OutcomeAck:
    """Store one attempt's outcome; a 2xx means it is committed. Repeats of the same attempt_id are no-ops."""
    fingerprint = body.card_fingerprint
    if fingerprint is None and body.decision_id is not None:
        decision = get_decision(session, body.decision_id)
        fingerprint = decision.card_fingerprint if decision is not None else None
    record = OutcomeRecord(
        attempt_id=body.attempt_id,
        invoice_id=body.invoice_id,
        customer_id=body.customer_id,
        attempted_at=body.attempted_at,
        succeeded=body.succeeded,
        amount=body.amount,
        currency=body.currency,
        decline_code=body.decline_code,
        network_decline_code=body.network_decline_code,
        merchant_advice_code=body.merchant_advice_code,
        decision_id=body.decision_id,
        card_fingerprint=fingerprint,
    )
    result = record_outcome(session, record)
    if result == "duplicate":
        response.status_code = status.HTTP_200_OK
    return OutcomeAck(attempt_id=body.attempt_id, status=result, replan_invoice_ids=_to_replan(session, record))


def _to_replan(session: Session, record: OutcomeRecord) -> list[str]:
    """The card's other invoices with a pending retry, when this outcome changes what they should do."""
    if record.card_fingerprint is None:
        return []
    changes_siblings = record.succeeded or is_first_attempt(session, record.invoice_id, record.attempted_at)
    if not changes_siblings:
        return []
    pending = planned_retries(session, [record.card_fingerprint], record.attempted_at)
    return sorted({p.invoice_id for p in pending if p.invoice_id != record.invoice_id})


@router.post("/card-updates", status_code=status.HTTP_201_CREATED, response_model=CardUpdateAck, responses=RESPONSES)
def report_card_update(body: CardUpdateIn, session: SessionDep, response: Response) -> CardUpdateAck:
    """Store a new card for a customer; later decisions for their older failures treat the card as new."""
    record = CardUpdateRecord(
        update_id=body.update_id,
        customer_id=body.customer_id,
        invoice_id=body.invoice_id,
        card=body.card.model_dump(exclude_none=True),
        card_fingerprint=body.card.fingerprint,
        updated_at=body.updated_at,
        source=body.source,
    )
    result = record_card_update(session, record)
    if result == "duplicate":
        response.status_code = status.HTTP_200_OK
    return CardUpdateAck(update_id=body.update_id, status=result)
