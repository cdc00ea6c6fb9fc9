"""Repository functions: record decisions, outcomes and card updates; read them back.

Plain functions over a SQLAlchemy ``Session`` so HTTP routes, the CLI and tests share them.
Every write function commits before it returns: for the API, a 2xx means durably stored.

Idempotency (``record_outcome``, ``record_card_update``) is enforced by the database, not by a
read-then-write in Python, so it holds under concurrent requests on any number of processes:
``INSERT … ON CONFLICT DO NOTHING`` on the primary key, then, when nothing was inserted, the
stored row is read and compared with the request. Same content: ``"duplicate"`` (nothing
written). Different content: a :class:`ConflictError` (the route answers 409), because silently
keeping either version would hide a scheduler bug.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from typing import Any, Literal

import pandas as pd
from sqlalchemy import ColumnElement, ScalarSelect, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from features.contract import CONTRACT_COLUMNS
from serving.store.models import ACTIONS, CARD_UPDATE_SOURCES, CARD_UPDATES, DECISIONS, OUTCOMES, POLICIES

Created = Literal["created", "duplicate"]

# Contract §1 columns, in the contract's order (one list, in features.contract).
ATTEMPTS_COLUMNS: tuple[str, ...] = CONTRACT_COLUMNS
# Written after the contract columns by ``outcomes_frame`` (extra columns are allowed by §1).
EXTRA_EXPORT_COLUMNS: tuple[str, ...] = ("decision_id",)
UNKNOWN_CARD_BRAND = "unknown"


class ConflictError(Exception):
    """A record with this key is already stored with different content."""

    def __init__(self, kind: str, key: str, differing: Sequence[str]) -> None:
        self.kind = kind
        self.key = key
        self.differing = tuple(differing)
        super().__init__(
            f"{kind} {key!r} was already stored with different content (differs in: {', '.join(self.differing)})"
        )


class OutcomeConflict(ConflictError):  # noqa: N818 (name used by the routes: "OutcomeConflict → 409")
    """An outcome with this ``attempt_id`` is already stored with different content."""


class CardUpdateConflict(ConflictError):  # noqa: N818 (named like OutcomeConflict)
    """A card update with this ``update_id`` is already stored with different content."""


# ---------------------------------------------------------------------------------------
# Records


def _require_aware(name: str, value: datetime | None) -> None:
    """Refuse naive timestamps: the store keeps instants, not wall-clock times."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware (got {value!r})")


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """One answered retry decision, as stored in ``decisions`` (one field per column).

    ``decided_at`` is the request's ``now``; ``decline_code`` the latest failure's;
    ``attempt_count`` the attempts the invoice had so far; ``blocked_by_rule`` the id of the rule
    that forced a stop or a delay, if any. ``schedule`` items may hold datetimes: they are stored
    as ISO 8601 UTC text. ``created_at`` is set by the store.
    """

    decision_id: str
    invoice_id: str
    customer_id: str
    card_brand: str
    decline_code: str | None
    attempt_count: int
    amount: int
    currency: str
    decided_at: datetime
    action: str
    retry_at: datetime | None
    success_probability: float | None
    expected_recovered_amount: int
    schedule: list[Any]
    reasons: list[str]
    model_version: str
    policy: str
    window_end: datetime
    max_retries: int
    next_step: str | None = None
    recovery_probability: float | None = None
    expected_hours_to_recovery: float | None = None
    blocked_by_rule: str | None = None
    card_fingerprint: str | None = None
    card_country: str | None = None
    card_funding: str | None = None
    card_exp_month: int | None = None
    card_exp_year: int | None = None
    customer_timezone: str | None = None
    billing_interval: str | None = None
    customer_created_at: datetime | None = None
    created_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("decided_at", "retry_at", "window_end", "customer_created_at", "created_at"):
            _require_aware(name, getattr(self, name))
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)} (got {self.action!r})")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)} (got {self.policy!r})")


@dataclass(frozen=True, kw_only=True)
class OutcomeRecord:
    """One reported attempt (``POST /v1/outcomes``), as stored in ``outcomes``.

    ``card_fingerprint`` is not part of the contract's request: a route may fill it (e.g. from
    the decision). It is not compared when a repeat arrives, and the first stored value is kept.
    ``received_at`` is set by the store.
    """

    attempt_id: str
    invoice_id: str
    customer_id: str
    attempted_at: datetime
    succeeded: bool
    amount: int
    currency: str
    decline_code: str | None = None
    network_decline_code: str | None = None
    merchant_advice_code: str | None = None
    decision_id: str | None = None
    card_fingerprint: str | None = field(default=None, compare=False)
    received_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _require_aware("attempted_at", self.attempted_at)
        _require_aware("received_at", self.received_at)


