"""Where the served model comes from (a bundle directory or an MLflow URI) and how it is swapped live.

A source is a directory or `models:/NAME@alias`, `models:/NAME/3`, `runs:/ID/bundle`. An alias is
resolved to its version first and that exact version is downloaded (`models:/NAME/3`), so the
version reported is the version loaded even if the alias moves during the download.

The app keeps the served model in one `ModelHolder`: a request reads `holder.current` once and
decides with it to the end, so a swap mid-request cannot mix two models. Loading (download,
LightGBM parse) runs in a worker thread, never on the event loop; the swap is one assignment. A
reload that fails keeps the old model (logged, counted in `retryopt_model_reloads_total`), and a
version refused once is not retried until the alias moves again.

MLflow is imported inside the functions that need it: importing this module costs no MLflow.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import Counter

from features.bundle import MANIFEST, BundleError, load_bundle
from features.compiled import Compiler, default_cache_dir
from serving.policy.fallback import fallback_scorer
from serving.policy.scoring import BundleScorer, Scorer
from serving.settings import Settings

log = logging.getLogger(__name__)

Failure = Literal["rejected", "unavailable"]


class ModelSourceError(Exception):
    """The source cannot give a bundle: registry unreachable, unknown alias, no bundle in the artifacts."""


class NoBundleError(ModelSourceError):
    """The source answered, but its artifacts hold no single bundle: that version can never be served."""


# ---------------------------------------------------------------------------------------------
# Sources: directories and MLflow URIs.
# ---------------------------------------------------------------------------------------------
def is_model_uri(uri: str | Path) -> bool:
    """True for MLflow URIs (`models:/…`, `runs:/…`), false for local paths."""
    return str(uri).startswith(("models:/", "runs:/"))


def configured_source(settings: Settings) -> str | Path:
    """The source to serve: `model_uri` when set, else `model_dir`."""
    return settings.model_uri or settings.model_dir


def _first_line(exc: BaseException) -> str:
    """An exception as one line (MLflow's messages can carry whole responses)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def registry_ref(uri: str) -> tuple[str, str] | None:
    """(name, "3" or "@alias") of `models:/NAME/3` or `models:/NAME@alias`; None for anything else."""
    if not uri.startswith("models:/"):
        return None
    path = uri.removeprefix("models:/").strip("/")
    if "/" in path:
        name, version = path.split("/", 1)
        return (name, version) if version.isdigit() else None  # stages and `latest` are not followed
    if "@" in path:
        name, alias = path.rsplit("@", 1)
        return (name, f"@{alias}") if name and alias else None
    return None


def resolve_version(uri: str | Path) -> str | None:
    """The registry version a `models:/` URI points to now ("3" for `models:/NAME@champion` on v3).

    None when there is nothing to follow: a directory, a run, a stage or `latest`.
    """
    ref = registry_ref(str(uri))
    if ref is None:
        return None
    name, version = ref
    if not version.startswith("@"):
        return version
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, version[1:]).version)
    except (MlflowException, OSError) as exc:
        raise ModelSourceError(f"{uri}: cannot resolve the alias: {_first_line(exc)}") from None


def pinned_uri(uri: str, version: str | None) -> str:
    """`models:/NAME/<version>` for a registry URI resolved to `version`, else the URI unchanged."""
    ref = registry_ref(uri)
    return uri if ref is None or version is None else f"models:/{ref[0]}/{version}"


