"""`POST /v1/retry-decisions` through the HTTP client: the contract, the rules, the defaults."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.deps import get_clock

URL = "/v1/retry-decisions"
HOUR = pd.Timedelta(hours=1)


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC")


def decide(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(URL, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def attempt(
    at: str, code: str = "insufficient_funds", network: str | None = None, advice: str | None = None
) -> dict[str, Any]:
    return {
        "attempt_id": f"a_{at}",
        "attempted_at": at,
        "decline_code": code,
        "network_decline_code": network,
        "merchant_advice_code": advice,
    }


def assert_stop(data: dict[str, Any], *words: str) -> None:
    assert data["action"] == "stop"
    assert data["retry_at"] is None
    assert data["success_probability"] is None
    assert data["schedule"] == []
    assert data["expected_recovered_amount"] == 0
    text = " ".join(data["reasons"]).lower()
    for word in words:
        assert word.lower() in text, data["reasons"]


class TestRetry:
    def test_contract_of_a_retry(self, client: TestClient, request_body: dict[str, Any]) -> None:
        data = decide(client, request_body)
        now, window_end = ts(request_body["now"]), ts(request_body["window_end"])
        last = ts(request_body["attempts"][-1]["attempted_at"])
        assert data["action"] == "retry"
        assert data["decision_id"].startswith("dec_") and len(data["decision_id"]) == 4 + 32
        assert data["model_version"] == "test-0"
        assert data["next_step"] in ("none", "notify_customer")
        assert 0 < data["recovery_probability"] <= 1
        # The amount is rounded from the unrounded probability (the response's has 4 decimals).
        exact = request_body["amount"] * data["recovery_probability"]
        assert abs(data["expected_recovered_amount"] - exact) <= 0.5 + request_body["amount"] * 0.00005
        first_hours = (ts(data["retry_at"]) - now) / HOUR
        assert first_hours <= data["expected_hours_to_recovery"] <= (ts(data["schedule"][-1]["retry_at"]) - now) / HOUR
        retry_at = ts(data["retry_at"])
        assert data["retry_at"].endswith("Z")
        assert now < retry_at <= window_end
        assert retry_at >= last + 24 * HOUR
        schedule = data["schedule"]
        assert schedule[0]["retry_at"] == data["retry_at"]
        assert schedule[0]["success_probability"] == data["success_probability"]
        assert 1 <= len(schedule) <= request_body["max_retries"] - (len(request_body["attempts"]) - 1)
        times = [ts(item["retry_at"]) for item in schedule]
        assert all(b - a >= 24 * HOUR for a, b in itertools.pairwise(times))
        assert all(t <= window_end for t in times)
        probabilities = [item["success_probability"] for item in schedule]
        assert all(0.0 <= p <= 1.0 for p in probabilities)
        recovered = 1.0
        for p in probabilities:
            recovered *= 1.0 - p
        assert abs(data["expected_recovered_amount"] - request_body["amount"] * (1.0 - recovered)) <= 2
        assert 0 < data["expected_recovered_amount"] <= request_body["amount"]
        assert any("candidate times" in reason for reason in data["reasons"])
        assert any("success probability" in reason for reason in data["reasons"])

    def test_decision_ids_are_unique(self, client: TestClient, request_body: dict[str, Any]) -> None:
        ids = {decide(client, request_body)["decision_id"] for _ in range(3)}
        assert len(ids) == 3

    def test_attempts_already_made_count_against_the_budget(
        self, client: TestClient, request_body: dict[str, Any]
    ) -> None:
        request_body["attempts"] = [attempt("2026-11-01T14:00:00Z"), attempt("2026-11-03T14:00:00Z")]
        request_body["now"] = "2026-11-03T14:05:00Z"
        request_body["max_retries"] = 2
        data = decide(client, request_body)
        assert data["action"] == "retry"
        assert len(data["schedule"]) == 1

    def test_unknown_codes_brands_and_fields_are_accepted(
        self, client: TestClient, request_body: dict[str, Any]
    ) -> None:
        request_body["attempts"][0]["decline_code"] = "brand_new_code_2031"
        request_body["attempts"][0]["network_decline_code"] = "Z9"
        request_body["card"]["brand"] = "newnetwork"
        request_body["card"]["funding"] = "charge"
        request_body["some_future_field"] = {"x": 1}
        request_body["card"]["wallet"] = "apple_pay"
        assert decide(client, request_body)["action"] == "retry"

    def test_optional_fields_may_be_absent_or_null(self, client: TestClient, request_body: dict[str, Any]) -> None:
        request_body["card"] = {"brand": "visa", "funding": None}
        request_body["customer_timezone"] = None
        del request_body["max_retries"], request_body["window_end"]
        request_body["attempts"][0] = {
            "attempt_id": "a1",
            "attempted_at": "2026-11-01T14:00:00Z",
            "decline_code": "do_not_honor",
        }
        data = decide(client, request_body)
        assert data["action"] == "retry"
        # Default window: first failure + 14 days; default budget: 4 retries.
        assert ts(data["schedule"][-1]["retry_at"]) <= ts("2026-11-15T14:00:00Z")
        assert len(data["schedule"]) <= 4

    def test_offsets_are_read_and_answers_are_utc(self, client: TestClient, request_body: dict[str, Any]) -> None:
        request_body["attempts"][0]["attempted_at"] = "2026-11-01T08:00:00-06:00"  # 14:00Z
        request_body["now"] = "2026-11-01T15:05:00+01:00"  # 14:05Z
        data = decide(client, request_body)
        assert data["retry_at"].endswith("Z")
        assert ts(data["retry_at"]) >= ts("2026-11-02T14:00:00Z")

    def test_long_window_is_cut_to_the_longest_allowed(self, client: TestClient, request_body: dict[str, Any]) -> None:
        request_body["window_end"] = "2027-06-01T00:00:00Z"
        data = decide(client, request_body)
        assert data["action"] == "retry"
        assert all(ts(item["retry_at"]) <= ts("2026-12-31T14:00:00Z") for item in data["schedule"])
        assert any("cut to 60 days" in reason for reason in data["reasons"])

    def test_many_attempts(self, client: TestClient, request_body: dict[str, Any]) -> None:
        start = ts("2026-10-01T00:00:00Z")
        request_body["attempts"] = [attempt((start + i * HOUR).isoformat()) for i in range(1000)]
        request_body["now"] = (start + 1000 * HOUR).isoformat()
        request_body["window_end"] = None
        request_body["max_retries"] = 100
        assert decide(client, request_body)["action"] == "stop"  # 999 retries > 100: budget spent


@pytest.fixture
def frozen_client(app: FastAPI, client: TestClient) -> Iterator[TestClient]:
    """The session client with the server clock fixed at 2026-11-01T14:05Z."""
    app.dependency_overrides[get_clock] = lambda: datetime(2026, 11, 1, 14, 5, tzinfo=UTC)
    yield client
    app.dependency_overrides.clear()


class TestDefaults:
    def test_now_defaults_to_the_server_clock(self, frozen_client: TestClient, request_body: dict[str, Any]) -> None:
        del request_body["now"]
        data = decide(frozen_client, request_body)
        assert ts(data["retry_at"]) > ts("2026-11-01T14:05:00Z")

    def test_attempt_after_the_server_clock_is_rejected(
        self, frozen_client: TestClient, request_body: dict[str, Any]
    ) -> None:
        del request_body["now"]
        request_body["attempts"][0]["attempted_at"] = "2026-11-01T15:00:00Z"
        response = frozen_client.post(URL, json=request_body)
        assert response.status_code == 422
        assert response.json()["field"] == "attempts.0.attempted_at"

    def test_default_window_over_stops(self, frozen_client: TestClient, request_body: dict[str, Any]) -> None:
        request_body["attempts"][0]["attempted_at"] = "2026-10-01T14:00:00Z"
        request_body["window_end"] = None
        del request_body["now"]
        assert_stop(decide(frozen_client, request_body), "window ended")


class TestRules:
    @pytest.mark.parametrize("code", ["stolen_card", "lost_card", "fraudulent", "do_not_try_again"])
    def test_hard_decline_stops(self, client: TestClient, request_body: dict[str, Any], code: str) -> None:
        request_body["attempts"][0]["decline_code"] = code
        data = decide(client, request_body)
        assert_stop(data, "hard decline", code)
        assert data["next_step"] == "request_new_payment_method"
        assert data["recovery_probability"] == 0 and data["expected_hours_to_recovery"] is None

    def test_hard_decline_earlier_in_the_history_still_stops(
        self, client: TestClient, request_body: dict[str, Any]
    ) -> None:
        request_body["attempts"] = [attempt("2026-10-30T14:00:00Z", "pickup_card"), attempt("2026-11-01T14:00:00Z")]
        assert_stop(decide(client, request_body), "pickup_card")

    @pytest.mark.parametrize("advice", ["03", "21", "3"])
    def test_mastercard_do_not_retry_stops(self, client: TestClient, request_body: dict[str, Any], advice: str) -> None:
        request_body["card"]["brand"] = "mastercard"
        request_body["attempts"][0]["merchant_advice_code"] = advice
        assert_stop(decide(client, request_body), "Mastercard advice", "Mastercard Merchant Advice Codes")

    def test_visa_category_1_stops(self, client: TestClient, request_body: dict[str, Any]) -> None:
        request_body["attempts"][0]["decline_code"] = "do_not_honor"
        request_body["attempts"][0]["network_decline_code"] = "43"
        assert_stop(decide(client, request_body), "Visa category 1", "Visa Core Rules")

    def test_visa_category_1_is_visa_only(self, client: TestClient, request_body: dict[str, Any]) -> None:
        request_body["card"]["brand"] = "amex"
        request_body["attempts"][0]["network_decline_code"] = "43"
        assert decide(client, request_body)["action"] == "retry"

    @pytest.mark.parametrize(
        ("code", "advice"),
        [("expired_card", None), ("incorrect_cvc", None), ("do_not_honor", "01"), ("do_not_honor", "41")],
    )
    def test_new_card_needed_stops_with_next_step(
        self, client: TestClient, request_body: dict[str, Any], code: str, advice: str | None
    ) -> None:
        request_body["card"]["brand"] = "mastercard"
        request_body["attempts"][0]["decline_code"] = code
        request_body["attempts"][0]["merchant_advice_code"] = advice
        data = decide(client, request_body)
        assert_stop(data)
        assert data["next_step"] == "request_new_payment_method"

    @pytest.mark.parametrize(("advice", "hours"), [("24", 1), ("25", 24), ("26", 48), ("27", 96), ("30", 240)])
    def test_mastercard_retry_after_advice(
        self, client: TestClient, request_body: dict[str, Any], advice: str, hours: int
    ) -> None:
        request_body["card"]["brand"] = "mastercard"
        request_body["attempts"][0]["merchant_advice_code"] = advice
        data = decide(client, request_body)
        last = ts(request_body["attempts"][0]["attempted_at"])
        assert data["action"] == "retry"
        assert ts(data["retry_at"]) >= last + max(hours, 24) * HOUR
        assert any(f"Mastercard advice {advice}" in reason for reason in data["reasons"])

    def test_transient_error_allows_a_quick_retry(self, client: TestClient, request_body: dict[str, Any]) -> None:
        # A 3-hour window: only the transient spacing (1 h) leaves room for a retry.
        request_body["window_end"] = "2026-11-01T17:00:00Z"
        assert_stop(decide(client, request_body), "no retry allowed before the window ends")
        request_body["attempts"][0]["decline_code"] = "processing_error"
        data = decide(client, request_body)
        assert data["action"] == "retry"
        retry_at = ts(data["retry_at"])
        assert ts("2026-11-01T15:00:00Z") <= retry_at <= ts("2026-11-01T17:00:00Z")
        assert any("transient error" in reason for reason in data["reasons"])
        assert len(data["schedule"]) == 1

    def test_budget_spent_stops(self, client: TestClient, request_body: dict[str, Any]) -> None:
        days = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
        request_body["attempts"] = [attempt(f"{day}T14:00:00Z") for day in days]
        request_body["now"] = "2026-11-05T14:05:00Z"
        assert_stop(decide(client, request_body), "retry budget spent", "4 of 4")

    def test_zero_budget_stops(self, client: TestClient, request_body: dict[str, Any]) -> None:
        request_body["max_retries"] = 0
        assert_stop(decide(client, request_body), "retry budget spent")

    def test_visa_reattempt_cap_limits_the_plan(self, client: TestClient, request_body: dict[str, Any]) -> None:
        start = ts("2026-10-20T00:00:00Z")
        request_body["attempts"] = [attempt((start + i * 24 * HOUR).isoformat()) for i in range(15)]
        request_body["now"] = (start + 14 * 24 * HOUR + HOUR).isoformat()
        request_body["window_end"] = (start + 40 * 24 * HOUR).isoformat()
        request_body["max_retries"] = 30
        data = decide(client, request_body)
        # 14 reattempts made in 30 days: one more is allowed now, the next once the oldest ages out.
        assert data["action"] == "retry"
        assert len(data["schedule"]) == 1
        assert any("Visa reattempt limit" in reason for reason in data["reasons"])

    def test_no_slot_worth_an_attempt_stops(self, app: FastAPI, request_body: dict[str, Any]) -> None:
        from serving.app import create_app

        costly = create_app(app.state.settings.model_copy(update={"attempt_cost": 0.99}))
        with TestClient(costly) as client:
            data = decide(client, request_body)
        assert_stop(data, "no slot worth an attempt")
