"""Model sources without a registry: URIs, version pinning, when to load, the holder, the poller's end."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from serving.app import start_poller, stop_poller
from serving.deps import is_loopback
from serving.model_source import (
    ModelHolder,
    ModelSourceError,
    ServedModel,
    configured_source,
    download_bundle,
    fallback_model,
    is_model_uri,
    load_served_model,
    pinned_uri,
    registry_ref,
    resolve_version,
    should_load,
)
from serving.settings import Settings


def counter() -> Counter:
    """A reload counter of its own."""
    return Counter("reloads", "test", ["result"], registry=CollectorRegistry())


def count(reloads: Counter, result: str) -> float:
    """The counter's value for one result."""
    return float(reloads.labels(result=result)._value.get())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:/retry@champion", True),
        ("models:/retry/3", True),
        ("runs:/abc/bundle", True),
        ("models/default", False),
        ("/srv/models:/x", False),
    ],
)
def test_is_model_uri(text: str, expected: bool) -> None:
    assert is_model_uri(text) is expected


@pytest.mark.parametrize(
    ("uri", "ref", "pinned"),
    [
        ("models:/retry@champion", ("retry", "@champion"), "models:/retry/7"),
        ("models:/retry/3", ("retry", "3"), "models:/retry/7"),
        ("models:/retry/latest", None, "models:/retry/latest"),  # not followed: downloaded as given
        ("models:/retry/Production", None, "models:/retry/Production"),
        ("runs:/abc/bundle", None, "runs:/abc/bundle"),
        ("models:/@x", None, "models:/@x"),
    ],
)
def test_registry_refs_and_pinning(uri: str, ref: tuple[str, str] | None, pinned: str) -> None:
    assert registry_ref(uri) == ref
    assert pinned_uri(uri, "7") == pinned
    assert pinned_uri(uri, None) == uri


def test_resolve_version_needs_no_registry_for_fixed_sources(tmp_path: Path) -> None:
    assert resolve_version(tmp_path) is None
    assert resolve_version("runs:/abc/bundle") is None
    assert resolve_version("models:/retry/3") == "3"


def test_an_unknown_alias_or_run_is_a_source_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ModelSourceError, match="cannot resolve the alias"):
        resolve_version("models:/never-registered@champion")
    with pytest.raises(ModelSourceError, match="cannot download the model"):
        download_bundle("runs:/0123456789abcdef/bundle", tmp_path / "dst")


def test_model_uri_wins_over_model_dir(tmp_path: Path) -> None:
    assert configured_source(Settings(model_dir=tmp_path)) == tmp_path
    assert configured_source(Settings(model_dir=tmp_path, model_uri="models:/m@champion")) == "models:/m@champion"


def test_importing_the_service_imports_no_mlflow() -> None:
    code = "import sys, serving.app, serving.model_source; sys.exit(any(m.startswith('mlflow') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def served(version: str | None, degraded: bool = False) -> ServedModel:
    """A served model at a registry version (the scorer does not matter here)."""
    settings = Settings()
    if degraded:
        return fallback_model("models:/m@champion", settings, "no model")
    return ServedModel(fallback_model("x", settings, "").scorer, settings, "models:/m@champion", version)


@pytest.mark.parametrize(
    ("latest", "current", "rejected", "force", "load"),
    [
        ("2", served("2"), None, False, False),  # already served
        ("2", served("2"), None, True, False),  # even when asked: no download for the same version
        ("3", served("2"), None, False, True),  # the alias moved
        ("3", served("2"), "3", False, False),  # refused once: the poller waits for the next move
        ("3", served("2"), "3", True, True),  # an operator may insist
        ("3", served(None, degraded=True), None, False, True),  # fallback after an outage: try again
        (None, served(None), None, False, False),  # a directory: the poller has nothing to follow
        (None, served(None), None, True, True),  # ... but /admin/reload re-reads it
    ],
)
def test_should_load(latest: str | None, current: ServedModel, rejected: str | None, force: bool, load: bool) -> None:
    assert should_load(latest, current, rejected, force=force) is load


def test_a_directory_reload_swaps_in_the_new_bundle_and_a_bad_one_keeps_the_old(
    bundle_dir: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        reloads = counter()
        settings = Settings(model_dir=bundle_dir)
        holder = ModelHolder(load_served_model(bundle_dir, settings, tmp_path), bundle_dir, settings, tmp_path, reloads)
        first = holder.current
        same = await holder.reload()
        assert same.failure is None and not same.changed and holder.current is not first  # re-read, same version
        holder.source = tmp_path / "missing"
        failed = await holder.reload()
        assert failed.failure == "rejected" and "does not exist" in str(failed.error)
        assert holder.current is same.served  # the old model stays
        assert (count(reloads, "unchanged"), count(reloads, "failure"), count(reloads, "success")) == (1, 1, 0)

    asyncio.run(scenario())


def test_stopping_the_poller_cancels_it_cleanly(bundle_dir: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = Settings(model_uri="models:/m/1", model_poll_seconds=0.01)
        holder = ModelHolder(served("1"), settings.model_uri or "", settings, tmp_path, counter())
        task = start_poller(holder, settings)
        assert task is not None
        await asyncio.sleep(0.05)  # a few polls: version 1 is served, nothing to do
        await stop_poller(task)
        assert task.cancelled()
        assert start_poller(holder, settings.model_copy(update={"model_poll_seconds": 0})) is None
        holder.source = bundle_dir
        assert start_poller(holder, settings) is None  # a directory is not polled

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("testclient", False),  # TestClient's default client
        (None, False),
        ("", False),
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback
