"""The store's view of a customer's earlier invoices (features.customer), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy.orm import Session

from features.customer import customer_history
from serving.store import DecisionRecord, OutcomeRecord, record_decision, record_outcome
from serving.store.customers import customer_events
from tests.records import decision_record, outcome_record

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


def _outcome(
    attempt_id: str, invoice: str, customer: str, at: datetime, ok: bool, code: str = "insufficient_funds"
) -> OutcomeRecord:
    return outcome_record(attempt_id, invoice, at, ok, customer_id=customer, decline_code=None if ok else code)


def _decision(invoice: str, customer: str, at: datetime) -> DecisionRecord:
    return decision_record(f"dec_{invoice}_{at.timestamp():.0f}", invoice, at, customer_id=customer)


def test_customer_events_from_outcomes_and_decisions(session: Session) -> None:
    # in_1: insufficient funds, then recovered 4 days later. in_2: the scheduler reported only the
    # success, but asked for a decision after its (insufficient-funds) failure. in_3: paid at once
    # (no failure). in_6: a do-not-honor recovered: counted, but no funds bracket. Another customer too.
    for record in (
        _outcome("a1", "in_1", "cus_h", T0, False),
        _outcome("a2", "in_1", "cus_h", T0 + 96 * H, True),
        _outcome("b2", "in_2", "cus_h", T0 + 31 * 24 * H + 30 * H, True),
        _outcome("c1", "in_3", "cus_h", T0 + 40 * 24 * H, True),
        _outcome("f1", "in_6", "cus_h", T0 + 45 * 24 * H, False, "do_not_honor"),
        _outcome("f2", "in_6", "cus_h", T0 + 46 * 24 * H, True),
        _outcome("x1", "in_9", "cus_other", T0, False),
        _outcome("x2", "in_9", "cus_other", T0 + 5 * H, True),
    ):
        record_outcome(session, record)
    record_decision(session, _decision("in_2", "cus_h", T0 + 31 * 24 * H + H))
    session.commit()

    events = customer_events(session, ["cus_h"], T0 + 60 * 24 * H)
    assert len(events) == 3 and set(events["customer_id"]) == {"cus_h"}
    recovered = sorted(events["recovered_at"].dropna())
    assert recovered == [
        pd.Timestamp(T0 + 96 * H),
        pd.Timestamp(T0 + 31 * 24 * H + 30 * H),
        pd.Timestamp(T0 + 46 * 24 * H),
    ]

    queries = pd.DataFrame(
        {
            "customer_id": ["cus_h", "cus_h", "cus_new"],
            "at": pd.to_datetime([T0 + 50 * 24 * H, T0 + 2 * H, T0], utc=True),
        }
    )
    got = customer_history(events, queries)
    assert got["customer_prior_failed_invoices"].tolist() == [3, 1, 0]
    assert got["customer_prior_recoveries"].tolist() == [3, 0, 0]
    # The latest insufficient-funds recovery brackets the money: in_2's, short at its decision.
    assert got["customer_funds_back_at"].iloc[0] == pd.Timestamp(T0 + 31 * 24 * H + 30 * H)
    assert got["customer_funds_short_at"].iloc[0] == pd.Timestamp(T0 + 31 * 24 * H + H)


def test_customer_events_of_nobody(session: Session) -> None:
    assert customer_events(session, [], T0).empty
    assert customer_events(session, ["cus_unknown"], T0).empty
