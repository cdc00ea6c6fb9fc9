"""The attempts dataset's columns (shared/contract.md §1): one list for loader, simulator and store."""

from __future__ import annotations

# Contract §1, in the contract's order.
CONTRACT_COLUMNS: tuple[str, ...] = (
    "invoice_id",
    "customer_id",
    "attempt_id",
    "attempted_at",
    "amount",
    "currency",
    "succeeded",
    "decline_code",
    "network_decline_code",
    "merchant_advice_code",
    "card_brand",
    "card_funding",
    "card_country",
    "customer_timezone",
    "card_exp_month",
    "card_exp_year",
    "card_fingerprint",
    "billing_interval",
    "customer_created_at",
)
REQUIRED_COLUMNS: tuple[str, ...] = (
    "invoice_id",
    "customer_id",
    "attempt_id",
    "attempted_at",
    "amount",
    "currency",
    "succeeded",
    "card_brand",
)
