"""The store goes away after start-up: decisions keep working, outcomes get 503 + Retry-After."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings
from serving.store import make_engine, session_factory

UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"


@pytest.fixture
def broken(bundle_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    """An app that started on a good store whose store then became unreachable."""
    settings = Settings(model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 'store.db'}")
    app = create_app(settings)
    with TestClient(app) as client:
        app.state.sessions = session_factory(make_engine(UNREACHABLE))
        app.state.engine = make_engine(UNREACHABLE)
        yield client


def test_decisions_keep_working(broken: TestClient, request_body: dict[str, Any]) -> None:
    response = broken.post("/v1/retry-decisions", json=request_body)
    assert response.status_code == 200
    assert response.json()["action"] == "retry"


def test_outcomes_answer_503_with_retry_after(broken: TestClient) -> None:
    body = {
        "attempt_id": "a1",
        "invoice_id": "in_1",
        "customer_id": "cus_1",
        "attempted_at": "2026-11-01T10:00:00Z",
        "succeeded": True,
        "amount": 100,
        "currency": "usd",
    }
    response = broken.post("/v1/outcomes", json=body)
    assert response.status_code == 503
    assert response.json()["code"] == "store_unavailable"
    assert int(response.headers["Retry-After"]) > 0


def test_readiness_reports_the_store(broken: TestClient) -> None:
    response = broken.get("/readyz")
    assert response.status_code == 503
    assert "store" in response.json()["message"]
