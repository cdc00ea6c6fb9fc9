"""Latency of one retry decision vs the raw LightGBM predict of the candidate rows it scores.

(a) In process: `decide` (BundleScorer(load_bundle("models/default")), the contract's example
    request: 14-day window, 4 retries) vs `booster.predict(matrix, num_threads=1)` of the *same*
    stacked k × slots candidate matrix, built with the library calls the policy uses
    (`attempts_frame`, `evaluate_rules`, `candidate_times`, `candidates_frame`,
    `build_retry_features`, `project_retries`) and checked equal to what `decide` hands its scorer.
    Runs alternate (decide, raw, decide, raw, ...) so load hits both alike. Then a stage breakdown
    (request parsing, rules, frames, features, projection, predict, contributions, planner,
    reasons) from a second, instrumented pass, and the HTTP route's extra work (card-update
    lookup, card and customer history reads, SQLite write, response shaping; the route's whole
    body, `decide_and_record`, next to `decide`) measured in process on a scratch store.
(b) Over HTTP: `retryopt serve` (uvicorn, default settings, scratch SQLite store) on a free
    loopback port; one keep-alive `httpx.Client` alternates `POST /v1/retry-decisions` (the same
    example body) and `GET /healthz`.

Targets: in-process p50 ≤ 1.5 × raw predict p50; HTTP p50 ≤ raw predict p50 + /healthz p50 + 1 ms;
HTTP p99 ≤ 3 × HTTP p50.

    .venv/bin/python bench/decision_latency.py            # 300 in-process runs, 500 HTTP pairs
    .venv/bin/python bench/decision_latency.py --quick    # 200 runs, 200 pairs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# bench/ holds training.py, which must not shadow the `training` package: the repository root goes
# first and bench/ last (for _common).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE), str(_HERE)]

from _common import (  # noqa: E402
    EXAMPLE_REQUEST,
    REPO,
    CapturingScorer,
    header,
    load,
    p50,
    p99,
    serve,
    served_bundle,
    table,
    timing_wrapper,
    verdict,
)

import features.candidates as candidates_module  # noqa: E402
import serving.policy.decision as decision_module  # noqa: E402
import serving.policy.reasons as reasons_module  # noqa: E402
from features.bundle import calibrate, feature_matrix, load_bundle  # noqa: E402
from features.candidates import FEATURE_COLUMNS, build_retry_features, candidate_times, project_retries  # noqa: E402
from serving.policy.context import resolve_context  # noqa: E402
from serving.policy.decision import decide  # noqa: E402
from serving.policy.rules import evaluate_rules  # noqa: E402
from serving.policy.scoring import (  # noqa: E402
    BundleScorer,
    attempts_frame,
    candidates_frame,
    last_decline_category,
)
from serving.schemas import DecisionRequest  # noqa: E402
from serving.settings import Settings  # noqa: E402

MS = 1e3


# ----------------------------------------------------------------------------------------------
# The raw comparator: the same candidate matrix, built with the library calls
# ----------------------------------------------------------------------------------------------
def candidate_matrix(request: DecisionRequest, settings: Settings, clock: datetime) -> np.ndarray:
    """The stacked (retry k, slot t) feature rows the decision scores, as the float matrix LightGBM gets."""
    ctx = resolve_context(request, settings, clock)
    attempts = attempts_frame(request, key="0")
    verdict_ = evaluate_rules(attempts, request.card.brand, settings)
    earliest = max(ctx.now, verdict_.not_before)
    step = pd.Timedelta(minutes=settings.candidate_step_minutes)
    times = candidate_times(earliest - step, ctx.window_end, step)
    times = times[(times >= earliest) & (times > ctx.now)]
    budget = ctx.retries_left
    if verdict_.max_retries_by_caps is not None:
        budget = min(budget, verdict_.max_retries_by_caps)
    span = (times[-1] - times[0]) / pd.Timedelta(hours=1)
    budget = min(budget, int(span // settings.min_retry_spacing_hours) + 1)
    base = build_retry_features(attempts, candidates_frame(request, times, key="0"))
    n = len(times)
    rows = np.tile(np.arange(n), budget)
    k = np.repeat(np.arange(budget), n)
    category = np.array([last_decline_category(attempts)] * len(rows), dtype=object)
    stacked = project_retries(base.iloc[rows], k, settings.min_retry_spacing_hours, category)
    return stacked.loc[:, list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# The instrumented pass
# ----------------------------------------------------------------------------------------------
class Stages:
    """Per-run wall time of named stages, accumulated by wrappers around the policy's calls."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.runs: dict[str, list[float]] = defaultdict(list)

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        return timing_wrapper(self.current, name, function)

    def add(self, name: str, seconds: float) -> None:
        self.current[name] += seconds

    def close_run(self) -> None:
        for name, seconds in self.current.items():
            self.runs[name].append(seconds)
        self.current = defaultdict(float)


