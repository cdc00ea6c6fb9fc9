"""Model size against quality: the shipped LightGBM configuration vs cheaper ones, in one run.

Issue #6 item 5. Each decision pays for LightGBM `pred_contrib` (TreeSHAP, for the reasons) on the
chosen slot; its cost grows with trees × leaves × depth², and the shipped model's trees grow to a
depth of ~20 (leaf-wise, `num_leaves` 63, no depth cap). This script trains the current
configuration and cheaper variants on the same simulated data through the project's own
`train_model` (same split, calibration and metrics), then, side by side:

- quality: held-out AUC, log loss and ECE (`train_model`'s test metrics), and the learned policy's
  uplift capture in the closed-loop evaluation (`training.evaluate.run_evaluation`, one held-out
  world and the same dice for every variant; the fixed schedules and the oracle run once, the
  learned policy once per variant; capture = (learned − best fixed) / (oracle − best fixed), the
  formula of `uplift_capture`), with a paired bootstrap over invoices for its noise;
- cost: trees, leaves, depth, model file size, `Bundle.raw_probability` of the contract example's
  1,252-row candidate matrix, and `Bundle.contributions` (`pred_contrib`) of 1 and of 100 of
  those rows. LightGBM runs on one thread everywhere; the timing loop rotates through the
  variants (a different one goes first each round), so load from other jobs hits them alike.

    .venv/bin/python bench/model_size.py                        # 300,000 invoices, 3,000 eval invoices
    .venv/bin/python bench/model_size.py --invoices 60000 --eval-invoices 300 --repeats 20   # smoke run
    .venv/bin/python bench/model_size.py --reuse-bundles --eval-invoices 0 --repeats 300     # re-time the bundles

Simulated data and the trained bundles are kept in `--work` (default /tmp/retryopt-bench/model_size);
a second run reuses the data (not the bundles: training is part of what is reported).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# bench/ holds training.py, which must not shadow the `training` package: the repository root goes
# first and bench/ last (for _common).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE), str(_HERE)]

from _common import EXAMPLE_REQUEST, REPO, CapturingScorer, header, load, p50, table  # noqa: E402

MS = 1000.0
# LightGBM parameters each variant sets on top of `TrainConfig().params` (plus num_threads=1).
VARIANTS: dict[str, dict[str, Any]] = {
    "current": {},
    "depth10": {"max_depth": 10},
    "depth8": {"max_depth": 8},
    "depth6": {"max_depth": 6},
    "leaves31": {"num_leaves": 31},
    "depth8-leaves31": {"max_depth": 8, "num_leaves": 31},
}
DEFAULT_VARIANTS = ("current", "depth8", "depth6", "leaves31")


# ----------------------------------------------------------------------------------------------
# Data and training
# ----------------------------------------------------------------------------------------------
def attempts_file(invoices: int, seed: int, work: Path) -> Path:
    """Simulated attempts of `invoices` invoices as Parquet (made once, not timed)."""
    from training.data import write_attempts
    from training.simulate import simulate

    path = work / f"attempts-{invoices}-seed{seed}.parquet"
    if not path.exists():
        started = time.perf_counter()
        work.mkdir(parents=True, exist_ok=True)
        write_attempts(simulate(invoices, seed).attempts, path)
        print(f"  simulated {invoices:,} invoices (seed {seed}) in {time.perf_counter() - started:.0f} s → {path}")
    return path


def tree_shape(booster: Any) -> dict[str, float]:
    """Trees, mean/max leaves and mean/max leaf depth of a booster (from its JSON dump)."""
    leaves, depths = [], []

    def walk(node: dict[str, Any], depth: int, out: list[int]) -> None:
        if "leaf_index" in node or "left_child" not in node:
            out.append(depth)
            return
        walk(node["left_child"], depth + 1, out)
        walk(node["right_child"], depth + 1, out)

    for tree in booster.dump_model()["tree_info"]:
        tree_depths: list[int] = []
        walk(tree["tree_structure"], 0, tree_depths)
        leaves.append(len(tree_depths))
        depths.append(max(tree_depths))
    return {
        "trees": float(booster.num_trees()),
        "leaves_mean": float(np.mean(leaves)),
        "leaves_max": float(np.max(leaves)),
        "depth_mean": float(np.mean(depths)),
        "depth_max": float(np.max(depths)),
    }


def bundle_facts(name: str, bundle_dir: Path) -> dict[str, Any]:
    """What `train_variants` reports, read back from a bundle it wrote (for --reuse-bundles)."""
    from features.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    test = bundle.manifest["metrics"]["test"]
    return {
        "params": VARIANTS[name],
        "bundle": str(bundle_dir),
        "train_seconds": float("nan"),
        "best_iteration": int(bundle.manifest["training"]["best_iteration"]),
        "auc": test["auc"],
        "log_loss": test["log_loss"],
        "ece": test["ece"],
        "test_rows": int(test["rows"]),
        "model_kb": (bundle_dir / "model.txt").stat().st_size / 1024,
        **tree_shape(bundle.booster),
    }


def train_variants(names: list[str], data: Path, seed: int, work: Path, reuse: bool) -> dict[str, dict[str, Any]]:
    """`train_model` once per variant on the same attempts; bundles under work/bundles/<name>."""
    from training.data import load_attempts
    from training.train import TrainConfig, train_model

    if reuse and all((work / "bundles" / n / "model.txt").exists() for n in names):
        print("  reusing the bundles of an earlier run (no training)")
        return {n: bundle_facts(n, work / "bundles" / n) for n in names}

    attempts, _ = load_attempts(data)
    print(f"  {len(attempts):,} attempts, {attempts['invoice_id'].nunique():,} invoices (load {load()})")
    base = TrainConfig(seed=seed)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        params = {**base.params, "num_threads": 1, **VARIANTS[name]}
        config = TrainConfig(seed=seed, params=params)
        started = time.perf_counter()
        result = train_model(attempts, work / "bundles" / name, config)
        seconds = time.perf_counter() - started
        test = result.manifest["metrics"]["test"]
        out[name] = {
            "params": VARIANTS[name],
            "bundle": str(result.bundle_dir),
            "train_seconds": seconds,
            "best_iteration": int(result.booster.best_iteration),
            "auc": test["auc"],
            "log_loss": test["log_loss"],
            "ece": test["ece"],
            "test_rows": int(test["rows"]),
            "model_kb": (result.bundle_dir / "model.txt").stat().st_size / 1024,
            **tree_shape(result.booster),
        }
        print(
            f"  trained {name:<16} {out[name]['trees']:.0f} trees, AUC {test['auc']:.4f}, ECE {test['ece']:.4f}, "
            f"{seconds:.0f} s (load {load()})"
        )
        del result
    return out


# ----------------------------------------------------------------------------------------------
# Cost of the model calls
# ----------------------------------------------------------------------------------------------
def example_matrix() -> np.ndarray:
    """The stacked candidate matrix `decide` scores for the contract's example request."""
    from features.bundle import load_bundle
    from features.candidates import FEATURE_COLUMNS
    from serving.policy.decision import decide
    from serving.policy.scoring import BundleScorer
    from serving.schemas import DecisionRequest
    from serving.settings import Settings

    request = DecisionRequest.model_validate_json(json.dumps(EXAMPLE_REQUEST))
    capture = CapturingScorer(BundleScorer(load_bundle(REPO / "models" / "default")))
    decide(request, capture, Settings(), datetime.now(UTC))  # type: ignore[arg-type]
    frame = capture.scored[0]
    return np.ascontiguousarray(frame.loc[:, list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64))


