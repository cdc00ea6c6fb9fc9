"""Compiled tree inference: a bundle's LightGBM model as native code (lleaves), cached on disk.

lleaves turns the model's trees into LLVM IR and compiles them to machine code for this CPU. On
the shipped model (456 trees, 63 leaves) it predicts 10-11x faster than `Booster.predict` on one
thread, with probabilities equal to LightGBM's within 1e-15 (NaNs and categorical splits
included: bench/compiled_inference.py). Only the probability goes through it; the reasons stay
LightGBM's exact TreeSHAP (`pred_contrib`).

Compiling costs time and memory (about 85 s of one core and 1.6 GB peak for the shipped model),
so:
- it runs in a **child process** (niced, so serving keeps the CPU; its memory never becomes the
  service's), supervised by a background thread: decisions never wait for it;
- its output, a shared object, is **cached** under `<cache dir>/<key>.so`; the key hashes the
  model file's bytes, the lleaves/llvmlite versions and this CPU (the code is CPU-specific). A
  restart loads it in tens of milliseconds. Writes are atomic (temp file + rename) and one
  compile per key runs at a time across processes (a file lock);
- the compiled predictor hangs off the `Bundle` it was compiled from (`Bundle.compiled`), so a
  new model can never be paired with an old predictor: a reload brings a new bundle whose slot
  is empty until its own compile is done;
- a loaded predictor is checked against LightGBM on probe rows (NaNs, unseen and negative
  categories) before it is used; any failure (lleaves missing, compile error, mismatch) is logged
  and LightGBM keeps predicting.

Nothing here imports lleaves or llvmlite at import time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

State = Literal["off", "compiling", "ready", "failed", "unavailable"]

# lleaves' compile options; part of the cache key (a different option is a different binary).
COMPILE_OPTIONS = {"raw_score": False, "fblocksize": 34, "fcodemodel": "large", "finline": True, "use_fp64": True}
# A loaded predictor must match LightGBM on the probe rows to this (measured: ~1e-15).
PROBE_TOLERANCE = 1e-9


class CompileError(Exception):
    """The model could not be compiled or the compiled code cannot be used; the message says why."""


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/retryopt/compiled`, else `~/.cache/retryopt/compiled`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "retryopt" / "compiled"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"


def _host_cpu() -> str:
    """LLVM's name and feature string of this CPU: the compiled code is specific to them."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        features = ""
    return f"{llvm.get_host_cpu_name()}|{features}"


