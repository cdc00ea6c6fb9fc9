"""`GET /v1/recoverable` and `GET /v1/expiring-cards` over HTTP: shapes, paging, `now`, validation and the API key.

The store is filled through the repository (decisions carry their recovery_probability); the
ranking rules themselves are tested on both databases in tests/store/test_worklist.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from serving.app import create_app
from serving.deps import get_clock
from serving.settings import Settings
from serving.store import (
    CardUpdateRecord,
    DecisionRecord,
    OutcomeRecord,
    record_card_update,
    record_decisions,
    record_outcome,
)

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def decision(
    decision_id: str,
    invoice: str,
    *,
    amount: int,
    probability: float,
    retry_in_hours: float | None,
    currency: str = "usd",
    fingerprint: str | None = None,
    exp: tuple[int, int] = (12, 2030),
    window_hours: float = 120,
) -> DecisionRecord:
    """A decision made a day before NOW; a stop (asking for a new card) when ``retry_in_hours`` is None."""
    retry_at = None if retry_in_hours is None else NOW + retry_in_hours * H
    return DecisionRecord(
        decision_id=decision_id,
        invoice_id=invoice,
        customer_id=f"cus_{invoice}",
        card_brand="visa",
        card_fingerprint=fingerprint,
        card_exp_month=exp[0],
        card_exp_year=exp[1],
        decline_code="insufficient_funds",
        attempt_count=1,
        amount=amount,
        currency=currency,
        decided_at=NOW - 24 * H,
        action="stop" if retry_at is None else "retry",
        retry_at=retry_at,
        success_probability=None if retry_at is None else 0.3,
        expected_recovered_amount=round(amount * probability),
        schedule=[] if retry_at is None else [{"retry_at": retry_at, "success_probability": 0.3}],
        reasons=["test"],
        model_version="m1",
        policy="learned",
        window_end=NOW + window_hours * H,
        max_retries=4,
        next_step="request_new_payment_method" if retry_at is None else None,
        recovery_probability=probability,
        expected_hours_to_recovery=None if retry_at is None else 40.0,
    )


def seed(sessions: sessionmaker[Session]) -> None:
    """Three open invoices (one paid since), two expiring cards (one replaced since)."""
    with sessions() as session:
        record_decisions(
            session,
            [
                decision("d1", "in_1", amount=10000, probability=0.5, retry_in_hours=24, fingerprint="fp_1"),
                decision("d2", "in_2", amount=4000, probability=0.0, retry_in_hours=None, exp=(6, 2026)),
                decision("d3", "in_3", amount=9000, probability=0.2, retry_in_hours=6, currency="eur"),
                decision("d4", "in_4", amount=99000, probability=0.9, retry_in_hours=1),
                decision("d5", "in_5", amount=5000, probability=0.9, retry_in_hours=1, fingerprint="fp_5", exp=(6, 2026),
                         window_hours=-1),
                decision("d6", "in_6", amount=7000, probability=0.9, retry_in_hours=1, fingerprint="fp_6", exp=(6, 2026),
                         window_hours=-1),
            ],
        )  # fmt: skip
        record_outcome(
            session,
            OutcomeRecord(
                attempt_id="a4",
                invoice_id="in_4",
                customer_id="cus_in_4",
                attempted_at=NOW - H,
                succeeded=True,
                amount=99000,
                currency="usd",
            ),
        )
        record_card_update(
            session,
            CardUpdateRecord(
                update_id="u6",
                customer_id="cus_in_6",
                card={"brand": "visa", "exp_month": 6, "exp_year": 2031},
                updated_at=NOW - H,
                source="account_updater",
            ),
        )


@pytest.fixture
def client(bundle_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    """A client on a seeded store of its own, whose server clock reads NOW."""
    app = create_app(Settings(model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 'store.db'}"))
    app.dependency_overrides[get_clock] = lambda: NOW
    with TestClient(app) as test_client:
        seed(app.state.sessions)
        yield test_client


class TestRecoverable:
    def test_shape_and_order(self, client: TestClient) -> None:
        response = client.get("/v1/recoverable")
        assert response.status_code == 200
        body = response.json()
        assert {key: body[key] for key in ("now", "currency", "total", "limit", "offset", "next_offset")} == {
            "now": "2026-06-10T12:00:00Z",
            "currency": None,
            "total": 3,
            "limit": 100,
            "offset": 0,
            "next_offset": None,
        }
        assert [row["invoice_id"] for row in body["invoices"]] == ["in_1", "in_3", "in_2"]  # in_4 is paid
        assert body["invoices"][0] == {
            "invoice_id": "in_1",
            "customer_id": "cus_in_1",
            "decision_id": "d1",
            "amount": 10000,
            "currency": "usd",
            "action": "retry",
            "recovery_probability": 0.5,
            "expected_recoverable_amount": 5000,
            "next_retry_at": "2026-06-11T12:00:00Z",
            "next_step": "none",  # stored as null: answered as the decisions route does
            "decided_at": "2026-06-09T12:00:00Z",
            "window_end": "2026-06-15T12:00:00Z",
            "expected_hours_to_recovery": 40.0,
            "attempts": 1,
        }
        stop = body["invoices"][2]
        assert (stop["action"], stop["next_retry_at"], stop["next_step"]) == (
            "stop",
            None,
            "request_new_payment_method",
        )

    def test_pages_currency_and_now(self, client: TestClient) -> None:
        first = client.get("/v1/recoverable", params={"limit": 2}).json()
        assert [row["invoice_id"] for row in first["invoices"]] == ["in_1", "in_3"]
        assert (first["total"], first["next_offset"]) == (3, 2)
        second = client.get("/v1/recoverable", params={"limit": 2, "offset": first["next_offset"]}).json()
        assert [row["invoice_id"] for row in second["invoices"]] == ["in_2"] and second["next_offset"] is None
        euros = client.get("/v1/recoverable", params={"currency": "EUR"}).json()
        assert [row["invoice_id"] for row in euros["invoices"]] == ["in_3"] and euros["currency"] == "eur"
        # Before the decisions were made, nothing was open; in_4 was not paid yet two hours earlier.
        assert client.get("/v1/recoverable", params={"now": "2026-06-01T00:00:00Z"}).json()["total"] == 0
        earlier = client.get("/v1/recoverable", params={"now": "2026-06-10T12:00:00+02:00"}).json()
        assert earlier["now"] == "2026-06-10T10:00:00Z"
        assert earlier["invoices"][0]["invoice_id"] == "in_4"

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": 1001}, "limit"),
            ({"limit": "ten"}, "limit"),
            ({"offset": -1}, "offset"),
            ({"currency": "xyz"}, "currency"),
            ({"now": "2026-06-10T12:00:00"}, "now"),  # no zone
            ({"now": "2200-01-01T00:00:00Z"}, "now"),
        ],
    )
    def test_bad_query_names_the_parameter(self, client: TestClient, params: dict[str, object], field: str) -> None:
        response = client.get("/v1/recoverable", params=params)
        assert response.status_code == 422
        assert response.json()["field"] == field


class TestExpiringCards:
    def test_shape_and_replaced_card(self, client: TestClient) -> None:
        body = client.get("/v1/expiring-cards").json()
        assert {key: body[key] for key in ("now", "within_days", "total", "limit", "offset", "next_offset")} == {
            "now": "2026-06-10T12:00:00Z",
            "within_days": 30,
            "total": 2,
            "limit": 100,
            "offset": 0,
            "next_offset": None,
        }
        # fp_6's customer has a new card; fp_5 has more at risk than the card without a fingerprint.
        assert body["cards"] == [
            {
                "card_fingerprint": "fp_5",
                "card_brand": "visa",
                "exp_month": 6,
                "exp_year": 2026,
                "expires_at": "2026-06-30T23:59:59Z",
                "last_seen_at": "2026-06-09T12:00:00Z",
                "customer_ids": ["cus_in_5"],
                "invoice_count": 1,
                "amount_at_risk": {"usd": 5000},
            },
            {
                "card_fingerprint": None,
                "card_brand": "visa",
                "exp_month": 6,
                "exp_year": 2026,
                "expires_at": "2026-06-30T23:59:59Z",
                "last_seen_at": "2026-06-09T12:00:00Z",
                "customer_ids": ["cus_in_2"],
                "invoice_count": 1,
                "amount_at_risk": {"usd": 4000},
            },
        ]

    def test_within_days_pages_and_now(self, client: TestClient) -> None:
        page = client.get("/v1/expiring-cards", params={"within_days": 365, "limit": 1, "offset": 1}).json()
        assert (page["total"], page["next_offset"], page["cards"][0]["card_fingerprint"]) == (2, None, None)
        # Before the card update, fp_6 was still at risk.
        earlier = client.get("/v1/expiring-cards", params={"now": "2026-06-10T10:00:00Z"}).json()
        assert [card["card_fingerprint"] for card in earlier["cards"]] == ["fp_6", "fp_5", None]
        # In July, the June cards have expired.
        assert client.get("/v1/expiring-cards", params={"now": "2026-07-01T00:00:00Z"}).json()["total"] == 0

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"within_days": 0}, "within_days"),
            ({"within_days": 366}, "within_days"),
            ({"within_days": "soon"}, "within_days"),
            ({"limit": 5000}, "limit"),
            ({"offset": -3}, "offset"),
            ({"now": "yesterday"}, "now"),
        ],
    )
    def test_bad_query_names_the_parameter(self, client: TestClient, params: dict[str, object], field: str) -> None:
        response = client.get("/v1/expiring-cards", params=params)
        assert response.status_code == 422
        body = response.json()
        assert (body["code"], body["field"]) == ("invalid_request", field)


def test_both_need_the_api_key_when_one_is_set(bundle_dir: Path, tmp_path: Path) -> None:
    settings = Settings(model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 's.db'}", api_key=SecretStr("k3y"))
    with TestClient(create_app(settings)) as client:
        for path in ("/v1/recoverable", "/v1/expiring-cards"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"X-API-Key": "nope"}).status_code == 401
            ok = client.get(path, headers={"X-API-Key": "k3y"})
            assert ok.status_code == 200 and ok.json()["total"] == 0
