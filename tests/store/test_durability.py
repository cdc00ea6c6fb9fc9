"""Durability under load and faults: concurrent outcome writes while PostgreSQL connections are cut.

A real `retryopt serve` process writes to a PostgreSQL database of its own. Several client threads
post distinct outcomes, each resending the identical body until it gets a 2xx (a 503, a
connection error or a timeout means "not acknowledged"); some also resend outcomes already
acknowledged. Meanwhile a fault thread repeatedly kills the server's database connections
(``pg_terminate_backend``, scoped to this test's own database and ``application_name``, so no
other session is touched). Afterwards every acknowledged outcome must be stored exactly once with
the values sent, and resending everything must be answered 2xx without writing anything new.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from serving.settings import DEFAULT_MODEL_DIR
from tests.processes import running_server

pytestmark = pytest.mark.postgres

POSTGRES_URL = os.environ.get("RETRYOPT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

CLIENTS = 8
OUTCOMES_PER_CLIENT = 150
ACKS_PER_FAULT = 80  # a fault every 80 acknowledgements: 15 faults spread over the whole run
REQUEST_TIMEOUT_SECONDS = 5.0
GIVE_UP_SECONDS = 45.0  # one outcome still unacknowledged after this long fails the test
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


@dataclass
class Database:
    """A database of this test alone, and the application_name its server's connections carry."""

    name: str
    app_name: str
    url: str


@pytest.fixture
def own_database() -> Iterator[Database]:
    """A fresh database on the PostgreSQL server, dropped (with its connections) afterwards."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {str(exc).splitlines()[0]}")
    suffix = uuid.uuid4().hex[:12]
    name = f"retryopt_durability_{suffix}"
    app_name = f"retryopt-durability-{suffix}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(POSTGRES_URL).set(database=name).update_query_dict({"application_name": app_name})
        yield Database(name, app_name, url.render_as_string(hide_password=False))
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def outcome_body(client: int, index: int) -> dict[str, Any]:
    """Outcome `index` of client `client`: distinct attempt ids, a mix of failures and successes."""
    succeeded = index % 3 == 2
    return {
        "attempt_id": f"at_{client}_{index}",
        "invoice_id": f"in_{client}_{index // 3}",
        "customer_id": f"cus_{client}_{index // 30}",
        "attempted_at": (T0 + timedelta(minutes=17 * index + client)).isoformat().replace("+00:00", "Z"),
        "succeeded": succeeded,
        "amount": 1000 + 7 * index + client,
        "currency": "usd" if client % 2 == 0 else "eur",
        "decline_code": None if succeeded else "insufficient_funds",
        "network_decline_code": None if succeeded else "51",
        "merchant_advice_code": None,
    }


@dataclass
class Tally:
    """What the clients and the fault thread saw, shared between threads under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    acks: int = 0
    created: int = 0
    duplicates: int = 0
    resends: int = 0
    repeat_sends: int = 0
    repeat_duplicates: int = 0
    faults: int = 0
    killed: int = 0
    bad_503: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)


def send_until_acknowledged(client: httpx.Client, body: dict[str, Any], tally: Tally) -> str:
    """POST the identical body until a 2xx; returns the acknowledged status (`created`/`duplicate`)."""
    deadline = time.monotonic() + GIVE_UP_SECONDS
    first = True
    while True:
        if not first:
            with tally.lock:
                tally.resends += 1
        first = False
        if time.monotonic() > deadline:
            raise AssertionError(f"{body['attempt_id']} not acknowledged within {GIVE_UP_SECONDS} s")
        try:
            response = client.post("/v1/outcomes", json=body)
        except httpx.TransportError as exc:  # connection refused/reset, timeout: not acknowledged
            with tally.lock:
                tally.transport_errors[type(exc).__name__] += 1
            time.sleep(0.05)
            continue
        with tally.lock:
            tally.statuses[response.status_code] += 1
        if response.status_code in (200, 201):
            status = str(response.json()["status"])
            assert status == ("created" if response.status_code == 201 else "duplicate")
            return status
        if response.status_code == 503:
            retry_after = response.headers.get("Retry-After", "")
            code = response.json().get("code")
            if code != "store_unavailable" or not retry_after.isdigit() or int(retry_after) <= 0:
                with tally.lock:
                    tally.bad_503.append(f"{body['attempt_id']}: code={code} Retry-After={retry_after!r}")
            time.sleep(0.05)  # a real client waits Retry-After seconds; the test keeps the pressure on
            continue
        with tally.lock:
            tally.unexpected.append(f"{body['attempt_id']}: {response.status_code} {response.text[:200]}")
        raise AssertionError(f"{body['attempt_id']}: unexpected {response.status_code} {response.text[:300]}")


