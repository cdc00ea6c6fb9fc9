"""Per-customer reads: the customer's earlier failed invoices and when they were recovered.

A decision's customer history (`features.customer`) needs, for each of the customer's other
invoices, when it first failed and when a later charge recovered it. The store knows an invoice
failed from a failed outcome or from a decision asked for it (asked right after a failure, even if
the scheduler never reported the failed charge itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
from sqlalchemy import BindParameter, Boolean, CompoundSelect, Row, bindparam, literal, select, union_all
from sqlalchemy.orm import Session

from features.customer import EVENT_COLUMNS, invoice_events
from serving.store.models import DECISIONS, OUTCOMES


def _customer_attempts_statement() -> CompoundSelect[str, str, datetime, bool, str | None]:
    """The customers' (`:customers`) charges before `:until`, and a failure at each of their decisions."""
    customers: BindParameter[list[str]] = bindparam("customers", expanding=True)
    until: BindParameter[datetime] = bindparam("until")
    outcomes = select(
        OUTCOMES.c.customer_id,
        OUTCOMES.c.invoice_id,
        OUTCOMES.c.attempted_at,
        OUTCOMES.c.succeeded,
        OUTCOMES.c.decline_code,
    ).where(OUTCOMES.c.customer_id.in_(customers), OUTCOMES.c.attempted_at < until)
    # Each decision was asked right after a failure whose code it stores: a failure at decided_at.
    decided = select(
        DECISIONS.c.customer_id,
        DECISIONS.c.invoice_id,
        DECISIONS.c.decided_at.label("attempted_at"),
        literal(False, Boolean).label("succeeded"),
        DECISIONS.c.decline_code,
    ).where(DECISIONS.c.customer_id.in_(customers), DECISIONS.c.decided_at < until)
    return union_all(outcomes, decided)


# Built once (it runs on every decision): building it took most of the read's time.
_CUSTOMER_ATTEMPTS = _customer_attempts_statement()


_AttemptRow = Row[str, str, datetime, bool, str | None]
_ATTEMPT_COLUMNS = ["customer_id", "invoice_id", "attempted_at", "succeeded", "decline_code"]


def _attempt_rows(session: Session, customer_ids: Sequence[str], until: datetime) -> Sequence[_AttemptRow]:
    """The rows of `customer_attempts`, unordered."""
    if not customer_ids:
        return []
    return session.execute(_CUSTOMER_ATTEMPTS, {"customers": sorted(set(customer_ids)), "until": until}).all()


def _attempts_frame(rows: Sequence[_AttemptRow]) -> pd.DataFrame:
    """`customer_attempts`' frame of its rows."""
    if not rows:
        return pd.DataFrame(columns=_ATTEMPT_COLUMNS)
    frame = pd.DataFrame(rows, columns=_ATTEMPT_COLUMNS)
    frame["attempted_at"] = pd.to_datetime(frame["attempted_at"], utc=True)
    frame["succeeded"] = frame["succeeded"].astype(bool)
    return frame.sort_values(["invoice_id", "attempted_at"], kind="stable").reset_index(drop=True)


def customer_attempts(session: Session, customer_ids: Sequence[str], until: datetime) -> pd.DataFrame:
    """The customers' stored charges before `until`, plus a failure at each decision (asked after one).

    Columns: customer_id, invoice_id, attempted_at (UTC), succeeded, decline_code (a decision's is
    the failure it was asked about).
    """
    return _attempts_frame(_attempt_rows(session, customer_ids, until))


def customer_events(session: Session, customer_ids: Sequence[str], until: datetime) -> pd.DataFrame:
    """`features.customer.EVENT_COLUMNS` of the customers' invoices known to the store before `until`."""
    rows = _attempt_rows(session, customer_ids, until)
    if not rows:  # a customer with no stored history (most decisions): one empty frame, no attempts frame
        return pd.DataFrame(columns=list(EVENT_COLUMNS))
    return invoice_events(_attempts_frame(rows))
