"""Per-card limits and joint planning across a customer's invoices, next steps and the plan's odds."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.candidates import FEATURE_COLUMNS
from serving.policy import decide, decide_batch
from serving.policy.card import CardAttempt, CardHistory
from serving.policy.rules import cap_breaches
from serving.schemas import DecisionRequest
from serving.settings import Settings

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


@dataclass(frozen=True)
class ConstantScorer:
    """Every slot succeeds with the same probability: the rules and the planner are under test."""

    probability: float = 0.3
    model_version: str = "constant"

    def score(self, slots: pd.DataFrame, features: pd.DataFrame) -> np.ndarray:
        return np.full(len(features), self.probability)

    def contributions(self, features: pd.DataFrame) -> np.ndarray:
        return np.zeros((len(features), len(FEATURE_COLUMNS) + 1))


def request(
    invoice: str,
    failures: list[datetime],
    now: datetime,
    *,
    brand: str = "visa",
    fingerprint: str | None = "fp_shared",
    code: str = "insufficient_funds",
    max_retries: int = 8,
) -> DecisionRequest:
    """A decision request for one invoice on the shared card, every attempt failed with `code`."""
    return DecisionRequest.model_validate(
        {
            "invoice_id": invoice,
            "customer_id": "cus_multi",
            "amount": 4900,
            "currency": "usd",
            "card": {"brand": brand, "country": "US", "exp_month": 5, "exp_year": 2031, "fingerprint": fingerprint},
            "customer_timezone": "America/Chicago",
            "attempts": [
                {"attempt_id": f"{invoice}_{i}", "attempted_at": at, "decline_code": code, "network_decline_code": "51"}
                for i, at in enumerate(failures)
            ],
            "now": now,
            "window_end": failures[0] + timedelta(days=14),
            "max_retries": max_retries,
        }
    )


def reattempts(invoice: str, times: list[datetime]) -> tuple[CardAttempt, ...]:
    """Another invoice's history: its first charge, then failed reattempts."""
    return tuple(CardAttempt(pd.Timestamp(at), invoice, first=i == 0, succeeded=False) for i, at in enumerate(times))


SCORER = ConstantScorer()


class TestPerCardCaps:
    def test_visa_cap_counts_the_cards_other_invoices(self) -> None:
        other = reattempts("in_other", [T0 - 20 * 24 * H + i * 24 * H for i in range(16)])  # 15 reattempts
        decision = decide(
            request("in_me", [T0], T0 + 0.1 * H), SCORER, Settings(), T0, cards=CardHistory(attempts=other)
        )
        assert decision.action == "retry"
        # The cap leaves no room until the oldest counted reattempt is 30 days old.
        assert decision.retry_at is not None and decision.retry_at >= pd.Timestamp(T0 - 19 * 24 * H + 30 * 24 * H)
        assert decision.blocked_by_rule == "visa_reattempt_cap"
        assert any("counted across 2 invoices on this card" in r for r in decision.reasons), decision.reasons

    def test_mastercard_daily_cap_counts_planned_retries_of_other_invoices(self) -> None:
        settings = Settings(mastercard_max_declines_24h=2, min_retry_spacing_hours=1)
        card = CardHistory(planned=(("in_b", pd.Timestamp(T0 + 2 * H)),))
        decision = decide(request("in_me", [T0], T0 + 0.1 * H, brand="mastercard"), SCORER, settings, T0, cards=card)
        # Own decline + the other invoice's planned retry = 2 in 24 h: wait for the decline to age out.
        assert decision.retry_at is not None and decision.retry_at >= pd.Timestamp(T0 + 24 * H)

    def test_without_a_fingerprint_nothing_is_shared(self) -> None:
        other = reattempts("in_other", [T0 - 20 * 24 * H + i * 24 * H for i in range(16)])
        alone = decide(request("in_me", [T0], T0 + 0.1 * H, fingerprint=None), SCORER, Settings(), T0)
        shared = decide(request("in_me", [T0], T0 + 0.1 * H), SCORER, Settings(), T0, cards=CardHistory(attempts=other))
        assert alone.retry_at is not None and shared.retry_at is not None and alone.retry_at < shared.retry_at


