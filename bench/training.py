"""Training cost: `retryopt train`'s pipeline vs `lightgbm.train` alone, and feature-building scaling.

1. Pipeline vs raw, on ~1,000,000 simulated attempts (~260k invoices, simulated and written to
   Parquet once, outside every timing):
   * pipeline = what `retryopt train --no-mlflow` runs: `load_attempts` (read + validate) then
     `train_model` (retry table + features, time split, LightGBM with early stopping, isotonic
     calibration, test metrics, logistic baseline, bundle), LightGBM pinned to num_threads=1;
   * raw = `lgb.Dataset` + `lgb.train` on the prepared training matrix (the pipeline's own train
     split, saved once as .npy), the same params and seed, num_threads=1, for the pipeline's
     `best_iteration` rounds.
   Each runs in its own child process; its peak memory is that child's ru_maxrss. Target:
   pipeline ≤ 2 × raw.
2. Feature building (`build_training_table`: `retry_training_rows` + `build_retry_features`) at
   ~100k, ~1M and ~3M attempts (~3.85 attempts per invoice), each build in its own child process
   (cold, as in `retryopt train`), the median of repeated builds; µs per attempt and per retry row
   should stay flat if it scales linearly.

    .venv/bin/python bench/training.py                     # 1M pipeline/raw; features at 100k, 1M, 3M
    .venv/bin/python bench/training.py --quick             # 100k pipeline/raw; features at 30k, 100k, 300k
    .venv/bin/python bench/training.py --default-threads   # also the pipeline as shipped (num_threads=0)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# bench/ holds training.py, which must not shadow the `training` package: the repository root goes
# first and bench/ last (for _common).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE), str(_HERE)]

from _common import header, load, p50, peak_rss_mb, run_child, table, timing_wrapper, verdict  # noqa: E402

ATTEMPTS_PER_INVOICE = 3.85
SEED = 7
TARGET = 2.0


def invoices_for(attempts: int) -> int:
    return round(attempts / ATTEMPTS_PER_INVOICE)


def dataset(attempts: int, work: Path) -> tuple[Path, dict[str, Any]]:
    """Simulated attempts of about `attempts` rows as Parquet, made once (not timed) and reused.

    Made in a child process: Linux carries a parent's peak RSS into the ru_maxrss of children it
    spawns later, so this process must stay small for the children's peaks to be their own.
    """
    path = work / f"attempts-{attempts}.parquet"
    facts_path = work / f"attempts-{attempts}.json"
    if not path.exists() or not facts_path.exists():
        start = time.perf_counter()
        facts = run_child(__file__, ["--child", "dataset", "--rounds", str(attempts), "--work", str(work)])
        print(
            f"  simulated {facts['invoices']:,} invoices -> {facts['attempts']:,} attempts in "
            f"{time.perf_counter() - start:.0f} s ({path}, not timed)"
        )
    return path, json.loads(facts_path.read_text())


def child_dataset(attempts: int, work: Path) -> dict[str, Any]:
    """Simulate about `attempts` attempts (seed 7) and write them as Parquet with their counts."""
    from training.data import write_attempts
    from training.simulate import simulate

    work.mkdir(parents=True, exist_ok=True)
    frame = simulate(invoices_for(attempts), seed=SEED).attempts
    write_attempts(frame, work / f"attempts-{attempts}.parquet")
    facts = {"attempts": len(frame), "invoices": int(frame["invoice_id"].nunique())}
    (work / f"attempts-{attempts}.json").write_text(json.dumps(facts))
    return facts


# ----------------------------------------------------------------------------------------------
# Children: each prints one JSON line
# ----------------------------------------------------------------------------------------------
def child_matrix(data: Path, out: Path) -> dict[str, Any]:
    """The pipeline's train split as a float matrix (features, labels), saved for the raw run."""
    from training.data import load_attempts
    from training.train import TrainConfig, build_training_table, time_split

    attempts, _ = load_attempts(data)
    table_ = build_training_table(attempts)
    split = time_split(table_.invoice_first_failure, TrainConfig().split_fractions)
    train = (split == "train").to_numpy()
    np.save(out / "x_train.npy", table_.features[train].to_numpy(dtype=np.float64))
    np.save(out / "y_train.npy", table_.labels[train])
    return {"rows": int(train.sum())}


