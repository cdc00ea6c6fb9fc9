"""`GET /v1/recoverable` and `GET /v1/expiring-cards`: what to work on next (issue #9, ``serving.store.worklist``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from serving.deps import ClockDep, SessionDep
from serving.schemas import (
    Currency,
    ErrorResponse,
    ExpiringCardOut,
    ExpiringCardsResponse,
    RecoverableInvoiceOut,
    RecoverableResponse,
    UtcIn,
)
from serving.store import ExpiringCard, RecoverableInvoice, expiring_cards, recoverable_invoices
from serving.store.worklist import MAX_LIMIT, MAX_WITHIN_DAYS

router = APIRouter(prefix="/v1", tags=["workflow"])

# Far beyond any real list, and small enough for every database's OFFSET.
MAX_OFFSET = 1_000_000_000
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key (when the service has a key)."},
    422: {"model": ErrorResponse, "description": "Invalid query parameter; `field` names it."},
    503: {"model": ErrorResponse, "description": "The store is unreachable."},
}

NowQuery = Annotated[
    UtcIn | None,
    Query(description="As of this time (UTC, with a zone), e.g. for a backtest; default: the server clock."),
]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip (the previous `next_offset`).")]


def invoice_out(item: RecoverableInvoice) -> RecoverableInvoiceOut:
    """A worklist row in the API's shape (the store's fields, validated)."""
    return RecoverableInvoiceOut.model_validate(item, from_attributes=True)


def card_out(card: ExpiringCard) -> ExpiringCardOut:
    """An expiring card in the API's shape (the store's fields, validated)."""
    return ExpiringCardOut.model_validate(card, from_attributes=True)


@router.get("/recoverable", response_model=RecoverableResponse, responses=RESPONSES)
def recoverable(
    session: SessionDep,
    clock: ClockDep,
    now: NowQuery = None,
    limit: LimitQuery = 100,
    offset: OffsetQuery = 0,
    currency: Annotated[
        Currency | None, Query(description="Only invoices in this currency (else ranked by minor units).")
    ] = None,
) -> RecoverableResponse:
    """Open failed invoices by expected recoverable amount (amount × the plan's recovery probability), highest first.

    Open: the latest decision's window has not ended and no successful attempt is stored. Ties go to the earlier
    next retry, then the invoice id. Amounts are minor units in each invoice's currency (README: the worklist).
    """
    as_of: datetime = now or clock
    page = recoverable_invoices(session, as_of, limit=limit, offset=offset, currency=currency)
    return RecoverableResponse(
        now=as_of,
        currency=currency,
        total=page.total,
        limit=limit,
        offset=offset,
        next_offset=page.next_offset,
        invoices=[invoice_out(item) for item in page.items],
    )


@router.get("/expiring-cards", response_model=ExpiringCardsResponse, responses=RESPONSES)
def expiring(
    session: SessionDep,
    clock: ClockDep,
    within_days: Annotated[
        int, Query(ge=1, le=MAX_WITHIN_DAYS, description="Cards whose expiry falls in [now, now + within_days].")
    ] = 30,
    now: NowQuery = None,
    limit: LimitQuery = 100,
    offset: OffsetQuery = 0,
) -> ExpiringCardsResponse:
    """Cards seen in decision requests that expire soon, with their customers and the amount at risk per currency.

    A card a customer replaced (a card update after their last decision on it) no longer counts for that
    customer; a card nobody still uses is left out (README: the worklist).
    """
    as_of: datetime = now or clock
    page = expiring_cards(session, as_of, within_days, limit=limit, offset=offset)
    return ExpiringCardsResponse(
        now=as_of,
        within_days=within_days,
        total=page.total,
        limit=limit,
        offset=offset,
        next_offset=page.next_offset,
        cards=[card_out(card) for card in page.items],
    )