class TestJointPlanning:
    def test_no_two_retries_of_one_card_in_the_same_hour(self) -> None:
        alone = decide(request("in_me", [T0], T0 + 0.1 * H), SCORER, Settings(), T0)
        assert alone.retry_at is not None
        card = CardHistory(planned=(("in_b", alone.retry_at),))
        shared = decide(request("in_me", [T0], T0 + 0.1 * H), SCORER, Settings(), T0, cards=card)
        assert shared.retry_at is not None
        assert abs(shared.retry_at - alone.retry_at) >= pd.Timedelta(minutes=60)

    def test_a_batch_plans_invoices_on_one_card_apart(self) -> None:
        requests = [request(f"in_{i}", [T0 + i * 10 * 60 * timedelta(seconds=1)], T0 + 0.5 * H) for i in range(3)]
        decisions = decide_batch(requests, SCORER, Settings(), T0)
        firsts = sorted(d.retry_at for d in decisions if d.retry_at is not None)
        assert len(firsts) == 3
        assert all(b - a >= pd.Timedelta(minutes=60) for a, b in itertools.pairwise(firsts))

    def test_a_paid_invoice_on_the_card_brings_the_others_retry_forward(self) -> None:
        settings = Settings()
        me = request("in_me", [T0], T0 + 3 * H)
        alone = decide(me, SCORER, settings, T0)
        paid = CardHistory(attempts=(CardAttempt(pd.Timestamp(T0 + 2 * H), "in_b", first=False, succeeded=True),))
        sooner = decide(me, SCORER, settings, T0, cards=paid)
        assert alone.retry_at is not None and alone.retry_at >= pd.Timestamp(T0 + 24 * H)
        assert sooner.retry_at is not None
        assert (
            pd.Timestamp(T0 + 3 * H)
            < sooner.retry_at
            <= pd.Timestamp(T0 + 3 * H + settings.card_success_retry_hours * H)
        )
        assert any("another invoice on this card was paid" in r for r in sooner.reasons)

    def test_a_paid_invoice_does_not_lift_a_network_rule(self) -> None:
        paid = CardHistory(attempts=(CardAttempt(pd.Timestamp(T0 + 2 * H), "in_b", first=False, succeeded=True),))
        stolen = decide(request("in_me", [T0], T0 + 3 * H, code="stolen_card"), SCORER, Settings(), T0, cards=paid)
        assert stolen.action == "stop" and stolen.next_step == "request_new_payment_method"


class TestNextSteps:
    def test_unlikely_plan_asks_to_notify_the_customer(self) -> None:
        low = decide(request("in_me", [T0], T0 + 0.1 * H, max_retries=2), ConstantScorer(0.05), Settings(), T0)
        high = decide(request("in_me", [T0], T0 + 0.1 * H, max_retries=2), ConstantScorer(0.5), Settings(), T0)
        assert low.action == high.action == "retry"
        assert low.recovery_probability < Settings().notify_customer_below <= high.recovery_probability
        assert (low.next_step, high.next_step) == ("notify_customer", "none")

    def test_plan_probability_and_expected_hours(self) -> None:
        decision = decide(request("in_me", [T0], T0 + 0.1 * H, max_retries=3), ConstantScorer(0.5), Settings(), T0)
        assert len(decision.schedule) == 3
        assert decision.recovery_probability == pytest.approx(1 - 0.5**3)
        now = pd.Timestamp(T0 + 0.1 * H)
        hours = [(s.at - now) / pd.Timedelta(hours=1) for s in decision.schedule]
        expected = (0.5 * hours[0] + 0.25 * hours[1] + 0.125 * hours[2]) / 0.875
        assert decision.expected_hours_to_recovery == pytest.approx(expected)

    @pytest.mark.parametrize(
        ("code", "advice", "step"),
        [
            ("expired_card", None, "request_new_payment_method"),
            ("stolen_card", None, "request_new_payment_method"),
            ("do_not_honor", "03", "request_new_payment_method"),
            ("do_not_honor", "21", "notify_customer"),
            ("do_not_honor", "40", "request_new_payment_method"),
        ],
    )
    def test_stops_name_the_next_step(self, code: str, advice: str | None, step: str) -> None:
        body = request("in_me", [T0], T0 + 0.1 * H, brand="mastercard", code=code).model_dump()
        body["attempts"][0]["merchant_advice_code"] = advice
        decision = decide(DecisionRequest.model_validate(body), SCORER, Settings(), T0)
        assert decision.action == "stop" and decision.next_step == step
        assert decision.recovery_probability == 0 and decision.expected_hours_to_recovery is None

    def test_spent_budget_of_a_soft_decline_asks_to_notify(self) -> None:
        decision = decide(request("in_me", [T0, T0 + 24 * H], T0 + 25 * H, max_retries=1), SCORER, Settings(), T0)
        assert decision.action == "stop" and decision.next_step == "notify_customer"


