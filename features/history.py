"""Point-in-time history of an invoice: what was known just before a candidate retry time.

The state after every attempt is computed once (cumulative, per invoice); a candidate time then
takes the state of the last attempt of its invoice strictly before it. Training rows and serving
candidates go through the same join, so a row can never see its own outcome or anything later.
The work is plain numpy over sorted arrays: the same code serves a 300-row request and a
million-row training table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.taxonomy import (
    DeclineCategory,
    decline_category,
    normalise_codes,
    normalise_response_codes,
    visa_category,
)

HISTORY_COLUMNS: tuple[str, ...] = (
    "retry_number",
    "hours_since_first_attempt",
    "hours_since_last_attempt",
    "n_insufficient_funds",
    "n_do_not_honor",
    "visa_category",
    "last_decline_code",
    "last_decline_category",
    "first_decline_category",
    "last_advice_code",
)
_STRING_STATES = ("last_decline_code", "last_decline_category", "first_decline_category", "last_advice_code")
_NS_PER_HOUR = 3_600_000_000_000


def _utc_ns(values: pd.Series) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch (UTC), whatever their resolution."""
    return np.asarray(pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8)


def normalise_advice_codes(codes: pd.Series) -> pd.Series:
    """Mastercard merchant advice codes as two-digit strings ("1" → "01"); missing stays <NA>."""
    return normalise_response_codes(codes)


def _optional(frame: pd.DataFrame, name: str) -> pd.Series:
    """An optional column, or all-missing when absent."""
    return frame[name] if name in frame else pd.Series(pd.NA, index=frame.index, dtype="string")


def _objects(values: pd.Series) -> np.ndarray:
    """A text column as an object array with None for missing values."""
    array = np.asarray(values.to_numpy(dtype=object))
    array[pd.isna(array)] = None
    return array


def _segment_starts(codes: np.ndarray) -> np.ndarray:
    """For sorted group codes, the position where each row's group starts."""
    new_group = np.empty(len(codes), dtype=bool)
    new_group[:1] = True
    new_group[1:] = codes[1:] != codes[:-1]
    return np.maximum.accumulate(np.where(new_group, np.arange(len(codes)), 0))


def _group_cumsum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cumulative sum of `values` restarting at each group start (rows sorted by group)."""
    total = np.cumsum(values)
    before = np.concatenate([[0], total])[starts]
    return total - before


def invoice_states(attempts: pd.DataFrame) -> pd.DataFrame:
    """The state of each invoice right after each of its attempts, sorted by invoice then time."""
    invoice = attempts["invoice_id"].astype(str).to_numpy()
    at = _utc_ns(attempts["attempted_at"])
    group, _ = pd.factorize(invoice, sort=True)
    order = np.lexsort((at, group))
    group, at = group[order], at[order]
    starts = _segment_starts(group)
    ordered = attempts.iloc[order]
    codes = normalise_codes(ordered["decline_code"])
    category = decline_category(codes)
    is_funds = (category == DeclineCategory.INSUFFICIENT_FUNDS.value).fillna(False).to_numpy(dtype=np.int64)
    is_dnh = (category == DeclineCategory.DO_NOT_HONOR.value).fillna(False).to_numpy(dtype=np.int64)
    category_values = _objects(category)
    return pd.DataFrame(
        {
            "invoice_id": invoice[order],
            "group": group,
            "state_at": at,
            "attempts_so_far": np.arange(len(group)) - starts + 1,
            "first_attempt_at": at[starts],
            "n_insufficient_funds": _group_cumsum(is_funds, starts),
            "n_do_not_honor": _group_cumsum(is_dnh, starts),
            "visa_category": visa_category(_optional(ordered, "network_decline_code")).to_numpy(),
            "last_decline_code": _objects(codes),
            "last_decline_category": category_values,
            "first_decline_category": category_values[starts],
            "last_advice_code": _objects(normalise_advice_codes(_optional(ordered, "merchant_advice_code"))),
        }
    )


def latest_state_before(state_group: np.ndarray, state_at: np.ndarray, group: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Index of the last state of the same group strictly before each probe time (-1 if none).

    States must be sorted by (group, time). States and probes are merged in one sort where a
    probe sorts before a state at the same instant, so an attempt never sees itself.
    """
    n_states = len(state_group)
    keys_group = np.concatenate([state_group, group])
    keys_at = np.concatenate([state_at, at])
    is_state = np.concatenate([np.ones(n_states, dtype=np.int8), np.zeros(len(group), dtype=np.int8)])
    order = np.lexsort((is_state, keys_at, keys_group))
    state_index = np.where(order < n_states, order, -1)
    latest = np.maximum.accumulate(state_index)
    found = np.empty(len(group), dtype=np.int64)
    found[order[order >= n_states] - n_states] = latest[order >= n_states]
    same_group = found >= 0
    same_group[same_group] = state_group[found[same_group]] == group[same_group]
    return np.where(same_group, found, -1)


def history_at(attempts: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
    """History features of each candidate (`invoice_id`, `candidate_at`), from earlier attempts only.

    Candidates with no earlier attempt get missing values; the result keeps `candidates`' index.
    """
    states = invoice_states(attempts)
    if states.empty:
        empty = {name: np.full(len(candidates), np.nan) for name in HISTORY_COLUMNS if name not in _STRING_STATES}
        empty.update({name: np.full(len(candidates), None, dtype=object) for name in _STRING_STATES})
        return pd.DataFrame(empty, index=candidates.index).loc[:, list(HISTORY_COLUMNS)]
    state_ids = states["invoice_id"].to_numpy()
    candidate_ids = candidates["invoice_id"].astype(str).to_numpy()
    # Candidates of invoices without attempts get a group no state has.
    lookup = pd.Index(pd.unique(state_ids))
    group = lookup.get_indexer(candidate_ids)
    group = np.where(group < 0, len(lookup), group)
    at = _utc_ns(candidates["candidate_at"])
    index = latest_state_before(states["group"].to_numpy(), states["state_at"].to_numpy(), group, at)
    known = index >= 0
    safe = np.where(known, index, 0)

    def numeric(values: np.ndarray) -> np.ndarray:
        return np.where(known, np.asarray(values, dtype=np.float64)[safe], np.nan)

    def hours_since(column: str) -> np.ndarray:
        return np.where(known, (at - states[column].to_numpy()[safe]) / _NS_PER_HOUR, np.nan)

    columns: dict[str, np.ndarray] = {
        "retry_number": numeric(states["attempts_so_far"].to_numpy()),
        "hours_since_first_attempt": hours_since("first_attempt_at"),
        "hours_since_last_attempt": hours_since("state_at"),
        "n_insufficient_funds": numeric(states["n_insufficient_funds"].to_numpy()),
        "n_do_not_honor": numeric(states["n_do_not_honor"].to_numpy()),
        "visa_category": numeric(states["visa_category"].to_numpy()),
    }
    for name in _STRING_STATES:
        values = states[name].to_numpy(dtype=object)
        columns[name] = np.where(known, values[safe], np.array(None, dtype=object))
    return pd.DataFrame(columns, index=candidates.index)