def run_client(base: str, client_no: int, bodies: list[dict[str, Any]], tally: Tally, errors: list[str]) -> None:
    """Post this client's outcomes in order; odd clients also resend every 5th acknowledged one at once."""
    try:
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            for index, body in enumerate(bodies):
                status = send_until_acknowledged(client, body, tally)
                with tally.lock:
                    tally.acks += 1
                    tally.created += status == "created"
                    tally.duplicates += status == "duplicate"
                    tally.acknowledged.add(body["attempt_id"])
                if client_no % 2 == 1 and index % 5 == 0:
                    # The acknowledgement "got lost": the client sends the same outcome again.
                    with tally.lock:
                        tally.repeat_sends += 1
                    repeat = send_until_acknowledged(client, body, tally)
                    with tally.lock:
                        tally.repeat_duplicates += repeat == "duplicate"
    except BaseException as exc:
        errors.append(f"client {client_no}: {exc!r}")


def cut_connections(database: Database, tally: Tally, stop: threading.Event, total_outcomes: int) -> None:
    """Kill every connection of the server to its database each time ACKS_PER_FAULT more outcomes are acknowledged."""
    admin = create_engine(
        POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"application_name": "durability-faults"}
    )
    kill = text(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = :db AND application_name = :app AND pid <> pg_backend_pid()"
    )
    next_fault_at = ACKS_PER_FAULT // 2
    try:
        with admin.connect() as connection:
            while not stop.is_set() and next_fault_at < total_outcomes:
                with tally.lock:
                    due = tally.acks >= next_fault_at
                if not due:
                    time.sleep(0.005)
                    continue
                killed = connection.execute(kill, {"db": database.name, "app": database.app_name}).scalar_one()
                with tally.lock:
                    tally.faults += 1
                    tally.killed += int(killed)
                next_fault_at += ACKS_PER_FAULT
    finally:
        admin.dispose()


def stored_outcomes(database: Database) -> tuple[int, dict[str, dict[str, Any]], list[str]]:
    """Row count, rows by attempt_id, and any attempt_id stored more than once."""
    engine = create_engine(database.url)
    try:
        with engine.connect() as connection:
            count = connection.execute(text("SELECT count(*) FROM outcomes")).scalar_one()
            repeated = list(
                connection.execute(
                    text("SELECT attempt_id FROM outcomes GROUP BY attempt_id HAVING count(*) > 1")
                ).scalars()
            )
            rows = connection.execute(text("SELECT * FROM outcomes")).mappings().all()
    finally:
        engine.dispose()
    return int(count), {row["attempt_id"]: dict(row) for row in rows}, repeated


