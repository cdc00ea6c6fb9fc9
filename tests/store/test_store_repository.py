"""Recording decisions, outcomes and card updates: idempotent, conflict-checked, concurrent-safe."""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.store import (
    CardUpdateConflict,
    CardUpdateRecord,
    DecisionRecord,
    OutcomeConflict,
    OutcomeRecord,
    get_decision,
    latest_card_update,
    record_card_update,
    record_decision,
    record_decisions,
    record_outcome,
    session_factory,
)
from serving.store.models import CARD_UPDATES, DECISIONS, OUTCOMES

AT = datetime(2026, 11, 1, 14, 0, tzinfo=UTC)


def outcome(attempt_id: str = "in_1_a1", **changes: Any) -> OutcomeRecord:
    base = OutcomeRecord(
        attempt_id=attempt_id,
        invoice_id="in_1",
        customer_id="cus_1",
        attempted_at=AT,
        succeeded=False,
        amount=4900,
        currency="usd",
        decline_code="insufficient_funds",
        network_decline_code="51",
        merchant_advice_code=None,
        decision_id="dec_1",
    )
    return replace(base, **changes)


def decision(decision_id: str = "dec_1", **changes: Any) -> DecisionRecord:
    base = DecisionRecord(
        decision_id=decision_id,
        invoice_id="in_1",
        customer_id="cus_1",
        card_brand="visa",
        card_country="US",
        card_funding="debit",
        card_fingerprint="fp_7Hq2",
        decline_code="insufficient_funds",
        attempt_count=1,
        amount=4900,
        currency="usd",
        decided_at=AT + timedelta(minutes=5),
        action="retry",
        retry_at=AT + timedelta(days=2),
        success_probability=0.41,
        expected_recovered_amount=2009,
        schedule=[{"retry_at": AT + timedelta(days=2), "success_probability": 0.41}],
        reasons=["insufficient funds: retrying just after a likely payday"],
        model_version="lgbm-2026-11-01",
        policy="learned",
        window_end=AT + timedelta(days=14),
        max_retries=4,
    )
    return replace(base, **changes)


def count(session: Session, table: object) -> int:
    return int(session.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Outcomes


def test_an_outcome_is_stored_once(session: Session) -> None:
    assert record_outcome(session, outcome()) == "created"
    assert record_outcome(session, outcome()) == "duplicate"
    assert record_outcome(session, outcome()) == "duplicate"
    assert count(session, OUTCOMES) == 1


def test_the_same_instant_in_another_offset_is_a_duplicate(session: Session) -> None:
    assert record_outcome(session, outcome()) == "created"
    chicago = timezone(timedelta(hours=-6))
    assert record_outcome(session, outcome(attempted_at=AT.astimezone(chicago))) == "duplicate"


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": 5000},
        {"succeeded": True, "decline_code": None},
        {"attempted_at": AT + timedelta(seconds=1)},
        {"decline_code": "do_not_honor"},
        {"network_decline_code": None},
        {"decision_id": None},
        {"invoice_id": "in_2"},
    ],
)
def test_a_repeat_with_different_content_is_a_conflict(session: Session, changes: dict[str, Any]) -> None:
    assert record_outcome(session, outcome()) == "created"
    with pytest.raises(OutcomeConflict) as raised:
        record_outcome(session, outcome(**changes))
    assert raised.value.key == "in_1_a1"
    assert set(raised.value.differing) == set(changes)
    stored = session.execute(select(OUTCOMES)).mappings().one()
    assert stored["amount"] == 4900 and stored["succeeded"] is False  # the first version is kept
    assert record_outcome(session, outcome()) == "duplicate"  # and the session is still usable


def test_the_server_filled_card_fingerprint_is_not_compared(session: Session) -> None:
    assert record_outcome(session, outcome(card_fingerprint=None)) == "created"
    assert record_outcome(session, outcome(card_fingerprint="fp_7Hq2")) == "duplicate"
    assert session.execute(select(OUTCOMES.c.card_fingerprint)).scalar_one() is None


