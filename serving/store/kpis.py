"""Recovery KPIs (contract §2, ``GET /v1/kpis``), computed in SQL on SQLite and PostgreSQL.

Every KPI describes a cohort of **failed invoices**: invoices whose first stored attempt
(earliest ``attempted_at``, ties broken by ``attempt_id``) failed. ``start``/``end`` (the API's
``from``/``to``) select the cohort by that first failure's time, ``start`` inclusive and ``end``
exclusive. The per-invoice work (first failure, first success, hours, retries, groups, medians) is
done by the database in one statement, reading the outcomes once (one window sort); Python only
adds up the few (group × currency) rows it returns and derives the ratios. With a time range, the invoices are
found through the ``attempted_at`` index and their attempts through ``(invoice_id,
attempted_at)``.

Definitions (per cohort, and per group with ``group_by``):

* ``failed_invoices``: invoices whose first attempt failed.
* ``recovered_invoices``: of those, invoices with a later successful attempt.
* ``recovery_rate``: ``recovered_invoices / failed_invoices``.
* ``failed_amount``: ``{currency: Σ first attempt's amount}`` (minor units). An invoice's
  currency is its first attempt's.
* ``recovered_amount``: ``{currency: Σ amount of the first successful attempt}`` over recovered
  invoices (every currency of ``failed_amount`` is present, 0 when nothing was recovered).
* ``amount_recovery_rate_by_currency``: ``{currency: recovered_amount / failed_amount}``.
  Amounts in different currencies can't be added, so ``amount_recovery_rate`` is that rate
  when the cohort has one currency and ``None`` when it has several.
* ``median_hours_to_recovery``, ``mean_hours_to_recovery``: hours from the first failure to the
  first success, over recovered invoices (median of an even count: mean of the middle two).
* ``attempts_per_recovery``: mean number of retries (attempts after the first) up to and
  including the successful one, over recovered invoices (recovered at the first retry: 1).
* ``involuntary_churn_rate``: ``1 − recovery_rate`` (failed invoices never recovered / failed).
* ``recovered_ltv``: ``{currency: round(recovered_amount × ltv_periods)}``: a recovered
  customer is assumed to keep paying the recovered invoice's amount for ``ltv_periods`` billing
  periods (the recovered one included); ``ltv_periods`` is an operator setting (default 12).
* ``retries_blocked_by_rules``: decisions with action ``stop`` and a ``blocked_by_rule``, made
  for the cohort's invoices (so it is counted in the invoice's period and group like the rest).
* ``recovered_after_card_update``: recovered invoices whose first success came strictly after a
  card update (``POST /v1/card-updates``) of the invoice's customer (its first attempt's), for that
  invoice or customer-wide (no ``invoice_id``), that itself came strictly after the invoice's first
  failure: the recoveries a new card made possible, which retry timing alone would not have.
* ``recovered_after_card_update_rate``: ``recovered_after_card_update / failed_invoices``, so
  ``recovery_rate`` splits into recoveries after a card update and the rest.

Ratios and means are ``None`` when their denominator is 0. ``group_by`` values (always strings):

* ``decline_code``: the first failure's decline code (``"unknown"`` if missing);
* ``card_brand``, ``card_country``: from the invoice's latest decision (``"unknown"`` if none);
* ``attempt_number``: the attempt number that succeeded (first attempt = 1, so ``"2"`` is the
  first retry), ``"not_recovered"`` for invoices never recovered;
* ``model_version``, ``policy``: of the invoice's first decision (``"none"`` if none);
* ``week``: Monday (``YYYY-MM-DD``, ISO week, UTC) of the week of the first failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CTE,
    CompoundSelect,
    Float,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    extract,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from serving.store.models import CARD_UPDATES, DECISIONS, OUTCOMES
from serving.store.repository import invoice_decision_value

GROUP_BY_CHOICES: tuple[str, ...] = (
    "decline_code",
    "card_brand",
    "card_country",
    "attempt_number",
    "model_version",
    "policy",
    "week",
)
UNKNOWN = "unknown"
NO_DECISION = "none"
NOT_RECOVERED = "not_recovered"
_TOTAL = "__total__"
# Row kinds of the KPI statement, and the tally columns the median rows leave empty.
_TALLY, _MEDIAN, _TOTAL_MEDIAN = "tally", "median", "total"
_TALLY_COLUMNS = (
    "currency",
    "failed",
    "recovered",
    "failed_amount",
    "recovered_amount",
    "hours",
    "retries",
    "blocked",
    "after_update",
)


def compute_kpis(
    session: Session,
    start: datetime | None = None,
    end: datetime | None = None,
    group_by: str | None = None,
    ltv_periods: float = 12.0,
) -> dict[str, Any]:
    """Recovery KPIs over the failed invoices whose first failure is in ``[start, end)``.

    Returns a JSON-ready dict: the fields in the module docstring, plus ``ltv_periods``, and
    with ``group_by`` a ``groups`` list (same fields and ``group``, ordered by group value,
    numbers numerically). Raises ``ValueError`` for an unknown ``group_by``, a naive
    ``start``/``end`` or a negative ``ltv_periods``.
    """
    if group_by is not None and group_by not in GROUP_BY_CHOICES:
        raise ValueError(f"unknown group_by {group_by!r}: allowed values are {', '.join(GROUP_BY_CHOICES)}")
    for name, value in (("start", start), ("end", end)):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError(f"{name} must be timezone-aware (got {value!r})")
    if not ltv_periods >= 0:
        raise ValueError(f"ltv_periods must be >= 0 (got {ltv_periods!r})")

    dialect = session.get_bind().dialect.name
    invoices = _failed_invoices(dialect, start, end, group_by)
    totals: dict[str, _Tally] = {}
    medians: dict[str, Any] = {}
    total_median: Any = None
    for row in session.execute(_kpi_query(dialect, invoices, grouped=group_by is not None)).mappings():
        group = str(row["grp"])
        if row["kind"] == _TALLY:
            totals.setdefault(group, _Tally()).add(row)
        elif row["kind"] == _MEDIAN:
            medians[group] = row["median"]
        else:
            total_median = row["median"]
    if group_by is None:
        total_median = medians.get(_TOTAL)
    total = _Tally()
    for tally in totals.values():
        total.merge(tally)

    result: dict[str, Any] = _fields(total, total_median, ltv_periods)
    result["ltv_periods"] = ltv_periods
    if group_by:
        result["groups"] = [
            {"group": group, **_fields(totals[group], medians.get(group), ltv_periods)}
            for group in sorted(totals, key=_natural_key)
        ]
    return result


# ---------------------------------------------------------------------------------------
# SQL


def _failed_invoices(dialect: str, start: datetime | None, end: datetime | None, group_by: str | None) -> CTE:
    """One row per failed invoice of the cohort: amounts, recovery, hours, blocks, group."""
    outcomes = OUTCOMES
    # One window (one sort): each attempt's number in its invoice, and the successes so far.
    invoice, in_order = outcomes.c.invoice_id, (outcomes.c.attempted_at, outcomes.c.attempt_id)
    attempt_number = func.row_number().over(partition_by=invoice, order_by=in_order)
    successes_so_far = func.sum(case((outcomes.c.succeeded, 1), else_=0)).over(
        partition_by=invoice, order_by=in_order, rows=(None, 0)
    )
    ranked_query = select(
        outcomes.c.invoice_id,
        outcomes.c.customer_id,
        outcomes.c.attempted_at,
        outcomes.c.succeeded,
        outcomes.c.amount,
        outcomes.c.currency,
        outcomes.c.decline_code,
        attempt_number.label("n"),
        successes_so_far.label("s"),
    )
    if start is not None or end is not None:
        # An invoice whose first attempt is in range has an attempt in range (index on attempted_at).
        in_range = select(outcomes.c.invoice_id)
        if start is not None:
            in_range = in_range.where(outcomes.c.attempted_at >= start)
        if end is not None:
            in_range = in_range.where(outcomes.c.attempted_at < end)
        ranked_query = ranked_query.where(outcomes.c.invoice_id.in_(in_range))
    ranked = ranked_query.cte("ranked")

    first = ranked.c.n == 1
    first_success = and_(ranked.c.succeeded, ranked.c.s == 1)  # the success with no earlier one
    per_invoice_query = (
        select(
            ranked.c.invoice_id,
            func.min(ranked.c.attempted_at).label("first_at"),
            func.max(case((first, ranked.c.amount))).label("failed_amount"),
            func.max(case((first, ranked.c.currency))).label("currency"),
            func.max(case((first, ranked.c.customer_id))).label("customer_id"),
            func.max(case((first, ranked.c.decline_code))).label("first_decline_code"),
            func.max(case((first_success, ranked.c.n))).label("success_n"),
            func.max(case((first_success, ranked.c.amount))).label("success_amount"),
            func.max(case((first_success, ranked.c.attempted_at))).label("success_at"),
        )
        .group_by(ranked.c.invoice_id)
        .having(func.max(case((and_(first, not_(ranked.c.succeeded)), 1), else_=0)) == 1)
    )
    per_invoice = per_invoice_query.cte("per_invoice")

    decisions = DECISIONS
    blocked = (
        select(func.count())
        .select_from(decisions)
        .where(
            decisions.c.invoice_id == per_invoice.c.invoice_id,
            decisions.c.action == "stop",
            decisions.c.blocked_by_rule.is_not(None),
        )
        .scalar_subquery()
    )
    after_update = case((_card_update_between(per_invoice), 1), else_=0)
    group, source = _group_expression(dialect, group_by, per_invoice)
    query = select(
        per_invoice.c.invoice_id,
        per_invoice.c.currency,
        per_invoice.c.failed_amount,
        per_invoice.c.success_n,
        per_invoice.c.success_amount,
        _hours_between(dialect, per_invoice.c.first_at, per_invoice.c.success_at).label("hours"),
        blocked.label("blocked"),
        after_update.label("after_update"),
        group.label("grp"),
    ).select_from(source)
    if start is not None:
        query = query.where(per_invoice.c.first_at >= start)
    if end is not None:
        query = query.where(per_invoice.c.first_at < end)
    return query.cte("failed_invoices")


def _card_update_between(per_invoice: Any) -> ColumnElement[bool]:
    """A card update of the invoice's customer (for it or customer-wide) strictly between first failure and success.

    False for invoices never recovered. Found through the ``(customer_id, updated_at)`` index.
    """
    updates = CARD_UPDATES
    return and_(
        per_invoice.c.success_at.is_not(None),
        exists().where(
            updates.c.customer_id == per_invoice.c.customer_id,
            or_(updates.c.invoice_id.is_(None), updates.c.invoice_id == per_invoice.c.invoice_id),
            updates.c.updated_at > per_invoice.c.first_at,
            updates.c.updated_at < per_invoice.c.success_at,
        ),
    )


def _group_expression(dialect: str, group_by: str | None, per_invoice: Any) -> tuple[ColumnElement[Any], Any]:
    """The group value of each failed invoice, and the FROM clause it needs."""
    if group_by is None:
        return literal(_TOTAL, String), per_invoice
    if group_by == "decline_code":
        return func.coalesce(per_invoice.c.first_decline_code, UNKNOWN), per_invoice
    if group_by == "attempt_number":
        recovered_at = cast(per_invoice.c.success_n, String)
        return case((per_invoice.c.success_n.is_not(None), recovered_at), else_=NOT_RECOVERED), per_invoice
    if group_by == "week":
        return _week_start(dialect, per_invoice.c.first_at), per_invoice
    # Card fields describe the invoice's latest decision; model and policy its first one.
    latest = group_by in ("card_brand", "card_country")
    value = invoice_decision_value(group_by, per_invoice.c.invoice_id, latest=latest)
    return func.coalesce(value, UNKNOWN if latest else NO_DECISION), per_invoice


def _hours_between(dialect: str, earlier: ColumnElement[Any], later: ColumnElement[Any]) -> ColumnElement[float]:
    """``later − earlier`` in hours as a float (NULL when either is NULL)."""
    if dialect == "sqlite":
        # Timestamps are stored as UTC text, which julianday() reads (to the millisecond or better).
        return cast((func.julianday(later) - func.julianday(earlier)) * 24.0, Float)
    return cast((extract("epoch", later) - extract("epoch", earlier)) / 3600.0, Float)


def _week_start(dialect: str, at: ColumnElement[Any]) -> ColumnElement[str]:
    """The Monday (UTC) of ``at``'s ISO week as ``YYYY-MM-DD`` text."""
    if dialect == "sqlite":
        # 'weekday 0' moves forward to Sunday (or stays on it); six days back is that week's Monday.
        return func.date(at, "weekday 0", "-6 days")
    return func.to_char(func.date_trunc("week", func.timezone("UTC", at)), "YYYY-MM-DD")