@dataclass(frozen=True, kw_only=True)
class CardUpdateRecord:
    """A new card for a customer (``POST /v1/card-updates``), as stored in ``card_updates``.

    ``card`` holds the card fields (brand, funding, country, exp_month, exp_year, fingerprint);
    keys whose value is None are dropped, so "absent" and "null" are the same card.
    ``card_fingerprint`` defaults to ``card["fingerprint"]``. ``received_at`` is set by the store.
    """

    update_id: str
    customer_id: str
    card: Mapping[str, Any]
    updated_at: datetime
    source: str
    invoice_id: str | None = None
    card_fingerprint: str | None = None
    received_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _require_aware("updated_at", self.updated_at)
        _require_aware("received_at", self.received_at)
        if self.source not in CARD_UPDATE_SOURCES:
            raise ValueError(f"source must be one of {', '.join(CARD_UPDATE_SOURCES)} (got {self.source!r})")
        card = {key: value for key, value in self.card.items() if value is not None}
        object.__setattr__(self, "card", card)
        if self.card_fingerprint is None and isinstance(card.get("fingerprint"), str):
            object.__setattr__(self, "card_fingerprint", card["fingerprint"])


# Fields compared when a record with the same key arrives again ("same content").
_OUTCOME_CONTENT = tuple(f.name for f in fields(OutcomeRecord) if f.compare and f.name != "attempt_id")
_CARD_UPDATE_CONTENT = tuple(f.name for f in fields(CardUpdateRecord) if f.compare and f.name != "update_id")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601 UTC text ("…Z"), recursively; other values unchanged."""
    if isinstance(value, datetime):
        _require_aware("timestamp in JSON", value)
        return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    return value


# ---------------------------------------------------------------------------------------
# Writes


def record_decision(session: Session, record: DecisionRecord) -> None:
    """Store one decision and commit. A repeated ``decision_id`` raises ``IntegrityError``."""
    record_decisions(session, [record])


def record_decisions(session: Session, records: Iterable[DecisionRecord]) -> None:
    """Store decisions in one transaction (the batch endpoint) and commit."""
    rows = []
    now = _utcnow()
    for record in records:
        row = {f.name: getattr(record, f.name) for f in fields(DecisionRecord)}
        row["schedule"] = _jsonable(record.schedule)
        row["reasons"] = _jsonable(record.reasons)
        row["created_at"] = record.created_at or now
        rows.append(row)
    if not rows:
        return
    try:
        session.execute(DECISIONS.insert(), rows)
        session.commit()
    except BaseException:
        session.rollback()
        raise


def record_outcome(session: Session, record: OutcomeRecord) -> Created:
    """Store a reported attempt once; idempotent on ``attempt_id``.

    Returns ``"created"`` when stored now, ``"duplicate"`` when an identical outcome was already
    stored (nothing is written). Raises :class:`OutcomeConflict` when ``attempt_id`` is stored
    with different content (any of: invoice_id, customer_id, attempted_at, succeeded, amount,
    currency, decline_code, network_decline_code, merchant_advice_code, decision_id). Commits.
    """
    values = {f.name: getattr(record, f.name) for f in fields(OutcomeRecord)}
    values["received_at"] = record.received_at or _utcnow()
    outcomes = OUTCOMES
    try:
        if _insert_if_absent(session, outcomes, values, outcomes.c.attempt_id):
            session.commit()
            return "created"
        stored = session.execute(select(outcomes).where(outcomes.c.attempt_id == record.attempt_id)).mappings().one()
        differing = [name for name in _OUTCOME_CONTENT if not _same(stored[name], values[name])]
        session.commit()
    except BaseException:
        session.rollback()
        raise
    if differing:
        raise OutcomeConflict("outcome", record.attempt_id, differing)
    return "duplicate"


def record_card_update(session: Session, record: CardUpdateRecord) -> Created:
    """Store a card update once; idempotent on ``update_id``.

    Returns ``"created"`` or ``"duplicate"`` as :func:`record_outcome` does; raises
    :class:`CardUpdateConflict` when ``update_id`` is stored with different content (customer_id,
    invoice_id, card, card_fingerprint, updated_at or source). Commits.
    """
    values = {f.name: getattr(record, f.name) for f in fields(CardUpdateRecord)}
    values["card"] = _jsonable(record.card)
    values["received_at"] = record.received_at or _utcnow()
    updates = CARD_UPDATES
    try:
        if _insert_if_absent(session, updates, values, updates.c.update_id):
            session.commit()
            return "created"
        stored = session.execute(select(updates).where(updates.c.update_id == record.update_id)).mappings().one()
        differing = [name for name in _CARD_UPDATE_CONTENT if not _same(stored[name], values[name])]
        session.commit()
    except BaseException:
        session.rollback()
        raise
    if differing:
        raise CardUpdateConflict("card update", record.update_id, differing)
    return "duplicate"


def _insert_if_absent(session: Session, table: Table, values: Mapping[str, Any], key: ColumnElement[str]) -> bool:
    """``INSERT … ON CONFLICT (key) DO NOTHING``; True when the row was inserted.

    The database arbitrates concurrent inserts of the same key: on PostgreSQL a second inserter
    waits for the first transaction and then does nothing; on SQLite writers are serialised.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg_stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing(index_elements=[key])
        return session.execute(pg_stmt.returning(key)).first() is not None
    if dialect == "sqlite":
        lite_stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=[key])
        return session.execute(lite_stmt.returning(key)).first() is not None
    raise NotImplementedError(f"the store supports PostgreSQL and SQLite, not {dialect}")


