"""The recovery worklist, the expiring-cards list and the card-update KPI on a small fixed store (SQLite and PostgreSQL).

NOW = 2026-06-10 12:00 UTC. Worklist invoices (cards far from expiry, 12/2030):

invoice  latest decision                       expected  notes
in_2     usd 20000 × 0.25, retry NOW+12h       5000      2 failed attempts stored (decision said 1)
in_1     usd 10000 × 0.50, retry NOW+24h       5000      older decision said 0.9; one decided after NOW is unknown yet
in_3     eur  3000, no recovery_probability    1200      decided before migration 0002: success_probability 0.4
in_S     usd  1000 × 0.30                       300      its success is stored, but after NOW
in_4     usd  8000, stop (new payment method)     0
in_5     usd  4000, stop                          0
in_R     usd 50000 × 0.9                          -      recovered before NOW: out
in_W     usd 90000 × 0.9                          -      window ended: out
in_X     usd 70000 × 0.9                          -      older decision open, latest one's window ends at NOW: out
in_F     usd 60000 × 0.9                          -      only decided after NOW: out

Expiring cards (their decisions' windows are over, so they stay off the worklist):

card      expiry   customers (invoices)                                   listed within 30 days?
fp_B      06/2026  cus_B (in_B usd 9000)                                  yes, first (largest amount)
fp_A      06/2026  cus_A1 (in_A1 usd 1000, latest of 900 → 1000),        yes: cus_A1, cus_A2
                   cus_A2 (in_A2 usd 2000, in_A3 eur 500),
                   cus_A3 (in_A4 usd 7000; card updated since: dropped)
fp_K      06/2026  cus_K (usd 50; card update before the card was seen)  yes
fp_U      06/2026  cus_U (usd 20; card update after NOW)                 yes
fp_R      06/2026  cus_R (card updated after it was last seen)           no: replaced
fp_E      05/2026  cus_E                                                  no: already expired
fp_L      06/2026, then renewed to 06/2029                                no: latest expiry is 2029
fp_F      06/2026  seen only after NOW                                    no
(none)    07/2026  cus_N amex (in_N usd 100)                              only within 60 days
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from serving.store import (
    CardUpdateRecord,
    DecisionRecord,
    OutcomeRecord,
    compute_kpis,
    expiring_cards,
    record_card_update,
    record_decisions,
    record_outcome,
    recoverable_invoices,
)
from serving.store.worklist import expiry_instant, expiry_months, month_index

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


def decision(
    decision_id: str,
    invoice: str,
    customer: str,
    decided_at: datetime,
    *,
    amount: int,
    currency: str = "usd",
    recovery_probability: float | None = None,
    success_probability: float | None = None,
    retry_at: datetime | None = None,
    window_end: datetime | None = None,
    next_step: str | None = None,
    attempt_count: int = 1,
    fingerprint: str | None = None,
    brand: str = "visa",
    exp: tuple[int, int] = (12, 2030),
) -> DecisionRecord:
    """A stored decision with the fields these tests look at; a stop when ``retry_at`` is None."""
    action = "stop" if retry_at is None else "retry"
    return DecisionRecord(
        decision_id=decision_id,
        invoice_id=invoice,
        customer_id=customer,
        card_brand=brand,
        card_fingerprint=fingerprint,
        card_exp_month=exp[0],
        card_exp_year=exp[1],
        decline_code="insufficient_funds",
        attempt_count=attempt_count,
        amount=amount,
        currency=currency,
        decided_at=decided_at,
        action=action,
        retry_at=retry_at,
        success_probability=success_probability,
        expected_recovered_amount=0,
        schedule=[] if retry_at is None else [{"retry_at": retry_at, "success_probability": success_probability}],
        reasons=["test"],
        model_version="m1",
        policy="learned",
        window_end=window_end or NOW + 5 * D,
        max_retries=4,
        next_step=next_step,
        recovery_probability=recovery_probability,
        expected_hours_to_recovery=None if retry_at is None else 30.0,
    )


def attempt(attempt_id: str, invoice: str, customer: str, at: datetime, ok: bool, amount: int = 1000) -> OutcomeRecord:
    """A stored attempt (failed ones declined for insufficient funds)."""
    return OutcomeRecord(
        attempt_id=attempt_id,
        invoice_id=invoice,
        customer_id=customer,
        attempted_at=at,
        succeeded=ok,
        amount=amount,
        currency="usd",
        decline_code=None if ok else "insufficient_funds",
    )


def card_update(update_id: str, customer: str, at: datetime, invoice: str | None = None) -> CardUpdateRecord:
    """A stored card update for the customer (customer-wide unless ``invoice`` is given)."""
    card = {"brand": "visa", "exp_month": 1, "exp_year": 2031, "fingerprint": f"fp_new_{customer}"}
    return CardUpdateRecord(
        update_id=update_id, customer_id=customer, invoice_id=invoice, card=card, updated_at=at, source="customer"
    )


WORKLIST_DECISIONS = [
    decision("d1_old", "in_1", "cus_1", NOW - 3 * D, amount=10000, recovery_probability=0.9, retry_at=NOW - 2 * D),
    decision("d1", "in_1", "cus_1", NOW - D, amount=10000, recovery_probability=0.5, success_probability=0.3,
             retry_at=NOW + 24 * H, attempt_count=3),
    decision("d1_future", "in_1", "cus_1", NOW + H, amount=10000, recovery_probability=0.01, retry_at=NOW + 9 * H),
    decision("d2", "in_2", "cus_2", NOW - D, amount=20000, recovery_probability=0.25, retry_at=NOW + 12 * H),
    decision("d3", "in_3", "cus_3", NOW - 2 * D, amount=3000, currency="eur", success_probability=0.4,
             retry_at=NOW + 6 * H),
    decision("dS", "in_S", "cus_S", NOW - D, amount=1000, recovery_probability=0.3, retry_at=NOW + 2 * H),
    decision("d4", "in_4", "cus_4", NOW - D, amount=8000, recovery_probability=0.0,
             next_step="request_new_payment_method"),
    decision("d5", "in_5", "cus_5", NOW - 2 * D, amount=4000, recovery_probability=0.0),
    decision("dR", "in_R", "cus_R0", NOW - 2 * D, amount=50000, recovery_probability=0.9, retry_at=NOW - D),
    decision("dW", "in_W", "cus_W", NOW - 20 * D, amount=90000, recovery_probability=0.9, retry_at=NOW - 19 * D,
             window_end=NOW - H),
    decision("dX_old", "in_X", "cus_X", NOW - 3 * D, amount=70000, recovery_probability=0.9, retry_at=NOW - 2 * D,
             window_end=NOW + 3 * D),
    decision("dX", "in_X", "cus_X", NOW - D, amount=70000, recovery_probability=0.9, retry_at=NOW - H,
             window_end=NOW),
    decision("dF", "in_F", "cus_F", NOW + D, amount=60000, recovery_probability=0.9, retry_at=NOW + 2 * D),
]  # fmt: skip
WORKLIST_OUTCOMES = [
    attempt("r1", "in_R", "cus_R0", NOW - 3 * D, False),
    attempt("r2", "in_R", "cus_R0", NOW - D, True),
    attempt("s1", "in_S", "cus_S", NOW - 2 * D, False),
    attempt("s2", "in_S", "cus_S", NOW + H, True),  # after NOW: not known yet
    attempt("two_1", "in_2", "cus_2", NOW - 3 * D, False),
    attempt("two_2", "in_2", "cus_2", NOW - 2 * D, False),
    attempt("two_3", "in_2", "cus_2", NOW + 2 * H, False),  # after NOW: not counted
]
EXPIRED_WINDOW = NOW - H  # keeps the expiring-card decisions off the worklist


def card_decision(
    decision_id: str,
    invoice: str,
    customer: str,
    fingerprint: str | None,
    exp: tuple[int, int],
    amount: int,
    decided_at: datetime = NOW - 10 * D,
    **extra: Any,
) -> DecisionRecord:
    """A decision whose window is over, made for its card."""
    return decision(
        decision_id, invoice, customer, decided_at, amount=amount, fingerprint=fingerprint, exp=exp,
        window_end=EXPIRED_WINDOW, **extra,
    )  # fmt: skip


JUNE, JULY = (6, 2026), (7, 2026)
CARD_DECISIONS = [
    card_decision("cB", "in_B", "cus_B", "fp_B", JUNE, 9000, brand="mastercard"),
    card_decision("cA1_old", "in_A1", "cus_A1", "fp_A", JUNE, 900, decided_at=NOW - 20 * D),
    card_decision("cA1", "in_A1", "cus_A1", "fp_A", JUNE, 1000, decided_at=NOW - 12 * D),
    card_decision("cA2", "in_A2", "cus_A2", "fp_A", JUNE, 2000, decided_at=NOW - 8 * D),
    card_decision("cA3", "in_A3", "cus_A2", "fp_A", JUNE, 500, currency="eur", decided_at=NOW - 9 * D),
    card_decision("cA4", "in_A4", "cus_A3", "fp_A", JUNE, 7000),
    card_decision("cK", "in_K", "cus_K", "fp_K", JUNE, 50),
    card_decision("cU", "in_U", "cus_U", "fp_U", JUNE, 20),
    card_decision("cR", "in_Rc", "cus_R", "fp_R", JUNE, 100000),
    card_decision("cE", "in_E", "cus_E", "fp_E", (5, 2026), 100000),
    card_decision("cL_old", "in_L", "cus_L", "fp_L", JUNE, 100000, decided_at=NOW - 30 * D),
    card_decision("cL", "in_L", "cus_L", "fp_L", (6, 2029), 100000, decided_at=NOW - 5 * D),
    card_decision("cF", "in_Fc", "cus_Fc", "fp_F", JUNE, 100000, decided_at=NOW + D),
    card_decision("cN", "in_N", "cus_N", None, JULY, 100, brand="amex"),
    card_decision("cN_other", "in_N2", "cus_N2", None, (12, 2026), 100, brand="amex"),
]
CARD_UPDATES = [
    card_update("u_A3", "cus_A3", NOW - 5 * D),  # after cus_A3 last used fp_A (NOW - 10 days)
    card_update("u_R", "cus_R", NOW - 2 * D, invoice="in_Rc"),  # an invoice's update replaces the card too
    card_update("u_K", "cus_K", NOW - 20 * D),  # before fp_K was seen: still in use
    card_update("u_U", "cus_U", NOW + D),  # after NOW: not known yet
]


@pytest.fixture
def store(session: Session) -> Session:
    """The session, with the fixed store above (decisions in one batch, in reverse)."""
    record_decisions(session, list(reversed(WORKLIST_DECISIONS + CARD_DECISIONS)))
    for outcome in WORKLIST_OUTCOMES:
        assert record_outcome(session, outcome) == "created"
    for update in CARD_UPDATES:
        assert record_card_update(session, update) == "created"
    return session


# ---------------------------------------------------------------------------------------
# The worklist


def test_worklist_order_and_fields(store: Session) -> None:
    page = recoverable_invoices(store, NOW)
    assert [item.invoice_id for item in page.items] == ["in_2", "in_1", "in_3", "in_S", "in_4", "in_5"]
    assert [item.expected_recoverable_amount for item in page.items] == [5000, 5000, 1200, 300, 0, 0]
    assert page.total == 6 and page.next_offset is None
    two, one, three, paid_later, stop, _ = page.items
    assert (two.attempts, two.next_retry_at, two.decision_id) == (2, NOW + 12 * H, "d2")  # outcomes outnumber
    assert (one.attempts, one.recovery_probability, one.decision_id) == (3, 0.5, "d1")  # as of NOW: not d1_future
    assert (one.customer_id, one.amount, one.currency, one.action) == ("cus_1", 10000, "usd", "retry")
    assert (one.decided_at, one.window_end, one.expected_hours_to_recovery) == (NOW - D, NOW + 5 * D, 30.0)
    assert (three.recovery_probability, three.currency) == (pytest.approx(0.4), "eur")  # success_probability
    assert paid_later.invoice_id == "in_S"  # its success comes after NOW
    assert (stop.action, stop.next_retry_at, stop.next_step) == ("stop", None, "request_new_payment_method")
    assert stop.recovery_probability == 0.0


def test_worklist_as_of_a_later_time(store: Session) -> None:
    """A day later in_S is paid and d1_future is in (its plan says 0.01); the stops stay open."""
    page = recoverable_invoices(store, NOW + 2 * H)
    assert [item.invoice_id for item in page.items] == ["in_2", "in_3", "in_1", "in_4", "in_5"]
    assert page.items[2].decision_id == "d1_future" and page.items[2].expected_recoverable_amount == 100
    assert page.items[0].attempts == 3  # two_3 happened at NOW + 2 h


def test_worklist_pages(store: Session) -> None:
    first = recoverable_invoices(store, NOW, limit=2)
    assert [item.invoice_id for item in first.items] == ["in_2", "in_1"]
    assert (first.total, first.next_offset) == (6, 2)
    last = recoverable_invoices(store, NOW, limit=2, offset=4)
    assert [item.invoice_id for item in last.items] == ["in_4", "in_5"]
    assert (last.total, last.next_offset) == (6, None)
    beyond = recoverable_invoices(store, NOW, limit=2, offset=10)
    assert (beyond.items, beyond.total, beyond.next_offset) == ([], 6, None)
    every = [recoverable_invoices(store, NOW, limit=1, offset=k).items[0].invoice_id for k in range(6)]
    assert every == [item.invoice_id for item in recoverable_invoices(store, NOW).items]


def test_worklist_currency_filter(store: Session) -> None:
    page = recoverable_invoices(store, NOW, currency="eur")
    assert [item.invoice_id for item in page.items] == ["in_3"] and page.total == 1
    assert recoverable_invoices(store, NOW, currency="jpy").total == 0


def test_worklist_of_an_empty_store(session: Session) -> None:
    page = recoverable_invoices(session, NOW, offset=5)
    assert (page.items, page.total) == ([], 0)


def test_worklist_refuses_bad_arguments(session: Session) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        recoverable_invoices(session, datetime(2026, 6, 10))
    with pytest.raises(ValueError, match="limit"):
        recoverable_invoices(session, NOW, limit=0)
    with pytest.raises(ValueError, match="offset"):
        recoverable_invoices(session, NOW, offset=-1)


# ---------------------------------------------------------------------------------------
# Expiring cards


def test_expiry_months() -> None:
    assert expiry_instant(6, 2026) == datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=UTC)
    assert expiry_instant(12, 2026) == datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    june, july = month_index(datetime(2026, 6, 1, tzinfo=UTC)), month_index(datetime(2026, 7, 1, tzinfo=UTC))
    assert expiry_months(NOW, 30) == (june, june)
    assert expiry_months(NOW, 60) == (june, july)  # August ends after August 9
    # A month is in when its last instant is exactly now + within_days.
    end_of_june = expiry_instant(6, 2026)
    assert expiry_months(end_of_june - 10 * D, 10) == (june, june)
    assert expiry_months(end_of_june - 10 * D - timedelta(microseconds=1), 10) == (june, june - 1)


def test_expiring_cards_within_30_days(store: Session) -> None:
    page = expiring_cards(store, NOW, 30)
    assert [card.card_fingerprint for card in page.items] == ["fp_B", "fp_A", "fp_K", "fp_U"]
    assert page.total == 4 and page.next_offset is None
    b, a, k, _ = page.items
    assert (b.card_brand, b.exp_month, b.exp_year, b.customer_ids) == ("mastercard", 6, 2026, ["cus_B"])
    assert b.expires_at == datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=UTC)
    assert (b.invoice_count, b.amount_at_risk) == (1, {"usd": 9000})
    # cus_A3 replaced the card (and in_A4 with it); in_A1 counts once, at its latest amount.
    assert a.customer_ids == ["cus_A1", "cus_A2"]
    assert (a.invoice_count, a.amount_at_risk) == (3, {"eur": 500, "usd": 3000})
    assert a.last_seen_at == NOW - 8 * D
    assert (k.customer_ids, k.amount_at_risk) == (["cus_K"], {"usd": 50})


def test_expiring_cards_within_60_days_includes_cards_without_fingerprint(store: Session) -> None:
    page = expiring_cards(store, NOW, 60)
    assert [card.card_fingerprint for card in page.items] == ["fp_B", "fp_A", "fp_K", "fp_U", None]
    unnamed = page.items[-1]
    assert (unnamed.card_brand, unnamed.exp_month, unnamed.exp_year) == ("amex", 7, 2026)
    assert (unnamed.customer_ids, unnamed.amount_at_risk) == (["cus_N"], {"usd": 100})
    assert len(expiring_cards(store, NOW, 365).items) == 6  # and the 12/2026 one


def test_expiring_cards_as_of_later(store: Session) -> None:
    """Two days later, fp_U's customer has reported a new card, and fp_F has been seen."""
    page = expiring_cards(store, NOW + 2 * D, 30)
    assert [card.card_fingerprint for card in page.items] == ["fp_F", "fp_B", "fp_A", "fp_K"]


