"""Compiled tree inference (features.compiled) on tiny boosters: same probabilities, never waited for.

The suite serves with RETRYOPT_COMPILED_INFERENCE=false (tests/conftest.py); these tests turn it on
with tiny models, each compiled in a second or two, never the shipped 456-tree one.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from features.bundle import MODEL_FILE, Bundle, calibrate, load_bundle
from features.candidates import FEATURE_COLUMNS
from features.compiled import CompiledSlot, CompileError, Compiler, probe_matrix
from serving.app import create_app
from serving.model_source import ModelHolder, load_served_model
from serving.policy.scoring import BundleScorer
from serving.settings import Settings

CATEGORICAL = list(range(16, 24))  # as in the shipped model: the last eight features


def categorical_booster(seed: int = 3) -> tuple[lgb.Booster, np.ndarray]:
    """A 15-tree booster on 24 features, eight of them categorical, trained with NaNs in every column."""
    rng = np.random.default_rng(seed)
    n = 3000
    x = rng.normal(0, 3, (n, len(FEATURE_COLUMNS)))
    for j in CATEGORICAL:
        x[:, j] = rng.integers(0, 12, n)
    x[rng.random(x.shape) < 0.1] = np.nan
    logit = np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 3]) + np.isin(x[:, 16], [1, 4, 7]) * 2 - np.isnan(x[:, 5])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    params = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1, "num_threads": 1}
    data = lgb.Dataset(x, label=y, categorical_feature=CATEGORICAL, feature_name=list(FEATURE_COLUMNS))
    return lgb.train(params, data, num_boost_round=15), x


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled-cache")


def test_compiled_probabilities_equal_lightgbm_with_nans_and_categories(tmp_path: Path, cache_dir: Path) -> None:
    booster, x = categorical_booster()
    assert "decision_type=" in (text := booster.model_to_string()) and "cat_threshold=" in text  # categorical splits
    model_file = tmp_path / "model.txt"
    booster.save_model(str(model_file))
    slot = CompiledSlot()
    Compiler(cache_dir).run(slot, model_file, booster)
    assert slot.state == "ready" and slot.predictor is not None, slot.detail

    rows = np.vstack([x, probe_matrix(x.shape[1], CATEGORICAL, rows=2000, seed=9), np.full((3, x.shape[1]), np.nan)])
    rows[:50, CATEGORICAL] = -1.0  # negative categories: missing for LightGBM
    rows[50:100, CATEGORICAL] = 999.0  # categories never seen in training
    expected = booster.predict(rows, num_threads=1)
    got = slot.predictor.raw_probability(rows)
    assert np.isnan(rows).any(axis=1).sum() > 1000
    assert np.max(np.abs(got - expected)) <= 1e-9
    # A frame-like Fortran-ordered matrix (what a DataFrame hands over) gives the same answer.
    assert np.array_equal(slot.predictor.raw_probability(np.asfortranarray(rows)), got)


def test_a_cache_hit_loads_the_library_without_compiling(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    booster, _ = categorical_booster(seed=4)
    model_file = tmp_path / "model.txt"
    booster.save_model(str(model_file))
    Compiler(cache_dir).run(first := CompiledSlot(), model_file, booster)
    assert first.state == "ready"
    libraries = sorted(cache_dir.glob("*.so"))

    def no_compile(*args: Any) -> None:
        raise AssertionError("compiled again despite the cache")

    monkeypatch.setattr(Compiler, "_compile_in_child", no_compile)
    copy = tmp_path / "copy" / "model.txt"  # same bytes elsewhere: the key is the content, not the path
    copy.parent.mkdir()
    shutil.copy(model_file, copy)
    started = time.perf_counter()
    Compiler(cache_dir).run(second := CompiledSlot(), copy, booster)
    assert second.state == "ready" and time.perf_counter() - started < 1.0
    assert second.detail == first.detail  # the same library
    assert sorted(cache_dir.glob("*.so")) == libraries
    assert not list(cache_dir.glob("*.tmp"))


def test_a_failed_compile_logs_and_lightgbm_keeps_predicting(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = load_bundle(bundle_dir)

    def broken(*args: Any) -> None:
        raise CompileError("compiler exited with -11: boom")

    monkeypatch.setattr(Compiler, "_compile_in_child", broken)
    with caplog.at_level(logging.ERROR, logger="features.compiled"):
        Compiler(tmp_path / "cache").run(bundle.compiled, bundle.model_file, bundle.booster)
    assert bundle.compiled.state == "failed" and bundle.compiled.predictor is None
    assert "compiled inference FAILED" in caplog.text and "boom" in caplog.text
    rows = probe_matrix(len(FEATURE_COLUMNS), [])
    assert np.array_equal(bundle.raw_probability(rows), bundle.booster.predict(rows, num_threads=1))


def test_without_lleaves_the_state_is_unavailable(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_bundle(bundle_dir)

    def missing(*args: Any) -> None:
        raise ModuleNotFoundError("No module named 'lleaves'")

    monkeypatch.setattr(Compiler, "library", missing)
    Compiler(tmp_path / "cache").run(bundle.compiled, bundle.model_file, bundle.booster)
    assert bundle.compiled.state == "unavailable" and bundle.compiled.predictor is None


def test_decisions_never_wait_for_the_compile(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_bundle(bundle_dir)
    release = threading.Event()
    original = Compiler._compile_in_child

    def slow(self: Compiler, *args: Any) -> None:
        assert release.wait(30)
        original(self, *args)

    monkeypatch.setattr(Compiler, "_compile_in_child", slow)
    rows = probe_matrix(len(FEATURE_COLUMNS), [])
    expected = bundle.booster.predict(rows, num_threads=1)
    compiler = Compiler(tmp_path / "cache")
    compiler.start(bundle.compiled, bundle.model_file, bundle.booster)
    started = time.perf_counter()
    assert bundle.compiled.state == "compiling"
    assert np.array_equal(bundle.raw_probability(rows), expected)  # LightGBM, at once
    assert time.perf_counter() - started < 1.0
    release.set()
    wait_for(lambda: bundle.compiled.state == "ready")
    assert bundle.compiled.predictor is not None
    assert np.max(np.abs(bundle.raw_probability(rows) - expected)) <= 1e-9


def retrained(bundle_dir: Path, target: Path) -> Path:
    """A copy of the bundle whose model is another booster (the categorical one), as a new version."""
    shutil.copytree(bundle_dir, target)
    booster, _ = categorical_booster(seed=5)
    booster.save_model(str(target / MODEL_FILE))
    return target


def test_a_reload_pairs_the_new_model_with_its_own_compiled_code(bundle_dir: Path, tmp_path: Path) -> None:
    served_dir = tmp_path / "served"
    shutil.copytree(bundle_dir, served_dir)
    other = retrained(bundle_dir, tmp_path / "other")
    settings = Settings(model_dir=served_dir, compiled_inference=True, compiled_cache_dir=tmp_path / "cache")
    reloads = Counter("reloads", "test", ["result"], registry=CollectorRegistry())
    compiler = Compiler(tmp_path / "cache")
    rows = probe_matrix(len(FEATURE_COLUMNS), CATEGORICAL, seed=2)

    async def scenario() -> None:
        first = load_served_model(served_dir, settings, tmp_path)
        holder = ModelHolder(first, served_dir, settings, tmp_path, reloads, compiler=compiler)  # as open_model does
        old: Bundle = holder.current.scorer.bundle  # type: ignore[attr-defined]
        wait_for(lambda: old.compiled.state == "ready")

        shutil.copy(other / MODEL_FILE, served_dir / MODEL_FILE)  # the new version lands
        result = await holder.reload(force=True)
        assert result.failure is None
        new: Bundle = holder.current.scorer.bundle  # type: ignore[attr-defined]
        assert new is not old and new.compiled is not old.compiled
        # Until its own compile is done the new model predicts with LightGBM, never with the old code.
        assert new.compiled.predictor is None or new.compiled.state == "ready"
        assert np.max(np.abs(new.raw_probability(rows) - new.booster.predict(rows, num_threads=1))) <= 1e-9
        wait_for(lambda: new.compiled.state == "ready")
        assert new.compiled.predictor is not old.compiled.predictor
        assert np.max(np.abs(new.raw_probability(rows) - new.booster.predict(rows, num_threads=1))) <= 1e-9
        assert np.max(np.abs(new.raw_probability(rows) - old.booster.predict(rows, num_threads=1))) > 1e-3
        holder.close()

    asyncio.run(scenario())


def test_the_app_compiles_in_the_background_and_readyz_says_so(
    bundle_dir: Path, tmp_path: Path, request_body: dict[str, Any]
) -> None:
    settings = Settings(
        model_dir=bundle_dir,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        compiled_inference=True,
        compiled_cache_dir=tmp_path / "cache",
    )
    request_body["now"] = "2026-11-01T14:05:00Z"
    with TestClient(create_app(settings)) as client:
        first = client.get("/readyz").json()
        assert first["status"] == "ready" and first["compiled_inference"] in {"compiling", "ready"}
        before = client.post("/v1/retry-decisions", json=request_body).json()  # no waiting for the compile
        wait_for(lambda: client.get("/readyz").json()["compiled_inference"] == "ready")
        after = client.post("/v1/retry-decisions", json=request_body).json()
    assert list(tmp_path.joinpath("cache").glob("*.so"))
    for body in (before, after):
        body.pop("decision_id", None)
    assert before == after


def test_settings_default_to_compiled_inference_under_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETRYOPT_COMPILED_INFERENCE", raising=False)
    assert Settings().compiled_inference is True
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/x")
    from features.compiled import default_cache_dir

    assert default_cache_dir() == Path("/var/cache/x/retryopt/compiled")


def test_fallback_scoring_reports_compiled_inference_off(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path / "missing", compiled_inference=True, compiled_cache_dir=tmp_path / "c")
    with TestClient(create_app(settings)) as client:
        body = client.get("/readyz").json()
    assert body["status"] == "degraded" and body["compiled_inference"] == "off"


def test_bundle_scorer_uses_the_compiled_predictor_once_ready(bundle_dir: Path, tmp_path: Path) -> None:
    bundle = load_bundle(bundle_dir)
    Compiler(tmp_path / "cache").run(bundle.compiled, bundle.model_file, bundle.booster)
    calls: list[int] = []
    predictor = bundle.compiled.predictor
    assert predictor is not None
    original = predictor.model.predict

    def counted(data: Any, n_jobs: int | None = None) -> Any:
        calls.append(len(data))
        return original(data, n_jobs=n_jobs)

    predictor.model.predict = counted
    rows = probe_matrix(len(FEATURE_COLUMNS), [])
    frame = pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))
    scored = BundleScorer(bundle).score(frame.iloc[:, :0], frame)
    assert calls == [len(rows)]
    lightgbm = calibrate(bundle.lightgbm_probability(rows), bundle.calibration_x, bundle.calibration_y)
    assert np.max(np.abs(scored - lightgbm)) <= 1e-9
