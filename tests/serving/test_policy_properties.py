"""Property: for any valid request, a decision breaks no rule, is never in the past or after
`window_end`, keeps the spacing, and never plans more retries than the budget allows."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.bundle import load_bundle
from features.taxonomy import is_hard_decline
from serving.policy import decide
from serving.policy.rules import evaluate_rules
from serving.policy.scoring import BundleScorer, attempts_frame
from serving.schemas import DecisionRequest
from serving.settings import Settings

CODES = ["insufficient_funds", "do_not_honor", "generic_decline", "processing_error", "expired_card", "stolen_card",
         "card_velocity_exceeded", "brand_new_code"]  # fmt: skip
ADVICE = [None, None, None, "02", "03", "21", "24", "25", "26", "27", "30", "01", "40"]
NETWORK = [None, "51", "05", "43", "54", "91", "14"]
BRANDS = ["visa", "mastercard", "amex", "discover", "elo"]
ZONES = [None, "America/Chicago", "Europe/London", "Asia/Tokyo", "Australia/Sydney"]


@st.composite
def requests(draw: st.DrawFn) -> DecisionRequest:
    """A valid decision request: 1–6 failed attempts in order, a window after now."""
    first = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=draw(st.integers(0, 24 * 300)))
    gaps = draw(st.lists(st.integers(1, 24 * 6), min_size=0, max_size=5))
    times = [first]
    for gap in gaps:
        times.append(times[-1] + timedelta(hours=gap))
    now = times[-1] + timedelta(minutes=draw(st.integers(1, 60 * 48)))
    window_end = now + timedelta(hours=draw(st.integers(1, 24 * 40)))
    attempts = [
        {
            "attempt_id": f"a{i}",
            "attempted_at": at,
            "decline_code": draw(st.sampled_from(CODES)),
            "network_decline_code": draw(st.sampled_from(NETWORK)),
            "merchant_advice_code": draw(st.sampled_from(ADVICE)),
        }
        for i, at in enumerate(times)
    ]
    return DecisionRequest.model_validate(
        {
            "invoice_id": "in_p",
            "customer_id": "cus_p",
            "amount": draw(st.integers(1, 10**7)),
            "currency": "usd",
            "card": {"brand": draw(st.sampled_from(BRANDS)), "country": "US", "exp_month": 5, "exp_year": 2031},
            "customer_timezone": draw(st.sampled_from(ZONES)),
            "attempts": attempts,
            "now": now,
            "window_end": window_end,
            "max_retries": draw(st.integers(0, 8)),
        }
    )


@pytest.fixture(scope="module")
def scorer(bundle_dir: Path) -> BundleScorer:
    return BundleScorer(load_bundle(bundle_dir))


SETTINGS = Settings()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
def test_no_decision_breaks_a_rule(scorer: BundleScorer, request: DecisionRequest) -> None:
    decision = decide(request, scorer, SETTINGS, datetime(2027, 1, 1, tzinfo=UTC))
    made = len(request.attempts) - 1
    budget = request.max_retries if request.max_retries is not None else SETTINGS.default_max_retries
    if decision.action == "stop":
        assert decision.schedule == ()
        return
    now, window_end = pd.Timestamp(request.now), pd.Timestamp(request.window_end)
    verdict = evaluate_rules(attempts_frame(request), request.card.brand, SETTINGS)
    assert not verdict.stops, "a stop rule fired but the policy retried"
    assert not is_hard_decline(pd.Series([a.decline_code for a in request.attempts])).any()
    times = [item.at for item in decision.schedule]
    assert times[0] > now
    assert times[0] >= verdict.not_before
    assert times[-1] <= window_end
    assert len(times) <= budget - made
    spacing = pd.Timedelta(hours=SETTINGS.min_retry_spacing_hours)
    assert all(later - earlier >= spacing for earlier, later in itertools.pairwise(times))
    assert all(0.0 <= item.success_probability <= 1.0 for item in decision.schedule)