def _kpi_query(dialect: str, invoices: CTE, *, grouped: bool) -> CompoundSelect[Any]:
    """Everything the KPIs need in one statement, so the outcomes are read once.

    The failed-invoice rows (a CTE the database materialises, as it is used more than once)
    feed a ``UNION ALL`` of: sums and counts per (group, currency) (``kind`` = "tally"); the
    median hours per group ("median"); with a grouping, the median over the cohort ("total").
    """
    c = invoices.c
    tally = select(
        literal(_TALLY, String).label("kind"),
        c.grp,
        c.currency,
        func.count().label("failed"),
        func.count(c.success_n).label("recovered"),
        func.sum(c.failed_amount).label("failed_amount"),
        func.coalesce(func.sum(c.success_amount), 0).label("recovered_amount"),
        func.sum(c.hours).label("hours"),
        func.sum(cast(c.success_n, Integer) - 1).label("retries"),
        func.sum(c.blocked).label("blocked"),
        func.sum(c.after_update).label("after_update"),
        null().label("median"),
    ).group_by(c.grp, c.currency)
    parts: list[Select[Any]] = [tally, _median_select(dialect, invoices, grouped=True)]
    if grouped:
        parts.append(_median_select(dialect, invoices, grouped=False))
    return union_all(*parts)