def as_sent(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row in the shape of the body that was sent."""
    attempted_at = row["attempted_at"]
    if attempted_at.tzinfo is None:
        attempted_at = attempted_at.replace(tzinfo=UTC)
    return {
        "attempt_id": row["attempt_id"],
        "invoice_id": row["invoice_id"],
        "customer_id": row["customer_id"],
        "attempted_at": attempted_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "succeeded": row["succeeded"],
        "amount": row["amount"],
        "currency": row["currency"],
        "decline_code": row["decline_code"],
        "network_decline_code": row["network_decline_code"],
        "merchant_advice_code": row["merchant_advice_code"],
    }


def test_outcomes_survive_cut_connections(own_database: Database, tmp_path: Path) -> None:
    bodies = {c: [outcome_body(c, i) for i in range(OUTCOMES_PER_CLIENT)] for c in range(CLIENTS)}
    sent = {body["attempt_id"]: body for per_client in bodies.values() for body in per_client}
    assert len(sent) == CLIENTS * OUTCOMES_PER_CLIENT
    tally = Tally()
    errors: list[str] = []
    log_path = tmp_path / "server.log"
    started = time.monotonic()

    args = ["--model", str(DEFAULT_MODEL_DIR)]
    env = {"RETRYOPT_DATABASE_URL": own_database.url}
    with running_server(args, tmp_path, env, log_path=log_path) as base:
        stop = threading.Event()
        faults = threading.Thread(target=cut_connections, args=(own_database, tally, stop, len(sent)), daemon=True)
        clients = [
            threading.Thread(target=run_client, args=(base, c, bodies[c], tally, errors), daemon=True)
            for c in range(CLIENTS)
        ]
        faults.start()
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=GIVE_UP_SECONDS * 2)
        stop.set()
        faults.join(timeout=10)
        assert not any(thread.is_alive() for thread in clients), "a client hung"
        load_seconds = time.monotonic() - started

        count, rows, repeated = stored_outcomes(own_database)

        # Resend everything once more (4 threads): every answer a 2xx "duplicate", nothing new written.
        final: Counter[str] = Counter()
        final_errors: list[str] = []

        def resend_all(part: list[dict[str, Any]]) -> None:
            try:
                with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_SECONDS) as client:
                    for body in part:
                        final[send_until_acknowledged(client, body, Tally())] += 1
            except BaseException as exc:
                final_errors.append(repr(exc))

        everything = list(sent.values())
        resenders = [threading.Thread(target=resend_all, args=(everything[k::4],)) for k in range(4)]
        for thread in resenders:
            thread.start()
        for thread in resenders:
            thread.join(timeout=GIVE_UP_SECONDS * 2)
        count_after, _, _ = stored_outcomes(own_database)

    server_log = log_path.read_text()
    print(
        f"\ndurability: {len(sent)} outcomes from {CLIENTS} clients in {load_seconds:.1f} s; "
        f"acks {tally.acks} (created {tally.created}, duplicate {tally.duplicates}); "
        f"resends after no ack {tally.resends}; deliberate repeats of acked outcomes {tally.repeat_sends} "
        f"(answered duplicate {tally.repeat_duplicates}); "
        f"responses {dict(sorted(tally.statuses.items()))}; transport errors {dict(tally.transport_errors)}; "
        f"faults injected {tally.faults}; connections killed {tally.killed}; "
        f"rows stored {count}; final resend {dict(final)}, rows after {count_after}"
    )

    assert not errors, errors[:5]
    assert not tally.unexpected, tally.unexpected[:5]
    assert not tally.bad_503, tally.bad_503[:5]
    assert 500 not in tally.statuses
    assert "unhandled error" not in server_log and "Exception in ASGI application" not in server_log, server_log[-3000:]
    # The faults really happened, during the load.
    assert tally.faults >= len(sent) // ACKS_PER_FAULT - 1
    assert tally.killed >= tally.faults // 2
    # Every outcome was acknowledged, and stored exactly once with the values sent.
    assert tally.acknowledged == set(sent)
    assert repeated == []
    assert count == len(sent) == len(rows)
    mismatched = [key for key in sent if key not in rows or as_sent(rows[key]) != sent[key]]
    assert mismatched == [], mismatched[:5]
    # At most one "created" per outcome (fewer when a commit went through but its answer was lost):
    # every other 2xx, including each deliberate repeat, was recognised as a duplicate.
    assert tally.created + tally.duplicates == len(sent)
    assert tally.created <= len(sent)
    assert tally.repeat_duplicates == tally.repeat_sends
    # Resending everything is safe: all 2xx duplicates, no new row.
    assert not final_errors, final_errors[:5]
    assert final == Counter({"duplicate": len(sent)})
    assert count_after == count
