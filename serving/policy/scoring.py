"""The model side of a decision: the Scorer interface, and the frames the feature library wants.

Features come only from `features.candidates`; this module only shapes requests into its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.bundle import Bundle
from features.candidates import CONTEXT_COLUMNS
from features.taxonomy import decline_category
from serving.schemas import DecisionRequest

FloatArray = npt.NDArray[np.float64]


class Scorer(Protocol):
    """What the policy needs of a model: probabilities of candidate slots and their explanation."""

    @property
    def model_version(self) -> str:
        """The version reported with every decision."""
        ...

    def score(self, slots: pd.DataFrame, features: pd.DataFrame) -> FloatArray:
        """P(success) of each slot row.

        `slots` has `request` (index in the batch), `retry_index` (k: 0 is the next retry) and
        `candidate_at` (UTC); `features` holds the model features of the same rows.
        """
        ...

    def contributions(self, features: pd.DataFrame) -> FloatArray:
        """Per-feature log-odds contributions of each row; the last column is the bias."""
        ...


@dataclass(frozen=True)
class BundleScorer:
    """The served model as a Scorer: the calibrated bundle scores the feature rows."""

    bundle: Bundle

    @property
    def model_version(self) -> str:
        """The bundle's version."""
        return self.bundle.model_version

    def score(self, slots: pd.DataFrame, features: pd.DataFrame) -> FloatArray:
        """Calibrated probabilities of the feature rows (the slots themselves are not needed).

        A frame in `FEATURE_COLUMNS` order (as the policy builds it) goes to the model without a copy.
        """
        return self.bundle.predict(features)

    def contributions(self, features: pd.DataFrame) -> FloatArray:
        """LightGBM `pred_contrib` of the rows."""
        return self.bundle.contributions(features)


def _objects(values: Sequence[object]) -> npt.NDArray[np.object_]:
    """Values as a 1-d object array, kept as they are (None stays None): the cheapest column for a few rows."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def attempts_frame(request: DecisionRequest, key: str | None = None) -> pd.DataFrame:
    """The invoice's attempts as contract §1 rows (all failed), oldest first.

    `key` replaces the invoice id, so the requests of a batch never share a history. Text columns
    are object arrays (None when missing), as in `history_frame`. The decision path reads the
    narrower `history_frame`; this full frame serves tests and the benchmarks' reference path.
    """
    rows = request.attempts
    n = len(rows)
    return pd.DataFrame(
        {
            "invoice_id": _objects([key or request.invoice_id] * n),
            "customer_id": _objects([request.customer_id] * n),
            "attempt_id": _objects([a.attempt_id for a in rows]),
            "attempted_at": pd.to_datetime([a.attempted_at for a in rows], utc=True),
            "amount": request.amount,
            "currency": request.currency,
            "succeeded": False,
            "decline_code": _objects([a.decline_code for a in rows]),
            "network_decline_code": _objects([a.network_decline_code for a in rows]),
            "merchant_advice_code": _objects([a.merchant_advice_code for a in rows]),
            "card_brand": request.card.brand,
            "card_funding": request.card.funding,
            "card_country": request.card.country,
            "card_exp_month": request.card.exp_month,
            "card_exp_year": request.card.exp_year,
            "card_fingerprint": request.card.fingerprint,
            "customer_timezone": request.customer_timezone,
        },
        copy=False,
    )


def history_frame(requests: Sequence[DecisionRequest], keys: Sequence[str]) -> pd.DataFrame:
    """The attempt columns the feature library reads (key, time, codes) of many requests, in one frame.

    Built column by column from the requests: concatenating thousands of one-request frames costs
    seconds in a large batch. `keys` replace the invoice ids, as in `attempts_frame`.
    """
    keyed = [(key, a) for request, key in zip(requests, keys, strict=True) for a in request.attempts]
    columns: dict[str, object] = {}
    for name in ("decline_code", "network_decline_code", "merchant_advice_code"):
        columns[name] = _objects([getattr(a, name) for _, a in keyed])
    invoice = _objects([key for key, _ in keyed])
    at = pd.to_datetime([a.attempted_at for _, a in keyed], utc=True)
    return pd.DataFrame({"invoice_id": invoice, **columns, "attempted_at": at}, copy=False)


def candidates_frame(request: DecisionRequest, times: pd.DatetimeIndex, key: str | None = None) -> pd.DataFrame:
    """One `CONTEXT_COLUMNS` row per candidate time: the invoice's context as known from the request.

    The customer-history columns come from the store, not the request, so they are left out
    (the feature library reads them as unknown).
    """
    frame = contexts_frame([request], [key or request.invoice_id])
    frame = frame.iloc[np.zeros(len(times), dtype=np.intp)].reset_index(drop=True)
    frame.insert(1, "candidate_at", times)
    return frame.loc[:, [c for c in CONTEXT_COLUMNS if c in frame]]


def contexts_frame(requests: Sequence[DecisionRequest], keys: Sequence[str]) -> pd.DataFrame:
    """One row per request: its `CONTEXT_COLUMNS` except `candidate_at` (the context as known now).

    `keys` are the invoice ids to use (a batch keys requests by position, so they never share a
    history). Built column by column for the whole batch: the feature library broadcasts each row
    to that request's candidate times.
    """
    cards = [r.card for r in requests]

    def number(values: list[int | None]) -> FloatArray:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    # Plain arrays (text as objects, None when missing): the feature library reads every column
    # through the same conversions whatever its dtype, and a request's frame stays cheap to build.
    return pd.DataFrame(
        {
            "invoice_id": _objects(list(keys)),
            "amount": np.array([r.amount for r in requests], dtype=np.int64),
            "currency": _objects([r.currency for r in requests]),
            "card_brand": _objects([c.brand for c in cards]),
            "card_funding": _objects([c.funding for c in cards]),
            "card_country": _objects([c.country for c in cards]),
            "card_exp_month": number([c.exp_month for c in cards]),
            "card_exp_year": number([c.exp_year for c in cards]),
            "customer_timezone": _objects([r.customer_timezone for r in requests]),
            "billing_interval": _objects([r.billing_interval for r in requests]),
            "customer_created_at": pd.Series(
                [pd.Timestamp(r.customer_created_at) if r.customer_created_at else pd.NaT for r in requests],
                dtype="datetime64[us, UTC]",
            ),
        },
        copy=False,
    )


def last_decline_categories(attempts: pd.DataFrame, last_rows: np.ndarray) -> npt.NDArray[np.object_]:
    """`last_decline_category` of many requests at once: the category of row `last_rows[i]` (None if none)."""
    category = decline_category(attempts["decline_code"].iloc[last_rows])
    values = np.asarray(category.to_numpy(dtype=object))
    return np.array([None if pd.isna(v) else str(v) for v in values], dtype=object)


def last_decline_category(attempts: pd.DataFrame) -> str | None:
    """The taxonomy category of the latest decline."""
    category = decline_category(attempts["decline_code"].iloc[-1:]).iloc[0]
    return None if pd.isna(category) else str(category)
