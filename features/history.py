"""Point-in-time history of an invoice: what was known just before a candidate retry time.

The state after every attempt is computed once (cumulative, per invoice); a candidate time then
takes the state of the last attempt strictly before it. Training rows and serving candidates go
through the same join, so a row can never see its own outcome or anything later.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.taxonomy import DeclineCategory, decline_category, normalise_codes, visa_category

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


def _hours(delta: pd.Series) -> np.ndarray:
    """Timedeltas as float hours (NaN where missing)."""
    return delta.dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan) / 3600.0


def _utc_ns(values: pd.Series) -> pd.Series:
    """Timestamps as nanosecond UTC, so joins never trip over mixed resolutions."""
    return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")


def normalise_advice_codes(codes: pd.Series) -> pd.Series:
    """Mastercard merchant advice codes as two-digit strings ("1" → "01"); missing stays <NA>."""
    text = codes.astype("string").str.strip()
    text = text.mask(text == "")
    return text.where(~text.str.fullmatch(r"\d").fillna(False), "0" + text)


def invoice_states(attempts: pd.DataFrame) -> pd.DataFrame:
    """The state of each invoice right after each of its attempts (one row per attempt)."""
    ordered = attempts.sort_values(["invoice_id", "attempted_at"], kind="stable")
    by_invoice = ordered.groupby("invoice_id", sort=False)
    codes = normalise_codes(ordered["decline_code"])
    category = decline_category(codes)
    first_category = category.groupby(ordered["invoice_id"], sort=False).transform("first")
    network = ordered.get("network_decline_code", pd.Series(pd.NA, index=ordered.index))
    advice = ordered.get("merchant_advice_code", pd.Series(pd.NA, index=ordered.index))
    return pd.DataFrame(
        {
            "invoice_id": ordered["invoice_id"].astype(str),
            "state_at": _utc_ns(ordered["attempted_at"]),
            "attempts_so_far": by_invoice.cumcount().to_numpy() + 1,
            "first_attempt_at": _utc_ns(by_invoice["attempted_at"].transform("first")),
            "n_insufficient_funds": (category == DeclineCategory.INSUFFICIENT_FUNDS.value)
            .fillna(False)
            .astype(int)
            .groupby(ordered["invoice_id"], sort=False)
            .cumsum(),
            "n_do_not_honor": (category == DeclineCategory.DO_NOT_HONOR.value)
            .fillna(False)
            .astype(int)
            .groupby(ordered["invoice_id"], sort=False)
            .cumsum(),
            "visa_category": visa_category(network).to_numpy(),
            "last_decline_code": codes,
            "last_decline_category": category,
            "first_decline_category": first_category,
            "last_advice_code": normalise_advice_codes(advice),
        },
        index=ordered.index,
    )


def history_at(attempts: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
    """History features of each candidate (`invoice_id`, `candidate_at`), from earlier attempts only.

    Candidates with no earlier attempt get missing values; the result keeps `candidates`' index.
    """
    states = invoice_states(attempts).sort_values("state_at", kind="stable")
    probe = pd.DataFrame(
        {
            "invoice_id": candidates["invoice_id"].astype(str).to_numpy(),
            "candidate_at": _utc_ns(candidates["candidate_at"]).to_numpy(),
            "_row": np.arange(len(candidates)),
        }
    )
    probe = probe.sort_values("candidate_at", kind="stable")
    joined = pd.merge_asof(
        probe,
        states,
        left_on="candidate_at",
        right_on="state_at",
        by="invoice_id",
        allow_exact_matches=False,
        direction="backward",
    ).sort_values("_row")
    out = pd.DataFrame(
        {
            "retry_number": joined["attempts_so_far"].astype("float64").to_numpy(),
            "hours_since_first_attempt": _hours(joined["candidate_at"] - joined["first_attempt_at"]),
            "hours_since_last_attempt": _hours(joined["candidate_at"] - joined["state_at"]),
            "n_insufficient_funds": joined["n_insufficient_funds"].astype("float64").to_numpy(),
            "n_do_not_honor": joined["n_do_not_honor"].astype("float64").to_numpy(),
            "visa_category": joined["visa_category"].astype("float64").to_numpy(),
            "last_decline_code": joined["last_decline_code"].to_numpy(),
            "last_decline_category": joined["last_decline_category"].to_numpy(),
            "first_decline_category": joined["first_decline_category"].to_numpy(),
            "last_advice_code": joined["last_advice_code"].to_numpy(),
        },
        index=candidates.index,
    )
    return out
