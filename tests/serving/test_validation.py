"""Invalid requests: always a 4xx JSON error naming the offending field, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

URL = "/v1/retry-decisions"
Mutation = Callable[[dict[str, Any]], None]


def drop(*path: str | int) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        target: Any = body
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def put(value: Any, *path: str | int) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        target: Any = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def out_of_order(body: dict[str, Any]) -> None:
    later = dict(body["attempts"][0], attempt_id="a0", attempted_at="2026-10-30T14:00:00Z")
    body["attempts"].append(later)


def too_many_attempts(body: dict[str, Any]) -> None:
    body["attempts"] = [dict(body["attempts"][0], attempt_id=f"a{i}") for i in range(1001)]


CASES: list[tuple[str, Mutation, str]] = [
    ("missing amount", drop("amount"), "amount"),
    ("missing card", drop("card"), "card"),
    ("missing card brand", drop("card", "brand"), "card.brand"),
    ("missing attempt time", drop("attempts", 0, "attempted_at"), "attempts.0.attempted_at"),
    ("missing decline code", drop("attempts", 0, "decline_code"), "attempts.0.decline_code"),
    ("amount is text", put("lots", "amount"), "amount"),
    ("amount is a float", put(49.5, "amount"), "amount"),
    ("amount is a numeric string", put("4900", "amount"), "amount"),
    ("negative amount", put(-5, "amount"), "amount"),
    ("zero amount", put(0, "amount"), "amount"),
    ("huge amount", put(10**12 + 1, "amount"), "amount"),
    ("attempts not a list", put({"a": 1}, "attempts"), "attempts"),
    ("card not an object", put("visa", "card"), "card"),
    ("naive attempt time", put("2026-11-01T14:00:00", "attempts", 0, "attempted_at"), "attempts.0.attempted_at"),
    ("naive now", put("2026-11-01T14:05:00", "now"), "now"),
    ("naive window end", put("2026-11-15T14:00:00", "window_end"), "window_end"),
    ("not a timestamp", put("yesterday", "now"), "now"),
    ("unknown currency", put("xyz", "currency"), "currency"),
    ("currency not a code", put("dollars", "currency"), "currency"),
    ("bad country", put("ZZ", "card", "country"), "card.country"),
    ("country not alpha-2", put("USA", "card", "country"), "card.country"),
    ("bad timezone", put("Mars/Olympus_Mons", "customer_timezone"), "customer_timezone"),
    ("exp month 13", put(13, "card", "exp_month"), "card.exp_month"),
    ("exp month 0", put(0, "card", "exp_month"), "card.exp_month"),
    ("empty attempts", put([], "attempts"), "attempts"),
    ("too many attempts", too_many_attempts, "attempts"),
    ("out-of-order attempts", out_of_order, "attempts.1.attempted_at"),
    ("attempt after now", put("2026-11-01T15:00:00Z", "attempts", 0, "attempted_at"), "attempts.0.attempted_at"),
    ("now after window end", put("2026-11-16T00:00:00Z", "now"), "window_end"),
    ("window end equals now", put("2026-11-01T14:05:00Z", "window_end"), "window_end"),
    ("negative max retries", put(-1, "max_retries"), "max_retries"),
    ("max retries not an int", put("four", "max_retries"), "max_retries"),
    ("empty invoice id", put("", "invoice_id"), "invoice_id"),
    ("billing interval unknown", put("fortnight", "billing_interval"), "billing_interval"),
]


@pytest.mark.parametrize(("mutate", "field"), [(m, f) for _, m, f in CASES], ids=[c[0] for c in CASES])
def test_invalid_request_is_422_naming_the_field(
    client: TestClient, request_body: dict[str, Any], mutate: Mutation, field: str
) -> None:
    mutate(request_body)
    response = client.post(URL, json=request_body)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["field"] == field
    assert field in body["message"]


def test_every_field_error_is_listed(client: TestClient, request_body: dict[str, Any]) -> None:
    request_body["amount"] = -1
    request_body["currency"] = "xyz"
    response = client.post(URL, json=request_body)
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"amount", "currency"}


def test_naive_timestamp_message_asks_for_an_offset(client: TestClient, request_body: dict[str, Any]) -> None:
    request_body["now"] = "2026-11-01T14:05:00"
    assert "timezone" in client.post(URL, json=request_body).json()["message"]


def test_codes_and_zones_are_normalised(client: TestClient, request_body: dict[str, Any]) -> None:
    request_body["currency"] = "USD"
    request_body["card"]["country"] = "us"
    request_body["customer_timezone"] = "america/chicago"
    request_body["attempts"][0]["network_decline_code"] = 51
    assert client.post(URL, json=request_body).status_code == 200


@pytest.mark.parametrize("payload", [b'{"invoice_id": "in_1", ', b"not json", b'{"amount": 1,}'])
def test_malformed_json_is_400(client: TestClient, payload: bytes) -> None:
    response = client.post(URL, content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "malformed_json"
    assert set(body) >= {"code", "message", "field"}


def test_body_not_an_object_is_422(client: TestClient) -> None:
    response = client.post(URL, json=[1, 2, 3])
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"


def test_empty_body_is_422(client: TestClient) -> None:
    response = client.post(URL, content=b"", headers={"content-type": "application/json"})
    assert response.status_code in (400, 422)
    assert "code" in response.json()


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    missing = client.get("/v1/nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    wrong = client.get(URL)
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"