def download_bundle(uri: str, dst: str | Path) -> Path:
    """Download a registered model (`models:/NAME@alias`, `models:/NAME/3`, `runs:/…`) into `dst`
    and return the bundle directory inside it (the one directory holding a manifest.json)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(uri), dst_path=str(dst)))
    except (MlflowException, OSError) as exc:
        raise ModelSourceError(f"{uri}: cannot download the model: {_first_line(exc)}") from None
    manifests = sorted(local.rglob(MANIFEST)) if local.is_dir() else []
    if len(manifests) != 1:
        raise NoBundleError(f"{uri}: expected one model bundle in the artifacts, found {len(manifests)}")
    return manifests[0].parent


# ---------------------------------------------------------------------------------------------
# The served model and its loading.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServedModel:
    """What a request decides with: a scorer, the policy settings for it, and where it came from."""

    scorer: Scorer
    settings: Settings  # in fallback, every invoice on the fixed schedule
    source: str  # the configured directory or URI
    source_version: str | None = None  # the registry version loaded (None: a directory, a run, fallback)
    fallback_reason: str | None = None  # why no model is served (None: one is)
    directory: Path | None = None  # a downloaded copy this process owns, deleted once replaced

    @property
    def model_version(self) -> str:
        """The version decisions report ("fallback" in fallback mode)."""
        return self.scorer.model_version

    @property
    def degraded(self) -> bool:
        """True in fallback mode."""
        return self.fallback_reason is not None

    @property
    def compiled_inference(self) -> str:
        """State of the model's compiled predictor: off, compiling, ready, failed or unavailable."""
        if isinstance(self.scorer, BundleScorer):
            return self.scorer.bundle.compiled.state
        return "off"


def load_served_model(source: str | Path, settings: Settings, workdir: Path, version: str | None = None) -> ServedModel:
    """Blocking: fetch (a URI: pinned to `version`, into `workdir`) and load the bundle.

    Raises BundleError or NoBundleError when that version cannot be served, ModelSourceError when
    the source cannot be reached.
    """
    if not is_model_uri(source):
        return ServedModel(BundleScorer(load_bundle(source)), settings, str(source))
    target = Path(tempfile.mkdtemp(prefix="model-", dir=workdir))
    try:
        bundle = load_bundle(download_bundle(pinned_uri(str(source), version), target))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return ServedModel(BundleScorer(bundle), settings, str(source), version, directory=target)


def same_file(a: Path, b: Path) -> bool:
    """Whether two model files hold the same bytes (False when either cannot be read)."""
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def fallback_model(source: str | Path, settings: Settings, reason: str) -> ServedModel:
    """Fallback mode: rules and the fixed schedule, with the reason no model is served."""
    return ServedModel(fallback_scorer(settings), settings, str(source), fallback_reason=reason)


def discard(served: ServedModel) -> None:
    """Delete a replaced model's downloaded files (in-flight requests hold it in memory, not on disk)."""
    if served.directory is not None:
        shutil.rmtree(served.directory, ignore_errors=True)


def should_load(latest: str | None, served: ServedModel, rejected: str | None, *, force: bool) -> bool:
    """Whether a reload must load: not when `latest` is already served; the poller only for a new, unrefused version."""
    if latest is not None and latest == served.source_version and not served.degraded:
        return False
    if force:
        return True
    return latest is not None and latest != rejected


# ---------------------------------------------------------------------------------------------
# The holder: one reference swapped whole.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reload:
    """What a reload did: the model served afterwards, whether it changed, and why it failed."""

    served: ServedModel
    changed: bool
    failure: Failure | None = None  # rejected: the bundle cannot be served; unavailable: the source failed
    error: str | None = None


