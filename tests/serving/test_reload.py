"""Serving from the MLflow registry: hot reload under load, refused versions, admin reload, SIGTERM."""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from pydantic import SecretStr

from features.bundle import MANIFEST
from serving.app import create_app
from serving.settings import Settings
from tests.processes import free_port, retryopt_executable
from tests.serving.conftest import BASE_REQUEST
from training.registry import register_model

ADMIN_KEY = "admin-secret"
GOOD, BROKEN = "tiny-good", "tiny-broken"  # the two models of the registry fixture


def versioned_copy(bundle_dir: Path, target: Path, model_version: str) -> Path:
    """The tiny bundle under another model_version, so responses tell the versions apart."""
    shutil.copytree(bundle_dir, target)
    manifest = json.loads((target / MANIFEST).read_text())
    (target / MANIFEST).write_text(json.dumps({**manifest, "model_version": model_version}))
    return target


def register_unservable(name: str, bundle: Path) -> str:
    """A version `register_model` would refuse, created by hand: its artifacts are the raw directory."""
    with mlflow.start_run(run_name=f"broken-{name}") as run:
        mlflow.log_artifacts(str(bundle), artifact_path="bundle")
        source = mlflow.get_artifact_uri("bundle")
    return str(MlflowClient().create_model_version(name, source=source, run_id=run.info.run_id).version)


@pytest.fixture(scope="module")
def registry(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowClient]:
    """MLflow in a temporary directory with `tiny-good` v1 "tiny-v1", v2 "tiny-v2" and `tiny-broken`
    v1 "tiny-v1", v2 with a corrupt manifest."""
    work = tmp_path_factory.mktemp("reload-registry")
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
        experiment = mlflow.create_experiment("reload-tests", artifact_location=(work / "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=experiment)
        v1 = versioned_copy(bundle_dir, work / "v1", "tiny-v1")
        assert register_model(v1, GOOD) == 1
        assert register_model(versioned_copy(bundle_dir, work / "v2", "tiny-v2"), GOOD) == 2
        assert register_model(v1, BROKEN) == 1
        broken = versioned_copy(bundle_dir, work / "broken", "tiny-broken")
        (broken / MANIFEST).write_text("{not json")
        assert register_unservable(BROKEN, broken) == "2"
        yield MlflowClient()
    mlflow.set_tracking_uri(previous)


def champion(client: MlflowClient, name: str, version: str) -> None:
    """Point the model's `champion` alias at a version."""
    client.set_registered_model_alias(name, "champion", version)


def registry_settings(name: str, tmp_path: Path, poll: float) -> Settings:
    """Serve `models:/NAME@champion`, polling every `poll` seconds, with an admin key."""
    return Settings(
        model_uri=f"models:/{name}@champion",
        model_poll_seconds=poll,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        admin_api_key=SecretStr(ADMIN_KEY),
    )


def reloads(client: TestClient | httpx.Client, result: str) -> float:
    """retryopt_model_reloads_total{result} from /metrics."""
    prefix = f'retryopt_model_reloads_total{{result="{result}"}} '
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    """Poll until the condition holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@contextmanager
def uvicorn_in_thread(app: FastAPI) -> Iterator[str]:
    """The app behind a real uvicorn on a free loopback port, in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), seconds=60)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(60)


# ---------------------------------------------------------------------------------------------
# (a) The alias moves while decisions keep flowing.
# ---------------------------------------------------------------------------------------------
THREADS = 4
SWITCH_AFTER = 100  # responses before the alias moves
MIN_REQUESTS = 300  # then keep going until v2 answers, and at least this many requests in all
MAX_REQUESTS = 3000  # a bound, should the reload never come


def test_the_alias_moves_under_load_without_a_failed_request(registry: MlflowClient, tmp_path: Path) -> None:
    champion(registry, GOOD, "1")
    app = create_app(registry_settings(GOOD, tmp_path, poll=0.2))
    responses: list[list[tuple[int, str | None]]] = [[] for _ in range(THREADS)]
    issued = itertools.count()
    v2_answered = threading.Event()

    def decide_in_a_loop(slot: int) -> None:
        """Send decisions one after another until enough were sent after the switch."""
        with httpx.Client(base_url=base, timeout=60) as http:
            while (n := next(issued)) < MAX_REQUESTS and not (n >= MIN_REQUESTS and v2_answered.is_set()):
                response = http.post("/v1/retry-decisions", json=BASE_REQUEST)
                version = response.json().get("model_version") if response.status_code == 200 else None
                responses[slot].append((response.status_code, version))
                if version == "tiny-v2":
                    v2_answered.set()

    with uvicorn_in_thread(app) as base:
        workers = [threading.Thread(target=decide_in_a_loop, args=(i,)) for i in range(THREADS)]
        for worker in workers:
            worker.start()
        wait_for(lambda: sum(map(len, responses)) >= SWITCH_AFTER, seconds=120)
        champion(registry, GOOD, "2")  # the promotion, while requests are in flight
        for worker in workers:
            worker.join(300)
        with httpx.Client(base_url=base) as http:
            ready = http.get("/readyz").json()
            succeeded, failed = reloads(http, "success"), reloads(http, "failure")

    sent = [r for per_thread in responses for r in per_thread]
    versions = [v for _, v in sent]
    failures = [status for status, _ in sent if status != 200]
    print(
        f"\nalias switch under load: {len(sent)} requests, {len(failures)} non-200, {versions.count('tiny-v1')} "
        f"from v1, {versions.count('tiny-v2')} from v2"
    )
    assert failures == []
    assert len(sent) >= MIN_REQUESTS
    assert set(versions) == {"tiny-v1", "tiny-v2"}
    for per_thread in responses:  # in each thread: v1 until the swap, v2 after it, never back
        seen = [v or "" for _, v in per_thread]
        assert seen == sorted(seen), seen
    assert ready["model_version"] == "tiny-v2" and ready["source_version"] == "2"
    assert (succeeded, failed) == (1.0, 0.0)