def _same(stored: Any, given: Any) -> bool:
    """Equality of a stored value and a request value (timestamps compared as instants)."""
    if isinstance(stored, datetime) and isinstance(given, datetime):
        return stored.astimezone(UTC) == given.astimezone(UTC)
    return bool(stored == given)


# ---------------------------------------------------------------------------------------
# Reads


def get_decision(session: Session, decision_id: str) -> DecisionRecord | None:
    """The stored decision with this id, or None."""
    row = session.execute(select(DECISIONS).where(DECISIONS.c.decision_id == decision_id)).mappings().first()
    if row is None:
        return None
    return DecisionRecord(**{f.name: row[f.name] for f in fields(DecisionRecord)})


def latest_card_update(session: Session, customer_id: str) -> CardUpdateRecord | None:
    """The customer's most recent card update (by ``updated_at``), or None.

    Contract §2: a decision for the customer's failed invoices whose last failure precedes its
    ``updated_at`` treats the card as new.
    """
    updates = CARD_UPDATES
    row = (
        session.execute(
            select(updates)
            .where(updates.c.customer_id == customer_id)
            .order_by(updates.c.updated_at.desc(), updates.c.received_at.desc(), updates.c.update_id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return CardUpdateRecord(**{f.name: row[f.name] for f in fields(CardUpdateRecord)})


# Built once (it runs on every decision): building a statement took most of the read's time.
_CARD_UPDATE_TIMES = (
    select(CARD_UPDATES.c.customer_id, CARD_UPDATES.c.invoice_id, func.max(CARD_UPDATES.c.updated_at))
    .where(CARD_UPDATES.c.customer_id.in_(bindparam("customers", expanding=True)))
    .group_by(CARD_UPDATES.c.customer_id, CARD_UPDATES.c.invoice_id)
)


def card_update_times(session: Session, customer_ids: Sequence[str]) -> list[tuple[str, str | None, datetime]]:
    """(customer, invoice or None for every invoice, latest updated_at) of the customers' card updates."""
    if not customer_ids:
        return []
    rows = session.execute(_CARD_UPDATE_TIMES, {"customers": list(customer_ids)}).all()
    return [(str(customer), invoice, at) for customer, invoice, at in rows]


def invoice_decision_value(column: str, invoice_id: ColumnElement[str], *, latest: bool = True) -> ScalarSelect[Any]:
    """A column of an invoice's latest (or first) decision, as a correlated scalar subquery.

    Latest means the greatest ``decided_at``, ties broken by ``created_at`` then
    ``decision_id`` (first: the smallest); NULL when the invoice has no decision. Each
    evaluation is a seek on the ``(invoice_id, decided_at)`` index, so the cost stays linear in
    the number of invoices on both databases (SQLite can turn a join to a window-ranked
    subquery into a nested scan).
    """
    pick = DECISIONS.alias("pick")
    order = (pick.c.decided_at, pick.c.created_at, pick.c.decision_id)
    return (
        select(pick.c[column])
        .where(pick.c.invoice_id == invoice_id)
        .order_by(*(part.desc() for part in order) if latest else order)
        .limit(1)
        .scalar_subquery()
    )


def outcomes_frame(session: Session, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    """Stored outcomes as a contract §1 attempts dataset (for ``retryopt export``).

    One row per stored outcome, ordered by invoice, ``attempted_at`` and ``attempt_id``, with
    the contract columns in the contract's order followed by ``decision_id``. Whole invoices
    are exported: ``since``/``until`` select the invoices whose *first* stored attempt is in
    ``[since, until)``, never part of an invoice's history (partial histories corrupt the
    point-in-time features). Timestamps are ``datetime64[ns, UTC]``.

    Outcomes carry no card, so the card columns, ``customer_timezone``, ``billing_interval`` and
    ``customer_created_at`` come from the invoice's latest stored decision, and
    ``card_fingerprint`` from the outcome itself when it has one, else that decision. The
    contract requires ``card_brand``: invoices no decision described get ``"unknown"``; the
    other columns are left missing.
    """
    _require_aware("since", since)
    _require_aware("until", until)
    outcomes = OUTCOMES
    filtered = since is not None or until is not None
    invoices = select(outcomes.c.invoice_id).group_by(outcomes.c.invoice_id)
    if filtered:
        in_range = select(outcomes.c.invoice_id)
        if since is not None:
            in_range = in_range.where(outcomes.c.attempted_at >= since)
            invoices = invoices.having(func.min(outcomes.c.attempted_at) >= since)
        if until is not None:
            in_range = in_range.where(outcomes.c.attempted_at < until)
            invoices = invoices.having(func.min(outcomes.c.attempted_at) < until)
        # A first attempt in range means some attempt is in range: the attempted_at index finds them.
        invoices = invoices.where(outcomes.c.invoice_id.in_(in_range))
    latest = DECISIONS.alias("latest")
    query = (
        select(
            outcomes.c.invoice_id,
            outcomes.c.customer_id,
            outcomes.c.attempt_id,
            outcomes.c.attempted_at,
            outcomes.c.amount,
            outcomes.c.currency,
            outcomes.c.succeeded,
            outcomes.c.decline_code,
            outcomes.c.network_decline_code,
            outcomes.c.merchant_advice_code,
            func.coalesce(latest.c.card_brand, UNKNOWN_CARD_BRAND).label("card_brand"),
            latest.c.card_funding,
            latest.c.card_country,
            latest.c.customer_timezone,
            latest.c.card_exp_month,
            latest.c.card_exp_year,
            func.coalesce(outcomes.c.card_fingerprint, latest.c.card_fingerprint).label("card_fingerprint"),
            latest.c.billing_interval,
            latest.c.customer_created_at,
            outcomes.c.decision_id,
        )
        .select_from(
            outcomes.outerjoin(
                latest, latest.c.decision_id == invoice_decision_value("decision_id", outcomes.c.invoice_id)
            )
        )
        .order_by(outcomes.c.invoice_id, outcomes.c.attempted_at, outcomes.c.attempt_id)
    )
    if filtered:
        query = query.where(outcomes.c.invoice_id.in_(invoices))
    rows = session.execute(query).all()
    names = (*ATTEMPTS_COLUMNS, *EXTRA_EXPORT_COLUMNS)
    # Column by column: much faster than DataFrame.from_records on Row objects.
    values = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    raw = pd.DataFrame(
        {name: pd.Series(list(column), dtype=object) for name, column in zip(names, values, strict=True)}
    )
    return _typed_export(raw)


def _typed_export(raw: pd.DataFrame) -> pd.DataFrame:
    """Give the exported frame the dtypes of a loaded attempts dataset."""
    out: dict[str, pd.Series] = {}
    for name in raw.columns:
        values = raw[name]
        if name in ("attempted_at", "customer_created_at"):
            out[name] = pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")
        elif name == "amount":
            out[name] = values.astype("int64")
        elif name == "succeeded":
            out[name] = values.astype(bool)
        elif name in ("card_exp_month", "card_exp_year"):
            out[name] = values.astype("Int64")
        else:
            out[name] = values.astype("str")
    return pd.DataFrame(out, index=raw.index)