def time_calls(
    bundles: dict[str, Any], matrix: np.ndarray, repeats: int, repeats_100: int
) -> dict[str, dict[str, float]]:
    """p50 ms of predict (all rows), pred_contrib (1 row, 100 rows) per bundle, rotating the order."""
    one = matrix[:1]
    hundred = matrix[:: max(1, len(matrix) // 100)][:100]
    names = list(bundles)
    times: dict[str, dict[str, list[float]]] = {n: {"predict": [], "contrib_1": [], "contrib_100": []} for n in names}
    for name in names:  # warm-up
        bundles[name].raw_probability(matrix)
        bundles[name].contributions(hundred)
    for i in range(max(repeats, repeats_100)):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            bundle = bundles[name]
            if i < repeats:
                t0 = time.perf_counter()
                bundle.raw_probability(matrix)
                t1 = time.perf_counter()
                bundle.contributions(one)
                t2 = time.perf_counter()
                times[name]["predict"].append(t1 - t0)
                times[name]["contrib_1"].append(t2 - t1)
            if i < repeats_100:
                t0 = time.perf_counter()
                bundle.contributions(hundred)
                times[name]["contrib_100"].append(time.perf_counter() - t0)
    return {n: {k: p50(v) * MS for k, v in t.items()} for n, t in times.items()}


# ----------------------------------------------------------------------------------------------
# Closed-loop quality
# ----------------------------------------------------------------------------------------------
def evaluate_variants(
    bundles: dict[str, str], invoices: int, seed: int, bootstrap: int
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Learned policy's recovery and uplift capture per variant, on one held-out world and its dice."""
    from training.evaluate import FIXED_POLICIES, EvaluationConfig, run_evaluation

    config = EvaluationConfig(invoices=invoices, seed=seed)
    first = next(iter(bundles.values()))
    started = time.perf_counter()
    reference = run_evaluation(Path(first), config, policies=[*FIXED_POLICIES, "oracle"])
    rows = reference.per_invoice
    ids = rows.loc[rows["policy"] == "oracle", "invoice_id"].to_numpy()
    recovered = {p: rows.loc[rows["policy"] == p, "recovered"].to_numpy(bool) for p in (*FIXED_POLICIES, "oracle")}
    rates = {p: float(r.mean()) for p, r in recovered.items()}
    print(
        f"  fixed schedules + oracle on {invoices:,} invoices: {time.perf_counter() - started:.0f} s; "
        f"best fixed {max(rates[p] for p in FIXED_POLICIES):.1%}, oracle {rates['oracle']:.1%} (load {load()})"
    )
    learned: dict[str, np.ndarray] = {}
    out: dict[str, dict[str, float]] = {}
    for name, bundle in bundles.items():
        result = run_evaluation(Path(bundle), config, policies=["learned"])
        row = result.per_invoice
        if not np.array_equal(row["invoice_id"].to_numpy(), ids):
            raise RuntimeError("the held-out world differs between evaluation calls")
        learned[name] = row["recovered"].to_numpy(bool)
        seconds = float(result.table["seconds"].iloc[0])
        out[name] = {"recovery_rate": float(learned[name].mean()), "eval_seconds": seconds}
        print(f"  learned with {name:<16} recovery {learned[name].mean():.1%}, {seconds:.0f} s (load {load()})")

    # Capture as `uplift_capture` computes it, and its paired bootstrap over invoices.
    fixed = np.vstack([recovered[p] for p in FIXED_POLICIES]).astype(np.float64)
    oracle = recovered["oracle"].astype(np.float64)
    names = list(learned)
    mine = np.vstack([learned[n] for n in names]).astype(np.float64)

    def capture(weights: np.ndarray) -> np.ndarray:  # weights (B, n) → capture (B, variants)
        total = weights.sum(axis=1, keepdims=True)
        best = (weights @ fixed.T / total).max(axis=1, keepdims=True)
        return (weights @ mine.T / total - best) / (weights @ oracle[:, None] / total - best)

    n = len(ids)
    point = capture(np.ones((1, n)))[0]
    rng = np.random.default_rng(seed)
    draws = np.vstack(
        [capture(rng.multinomial(n, np.full(n, 1 / n), size=min(250, bootstrap - b))) for b in range(0, bootstrap, 250)]
    )
    base = names.index("current") if "current" in names else 0
    for j, name in enumerate(names):
        diff = draws[:, j] - draws[:, base]
        out[name].update(
            {
                "capture": float(point[j]),
                "capture_se": float(draws[:, j].std(ddof=1)),
                "delta_capture": float(point[j] - point[base]),
                "delta_capture_se": float(diff.std(ddof=1)),
                "changed_invoices": float((learned[name] != learned[names[base]]).sum()),
            }
        )
    summary = {
        "invoices": float(n),
        "best_fixed_rate": max(rates[p] for p in FIXED_POLICIES),
        "oracle_rate": rates["oracle"],
    }
    return out, summary


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=300_000, help="simulated training invoices")
    parser.add_argument("--seed", type=int, default=7, help="simulation and training seed")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--eval-invoices", type=int, default=3000, help="held-out invoices (0: no evaluation)")
    parser.add_argument("--eval-seed", type=int, default=2026)
    parser.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap draws for capture noise")
    parser.add_argument("--repeats", type=int, default=150, help="timed rounds of predict and 1-row pred_contrib")
    parser.add_argument("--repeats-100", type=int, default=20, help="timed rounds of 100-row pred_contrib")
    parser.add_argument(
        "--reuse-bundles", action="store_true", help="skip training when work/bundles/<variant> exist (re-time)"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/retryopt-bench/model_size"))
    args = parser.parse_args()
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    header(
        "Model size against quality (issue #6 item 5): LightGBM configurations trained by train_model",
        [
            "variants: " + ", ".join(f"{n} {VARIANTS[n] or '(TrainConfig defaults)'}" for n in names),
            f"training: {args.invoices:,} simulated invoices, seed {args.seed}, num_threads=1",
            "cost: Bundle.raw_probability of the example's candidate matrix, Bundle.contributions of 1 and 100 rows",
            f"quality: test AUC/ECE; learned policy's uplift capture on {args.eval_invoices:,} held-out invoices",
        ],
    )
    total = time.perf_counter()
    data = attempts_file(args.invoices, args.seed, args.work)
    trained = train_variants(names, data, args.seed, args.work, args.reuse_bundles)

    from features.bundle import load_bundle

    matrix = example_matrix()
    bundles = {n: load_bundle(trained[n]["bundle"]) for n in names}
    bundles["shipped (models/default)"] = load_bundle(REPO / "models" / "default")
    shipped_shape = tree_shape(bundles["shipped (models/default)"].booster)
    print(f"  timing on the example's {len(matrix):,}-row candidate matrix, {args.repeats} rounds (load {load()})")
    timed = time_calls(bundles, matrix, args.repeats, args.repeats_100)
    print(f"  timed (load {load()})")

    evaluated: dict[str, dict[str, float]] = {}
    summary: dict[str, float] = {}
    if args.eval_invoices > 0:
        evaluated, summary = evaluate_variants(
            {n: trained[n]["bundle"] for n in names}, args.eval_invoices, args.eval_seed, args.bootstrap
        )

    ref = timed[names[0]]
    rows = []
    for name in [*names, "shipped (models/default)"]:
        t, shape = timed[name], trained.get(name, shipped_shape)
        info, ev = trained.get(name, {}), evaluated.get(name, {})
        rows.append(
            [
                name,
                f"{shape['trees']:.0f}",
                f"{shape['leaves_mean']:.0f}",
                f"{shape['depth_mean']:.1f}/{shape['depth_max']:.0f}",
                f"{info['auc']:.4f}" if info else "",
                f"{info['ece']:.4f}" if info else "",
                f"{info['log_loss']:.4f}" if info else "",
                f"{(info.get('model_kb') or (REPO / 'models/default/model.txt').stat().st_size / 1024):,.0f}",
                f"{t['predict']:.2f}",
                f"{t['predict'] + t['contrib_1']:.2f} ({(t['predict'] + t['contrib_1']) / (ref['predict'] + ref['contrib_1']):.2f}×)",
                f"{t['contrib_1']:.2f} ({t['contrib_1'] / ref['contrib_1']:.2f}×)",
                f"{t['contrib_100']:.1f} ({t['contrib_100'] / ref['contrib_100']:.2f}×)",
                f"{ev['recovery_rate']:.1%}" if ev else "",
                f"{ev['capture']:.1%} ±{ev['capture_se']:.1%}" if ev else "",
                f"{ev['delta_capture']:+.1%} ±{ev['delta_capture_se']:.1%}" if ev else "",
                f"{ev['eval_seconds']:.0f}" if ev else "",
            ]
        )
    print()
    table(
        rows,
        [
            "variant",
            "trees",
            "leaves",
            "depth mean/max",
            "AUC",
            "ECE",
            "log loss",
            "model KB",
            "predict 1,252 ms",
            "predict + contrib 1 ms",
            "contrib 1 row ms",
            "contrib 100 rows ms",
            "learned recovery",
            "capture ±SE",
            "Δ capture vs first ±SE",
            "eval s",
        ],
    )
    if summary:
        print(
            f"\n  held-out world: {summary['invoices']:,.0f} invoices, best fixed schedule {summary['best_fixed_rate']:.1%}, "
            f"oracle {summary['oracle_rate']:.1%}; ±SE from a paired bootstrap over invoices ({args.bootstrap} draws)"
        )
    if trained:
        test_rows = next(iter(trained.values()))["test_rows"]
        print(f"  AUC/ECE on the time-split test part: {test_rows:,} retries; times are p50, LightGBM num_threads=1")
    print(f"  total {time.perf_counter() - total:.0f} s; load at end {load()}")
    out = args.work / "results.json"
    out.write_text(
        json.dumps({"trained": trained, "timed": timed, "evaluated": evaluated, "summary": summary}, indent=2)
    )
    print(f"  results → {out}")


if __name__ == "__main__":
    main()