# ---------------------------------------------------------------------------------------------
# (b) Versions that cannot be served, and the admin endpoint.
# ---------------------------------------------------------------------------------------------
def test_admin_reload_refuses_a_corrupt_version_and_keeps_the_old_model(
    registry: MlflowClient, tmp_path: Path, request_body: dict[str, Any]
) -> None:
    champion(registry, BROKEN, "1")
    key = {"X-API-Key": ADMIN_KEY}
    with TestClient(create_app(registry_settings(BROKEN, tmp_path, poll=0))) as client:
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 401
        same = client.post("/admin/reload", headers=key)
        assert same.status_code == 200
        assert same.json() == {
            "model_version": "tiny-v1",
            "source": f"models:/{BROKEN}@champion",
            "source_version": "1",
            "changed": False,
        }

        champion(registry, BROKEN, "2")  # a corrupt version becomes champion
        refused = client.post("/admin/reload", headers=key)
        assert refused.status_code == 409
        assert refused.json()["code"] == "model_rejected" and "not valid JSON" in refused.json()["message"]
        assert refused.json()["model_version"] == "tiny-v1"
        assert client.post("/v1/retry-decisions", json=request_body).json()["model_version"] == "tiny-v1"
        assert client.get("/readyz").json() == {
            "status": "ready",
            "model_version": "tiny-v1",
            "model_source": f"models:/{BROKEN}@champion",
            "source_version": "1",
            "compiled_inference": "off",
        }

        registry.delete_registered_model_alias(BROKEN, "champion")  # the registry cannot answer
        unreachable = client.post("/admin/reload", headers=key)
        assert unreachable.status_code == 503 and unreachable.headers["Retry-After"] == "60"
        assert unreachable.json()["code"] == "model_source_unavailable"
        assert client.post("/v1/retry-decisions", json=request_body).status_code == 200
        assert (reloads(client, "unchanged"), reloads(client, "failure"), reloads(client, "success")) == (1, 2, 0)


def test_the_poller_refuses_a_corrupt_version_once_and_keeps_serving(registry: MlflowClient, tmp_path: Path) -> None:
    champion(registry, BROKEN, "1")
    with TestClient(create_app(registry_settings(BROKEN, tmp_path, poll=0.05))) as client:
        champion(registry, BROKEN, "2")
        wait_for(lambda: reloads(client, "failure") == 1)
        time.sleep(0.5)  # ten more polls: the refused version is not tried again
        assert reloads(client, "failure") == 1
        assert client.get("/readyz").json()["model_version"] == "tiny-v1"


def test_a_corrupt_champion_at_start_means_fallback_until_the_alias_moves(
    registry: MlflowClient, tmp_path: Path, request_body: dict[str, Any]
) -> None:
    champion(registry, BROKEN, "2")
    with TestClient(create_app(registry_settings(BROKEN, tmp_path, poll=0.05))) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "degraded" and "not valid JSON" in ready["reason"]
        assert client.post("/v1/retry-decisions", json=request_body).json()["model_version"] == "fallback"
        champion(registry, BROKEN, "1")  # the rollback
        wait_for(lambda: client.get("/readyz").json()["status"] == "ready")
        assert client.post("/v1/retry-decisions", json=request_body).json()["model_version"] == "tiny-v1"


# ---------------------------------------------------------------------------------------------
# SIGTERM: `retryopt serve` finishes what is in flight, then exits 0.
# ---------------------------------------------------------------------------------------------
BATCH = 2000  # seconds of deciding (300 took under 0.5 s once the batch path got faster): caught by the signal


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(bundle_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RETRYOPT_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    command = [retryopt_executable(), "serve", "--model", str(bundle_dir), "--port", str(port)]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    batch = {"requests": [{**copy.deepcopy(BASE_REQUEST), "invoice_id": f"in_{i}"} for i in range(BATCH)]}
    answer: dict[str, Any] = {}

    def decide_batch() -> None:
        """One big batch; records its status, size and when it came back."""
        response = httpx.post(f"{base}/v1/retry-decisions/batch", json=batch, timeout=120)
        answer.update(status=response.status_code, decisions=len(response.json().get("decisions", [])))
        answer["at"] = time.monotonic()

    def ready() -> bool:
        """/readyz answers 200 (and the process still runs)."""
        assert process.poll() is None, "retryopt serve exited before it was ready"
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, seconds=60)
        sender = threading.Thread(target=decide_batch)
        sender.start()
        time.sleep(0.5)  # the batch is received and being decided
        signalled_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        sender.join(120)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
        output = process.stdout.read().decode() if process.stdout else ""
    assert answer.get("status") == 200 and answer["decisions"] == BATCH, output[-2000:]
    assert answer["at"] > signalled_at, "the batch finished before the signal: make it bigger"
    assert code == 0, output[-2000:]
    assert "Waiting for application shutdown" in output  # the lifespan (poller, store) was closed