def child_pipeline(data: Path, threads: int | None) -> dict[str, Any]:
    """load_attempts + train_model (no MLflow), each step timed; ru_maxrss."""
    import training.train as train_module
    from training.data import load_attempts
    from training.train import TrainConfig, train_model

    steps: dict[str, float] = {}

    for name, attr in [
        ("retry table + features (build_training_table)", "build_training_table"),
        ("time split", "time_split"),
        ("LightGBM with early stopping (fit_booster)", "fit_booster"),
        ("isotonic calibration (fit_isotonic)", "fit_isotonic"),
        ("logistic baseline (fit_logistic_baseline)", "fit_logistic_baseline"),
        ("metrics (probability_metrics, metrics_by_group)", "probability_metrics"),
        ("metrics (probability_metrics, metrics_by_group)", "metrics_by_group"),
        ("data summary", "data_summary"),
        ("bundle (save_bundle)", "save_bundle"),
    ]:
        setattr(train_module, attr, timing_wrapper(steps, name, getattr(train_module, attr)))
    base = TrainConfig()
    params = dict(base.params) if threads is None else {**base.params, "num_threads": threads}
    config = TrainConfig(params=params)
    with tempfile.TemporaryDirectory(prefix="retryopt-bench-train-") as out:
        start = time.perf_counter()
        attempts, _ = load_attempts(data)
        loaded = time.perf_counter()
        result = train_model(attempts, Path(out), config)
        end = time.perf_counter()
    steps = {"read + validate (load_attempts)": loaded - start, **steps}
    return {
        "seconds": end - start,
        "steps": steps,
        "best_iteration": int(result.booster.best_iteration),
        # early stopping trains until `early_stopping_rounds` rounds without progress (or the cap)
        "rounds_trained": min(
            int(result.booster.best_iteration) + config.early_stopping_rounds, config.num_boost_round
        ),
        "retries": len(result.table.labels),
        "train_rows": int(result.manifest["split"]["rows"]["train"]),
        "auc": result.manifest["metrics"]["test"]["auc"],
        "peak_rss_mb": peak_rss_mb(),
        "load": load(),
    }


def child_raw(matrix_dir: Path, rounds: int, threads: int) -> dict[str, Any]:
    """lgb.Dataset + lgb.train on the saved train matrix, the pipeline's params, `rounds` rounds."""
    import lightgbm as lgb

    from features.candidates import CATEGORICAL_FEATURES, FEATURE_COLUMNS
    from training.train import TrainConfig

    x = np.load(matrix_dir / "x_train.npy")
    y = np.load(matrix_dir / "y_train.npy")
    config = TrainConfig()
    params = {**config.params, "seed": config.seed, "num_threads": threads}
    start = time.perf_counter()
    train_set = lgb.Dataset(
        x, label=y, feature_name=list(FEATURE_COLUMNS), categorical_feature=list(CATEGORICAL_FEATURES), params=params
    )
    train_set.construct()
    built = time.perf_counter()
    booster = lgb.train(params, train_set, num_boost_round=rounds)
    end = time.perf_counter()
    return {
        "seconds": end - start,
        "dataset_seconds": built - start,
        "train_seconds": end - built,
        "rounds": booster.current_iteration(),
        "rows": int(x.shape[0]),
        "peak_rss_mb": peak_rss_mb(),
        "load": load(),
    }


FEATURE_STAGES = (
    # Patched where they are called (the consumer's namespace), so each stage is timed as used.
    ("retry_training_rows (order, retry rows, customer history)", "training.train", "retry_training_rows"),
    ("  invoice_events (customer history)", "features.candidates", "invoice_events"),
    ("  customer_history (point-in-time counts, funds bracket)", "features.candidates", "customer_history"),
    ("retry_feature_matrix (all features)", "features.candidates", "retry_feature_matrix"),
    ("  context values (card, money, zones, categorical codes)", "features.candidates", "_context_values"),
    ("  history_columns (point-in-time attempt history)", "features.candidates", "history_columns"),
    ("  local_wall_time", "features.candidates", "local_wall_time"),
    ("  calendar_features", "features.candidates", "calendar_features"),
    ("first failure per row (_first_attempt_of)", "training.train", "_first_attempt_of"),
)


