"""The model side of a decision: the Scorer interface, and the frames the feature library wants.

Features come only from `features.candidates`; this module only shapes requests into its inputs.
"""

from __future__ import annotations

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
        """Calibrated probabilities of the feature rows (the slots themselves are not needed)."""
        return self.bundle.predict(features)

    def contributions(self, features: pd.DataFrame) -> FloatArray:
        """LightGBM `pred_contrib` of the rows."""
        return self.bundle.contributions(features)


def attempts_frame(request: DecisionRequest, key: str | None = None) -> pd.DataFrame:
    """The invoice's attempts as contract §1 rows (all failed), oldest first.

    `key` replaces the invoice id, so the requests of a batch never share a history.
    """
    rows = request.attempts
    return pd.DataFrame(
        {
            "invoice_id": pd.Series([key or request.invoice_id] * len(rows), dtype="string"),
            "customer_id": pd.Series([request.customer_id] * len(rows), dtype="string"),
            "attempt_id": pd.Series([a.attempt_id for a in rows], dtype="string"),
            "attempted_at": pd.to_datetime([a.attempted_at for a in rows], utc=True),
            "amount": request.amount,
            "currency": request.currency,
            "succeeded": False,
            "decline_code": pd.Series([a.decline_code for a in rows], dtype="string"),
            "network_decline_code": pd.Series([a.network_decline_code for a in rows], dtype="string"),
            "merchant_advice_code": pd.Series([a.merchant_advice_code for a in rows], dtype="string"),
            "card_brand": request.card.brand,
            "card_funding": request.card.funding,
            "card_country": request.card.country,
            "card_exp_month": request.card.exp_month,
            "card_exp_year": request.card.exp_year,
            "card_fingerprint": request.card.fingerprint,
            "customer_timezone": request.customer_timezone,
        }
    )


def candidates_frame(request: DecisionRequest, times: pd.DatetimeIndex, key: str | None = None) -> pd.DataFrame:
    """One `CONTEXT_COLUMNS` row per candidate time: the invoice's context as known now."""
    n = len(times)
    card = request.card
    created = pd.Timestamp(request.customer_created_at) if request.customer_created_at else pd.NaT
    frame = pd.DataFrame(
        {
            "invoice_id": pd.Series([key or request.invoice_id] * n, dtype="string"),
            "candidate_at": times,
            "amount": np.full(n, request.amount, dtype=np.int64),
            "currency": pd.Series([request.currency] * n, dtype="string"),
            "card_brand": pd.Series([card.brand] * n, dtype="string"),
            "card_funding": pd.Series([card.funding] * n, dtype="string"),
            "card_country": pd.Series([card.country] * n, dtype="string"),
            "card_exp_month": pd.Series([card.exp_month] * n, dtype="Int64"),
            "card_exp_year": pd.Series([card.exp_year] * n, dtype="Int64"),
            "customer_timezone": pd.Series([request.customer_timezone] * n, dtype="string"),
            "billing_interval": pd.Series([request.billing_interval] * n, dtype="string"),
            "customer_created_at": pd.Series([created] * n, dtype="datetime64[us, UTC]"),
        }
    )
    return frame.loc[:, list(CONTEXT_COLUMNS)]


def last_decline_category(attempts: pd.DataFrame) -> str | None:
    """The taxonomy category of the latest decline."""
    category = decline_category(attempts["decline_code"].iloc[-1:]).iloc[0]
    return None if pd.isna(category) else str(category)
