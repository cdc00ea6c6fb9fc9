"""Shared helpers of the performance benchmarks (not a benchmark itself).

Percentiles, the machine/load header, the contract's example request, simulated decision
requests, a `retryopt serve` subprocess on a free loopback port, and a capturing Scorer that
hands back the exact candidate matrix a decision scored.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving.schemas import DECISION_EXAMPLE

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# shared/contract.md §2, the example of `POST /v1/retry-decisions` (14-day window, 4 retries).
EXAMPLE_REQUEST: dict[str, Any] = copy.deepcopy(DECISION_EXAMPLE)


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------
def load() -> str:
    """The 1/5/15-minute load averages, as text for a report line."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}/{five:.2f}/{fifteen:.2f}"


def pct(values: list[float] | np.ndarray, q: float) -> float:
    """The q-th percentile (linear interpolation)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def p50(values: list[float] | np.ndarray) -> float:
    """The median."""
    return pct(values, 50)


def p99(values: list[float] | np.ndarray) -> float:
    """The 99th percentile."""
    return pct(values, 99)


def peak_rss_mb() -> float:
    """This process's peak resident memory (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def verdict(ok: bool) -> str:
    """MET / MISSED for a target line."""
    return "MET" if ok else "MISSED"


def machine() -> dict[str, Any]:
    """nproc, memory, CPU model and the current load."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "cpu": model,
        "python": platform.python_version(),
        "load": load(),
    }


def header(title: str, compares: list[str]) -> None:
    """The block every script prints first: what is compared, on what machine, under what load."""
    info = machine()
    print("=" * 100)
    print(title)
    for line in compares:
        print(f"  {line}")
    print(
        f"  machine: {info['nproc']} cores, {info['memory_gib']} GiB, {info['cpu']}, Python {info['python']}; "
        f"load (1/5/15 min) at start: {info['load']}"
    )
    print("=" * 100)


def table(rows: list[list[Any]], headings: list[str]) -> None:
    """A plain fixed-width table."""
    text = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headings)]
    print("  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in text:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


# ----------------------------------------------------------------------------------------------
# Requests
# ----------------------------------------------------------------------------------------------
def _iso(at: Any) -> str:
    """A UTC timestamp in the contract's form."""
    return at.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any) -> str | None:
    """A string column value, None when missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value)
    return None if text in {"", "nan", "<NA>", "None"} else text


def simulated_requests(n: int, seed: int = 2027, window_days: int = 14, max_retries: int = 4) -> list[dict[str, Any]]:
    """`n` decision requests from simulated failed invoices: varied decline codes, countries, cards and histories.

    Each invoice's failed attempts before its first success are cut at a random length (1 … all);
    `now` is 5 minutes after the last kept attempt, the window 14 days from the first failure.
    """
    import pandas as pd

    from training.simulate import simulate

    rng = np.random.default_rng(seed)
    attempts = simulate(int(n * 1.4) + 200, seed=seed).attempts
    attempts = attempts.sort_values(["invoice_id", "attempted_at"], kind="stable")
    attempts = attempts[~attempts.groupby("invoice_id")["succeeded"].cummax()]  # failures before any success
    out: list[dict[str, Any]] = []
    for _, rows in attempts.groupby("invoice_id", sort=False):
        if len(out) >= n:
            break
        # Only the attempts that leave time in the window (a request after window_end is a 422).
        rows = rows[rows["attempted_at"] < rows["attempted_at"].iloc[0] + pd.Timedelta(days=window_days - 1)]
        keep = rows.iloc[: int(rng.integers(1, len(rows) + 1))]
        first, last = keep.iloc[0], keep.iloc[-1]
        created = first["customer_created_at"]
        # Short ids of our own: the simulator's hex ids can hold 13+ digit runs that the API's
        # card-number (PAN) check rightly refuses.
        number = len(out)
        out.append(
            {
                "invoice_id": f"in_bench_{number}",
                "customer_id": f"cus_bench_{number}",
                "amount": int(first["amount"]),
                "currency": str(first["currency"]),
                "card": {
                    "brand": str(first["card_brand"]),
                    "funding": _text(first["card_funding"]),
                    "country": _text(first["card_country"]),
                    "exp_month": int(first["card_exp_month"]),
                    "exp_year": int(first["card_exp_year"]),
                    "fingerprint": f"fp_bench_{number}",
                },
                "customer_timezone": _text(first["customer_timezone"]),
                "attempts": [
                    {
                        "attempt_id": f"in_bench_{number}_a{k}",
                        "attempted_at": _iso(a.attempted_at),
                        "decline_code": str(a.decline_code),
                        "network_decline_code": _text(a.network_decline_code),
                        "merchant_advice_code": _text(a.merchant_advice_code),
                    }
                    for k, a in enumerate(keep.itertuples(), start=1)
                ],
                "now": _iso(last["attempted_at"] + pd.Timedelta(minutes=5)),
                "window_end": _iso(first["attempted_at"] + pd.Timedelta(days=window_days)),
                "max_retries": max_retries,
                "billing_interval": _text(first["billing_interval"]),
                "customer_created_at": _iso(created) if not pd.isna(created) else None,
            }
        )
    if len(out) < n:
        raise RuntimeError(f"the simulation gave only {len(out)} failed invoices, {n} wanted")
    return out


@dataclass
class CapturingScorer:
    """The served BundleScorer, keeping the feature frames the policy hands it (the stacked k × slots rows)."""

    inner: Any
    scored: list[Any] = field(default_factory=list)

    @property
    def model_version(self) -> str:
        return str(self.inner.model_version)

    def score(self, slots: Any, features: Any) -> Any:
        self.scored.append(features)
        return self.inner.score(slots, features)

    def contributions(self, features: Any) -> Any:
        return self.inner.contributions(features)


def served_bundle(compiled: bool = True) -> Any:
    """The shipped bundle as the service scores with it: with its compiled predictor in place
    (compiled into the service's cache first when missing; the bench waits, serving does not),
    or LightGBM only (`compiled=False`)."""
    from features.bundle import load_bundle

    bundle = load_bundle(REPO / "models" / "default")
    if compiled:
        bundle.compile_now()
        if bundle.compiled.predictor is None:
            raise RuntimeError(f"compiled inference {bundle.compiled.state}: {bundle.compiled.detail}")
    return bundle


# ----------------------------------------------------------------------------------------------
# The server
# ----------------------------------------------------------------------------------------------
def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running `retryopt serve` subprocess."""

    url: str
    pid: int
    workdir: Path
    log: Path


@contextmanager
def serve(startup_timeout: float = 90.0, compile_timeout: float = 600.0) -> Iterator[Server]:
    """`retryopt serve` (uvicorn, default settings) on a free loopback port, a scratch SQLite store.

    The shipped model (`models/default`) is served. Nothing is timed before its compiled inference
    is ready (/readyz `compiled_inference`: a cached library loads in well under a second).
    Stopped (SIGTERM, then SIGKILL) on exit.
    """
    import httpx

    workdir = Path(tempfile.mkdtemp(prefix="retryopt-bench-serve-"))
    port = free_port()
    env = {
        **os.environ,
        "RETRYOPT_DATABASE_URL": f"sqlite:///{workdir / 'store.db'}",
        "RETRYOPT_LOG_LEVEL": "WARNING",
    }
    log = workdir / "server.log"
    command = [str(BIN / "retryopt"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"retryopt serve exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"retryopt serve not ready after {startup_timeout:.0f} s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        # The service starts in fallback mode (rules + fixed schedule) when the model cannot load:
        # make sure the shipped model is what answers.
        from features.bundle import load_bundle

        expected = load_bundle(REPO / "models" / "default").model_version
        served = httpx.post(f"{url}/v1/retry-decisions", json=EXAMPLE_REQUEST, timeout=30.0)
        if served.status_code != 200 or served.json().get("model_version") != expected:
            raise RuntimeError(f"the server does not serve {expected}: {served.status_code} {served.text[:500]}")
        deadline = time.monotonic() + compile_timeout
        while (state := httpx.get(f"{url}/readyz", timeout=5.0).json().get("compiled_inference")) == "compiling":
            if time.monotonic() > deadline:
                raise RuntimeError(f"compiled inference not ready after {compile_timeout:.0f} s")
            time.sleep(0.2)
        if state != "ready":
            print(f"  ! the server predicts with LightGBM: compiled_inference is {state!r}")
        yield Server(url=url, pid=process.pid, workdir=workdir, log=log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


class RssSampler:
    """Peak RSS of one process, sampled every `interval` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import threading

        import psutil

        self._process = psutil.Process(pid)
        self._interval = interval
        self._done = threading.Event()
        self.peak = 0
        self.start_rss = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._done.is_set():
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self._interval)

    def stop(self) -> int:
        """Stop sampling; the peak in bytes."""
        self._done.set()
        self._thread.join()
        return self.peak


def run_child(script: str, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python script args` in a fresh process that prints one JSON line last; that line, parsed."""
    command = [sys.executable, script, *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def timing_wrapper(totals: dict[str, float], name: str, function: Any) -> Any:
    """`function`, adding the wall time of every call to `totals[name]` (to time stages inside a run)."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

    return timed
