"""Bad input, clear answers: each case of docs/bad-input.md, one test each, through HTTP.

Every rejection is a 4xx in the error shape (`code`, `message`, `field`) naming what to fix;
values the contract allows to be unknown (decline codes, card brands) are accepted.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.limits import BodyLimitMiddleware, install_body_limit
from serving.schemas import MAX_ATTEMPTS, looks_like_card_number, luhn_valid
from serving.settings import Settings

URL = "/v1/retry-decisions"
VISA_TEST_PAN = "4111111111111111"  # the public Visa test number: 16 digits, Luhn-valid

OUTCOME: dict[str, Any] = {
    "attempt_id": "in_123_a2",
    "invoice_id": "in_123",
    "customer_id": "cus_9",
    "attempted_at": "2026-11-03T11:00:00Z",
    "succeeded": False,
    "amount": 4900,
    "currency": "usd",
    "decline_code": "insufficient_funds",
}
CARD_UPDATE: dict[str, Any] = {
    "update_id": "cu_1",
    "customer_id": "cus_9",
    "card": {"brand": "visa", "exp_month": 4, "exp_year": 2030, "fingerprint": "fp_new"},
    "updated_at": "2026-11-02T09:00:00Z",
    "source": "account_updater",
}


def assert_rejected(response: Any, field: str | None, *, status: int = 422, code: str = "invalid_request") -> None:
    """The error shape, with the status, code and field expected (the field named in the message too)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert body["field"] == field, body
    assert isinstance(body["message"], str) and body["message"]
    if field is not None:
        assert field in body["message"]


