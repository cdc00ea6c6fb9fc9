"""Fallback mode: with no servable model the service still decides, by the rules and the fixed schedule."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from features.bundle import MODEL_FILE
from features.candidates import FEATURE_COLUMNS
from serving.app import create_app
from serving.policy.fallback import FALLBACK_VERSION, FallbackScorer
from serving.settings import Settings

ADMIN_KEY = "admin-secret"


@pytest.fixture
def model_dir(bundle_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny bundle whose LightGBM file is garbage."""
    target = tmp_path / "model"
    shutil.copytree(bundle_dir, target)
    (target / MODEL_FILE).write_text("this is not a LightGBM model")
    return target


@pytest.fixture
def degraded(model_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    """The app started on the corrupt model, with an admin key."""
    settings = Settings(
        model_dir=model_dir, database_url=f"sqlite:///{tmp_path / 's.db'}", admin_api_key=SecretStr(ADMIN_KEY)
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_corrupt_model_starts_in_fallback_and_readyz_says_degraded(degraded: TestClient) -> None:
    ready = degraded.get("/readyz")
    assert ready.status_code == 200  # still able to decide: stays in the load balancer
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["model_version"] == FALLBACK_VERSION
    assert "not a readable LightGBM model" in body["reason"]


def test_fallback_decisions_follow_the_fixed_schedule(degraded: TestClient, request_body: dict[str, Any]) -> None:
    response = degraded.post("/v1/retry-decisions", json=request_body)
    assert response.status_code == 200
    decision = response.json()
    assert decision["action"] == "retry"
    assert decision["model_version"] == FALLBACK_VERSION
    first_failure = pd.Timestamp(request_body["attempts"][0]["attempted_at"])
    expected = [first_failure + pd.Timedelta(days=d) for d in Settings().control_schedule_days]
    assert [pd.Timestamp(s["retry_at"]) for s in decision["schedule"]] == expected
    assert {s["success_probability"] for s in decision["schedule"]} == {0.2}  # the prior, not a prediction
    assert decision["expected_recovered_amount"] == round(request_body["amount"] * (1 - 0.8**4))


def test_fallback_still_applies_the_rules(degraded: TestClient, request_body: dict[str, Any]) -> None:
    request_body["attempts"][0]["decline_code"] = "stolen_card"
    hard = degraded.post("/v1/retry-decisions", json=request_body).json()
    assert hard["action"] == "stop" and hard["model_version"] == FALLBACK_VERSION
    request_body["attempts"][0]["decline_code"] = "insufficient_funds"
    request_body["max_retries"] = 2
    budget = degraded.post("/v1/retry-decisions", json=request_body).json()
    assert len(budget["schedule"]) == 2  # the retry budget still caps the schedule


def test_fallback_batches_decide_every_request(degraded: TestClient, request_body: dict[str, Any]) -> None:
    hard = {**request_body, "attempts": [{**request_body["attempts"][0], "decline_code": "lost_card"}]}
    response = degraded.post("/v1/retry-decisions/batch", json={"requests": [request_body, hard]})
    assert response.status_code == 200
    actions = [(d["action"], d["model_version"]) for d in response.json()["decisions"]]
    assert actions == [("retry", FALLBACK_VERSION), ("stop", FALLBACK_VERSION)]


def test_a_successful_reload_leaves_fallback(
    degraded: TestClient, model_dir: Path, bundle_dir: Path, request_body: dict[str, Any]
) -> None:
    assert degraded.post("/admin/reload").status_code == 401  # the admin key is required
    still_broken = degraded.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY})
    assert still_broken.status_code == 409
    assert still_broken.json()["code"] == "model_rejected"
    assert still_broken.json()["model_version"] == FALLBACK_VERSION

    shutil.copy(bundle_dir / MODEL_FILE, model_dir / MODEL_FILE)  # the operator repairs the model
    fixed = degraded.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY})
    assert fixed.status_code == 200
    assert fixed.json() == {
        "model_version": "test-0",
        "source": str(model_dir),
        "source_version": None,
        "changed": True,
    }
    assert degraded.get("/readyz").json()["status"] == "ready"
    assert degraded.post("/v1/retry-decisions", json=request_body).json()["model_version"] == "test-0"
    metrics = degraded.get("/metrics").text
    assert 'retryopt_model_reloads_total{result="failure"} 1.0' in metrics
    assert 'retryopt_model_reloads_total{result="success"} 1.0' in metrics


def test_without_any_key_only_loopback_clients_may_reload(bundle_dir: Path, tmp_path: Path) -> None:
    settings = Settings(model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 's.db'}")
    app = create_app(settings)
    with TestClient(app) as remote, TestClient(app, client=("127.0.0.1", 50000)) as local:
        assert remote.post("/admin/reload").status_code == 403
        answer = local.post("/admin/reload")
        assert answer.status_code == 200 and answer.json()["changed"] is False


def test_the_api_key_guards_admin_when_no_admin_key_is_set(bundle_dir: Path, tmp_path: Path) -> None:
    settings = Settings(
        model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 's.db'}", api_key=SecretStr("api-secret")
    )
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:
        assert client.post("/admin/reload").status_code == 401  # loopback is not enough once a key exists
        assert client.post("/admin/reload", headers={"X-API-Key": "api-secret"}).status_code == 200


def test_fallback_scorer_is_a_constant_prior() -> None:
    scorer = FallbackScorer(0.3)
    slots, features = pd.DataFrame({"request": [0, 0, 1]}), pd.DataFrame(index=range(3))
    np.testing.assert_array_equal(scorer.score(slots, features), [0.3, 0.3, 0.3])
    assert scorer.contributions(features).shape == (3, len(FEATURE_COLUMNS) + 1)
    assert scorer.model_version == FALLBACK_VERSION


def test_the_prior_is_a_setting(model_dir: Path, tmp_path: Path, request_body: dict[str, Any]) -> None:
    settings = Settings(
        model_dir=model_dir, database_url=f"sqlite:///{tmp_path / 's.db'}", fallback_success_probability=0.05
    )
    with TestClient(create_app(settings)) as client:
        decision = client.post("/v1/retry-decisions", json=request_body).json()
    assert decision["success_probability"] == 0.05