# ---------------------------------------------------------------------------------------------
# Property: however many invoices share a card and whatever the caps, no retry breaks a cap.
# ---------------------------------------------------------------------------------------------
def _history(
    invoice: str, failures: dict[str, list[datetime]], planned: dict[str, datetime], now: datetime
) -> CardHistory:
    """What a store would tell about the card's other invoices at `now`."""
    attempts = tuple(
        CardAttempt(pd.Timestamp(at), other, first=i == 0, succeeded=False)
        for other, times in failures.items()
        if other != invoice
        for i, at in enumerate(times)
        if at <= now
    )
    held = tuple((other, pd.Timestamp(at)) for other, at in planned.items() if other != invoice and at > now)
    return CardHistory(attempts=attempts, planned=held)


def _card_attempts(failures: dict[str, list[datetime]]) -> list[CardAttempt]:
    """Every attempt on the card (all failed), first charges marked."""
    return [
        CardAttempt(pd.Timestamp(at), inv, first=i == 0, succeeded=False)
        for inv, times in failures.items()
        for i, at in enumerate(times)
    ]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    brand=st.sampled_from(["visa", "mastercard"]),
    offsets=st.lists(st.integers(0, 180), min_size=2, max_size=6),
    visa_cap=st.integers(1, 8),
    mc_day=st.integers(1, 4),
    mc_month=st.integers(2, 10),
    spacing=st.sampled_from([1.0, 6.0, 24.0]),
)
def test_invoices_sharing_a_card_never_exceed_a_cap(
    brand: str, offsets: list[int], visa_cap: int, mc_day: int, mc_month: int, spacing: float
) -> None:
    settings = Settings(
        visa_max_reattempts_30d=visa_cap,
        mastercard_max_declines_24h=mc_day,
        mastercard_max_declines_30d=mc_month,
        min_retry_spacing_hours=spacing,
    )
    invoices = [f"in_{i}" for i in range(len(offsets))]
    failures = {inv: [T0 + timedelta(minutes=m)] for inv, m in zip(invoices, offsets, strict=True)}
    planned: dict[str, datetime] = {}

    def ask(batch: list[str], now: datetime) -> None:
        requests = [request(inv, failures[inv], now, brand=brand) for inv in batch]
        cards = [_history(inv, failures, planned, now) for inv in batch]
        for inv, decision in zip(batch, decide_batch(requests, SCORER, settings, now, cards=cards), strict=True):
            if decision.retry_at is not None:
                planned[inv] = decision.retry_at.to_pydatetime()

    # The scheduler asks for every first failure together (a nightly batch), then after each retry.
    ask(invoices, T0 + timedelta(minutes=max(offsets) + 5))
    for _ in range(200):
        if not planned:
            break
        inv = min(planned, key=lambda k: planned[k])
        failures[inv].append(planned.pop(inv))  # every retry fails: the caps get the most pressure
        ask([inv], failures[inv][-1] + timedelta(minutes=5))
    assert not planned, "the loop should end with every invoice stopped"
    assert cap_breaches(brand, _card_attempts(failures), settings) == []


