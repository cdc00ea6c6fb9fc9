"""Tables of the store, as SQLAlchemy 2 declarative models.

Three append-only tables, one per thing the service learns about:

* ``decisions``: every retry decision the service answered, with the inputs that matter for
  reporting (card, decline code, amount) and what it answered (action, time, probability, policy).
* ``outcomes``: every charge attempt the scheduler reports (``POST /v1/outcomes``), keyed by the
  scheduler's ``attempt_id``. ``decision_id`` is deliberately not a foreign key: an outcome may
  arrive before its decision is stored, for a decision made elsewhere, or with no decision at all
  (the invoice's first, scheduled charge).
* ``card_updates``: every new card reported for a customer (``POST /v1/card-updates``).

Timestamps are timezone-aware UTC in and out on every database (see :class:`UTCDateTime`).
The schema itself is created only by the Alembic migrations in ``serving/store/migrations``;
these models describe it for queries and must stay in step with the latest revision (a test
compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint and index names, so migrations can refer to them on every database.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ACTIONS: tuple[str, ...] = ("retry", "stop")
POLICIES: tuple[str, ...] = ("learned", "control", "fallback")
CARD_UPDATE_SOURCES: tuple[str, ...] = ("account_updater", "customer")

# JSON on every database, stored as jsonb on PostgreSQL (normalised, comparable, indexable).
JSONType = JSON().with_variant(JSONB(), "postgresql")


def _utcnow() -> datetime:
    """The server clock, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamptz`` and returns aware values in the session's time zone; they
    are converted to UTC. SQLite has no time zone support: the value is stored as naive UTC text
    (which sorts and compares correctly as text) and UTC is attached when read back. Naive
    datetimes are refused on the way in, because guessing their zone silently shifts data.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Check the value is aware and express it in UTC (naive UTC for SQLite)."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"timestamp without a time zone: {value!r} (store aware UTC datetimes)")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored instant as an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


class Decision(Base):
    """One answered retry decision (``POST /v1/retry-decisions``, one row per decision)."""

    __tablename__ = "decisions"

    decision_id: Mapped[str] = mapped_column(String, primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String)
    customer_id: Mapped[str] = mapped_column(String)
    card_fingerprint: Mapped[str | None] = mapped_column(String)
    card_brand: Mapped[str] = mapped_column(String)
    card_country: Mapped[str | None] = mapped_column(String)
    card_funding: Mapped[str | None] = mapped_column(String)
    card_exp_month: Mapped[int | None] = mapped_column(Integer)
    card_exp_year: Mapped[int | None] = mapped_column(Integer)
    customer_timezone: Mapped[str | None] = mapped_column(String)
    billing_interval: Mapped[str | None] = mapped_column(String)
    customer_created_at: Mapped[datetime | None] = mapped_column()
    # The latest failure's decline code and how many attempts the invoice had when asked.
    decline_code: Mapped[str | None] = mapped_column(String)
    attempt_count: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String)
    # The request's `now` (a backtest decides in the past), and when the row was written.
    decided_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=_utcnow, server_default=func.now())
    action: Mapped[str] = mapped_column(String)
    retry_at: Mapped[datetime | None] = mapped_column()
    success_probability: Mapped[float | None] = mapped_column(Float)
    # P(the whole planned schedule recovers the invoice by window_end), and the expected hours from
    # decided_at to that success given that it does (None on stop).
    recovery_probability: Mapped[float | None] = mapped_column(Float)
    expected_hours_to_recovery: Mapped[float | None] = mapped_column(Float)
    expected_recovered_amount: Mapped[int] = mapped_column(BigInteger)
    schedule: Mapped[list[Any]] = mapped_column()
    reasons: Mapped[list[Any]] = mapped_column()
    next_step: Mapped[str | None] = mapped_column(String)
    model_version: Mapped[str] = mapped_column(String)
    policy: Mapped[str] = mapped_column(String)
    window_end: Mapped[datetime] = mapped_column()
    max_retries: Mapped[int] = mapped_column(Integer)
    # The rule id (serving.policy.rules) when a card-network or decline rule caused a stop or delay.
    blocked_by_rule: Mapped[str | None] = mapped_column(String)

    __table_args__ = (
        CheckConstraint("action IN ('retry', 'stop')", name="action"),
        CheckConstraint("policy IN ('learned', 'control', 'fallback')", name="policy"),
        Index(None, "invoice_id", "decided_at"),
        Index(None, "decided_at"),
        Index(None, "card_fingerprint", "decided_at"),
        Index(None, "customer_id", "decided_at"),
    )


class Outcome(Base):
    """One charge attempt the scheduler made and reported (``POST /v1/outcomes``)."""

    __tablename__ = "outcomes"

    attempt_id: Mapped[str] = mapped_column(String, primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String)
    customer_id: Mapped[str] = mapped_column(String)
    attempted_at: Mapped[datetime] = mapped_column()
    succeeded: Mapped[bool] = mapped_column(Boolean)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String)
    decline_code: Mapped[str | None] = mapped_column(String)
    network_decline_code: Mapped[str | None] = mapped_column(String)
    merchant_advice_code: Mapped[str | None] = mapped_column(String)
    # Not a foreign key: the outcome may come first, or without any decision.
    decision_id: Mapped[str | None] = mapped_column(String)
    card_fingerprint: Mapped[str | None] = mapped_column(String)
    received_at: Mapped[datetime] = mapped_column(default=_utcnow, server_default=func.now())

    __table_args__ = (
        Index(None, "invoice_id", "attempted_at"),
        Index(None, "attempted_at"),
        Index(None, "card_fingerprint", "attempted_at"),
        Index(None, "customer_id", "attempted_at"),
    )


class CardUpdate(Base):
    """A new card reported for a customer (``POST /v1/card-updates``)."""

    __tablename__ = "card_updates"

    update_id: Mapped[str] = mapped_column(String, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String)
    invoice_id: Mapped[str | None] = mapped_column(String)
    card: Mapped[dict[str, Any]] = mapped_column()
    card_fingerprint: Mapped[str | None] = mapped_column(String)
    updated_at: Mapped[datetime] = mapped_column()
    source: Mapped[str] = mapped_column(String)
    received_at: Mapped[datetime] = mapped_column(default=_utcnow, server_default=func.now())

    __table_args__ = (
        CheckConstraint("source IN ('account_updater', 'customer')", name="source"),
        Index(None, "customer_id", "updated_at"),
    )


def _table(model: type[Base]) -> Table:
    """The Core table of a model (typed as a ``Table`` for Core statements)."""
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - declarative tables are Tables
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


DECISIONS: Table = _table(Decision)
OUTCOMES: Table = _table(Outcome)
CARD_UPDATES: Table = _table(CardUpdate)