def child_features(data: Path, repeats: int) -> dict[str, Any]:
    """build_training_table `repeats` times on one file (read outside the timing), with its main stages."""
    import importlib

    from training.data import load_attempts

    stages: dict[str, float] = {}

    for name, module_name, attr in FEATURE_STAGES:
        module = importlib.import_module(module_name)
        setattr(module, attr, timing_wrapper(stages, name, getattr(module, attr)))
    from training.train import build_training_table

    attempts, _ = load_attempts(data)
    runs = []
    retries = 0
    for _ in range(repeats):
        stages.clear()
        start = time.perf_counter()
        table_ = build_training_table(attempts)
        runs.append({"seconds": time.perf_counter() - start, "stages": dict(stages)})
        retries = len(table_.labels)
        del table_
    return {
        "attempts": len(attempts),
        "retries": retries,
        "seconds": [r["seconds"] for r in runs],
        "stages": sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]["stages"],
        "peak_rss_mb": peak_rss_mb(),
        "load": load(),
    }


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=1_000_000, help="size of the pipeline/raw comparison")
    parser.add_argument("--feature-sizes", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="pipeline/raw runs each (median)")
    parser.add_argument("--quick", action="store_true", help="100k pipeline/raw; features at 30k, 100k, 300k")
    parser.add_argument("--default-threads", action="store_true", help="also the pipeline as shipped (num_threads=0)")
    parser.add_argument("--skip-features", action="store_true")
    parser.add_argument("--skip-pipeline", action="store_true", help="feature building only")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "retryopt-bench" / "training")
    parser.add_argument("--child", choices=["dataset", "matrix", "pipeline", "raw", "features"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "dataset":
        print(json.dumps(child_dataset(args.rounds, args.work)))
        return
    if args.child == "matrix":
        print(json.dumps(child_matrix(args.data, args.work)))
        return
    if args.child == "pipeline":
        print(json.dumps(child_pipeline(args.data, None if args.threads < 0 else args.threads)))
        return
    if args.child == "raw":
        print(json.dumps(child_raw(args.work, args.rounds, args.threads)))
        return
    if args.child == "features":
        print(json.dumps(child_features(args.data, args.repeats)))
        return

    size = 100_000 if args.quick else args.attempts
    feature_sizes = [30_000, 100_000, 300_000] if args.quick else args.feature_sizes
    repeats = 1 if args.quick else max(args.repeats, 1)
    header(
        "training: retryopt train's pipeline vs lightgbm.train alone; feature building at 3 sizes",
        [
            f"pipeline = load_attempts + train_model (no MLflow), num_threads=1, on ~{size:,} attempts",
            "raw = lgb.Dataset + lgb.train on the pipeline's train-split matrix, same params/seed, num_threads=1, "
            "best_iteration rounds",
            f"each measurement in its own child process (peak memory = its ru_maxrss); median of {repeats} run(s); "
            f"target pipeline <= {TARGET:.0f}x raw",
        ],
    )
    script = __file__
    work = args.work
    if not args.skip_pipeline:
        data, facts = dataset(size, work)
        matrix_dir = work / f"matrix-{size}"
        if not (matrix_dir / "x_train.npy").exists():
            matrix_dir.mkdir(parents=True, exist_ok=True)
            run_child(script, ["--child", "matrix", "--data", str(data), "--work", str(matrix_dir)])

        pipelines, raws = [], []
        for _ in range(repeats):
            pipelines.append(run_child(script, ["--child", "pipeline", "--data", str(data), "--threads", "1"]))
            rounds = pipelines[-1]["best_iteration"]
            raws.append(
                run_child(
                    script, ["--child", "raw", "--work", str(matrix_dir), "--rounds", str(rounds), "--threads", "1"]
                )
            )
        pipe = min(pipelines, key=lambda r: abs(r["seconds"] - p50([p["seconds"] for p in pipelines])))
        raw = min(raws, key=lambda r: abs(r["seconds"] - p50([p["seconds"] for p in raws])))
        pipe_s = p50([p["seconds"] for p in pipelines])
        raw_s = p50([r["seconds"] for r in raws])
        print(
            f"\n1. pipeline vs raw — {facts['attempts']:,} attempts, {facts['invoices']:,} invoices -> "
            f"{pipe['retries']:,} retry rows, {pipe['train_rows']:,} in the train split; best_iteration "
            f"{pipe['best_iteration']} (the pipeline boosts {pipe['rounds_trained']} rounds: early stopping waits "
            f"{pipe['rounds_trained'] - pipe['best_iteration']} more); "
            f"holdout AUC {pipe['auc']:.4f}"
        )
        rows = [
            [
                "pipeline (num_threads=1)",
                f"{pipe_s:.1f}",
                " / ".join(f"{p['seconds']:.1f}" for p in pipelines),
                f"{pipe['peak_rss_mb']:,.0f}",
                " | ".join(p["load"] for p in pipelines),
            ],
            [
                f"raw lgb.Dataset + lgb.train ({raw['rounds']} rounds)",
                f"{raw_s:.1f}",
                " / ".join(f"{r['seconds']:.1f}" for r in raws),
                f"{raw['peak_rss_mb']:,.0f}",
                " | ".join(r["load"] for r in raws),
            ],
        ]
        defaults = None
        if args.default_threads:
            defaults = run_child(script, ["--child", "pipeline", "--data", str(data), "--threads", "-1"])
            rows.append(
                [
                    "pipeline as shipped (num_threads=0, all cores)",
                    f"{defaults['seconds']:.1f}",
                    f"{defaults['seconds']:.1f}",
                    f"{defaults['peak_rss_mb']:,.0f}",
                    defaults["load"],
                ]
            )
        table(rows, ["run", "seconds (median)", "runs", "peak RSS MB", "load after each"])
        ratio = pipe_s / raw_s
        print(f"    ratio pipeline / raw: {ratio:.2f}x — target <= {TARGET:.0f}x: {verdict(ratio <= TARGET)}")
        print(
            f"    raw split: Dataset construction {raw['dataset_seconds']:.1f} s, boosting {raw['train_seconds']:.1f} s "
            f"({raw['rows']:,} rows)"
        )
        print(f"    pipeline steps (the median run, {pipe['seconds']:.1f} s):")
        listed = sum(pipe["steps"].values())
        step_rows = [[name, f"{s:.1f}", f"{s / pipe['seconds']:.1%}"] for name, s in pipe["steps"].items()]
        step_rows.append(
            [
                "other (booster.predict on calibration/test, splits, manifest)",
                f"{pipe['seconds'] - listed:.1f}",
                f"{(pipe['seconds'] - listed) / pipe['seconds']:.1%}",
            ]
        )
        table(step_rows, ["step", "seconds", "share"])

    if args.skip_features:
        return
    print("\n2. feature building (build_training_table) by size, each in its own child process")
    feature_rows = []
    per_attempt = []
    stage_rows: dict[str, list[str]] = {name: [name] for name, _, _ in FEATURE_STAGES}
    stage_rows["rest (labels, categories, frame assembly)"] = ["rest (labels, categories, frame assembly)"]
    for target in feature_sizes:
        path, _ = dataset(target, work)
        reps = repeats if target <= 1_000_000 else max(1, min(repeats, 2))
        # One build per child, as `retryopt train` builds once per process: repeated builds in one
        # process reuse the feature library's memo of distinct codes, which flatters small sizes.
        children = [
            run_child(script, ["--child", "features", "--data", str(path), "--repeats", "1"]) for _ in range(reps)
        ]
        seconds = p50([c["seconds"][0] for c in children])
        r = {
            **min(children, key=lambda c: abs(c["seconds"][0] - seconds)),  # the median run's stages
            "seconds": [c["seconds"][0] for c in children],
            "peak_rss_mb": max(c["peak_rss_mb"] for c in children),
        }
        per_attempt.append(seconds / r["attempts"] * 1e6)
        for name, _, _ in FEATURE_STAGES:
            stage_rows[name].append(f"{r['stages'].get(name, 0.0) / r['attempts'] * 1e6:.2f}")
        top_level = sum(v for k, v in r["stages"].items() if not k.startswith(" "))  # indented: inside another
        rest = min(r["seconds"], key=lambda x: abs(x - seconds)) - top_level
        stage_rows["rest (labels, categories, frame assembly)"].append(f"{rest / r['attempts'] * 1e6:.2f}")
        feature_rows.append(
            [
                f"{r['attempts']:,}",
                f"{r['retries']:,}",
                f"{seconds:.2f}",
                " / ".join(f"{s:.2f}" for s in r["seconds"]),
                f"{seconds / r['attempts'] * 1e6:.2f}",
                f"{seconds / r['retries'] * 1e6:.2f}",
                f"{r['peak_rss_mb']:,.0f}",
                r["load"],
            ]
        )
    table(
        feature_rows,
        [
            "attempts",
            "retry rows",
            "seconds (median)",
            "runs",
            "us/attempt",
            "us/retry row",
            "peak RSS MB",
            "load after",
        ],
    )
    print("    us per attempt by stage (the median run at each size):")
    table(list(stage_rows.values()), ["stage", *(f"{size:,}" for size in feature_sizes)])
    spread = max(per_attempt) / min(per_attempt)
    print(
        f"    per-attempt cost largest/smallest across sizes: {spread:.2f}x "
        f"({'linear within noise' if spread <= 1.3 else 'NOT linear'}: <= 1.3x counts as linear)"
    )
    # Time ~ n^b between the smallest and largest size (b = 1: linear; a sort's n log n is ~1.08 here).
    sizes = [int(row[0].replace(",", "")) for row in feature_rows]
    b = np.log(per_attempt[-1] * sizes[-1] / (per_attempt[0] * sizes[0])) / np.log(sizes[-1] / sizes[0])
    print(f"    growth exponent b in time ~ n^b, {sizes[0]:,} -> {sizes[-1]:,} attempts: {b:.3f}")


if __name__ == "__main__":
    main()
