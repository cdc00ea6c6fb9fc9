"""The feature matrix of candidate retries: one row per (invoice, candidate time).

`build_retry_features` is the only place a model feature is computed. Training calls it with the
historical retries as candidates; serving calls it with every candidate hour of a request (or of
a whole batch) and scores the result in one model call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from functools import cache, partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from features import geo, money
from features.customer import (
    CUSTOMER_CONTEXT_COLUMNS,
    CUSTOMER_FEATURES,
    customer_history,
    funds_phase_features,
    invoice_events,
)
from features.history import HISTORY_COLUMNS, history_columns, invoice_groups
from features.taxonomy import DECLINE_CATEGORIES, KNOWN_DECLINE_CODES, map_unique_array
from features.timing import TIMING_FEATURES, calendar_features, local_wall_time

OTHER = "other"
HOUR = pd.Timedelta(hours=1)

# Fixed vocabularies: a categorical feature is encoded as its index here, so training and
# serving agree without fitting anything; values outside a vocabulary become `other`.
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "last_decline_code": (*KNOWN_DECLINE_CODES, OTHER),
    "last_decline_category": DECLINE_CATEGORIES,
    "first_decline_category": DECLINE_CATEGORIES,
    "last_advice_code": (
        *["01", "02", "03", "04", "21", "24", "25", "26", "27", "28", "29", "30", "40", "41", "43"],
        OTHER,
    ),
    "card_brand": (
        *[
            "visa",
            "mastercard",
            "amex",
            "discover",
            "jcb",
            "diners",
            "unionpay",
            "cartes_bancaires",
            "interac",
            "eftpos_au",
        ],
        OTHER,
    ),
    "card_funding": ("credit", "debit", "prepaid", "unknown"),
    "card_country": (*sorted(geo.COUNTRIES), OTHER),
    "billing_interval": ("day", "week", "month", "year"),
}
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(VOCABULARIES)

CARD_FEATURES: tuple[str, ...] = ("months_to_expiry", "amount_usd_log", "tenure_days")

FEATURE_COLUMNS: tuple[str, ...] = (
    *(c for c in HISTORY_COLUMNS if c not in VOCABULARIES),
    *TIMING_FEATURES,
    *CARD_FEATURES,
    *CUSTOMER_FEATURES,
    *CATEGORICAL_FEATURES,
)

# What a candidate row must carry besides the invoice's attempts: the invoice's context as known
# when the retry is planned (the card on file, the amount, the customer's zone).
CONTEXT_COLUMNS: tuple[str, ...] = (
    "invoice_id",
    "candidate_at",
    "amount",
    "currency",
    "card_brand",
    "card_funding",
    "card_country",
    "card_exp_month",
    "card_exp_year",
    "customer_timezone",
    "billing_interval",
    "customer_created_at",
    # The customer's earlier invoices at this invoice's first failure (features.customer);
    # absent columns mean unknown.
    *CUSTOMER_CONTEXT_COLUMNS,
)


@cache
def feature_spec_version() -> str:
    """A short hash of the feature list and vocabularies; a bundle must match it to be served."""
    spec = {"features": FEATURE_COLUMNS, "vocabularies": VOCABULARIES}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def encode_categorical(values: pd.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Index of each value in `vocabulary` as float; unknown → `other` (if listed), missing → NaN."""
    index = {v: float(i) for i, v in enumerate(vocabulary)}
    unknown = index.get(OTHER, np.nan)
    codes = map_unique_array(values, lambda v: np.nan if v is None else index.get(v, unknown))
    return np.asarray(codes, dtype=np.float64)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A context column, or all-missing when the source does not have it (optional fields)."""
    if name in frame:
        return frame[name]
    return pd.Series(pd.NA, index=frame.index, dtype="object")


def card_features(candidates: pd.DataFrame) -> pd.DataFrame:
    """Card expiry, amount and tenure features as of each candidate time."""
    context = _context_values(candidates)
    columns = _card_columns(context, np.arange(len(candidates)), _utc_ns(candidates["candidate_at"]))
    return pd.DataFrame(columns, index=candidates.index)


def _utc_ns(values: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch (UTC), whatever their resolution."""
    return np.asarray(pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8)