# ---------------------------------------------------------------------------------------------
# Through the API and the store: outcomes of another invoice on the card count.
# ---------------------------------------------------------------------------------------------
def _outcome(attempt_id: str, invoice: str, at: datetime, fingerprint: str, ok: bool = False) -> dict[str, Any]:
    return {
        "attempt_id": attempt_id,
        "invoice_id": invoice,
        "customer_id": "cus_api_multi",
        "attempted_at": at.isoformat(),
        "succeeded": ok,
        "amount": 4900,
        "currency": "usd",
        "decline_code": None if ok else "insufficient_funds",
        "card_fingerprint": fingerprint,
    }


def test_api_counts_stored_attempts_of_the_cards_other_invoices(
    client: TestClient, request_body: dict[str, Any]
) -> None:
    fingerprint = "fp_api_cap_test"
    first = datetime(2026, 10, 10, 9, 0, tzinfo=UTC)
    for i in range(16):  # one first charge and 15 reattempts of another invoice within 30 days
        response = client.post(
            "/v1/outcomes", json=_outcome(f"cap_other_{i}", "in_cap_other", first + i * 24 * H, fingerprint)
        )
        assert response.status_code in (200, 201), response.text
    body = copy.deepcopy(request_body)
    body["card"].update(brand="visa", fingerprint=fingerprint)
    data = client.post("/v1/retry-decisions", json=body).json()
    assert data["action"] in ("retry", "stop")
    text = " ".join(data["reasons"])
    assert "Visa reattempt limit" in text and "counted across 2 invoices on this card" in text, data["reasons"]
    if data["action"] == "retry":
        assert pd.Timestamp(data["retry_at"]) >= pd.Timestamp(first + 1 * 24 * H + 30 * 24 * H)


def test_api_retries_soon_after_another_invoice_on_the_card_is_paid(
    client: TestClient, request_body: dict[str, Any]
) -> None:
    fingerprint = "fp_api_paid_test"
    body = copy.deepcopy(request_body)
    body["card"]["fingerprint"] = fingerprint
    last = pd.Timestamp(body["attempts"][-1]["attempted_at"])
    paid_at = (last + pd.Timedelta(minutes=2)).to_pydatetime()
    response = client.post(
        "/v1/outcomes", json=_outcome("paid_other_1", "in_paid_other", paid_at, fingerprint, ok=True)
    )
    assert response.status_code in (200, 201), response.text
    data = client.post("/v1/retry-decisions", json=body).json()
    now = pd.Timestamp(body["now"])
    assert data["action"] == "retry"
    assert pd.Timestamp(data["retry_at"]) <= now + pd.Timedelta(hours=Settings().card_success_retry_hours)
    assert data["recovery_probability"] > 0 and data["next_step"] in ("none", "notify_customer")


def test_outcome_ack_names_the_cards_invoices_to_decide_again(client: TestClient, request_body: dict[str, Any]) -> None:
    fingerprint = "fp_api_replan_test"
    body = copy.deepcopy(request_body)
    body.update(invoice_id="in_replan_a")
    body["card"]["fingerprint"] = fingerprint
    planned = client.post("/v1/retry-decisions", json=body).json()
    assert planned["action"] == "retry"
    now = pd.Timestamp(body["now"]).to_pydatetime()
    first_failure = client.post(
        "/v1/outcomes", json=_outcome("replan_b_1", "in_replan_b", now + 0.5 * H, fingerprint)
    ).json()
    assert first_failure["replan_invoice_ids"] == ["in_replan_a"]
    second_failure = client.post(
        "/v1/outcomes", json=_outcome("replan_b_2", "in_replan_b", now + 1.5 * H, fingerprint)
    ).json()
    assert second_failure["replan_invoice_ids"] == []
    paid = client.post(
        "/v1/outcomes", json=_outcome("replan_b_3", "in_replan_b", now + 2.5 * H, fingerprint, ok=True)
    ).json()
    assert paid["replan_invoice_ids"] == ["in_replan_a"]