class ModelHolder:
    """The served model: requests read `current` once; reloads replace it with one assignment."""

    def __init__(
        self,
        current: ServedModel,
        source: str | Path,
        settings: Settings,
        workdir: Path,
        reloads: Counter,
        rejected: str | None = None,
        compiler: Compiler | None = None,
    ) -> None:
        self.current = current
        self.source = source
        self._settings = settings
        self._workdir = workdir
        self._reloads = reloads
        self._rejected = rejected  # the registry version last refused, not retried by the poller
        self._lock = asyncio.Lock()  # one load at a time: the poller and /admin/reload never race
        self._compiler = compiler
        self.accelerate(current)

    def accelerate(self, served: ServedModel) -> None:
        """Start compiling a served bundle's model in the background (with a compiler; never for fallback).

        The compiled predictor goes into that bundle's own slot, so it only ever serves that model.
        """
        if self._compiler is not None and isinstance(served.scorer, BundleScorer):
            bundle = served.scorer.bundle
            self._compiler.start(bundle.compiled, bundle.model_file, bundle.booster)

    def retire(self, old: ServedModel, new: ServedModel) -> None:
        """Stop the replaced model's compile, unless the new model is the same file (then it finishes it)."""
        if self._compiler is None or not isinstance(old.scorer, BundleScorer):
            return
        old_bundle = old.scorer.bundle
        if isinstance(new.scorer, BundleScorer) and same_file(old_bundle.model_file, new.scorer.bundle.model_file):
            return
        self._compiler.cancel(old_bundle.compiled)

    def close(self) -> None:
        """Stop background compiles (shutdown)."""
        if self._compiler is not None:
            self._compiler.close()

    async def reload(self, *, force: bool = True) -> Reload:
        """Load the source's current version off the event loop and swap it in; a failure keeps the old model.

        `force` (POST /admin/reload) loads unless the registry version is already served; without
        it (the poller) only a version that is new and not refused before is loaded.
        """
        async with self._lock:
            served = self.current
            latest: str | None = None
            try:
                latest = await asyncio.to_thread(resolve_version, self.source)
                if not should_load(latest, served, self._rejected, force=force):
                    if force:
                        self._reloads.labels(result="unchanged").inc()
                    return Reload(served, changed=False)
                fresh = await asyncio.to_thread(load_served_model, self.source, self._settings, self._workdir, latest)
            except (BundleError, NoBundleError) as exc:
                self._rejected = latest
                return self._failed(served, "rejected", str(exc))
            except ModelSourceError as exc:
                return self._failed(served, "unavailable", str(exc))
            except Exception as exc:  # a bug in a reload must not stop the poller or the service
                log.exception("model reload from %s failed unexpectedly", self.source)
                return self._failed(served, "unavailable", f"{type(exc).__name__}: {_first_line(exc)}")
            self.accelerate(fresh)  # its own compile; LightGBM predicts for it until that is ready
            self.current = fresh  # the swap: requests from now on decide with the new model
            self.retire(served, fresh)
            self._rejected = None
            await asyncio.to_thread(discard, served)
            changed = served.degraded or (fresh.model_version, fresh.source_version) != (
                served.model_version,
                served.source_version,
            )
            self._reloads.labels(result="success" if changed else "unchanged").inc()
            log.info(
                "serving model %s from %s (registry version %s; was %s)",
                fresh.model_version,
                self.source,
                fresh.source_version,
                served.model_version,
            )
            return Reload(fresh, changed=changed)

    def _failed(self, served: ServedModel, failure: Failure, error: str) -> Reload:
        """Count and log a failed reload; the old model stays."""
        self._reloads.labels(result="failure").inc()
        log.error(
            "model reload from %s failed (%s), still serving %s: %s", self.source, failure, served.model_version, error
        )
        return Reload(served, changed=False, failure=failure, error=error)


async def open_model(settings: Settings, workdir: Path, reloads: Counter) -> ModelHolder:
    """The configured model in a holder; fallback mode when it cannot be loaded (the error when model_fallback is off)."""
    source = configured_source(settings)
    version: str | None = None
    rejected: str | None = None
    try:
        version = await asyncio.to_thread(resolve_version, source)
        served = await asyncio.to_thread(load_served_model, source, settings, workdir, version)
    except (BundleError, ModelSourceError) as exc:
        if not settings.model_fallback:
            log.error("cannot serve the model: %s", exc)
            raise
        log.error("cannot serve the model, starting in FALLBACK mode (rules + fixed schedule): %s", exc)
        served = fallback_model(source, settings, f"no model served: {exc}")
        rejected = version if isinstance(exc, BundleError | NoBundleError) else None
    log.info("serving model %s from %s (registry version %s)", served.model_version, source, served.source_version)
    compiler = Compiler(settings.compiled_cache_dir or default_cache_dir()) if settings.compiled_inference else None
    return ModelHolder(served, source, settings, workdir, reloads, rejected, compiler)


async def follow(holder: ModelHolder, every_seconds: float) -> None:
    """Poll the source every `every_seconds` and reload when its alias moved; runs until cancelled."""
    while True:
        await asyncio.sleep(every_seconds)
        await holder.reload(force=False)
