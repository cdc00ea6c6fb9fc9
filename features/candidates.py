"""The feature matrix of candidate retries: one row per (invoice, candidate time).

`build_retry_features` is the only place a model feature is computed. Training calls it with the
historical retries as candidates; serving calls it with every candidate hour of a request (or of
a whole batch) and scores the result in one model call.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache

import numpy as np
import pandas as pd

from features import geo, money
from features.history import HISTORY_COLUMNS, history_at
from features.taxonomy import DECLINE_CATEGORIES, KNOWN_DECLINE_CODES, map_unique
from features.timing import TIMING_FEATURES, local_time_features

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
    codes = map_unique(values, lambda v: np.nan if v is None else index.get(v, unknown))
    return np.asarray(codes, dtype=np.float64)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A context column, or all-missing when the source does not have it (optional fields)."""
    if name in frame:
        return frame[name]
    return pd.Series(pd.NA, index=frame.index, dtype="object")


def card_features(candidates: pd.DataFrame) -> pd.DataFrame:
    """Card expiry, amount and tenure features as of each candidate time."""
    at = pd.DatetimeIndex(pd.to_datetime(candidates["candidate_at"], utc=True)).as_unit("ns")
    exp_month = pd.to_numeric(_column(candidates, "card_exp_month"), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    exp_year = pd.to_numeric(_column(candidates, "card_exp_year"), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    # A card is valid through the last day of its expiry month.
    months_to_expiry = (exp_year * 12 + exp_month) - (at.year.to_numpy() * 12 + at.month.to_numpy())
    usd = money.amount_usd(candidates["amount"], _column(candidates, "currency").astype("string").str.lower())
    created = pd.DatetimeIndex(pd.to_datetime(_column(candidates, "customer_created_at"), utc=True, errors="coerce"))
    tenure_ns = at.asi8 - created.as_unit("ns").asi8
    tenure = np.where(created.isna(), np.nan, tenure_ns / 86_400e9)
    return pd.DataFrame(
        {
            "months_to_expiry": months_to_expiry,
            "amount_usd_log": np.log1p(usd.to_numpy(dtype=np.float64, na_value=np.nan)),
            "tenure_days": tenure,
        },
        index=candidates.index,
    )


def build_retry_features(attempts: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
    """Model features of every candidate retry, from the attempts before it (point-in-time).

    `attempts`: contract §1 rows of the invoices concerned (at least invoice_id, attempted_at,
    decline_code; network/advice codes optional). `candidates`: `CONTEXT_COLUMNS`, one row per
    candidate time. Returns a float frame with `FEATURE_COLUMNS`, aligned to `candidates`.
    """
    timezones = geo.resolve_timezones(_column(candidates, "customer_timezone"), _column(candidates, "card_country"))
    history = history_at(attempts, candidates)
    timing = local_time_features(candidates["candidate_at"], timezones)
    card = card_features(candidates)
    context = {
        "card_brand": _column(candidates, "card_brand").astype("string").str.lower(),
        "card_funding": _column(candidates, "card_funding").astype("string").str.lower(),
        "card_country": _column(candidates, "card_country").astype("string").str.upper(),
        "billing_interval": _column(candidates, "billing_interval").astype("string").str.lower(),
    }
    columns: dict[str, np.ndarray] = {}
    for name in FEATURE_COLUMNS:
        if name in VOCABULARIES:
            source = context[name] if name in context else pd.Series(history[name], index=candidates.index)
            columns[name] = encode_categorical(source, VOCABULARIES[name])
        elif name in history:
            columns[name] = history[name].to_numpy(dtype=np.float64)
        elif name in timing:
            columns[name] = timing[name].to_numpy(dtype=np.float64)
        else:
            columns[name] = card[name].to_numpy(dtype=np.float64)
    return pd.DataFrame(columns, index=candidates.index)


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
    ordered = attempts.sort_values(["invoice_id", "attempted_at"], kind="stable")
    by_invoice = ordered.groupby("invoice_id", sort=False)
    number = by_invoice.cumcount() + 1
    succeeded = ordered["succeeded"].astype(int)
    successes_before = succeeded.groupby(ordered["invoice_id"], sort=False).cumsum() - succeeded
    first_failed = ~by_invoice["succeeded"].transform("first").astype(bool)
    keep = (number >= 2) & (successes_before == 0) & first_failed
    rows = ordered.loc[keep].rename(columns={"attempted_at": "candidate_at"})
    context = [c for c in CONTEXT_COLUMNS if c in rows]
    extra = [c for c in ("attempt_id", "succeeded") if c in rows]
    return rows[[*context, *extra]]


# The decline counters a later planned retry would add to, by the category it repeats.
_COUNTER_OF_CATEGORY = {"insufficient_funds": "n_insufficient_funds", "do_not_honor": "n_do_not_honor"}


def project_retries(
    features: pd.DataFrame, retry_index: np.ndarray, spacing_hours: float | np.ndarray, last_category: np.ndarray
) -> pd.DataFrame:
    """Features of the k-th retry from now at each row's time, given k planned retries fail first.

    Approximation used by the planner: the retries before the k-th fail with the same decline
    category as the latest one, `spacing_hours` before it. So `retry_number` and the matching
    decline counter grow by k and, for k > 0, `hours_since_last_attempt` is the spacing; the
    calendar, card and first-attempt features are exact at every slot. Rows with k = 0 are
    returned unchanged.
    """
    out = features.to_numpy(dtype=np.float64, copy=True)
    position = {name: i for i, name in enumerate(features.columns)}
    k = np.asarray(retry_index, dtype=np.float64)
    out[:, position["retry_number"]] += k
    later = k > 0
    out[later, position["hours_since_last_attempt"]] = np.broadcast_to(spacing_hours, k.shape)[later]
    category = np.asarray(last_category, dtype=object)
    for name, counter in _COUNTER_OF_CATEGORY.items():
        rows = category == name
        out[rows, position[counter]] += k[rows]
    return pd.DataFrame(out, columns=features.columns)
