"""What a customer's earlier failed invoices say about when their money arrives.

An invoice that failed for insufficient funds and was later recovered brackets a moment money
came in: still short at its last insufficient-funds decline, back by the charge that succeeded.
Pay calendars repeat (monthly, every other week, weekly), so a retry at the same position in the
customer's calendar is likely to find money again. The model gets each candidate's position
relative to that bracket on those cycles, plus how often the customer failed and recovered
before, and learns from the data which of them matters and for whom. No pay calendar is assumed.

The history is point-in-time: an invoice sees the customer's other invoices as they stood at its
own first failure. Training computes it from the attempts table (`invoice_events`, then
`customer_history`); serving from the store's rows of the same customer, through the same two
functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.taxonomy import DeclineCategory, decline_category

# Per-invoice inputs (context columns) and the model features derived from them.
CUSTOMER_CONTEXT_COLUMNS: tuple[str, ...] = (
    "customer_prior_failed_invoices",
    "customer_prior_recoveries",
    "customer_funds_short_at",
    "customer_funds_back_at",
)
CUSTOMER_FEATURES: tuple[str, ...] = (
    "customer_prior_failed_invoices",
    "customer_prior_recoveries",
    "days_from_funds_back_day_of_month",
    "days_from_funds_short_day_of_month",
    "days_into_funds_back_week",
    "days_into_funds_back_fortnight",
)
# One row per failed invoice: its first failure, its recovery (first success after it), and its
# last insufficient-funds decline before the recovery (NaT when it never declined for funds).
EVENT_COLUMNS: tuple[str, ...] = ("customer_id", "failed_at", "recovered_at", "short_at")
_AVERAGE_MONTH_DAYS = 365.25 / 12
_NS_PER_DAY = 86_400_000_000_000
_NAT = np.iinfo(np.int64).min
_NEVER = np.iinfo(np.int64).max


def _utc_ns(values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """Timestamps as int64 UTC nanoseconds; missing as NaT's integer value."""
    return np.asarray(pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8)


def _as_timestamps(ns: np.ndarray) -> pd.DatetimeIndex:
    """int64 UTC nanoseconds (NaT's integer value for missing) as a UTC DatetimeIndex."""
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]"), tz="UTC")


def invoice_events(attempts: pd.DataFrame) -> pd.DataFrame:
    """`EVENT_COLUMNS` per failed invoice of contract §1 attempts (invoice, customer, time, outcome, code).

    An invoice whose charges never failed is left out; one that never succeeded after failing has
    `recovered_at` NaT. Without a `decline_code` column no decline counts as insufficient funds.
    """
    at = _utc_ns(attempts["attempted_at"])
    ok = attempts["succeeded"].to_numpy(dtype=bool)
    invoice = pd.factorize(attempts["invoice_id"].to_numpy(dtype=object))[0]
    codes = attempts["decline_code"] if "decline_code" in attempts else pd.Series(None, index=attempts.index)
    short = ~ok & (decline_category(codes) == DeclineCategory.INSUFFICIENT_FUNDS.value).fillna(False).to_numpy(bool)
    n = int(invoice.max()) + 1 if invoice.size else 0
    failed_at = np.full(n, _NEVER, dtype=np.int64)
    np.minimum.at(failed_at, invoice[~ok], at[~ok])
    later = ok & (at > failed_at[invoice])
    recovered_at = np.full(n, _NEVER, dtype=np.int64)
    np.minimum.at(recovered_at, invoice[later], at[later])
    before = short & (at < recovered_at[invoice])
    short_at = np.full(n, _NAT, dtype=np.int64)
    np.maximum.at(short_at, invoice[before], at[before])
    customer = np.empty(n, dtype=object)
    customer[invoice] = attempts["customer_id"].to_numpy(dtype=object)
    failed = failed_at != _NEVER
    return pd.DataFrame(
        {
            "customer_id": customer[failed],
            "failed_at": _as_timestamps(failed_at[failed]),
            "recovered_at": _as_timestamps(np.where(recovered_at == _NEVER, _NAT, recovered_at)[failed]),
            "short_at": _as_timestamps(short_at[failed]),
        }
    )


