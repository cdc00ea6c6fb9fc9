"""Per-card reads: what every invoice on a card did and plans, for the networks' per-card attempt caps.

Card networks count attempts per card across all the invoices charged to it, so a decision needs
the card's other invoices: their stored outcomes (attempts, which of them were first charges,
which succeeded) and the next retry their latest decision planned, if it has not happened yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, bindparam, exists, func, select
from sqlalchemy.orm import Session

from serving.store.models import DECISIONS, OUTCOMES
from serving.store.repository import invoice_decision_value


@dataclass(frozen=True)
class CardAttemptRow:
    """A stored attempt on a card."""

    card_fingerprint: str
    invoice_id: str
    attempted_at: datetime
    succeeded: bool
    first: bool  # the invoice's earliest stored attempt: its scheduled charge, not a reattempt


@dataclass(frozen=True)
class PlannedRetryRow:
    """The next retry an open invoice's latest decision planned, not made yet."""

    card_fingerprint: str
    invoice_id: str
    retry_at: datetime


# The reads run on every decision, so their statements are built once, with bound parameters: building
# a Core statement and its IN list took most of a read's time (a read that SQLite answers in 15 µs
# took ~0.8 ms through a freshly built select on a loaded machine).


def _card_attempts_statement() -> Select[str, str, datetime, bool, bool]:
    """Attempts on the cards `:cards` in [`:since`, `:until`], with whether each was its invoice's first."""
    outcomes = OUTCOMES
    on_cards = outcomes.c.card_fingerprint.in_(bindparam("cards", expanding=True))
    first = (
        select(outcomes.c.invoice_id, func.min(outcomes.c.attempted_at).label("first_at"))
        .where(outcomes.c.invoice_id.in_(select(outcomes.c.invoice_id).where(on_cards)))
        .group_by(outcomes.c.invoice_id)
        .subquery()
    )
    return (
        select(
            outcomes.c.card_fingerprint,
            outcomes.c.invoice_id,
            outcomes.c.attempted_at,
            outcomes.c.succeeded,
            (outcomes.c.attempted_at == first.c.first_at).label("first"),
        )
        .join(first, first.c.invoice_id == outcomes.c.invoice_id)
        .where(on_cards, outcomes.c.attempted_at >= bindparam("since"), outcomes.c.attempted_at <= bindparam("until"))
        .order_by(outcomes.c.attempted_at, outcomes.c.attempt_id)
    )


def _planned_retries_statement() -> Select[str, str, datetime]:
    """Next retries after `:after` planned by the latest decision of open invoices on the cards `:cards`.

    The invoices with a retry planned after `:after` are found first, and each one's latest decision
    is looked up once: looking it up for every stored decision made the query quadratic in the
    decisions of an invoice (an invoice decided 400 times took ~90 ms on SQLite).
    """
    decisions, outcomes = DECISIONS, OUTCOMES
    planned = (
        decisions.c.card_fingerprint.in_(bindparam("cards", expanding=True)),
        decisions.c.action == "retry",
        decisions.c.retry_at > bindparam("after"),
    )
    invoices = select(decisions.c.invoice_id).where(*planned).distinct().subquery("invoices")
    latest = select(
        invoices.c.invoice_id, invoice_decision_value("decision_id", invoices.c.invoice_id).label("decision_id")
    ).subquery("latest")
    made_or_paid = exists().where(
        outcomes.c.invoice_id == decisions.c.invoice_id,
        (outcomes.c.attempted_at >= decisions.c.decided_at) | outcomes.c.succeeded.is_(True),
    )
    return (
        select(decisions.c.card_fingerprint, decisions.c.invoice_id, decisions.c.retry_at)
        .join(latest, latest.c.decision_id == decisions.c.decision_id)
        .where(and_(*planned, ~made_or_paid))
        .order_by(decisions.c.retry_at, decisions.c.invoice_id)
    )


_CARD_ATTEMPTS = _card_attempts_statement()
_PLANNED_RETRIES = _planned_retries_statement()


def card_attempts(
    session: Session, fingerprints: Sequence[str], since: datetime, until: datetime
) -> list[CardAttemptRow]:
    """Stored attempts on the cards in [since, until], each marked first charge or reattempt."""
    if not fingerprints:
        return []
    rows = session.execute(_CARD_ATTEMPTS, {"cards": sorted(set(fingerprints)), "since": since, "until": until})
    return [CardAttemptRow(str(fp), str(inv), at, bool(ok), bool(is_first)) for fp, inv, at, ok, is_first in rows]


def planned_retries(session: Session, fingerprints: Sequence[str], after: datetime) -> list[PlannedRetryRow]:
    """Next retries after `after` that open invoices on the cards hold (latest decision, not yet made)."""
    if not fingerprints:
        return []
    rows = session.execute(_PLANNED_RETRIES, {"cards": sorted(set(fingerprints)), "after": after})
    return [PlannedRetryRow(str(fp), str(inv), at) for fp, inv, at in rows]


def is_first_attempt(session: Session, invoice_id: str, attempted_at: datetime) -> bool:
    """Whether no attempt of the invoice is stored before `attempted_at` (its first, scheduled charge)."""
    outcomes = OUTCOMES
    earlier = session.execute(
        select(outcomes.c.attempt_id)
        .where(outcomes.c.invoice_id == invoice_id, outcomes.c.attempted_at < attempted_at)
        .limit(1)
    ).first()
    return earlier is None
