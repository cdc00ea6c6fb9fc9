"""Wall time and peak memory of training: single-process `train_model` vs Dask `LocalCluster`.

For each size, simulated attempts are written first (not timed) as one Parquet file for the
single-process run and as time-ordered Parquet files ("daily exports", invoices spanning files)
for the Dask run, which therefore includes the shuffle by invoice (`dask-hashed` reads files
already hashed by invoice instead and skips it). Each run happens in a fresh
child process; its peak memory is the largest sum of RSS over the child and all its descendants
(the Dask scheduler, nannies and workers), sampled every 0.2 s.

    .venv/bin/python bench/train_scaling.py --attempts 1000000 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ATTEMPTS_PER_INVOICE = 3.75  # what the simulator produces on average
ATTEMPTS_PER_FILE = 100_000
SEED = 7
# Task name → environment overrides for its process. `single` is `train_model` as shipped
# (LightGBM on every core); `single-1thread` shows what OpenMP contention costs on a busy box;
# `dask` reads time-ordered files and shuffles; `dask-hashed` reads invoice-hashed files, no shuffle.
TASKS: dict[str, dict[str, str]] = {
    "single": {},
    "single-1thread": {"OMP_NUM_THREADS": "1"},
    "dask": {},
    "dask-hashed": {},
}


def invoices_for(attempts: int) -> int:
    """Simulated invoices that give about `attempts` attempts."""
    return round(attempts / ATTEMPTS_PER_INVOICE)


def prepare(attempts: int, work: Path) -> dict[str, Any]:
    """Simulate and write both layouts for one size (skipped when already on disk)."""
    import numpy as np

    from training.data import write_attempts
    from training.distributed import write_customer_partitions
    from training.simulate import simulate

    single, parts, hashed = work / "attempts.parquet", work / "daily", work / "hashed"
    if single.exists() and parts.exists() and hashed.exists():
        return json.loads((work / "prepared.json").read_text())
    frame = simulate(invoices_for(attempts), seed=SEED).attempts
    write_attempts(frame, single)
    ordered = frame.sort_values("attempted_at", kind="stable")
    files = max(1, round(len(ordered) / ATTEMPTS_PER_FILE))
    for index, rows in enumerate(np.array_split(np.arange(len(ordered)), files)):
        write_attempts(ordered.iloc[rows], parts / f"day-{index:04d}.parquet")
    # The same attempts as files hashed by invoice: the layout that lets Dask skip the shuffle.
    write_customer_partitions(frame, hashed, files)
    facts = {"attempts": len(frame), "invoices": int(frame["invoice_id"].nunique()), "files": files}
    (work / "prepared.json").write_text(json.dumps(facts))
    return facts


def run_single(work: Path) -> dict[str, Any]:
    """Load, validate and `train_model` in this process."""
    from training.data import load_attempts
    from training.train import train_model

    start = time.perf_counter()
    attempts, _ = load_attempts(work / "attempts.parquet")
    result = train_model(attempts, work / "model-single")
    return _facts(result.manifest, time.perf_counter() - start, cluster_seconds=0.0)


def run_dask(work: Path, invoice_partitioned: bool = False) -> dict[str, Any]:
    """Start a 2-worker LocalCluster and `train_distributed` on the daily (or invoice-hashed) files."""
    from training.distributed import connect, train_distributed

    data = work / ("hashed" if invoice_partitioned else "daily")
    start = time.perf_counter()
    with connect("local") as client:
        ready = time.perf_counter()
        result = train_distributed(data, work / "model-dask", client, invoice_partitioned=invoice_partitioned)
        end = time.perf_counter()
    return _facts(result.manifest, end - start, cluster_seconds=ready - start)


def _facts(manifest: dict[str, Any], seconds: float, cluster_seconds: float) -> dict[str, Any]:
    """What a run reports back to the parent."""
    return {
        "seconds": round(seconds, 1),
        "cluster_start_seconds": round(cluster_seconds, 1),
        "auc": round(manifest["metrics"]["test"]["auc"], 4),
        "best_iteration": manifest["training"]["best_iteration"],
        "retries": manifest["data_summary"]["retries"],
    }


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:  # a worker that just exited
            continue
    return total


def run_task(task: str, work: Path) -> dict[str, Any]:
    """Run one benchmark task in this process."""
    if task.startswith("single"):
        return run_single(work)
    return run_dask(work, invoice_partitioned=task == "dask-hashed")


def measure(task: str, work: Path) -> dict[str, Any]:
    """Run `task` in a child process; its report plus peak tree memory and the load around it."""
    command = [sys.executable, __file__, "--child", task, "--work", str(work)]
    report_file = work / f"{task}.json"
    report_file.unlink(missing_ok=True)
    load_before = os.getloadavg()[0]
    env = {**os.environ, **TASKS[task]}
    # Output goes nowhere: LightGBM's workers print their network set-up to stdout.
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    watched = psutil.Process(child.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(watched))
            except psutil.Error:
                return
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    child.wait()
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"{task} failed with exit code {child.returncode}")
    report = json.loads(report_file.read_text())
    return {**report, "peak_rss_gib": round(peak / 2**30, 2), "load_before": round(load_before, 2)}


def main() -> None:
    """Prepare each size, then time both trainers on it and print one line per run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--work", type=Path, default=Path("build/bench"))
    parser.add_argument("--only", choices=list(TASKS), nargs="+", default=["single", "dask"])
    parser.add_argument("--child", choices=["prepare", *TASKS], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "prepare":
        prepare(args.attempts[0], args.work)
        return
    if args.child:
        report = run_task(args.child, args.work)
        (args.work / f"{args.child}.json").write_text(json.dumps(report))
        return
    print(f"cores: {os.cpu_count()}, memory: {psutil.virtual_memory().total / 2**30:.1f} GiB", flush=True)
    for attempts in args.attempts:
        work = args.work / str(attempts)
        work.mkdir(parents=True, exist_ok=True)
        prepare_command = [
            sys.executable,
            __file__,
            "--child",
            "prepare",
            "--work",
            str(work),
            "--attempts",
            str(attempts),
        ]
        subprocess.run(prepare_command, check=True)
        facts = json.loads((work / "prepared.json").read_text())
        for task in args.only:
            result = measure(task, work)
            print(json.dumps({"task": task, **facts, **result}), flush=True)


if __name__ == "__main__":
    main()
