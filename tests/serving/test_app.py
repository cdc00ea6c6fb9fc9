"""The app around the policy: startup, health, readiness, metrics, OpenAPI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from features.bundle import MANIFEST, MODEL_FILE, BundleError
from serving.app import create_app
from serving.settings import DEFAULT_MODEL_DIR, Settings, get_settings


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_names_the_model(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "status": "ready",
        "model_version": "test-0",
        "model_source": body["model_source"],
        "source_version": None,
        "compiled_inference": "off",  # the suite runs with RETRYOPT_COMPILED_INFERENCE=false (tests/conftest.py)
    }


def test_without_a_model_readyz_and_decisions_are_503(settings: Settings, request_body: dict[str, Any]) -> None:
    client = TestClient(create_app(settings))  # no `with`: the lifespan (model load) never runs
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    decision = client.post("/v1/retry-decisions", json=request_body)
    assert decision.status_code == 503
    assert decision.json()["code"] == "unavailable"


def test_metrics_count_decisions_by_action(settings: Settings, request_body: dict[str, Any]) -> None:
    with TestClient(create_app(settings)) as client:
        client.post("/v1/retry-decisions", json=request_body)
        request_body["attempts"][0]["decline_code"] = "stolen_card"
        client.post("/v1/retry-decisions", json=request_body)
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'retryopt_decisions_total{action="retry"} 1.0' in text
    assert 'retryopt_decisions_total{action="stop"} 1.0' in text
    assert "retryopt_decision_seconds_count 2.0" in text


def test_each_app_has_its_own_registry(settings: Settings, request_body: dict[str, Any]) -> None:
    first, second = create_app(settings), create_app(settings)
    assert first.state.metrics.registry is not second.state.metrics.registry


def test_openapi_documents_the_decision_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/retry-decisions"]["post"]
    assert {"200", "400", "422"} <= set(operation["responses"])
    assert "DecisionRequest" in spec["components"]["schemas"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(spec["paths"])


def broken_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundle_dir, target)
    return target


def start(model_dir: Path) -> None:
    """Start with fallback mode off: a model that cannot be served stops the startup (see test_fallback.py)."""
    with TestClient(create_app(Settings(model_dir=model_dir, model_fallback=False))):
        pass


def test_missing_model_dir_fails_startup(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        start(tmp_path / "nowhere")


def test_corrupt_model_file_fails_startup(bundle_dir: Path, tmp_path: Path) -> None:
    broken = broken_copy(bundle_dir, tmp_path)
    (broken / MODEL_FILE).write_text("this is not a LightGBM model")
    with pytest.raises(BundleError, match="not a readable LightGBM model"):
        start(broken)


def test_corrupt_manifest_fails_startup(bundle_dir: Path, tmp_path: Path) -> None:
    broken = broken_copy(bundle_dir, tmp_path)
    (broken / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        start(broken)


def test_stale_feature_spec_fails_startup(bundle_dir: Path, tmp_path: Path) -> None:
    broken = broken_copy(bundle_dir, tmp_path)
    manifest = json.loads((broken / MANIFEST).read_text())
    manifest["feature_spec"] = "000000000000"
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="retrain"):
        start(broken)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RETRYOPT_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("RETRYOPT_MIN_RETRY_SPACING_HOURS", "12")
    settings = Settings()
    assert settings.model_dir == tmp_path
    assert settings.min_retry_spacing_hours == 12
    assert Settings.model_fields["model_dir"].default == DEFAULT_MODEL_DIR
    assert DEFAULT_MODEL_DIR.parts[-2:] == ("models", "default")
    get_settings.cache_clear()
    assert get_settings().min_retry_spacing_hours == 12
    get_settings.cache_clear()


def test_create_app_does_no_work_before_startup(tmp_path: Path) -> None:
    app = create_app(Settings(model_dir=tmp_path / "nowhere"))  # no error until the lifespan runs
    assert app.state.models is None
