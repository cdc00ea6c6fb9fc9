"""Fixtures of the store tests: every test runs on SQLite and on PostgreSQL.

SQLite gets a file in the test's tmp_path; PostgreSQL (127.0.0.1:5432, database ``test``, or
``RETRYOPT_TEST_POSTGRES_URL``) gets a uniquely named schema per test, reached through the
connection's ``search_path`` and dropped afterwards, so tests are isolated, repeatable and safe
to run in parallel. PostgreSQL tests carry the ``postgres`` mark and are skipped, with the
reason, only when the server can't be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from serving.store import (
    DecisionRecord,
    OutcomeRecord,
    make_engine,
    record_decision,
    record_outcome,
    session_factory,
    upgrade_database,
)

POSTGRES_URL = os.environ.get("RETRYOPT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server URL, or a skip naming why it can't be used."""
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {str(exc).splitlines()[0]}")
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database (no tables), on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    schema = f"retryopt_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """URL of a database migrated to the latest schema."""
    upgrade_database(empty_db_url)
    return empty_db_url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine made by the store's own ``make_engine``."""
    made = make_engine(db_url)
    yield made
    made.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session from the store's ``session_factory``."""
    with session_factory(engine)() as opened:
        yield opened


# ---------------------------------------------------------------------------------------
# A small hand-made history, shared by the KPI and export tests.
#
# invoice  currency amount  first failure (UTC)      decline            later attempts             recovered
# in_A     usd      1000    Mon 2026-03-02 10:00     insufficient_funds fail +24h, success +48h    attempt 3, 48 h
# in_B     usd      2000    Tue 2026-03-03 10:00     do_not_honor       success +12.5h             attempt 2, 12.5 h
# in_D     usd      1500    Wed 2026-03-04 12:00     expired_card       fail +24h                  no
# in_C     eur      3000    Mon 2026-03-09 08:00     insufficient_funds fail +24h, +48h; ok +78h   attempt 4, 78 h
# in_E     eur       500    Sun 2026-03-15 23:30     stolen_card        -                          no
# in_F     usd       700    first attempt succeeded (not a failed invoice)
#
# Decisions: A first (m1, learned, mastercard/CA) then latest (m2, control, visa/US); B (m1,
# control, mastercard/GB); C (m2, learned, visa/FR; one delay with a rule: action retry, so not
# a block); D none; E (m1, fallback, amex/FR) two stops blocked by a rule and one stop without;
# F a blocked stop (not a failed invoice, so never counted).

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


def _attempt(
    attempt_id: str, invoice: str, at: datetime, ok: bool, amount: int, currency: str, code: str | None = None
) -> OutcomeRecord:
    return OutcomeRecord(
        attempt_id=attempt_id,
        invoice_id=invoice,
        customer_id=f"cus_{invoice[-1]}",
        attempted_at=at,
        succeeded=ok,
        amount=amount,
        currency=currency,
        decline_code=None if ok else code,
        network_decline_code=None if ok else "51",
        merchant_advice_code=None,
    )


HISTORY_OUTCOMES: tuple[OutcomeRecord, ...] = (
    _attempt("a1", "in_A", T0, False, 1000, "usd", "insufficient_funds"),
    _attempt("a2", "in_A", T0 + 24 * H, False, 1000, "usd", "insufficient_funds"),
    _attempt("a3", "in_A", T0 + 48 * H, True, 1000, "usd"),
    _attempt("b1", "in_B", datetime(2026, 3, 3, 10, 0, tzinfo=UTC), False, 2000, "usd", "do_not_honor"),
    # Given in +02:00: 2026-03-03 22:30 UTC, 12.5 hours after b1.
    _attempt("b2", "in_B", datetime.fromisoformat("2026-03-04T00:30:00+02:00"), True, 2000, "usd"),
    _attempt("d1", "in_D", datetime(2026, 3, 4, 12, 0, tzinfo=UTC), False, 1500, "usd", "expired_card"),
    _attempt("d2", "in_D", datetime(2026, 3, 5, 12, 0, tzinfo=UTC), False, 1500, "usd", "expired_card"),
    _attempt("c1", "in_C", datetime(2026, 3, 9, 8, 0, tzinfo=UTC), False, 3000, "eur", "insufficient_funds"),
    _attempt("c2", "in_C", datetime(2026, 3, 10, 8, 0, tzinfo=UTC), False, 3000, "eur", "insufficient_funds"),
    _attempt("c3", "in_C", datetime(2026, 3, 11, 8, 0, tzinfo=UTC), False, 3000, "eur", "insufficient_funds"),
    _attempt("c4", "in_C", datetime(2026, 3, 12, 14, 0, tzinfo=UTC), True, 3000, "eur"),
    _attempt("e1", "in_E", datetime(2026, 3, 15, 23, 30, tzinfo=UTC), False, 500, "eur", "stolen_card"),
    _attempt("f1", "in_F", datetime(2026, 3, 5, 9, 0, tzinfo=UTC), True, 700, "usd"),
    _attempt("f2", "in_F", datetime(2026, 4, 5, 9, 0, tzinfo=UTC), False, 700, "usd", "insufficient_funds"),
)