def test_eight_concurrent_writers_lose_nothing_and_duplicate_nothing(engine: Engine) -> None:
    """8 threads x 500 outcomes; every outcome is sent by two writers, in random orders."""
    writers, per_writer, distinct = 8, 500, 2000
    universe = [
        outcome(
            f"att_{i:05d}",
            invoice_id=f"in_{i // 4:04d}",
            attempted_at=AT + timedelta(hours=i),
            succeeded=i % 4 == 3,
            decline_code=None if i % 4 == 3 else "insufficient_funds",
            amount=1000 + i,
        )
        for i in range(distinct)
    ]
    batches = []
    for w in range(writers):
        batch = [universe[(w * per_writer // 2 + i) % distinct] for i in range(per_writer)]
        random.Random(w).shuffle(batch)
        batches.append(batch)
    sent = Counter(record.attempt_id for batch in batches for record in batch)
    assert len(sent) == distinct and set(sent.values()) == {2}  # every outcome repeated across writers

    make_session = session_factory(engine)
    results: list[Counter[str]] = [Counter() for _ in range(writers)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers)

    def write(index: int) -> None:
        try:
            with make_session() as session:
                barrier.wait()
                for record in batches[index]:
                    results[index][record_outcome(session, record)] += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    total = sum(results, Counter())
    assert total == Counter({"created": distinct, "duplicate": writers * per_writer - distinct})
    with make_session() as session:
        rows = session.execute(select(OUTCOMES)).mappings().all()
    assert len(rows) == distinct
    expected = {record.attempt_id: record for record in universe}
    for row in rows:
        record = expected[row["attempt_id"]]
        assert (row["amount"], row["attempted_at"], row["succeeded"]) == (
            record.amount,
            record.attempted_at,
            record.succeeded,
        )


def test_concurrent_different_versions_of_one_attempt_store_exactly_one(engine: Engine) -> None:
    writers = 8
    make_session = session_factory(engine)
    answers: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(writers)

    def write(index: int) -> None:
        with make_session() as session:
            barrier.wait()
            for n in range(20):
                answer: str
                try:
                    answer = record_outcome(session, outcome(f"race_{n}", amount=100 + index))
                except OutcomeConflict:
                    answer = "conflict"
                with lock:
                    answers.append(answer)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(answers) == Counter({"created": 20, "conflict": 20 * (writers - 1)})
    with make_session() as session:
        assert count(session, OUTCOMES) == 20


# ---------------------------------------------------------------------------------------
# Card updates


def card_update(update_id: str = "cu_1", **changes: Any) -> CardUpdateRecord:
    base = CardUpdateRecord(
        update_id=update_id,
        customer_id="cus_1",
        invoice_id="in_1",
        card={"brand": "visa", "funding": "debit", "country": "US", "exp_month": 4, "exp_year": 2029, "fingerprint": "fp_new"},
        updated_at=AT + timedelta(days=1),
        source="account_updater",
    )  # fmt: skip
    return replace(base, **changes)


def test_a_card_update_is_stored_once(session: Session) -> None:
    assert record_card_update(session, card_update()) == "created"
    assert record_card_update(session, card_update()) == "duplicate"
    assert count(session, CARD_UPDATES) == 1
    stored = session.execute(select(CARD_UPDATES)).mappings().one()
    assert stored["card_fingerprint"] == "fp_new"
    assert stored["card"]["exp_year"] == 2029


def test_absent_and_null_card_fields_are_the_same_card(session: Session) -> None:
    sparse = {"brand": "visa", "fingerprint": "fp_new"}
    assert record_card_update(session, card_update(card=sparse)) == "created"
    assert record_card_update(session, card_update(card={**sparse, "funding": None})) == "duplicate"


@pytest.mark.parametrize(
    ("changes", "differing"),
    [
        ({"card": {"brand": "visa", "exp_month": 5, "exp_year": 2029, "fingerprint": "fp_new"}}, {"card"}),
        ({"source": "customer"}, {"source"}),
        ({"updated_at": AT}, {"updated_at"}),
        ({"invoice_id": None}, {"invoice_id"}),
    ],
)
def test_a_card_update_repeat_with_different_content_is_a_conflict(
    session: Session, changes: dict[str, Any], differing: set[str]
) -> None:
    assert record_card_update(session, card_update()) == "created"
    with pytest.raises(CardUpdateConflict) as raised:
        record_card_update(session, card_update(**changes))
    assert set(raised.value.differing) == differing


def test_latest_card_update_of_a_customer(session: Session) -> None:
    assert latest_card_update(session, "cus_1") is None
    record_card_update(session, card_update("cu_old", updated_at=AT))
    record_card_update(session, card_update("cu_new", updated_at=AT + timedelta(days=3), source="customer"))
    record_card_update(session, card_update("cu_other", customer_id="cus_2", updated_at=AT + timedelta(days=9)))
    latest = latest_card_update(session, "cus_1")
    assert latest is not None
    assert (latest.update_id, latest.source, latest.updated_at) == ("cu_new", "customer", AT + timedelta(days=3))


def test_card_update_source_is_checked() -> None:
    with pytest.raises(ValueError, match="source"):
        card_update(source="bank")


# ---------------------------------------------------------------------------------------
# Decisions


def test_a_decision_round_trips(session: Session) -> None:
    record_decision(session, decision(blocked_by_rule="visa_cat2_spacing"))
    stored = get_decision(session, "dec_1")
    assert stored is not None
    assert stored == decision(blocked_by_rule="visa_cat2_spacing", schedule=stored.schedule)
    assert stored.schedule == [{"retry_at": "2026-11-03T14:00:00Z", "success_probability": 0.41}]
    assert stored.decided_at.tzinfo == UTC and stored.created_at is not None and stored.created_at.tzinfo == UTC
    assert get_decision(session, "dec_missing") is None


def test_a_batch_of_decisions_is_stored_in_one_go(session: Session) -> None:
    stop = decision(
        "dec_2",
        action="stop",
        retry_at=None,
        success_probability=None,
        expected_recovered_amount=0,
        schedule=[],
        next_step="request_new_payment_method",
        blocked_by_rule="hard_decline",
        policy="fallback",
    )
    record_decisions(session, [decision(), stop])
    assert count(session, DECISIONS) == 2
    stored = get_decision(session, "dec_2")
    assert stored is not None and stored.retry_at is None and stored.next_step == "request_new_payment_method"


def test_a_repeated_decision_id_is_an_error(session: Session) -> None:
    record_decision(session, decision())
    with pytest.raises(IntegrityError):
        record_decision(session, decision())
    assert count(session, DECISIONS) == 1  # the session was rolled back and still works


@pytest.mark.parametrize("changes", [{"policy": "bandit"}, {"action": "wait"}, {"decided_at": datetime(2026, 1, 1)}])
def test_decision_values_are_checked(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        decision(**changes)