def customer_history(events: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    """`CUSTOMER_CONTEXT_COLUMNS` of each query: the customer's invoices as they stood strictly before `at`.

    `events`: `EVENT_COLUMNS` (`invoice_events`, or the store's view). `queries`: `customer_id`
    and `at`, the query invoice's first failure, so the invoice itself never counts (its failure
    is not before itself). Counts are of the customer's invoices that failed before `at` and of
    those recovered before `at`; the funds bracket is that of the latest insufficient-funds
    invoice recovered before `at`. Aligned to `queries`.
    """
    n = len(queries)
    if events.empty:  # nothing known of any of these customers (most decisions): skip the search
        nat = _as_timestamps(np.full(n, _NAT, dtype=np.int64))
        zeros = np.zeros(n, dtype=np.float64)
        return pd.DataFrame(
            {
                "customer_prior_failed_invoices": zeros,
                "customer_prior_recoveries": zeros.copy(),
                "customer_funds_short_at": nat,
                "customer_funds_back_at": nat.copy(),
            },
            index=queries.index,
        )
    q_at = _utc_ns(queries["at"])
    failed = _utc_ns(events["failed_at"])
    recovered = _utc_ns(events["recovered_at"])
    short = _utc_ns(events["short_at"])
    # Any consistent integer per customer will do (keys only group by it): hashing beats sorting strings.
    codes, _ = pd.factorize(
        np.concatenate([queries["customer_id"].astype(str).to_numpy(), events["customer_id"].astype(str).to_numpy()])
    )
    q_code, e_code = codes[:n].astype(np.int64), codes[n:].astype(np.int64)
    # One ranking of every time searched (event and query times share it), so that a (customer,
    # time) pair packs into one sortable int64: customer × span + rank.
    _, rank = np.unique(np.concatenate([failed, recovered, q_at]), return_inverse=True)
    span = int(rank.max()) + 2
    failed_key = e_code * span + rank[: failed.size]
    recovered_key = e_code * span + rank[failed.size : failed.size + recovered.size]
    q_key = q_code * span + rank[failed.size + recovered.size :]
    q_start = q_code * span  # before any time of the query's customer
    was_recovered = recovered != _NAT
    funds = was_recovered & (short != _NAT)
    latest = _latest_before(recovered_key[funds], q_key, q_start)
    found = latest >= 0
    back = np.full(n, _NAT, dtype=np.int64)
    short_then = np.full(n, _NAT, dtype=np.int64)
    back[found] = recovered[funds][latest[found]]
    short_then[found] = short[funds][latest[found]]
    return pd.DataFrame(
        {
            "customer_prior_failed_invoices": _count_before(failed_key, q_key, q_start).astype(np.float64),
            "customer_prior_recoveries": _count_before(recovered_key[was_recovered], q_key, q_start).astype(np.float64),
            "customer_funds_short_at": _as_timestamps(short_then),
            "customer_funds_back_at": _as_timestamps(back),
        },
        index=queries.index,
    )


def _count_before(e_key: np.ndarray, q_key: np.ndarray, q_start: np.ndarray) -> np.ndarray:
    """Per query: events of its customer strictly before its time (keys: customer × span + time rank)."""
    ordered = np.sort(e_key)
    return np.searchsorted(ordered, q_key, side="left") - np.searchsorted(ordered, q_start, side="left")


def _latest_before(e_key: np.ndarray, q_key: np.ndarray, q_start: np.ndarray) -> np.ndarray:
    """Per query: the index of its customer's latest event strictly before its time, -1 if none."""
    if e_key.size == 0:
        return np.full(q_key.size, -1, dtype=np.intp)
    order = np.argsort(e_key, kind="stable")
    idx = np.searchsorted(e_key[order], q_key, side="left") - 1
    ok = idx >= 0
    ok[ok] = e_key[order][idx[ok]] >= q_start[ok]  # the event before is the same customer's
    return np.where(ok, order[np.maximum(idx, 0)], -1)


def _day_of_month(local: np.ndarray) -> np.ndarray:
    """Day of month of naive local times, with the time of day as a fraction."""
    day = local.astype("datetime64[D]")
    dom = (day - day.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
    return dom + (local - day).astype(np.int64) / _NS_PER_DAY


def _month_offset(local_candidate: np.ndarray, local_mark: np.ndarray) -> np.ndarray:
    """Candidate's day of month minus the mark's, wrapped to about ±15 days."""
    half = _AVERAGE_MONTH_DAYS / 2
    return np.mod(_day_of_month(local_candidate) - _day_of_month(local_mark) + half, _AVERAGE_MONTH_DAYS) - half


def funds_phase_features(
    local_candidate: np.ndarray, local_short: np.ndarray, local_back: np.ndarray
) -> dict[str, np.ndarray]:
    """Each candidate's position relative to the customer's funds bracket, in local wall time.

    Days of month relative to when the money was back and when it was still short (wrapped to
    about ±15 days: monthly calendars); days since the money was back modulo 7 and 14 (weekly and
    every-other-week calendars). NaN without a bracket.
    """
    missing = np.isnat(local_back) | np.isnat(local_short)
    back = np.where(missing, local_candidate, local_back)
    short = np.where(missing, local_candidate, local_short)
    elapsed = (local_candidate - back).astype(np.int64) / _NS_PER_DAY
    out = {
        "days_from_funds_back_day_of_month": _month_offset(local_candidate, back),
        "days_from_funds_short_day_of_month": _month_offset(local_candidate, short),
        "days_into_funds_back_week": np.mod(elapsed, 7.0),
        "days_into_funds_back_fortnight": np.mod(elapsed, 14.0),
    }
    for values in out.values():
        values[missing] = np.nan
    return out
