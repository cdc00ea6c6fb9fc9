"""Stored records for store and API tests: one factory each, with plain defaults a test overrides by keyword."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from serving.store import DecisionRecord, OutcomeRecord


def decision_record(decision_id: str, invoice_id: str, decided_at: datetime, **fields: Any) -> DecisionRecord:
    """A learned retry decision: a retry 24 h after `decided_at` at p 0.3, a 14-day window, 4 retries."""
    values: dict[str, Any] = {
        "customer_id": "cus_1",
        "card_brand": "visa",
        "decline_code": "insufficient_funds",
        "attempt_count": 1,
        "amount": 1000,
        "currency": "usd",
        "action": "retry",
        "retry_at": decided_at + timedelta(hours=24),
        "success_probability": 0.3,
        "expected_recovered_amount": 300,
        "schedule": [],
        "reasons": ["test"],
        "model_version": "m1",
        "policy": "learned",
        "window_end": decided_at + timedelta(days=14),
        "max_retries": 4,
    }
    values.update(fields)
    return DecisionRecord(decision_id=decision_id, invoice_id=invoice_id, decided_at=decided_at, **values)


def outcome_record(
    attempt_id: str, invoice_id: str, attempted_at: datetime, succeeded: bool, **fields: Any
) -> OutcomeRecord:
    """A reported attempt of 10.00 USD; a failure declined for insufficient funds unless `fields` say otherwise."""
    values: dict[str, Any] = {
        "customer_id": "cus_1",
        "amount": 1000,
        "currency": "usd",
        "decline_code": None if succeeded else "insufficient_funds",
    }
    values.update(fields)
    return OutcomeRecord(
        attempt_id=attempt_id, invoice_id=invoice_id, attempted_at=attempted_at, succeeded=succeeded, **values
    )
