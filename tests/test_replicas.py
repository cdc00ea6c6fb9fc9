"""Two serving processes on one PostgreSQL database: outcomes posted to either, the same KPIs from both."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from serving.settings import DEFAULT_MODEL_DIR
from tests.processes import running_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

POSTGRES_URL = os.environ.get("RETRYOPT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def shared_database() -> Iterator[str]:
    """A fresh schema on the PostgreSQL server, as a URL both replicas use."""
    admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {str(exc).splitlines()[0]}")
    schema = f"retryopt_replicas_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def outcome(i: int) -> dict[str, object]:
    """Invoice i fails on Nov 1 and, for even i, is recovered two days later."""
    return {
        "attempt_id": f"a{i}",
        "invoice_id": f"in_{i // 2}",
        "customer_id": f"cus_{i // 2}",
        "attempted_at": f"2026-11-0{1 + 2 * (i % 2)}T10:00:00Z",
        "succeeded": i % 2 == 1 and (i // 2) % 2 == 0,
        "amount": 2500,
        "currency": "usd",
        "decline_code": None if i % 2 == 1 and (i // 2) % 2 == 0 else "insufficient_funds",
    }


def test_two_replicas_share_one_store(shared_database: str, tmp_path: Path) -> None:
    env = {"RETRYOPT_DATABASE_URL": shared_database}
    args = ["--model", str(DEFAULT_MODEL_DIR)]
    with running_server(args, tmp_path, env) as first, running_server(args, tmp_path, env) as second:
        bodies = [outcome(i) for i in range(40)]
        for i, body in enumerate(bodies):
            target = first if i % 2 == 0 else second
            assert httpx.post(f"{target}/v1/outcomes", json=body, timeout=10).status_code == 201
        # A repeat sent to the other replica is recognised as the same outcome.
        assert httpx.post(f"{second}/v1/outcomes", json=bodies[0], timeout=10).json()["status"] == "duplicate"
        kpis = [httpx.get(f"{base}/v1/kpis", timeout=10).json() for base in (first, second)]
    assert kpis[0] == kpis[1]
    assert kpis[0]["failed_invoices"] == 20
    assert kpis[0]["recovered_invoices"] == 10
