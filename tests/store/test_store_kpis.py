"""KPIs of the hand-made history (conftest.py) equal the values worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from serving.store import GROUP_BY_CHOICES, OutcomeRecord, compute_kpis, record_outcome
from serving.store.kpis import _failed_invoices, _kpi_query

USD_EUR = ("usd", "eur")


def kpi(
    failed: int,
    recovered: int,
    failed_amount: dict[str, int],
    recovered_amount: dict[str, int],
    median: float | None,
    mean: float | None,
    attempts: float | None,
    blocked: int = 0,
    after_update: int = 0,
) -> dict[str, Any]:
    """Expected fields from hand-counted totals; only the plain ratios are derived here."""
    by_currency = {c: recovered_amount[c] / failed_amount[c] for c in sorted(failed_amount)}
    return {
        "failed_invoices": failed,
        "recovered_invoices": recovered,
        "recovery_rate": recovered / failed if failed else None,
        "amount_recovery_rate": next(iter(by_currency.values())) if len(by_currency) == 1 else None,
        "amount_recovery_rate_by_currency": by_currency,
        "failed_amount": failed_amount,
        "recovered_amount": recovered_amount,
        "median_hours_to_recovery": median,
        "mean_hours_to_recovery": mean,
        "attempts_per_recovery": attempts,
        "involuntary_churn_rate": (failed - recovered) / failed if failed else None,
        "recovered_ltv": {c: amount * 12 for c, amount in recovered_amount.items()},
        "retries_blocked_by_rules": blocked,
        "recovered_after_card_update": after_update,
        "recovered_after_card_update_rate": after_update / failed if failed else None,
    }


def check(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every expected field, floats to 1e-6 (SQLite's julianday is millisecond-exact)."""
    for name, value in expected.items():
        if value is None:
            assert actual[name] is None, name
        else:
            assert actual[name] == pytest.approx(value, rel=1e-9, abs=1e-6), name


# Recovered: A (48 h, retries 2), B (12.5 h, retries 1), C (78 h, retries 3).
ALL = kpi(5, 3, {"eur": 3500, "usd": 4500}, {"eur": 3000, "usd": 3000}, 48.0, 138.5 / 3, 2.0, blocked=2)


def test_totals_every_field_by_hand(history: Session) -> None:
    result = compute_kpis(history)
    assert result == {
        "failed_invoices": 5,
        "recovered_invoices": 3,
        "recovery_rate": pytest.approx(0.6),
        "amount_recovery_rate": None,  # two currencies
        "amount_recovery_rate_by_currency": {"eur": pytest.approx(3000 / 3500), "usd": pytest.approx(3000 / 4500)},
        "failed_amount": {"eur": 3500, "usd": 4500},
        "recovered_amount": {"eur": 3000, "usd": 3000},
        "median_hours_to_recovery": pytest.approx(48.0, abs=1e-6),
        "mean_hours_to_recovery": pytest.approx((48 + 12.5 + 78) / 3, abs=1e-6),
        "attempts_per_recovery": pytest.approx(2.0),
        "involuntary_churn_rate": pytest.approx(0.4),
        "recovered_ltv": {"eur": 36000, "usd": 36000},
        "retries_blocked_by_rules": 2,
        "recovered_after_card_update": 0,  # no card updates in this history (tests/store/test_worklist.py has some)
        "recovered_after_card_update_rate": 0.0,
        "ltv_periods": 12.0,
    }
    assert "groups" not in result


def test_ltv_periods_is_a_parameter(history: Session) -> None:
    result = compute_kpis(history, ltv_periods=6.5)
    assert result["recovered_ltv"] == {"eur": 19500, "usd": 19500}
    assert result["ltv_periods"] == 6.5


