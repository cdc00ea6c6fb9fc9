"""Point-in-time history of an invoice: what was known just before a candidate retry time.

The state after every attempt is computed once (cumulative, per invoice); a candidate time then
takes the state of the last attempt of its invoice strictly before it. Training rows and serving
candidates go through the same join, so a row can never see its own outcome or anything later.
The work is plain numpy over sorted arrays: the same code serves a 300-row request and a
million-row training table.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from features.taxonomy import (
    DeclineCategory,
    _normal_code,
    category_of,
    map_unique_arrays,
    normal_response_code,
    normalise_response_codes,
    visa_category_of,
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


def _mapped(frame: pd.DataFrame, name: str, *fns: Callable[[str | None], object]) -> tuple[np.ndarray, ...]:
    """Each `fn` of each value of an optional text column (once per distinct value), as object arrays.

    The column is factorized once, as stored (`map_unique_arrays`), instead of first becoming a
    million Python strings; an absent column is all missing.
    """
    if name not in frame:
        return map_unique_arrays(np.full(len(frame), None, dtype=object), *fns)
    return map_unique_arrays(frame[name], *fns)


def _category_of_normal(code: str | None) -> str | None:
    """The category of a decline code once normalised (what the states' `last_decline_code` holds)."""
    return category_of(_normal_code(code))


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
    group, _ = pd.factorize(invoice, sort=True)
    states, order = attempt_states(attempts, group)
    return pd.DataFrame({"invoice_id": invoice[order], **states})


def attempt_states(attempts: pd.DataFrame, group: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The state right after each attempt, sorted by (`group`, time), and the sorting order.

    `group` is an integer code per attempt row naming its invoice (any numbering: only equality
    matters). The columns are those of `invoice_states` without `invoice_id`.
    """
    at = _utc_ns(attempts["attempted_at"])
    order = np.lexsort((at, group))
    group, at = np.asarray(group)[order], at[order]
    starts = _segment_starts(group)
    # The taxonomy's own per-code functions, once per distinct code (as `normalise_codes`,
    # `decline_category`, `visa_category` and `normalise_advice_codes` do), on plain object arrays.
    codes, category_values = (
        values[order] for values in _mapped(attempts, "decline_code", _normal_code, _category_of_normal)
    )
    is_funds = (category_values == DeclineCategory.INSUFFICIENT_FUNDS.value).astype(np.int64)
    is_dnh = (category_values == DeclineCategory.DO_NOT_HONOR.value).astype(np.int64)
    visa = _mapped(attempts, "network_decline_code", visa_category_of)[0][order].astype(np.int64)
    states = {
        "group": group,
        "state_at": at,
        "attempts_so_far": np.arange(len(group)) - starts + 1,
        "first_attempt_at": at[starts],
        "n_insufficient_funds": _group_cumsum(is_funds, starts),
        "n_do_not_honor": _group_cumsum(is_dnh, starts),
        "visa_category": visa,
        "last_decline_code": codes,
        "last_decline_category": category_values,
        "first_decline_category": category_values[starts],
        "last_advice_code": _mapped(attempts, "merchant_advice_code", normal_response_code)[0][order],
    }
    return states, order


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
    attempt_group, candidate_group = invoice_groups(attempts["invoice_id"], candidates["invoice_id"])
    columns = history_columns(attempts, attempt_group, candidate_group, _utc_ns(candidates["candidate_at"]))
    return pd.DataFrame(columns, index=candidates.index).loc[:, list(HISTORY_COLUMNS)]


def invoice_groups(attempt_invoices: pd.Series, candidate_invoices: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of the invoice ids (compared as text) of attempts and of candidates, one numbering."""
    if isinstance(attempt_invoices.dtype, pd.StringDtype) and attempt_invoices.dtype == candidate_invoices.dtype:
        # Text already: factorized as stored (Arrow), not as two million Python strings.
        joined = pd.concat([attempt_invoices, candidate_invoices], ignore_index=True)
        codes = np.asarray(pd.factorize(joined)[0])
    else:
        attempt_ids = attempt_invoices.astype(str).to_numpy()
        candidate_ids = candidate_invoices.astype(str).to_numpy()
        codes, _ = pd.factorize(np.concatenate([attempt_ids, candidate_ids]))
    return codes[: len(attempt_invoices)], codes[len(attempt_invoices) :]


def history_columns(
    attempts: pd.DataFrame,
    attempt_group: np.ndarray,
    candidate_group: np.ndarray,
    candidate_at: np.ndarray,
    encoders: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """`HISTORY_COLUMNS` of candidates given as integer invoice codes and UTC int64 ns times.

    The text states come as object arrays (None when unknown), or, for a name in `encoders`, as
    that function's float encoding of the attempts' states (NaN when unknown): encoding once per
    attempt instead of once per candidate gives the same values.
    """
    encoders = encoders or {}
    states, _ = attempt_states(attempts, attempt_group)
    at = np.asarray(candidate_at, dtype=np.int64)
    if len(states["group"]) == 0:
        empty: dict[str, np.ndarray] = {name: np.full(len(at), np.nan) for name in HISTORY_COLUMNS}
        for name in _STRING_STATES:
            if name not in encoders:
                empty[name] = np.full(len(at), None, dtype=object)
        return empty
    index = latest_state_before(states["group"], states["state_at"], np.asarray(candidate_group), at)
    known = index >= 0
    safe = np.where(known, index, 0)

    def numeric(values: np.ndarray) -> np.ndarray:
        return np.where(known, np.asarray(values, dtype=np.float64)[safe], np.nan)

    def hours_since(values: np.ndarray) -> np.ndarray:
        return np.where(known, (at - values[safe]) / _NS_PER_HOUR, np.nan)

    columns: dict[str, np.ndarray] = {
        "retry_number": numeric(states["attempts_so_far"]),
        "hours_since_first_attempt": hours_since(states["first_attempt_at"]),
        "hours_since_last_attempt": hours_since(states["state_at"]),
        "n_insufficient_funds": numeric(states["n_insufficient_funds"]),
        "n_do_not_honor": numeric(states["n_do_not_honor"]),
        "visa_category": numeric(states["visa_category"]),
    }
    for name in _STRING_STATES:
        values = np.asarray(states[name], dtype=object)
        if name in encoders:
            columns[name] = np.where(known, encoders[name](values)[safe], np.nan)
        else:
            columns[name] = np.where(known, values[safe], np.array(None, dtype=object))
    return columns