def _decision(
    decision_id: str,
    invoice: str,
    decided_at: datetime,
    *,
    amount: int,
    currency: str,
    brand: str,
    country: str,
    model: str,
    policy: str,
    action: str = "retry",
    rule: str | None = None,
) -> DecisionRecord:
    retry_at = None if action == "stop" else decided_at + 24 * H
    return DecisionRecord(
        decision_id=decision_id,
        invoice_id=invoice,
        customer_id=f"cus_{invoice[-1]}",
        card_brand=brand,
        card_country=country,
        card_funding="debit",
        card_fingerprint=f"fp_{invoice}_{brand}",
        card_exp_month=4,
        card_exp_year=2027,
        customer_timezone="America/Chicago",
        billing_interval="month",
        decline_code="insufficient_funds",
        attempt_count=1,
        amount=amount,
        currency=currency,
        decided_at=decided_at,
        action=action,
        retry_at=retry_at,
        success_probability=None if retry_at is None else 0.4,
        expected_recovered_amount=0 if retry_at is None else amount * 4 // 10,
        schedule=[] if retry_at is None else [{"retry_at": retry_at, "success_probability": 0.4}],
        reasons=["test"],
        next_step=None,
        model_version=model,
        policy=policy,
        window_end=decided_at + 14 * 24 * H,
        max_retries=4,
        blocked_by_rule=rule,
    )


HISTORY_DECISIONS: tuple[DecisionRecord, ...] = (
    _decision("dA1", "in_A", T0 + 0.1 * H, amount=1000, currency="usd", brand="mastercard", country="CA", model="m1", policy="learned"),
    _decision("dA2", "in_A", T0 + 24.1 * H, amount=1000, currency="usd", brand="visa", country="US", model="m2", policy="control"),
    _decision("dB1", "in_B", datetime(2026, 3, 3, 10, 5, tzinfo=UTC), amount=2000, currency="usd", brand="mastercard", country="GB", model="m1", policy="control"),
    _decision("dC1", "in_C", datetime(2026, 3, 9, 8, 5, tzinfo=UTC), amount=3000, currency="eur", brand="visa", country="FR", model="m2", policy="learned"),
    _decision("dC2", "in_C", datetime(2026, 3, 10, 8, 5, tzinfo=UTC), amount=3000, currency="eur", brand="visa", country="FR", model="m2", policy="learned", rule="min_spacing_24h"),
    _decision("dE1", "in_E", datetime(2026, 3, 15, 23, 35, tzinfo=UTC), amount=500, currency="eur", brand="amex", country="FR", model="m1", policy="fallback", action="stop", rule="hard_decline"),
    _decision("dE2", "in_E", datetime(2026, 3, 16, 9, 0, tzinfo=UTC), amount=500, currency="eur", brand="amex", country="FR", model="m1", policy="fallback", action="stop", rule="hard_decline"),
    _decision("dE3", "in_E", datetime(2026, 3, 17, 9, 0, tzinfo=UTC), amount=500, currency="eur", brand="amex", country="FR", model="m1", policy="learned", action="stop"),
    _decision("dF1", "in_F", datetime(2026, 4, 5, 9, 5, tzinfo=UTC), amount=700, currency="usd", brand="visa", country="US", model="m1", policy="learned", action="stop", rule="hard_decline"),
)  # fmt: skip


@pytest.fixture
def history(session: Session) -> Session:
    """The session, with the hand-made history stored (outcomes in a shuffled order)."""
    order = [7, 0, 12, 3, 9, 1, 5, 13, 2, 11, 4, 8, 6, 10]
    assert sorted(order) == list(range(len(HISTORY_OUTCOMES)))
    for index in order:
        assert record_outcome(session, HISTORY_OUTCOMES[index]) == "created"
    for decision in reversed(HISTORY_DECISIONS):
        record_decision(session, decision)
    return session
