"""Engines and sessions for the store, tuned per database.

SQLite (development, tests, single-host deployments) and PostgreSQL (production) are both
supported. ``make_engine`` is the one place the connection settings live, so the app, the
migrations and the CLI all talk to the database the same way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

# How long a SQLite writer waits for another writer's lock before failing ("database is locked").
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, echo: bool = False, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the settings the store relies on.

    SQLite: ``check_same_thread=False`` (a pooled connection may serve another thread of the
    app), WAL journal (readers don't block the writer), a ``busy_timeout`` so concurrent writers
    wait for each other instead of failing, and foreign keys enforced. These are set on every
    new connection. An in-memory database (``sqlite://``) keeps WAL off, as SQLite does.

    PostgreSQL: ``pool_pre_ping=True`` so a connection dropped by the server or a proxy is
    replaced instead of failing the next request.

    Extra keyword arguments go to :func:`sqlalchemy.create_engine` and win over the defaults.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args = {"check_same_thread": False, **kwargs.pop("connect_args", {})}
        engine = create_engine(parsed, echo=echo, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    options: dict[str, Any] = {"pool_pre_ping": True, **kwargs}
    return create_engine(parsed, echo=echo, **options)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection SQLite pragmas: WAL, busy timeout, foreign keys.

    ``synchronous`` stays at SQLite's default (FULL): a commit survives a power cut, which is what
    "a 2xx means durably stored" needs.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")  # persistent for a file; ignored in memory
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``.

    ``expire_on_commit=False``: the repository commits before returning, and a route may still
    read the objects it holds afterwards without a round trip.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


def is_reachable(engine: Engine) -> bool:
    """True when a ``SELECT 1`` succeeds (for ``GET /readyz``)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True