EXPECTED_GROUPS: dict[str, dict[str, dict[str, Any]]] = {
    "decline_code": {
        "do_not_honor": kpi(1, 1, {"usd": 2000}, {"usd": 2000}, 12.5, 12.5, 1.0),
        "expired_card": kpi(1, 0, {"usd": 1500}, {"usd": 0}, None, None, None),
        "insufficient_funds": kpi(2, 2, {"eur": 3000, "usd": 1000}, {"eur": 3000, "usd": 1000}, 63.0, 63.0, 2.5),
        "stolen_card": kpi(1, 0, {"eur": 500}, {"eur": 0}, None, None, None, blocked=2),
    },
    # The latest decision's card (A's first decision said mastercard/CA, its latest visa/US).
    "card_brand": {
        "amex": kpi(1, 0, {"eur": 500}, {"eur": 0}, None, None, None, blocked=2),
        "mastercard": kpi(1, 1, {"usd": 2000}, {"usd": 2000}, 12.5, 12.5, 1.0),
        "unknown": kpi(1, 0, {"usd": 1500}, {"usd": 0}, None, None, None),
        "visa": kpi(2, 2, {"eur": 3000, "usd": 1000}, {"eur": 3000, "usd": 1000}, 63.0, 63.0, 2.5),
    },
    "card_country": {
        "FR": kpi(2, 1, {"eur": 3500}, {"eur": 3000}, 78.0, 78.0, 3.0, blocked=2),
        "GB": kpi(1, 1, {"usd": 2000}, {"usd": 2000}, 12.5, 12.5, 1.0),
        "US": kpi(1, 1, {"usd": 1000}, {"usd": 1000}, 48.0, 48.0, 2.0),
        "unknown": kpi(1, 0, {"usd": 1500}, {"usd": 0}, None, None, None),
    },
    "attempt_number": {
        "2": kpi(1, 1, {"usd": 2000}, {"usd": 2000}, 12.5, 12.5, 1.0),
        "3": kpi(1, 1, {"usd": 1000}, {"usd": 1000}, 48.0, 48.0, 2.0),
        "4": kpi(1, 1, {"eur": 3000}, {"eur": 3000}, 78.0, 78.0, 3.0),
        "not_recovered": kpi(2, 0, {"eur": 500, "usd": 1500}, {"eur": 0, "usd": 0}, None, None, None, blocked=2),
    },
    # The first decision's model and policy (A's latest decision said m2/control).
    "model_version": {
        "m1": kpi(3, 2, {"eur": 500, "usd": 3000}, {"eur": 0, "usd": 3000}, 30.25, 30.25, 1.5, blocked=2),
        "m2": kpi(1, 1, {"eur": 3000}, {"eur": 3000}, 78.0, 78.0, 3.0),
        "none": kpi(1, 0, {"usd": 1500}, {"usd": 0}, None, None, None),
    },
    "policy": {
        "control": kpi(1, 1, {"usd": 2000}, {"usd": 2000}, 12.5, 12.5, 1.0),
        "fallback": kpi(1, 0, {"eur": 500}, {"eur": 0}, None, None, None, blocked=2),
        "learned": kpi(2, 2, {"eur": 3000, "usd": 1000}, {"eur": 3000, "usd": 1000}, 63.0, 63.0, 2.5),
        "none": kpi(1, 0, {"usd": 1500}, {"usd": 0}, None, None, None),
    },
    # ISO weeks start on Monday; E failed on Sunday 2026-03-15, in the week of the 9th.
    "week": {
        "2026-03-02": kpi(3, 2, {"usd": 4500}, {"usd": 3000}, 30.25, 30.25, 1.5),
        "2026-03-09": kpi(2, 1, {"eur": 3500}, {"eur": 3000}, 78.0, 78.0, 3.0, blocked=2),
    },
}


def test_every_group_by_is_tested() -> None:
    assert set(EXPECTED_GROUPS) == set(GROUP_BY_CHOICES)


@pytest.mark.parametrize("group_by", sorted(EXPECTED_GROUPS))
def test_groups_by_hand(history: Session, group_by: str) -> None:
    result = compute_kpis(history, group_by=group_by)
    check(result, ALL)  # the totals don't depend on the grouping
    expected = EXPECTED_GROUPS[group_by]
    assert [group["group"] for group in result["groups"]] == list(expected)  # ordered by value
    for group in result["groups"]:
        check(group, expected[group["group"]])
        assert set(group) == {"group", *ALL}


def test_unknown_group_by_names_the_allowed_values(history: Session) -> None:
    with pytest.raises(ValueError, match=r"unknown group_by 'currency'.*decline_code, card_brand"):
        compute_kpis(history, group_by="currency")


def at(text_: str) -> datetime:
    return datetime.fromisoformat(text_)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # C and E: one currency, so a top-level amount_recovery_rate.
        ("2026-03-09T00:00:00Z", None, kpi(2, 1, {"eur": 3500}, {"eur": 3000}, 78.0, 78.0, 3.0, blocked=2)),
        # A, B, D: an even number of recoveries, the median is the mean of the middle two.
        (None, "2026-03-09T00:00:00Z", kpi(3, 2, {"usd": 4500}, {"usd": 3000}, 30.25, 30.25, 1.5)),
        # from is inclusive (B at 10:00 is in), to exclusive (C at 08:00 is out).
        ("2026-03-03T10:00:00Z", "2026-03-09T08:00:00Z", kpi(2, 1, {"usd": 3500}, {"usd": 2000}, 12.5, 12.5, 1.0)),
        # A has attempts after `from` but its first failure is before it: out.
        ("2026-03-03T00:00:00+00:00", None, kpi(4, 2, {"eur": 3500, "usd": 3500}, {"eur": 3000, "usd": 2000}, 45.25, 45.25, 2.0, blocked=2)),
        # The same instant written with another offset.
        ("2026-03-09T01:00:00+01:00", "2026-03-16T00:00:00Z", kpi(2, 1, {"eur": 3500}, {"eur": 3000}, 78.0, 78.0, 3.0, blocked=2)),
    ],
)  # fmt: skip
def test_from_and_to_select_by_first_failure(
    history: Session, start: str | None, end: str | None, expected: dict[str, Any]
) -> None:
    result = compute_kpis(history, start=at(start) if start else None, end=at(end) if end else None)
    check(result, expected)


