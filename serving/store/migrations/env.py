"""Alembic environment: runs the store's revisions on a connection or URL given in code.

``serving.store.migrate.upgrade_database`` builds the Alembic ``Config`` itself and passes an
open connection in ``config.attributes["connection"]`` (so the store's engine settings and a
migration lock apply). ``config.attributes["url"]`` (or the ``sqlalchemy.url`` option) is used
for offline SQL generation (``alembic upgrade head --sql``) or when no connection is given.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from serving.store.engine import make_engine
from serving.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    """The database URL given in code, else in the config file."""
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass a connection or a URL to the Alembic config")
    return str(url)


def _configure(connection: Connection) -> None:
    """Point Alembic at ``connection`` and the store's metadata."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite can't ALTER most things
    )


def run_migrations_offline() -> None:
    """Write the SQL of the migrations instead of running it."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new one to the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.begin() as own:
            _configure(own)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
