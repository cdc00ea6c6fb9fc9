"""Per-card reads (serving.store.cards) on each backend: the retries open invoices on a card plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from serving.store import DecisionRecord, OutcomeRecord, record_decisions, record_outcome
from serving.store.cards import planned_retries
from tests.records import decision_record

AT = datetime(2026, 11, 1, 14, 0, tzinfo=UTC)
H = timedelta(hours=1)


def decision(decision_id: str, invoice: str, decided_at: datetime, **changes: Any) -> DecisionRecord:
    fields: dict[str, Any] = {
        "card_fingerprint": "fp_1",
        "amount": 4900,
        "retry_at": decided_at + 48 * H,
        "success_probability": 0.4,
        "expected_recovered_amount": 2000,
        "window_end": AT + 14 * 24 * H,
        **changes,
    }
    return decision_record(decision_id, invoice, decided_at, **fields)


def test_only_each_open_invoices_latest_decision_counts(session: Session) -> None:
    records = [
        # in_a, decided three times: only the latest plan holds.
        decision("dec_a1", "in_a", AT),
        decision("dec_a2", "in_a", AT + H),
        decision("dec_a3", "in_a", AT + 2 * H, retry_at=AT + 30 * H),
        # in_b: an earlier retry, then a stop: nothing planned.
        decision("dec_b1", "in_b", AT),
        decision("dec_b2", "in_b", AT + H, action="stop", retry_at=None),
        # in_c: its latest decision planned a retry that was made since: nothing planned.
        decision("dec_c1", "in_c", AT),
        # in_d: another card.
        decision("dec_d1", "in_d", AT, card_fingerprint="fp_2"),
        # in_e: two decisions at the same decided_at, the later created one is the latest.
        decision("dec_e1", "in_e", AT, created_at=AT + H, retry_at=AT + 40 * H),
        decision("dec_e2", "in_e", AT, created_at=AT + 2 * H, retry_at=AT + 50 * H),
        # in_f: the latest plan's retry is before `after`; an earlier decision's is after it.
        decision("dec_f1", "in_f", AT, retry_at=AT + 100 * H),
        decision("dec_f2", "in_f", AT + H, retry_at=AT + 3 * H),
    ]
    record_decisions(session, records)
    record_outcome(
        session,
        OutcomeRecord(
            attempt_id="in_c_a2",
            invoice_id="in_c",
            customer_id="cus_1",
            attempted_at=AT + 3 * H,
            succeeded=False,
            amount=4900,
            currency="usd",
            decline_code="insufficient_funds",
        ),
    )
    found = planned_retries(session, ["fp_1"], AT + 4 * H)
    assert [(row.card_fingerprint, row.invoice_id, row.retry_at) for row in found] == [
        ("fp_1", "in_a", AT + 30 * H),
        ("fp_1", "in_e", AT + 50 * H),
    ]
    assert planned_retries(session, ["fp_2"], AT + 4 * H)[0].invoice_id == "in_d"
    assert planned_retries(session, ["fp_3"], AT) == []
    assert planned_retries(session, [], AT) == []