def test_expiring_cards_pages(store: Session) -> None:
    first = expiring_cards(store, NOW, 60, limit=2)
    assert [card.card_fingerprint for card in first.items] == ["fp_B", "fp_A"]
    assert (first.total, first.next_offset) == (5, 2)
    rest = expiring_cards(store, NOW, 60, limit=2, offset=4)
    assert [card.card_fingerprint for card in rest.items] == [None] and rest.next_offset is None
    beyond = expiring_cards(store, NOW, 60, limit=2, offset=7)
    assert (beyond.items, beyond.total) == ([], 5)


def test_expiring_cards_refuses_bad_arguments(session: Session) -> None:
    for days in (0, 366):
        with pytest.raises(ValueError, match="within_days"):
            expiring_cards(session, NOW, days)
    with pytest.raises(ValueError, match="limit"):
        expiring_cards(session, NOW, limit=1001)


# ---------------------------------------------------------------------------------------
# KPIs: recoveries after a card update

T = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
# invoice   first failure  card update                                  success   counted
# in_U1     T              customer-wide, T+1h                          T+2h      yes
# in_U2     T              customer-wide, T−1h (before the failure)     T+2h      no
# in_U3     T              for another invoice, T+1h                    T+2h      no
# in_U4     T              for in_U4, T+1h                              T+2h      yes
# in_U5     T              customer-wide, T+3h (after the success)      T+2h      no
# in_U6     T              customer-wide, T+1h                          never     no
CARD_UPDATE_CASES = {
    "in_U1": (card_update("k1", "cus_U1", T + H), True),
    "in_U2": (card_update("k2", "cus_U2", T - H), True),
    "in_U3": (card_update("k3", "cus_U3", T + H, invoice="in_other"), True),
    "in_U4": (card_update("k4", "cus_U4", T + H, invoice="in_U4"), True),
    "in_U5": (card_update("k5", "cus_U5", T + 3 * H), True),
    "in_U6": (card_update("k6", "cus_U6", T + H), False),
}


