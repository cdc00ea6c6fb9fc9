"""From a request to the model's probabilities: the frames the feature library wants, and one call.

Features come only from `features.candidates.build_retry_features`; this module only shapes the
request into its inputs and stacks the result for the planner's retry indices.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.candidates import CONTEXT_COLUMNS, build_retry_features
from features.taxonomy import DeclineCategory, decline_category
from serving.schemas import DecisionRequest

FloatArray = npt.NDArray[np.float64]


class Scorer(Protocol):
    """What the policy needs of a model (`features.bundle.Bundle` is one)."""

    @property
    def model_version(self) -> str:
        """The version reported with every decision."""
        ...

    def predict(self, features: pd.DataFrame) -> FloatArray:
        """Calibrated success probability of each feature row."""
        ...

    def contributions(self, features: pd.DataFrame) -> FloatArray:
        """Per-feature log-odds contributions of each row; the last column is the bias."""
        ...


def attempts_frame(request: DecisionRequest) -> pd.DataFrame:
    """The invoice's attempts as contract §1 rows (all failed), oldest first."""
    rows = request.attempts
    return pd.DataFrame(
        {
            "invoice_id": pd.Series([request.invoice_id] * len(rows), dtype="string"),
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


def candidates_frame(request: DecisionRequest, times: pd.DatetimeIndex) -> pd.DataFrame:
    """One `CONTEXT_COLUMNS` row per candidate time: the invoice's context as known now."""
    n = len(times)
    card = request.card
    created = pd.Timestamp(request.customer_created_at) if request.customer_created_at else pd.NaT
    frame = pd.DataFrame(
        {
            "invoice_id": pd.Series([request.invoice_id] * n, dtype="string"),
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


def stack_retries(
    features: pd.DataFrame, retries: int, spacing_hours: float, last_category: str | None
) -> pd.DataFrame:
    """B copies of the next retry's features, copy k standing for the k-th retry from now.

    Approximation (documented in the README): the retries before the k-th are assumed to fail
    with the same decline code as the last one, `spacing_hours` before it. So copy k adds k to
    `retry_number` (and to the matching decline counter) and sets `hours_since_last_attempt` to
    the spacing; the calendar, card and first-attempt features are exact at every slot.
    """
    base = features.to_numpy(dtype=np.float64, copy=True)
    n = len(features)
    stacked = np.tile(base, (retries, 1))
    k = np.repeat(np.arange(retries, dtype=np.float64), n)
    position = {name: i for i, name in enumerate(features.columns)}
    stacked[:, position["retry_number"]] += k
    later = k > 0
    stacked[later, position["hours_since_last_attempt"]] = spacing_hours
    counters = {
        DeclineCategory.INSUFFICIENT_FUNDS.value: "n_insufficient_funds",
        DeclineCategory.DO_NOT_HONOR.value: "n_do_not_honor",
    }
    if last_category in counters:
        stacked[:, position[counters[last_category]]] += k
    return pd.DataFrame(stacked, columns=features.columns)


def last_decline_category(attempts: pd.DataFrame) -> str | None:
    """The taxonomy category of the latest decline."""
    category = decline_category(attempts["decline_code"].iloc[-1:]).iloc[0]
    return None if pd.isna(category) else str(category)


def score_retries(
    scorer: Scorer,
    attempts: pd.DataFrame,
    candidates: pd.DataFrame,
    retries: int,
    spacing_hours: float,
) -> tuple[pd.DataFrame, FloatArray]:
    """The next retry's feature rows and P(success) of retry k at slot t, shape (retries, n).

    One vectorised model call scores every (retry index, candidate time) pair.
    """
    features = build_retry_features(attempts, candidates)
    stacked = stack_retries(features, retries, spacing_hours, last_decline_category(attempts))
    probs = np.asarray(scorer.predict(stacked), dtype=np.float64).reshape(retries, len(candidates))
    return features, probs