@contextmanager
def instrumented(stages: Stages) -> Iterator[None]:
    """Wrap the policy's and the feature library's calls with timers (restored on exit)."""
    targets = [
        (decision_module, "resolve_context", "rules: context + checks"),
        (decision_module, "evaluate_rules", "rules: decline/network rules"),
        (decision_module, "history_frame", "frames: history_frame (attempt rows: rules, features)"),
        (decision_module, "contexts_frame", "frames: contexts_frame"),
        (decision_module, "retry_feature_matrix", "features: retry_feature_matrix"),
        (decision_module, "last_decline_categories", "features: last_decline_category"),
        (decision_module, "project_retry_rows", "projection: project_retry_rows"),
        (decision_module, "plan_retries", "planner: plan_retries"),
        (reasons_module, "model_reasons", "reasons: model_reasons"),
        # inside retry_feature_matrix (nested; not added to the top-level sum)
        (candidates_module, "_context_values", "  features/ context values (card, zone, codes)"),
        (candidates_module, "history_columns", "  features/ history_columns"),
        (candidates_module, "local_wall_time", "  features/ local_wall_time"),
        (candidates_module, "calendar_features", "  features/ calendar_features"),
    ]
    # Each function is wrapped where it is looked up when called: decision.py's own names for what it
    # imports, the feature library's module for the calls inside retry_feature_matrix.
    targets = [t for t in targets if hasattr(t[0], t[1])]
    saved = [(module, attr, getattr(module, attr)) for module, attr, _ in targets]
    try:
        for module, attr, name in targets:
            setattr(module, attr, stages.wrap(name, getattr(module, attr)))
        yield
    finally:
        for module, attr, original in saved:
            setattr(module, attr, original)


class TimedScorer:
    """BundleScorer's exact steps (features.bundle.Bundle.predict / .contributions), each timed."""

    def __init__(self, scorer: BundleScorer, stages: Stages) -> None:
        self.bundle = scorer.bundle
        self.stages = stages
        self.last_matrix: np.ndarray | None = None

    @property
    def model_version(self) -> str:
        return self.bundle.model_version

    def score(self, slots: pd.DataFrame, features: pd.DataFrame) -> np.ndarray:
        t0 = time.perf_counter()
        matrix = feature_matrix(features)
        t1 = time.perf_counter()
        raw = self.bundle.raw_probability(matrix)  # the compiled model when the bundle has it, else LightGBM
        t2 = time.perf_counter()
        out = calibrate(raw, self.bundle.calibration_x, self.bundle.calibration_y)
        t3 = time.perf_counter()
        self.last_matrix = matrix
        self.stages.add("predict: frame -> float matrix", t1 - t0)
        self.stages.add("predict: model (compiled or booster.predict)", t2 - t1)
        self.stages.add("predict: isotonic calibration", t3 - t2)
        return out

    def contributions(self, features: pd.DataFrame) -> np.ndarray:
        t0 = time.perf_counter()
        matrix = feature_matrix(features)
        out = np.asarray(self.bundle.booster.predict(matrix, pred_contrib=True, num_threads=1))
        self.stages.add("contributions: pred_contrib (chosen slot of each retry)", time.perf_counter() - t0)
        return out


