"""Batch decision throughput vs the raw LightGBM predict of the same candidate rows.

10,000 decision requests from simulated failed invoices (varied decline codes, networks, countries,
cards, 1-8 attempts so far; 14-day window, 4 retries) go through
  * in process: `decide_batch` (BundleScorer, shipped model), chunk by chunk, in a fresh child
    process whose peak RSS (ru_maxrss) is reported; right after each slice of stacked candidate
    rows is scored, that exact float matrix is run through `booster.predict(...,
    num_threads=1)` alone (timed apart and left out of the decision's time), so the raw figure
    covers the very same rows under the same load; the
    route's store write and response shaping are timed too (scratch SQLite store);
  * over HTTP: `POST /v1/retry-decisions/batch` on `retryopt serve` (default settings, scratch
    SQLite store), the same chunk right before or after (alternating), one keep-alive client; the
    server's RSS is sampled for its peak.
Reported: decisions/s, candidate rows/s, and rows/s as a share of raw predict rows/s (target >= 70%).
Every chunk is one measurement; the tables give the median over chunks and the overall figure.

    .venv/bin/python bench/batch_throughput.py                  # 10,000 invoices, chunks of 1,000
    .venv/bin/python bench/batch_throughput.py --quick          # 2,000 invoices, chunks of 500
    .venv/bin/python bench/batch_throughput.py --chunk 10000 --no-http   # one 10,000-request call (memory)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# bench/ holds training.py, which must not shadow the `training` package: the repository root goes
# first and bench/ last (for _common).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE), str(_HERE)]

from _common import (  # noqa: E402
    RssSampler,
    header,
    load,
    p50,
    peak_rss_mb,
    run_child,
    serve,
    served_bundle,
    simulated_requests,
    table,
    verdict,
)

TARGET = 0.70


def requests_file(n: int, seed: int, work: Path) -> Path:
    """The `n` simulated requests as JSON, made once per (n, seed) and reused.

    Made in a child process: Linux carries a parent's peak RSS into the ru_maxrss of children it
    spawns later, so this process must stay small for the measuring child's peak to be its own.
    """
    path = work / f"requests-{n}-seed{seed}.json"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        run_child(__file__, ["--make-requests", str(path), "--invoices", str(n), "--seed", str(seed)])
    return path


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# ----------------------------------------------------------------------------------------------
# The measuring child: per chunk, in process + raw + HTTP, side by side
# ----------------------------------------------------------------------------------------------
def child(path: Path, chunk: int, http: bool, compiled: bool = True) -> dict[str, Any]:
    """Per chunk: decide_batch in process, raw predict of its rows, the route's store/response work, and the
    same chunk over HTTP (order alternating chunk by chunk, so load drifts hit every path alike).

    This process's ru_maxrss covers the in-process path only: the server is another process, sampled.
    """
    from contextlib import ExitStack
    from datetime import UTC, datetime

    import httpx
    from decision_latency import TOP_LEVEL, Stages, TimedScorer, instrumented

    from serving.api.decisions import card_updated_at, decision_record, new_decision_id, to_response
    from serving.policy.decision import decide_batch
    from serving.policy.scoring import BundleScorer
    from serving.schemas import BatchDecisionRequest, BatchDecisionResponse
    from serving.settings import Settings
    from serving.store import make_engine, record_decisions, session_factory, upgrade_database

    class KeepingScorer(TimedScorer):
        """TimedScorer (Bundle.predict's steps, timed) that also times the raw predict of each matrix it scored.

        `decide_batch` scores a large batch in slices of whole requests. Right after each slice is
        scored, the same float matrix goes through `booster.predict(num_threads=1)` alone; that time
        is the raw figure and is subtracted from the decision's time. (Keeping the matrices for a
        later raw run would add their memory to the peak RSS this process reports.)
        """

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.raw_seconds = 0.0
            self.raw_rows = 0

        def score(self, slots: Any, features: Any) -> Any:
            out = super().score(slots, features)
            matrix, self.last_matrix = self.last_matrix, None
            assert matrix is not None
            t0 = time.perf_counter()
            bundle.booster.predict(matrix, num_threads=1)
            self.raw_seconds += time.perf_counter() - t0
            self.raw_rows += matrix.shape[0]
            return out

    bodies = [json.dumps({"requests": part}).encode() for part in chunks(json.loads(path.read_text()), chunk)]
    bundle = served_bundle(compiled)  # as served: the compiled model (waited for here), or --lightgbm
    settings = Settings()
    clock = datetime.now(UTC)
    out: list[dict[str, Any]] = []
    actions: Counter[str] = Counter()
    stages = Stages()
    errors = 0
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="retryopt-bench-store-")))
        store_url = f"sqlite:///{scratch / 'store.db'}"
        upgrade_database(store_url)
        engine = make_engine(store_url)
        stack.callback(engine.dispose)
        sessions = session_factory(engine)
        client = sampler = None
        if http:
            server = stack.enter_context(serve())
            client = stack.enter_context(httpx.Client(base_url=server.url, timeout=900.0))
            sampler = RssSampler(server.pid)
        rss_before = peak_rss_mb()

        def in_process(body: bytes) -> dict[str, Any]:
            scorer = KeepingScorer(BundleScorer(bundle), stages)
            with instrumented(stages):
                t0 = time.perf_counter()
                batch = BatchDecisionRequest.model_validate_json(body)
                t1 = time.perf_counter()
                decisions = decide_batch(batch.requests, scorer, settings, clock)  # type: ignore[arg-type]
                t2 = time.perf_counter()
            stages.add("request parsing: DecisionRequest.model_validate_json", t1 - t0)
            stages.close_run()
            actions.update(d.action for d in decisions)
            # The route's work around decide_batch (serving.api.decisions), on a scratch store.
            with sessions() as session:
                t3 = time.perf_counter()
                card_updated_at(session, batch.requests)
                ids = [new_decision_id() for _ in decisions]
                records = [
                    decision_record(r, d, i, clock) for r, d, i in zip(batch.requests, decisions, ids, strict=True)
                ]
                record_decisions(session, records)
                t4 = time.perf_counter()
            BatchDecisionResponse(
                decisions=[to_response(d, i) for d, i in zip(decisions, ids, strict=True)]
            ).model_dump_json()
            t5 = time.perf_counter()
            raw, rows = scorer.raw_seconds, scorer.raw_rows
            return {
                "decisions": len(decisions),
                "rows": rows,
                "parse": t1 - t0,
                "decide": t2 - t1 - scorer.raw_seconds,
                "store": t4 - t3,
                "response": t5 - t4,
                "raw": raw,
            }

        def over_http(body: bytes) -> dict[str, Any]:
            nonlocal errors
            assert client is not None
            t0 = time.perf_counter()
            response = client.post(
                "/v1/retry-decisions/batch", content=body, headers={"content-type": "application/json"}
            )
            elapsed = time.perf_counter() - t0
            ok = response.status_code == 200
            errors += not ok
            return {"http": elapsed, "http_decisions": len(response.json()["decisions"]) if ok else 0}

        for i, body in enumerate(bodies):
            if http and i % 2 == 1:
                measured = over_http(body)
                measured.update(in_process(body))
            else:
                measured = in_process(body)
                if http:
                    measured.update(over_http(body))
            out.append(measured)
        peak_server = sampler.stop() if sampler is not None else 0
    return {
        "chunks": out,
        "actions": dict(actions),
        "stages": {name: float(np.sum(values)) for name, values in stages.runs.items()},
        "top_level": list(TOP_LEVEL),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
        "server_rss_start_mb": (sampler.start_rss / 2**20) if sampler is not None else 0.0,
        "server_rss_peak_mb": peak_server / 2**20,
        "errors": errors,
        "model": f"{bundle.model_version} ({bundle.booster.num_trees()} trees)",
        "compiled": bundle.compiled.state,
        "load": load(),
    }


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=1_000, help="requests per call (the API allows up to 10,000)")
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--quick", action="store_true", help="2,000 invoices in chunks of 500")
    parser.add_argument("--no-http", action="store_true", help="in process only")
    parser.add_argument("--lightgbm", action="store_true", help="decide with LightGBM only (no compiled model)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "retryopt-bench")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--make-requests", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_requests is not None:
        args.make_requests.write_text(json.dumps(simulated_requests(args.invoices, seed=args.seed)))
        print(json.dumps({"requests": args.invoices}))
        return
    if args.child is not None:
        print(json.dumps(child(args.child, args.chunk, http=not args.no_http, compiled=not args.lightgbm)))
        return
    n, chunk = (2_000, 500) if args.quick else (args.invoices, args.chunk)

    header(
        "batch_throughput: decide_batch / POST /v1/retry-decisions/batch vs raw LightGBM predict of the same rows",
        [
            f"{n:,} simulated failed invoices (seed {args.seed}), chunks of {chunk:,} requests, 14-day window, 4 retries",
            "raw = booster.predict(num_threads=1) of the exact stacked candidate matrix each chunk scored",
            f"target: decision path rows/s >= {TARGET:.0%} of raw predict rows/s",
        ],
    )
    t = time.perf_counter()
    path = requests_file(n, args.seed, args.work)
    requests = json.loads(path.read_text())
    codes = Counter(r["attempts"][-1]["decline_code"] for r in requests)
    countries = Counter(r["card"]["country"] for r in requests)
    history = Counter(len(r["attempts"]) for r in requests)
    print(
        f"requests ready in {time.perf_counter() - t:.1f} s ({path}): {len(codes)} last decline codes "
        f"(top: {', '.join(f'{c} {k}' for c, k in codes.most_common(4))}), {len(countries)} countries, "
        f"attempts so far {dict(sorted(history.items()))}"
    )

    measured = run_child(
        __file__,
        [
            "--child",
            str(path),
            "--chunk",
            str(chunk),
            *(["--no-http"] if args.no_http else []),
            *(["--lightgbm"] if args.lightgbm else []),
        ],
    )
    parts = measured["chunks"]
    http = not args.no_http
    rows = sum(c["rows"] for c in parts)
    decisions = sum(c["decisions"] for c in parts)
    t_parse = sum(c["parse"] for c in parts)
    t_decide = sum(c["decide"] for c in parts)
    t_inproc = t_parse + t_decide
    t_raw = sum(c["raw"] for c in parts)
    raw_rps = rows / t_raw
    print(
        f"\n{len(parts)} chunks, one child process (load after: {measured['load']}): {decisions:,} decisions "
        f"{measured['actions']}, {rows:,} candidate rows scored ({rows / decisions:.0f} per decision); "
        f"model {measured['model']}, compiled inference in process: {measured['compiled']}"
    )
    t_model = measured["stages"].get("predict: model (compiled or booster.predict)", 0.0)
    print(
        f"    the decision's own predict (compiled when ready) {t_model:.2f} s vs raw booster.predict {t_raw:.2f} s "
        f"of the same rows: {t_raw / t_model:.2f}x faster"
    )

    def line(name: str, seconds: float, per_chunk: list[float], with_decisions: bool = True) -> list[str]:
        return [
            name,
            f"{seconds:.1f}",
            f"{decisions / seconds:,.0f}" if with_decisions else "",
            f"{rows / seconds:,.0f}",
            f"{p50(per_chunk):,.0f}",
            f"{rows / seconds / raw_rps:.1%}",
        ]

    results = [
        line("raw booster.predict (same rows)", t_raw, [c["rows"] / c["raw"] for c in parts if c["raw"]], False),
        line("parse + decide_batch (in process)", t_inproc, [c["rows"] / (c["parse"] + c["decide"]) for c in parts]),
    ]
    if http:
        t_http = sum(c["http"] for c in parts)
        results.append(line("POST /v1/retry-decisions/batch", t_http, [c["rows"] / c["http"] for c in parts]))
    table(results, ["path", "seconds", "decisions/s", "rows/s", "rows/s (chunk p50)", "share of raw"])
    print(
        f"\n    target in process >= {TARGET:.0%} of raw: {verdict(t_raw / t_inproc >= TARGET)} ({t_raw / t_inproc:.1%})"
    )
    if http:
        print(
            f"    target HTTP >= {TARGET:.0%} of raw: {verdict(t_raw / t_http >= TARGET)} ({t_raw / t_http:.1%}); "
            f"errors: {measured['errors']}"
        )

    stage_rows = []
    for name in measured["top_level"]:
        value = measured["stages"].get(name, 0.0)
        stage_rows.append([name, f"{value:.2f}", f"{value / t_inproc:.1%}"])
        if name == "features: retry_feature_matrix":
            stage_rows.extend(
                [nested, f"{v:.2f}", f"{v / t_inproc:.1%}"]
                for nested, v in measured["stages"].items()
                if nested.startswith("  features/")
            )
    listed = sum(measured["stages"].get(name, 0.0) for name in measured["top_level"])
    stage_rows.append(
        [
            "other (concat, iloc, slot frame, pending.index, Decision assembly)",
            f"{t_inproc - listed:.2f}",
            f"{(t_inproc - listed) / t_inproc:.1%}",
        ]
    )
    print(f"\n    where the in-process time goes (all chunks, {t_inproc:.1f} s):")
    table(stage_rows, ["stage", "seconds", "share"])
    t_store = sum(c["store"] for c in parts)
    t_response = sum(c["response"] for c in parts)
    print("\n    the batch route's work around decide_batch (in process, scratch SQLite store, all chunks):")
    table(
        [
            ["store: card-update lookup + INSERT decisions + COMMIT", f"{t_store:.2f}", f"{t_store / t_inproc:.1%}"],
            ["response: to_response + BatchDecisionResponse JSON", f"{t_response:.2f}", f"{t_response / t_inproc:.1%}"],
        ],
        ["step", "seconds", "vs in-process decide"],
    )
    if http:
        gap = t_http - t_inproc - t_store - t_response
        print(f"    HTTP minus (in process + store + response): {gap:.1f} s ({gap / t_http:.1%} of the HTTP time)")

    print("\nmemory")
    mem = [
        [
            f"measuring child (in-process path), chunks of {chunk:,}",
            f"{measured['rss_before_mb']:.0f}",
            f"{measured['peak_rss_mb']:.0f}",
            "ru_maxrss (the raw run reuses each scored slice; nothing extra is kept)",
        ]
    ]
    if http:
        mem.append(
            [
                f"retryopt serve, chunks of {chunk:,}",
                f"{measured['server_rss_start_mb']:.0f}",
                f"{measured['server_rss_peak_mb']:.0f}",
                "RSS sampled every 50 ms",
            ]
        )
    table(mem, ["process", "RSS before MB", "peak RSS MB", "how"])


if __name__ == "__main__":
    main()
