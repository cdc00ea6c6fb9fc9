"""End to end through the installed command: simulate → train → serve → a contract-valid decision."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from features.contract import REQUIRED_COLUMNS
from tests.processes import retryopt_executable, running_server

pytestmark = pytest.mark.slow


def retryopt(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed `retryopt` command (the one a user runs), with MLflow logging into `cwd`."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    command = [retryopt_executable(), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle trained by the real commands on a small simulated dataset."""
    work = tmp_path_factory.mktemp("e2e")
    sim = retryopt("simulate", "--invoices", "4000", "--seed", "11", "--out", "attempts.csv", cwd=work)
    assert sim.returncode == 0, sim.stderr
    train = retryopt("train", "--data", "attempts.csv", "--out", "model", cwd=work)
    assert train.returncode == 0, train.stderr
    assert (work / "mlflow.db").exists(), "the run should be logged to the local MLflow store"
    return work


@pytest.fixture(scope="module")
def server(trained: Path) -> Iterator[str]:
    """`retryopt serve` on a free loopback port, with the freshly trained model."""
    env = {"RETRYOPT_DATABASE_URL": f"sqlite:///{trained / 'store.db'}"}
    with running_server(["--model", "model"], cwd=trained, env=env) as base:
        yield base


def test_simulated_file_follows_the_contract(trained: Path) -> None:
    frame = pd.read_csv(trained / "attempts.csv")
    required = set(REQUIRED_COLUMNS)
    assert required <= set(frame.columns)
    assert frame["attempt_id"].is_unique


def test_bundle_is_self_describing(trained: Path) -> None:
    manifest = json.loads((trained / "model" / "manifest.json").read_text())
    assert manifest["format"] == "retryopt-bundle/1"
    assert {"auc", "log_loss", "brier", "ece"} <= set(manifest["metrics"]["test"])
    card = (trained / "model" / "MODEL_CARD.md").read_text()
    # Holdout calibration per customer-history group, where over-trust of one customer's pay cycle would show.
    groups = manifest["metrics"]["test_by_customer_history"]
    assert set(groups) <= {"funds_bracket", "earlier_failures_only", "no_earlier_failure"}
    assert groups and all({"positive_rate", "mean_prediction", "ece"} <= set(m) for m in groups.values())
    assert "| customer history | retries | success rate | mean prediction | AUC | ECE |" in card


def test_decision_from_served_model(trained: Path, server: str) -> None:
    request = {
        "invoice_id": "in_e2e",
        "customer_id": "cus_e2e",
        "amount": 4900,
        "currency": "usd",
        "card": {"brand": "visa", "funding": "debit", "country": "US", "exp_month": 4, "exp_year": 2030},
        "customer_timezone": "America/Chicago",
        "attempts": [
            {
                "attempt_id": "in_e2e_a1",
                "attempted_at": "2026-11-01T14:00:00Z",
                "decline_code": "insufficient_funds",
                "network_decline_code": "51",
                "merchant_advice_code": None,
            }
        ],
        "now": "2026-11-01T14:05:00Z",
        "window_end": "2026-11-15T14:00:00Z",
        "max_retries": 4,
    }
    response = httpx.post(f"{server}/v1/retry-decisions", json=request, timeout=10)
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["action"] == "retry"
    retry_at = pd.Timestamp(decision["retry_at"])
    assert pd.Timestamp("2026-11-01T14:05:00Z") < retry_at <= pd.Timestamp("2026-11-15T14:00:00Z")
    assert decision["schedule"][0]["retry_at"] == decision["retry_at"]
    assert 0 <= decision["success_probability"] <= 1
    assert decision["model_version"] == json.loads((trained / "model" / "manifest.json").read_text())["model_version"]

    hard = {
        **request,
        "attempts": [{**request["attempts"][0], "decline_code": "stolen_card", "network_decline_code": "43"}],
    }
    stop = httpx.post(f"{server}/v1/retry-decisions", json=hard, timeout=10).json()
    assert stop["action"] == "stop"
    assert stop["retry_at"] is None
    assert stop["reasons"]


def test_bad_input_file_exits_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("invoice_id,amount\nx,1\n")
    result = retryopt("train", "--data", "bad.csv", "--out", "m", cwd=tmp_path)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "missing required column" in result.stderr