TOP_LEVEL = (
    "request parsing: DecisionRequest.model_validate_json",
    "rules: context + checks",
    "rules: decline/network rules",
    "frames: history_frame (attempt rows: rules, features)",
    "frames: contexts_frame",
    "features: retry_feature_matrix",
    "features: last_decline_category",
    "projection: project_retry_rows",
    "predict: frame -> float matrix",
    "predict: model (compiled or booster.predict)",
    "predict: isotonic calibration",
    "contributions: pred_contrib (chosen slot of each retry)",
    "planner: plan_retries",
    "reasons: model_reasons",
)


def breakdown(body: bytes, scorer: BundleScorer, settings: Settings, clock: datetime, runs: int) -> dict[str, Any]:
    """Median per-stage time of parse + decide over `runs` instrumented runs."""
    stages = Stages()
    timed = TimedScorer(scorer, stages)
    totals = []
    with instrumented(stages):
        for i in range(runs + 10):
            start = time.perf_counter()
            request = DecisionRequest.model_validate_json(body)
            parsed = time.perf_counter()
            decide(request, timed, settings, clock)  # type: ignore[arg-type]
            end = time.perf_counter()
            stages.add("request parsing: DecisionRequest.model_validate_json", parsed - start)
            if i < 10:  # warm-up
                stages.current.clear()
                continue
            stages.close_run()
            totals.append(end - start)
    # Shares come from means (sum over runs / sum of totals) so the stages and `other` add up exactly;
    # under load, medians of separate stages do not add up to the median of the total.
    means = {name: float(np.mean(values)) * MS for name, values in stages.runs.items()}
    medians = {name: p50(values) * MS for name, values in stages.runs.items()}
    mean_total = float(np.mean(totals)) * MS
    listed = sum(means.get(name, 0.0) for name in TOP_LEVEL)
    return {
        "mean_total_ms": mean_total,
        "p50_total_ms": p50(totals) * MS,
        "mean_ms": means,
        "p50_ms": medians,
        "other_mean_ms": mean_total - listed,
    }


def predictor_interplay(bundle: Any, matrix: np.ndarray, runs: int) -> dict[str, float]:
    """Does the one-row `pred_contrib` call slow down the next plain predict (as in back-to-back decisions)?"""
    booster = bundle.booster
    one = matrix[:1]
    alone, after, contrib = [], [], []
    for i in range(runs + 10):
        booster.predict(matrix, num_threads=1)  # the previous call was a pred_contrib
        t1 = time.perf_counter()
        booster.predict(matrix, num_threads=1)
        t2 = time.perf_counter()
        booster.predict(one, num_threads=1, pred_contrib=True)
        t3 = time.perf_counter()
        booster.predict(matrix, num_threads=1)
        t4 = time.perf_counter()
        if i >= 10:
            alone.append(t2 - t1)
            contrib.append(t3 - t2)
            after.append(t4 - t3)
    return {
        "predict, after a predict": p50(alone) * MS,
        "pred_contrib (1 row), after a predict": p50(contrib) * MS,
        "predict, right after a pred_contrib": p50(after) * MS,
    }