@pytest.fixture
def updated(session: Session) -> Session:
    """The session, with the card-update cases above."""
    for invoice, (update, recovered) in CARD_UPDATE_CASES.items():
        customer = update.customer_id
        code = "expired_card" if invoice in ("in_U1", "in_U2") else "do_not_honor"
        record_outcome(session, replace(attempt(f"{invoice}_1", invoice, customer, T, False), decline_code=code))
        if recovered:
            record_outcome(session, attempt(f"{invoice}_2", invoice, customer, T + 2 * H, True))
        record_card_update(session, update)
    return session


def test_kpis_count_recoveries_after_a_card_update(updated: Session) -> None:
    result = compute_kpis(updated)
    assert (result["failed_invoices"], result["recovered_invoices"]) == (6, 5)
    assert result["recovered_after_card_update"] == 2
    assert result["recovered_after_card_update_rate"] == pytest.approx(2 / 6)


def test_kpis_after_a_card_update_per_group(updated: Session) -> None:
    groups = {g["group"]: g for g in compute_kpis(updated, group_by="decline_code")["groups"]}
    assert {code: g["recovered_after_card_update"] for code, g in groups.items()} == {
        "do_not_honor": 1,
        "expired_card": 1,
    }
    assert groups["expired_card"]["recovered_after_card_update_rate"] == pytest.approx(1 / 2)
    assert groups["do_not_honor"]["recovered_after_card_update_rate"] == pytest.approx(1 / 4)
    ranged = compute_kpis(updated, start=T + H)
    assert (ranged["failed_invoices"], ranged["recovered_after_card_update"]) == (0, 0)
    assert ranged["recovered_after_card_update_rate"] is None
