"""The store through HTTP: outcomes (idempotent), card updates, KPIs, the control arm, and the API key."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from serving.app import create_app
from serving.settings import Settings


@pytest.fixture
def fresh(bundle_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    """A client on an empty store of its own."""
    settings = Settings(model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 'store.db'}")
    with TestClient(create_app(settings)) as client:
        yield client


def outcome(attempt_id: str, invoice: str, at: str, ok: bool, **extra: Any) -> dict[str, Any]:
    body = {
        "attempt_id": attempt_id,
        "invoice_id": invoice,
        "customer_id": f"cus_{invoice}",
        "attempted_at": at,
        "succeeded": ok,
        "amount": 1000,
        "currency": "usd",
        "decline_code": None if ok else "insufficient_funds",
    }
    return {**body, **extra}


class TestOutcomes:
    def test_created_then_duplicate_then_conflict(self, fresh: TestClient) -> None:
        body = outcome("a1", "in_1", "2026-11-01T10:00:00Z", False)
        assert fresh.post("/v1/outcomes", json=body).status_code == 201
        repeat = fresh.post("/v1/outcomes", json=body)
        assert repeat.status_code == 200
        assert repeat.json()["status"] == "duplicate"
        changed = fresh.post("/v1/outcomes", json={**body, "amount": 999})
        assert changed.status_code == 409
        assert changed.json()["code"] == "conflict"
        assert changed.json()["field"] == "amount"

    def test_failed_outcome_needs_a_decline_code(self, fresh: TestClient) -> None:
        response = fresh.post(
            "/v1/outcomes", json=outcome("a1", "in_1", "2026-11-01T10:00:00Z", False, decline_code=None)
        )
        assert response.status_code == 422
        assert "decline_code" in response.json()["message"]

    def test_wrong_types_name_the_field(self, fresh: TestClient) -> None:
        response = fresh.post("/v1/outcomes", json=outcome("a1", "in_1", "2026-11-01T10:00:00", True))
        assert response.status_code == 422
        assert response.json()["field"] == "attempted_at"
        response = fresh.post(
            "/v1/outcomes", json={**outcome("a1", "in_1", "2026-11-01T10:00:00Z", True), "succeeded": "yes"}
        )
        assert response.json()["field"] == "succeeded"


class TestKpis:
    def test_recovery_figures_from_reported_outcomes(self, fresh: TestClient) -> None:
        for body in (
            outcome("a1", "in_1", "2026-11-01T10:00:00Z", False),
            outcome("a2", "in_1", "2026-11-02T10:00:00Z", False),
            outcome("a3", "in_1", "2026-11-03T22:00:00Z", True),
            outcome("b1", "in_2", "2026-11-01T12:00:00Z", False),
            outcome("b2", "in_2", "2026-11-05T12:00:00Z", False),
            outcome("c1", "in_3", "2026-11-01T12:00:00Z", True),  # never failed: not counted
        ):
            assert fresh.post("/v1/outcomes", json=body).status_code == 201
        kpis = fresh.get("/v1/kpis").json()
        assert kpis["failed_invoices"] == 2
        assert kpis["recovered_invoices"] == 1
        assert kpis["recovery_rate"] == 0.5
        assert kpis["involuntary_churn_rate"] == 0.5
        assert kpis["recovered_amount"] == {"usd": 1000}
        assert kpis["median_hours_to_recovery"] == 60.0
        assert kpis["attempts_per_recovery"] == 2.0
        grouped = fresh.get("/v1/kpis", params={"group_by": "attempt_number"}).json()
        assert {g["group"]: g["failed_invoices"] for g in grouped["groups"]} == {"3": 1, "not_recovered": 1}
        later = fresh.get("/v1/kpis", params={"from": "2026-11-02T00:00:00Z"}).json()
        assert later["failed_invoices"] == 0

    def test_bad_query_names_the_parameter(self, fresh: TestClient) -> None:
        assert fresh.get("/v1/kpis", params={"group_by": "planet"}).json()["field"] == "group_by"
        response = fresh.get("/v1/kpis", params={"from": "2026-11-02"})
        assert response.status_code == 422
        assert response.json()["field"] == "from"


class TestDecisionsAreStored:
    def test_decision_lands_in_kpis_by_policy(self, fresh: TestClient, request_body: dict[str, Any]) -> None:
        decision = fresh.post("/v1/retry-decisions", json=request_body).json()
        first = request_body["attempts"][0]
        fresh.post(
            "/v1/outcomes",
            json={
                **outcome(first["attempt_id"], request_body["invoice_id"], first["attempted_at"], False),
                "customer_id": request_body["customer_id"],
                "amount": request_body["amount"],
            },
        )
        fresh.post(
            "/v1/outcomes",
            json={
                **outcome("retry_1", request_body["invoice_id"], decision["retry_at"], True),
                "customer_id": request_body["customer_id"],
                "amount": request_body["amount"],
                "decision_id": decision["decision_id"],
            },
        )
        by_policy = fresh.get("/v1/kpis", params={"group_by": "policy"}).json()["groups"]
        assert [(g["group"], g["recovered_invoices"]) for g in by_policy] == [("learned", 1)]
        by_brand = fresh.get("/v1/kpis", params={"group_by": "card_brand"}).json()["groups"]
        assert by_brand[0]["group"] == "visa"


class TestCardUpdates:
    def test_update_after_expired_card_turns_stop_into_prompt_retry(
        self, fresh: TestClient, request_body: dict[str, Any]
    ) -> None:
        request_body["attempts"][0].update(decline_code="expired_card", network_decline_code="54")
        stop = fresh.post("/v1/retry-decisions", json=request_body).json()
        assert stop["action"] == "stop"
        assert stop["next_step"] == "request_new_payment_method"
        update = {
            "update_id": "up_1",
            "customer_id": request_body["customer_id"],
            "card": {"brand": "visa", "exp_month": 4, "exp_year": 2031, "fingerprint": "fp_new"},
            "updated_at": "2026-11-01T14:02:00Z",
            "source": "account_updater",
        }
        assert fresh.post("/v1/card-updates", json=update).status_code == 201
        assert fresh.post("/v1/card-updates", json=update).status_code == 200
        assert fresh.post("/v1/card-updates", json={**update, "source": "customer"}).status_code == 409
        retry = fresh.post("/v1/retry-decisions", json=request_body).json()
        assert retry["action"] == "retry"
        assert retry["retry_at"] <= "2026-11-01T15:05:00Z"  # within the hour after now
        assert any("card was updated" in r for r in retry["reasons"])

    def test_update_before_the_last_failure_changes_nothing(
        self, fresh: TestClient, request_body: dict[str, Any]
    ) -> None:
        request_body["attempts"][0].update(decline_code="expired_card", network_decline_code="54")
        update = {
            "update_id": "up_old",
            "customer_id": request_body["customer_id"],
            "card": {"brand": "visa"},
            "updated_at": "2026-10-01T00:00:00Z",
            "source": "customer",
        }
        fresh.post("/v1/card-updates", json=update)
        assert fresh.post("/v1/retry-decisions", json=request_body).json()["action"] == "stop"


def test_control_arm_follows_the_fixed_schedule(bundle_dir: Path, tmp_path: Path, request_body: dict[str, Any]) -> None:
    settings = Settings(model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 's.db'}", control_share=1.0)
    with TestClient(create_app(settings)) as client:
        decision = client.post("/v1/retry-decisions", json=request_body).json()
        assert decision["retry_at"] == "2026-11-02T14:00:00Z"  # first failure + 1 day, same time of day
        assert [s["retry_at"][:10] for s in decision["schedule"]] == [
            "2026-11-02",
            "2026-11-04",
            "2026-11-06",
            "2026-11-08",
        ]
        assert any("control group" in r for r in decision["reasons"])
        body = copy.deepcopy(request_body)
        body["attempts"][0].update(decline_code="stolen_card")
        assert client.post("/v1/retry-decisions", json=body).json()["action"] == "stop"  # rules still apply


def test_api_key_guards_v1_but_not_health(bundle_dir: Path, tmp_path: Path, request_body: dict[str, Any]) -> None:
    settings = Settings(
        model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 's.db'}", api_key=SecretStr("s3cret")
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/retry-decisions", json=request_body).status_code == 401
        assert client.post("/v1/retry-decisions", json=request_body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/v1/kpis", headers={"X-API-Key": "s3cret"}).status_code == 200
        ok = client.post("/v1/retry-decisions", json=request_body, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
