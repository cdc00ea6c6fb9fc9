"""Behaviour of the shipped model: it learned timing from the (simulated) data it was trained on.

The simulator pays most UK and German customers at the month's end; nothing in the product says
so. A model that learned timing from data must therefore see insufficient-funds retries succeed
more just after the month turns than just before it.
"""

from __future__ import annotations

import pandas as pd
import pytest

from features.bundle import Bundle, load_bundle
from features.candidates import build_retry_features, candidate_times
from serving.settings import DEFAULT_MODEL_DIR


@pytest.fixture(scope="module")
def shipped() -> Bundle:
    return load_bundle(DEFAULT_MODEL_DIR)


def mean_success(
    bundle: Bundle,
    country: str,
    zone: str,
    code: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    customer: dict[str, object] | None = None,
) -> float:
    """Mean predicted success of the first retry at every hour between start and end.

    `customer`: the customer-history context columns (features.customer); none known by default.
    """
    attempts = pd.DataFrame(
        {
            "invoice_id": ["in_1"],
            "attempted_at": [start - pd.Timedelta(days=3)],
            "decline_code": [code],
            "customer_timezone": [zone],
            "card_country": [country],
        }
    )
    times = candidate_times(start, end)
    candidates = pd.DataFrame(
        {
            "invoice_id": "in_1",
            "candidate_at": times,
            "amount": 2000,
            "currency": "eur",
            "card_brand": "visa",
            "card_funding": "debit",
            "card_country": country,
            "card_exp_month": 12,
            "card_exp_year": 2030,
            "customer_timezone": zone,
            **(customer or {}),
        }
    )
    return float(bundle.predict(build_retry_features(attempts, candidates)).mean())


@pytest.mark.parametrize(("country", "zone"), [("GB", "Europe/London"), ("DE", "Europe/Berlin")])
def test_month_end_payday_lifts_insufficient_funds(shipped: Bundle, country: str, zone: str) -> None:
    month_end = pd.Timestamp("2026-06-30", tz="UTC")
    before = mean_success(
        shipped, country, zone, "insufficient_funds", month_end - pd.Timedelta(days=3), month_end - pd.Timedelta(days=1)
    )
    after = mean_success(
        shipped, country, zone, "insufficient_funds", month_end + pd.Timedelta(days=1), month_end + pd.Timedelta(days=3)
    )
    assert after > before + 0.1, (before, after)


def test_hard_decline_scores_near_zero(shipped: Bundle) -> None:
    start = pd.Timestamp("2026-06-10", tz="UTC")
    p = mean_success(shipped, "US", "America/Chicago", "stolen_card", start, start + pd.Timedelta(days=5))
    assert p < 0.02


def test_customers_last_recovery_day_lifts_insufficient_funds(shipped: Bundle) -> None:
    """A customer short of money on the 18th and paid again by the 20th: around the 20th beats ten days earlier.

    Both windows are mid-month for a US customer, away from the common paydays the calendar
    features know; only the customer's own history tells them apart.
    """
    history = {
        "customer_funds_short_at": pd.Timestamp("2026-05-18T15:00", tz="UTC"),
        "customer_funds_back_at": pd.Timestamp("2026-05-20T15:00", tz="UTC"),
        "customer_prior_failed_invoices": 2,
        "customer_prior_recoveries": 2,
    }
    zone, code = "America/Chicago", "insufficient_funds"
    aligned = mean_success(
        shipped, "US", zone, code, pd.Timestamp("2026-06-20", tz="UTC"), pd.Timestamp("2026-06-22", tz="UTC"), history
    )
    early = mean_success(
        shipped, "US", zone, code, pd.Timestamp("2026-06-09", tz="UTC"), pd.Timestamp("2026-06-11", tz="UTC"), history
    )
    assert aligned > early + 0.05, (early, aligned)