def put(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of body with the dotted path set to value (list indexes as numbers)."""
    out = copy.deepcopy(body)
    *parents, last = path.split(".")
    target: Any = out
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return out


@pytest.fixture
def fresh(bundle_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    """A client on an empty store of its own, to check what a rejection left stored."""
    settings = Settings(model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 'store.db'}")
    with TestClient(create_app(settings)) as client:
        yield client


# --- decision requests: times -------------------------------------------------------------


def test_now_after_window_end_names_window_end(client: TestClient, request_body: dict[str, Any]) -> None:
    request_body["now"] = "2026-11-20T00:00:00Z"  # window_end is 2026-11-15T14:00:00Z
    assert_rejected(client.post(URL, json=request_body), "window_end")


def test_attempt_after_now_names_the_attempt(client: TestClient, request_body: dict[str, Any]) -> None:
    request_body["attempts"][0]["attempted_at"] = "2026-11-02T00:00:00Z"  # now is 2026-11-01T14:05:00Z
    assert_rejected(client.post(URL, json=request_body), "attempts.0.attempted_at")


def test_attempt_in_the_future_of_the_server_clock(client: TestClient, request_body: dict[str, Any]) -> None:
    """Without `now`, the server clock is the reference: an attempt in 2099 has not happened yet."""
    del request_body["now"]
    del request_body["window_end"]
    request_body["attempts"][0]["attempted_at"] = "2099-01-01T00:00:00Z"
    assert_rejected(client.post(URL, json=request_body), "attempts.0.attempted_at")


def test_attempts_out_of_order_name_the_later_one(client: TestClient, request_body: dict[str, Any]) -> None:
    earlier = dict(request_body["attempts"][0], attempt_id="in_123_a0", attempted_at="2026-10-30T14:00:00Z")
    request_body["attempts"].append(earlier)
    response = client.post(URL, json=request_body)
    assert_rejected(response, "attempts.1.attempted_at")
    assert "oldest first" in response.json()["message"]


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+03:00", "9999-12-31T23:00:00-05:00", "1969-12-31T23:59:59Z"])
def test_timestamp_out_of_range_is_422_not_500(client: TestClient, request_body: dict[str, Any], stamp: str) -> None:
    """Found by the fuzzer: year 1 with a positive offset overflowed `datetime` (a 500)."""
    request_body["attempts"][0]["attempted_at"] = stamp
    response = client.post(URL, json=request_body)
    assert_rejected(response, "attempts.0.attempted_at")
    assert "out of range" in response.json()["message"]


def test_card_update_time_out_of_range_is_422(client: TestClient) -> None:
    body = dict(CARD_UPDATE, updated_at="0001-01-01T01:00:01+02:02")
    assert_rejected(client.post("/v1/card-updates", json=body), "updated_at")


# --- decision requests: values ------------------------------------------------------------


@pytest.mark.parametrize("currency", ["xyz", "dollars", "US$"])
def test_unknown_currency_names_currency(client: TestClient, request_body: dict[str, Any], currency: str) -> None:
    request_body["currency"] = currency
    assert_rejected(client.post(URL, json=request_body), "currency")


def test_unknown_decline_code_is_accepted(client: TestClient, request_body: dict[str, Any]) -> None:
    """Contract §1: unknown decline codes are allowed and must not crash anything."""
    request_body["attempts"][0]["decline_code"] = "brand_new_code_42"
    response = client.post(URL, json=request_body)
    assert response.status_code == 200, response.text
    assert response.json()["action"] in {"retry", "stop"}


def test_unknown_card_brand_is_accepted(client: TestClient, request_body: dict[str, Any]) -> None:
    """Contract §1: brands beyond the listed ones ("other values allowed")."""
    request_body["card"]["brand"] = "elo"
    response = client.post(URL, json=request_body)
    assert response.status_code == 200, response.text
    assert response.json()["action"] in {"retry", "stop"}


@pytest.mark.parametrize("amount", [-1, -4900, 0])
def test_non_positive_amount_names_amount(client: TestClient, request_body: dict[str, Any], amount: int) -> None:
    request_body["amount"] = amount
    assert_rejected(client.post(URL, json=request_body), "amount")


@pytest.mark.parametrize("amount", [10**12 + 1, 10**18, 10**30])
def test_huge_amount_names_amount(client: TestClient, request_body: dict[str, Any], amount: int) -> None:
    """Over 10^12 minor units (ten billion dollars) is a unit mistake, not a subscription."""
    request_body["amount"] = amount
    assert_rejected(client.post(URL, json=request_body), "amount")


def test_largest_amount_is_accepted(client: TestClient, request_body: dict[str, Any]) -> None:
    request_body["amount"] = 10**12
    assert client.post(URL, json=request_body).status_code == 200


def test_negative_outcome_amount_names_amount(client: TestClient) -> None:
    assert_rejected(client.post("/v1/outcomes", json=dict(OUTCOME, amount=-5)), "amount")


def test_unknown_outcome_currency_names_currency(client: TestClient) -> None:
    assert_rejected(client.post("/v1/outcomes", json=dict(OUTCOME, currency="zzz")), "currency")


def test_ten_thousand_attempts_name_attempts(client: TestClient, request_body: dict[str, Any]) -> None:
    attempt = request_body["attempts"][0]
    request_body["attempts"] = [dict(attempt, attempt_id=f"in_123_a{i}") for i in range(10_000)]
    response = client.post(URL, json=request_body)
    assert_rejected(response, "attempts")
    assert str(MAX_ATTEMPTS) in response.json()["message"]


def test_a_thousand_attempts_are_accepted(client: TestClient, request_body: dict[str, Any]) -> None:
    """The limit itself is allowed (one attempt an hour, oldest first)."""
    attempt = request_body["attempts"][0]
    first = datetime(2026, 9, 1, tzinfo=UTC)
    request_body["attempts"] = [
        dict(attempt, attempt_id=f"in_123_a{i}", attempted_at=(first + timedelta(hours=i)).isoformat())
        for i in range(MAX_ATTEMPTS)
    ]
    request_body["max_retries"] = 100
    response = client.post(URL, json=request_body)
    assert response.status_code == 200, response.text
    assert response.json()["action"] == "stop"  # 999 retries spent


# --- text no store can keep ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("attempts.0.decline_code", '"insufficient\\u0000funds"'),  # NUL: PostgreSQL refuses it (was a 500)
        ("attempts.0.attempt_id", '"in_\\ud800"'),  # an unpaired surrogate: not UTF-8 (was a 500)
        ("card.fingerprint", '"fp\\u001b[31m"'),  # a terminal escape
    ],
)
def test_unstorable_text_is_422(client: TestClient, request_body: dict[str, Any], field: str, raw: str) -> None:
    marker = "__VALUE__"
    text = json.dumps(put(request_body, field, marker)).replace(f'"{marker}"', raw)
    response = client.post(URL, content=text, headers={"content-type": "application/json"})
    assert_rejected(response, field)
    assert "control characters" in response.json()["message"]


# --- malformed and oversized bodies -------------------------------------------------------


@pytest.mark.parametrize("path", [URL, "/v1/retry-decisions/batch", "/v1/outcomes", "/v1/card-updates"])
def test_malformed_json_is_400(client: TestClient, path: str) -> None:
    response = client.post(path, content=b'{"invoice_id": "in_1", ', headers={"content-type": "application/json"})
    assert_rejected(response, None, status=400, code="malformed_json")


@pytest.fixture(scope="module")
def limited(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app with a 4 KiB body limit, installed as the app factory will (`install_body_limit`)."""
    store = tmp_path_factory.mktemp("limited") / "store.db"
    app = create_app(Settings(model_dir=bundle_dir, database_url=f"sqlite:///{store}"))
    install_body_limit(app, max_bytes=4096)
    with TestClient(app) as client:
        yield client


def padded(body: dict[str, Any], size: int) -> bytes:
    """The body as JSON, grown past `size` bytes by an ignored field."""
    return json.dumps({**body, "padding": "x" * size}).encode()


def test_oversized_body_is_413_before_parsing(limited: TestClient, request_body: dict[str, Any]) -> None:
    response = limited.post(URL, content=padded(request_body, 5000), headers={"content-type": "application/json"})
    assert_rejected(response, None, status=413, code="payload_too_large")
    assert "4096" in response.json()["message"]


def test_oversized_chunked_body_is_413(limited: TestClient) -> None:
    """No Content-Length (chunked): the limit counts the bytes as they arrive; nothing is stored."""
    chunks = iter([padded(OUTCOME, 5000)[:3000], padded(OUTCOME, 5000)[3000:]])
    response = limited.post("/v1/outcomes", content=chunks, headers={"content-type": "application/json"})
    assert_rejected(response, None, status=413, code="payload_too_large")
    kpis = limited.get("/v1/kpis").json()
    assert kpis["failed_invoices"] == 0


def test_body_under_the_limit_is_served(limited: TestClient, request_body: dict[str, Any]) -> None:
    assert limited.post(URL, json=request_body).status_code == 200
    assert limited.get("/healthz").status_code == 200


def test_body_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        BodyLimitMiddleware(create_app(), max_bytes=0)


# --- card numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "invoice_id",
        "customer_id",
        "card.brand",
        "card.funding",
        "card.fingerprint",
        "attempts.0.attempt_id",
        "attempts.0.decline_code",
    ],
)
def test_card_number_in_a_decision_field_is_422(client: TestClient, request_body: dict[str, Any], field: str) -> None:
    response = client.post(URL, json=put(request_body, field, f"n_{VISA_TEST_PAN}"))
    assert_rejected(response, field)
    assert response.json()["errors"][0]["type"] == "card_number"
    assert VISA_TEST_PAN not in response.text  # never echoed back


