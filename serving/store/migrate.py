"""Run the store's Alembic migrations from code (the app calls this at startup).

The Alembic ``Config`` is built here rather than read from an ``alembic.ini``, with
``script_location`` set to this package's ``migrations`` directory: it works from a source
checkout or an installed package, whatever the working directory.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import OperationalError

from serving.store.engine import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# PostgreSQL advisory-lock key held while migrating, so several app processes starting together
# don't race to create the same tables (one migrates, the others wait and find the schema current).
_PG_MIGRATION_LOCK = zlib.crc32(b"retryopt.store.migrations")
_SQLITE_LOCKED_RETRIES = 5


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for the store's migrations (``url`` for offline or standalone use).

    Also handy to make a new revision from the models::

        command.revision(alembic_config(url), message="add x", autogenerate=True)
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # Passed as an attribute, not an option: config options would read '%' as interpolation.
        config.attributes["url"] = url
    return config


def upgrade_database(url: str) -> None:
    """Bring the database at ``url`` to the latest schema (``alembic upgrade head``).

    Idempotent: a current database is left as is. Safe when several processes start at once:
    the migration runs under a lock (an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on
    SQLite) in one transaction, so the others wait and then find nothing to do.
    """
    for attempt in range(_SQLITE_LOCKED_RETRIES + 1):
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                _lock(connection)
                config = alembic_config(url)
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            return
        except OperationalError as exc:
            # SQLite can answer "database is locked" at once, without its busy wait, when processes
            # race on a database file that is just being created and switched to WAL. The upgrade
            # is one transaction (nothing half-done), so trying again is safe.
            if engine.dialect.name != "sqlite" or "locked" not in str(exc) or attempt == _SQLITE_LOCKED_RETRIES:
                raise
            time.sleep(0.2 * (attempt + 1))
        finally:
            engine.dispose()


def _lock(connection: Connection) -> None:
    """Take the migration lock for the rest of the connection's transaction."""
    name = connection.dialect.name
    if name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
    elif name == "sqlite":
        # The driver would only begin a transaction at the first INSERT; the DDL must be inside
        # one too, holding the write lock from the start (others wait for it: busy_timeout).
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def head_revision() -> str:
    """The newest revision in the package (what ``upgrade_database`` migrates to)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None when it was never migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