def _median_select(dialect: str, invoices: CTE, *, grouped: bool) -> Select[Any]:
    """Median hours to recovery per group (or over the cohort), shaped as a ``_kpi_query`` row.

    PostgreSQL: ``percentile_cont(0.5)``. SQLite has no percentile function: rows are numbered
    by hours within the group and the middle one (or the mean of the middle two) is averaged.
    """
    c = invoices.c
    recovered = c.hours.is_not(None)
    kind = literal(_MEDIAN if grouped else _TOTAL_MEDIAN, String).label("kind")
    empty: list[Any] = [null().label(name) for name in _TALLY_COLUMNS]
    if dialect == "postgresql":
        median = func.percentile_cont(0.5).within_group(c.hours).label("median")
        if grouped:
            return select(kind, c.grp, *empty, median).where(recovered).group_by(c.grp)
        return select(kind, literal(_TOTAL, String).label("grp"), *empty, median).where(recovered)
    partition = [c.grp] if grouped else None
    numbered = (
        select(
            c.grp,
            c.hours,
            func.row_number().over(partition_by=partition, order_by=c.hours).label("k"),
            func.count().over(partition_by=partition).label("m"),
        )
        .where(recovered)
        .subquery("numbered")
    )
    middle = numbered.c.k.in_([(numbered.c.m + 1) // 2, (numbered.c.m + 2) // 2])  # the middle one or two
    median = func.avg(numbered.c.hours).label("median")
    if grouped:
        return select(kind, numbered.c.grp, *empty, median).where(middle).group_by(numbered.c.grp)
    return select(kind, literal(_TOTAL, String).label("grp"), *empty, median).where(middle)


# ---------------------------------------------------------------------------------------
# Assembling the answer


def _number(value: Any) -> float:
    """SQL aggregate (int, float, Decimal or NULL) as a float."""
    if value is None:
        return 0.0
    return float(value)


def _integer(value: Any) -> int:
    """SQL sum (int, Decimal or NULL) as an int."""
    if value is None:
        return 0
    return int(value) if not isinstance(value, Decimal) else int(value.to_integral_value())


@dataclass
class _Tally:
    """Additive totals of one group (or the whole cohort)."""

    failed: int = 0
    recovered: int = 0
    hours: float = 0.0
    retries: int = 0
    blocked: int = 0
    after_update: int = 0
    failed_amount: dict[str, int] = field(default_factory=dict)
    recovered_amount: dict[str, int] = field(default_factory=dict)

    def add(self, row: RowMapping) -> None:
        """Add one (group, currency) row of the tally query."""
        currency = str(row["currency"])
        self.failed += _integer(row["failed"])
        self.recovered += _integer(row["recovered"])
        self.hours += _number(row["hours"])
        self.retries += _integer(row["retries"])
        self.blocked += _integer(row["blocked"])
        self.after_update += _integer(row["after_update"])
        self.failed_amount[currency] = self.failed_amount.get(currency, 0) + _integer(row["failed_amount"])
        self.recovered_amount[currency] = self.recovered_amount.get(currency, 0) + _integer(row["recovered_amount"])

    def merge(self, other: _Tally) -> None:
        """Add another group's totals (the cohort is the sum of its groups)."""
        self.failed += other.failed
        self.recovered += other.recovered
        self.hours += other.hours
        self.retries += other.retries
        self.blocked += other.blocked
        self.after_update += other.after_update
        for currency, amount in other.failed_amount.items():
            self.failed_amount[currency] = self.failed_amount.get(currency, 0) + amount
        for currency, amount in other.recovered_amount.items():
            self.recovered_amount[currency] = self.recovered_amount.get(currency, 0) + amount


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _hours(value: Any) -> float | None:
    """Hours rounded to the microsecond's order (SQLite's julianday leaves ~1e-9 h of noise)."""
    return None if value is None else round(float(value), 6)


def _fields(tally: _Tally, median_hours: Any, ltv_periods: float) -> dict[str, Any]:
    """The KPI fields of one tally (see the module docstring)."""
    currencies = sorted(tally.failed_amount)
    by_currency = {c: _ratio(tally.recovered_amount.get(c, 0), tally.failed_amount[c]) for c in currencies}
    recovery_rate = _ratio(tally.recovered, tally.failed)
    return {
        "failed_invoices": tally.failed,
        "recovered_invoices": tally.recovered,
        "recovery_rate": recovery_rate,
        "amount_recovery_rate": by_currency[currencies[0]] if len(currencies) == 1 else None,
        "amount_recovery_rate_by_currency": by_currency,
        "failed_amount": {c: tally.failed_amount[c] for c in currencies},
        "recovered_amount": {c: tally.recovered_amount.get(c, 0) for c in currencies},
        "median_hours_to_recovery": _hours(median_hours),
        "mean_hours_to_recovery": _hours(_ratio(tally.hours, tally.recovered)),
        "attempts_per_recovery": _ratio(tally.retries, tally.recovered),
        "involuntary_churn_rate": None if recovery_rate is None else 1.0 - recovery_rate,
        "recovered_ltv": {c: round(tally.recovered_amount.get(c, 0) * ltv_periods) for c in currencies},
        "retries_blocked_by_rules": tally.blocked,
        "recovered_after_card_update": tally.after_update,
        "recovered_after_card_update_rate": _ratio(tally.after_update, tally.failed),
    }


def _natural_key(value: str) -> tuple[Any, ...]:
    """Sort "2" before "10", and numbers before words."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", value) if part)
