"""KPI query time over one million stored outcomes, SQLite and PostgreSQL, and a month's KPI example.

Loads the simulator's attempts straight into the outcomes table (bulk insert, not timed), then
times `compute_kpis` (the SQL behind GET /v1/kpis) for all data, one week, and grouped.

    .venv/bin/python bench/kpis.py                 # 1,000,000 outcomes (~260k invoices)
    .venv/bin/python bench/kpis.py --outcomes 100000 --example   # also print a month's KPIs as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, insert, make_url, text

from serving.store import compute_kpis, make_engine, session_factory, upgrade_database
from serving.store.models import OUTCOMES
from training.simulate import simulate

POSTGRES_URL = os.environ.get("RETRYOPT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def outcome_rows(n_outcomes: int, seed: int) -> list[dict[str, Any]]:
    """Simulated attempts as outcome rows (about 3.85 attempts per invoice; a few extra invoices, cut to the count)."""
    attempts = simulate(max(1, round(n_outcomes / 3.6)), seed).attempts.head(n_outcomes)
    now = datetime.now(UTC)
    return [
        {
            "attempt_id": r.attempt_id,
            "invoice_id": r.invoice_id,
            "customer_id": r.customer_id,
            "attempted_at": r.attempted_at.to_pydatetime(),
            "succeeded": bool(r.succeeded),
            "amount": int(r.amount),
            "currency": r.currency,
            "decline_code": None if r.succeeded else r.decline_code,
            "network_decline_code": None,
            "merchant_advice_code": None,
            "decision_id": None,
            "card_fingerprint": r.card_fingerprint,
            "received_at": now,
        }
        for r in attempts.itertuples(index=False)
    ]


def timed(fn: Any, repeats: int = 3) -> float:
    """Median wall seconds of `fn()`."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def bench(url: str, rows: list[dict[str, Any]], label: str) -> None:
    """Load the rows into a fresh store at `url` and print KPI timings."""
    upgrade_database(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        for start in range(0, len(rows), 50_000):
            connection.execute(insert(OUTCOMES), rows[start : start + 50_000])
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
    sessions = session_factory(engine)
    week = (datetime(2025, 6, 2, tzinfo=UTC), datetime(2025, 6, 9, tzinfo=UTC))
    with sessions() as session:
        total = timed(lambda: compute_kpis(session))
        one_week = timed(lambda: compute_kpis(session, start=week[0], end=week[1]))
        grouped = timed(lambda: compute_kpis(session, group_by="decline_code"))
        failed = compute_kpis(session)["failed_invoices"]
    engine.dispose()
    print(
        f"{label:10s} outcomes={len(rows):,} failed_invoices={failed:,}  all data {total:.2f} s  "
        f"one week {one_week:.2f} s  group_by=decline_code {grouped:.2f} s"
    )


def postgres_schema_url() -> tuple[str, str]:
    """A fresh schema on the PostgreSQL server and a URL that uses it."""
    schema = f"retryopt_bench_{uuid.uuid4().hex[:10]}"
    with create_engine(POSTGRES_URL).begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def month_example(rows: list[dict[str, Any]], path: str) -> None:
    """Print the KPIs of one simulated month (June 2025) as the API returns them."""
    url = f"sqlite:///{path}"
    upgrade_database(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(insert(OUTCOMES), rows)
    with session_factory(engine)() as session:
        kpis = compute_kpis(session, start=datetime(2025, 6, 1, tzinfo=UTC), end=datetime(2025, 7, 1, tzinfo=UTC))
    print(json.dumps(kpis, indent=2, default=str))


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--outcomes", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--example", action="store_true", help="also print a simulated month's KPIs")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    rows = outcome_rows(args.outcomes, args.seed)
    scratch = f"/tmp/retryopt-kpis-{uuid.uuid4().hex[:8]}"
    bench(f"sqlite:///{scratch}.db", rows, "sqlite")
    url, schema = postgres_schema_url()
    try:
        bench(url, rows, "postgresql")
    finally:
        with create_engine(POSTGRES_URL).begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    if args.example:
        month_example(rows, f"{scratch}-month.db")


if __name__ == "__main__":
    main()