def cache_key(model_file: Path) -> str:
    """Hash of the model file's bytes, the compiler versions, this CPU and the compile options."""
    digest = hashlib.sha256(Path(model_file).read_bytes())
    context = "|".join(
        [_package_version("lleaves"), _package_version("llvmlite"), _host_cpu(), repr(sorted(COMPILE_OPTIONS.items()))]
    )
    digest.update(context.encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class CompiledPredictor:
    """A compiled model: `raw_probability` is `Booster.predict(matrix, num_threads=1)`, in native code."""

    model: Any  # lleaves.Model, compiled (holds the executable code)
    library: Path

    def raw_probability(self, matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Uncalibrated probability of each row of a float matrix in the model's feature order (one thread)."""
        return np.asarray(self.model.predict(matrix, n_jobs=1), dtype=np.float64)


class CompiledSlot:
    """A bundle's compiled predictor once it is ready, and the state /readyz reports.

    `predictor` is set once, by the one background job of this bundle; readers take it in one
    attribute read (None: predict with LightGBM).
    """

    def __init__(self) -> None:
        self.predictor: CompiledPredictor | None = None
        self.state: State = "off"
        self.detail: str | None = None
        self.cancelled = False  # its model was replaced before the compile finished

    def set(self, state: State, detail: str | None = None, predictor: CompiledPredictor | None = None) -> None:
        if predictor is not None:
            self.predictor = predictor
        self.state = state
        self.detail = detail


def probe_matrix(n_features: int, categorical: list[int], rows: int = 256, seed: int = 0) -> npt.NDArray[np.float64]:
    """Rows that reach many branches: NaNs, zeros, negatives, and unseen, negative and fractional categories."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0, 1, (rows, n_features)) * rng.choice([1.0, 5.0, 50.0, 500.0], (rows, n_features))
    for j in categorical:
        matrix[:, j] = rng.choice([-1.0, -3.5, 0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 12.0, 40.0, 300.0], rows)
    matrix[rng.random((rows, n_features)) < 0.15] = np.nan
    matrix[0] = np.nan
    matrix[1] = 0.0
    return matrix


def categorical_features(booster: lgb.Booster) -> list[int]:
    """Indices of the booster's categorical features (from the model text's parameters)."""
    text = booster.model_to_string(num_iteration=1)
    for line in text.splitlines():
        if line.startswith("[categorical_feature:"):
            values = line.split(":", 1)[1].strip(" ]")
            return [int(v) for v in values.split(",") if v.strip()]
    return []


def load_compiled(library: Path, model_file: Path) -> CompiledPredictor:
    """Load a cached compiled model (no compile: the library must exist)."""
    import lleaves

    if not library.exists():
        raise CompileError(f"{library} does not exist")
    model = lleaves.Model(model_file=str(model_file))
    model.compile(cache=str(library), **COMPILE_OPTIONS)
    return CompiledPredictor(model, library)


def check_against(predictor: CompiledPredictor, booster: lgb.Booster) -> float:
    """Max |compiled - LightGBM| on the probe rows; CompileError above PROBE_TOLERANCE."""
    probe = probe_matrix(booster.num_feature(), categorical_features(booster))
    expected = np.asarray(booster.predict(probe, num_threads=1), dtype=np.float64)
    got = predictor.raw_probability(probe)
    worst = float(np.max(np.abs(expected - got)))
    if not worst <= PROBE_TOLERANCE:
        raise CompileError(f"compiled predictions differ from LightGBM by {worst:.3g} on probe rows")
    return worst


class Compiler:
    """Compiles models in niced child processes, one background thread per bundle; `close` stops them."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # id(slot) -> its running compile
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()  # one compile per process: the box has few cores
        self._closed = False

    def start(self, slot: CompiledSlot, model_file: Path, booster: lgb.Booster) -> threading.Thread:
        """Compile (or load from the cache) in the background; fill `slot` when done. Never blocks."""
        slot.set("compiling")
        thread = threading.Thread(
            target=self.run, args=(slot, model_file, booster), name="retryopt-compile", daemon=True
        )
        thread.start()
        return thread

    def run(self, slot: CompiledSlot, model_file: Path, booster: lgb.Booster) -> None:
        """Blocking: compile or load, check, and fill the slot; every failure leaves LightGBM predicting."""
        started = time.perf_counter()
        try:
            library = self.library(model_file, slot)
            predictor = load_compiled(library, model_file)
            worst = check_against(predictor, booster)
        except ImportError as exc:
            slot.set("unavailable", f"lleaves is not installed ({exc}); predicting with LightGBM")
            log.warning("compiled inference unavailable: lleaves is not installed (%s); predicting with LightGBM", exc)
            return
        except Exception as exc:  # anything: the service goes on with LightGBM
            detail = f"{type(exc).__name__}: {exc}"
            if self._closed or slot.cancelled or not Path(model_file).exists():
                slot.set("off", f"stopped: {detail}")
                log.info("compiling %s stopped (shutdown or model replaced): %s", model_file, detail)
            else:
                slot.set("failed", detail)
                log.error("compiled inference FAILED for %s, predicting with LightGBM: %s", model_file, detail)
            return
        slot.set("ready", str(library), predictor)
        log.info(
            "compiled inference ready for %s (%s, %.1f s, max |diff| vs LightGBM on probe rows %.1e)",
            model_file,
            library.name,
            time.perf_counter() - started,
            worst,
        )

    def library(self, model_file: Path, slot: CompiledSlot | None = None) -> Path:
        """The cached library of `model_file`, compiled first when missing (one compile per key at a time)."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        key = cache_key(model_file)
        library = self.cache_dir / f"{key}.so"
        if library.exists():
            return library
        with self._one_at_a_time, open(self.cache_dir / f"{key}.lock", "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process compiling the same model: wait for its result
            if library.exists():
                return library
            partial = self.cache_dir / f"{key}.{os.getpid()}.{threading.get_ident()}.tmp"
            try:
                self._compile_in_child(model_file, partial, slot)
                os.replace(partial, library)  # atomic: a reader sees the whole library or none
            finally:
                partial.unlink(missing_ok=True)
        return library

    def _compile_in_child(self, model_file: Path, out: Path, slot: CompiledSlot | None) -> None:
        """Run `python -m features.compiled MODEL OUT` (niced) and wait; CompileError with its stderr on failure."""
        command = [sys.executable, "-m", "features.compiled", str(model_file), str(out)]
        with self._lock:
            if self._closed or (slot is not None and slot.cancelled):
                raise CompileError("the compile was stopped before it started")
            root = str(Path(__file__).resolve().parent.parent)  # `features` importable whatever the cwd
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            self._children[id(slot)] = child
        try:
            _, stderr = child.communicate()
        finally:
            with self._lock:
                self._children.pop(id(slot), None)
        if child.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            raise CompileError(f"compiler exited with {child.returncode}: {lines[-1] if lines else 'no message'}")
        if not out.exists():
            raise CompileError("compiler wrote no library")

    def cancel(self, slot: CompiledSlot) -> None:
        """Stop the compile of a bundle that is no longer served (waiting or running); a finished one stays."""
        with self._lock:
            slot.cancelled = True
            child = self._children.get(id(slot))
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()

    def close(self) -> None:
        """Stop the compiles still running (their bundles keep predicting with LightGBM)."""
        with self._lock:
            self._closed = True
            children = list(self._children.values())
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.kill()


def compile_model(model_file: Path, out: Path) -> None:
    """Compile `model_file` with lleaves and write the library to `out` (runs in the child process)."""
    import lleaves

    model = lleaves.Model(model_file=str(model_file))
    model.compile(cache=str(out), **COMPILE_OPTIONS)


def main(argv: list[str]) -> int:
    """`python -m features.compiled MODEL_FILE OUT`: compile, niced, at low priority."""
    if len(argv) != 2:
        print("usage: python -m features.compiled MODEL_FILE OUT", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):
        os.nice(10)
    compile_model(Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