@pytest.mark.parametrize(
    "value",
    [
        "4111 1111 1111 1111",  # grouped by spaces
        "4111-1111-1111-1111",  # grouped by dashes
        "pan:5555555555554444",  # Mastercard, inside text
        "378282246310005",  # Amex, 15 digits
        "2223003122003222",  # Mastercard 2-series
    ],
)
def test_card_number_spellings_are_caught(client: TestClient, request_body: dict[str, Any], value: str) -> None:
    response = client.post(URL, json=put(request_body, "card.fingerprint", value))
    assert_rejected(response, "card.fingerprint")


def test_card_number_in_an_unknown_field_is_422(client: TestClient, request_body: dict[str, Any]) -> None:
    """Unknown fields are ignored, but a card number in one is still refused, naming it."""
    request_body["card"]["number"] = VISA_TEST_PAN
    assert_rejected(client.post(URL, json=request_body), "card.number")


def test_card_number_as_a_json_number_in_an_unknown_field(client: TestClient, request_body: dict[str, Any]) -> None:
    request_body["payment_method"] = {"card": {"pan": int(VISA_TEST_PAN)}}
    assert_rejected(client.post(URL, json=request_body), "payment_method.card.pan")


def test_card_number_in_a_batch_names_the_request(client: TestClient, request_body: dict[str, Any]) -> None:
    bad = put(request_body, "card.fingerprint", VISA_TEST_PAN)
    response = client.post("/v1/retry-decisions/batch", json={"requests": [request_body, bad]})
    assert_rejected(response, "requests.1.card.fingerprint")


@pytest.mark.parametrize("field", ["attempt_id", "card_fingerprint", "decision_id", "decline_code"])
def test_card_number_in_an_outcome_is_422_and_not_stored(fresh: TestClient, field: str) -> None:
    response = fresh.post("/v1/outcomes", json=dict(OUTCOME, **{field: VISA_TEST_PAN}))
    assert_rejected(response, field)
    assert fresh.get("/v1/kpis").json()["failed_invoices"] == 0


def test_card_number_in_a_card_update_is_422(client: TestClient) -> None:
    body = put(CARD_UPDATE, "card.fingerprint", VISA_TEST_PAN)
    assert_rejected(client.post("/v1/card-updates", json=body), "card.fingerprint")


@pytest.mark.parametrize(
    "value",
    [
        "4111111111111112",  # fails the Luhn check
        "1730469600002",  # Unix time in milliseconds: Luhn-valid, but no card network starts with 1
        "in_2026110100012346",  # date-stamped number: Luhn-valid, but 2026 is no network prefix
        "41111111111111111111",  # 20 digits: longer than any card number
        "cus_b47302422155619",  # digits glued to letters (a hex id): Luhn-valid, but part of the id
        "in_1MtHbELkdIwHu7ixl4OzzPMv",  # Stripe-style id
        "fp_7Hq2",
    ],
)
def test_ids_that_only_contain_numbers_are_accepted(
    client: TestClient, request_body: dict[str, Any], value: str
) -> None:
    assert not looks_like_card_number(value)
    response = client.post(URL, json=put(request_body, "attempts.0.attempt_id", value))
    assert response.status_code == 200, response.text


def test_luhn_check() -> None:
    assert luhn_valid(VISA_TEST_PAN)
    assert luhn_valid("1730469600002")  # why the network prefix matters
    assert not luhn_valid("4111111111111112")