def _context_values(contexts: pd.DataFrame) -> dict[str, np.ndarray]:
    """What the features need of each context row, computed once per row (no candidate time yet).

    Zones, currency rates and categorical codes are functions of a few low-cardinality text
    columns: each distinct value goes through the library function once (the functions are
    elementwise, so the values are those of a per-row call) and is remembered for later calls,
    which keeps a one-request call free of pandas' per-call overhead.
    """
    exp_month = pd.to_numeric(_column(contexts, "card_exp_month"), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    exp_year = pd.to_numeric(_column(contexts, "card_exp_year"), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    created = pd.DatetimeIndex(pd.to_datetime(_column(contexts, "customer_created_at"), utc=True, errors="coerce"))
    values: dict[str, np.ndarray] = {
        "expiry_months": exp_year * 12 + exp_month,
        "created_ns": created.as_unit("ns").asi8,
        "created_missing": np.asarray(created.isna()),
    }
    for name in ("customer_funds_short_at", "customer_funds_back_at"):
        values[name] = (
            pd.DatetimeIndex(pd.to_datetime(_column(contexts, name), utc=True, errors="coerce")).as_unit("ns").asi8
        )
    for name in ("customer_prior_failed_invoices", "customer_prior_recoveries"):
        values[name] = pd.to_numeric(_column(contexts, name), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    if len(contexts) > _MEMO_ROWS:
        # A training table: one vectorised library call per column beats any per-value bookkeeping.
        usd = money.amount_usd(contexts["amount"], _column(contexts, "currency").astype("string").str.lower())
        values["amount_usd_log"] = np.log1p(usd.to_numpy(dtype=np.float64, na_value=np.nan))
        zones = geo.resolve_timezones(_column(contexts, "customer_timezone"), _column(contexts, "card_country"))
        values["timezone"] = zones.astype("string").fillna("UTC").to_numpy(dtype=object)
        for name, case in _CONTEXT_CATEGORICALS.items():
            text = _column(contexts, name).astype("string")
            cased = text.str.upper() if case == "upper" else text.str.lower()
            values[name] = encode_categorical(cased, VOCABULARIES[name])
        return values
    amount = pd.to_numeric(contexts["amount"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    rates = _memo_map("currency", _texts(contexts, "currency"), _currency_factors)
    exponent = np.array([r[0] for r in rates], dtype=np.float64)
    rate = np.array([r[1] for r in rates], dtype=np.float64)
    usd_values = amount / np.power(10.0, exponent) * rate  # money.amount_usd, term for term
    values["amount_usd_log"] = np.log1p(usd_values)
    zone_keys = np.empty(len(contexts), dtype=object)
    zone_keys[:] = list(zip(_texts(contexts, "customer_timezone"), _texts(contexts, "card_country"), strict=True))
    values["timezone"] = _memo_map("timezone", zone_keys, _zones)
    for name in _CONTEXT_CATEGORICALS:
        codes = _memo_map(name, _texts(contexts, name), partial(_encoded, name))
        values[name] = codes.astype(np.float64)
    return values


_CONTEXT_CATEGORICALS = {
    "card_brand": "lower",
    "card_funding": "lower",
    "card_country": "upper",
    "billing_interval": "lower",
}
_MEMO: dict[str, dict[Any, Any]] = {}
_UNKNOWN = object()
_MEMO_LIMIT = 100_000
_MEMO_ROWS = 20_000  # context rows up to which values go through the memo (serving); beyond, plain vectorised calls  # distinct values remembered per column before the memo starts over


def _texts(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A context column's values as an object array, None where missing (the memo's keys).

    Values are not converted here: every memoised function reads its keys as `string`, as the
    vectorised path reads the column.
    """
    values = np.array(_column(frame, name).to_numpy(dtype=object), dtype=object)  # a copy: may be read-only
    values[pd.isna(values)] = None
    return values


def _memo_map(kind: str, keys: np.ndarray, compute: Callable[[list[Any]], Sequence[Any]]) -> np.ndarray:
    """`compute` of each key (an object array), once per distinct key ever seen, broadcast to the rows.

    Safe under threads: a row's value comes from this call's own lookups, never from a memo
    another call may be clearing.
    """
    memo = _MEMO.setdefault(kind, {})
    codes, uniques = pd.factorize(keys, use_na_sentinel=False)
    # factorize turns a None key into a fresh float NaN, which no dict lookup finds again.
    distinct = [None if isinstance(key, float) and key != key else key for key in uniques]
    looked_up = {key: memo.get(key, _UNKNOWN) for key in distinct}
    known = {key: value for key, value in looked_up.items() if value is not _UNKNOWN}
    new = [key for key in looked_up if key not in known]
    if new:
        computed = dict(zip(new, compute(new), strict=True))
        known.update(computed)
        if len(memo) + len(computed) > _MEMO_LIMIT:
            memo.clear()
        memo.update(computed)
    table = np.empty(len(distinct), dtype=object)
    table[:] = [known[key] for key in distinct]
    return table[codes]


def _currency_factors(currencies: list[str | None]) -> list[tuple[float, float]]:
    """(minor-unit exponent, USD per unit) of each currency, read as `money.amount_usd` reads them."""
    code = pd.Series(currencies, dtype="string").str.lower().astype("str").str.strip().str.lower()
    exponent = code.map(money.CURRENCY_EXPONENTS).astype("float64").to_numpy()
    rate = code.map(money.USD_PER_UNIT).astype("float64").to_numpy()
    return list(zip(exponent.tolist(), rate.tolist(), strict=True))


def _zones(pairs: list[tuple[str | None, str | None]]) -> list[str]:
    """The customer's zone of each (timezone, card country), as `geo.resolve_timezones` resolves it."""
    tz = pd.Series([p[0] for p in pairs], dtype="string")
    country = pd.Series([p[1] for p in pairs], dtype="string")
    zones = geo.resolve_timezones(tz, country).astype("string").fillna("UTC")
    return [str(z) for z in zones.to_numpy(dtype=object)]


def _encoded(name: str, values: list[str | None]) -> list[float]:
    """`encode_categorical` of a context column's values, in the case the vocabulary uses."""
    text = pd.Series(values, dtype="string")
    cased = text.str.upper() if _CONTEXT_CATEGORICALS[name] == "upper" else text.str.lower()
    return [float(v) for v in encode_categorical(cased, VOCABULARIES[name])]


def _card_columns(context: dict[str, np.ndarray], owner: np.ndarray, at_ns: np.ndarray) -> dict[str, np.ndarray]:
    """`CARD_FEATURES` of candidate rows at `at_ns`, row r taking context row `owner[r]`."""
    at = pd.DatetimeIndex(at_ns.view("datetime64[ns]"))
    # A card is valid through the last day of its expiry month.
    months_to_expiry = context["expiry_months"][owner] - (at.year.to_numpy() * 12 + at.month.to_numpy())
    tenure_ns = at_ns - context["created_ns"][owner]
    tenure = np.where(context["created_missing"][owner], np.nan, tenure_ns / 86_400e9)
    return {
        "months_to_expiry": months_to_expiry,
        "amount_usd_log": context["amount_usd_log"][owner],
        "tenure_days": tenure,
    }


def _customer_columns(
    context: dict[str, np.ndarray], zone_codes: np.ndarray, zones: np.ndarray, owner: np.ndarray, local: np.ndarray
) -> dict[str, np.ndarray]:
    """`CUSTOMER_FEATURES` of candidate rows (local wall times `local`), row r taking context `owner[r]`."""
    out = {name: context[name][owner] for name in ("customer_prior_failed_invoices", "customer_prior_recoveries")}
    if not (context["customer_funds_back_at"] != np.iinfo(np.int64).min).any():
        # No bracket known for any context (most requests): the phases are all missing.
        missing = np.full(len(owner), np.nan)
        return {**out, **{name: missing.copy() for name in CUSTOMER_FEATURES if name not in out}}

    def local_of(name: str) -> np.ndarray:
        ns = context[name]
        known = ns != np.iinfo(np.int64).min
        out = np.full(ns.size, np.datetime64("NaT"), dtype="datetime64[ns]")
        if known.any():
            out[known] = local_wall_time(ns[known], zone_codes[known], zones)
        return out[owner]

    return {
        **out,
        **funds_phase_features(local, local_of("customer_funds_short_at"), local_of("customer_funds_back_at")),
    }


def retry_feature_matrix(
    attempts: pd.DataFrame, contexts: pd.DataFrame, owner: np.ndarray, candidate_at: np.ndarray
) -> npt.NDArray[np.float64]:
    """The model features (`FEATURE_COLUMNS` order, float64) of candidate rows given by context.

    `contexts`: `CONTEXT_COLUMNS` without `candidate_at`, one row per context (an invoice as known
    when its retry is planned); candidate row r is context `owner[r]` at `candidate_at[r]` (int64
    UTC nanoseconds). Context-only work (card, amount, zone, categorical codes) runs once per
    context row and is broadcast; the values are exactly those of `build_retry_features` on the
    expanded rows.
    """
    owner = np.asarray(owner, dtype=np.intp)
    at_ns = np.asarray(candidate_at, dtype=np.int64)
    context = _context_values(contexts)
    attempt_group, context_group = invoice_groups(attempts["invoice_id"], contexts["invoice_id"])
    encoders = {name: _encoder(name) for name in VOCABULARIES if name in HISTORY_COLUMNS}
    history = history_columns(attempts, attempt_group, context_group[owner], at_ns, encoders)
    zone_codes, zones = pd.factorize(context["timezone"])
    local = local_wall_time(at_ns, zone_codes[owner], zones)
    timing = calendar_features(local)
    per_row = {**_card_columns(context, owner, at_ns), **_customer_columns(context, zone_codes, zones, owner, local)}
    matrix = np.empty((len(at_ns), len(FEATURE_COLUMNS)), dtype=np.float64)
    for j, name in enumerate(FEATURE_COLUMNS):
        if name in history:
            matrix[:, j] = history[name]
        elif name in timing:
            matrix[:, j] = timing[name]
        elif name in per_row:
            matrix[:, j] = per_row[name]
        else:
            matrix[:, j] = context[name][owner]
    return matrix


def _encoder(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """`encode_categorical` in `name`'s vocabulary of an object array of states, memoised per value."""
    vocabulary = VOCABULARIES[name]

    def encode(values: np.ndarray) -> np.ndarray:
        def compute(distinct: list[Any]) -> list[float]:
            return [float(v) for v in encode_categorical(pd.Series(distinct, dtype=object), vocabulary)]

        return _memo_map(f"state:{name}", values, compute).astype(np.float64)

    return encode


def feature_frame(matrix: npt.NDArray[np.float64], index: pd.Index | None = None) -> pd.DataFrame:
    """A `FEATURE_COLUMNS` frame over a float matrix, without copying it."""
    return pd.DataFrame(matrix, columns=list(FEATURE_COLUMNS), index=index, copy=False)


def build_retry_features(attempts: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
    """Model features of every candidate retry, from the attempts before it (point-in-time).

    `attempts`: contract §1 rows of the invoices concerned (at least invoice_id, attempted_at,
    decline_code; network/advice codes optional). `candidates`: `CONTEXT_COLUMNS`, one row per
    candidate time. Returns a float frame with `FEATURE_COLUMNS`, aligned to `candidates`.
    """
    matrix = retry_feature_matrix(attempts, candidates, np.arange(len(candidates)), _utc_ns(candidates["candidate_at"]))
    return feature_frame(matrix, candidates.index)


def candidate_times(start: pd.Timestamp, end: pd.Timestamp, step: pd.Timedelta = HOUR) -> pd.DatetimeIndex:
    """Whole-step UTC times strictly after `start` and at or before `end` (empty if none)."""
    start = pd.Timestamp(start).tz_convert("UTC") if pd.Timestamp(start).tzinfo else pd.Timestamp(start, tz="UTC")
    end = pd.Timestamp(end).tz_convert("UTC") if pd.Timestamp(end).tzinfo else pd.Timestamp(end, tz="UTC")
    first = start.floor(step) + step
    if first > end:
        return pd.DatetimeIndex([], tz="UTC")
    return pd.date_range(first, end, freq=step, tz="UTC")


def retry_training_rows(attempts: pd.DataFrame) -> pd.DataFrame:
    """Each retry (attempt 2+ of an invoice, up to its first success) as a candidate with its label.

    Attempts after an invoice's first success are not retries of a failed payment and are left
    out; so is the first attempt, the scheduled charge, which is not the policy's to time.
    """
    # `load_attempts` hands over rows already in (invoice, time) order: checking costs a fraction
    # of a string sort, and a stable sort of sorted rows would give them back unchanged.
    ordered = (
        attempts
        if _in_invoice_time_order(attempts)
        else attempts.sort_values(["invoice_id", "attempted_at"], kind="stable")
    )
    by_invoice = ordered.groupby("invoice_id", sort=False)
    number = by_invoice.cumcount() + 1
    succeeded = ordered["succeeded"].astype(int)
    successes_before = succeeded.groupby(ordered["invoice_id"], sort=False).cumsum() - succeeded
    first_failed = ~by_invoice["succeeded"].transform("first").astype(bool)
    keep = (number >= 2) & (successes_before == 0) & first_failed
    rows = ordered.loc[keep].rename(columns={"attempted_at": "candidate_at"})
    if "customer_id" in ordered and not any(c in rows for c in CUSTOMER_CONTEXT_COLUMNS):
        # Each retry sees the customer's other invoices as they stood at its invoice's first failure:
        # one query per invoice (its retries are one run of rows, from its second attempt on).
        first_at = by_invoice["attempted_at"].transform("first").loc[keep]
        starts_run = (number.loc[keep] == 2).to_numpy()
        starts = np.flatnonzero(starts_run)
        queries = pd.DataFrame({"customer_id": rows["customer_id"].iloc[starts], "at": first_at.iloc[starts]})
        history = customer_history(invoice_events(ordered), queries)
        history = history.iloc[np.cumsum(starts_run) - 1].set_axis(rows.index)
        rows = pd.concat([rows, history], axis=1)
    context = [c for c in CONTEXT_COLUMNS if c in rows]
    extra = [c for c in ("attempt_id", "succeeded") if c in rows]
    return rows[[*context, *extra]]


def _in_invoice_time_order(attempts: pd.DataFrame) -> bool:
    """True when the rows are sorted by invoice id, then by attempt time (what `sort_values` would do)."""
    ids = attempts["invoice_id"]
    at = attempts["attempted_at"]
    if len(attempts) < 2 or ids.isna().any() or at.isna().any():
        return len(attempts) < 2
    id_values = np.asarray(ids.to_numpy(dtype=object))
    try:
        later = np.asarray(id_values[1:] > id_values[:-1], dtype=bool)
        same = np.asarray(id_values[1:] == id_values[:-1], dtype=bool)
    except TypeError:  # mixed kinds of ids: let pandas sort them
        return False
    if not bool(np.all(later | same)):
        return False
    times = _utc_ns(at)
    return bool(np.all(later | (times[1:] >= times[:-1])))


# The decline counters a later planned retry would add to, by the category it repeats.
_COUNTER_OF_CATEGORY = {"insufficient_funds": "n_insufficient_funds", "do_not_honor": "n_do_not_honor"}


def project_retries(
    features: pd.DataFrame, retry_index: np.ndarray, spacing_hours: float | np.ndarray, last_category: np.ndarray
) -> pd.DataFrame:
    """Features of the k-th retry from now at each row's time, given k planned retries fail first.

    Approximation used by the planner: the k retries before it fail with the same decline
    category as the latest one, evenly spread since the last real attempt and at least
    `spacing_hours` apart. So `retry_number` and the matching decline counter grow by k and, for
    k > 0, `hours_since_last_attempt` is max(spacing, wait / (k + 1)); the calendar, card and
    first-attempt features are exact at every slot. Rows with k = 0 are returned unchanged.
    """
    out = features.to_numpy(dtype=np.float64, copy=True)
    position = {name: i for i, name in enumerate(features.columns)}
    _project_in_place(out, position, retry_index, spacing_hours, last_category)
    return pd.DataFrame(out, columns=features.columns, copy=False)


def project_retry_rows(
    base: npt.NDArray[np.float64],
    rows: np.ndarray,
    retry_index: np.ndarray,
    spacing_hours: float | np.ndarray,
    last_category: np.ndarray,
) -> npt.NDArray[np.float64]:
    """`project_retries` of `base[rows]` for a `FEATURE_COLUMNS` matrix: one gather, projected in place."""
    out = np.take(base, rows, axis=0)
    _project_in_place(out, _POSITION, retry_index, spacing_hours, last_category)
    return out


_POSITION = {name: i for i, name in enumerate(FEATURE_COLUMNS)}


def planned_wait(since_last: np.ndarray, k: np.ndarray, spacing: float | np.ndarray) -> np.ndarray:
    """Wait before a slot that k planned (failed) retries precede: they split the time since the
    last real attempt evenly, each at least the spacing apart (any unit, the same for all three).

    A slot far out is not scored as if money had been short a day before it.
    """
    return np.maximum(spacing, since_last / (np.asarray(k, dtype=np.float64) + 1.0))


def _project_in_place(
    out: npt.NDArray[np.float64],
    position: dict[str, int],
    retry_index: np.ndarray,
    spacing_hours: float | np.ndarray,
    last_category: np.ndarray,
) -> None:
    """The projection of `project_retries`, written into `out`."""
    k = np.asarray(retry_index, dtype=np.float64)
    out[:, position["retry_number"]] += k
    later = k > 0
    out[later, position["hours_since_last_attempt"]] = planned_wait(
        out[later, position["hours_since_last_attempt"]], k[later], np.broadcast_to(spacing_hours, k.shape)[later]
    )
    category = np.asarray(last_category, dtype=object)
    for name, counter in _COUNTER_OF_CATEGORY.items():
        rows = category == name
        out[rows, position[counter]] += k[rows]
