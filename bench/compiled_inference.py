"""Compiled tree inference (lleaves, features/compiled.py) vs LightGBM `Booster.predict`, side by side.

On the shipped model (`models/default`), one thread each:
  1. compile: a fresh compile through the service's own path (`Compiler.library`: niced child
     process, cache keyed by the model file's content hash), the library's size, the child's
     peak RSS, and the time to load the cached library (what a restart pays);
  2. predict: (a) the candidate matrix of one decision (the contract's example request,
     bench/decision_latency.candidate_matrix), alternating LightGBM / compiled; (b) ~1M candidate
     rows of simulated batch requests, alternating; max |difference| of the probabilities on (a),
     (b) and a stress set (real rows with 20 % of cells NaN, negative, fractional and unseen
     categories);
  3. decisions: `decide` on simulated requests with `BundleScorer` on LightGBM and on the
     compiled code: how many `Decision`s differ, and how;
  4. quality: AUC on a held-out simulated set scored both ways, and the closed-loop evaluation
     (`training.evaluate`: fixed schedules, oracle, and the learned policy once with each scorer,
     the same held-out world and dice) with uplift capture.

    .venv/bin/python bench/compiled_inference.py            # fresh compile, 300 pairs, 1M rows x3, 300 decisions, eval 3000
    .venv/bin/python bench/compiled_inference.py --quick    # cached library, 200 pairs, 1M rows x2, 300 decisions, eval 1000
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE), str(_HERE)]

from _common import EXAMPLE_REQUEST, REPO, CapturingScorer, header, load, p50, p99, simulated_requests, table  # noqa: E402

from features.bundle import Bundle, load_bundle  # noqa: E402
from features.candidates import FEATURE_COLUMNS  # noqa: E402
from features.compiled import (  # noqa: E402
    CompiledSlot,
    Compiler,
    categorical_features,
    default_cache_dir,
    load_compiled,
    probe_matrix,
)
from serving.policy.scoring import BundleScorer  # noqa: E402
from serving.schemas import DecisionRequest  # noqa: E402
from serving.settings import Settings  # noqa: E402

MS = 1e3
MODEL_DIR = REPO / "models" / "default"


def compiled_bundle(cache_dir: Path) -> Bundle:
    """The shipped bundle with its compiled predictor in place (compiled first when not cached)."""
    bundle = load_bundle(MODEL_DIR)
    Compiler(cache_dir).run(bundle.compiled, bundle.model_file, bundle.booster)
    if bundle.compiled.predictor is None:
        raise SystemExit(f"compiled inference is {bundle.compiled.state}: {bundle.compiled.detail}")
    return bundle


def part_compile(fresh: bool, cache_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Compile (fresh: into a scratch cache) and time the cached load."""
    bundle = load_bundle(MODEL_DIR)
    out: dict[str, Any] = {"trees": bundle.booster.num_trees(), "model": bundle.model_version}
    if fresh:
        cache_dir = Path(tempfile.mkdtemp(prefix="retryopt-compiled-"))
        started = time.perf_counter()
        library = Compiler(cache_dir).library(bundle.model_file)
        out["compile_s"] = time.perf_counter() - started
        out["child_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        out["load_after_compile"] = load()
    else:
        library = Compiler(cache_dir).library(bundle.model_file)
    out["library"] = str(library)
    out["library_kb"] = library.stat().st_size / 1024
    loads = []
    for _ in range(7):
        started = time.perf_counter()
        load_compiled(library, bundle.model_file)
        loads.append(time.perf_counter() - started)
    out["load_ms"] = p50(loads) * MS
    return cache_dir, out


def batch_rows(n_requests: int, work: Path, bundle: Bundle) -> np.ndarray:
    """The stacked candidate rows `decide_batch` scores for `n_requests` simulated requests (cached as .npy)."""
    path = work / f"candidate-rows-{n_requests}.npy"
    if not path.exists():
        from serving.policy.decision import decide_batch

        work.mkdir(parents=True, exist_ok=True)
        requests = [DecisionRequest.model_validate(r) for r in simulated_requests(n_requests, seed=2027)]
        capture = CapturingScorer(BundleScorer(bundle))
        decide_batch(requests, capture, Settings(), datetime.now(UTC))
        rows = np.concatenate([f.loc[:, list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64) for f in capture.scored])
        np.save(path, rows)
    return np.load(path)


def part_predict(bundle: Bundle, pairs: int, big_repeats: int, work: Path) -> dict[str, Any]:
    """(a) one decision's candidate matrix, (b) ~1M rows, the stress set; alternating, one thread."""
    from decision_latency import candidate_matrix

    booster = bundle.booster
    compiled = bundle.compiled.predictor
    assert compiled is not None
    request = DecisionRequest.model_validate(EXAMPLE_REQUEST)
    a = candidate_matrix(request, Settings(), datetime.now(UTC))
    rows = batch_rows(1000, work, bundle)
    b = rows[np.arange(1_000_000) % len(rows)]
    rng = np.random.default_rng(0)
    stress = rows[rng.integers(0, len(rows), 100_000)].copy()
    stress[rng.random(stress.shape) < 0.2] = np.nan
    categorical = categorical_features(booster)
    for j in categorical:
        pick = rng.random(len(stress))
        stress[pick < 0.05, j] = -1.0
        stress[(pick >= 0.05) & (pick < 0.10), j] = 300.0
        stress[(pick >= 0.10) & (pick < 0.15), j] = (
            rng.integers(0, 40, int(((pick >= 0.10) & (pick < 0.15)).sum())) + 0.5
        )
    probe = probe_matrix(a.shape[1], categorical, rows=10_000)

    def worst(x: np.ndarray) -> float:
        return float(np.max(np.abs(booster.predict(x, num_threads=1) - compiled.raw_probability(x))))

    out: dict[str, Any] = {
        "a_rows": a.shape[0],
        "a_nan_rows": int(np.isnan(a).any(axis=1).sum()),
        "b_rows": b.shape[0],
        "b_distinct_rows": rows.shape[0],
        "b_nan_rows": int(np.isnan(b).any(axis=1).sum()),
        "stress_nan_rows": int(np.isnan(stress).any(axis=1).sum()),
        "diff_a": worst(a),
        "diff_b": worst(b),
        "diff_stress": worst(stress),
        "diff_probe": worst(probe),
    }
    lgb_a, fast_a = [], []
    for i in range(pairs + 20):
        t0 = time.perf_counter()
        booster.predict(a, num_threads=1)
        t1 = time.perf_counter()
        compiled.raw_probability(a)
        t2 = time.perf_counter()
        if i >= 20:
            lgb_a.append(t1 - t0)
            fast_a.append(t2 - t1)
    out.update(a_lgb=lgb_a, a_fast=fast_a, load_a=load())
    lgb_b, fast_b = [], []
    for i in range(big_repeats):  # the order flips every round
        for side in ("lgb", "fast") if i % 2 == 0 else ("fast", "lgb"):
            t0 = time.perf_counter()
            if side == "lgb":
                booster.predict(b, num_threads=1)
            else:
                compiled.raw_probability(b)
            (lgb_b if side == "lgb" else fast_b).append(time.perf_counter() - t0)
    out.update(b_lgb=lgb_b, b_fast=fast_b, load_b=load())
    return out


def part_decisions(plain: Bundle, fast: Bundle, n: int) -> dict[str, Any]:
    """`decide` on `n` simulated requests with each scorer: identical Decisions, or how they differ."""
    from serving.policy.decision import decide

    settings = Settings()
    clock = datetime.now(UTC)
    requests = [DecisionRequest.model_validate(r) for r in simulated_requests(n, seed=2031)]
    differ, plans_differ, worst, actions = 0, 0, 0.0, {"retry": 0, "stop": 0}
    for request in requests:
        one = decide(request, BundleScorer(plain), settings, clock)
        two = decide(request, BundleScorer(fast), settings, clock)
        actions[one.action] = actions.get(one.action, 0) + 1
        if one != two:
            differ += 1
            if (one.action, one.retry_at, [r.at for r in one.schedule]) != (
                two.action,
                two.retry_at,
                [r.at for r in two.schedule],
            ):
                plans_differ += 1
            pairs = [
                (x.success_probability, y.success_probability) for x, y in zip(one.schedule, two.schedule, strict=False)
            ]
            worst = max([worst, *(abs(x - y) for x, y in pairs)])
    return {"requests": n, "differ": differ, "plans_differ": plans_differ, "worst_p": worst, "actions": actions}


def part_quality(plain: Bundle, fast: Bundle, auc_invoices: int, eval_invoices: int) -> dict[str, Any]:
    """Held-out AUC scored both ways; the closed loop with the learned policy on each scorer, same world and dice."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from training.evaluate import (
        FIXED_POLICIES,
        EvaluationConfig,
        RuleChecker,
        build_policy,
        decision_policy,
        held_out_world,
        invoice_rows,
        run_policy,
        summarise,
    )
    from training.simulate import simulate
    from training.train import build_training_table

    held_table = build_training_table(simulate(auc_invoices, seed=2029).attempts)
    matrix = held_table.features.loc[:, list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
    p_plain = plain.predict(matrix)
    p_fast = fast.predict(matrix)
    out: dict[str, Any] = {
        "auc_rows": len(matrix),
        "auc_lightgbm": float(roc_auc_score(held_table.labels, p_plain)),
        "auc_compiled": float(roc_auc_score(held_table.labels, p_fast)),
        "auc_max_diff_p": float(np.max(np.abs(p_plain - p_fast))),
    }
    if eval_invoices <= 0:
        return out
    settings = Settings()
    config = EvaluationConfig(invoices=eval_invoices, seed=2026)
    held = held_out_world(config)
    checker = RuleChecker(settings)
    frames, seconds, recovered = [], {}, {}
    for name in [*FIXED_POLICIES, "oracle"]:
        policy, _ = build_policy(name, MODEL_DIR, config, held, settings)
        run = run_policy(held, policy, config, checker)
        frames.append(invoice_rows(name, held, run))
        seconds[name] = run.seconds
    for label, bundle in (("learned (LightGBM)", plain), ("learned (compiled)", fast)):
        scorer = BundleScorer(bundle)
        policy = decision_policy(held.world, lambda _batch, s=scorer: s, settings, config.batch_size)  # type: ignore[misc]
        run = run_policy(held, policy, config, checker)
        frames.append(invoice_rows(label, held, run))
        seconds[label] = run.seconds
        recovered[label] = run.recovered.copy()
    summary = summarise(pd.concat(frames, ignore_index=True), seconds)
    out["eval_invoices"] = eval_invoices
    out["eval_table"] = summary
    out["outcomes_differ"] = int(np.sum(recovered["learned (LightGBM)"] != recovered["learned (compiled)"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="cached library, fewer pairs, 1,000-invoice evaluation")
    parser.add_argument("--fresh", action="store_true", help="time a fresh compile even with --quick")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="compiled-model cache")
    parser.add_argument("--work", type=Path, default=Path("/tmp/retryopt-bench"), help="cached candidate rows")
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--auc-invoices", type=int, default=30000)
    parser.add_argument("--eval-invoices", type=int, default=None, help="closed-loop invoices (0: skip)")
    args = parser.parse_args()
    pairs = 200 if args.quick else 300
    big = 2 if args.quick else 3
    eval_invoices = args.eval_invoices if args.eval_invoices is not None else (1000 if args.quick else 3000)

    header(
        "compiled_inference: lleaves-compiled model vs LightGBM Booster.predict (one thread each)",
        [
            "compile through the service's Compiler (child process, content-hash cache); cached load",
            "(a) one decision's candidate matrix, alternating pairs; (b) ~1M batch candidate rows, alternating",
            "agreement on (a), (b), a NaN/odd-category stress set; decisions, held-out AUC, closed-loop capture",
        ],
    )
    cache_dir, c = part_compile(args.fresh or not args.quick, args.cache_dir)
    print(f"\n1. compile — model {c['model']} ({c['trees']} trees)")
    if "compile_s" in c:
        print(
            f"   fresh compile: {c['compile_s']:.1f} s (child peak RSS {c['child_peak_rss_mb']:.0f} MB; "
            f"load after: {c['load_after_compile']})"
        )
    print(
        f"   library {c['library_kb']:.0f} KB; cached load (lleaves.Model + compile(cache=...)) p50 {c['load_ms']:.1f} ms"
    )

    plain = load_bundle(MODEL_DIR)
    fast = compiled_bundle(cache_dir)
    assert isinstance(fast.compiled, CompiledSlot) and plain.compiled.predictor is None
    p = part_predict(fast, pairs, big, args.work)
    ratio_a = p50(p["a_lgb"]) / p50(p["a_fast"])
    ratio_b = p50(p["b_lgb"]) / p50(p["b_fast"])
    print(
        f"\n2. predict — (a) {p['a_rows']} rows ({p['a_nan_rows']} with a NaN), {pairs} pairs, load after {p['load_a']}; "
        f"(b) {p['b_rows']:,} rows ({p['b_distinct_rows']:,} distinct, {p['b_nan_rows']:,} with a NaN), "
        f"{big} pairs, load after {p['load_b']}"
    )
    table(
        [
            ["(a) LightGBM booster.predict", f"{p50(p['a_lgb']) * MS:.3f} ms", f"{p99(p['a_lgb']) * MS:.3f} ms"],
            ["(a) compiled", f"{p50(p['a_fast']) * MS:.3f} ms", f"{p99(p['a_fast']) * MS:.3f} ms"],
            ["(a) LightGBM / compiled", f"{ratio_a:.2f}x", ""],
            ["(b) LightGBM booster.predict", f"{p50(p['b_lgb']):.3f} s", f"max {max(p['b_lgb']):.3f} s"],
            ["(b) compiled", f"{p50(p['b_fast']):.3f} s", f"max {max(p['b_fast']):.3f} s"],
            ["(b) LightGBM / compiled", f"{ratio_b:.2f}x", f"{p['b_rows'] / p50(p['b_fast']):,.0f} rows/s compiled"],
        ],
        ["", "p50", "p99 / max"],
    )
    print(
        f"   max |compiled - LightGBM| probability: (a) {p['diff_a']:.2e}, (b) {p['diff_b']:.2e}, "
        f"stress 100k ({p['stress_nan_rows']:,} rows with NaN) {p['diff_stress']:.2e}, probe 10k {p['diff_probe']:.2e}"
    )

    d = part_decisions(plain, fast, args.decisions)
    print(
        f"\n3. decisions — {d['requests']} simulated requests ({d['actions']}): {d['differ']} Decisions differ "
        f"(plan differs in {d['plans_differ']}; max |success_probability diff| {d['worst_p']:.2e})"
    )

    q = part_quality(plain, fast, args.auc_invoices, eval_invoices)
    print(
        f"\n4. quality — held-out AUC on {q['auc_rows']:,} retries of {args.auc_invoices:,} simulated invoices "
        f"(seed 2029): LightGBM {q['auc_lightgbm']:.6f}, compiled {q['auc_compiled']:.6f}; "
        f"max |calibrated p diff| {q['auc_max_diff_p']:.2e}"
    )
    if "eval_table" in q:
        t = q["eval_table"]
        print(f"   closed loop, {q['eval_invoices']:,} held-out invoices (seed 2026), same world and dice:")
        table(
            [
                [
                    r.policy,
                    f"{100 * r.recovery_rate:.2f}%",
                    f"{r.retries_per_invoice:.3f}",
                    "" if np.isnan(r.uplift_capture) else f"{100 * r.uplift_capture:.2f}%",
                    f"{r.seconds:.1f}",
                ]
                for r in t.itertuples()
            ],
            ["policy", "recovery", "retries/invoice", "uplift capture", "seconds"],
        )
        print(f"   invoices whose outcome differs between the two learned runs: {q['outcomes_differ']}")
    print(f"\nload at the end: {load()}")


if __name__ == "__main__":
    main()
