"""`POST /v1/retry-decisions/batch`: the same decisions as one by one, in order, in one pass."""

from __future__ import annotations

import copy
from typing import Any

from fastapi.testclient import TestClient

SINGLE = "/v1/retry-decisions"
BATCH = "/v1/retry-decisions/batch"


def variants(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A soft decline, a hard decline, a Mastercard retry-after advice and a tiny amount."""
    hard = copy.deepcopy(body)
    hard["attempts"][0].update(decline_code="stolen_card", network_decline_code="43")
    hard["card"]["fingerprint"] = "fp_hard"
    advice = copy.deepcopy(body)
    advice["card"].update(brand="mastercard", fingerprint="fp_advice")
    advice["attempts"][0].update(merchant_advice_code="27")
    other = copy.deepcopy(body)
    other.update(invoice_id="in_other", amount=100, currency="eur", customer_timezone="Europe/Berlin")
    other["card"]["fingerprint"] = "fp_other"
    return [body, hard, advice, other]


def without_ids(decision: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in decision.items() if k != "decision_id"}


def test_batch_equals_single_decisions_in_order(client: TestClient, request_body: dict[str, Any]) -> None:
    bodies = variants(request_body)
    singles = [client.post(SINGLE, json=b).json() for b in bodies]
    response = client.post(BATCH, json={"requests": bodies})
    assert response.status_code == 200, response.text
    batch = response.json()["decisions"]
    assert [without_ids(d) for d in batch] == [without_ids(d) for d in singles]
    assert [d["action"] for d in batch] == ["retry", "stop", "retry", singles[3]["action"]]
    assert len({d["decision_id"] for d in batch}) == len(batch)


def test_same_invoice_twice_in_a_batch_is_decided_twice(client: TestClient, request_body: dict[str, Any]) -> None:
    response = client.post(BATCH, json={"requests": [request_body, request_body]})
    first, second = response.json()["decisions"]
    assert without_ids(first) == without_ids(second)


def test_invalid_item_names_its_index(client: TestClient, request_body: dict[str, Any]) -> None:
    bad = copy.deepcopy(request_body)
    bad["window_end"] = bad["now"]
    response = client.post(BATCH, json={"requests": [request_body, bad]})
    assert response.status_code == 422
    assert response.json()["field"] == "requests.1.window_end"

    response = client.post(BATCH, json={"requests": [bad]})
    assert response.json()["field"] == "requests.0.window_end"

    typed = copy.deepcopy(request_body)
    typed["amount"] = "lots"
    response = client.post(BATCH, json={"requests": [typed]})
    assert response.status_code == 422
    assert response.json()["field"] == "requests.0.amount"


def test_empty_batch_is_refused(client: TestClient) -> None:
    response = client.post(BATCH, json={"requests": []})
    assert response.status_code == 422
    assert response.json()["field"] == "requests"