def test_range_with_groups(history: Session) -> None:
    result = compute_kpis(history, start=at("2026-03-03T00:00:00Z"), group_by="attempt_number")
    groups = {group["group"]: group for group in result["groups"]}
    assert list(groups) == ["2", "4", "not_recovered"]
    check(
        groups["not_recovered"], kpi(2, 0, {"eur": 500, "usd": 1500}, {"eur": 0, "usd": 0}, None, None, None, blocked=2)
    )


def test_an_empty_period(history: Session) -> None:
    result = compute_kpis(history, start=at("2030-01-01T00:00:00Z"), group_by="card_brand")
    assert result["failed_invoices"] == 0 and result["recovered_invoices"] == 0
    assert result["recovery_rate"] is None and result["involuntary_churn_rate"] is None
    assert result["median_hours_to_recovery"] is None and result["mean_hours_to_recovery"] is None
    assert result["failed_amount"] == {} and result["recovered_ltv"] == {} and result["groups"] == []


def test_only_the_first_success_counts(session: Session) -> None:
    """fail, success (+30 min), success again, fail: recovered once, at attempt 2, in 0.5 h."""
    t = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    steps = [(False, 0), (True, 30), (True, 90), (False, 200)]
    for number, (ok, minutes) in enumerate(steps, start=1):
        record_outcome(
            session,
            OutcomeRecord(
                attempt_id=f"g{number}",
                invoice_id="in_G",
                customer_id="cus_G",
                attempted_at=t + timedelta(minutes=minutes),
                succeeded=ok,
                amount=900 + number,  # tells which attempt's amount was counted
                currency="gbp",
                decline_code=None if ok else "do_not_honor",
            ),
        )
    result = compute_kpis(session, group_by="attempt_number")
    check(result, kpi(1, 1, {"gbp": 901}, {"gbp": 902}, 0.5, 0.5, 1.0))
    assert [group["group"] for group in result["groups"]] == ["2"]


def test_an_empty_store(session: Session) -> None:
    assert compute_kpis(session)["failed_invoices"] == 0


def test_naive_bounds_are_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_kpis(session, start=datetime(2026, 3, 1))


def test_bounds_at_microsecond_precision(history: Session) -> None:
    b1 = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
    tick = timedelta(microseconds=1)
    assert compute_kpis(history, start=b1, end=b1 + tick)["failed_invoices"] == 1
    assert compute_kpis(history, start=b1 + tick, end=b1 + 2 * tick)["failed_invoices"] == 0
    assert compute_kpis(history, start=b1 - tick, end=b1)["failed_invoices"] == 0


def test_the_ranged_query_uses_the_indexes(history: Session) -> None:
    """With a period, invoices are found by the attempted_at index, attempts by (invoice_id, attempted_at)."""
    invoices = _failed_invoices(
        history.get_bind().dialect.name, at("2026-03-09T00:00:00Z"), at("2026-03-16T00:00:00Z"), "card_brand"
    )
    sql = str(
        _kpi_query(history.get_bind().dialect.name, invoices, grouped=True).compile(
            history.get_bind(), compile_kwargs={"literal_binds": True}
        )
    )
    if history.get_bind().dialect.name == "sqlite":
        plan = " ".join(str(row[-1]) for row in history.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    else:
        # Tiny tables would be scanned anyway; forbid that to see that the indexes are usable.
        history.execute(text("SET LOCAL enable_seqscan = off"))
        plan = " ".join(row[0] for row in history.connection().exec_driver_sql(f"EXPLAIN {sql}"))
        history.rollback()
    assert "ix_outcomes_attempted_at" in plan
    assert "ix_outcomes_invoice_id_attempted_at" in plan
    assert "ix_decisions_invoice_id_decided_at" in plan
    assert history.execute(select(1)).scalar_one() == 1