# ----------------------------------------------------------------------------------------------
# The HTTP route's work beyond decide, in process on a scratch SQLite store
# ----------------------------------------------------------------------------------------------
def route_extras(request: DecisionRequest, scorer: BundleScorer, settings: Settings, runs: int) -> dict[str, float]:
    """Median ms of the route's store reads, store write (commit), response shaping, and of its whole body
    (`decide_and_record`) next to `decide` in the same runs. The scratch store grows by two decisions of
    the example invoice per run, as the server's does under part (b)."""
    from serving.api.decisions import (
        card_histories,
        card_updated_at,
        customer_histories,
        decide_and_record,
        decision_record,
        new_decision_id,
        to_response,
    )
    from serving.metrics import create_metrics
    from serving.store import make_engine, record_decisions, session_factory, upgrade_database

    with tempfile.TemporaryDirectory(prefix="retryopt-bench-store-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'store.db'}"
        upgrade_database(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        metrics = create_metrics()
        clock = datetime.now(UTC)
        decision = decide(request, scorer, settings, clock)
        times: dict[str, list[float]] = defaultdict(list)
        for i in range(runs + 10):
            with sessions() as session:
                t0 = time.perf_counter()
                card_updated_at(session, [request])
                t1 = time.perf_counter()
                card_histories(session, [request], clock)
                t2 = time.perf_counter()
                customer_histories(session, [request], clock)
                t3 = time.perf_counter()
                decision_id = new_decision_id()
                record_decisions(session, [decision_record(request, decision, decision_id, clock)])
                t4 = time.perf_counter()
                to_response(decision, decision_id).model_dump_json()
                t5 = time.perf_counter()
            with sessions() as session:
                t6 = time.perf_counter()
                decide_and_record([request], scorer, settings, clock, metrics, session, batch=False)
                t7 = time.perf_counter()
            decide(request, scorer, settings, clock)
            t8 = time.perf_counter()
            if i >= 10:
                times["store: card-update lookup (SELECT)"].append(t1 - t0)
                times["store: card histories (attempts + planned retries)"].append(t2 - t1)
                times["store: customer histories (SELECT + frames)"].append(t3 - t2)
                times["store: record decision (INSERT + COMMIT, WAL, synchronous=FULL)"].append(t4 - t3)
                times["response: to_response + JSON"].append(t5 - t4)
                times["decide_and_record (the route's body, all of the above)"].append(t7 - t6)
                times["decide (same runs)"].append(t8 - t7)
        engine.dispose()
    return {name: p50(values) * MS for name, values in times.items()}


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------
def in_process(runs: int, compiled: bool) -> dict[str, Any]:
    """Part (a): alternate decide, raw predict, compiled predict and decide on LightGBM; the breakdown; the route's extras."""
    bundle = served_bundle(compiled)
    scorer = BundleScorer(bundle)
    plain = BundleScorer(load_bundle(REPO / "models" / "default"))  # LightGBM only: the decision before compiling
    fast = bundle.compiled.predictor
    settings = Settings()
    clock = datetime.now(UTC)
    body = json.dumps(EXAMPLE_REQUEST).encode()
    request = DecisionRequest.model_validate_json(body)

    capture = CapturingScorer(scorer)
    decision = decide(request, capture, settings, clock)  # type: ignore[arg-type]
    scored = capture.scored[0].loc[:, list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
    matrix = candidate_matrix(request, settings, clock)
    same = matrix.shape == scored.shape and bool(np.array_equal(matrix, scored, equal_nan=True))
    if not same:
        print(
            f"  ! library-built matrix {matrix.shape} differs from the scored one {scored.shape}; using the scored one"
        )
        matrix = scored
    booster = bundle.booster

    decide_s, raw_s, fast_s, plain_s = [], [], [], []
    for i in range(runs + 20):
        t0 = time.perf_counter()
        decide(request, scorer, settings, clock)
        t1 = time.perf_counter()
        booster.predict(matrix, num_threads=1)
        t2 = time.perf_counter()
        if fast is not None:
            fast.raw_probability(matrix)
        t3 = time.perf_counter()
        decide(request, plain, settings, clock)
        t4 = time.perf_counter()
        if i >= 20:
            decide_s.append(t1 - t0)
            raw_s.append(t2 - t1)
            fast_s.append(t3 - t2)
            plain_s.append(t4 - t3)
    load_after_a = load()
    parts = breakdown(body, scorer, settings, clock, runs)
    extras = route_extras(request, scorer, settings, max(100, runs // 2))
    interplay = predictor_interplay(bundle, matrix, max(100, runs // 2))
    return {
        "rows": matrix.shape[0],
        "slots": decision.n_candidates,
        "retries": matrix.shape[0] // max(decision.n_candidates, 1),
        "trees": booster.num_trees(),
        "model": bundle.model_version,
        "same_matrix": same,
        "decide_p50": p50(decide_s) * MS,
        "decide_p99": p99(decide_s) * MS,
        "raw_p50": p50(raw_s) * MS,
        "raw_p99": p99(raw_s) * MS,
        "compiled": fast is not None,
        "fast_p50": p50(fast_s) * MS,
        "fast_p99": p99(fast_s) * MS,
        "plain_p50": p50(plain_s) * MS,
        "plain_p99": p99(plain_s) * MS,
        "load": load_after_a,
        "breakdown": parts,
        "extras": extras,
        "interplay": interplay,
        "action": decision.action,
        "retry_at": str(decision.retry_at),
    }


def over_http(pairs: int) -> dict[str, Any]:
    """Part (b): alternate POST /v1/retry-decisions and GET /healthz on one keep-alive client."""
    import httpx

    body = json.dumps(EXAMPLE_REQUEST).encode()
    post_s, get_s, errors = [], [], 0
    with serve() as server, httpx.Client(base_url=server.url, timeout=30.0) as client:
        headers = {"content-type": "application/json"}
        for i in range(pairs + 30):
            t0 = time.perf_counter()
            decided = client.post("/v1/retry-decisions", content=body, headers=headers)
            t1 = time.perf_counter()
            alive = client.get("/healthz")
            t2 = time.perf_counter()
            if decided.status_code != 200 or alive.status_code != 200:
                errors += 1
            if i >= 30:
                post_s.append(t1 - t0)
                get_s.append(t2 - t1)
        workers = "1 (uvicorn.run default)"
    return {
        "post_p50": p50(post_s) * MS,
        "post_p99": p99(post_s) * MS,
        "get_p50": p50(get_s) * MS,
        "get_p99": p99(get_s) * MS,
        "errors": errors,
        "load": load(),
        "workers": workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300, help="in-process runs of each side (>= 200)")
    parser.add_argument("--http-requests", type=int, default=500, help="HTTP (POST, GET) pairs")
    parser.add_argument("--quick", action="store_true", help="200 runs, 200 HTTP pairs")
    parser.add_argument("--no-http", action="store_true", help="skip part (b)")
    parser.add_argument("--lightgbm", action="store_true", help="decide with LightGBM only (no compiled model)")
    args = parser.parse_args()
    runs = 200 if args.quick else max(args.runs, 200)
    pairs = 200 if args.quick else args.http_requests

    header(
        "decision_latency: one decision vs the raw LightGBM predict of its own candidate rows",
        [
            "(a) decide(contract example, 14-day window, 4 retries; the compiled model, as served) vs "
            "booster.predict(same k x slots matrix, num_threads=1), alternating, in process; also the compiled "
            "predict of that matrix and decide with LightGBM only",
            "(b) POST /v1/retry-decisions vs GET /healthz over HTTP (retryopt serve, keep-alive httpx.Client)",
            f"runs: {runs} in-process of each side, {pairs} HTTP pairs; figures in ms",
        ],
    )
    a = in_process(runs, compiled=not args.lightgbm)
    ratio50 = a["decide_p50"] / a["raw_p50"]
    ratio99 = a["decide_p99"] / a["raw_p99"]
    print(
        f"\n(a) in process — {a['rows']} candidate rows ({a['slots']} hourly slots x {a['retries']} retries), "
        f"{a['trees']} trees (model {a['model']}); decision: {a['action']} at {a['retry_at']}"
    )
    print(f"    library-built matrix identical to the one decide scores: {a['same_matrix']}; load after: {a['load']}")
    how = "compiled model" if a["compiled"] else "LightGBM only"
    rows_a = [
        [f"decide (BundleScorer, {how})", f"{a['decide_p50']:.2f}", f"{a['decide_p99']:.2f}"],
        ["raw booster.predict", f"{a['raw_p50']:.2f}", f"{a['raw_p99']:.2f}"],
        ["ratio decide / raw", f"{ratio50:.2f}x", f"{ratio99:.2f}x"],
        ["decide (BundleScorer, LightGBM only)", f"{a['plain_p50']:.2f}", f"{a['plain_p99']:.2f}"],
        ["ratio decide (LightGBM only) / raw", f"{a['plain_p50'] / a['raw_p50']:.2f}x", ""],
    ]
    if a["compiled"]:
        rows_a += [
            ["compiled predict (same matrix)", f"{a['fast_p50']:.2f}", f"{a['fast_p99']:.2f}"],
            ["ratio raw booster.predict / compiled", f"{a['raw_p50'] / a['fast_p50']:.2f}x", ""],
        ]
    table(rows_a, ["", "p50 ms", "p99 ms"])
    print(f"    target p50 ratio <= 1.5x: {verdict(ratio50 <= 1.5)} ({ratio50:.2f}x)")

    parts = a["breakdown"]
    total = parts["mean_total_ms"]
    print(
        f"\n    breakdown of parse + decide (instrumented pass; mean total {total:.2f} ms, p50 "
        f"{parts['p50_total_ms']:.2f} ms; share = stage mean / total mean):"
    )
    rows = []

    def line(name: str) -> list[str]:
        mean = parts["mean_ms"].get(name, 0.0)
        return [name, f"{mean:.3f}", f"{parts['p50_ms'].get(name, 0.0):.3f}", f"{100 * mean / total:.1f}%"]

    for name in TOP_LEVEL:
        rows.append(line(name))
        if name == "features: retry_feature_matrix":
            rows.extend(line(nested) for nested in parts["mean_ms"] if nested.startswith("  features/"))
    other = parts["other_mean_ms"]
    rows.append(
        ["other (concat, iloc, slot frame, grid, Decision assembly)", f"{other:.3f}", "", f"{100 * other / total:.1f}%"]
    )
    table(rows, ["stage", "mean ms", "p50 ms", "share"])
    print("\n    LightGBM predictor interplay (same matrix, p50 ms):")
    table([[k, f"{v:.3f}"] for k, v in a["interplay"].items()], ["call", "p50 ms"])
    print("\n    the HTTP route's work beyond decide (in process, scratch SQLite store, medians):")
    table([[k, f"{v:.3f}"] for k, v in a["extras"].items()], ["step", "p50 ms"])

    if args.no_http:
        return
    b = over_http(pairs)
    budget = a["raw_p50"] + b["get_p50"] + 1.0
    print(
        f"\n(b) over HTTP — {pairs} alternating pairs, uvicorn workers: {b['workers']}, errors: {b['errors']}, "
        f"load after: {b['load']}"
    )
    table(
        [
            [
                "POST /v1/retry-decisions",
                f"{b['post_p50']:.2f}",
                f"{b['post_p99']:.2f}",
                f"{b['post_p99'] / b['post_p50']:.2f}x",
            ],
            ["GET /healthz", f"{b['get_p50']:.2f}", f"{b['get_p99']:.2f}", f"{b['get_p99'] / b['get_p50']:.2f}x"],
            ["in-process decide (a)", f"{a['decide_p50']:.2f}", f"{a['decide_p99']:.2f}", ""],
            ["raw booster.predict (a)", f"{a['raw_p50']:.2f}", f"{a['raw_p99']:.2f}", ""],
        ],
        ["", "p50 ms", "p99 ms", "p99/p50"],
    )
    print(
        f"    target HTTP p50 <= raw p50 + /healthz p50 + 1 ms = {budget:.2f} ms: "
        f"{verdict(b['post_p50'] <= budget)} ({b['post_p50']:.2f} ms, {b['post_p50'] / budget:.2f}x the budget)"
    )
    print(
        f"    target HTTP p99 <= 3 x p50: {verdict(b['post_p99'] <= 3 * b['post_p50'])} "
        f"({b['post_p99'] / b['post_p50']:.2f}x)"
    )
    print(f"    errors: {b['errors']}")


if __name__ == "__main__":
    main()
