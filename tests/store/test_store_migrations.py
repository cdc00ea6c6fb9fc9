"""The schema comes only from the Alembic migrations: from empty, idempotently, concurrently."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from serving.store import (
    OutcomeRecord,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    record_outcome,
    upgrade_database,
)
from serving.store.models import OUTCOMES, Base

TABLES = {"decisions", "outcomes", "card_updates", "alembic_version"}
INDEXES = {
    "decisions": {
        "ix_decisions_invoice_id_decided_at",
        "ix_decisions_decided_at",
        "ix_decisions_card_fingerprint_decided_at",
        "ix_decisions_customer_id_decided_at",
    },
    "outcomes": {
        "ix_outcomes_invoice_id_attempted_at",
        "ix_outcomes_attempted_at",
        "ix_outcomes_card_fingerprint_attempted_at",
        "ix_outcomes_customer_id_attempted_at",
    },
    "card_updates": {"ix_card_updates_customer_id_updated_at"},
}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_the_schema_from_empty(empty_db_url: str) -> None:
    assert _tables(empty_db_url) == set()
    upgrade_database(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) == TABLES
        for table, names in INDEXES.items():
            assert {index["name"] for index in inspector.get_indexes(table)} == names
        assert current_revision(engine) == head_revision() == "0003"
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_keeps_data(empty_db_url: str) -> None:
    upgrade_database(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as connection:
            record = OutcomeRecord(
                attempt_id="a1",
                invoice_id="in_1",
                customer_id="cus_1",
                attempted_at=datetime(2026, 1, 1, tzinfo=UTC),
                succeeded=True,
                amount=100,
                currency="usd",
            )
            with Session(connection) as session:
                assert record_outcome(session, record) == "created"
        upgrade_database(empty_db_url)
        upgrade_database(empty_db_url)
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            assert connection.execute(select(OUTCOMES.c.attempt_id)).scalars().all() == ["a1"]
    finally:
        engine.dispose()


def test_models_match_the_migrations(db_url: str) -> None:
    """Autogenerate finds nothing to change: models and revisions describe the same schema."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert _tables(db_url) == {"alembic_version"}
        upgrade_database(db_url)
        assert _tables(db_url) == TABLES
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_concurrent_upgrades_of_an_empty_database(empty_db_url: str) -> None:
    """App processes starting together: one migrates, the others wait and find it current."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait()
            upgrade_database(empty_db_url)
        except BaseException as exc:  # collected and reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _tables(empty_db_url) == TABLES


def test_upgrade_works_from_any_working_directory(
    empty_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    upgrade_database(empty_db_url)
    assert _tables(empty_db_url) == TABLES


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pragmas.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_timestamps_come_back_utc_aware(engine: Engine) -> None:
    paris_winter = timezone(timedelta(hours=1))
    given = datetime(2026, 1, 5, 9, 30, 15, 123456, tzinfo=paris_winter)
    with Session(engine) as session:
        record_outcome(
            session,
            OutcomeRecord(
                attempt_id="a1",
                invoice_id="in_1",
                customer_id="cus_1",
                attempted_at=given,
                succeeded=False,
                amount=100,
                currency="eur",
                decline_code="do_not_honor",
            ),
        )
        stored = session.execute(select(OUTCOMES.c.attempted_at, OUTCOMES.c.received_at)).one()
    assert stored.attempted_at == given
    assert stored.attempted_at.tzinfo == UTC
    assert stored.attempted_at.hour == 8
    assert stored.received_at.tzinfo == UTC


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        OutcomeRecord(
            attempt_id="a1",
            invoice_id="in_1",
            customer_id="cus_1",
            attempted_at=datetime(2026, 1, 5, 9, 30),
            succeeded=True,
            amount=100,
            currency="eur",
        )
