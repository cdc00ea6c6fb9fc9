"""Request and response bodies of the HTTP API (contract §2), as pydantic v2 models.

Unknown fields are ignored so older services accept newer schedulers' requests; the fields
named here are type-checked. Checks that tie fields together (attempt order, `now`, the
window) need the server clock and live in `serving.policy.context`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, model_validator

from features import geo, money

MAX_AMOUNT = 10**12
MAX_ATTEMPTS = 1000
MAX_BATCH = 10_000  # a nightly batch of a mid-size merchant fits in one call
MAX_RETRIES_LIMIT = 100  # more retries than any provider allows (Recurly: 20 attempts)


def _utc_text(at: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, the contract's timestamp form."""
    text = at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    return text + "Z"


def _as_utc(at: datetime) -> datetime:
    """The same instant expressed in UTC (requests may carry any offset)."""
    return at.astimezone(UTC)


def _currency(code: str) -> str:
    """A known ISO 4217 code, lower-cased as the contract writes it."""
    lower = code.strip().lower()
    if lower not in money.CURRENCY_EXPONENTS:
        raise ValueError(f"unknown ISO 4217 currency {code!r}")
    return lower


def _country(code: str) -> str:
    """A known ISO 3166-1 alpha-2 country code, upper-cased."""
    upper = code.strip().upper()
    if upper not in geo.COUNTRIES:
        raise ValueError(f"unknown ISO 3166-1 alpha-2 country {code!r}")
    return upper


def _timezone(name: str) -> str:
    """A tzdata zone name in its canonical spelling ('america/chicago' is accepted)."""
    stripped = name.strip()
    if geo.is_valid_timezone(stripped):
        return stripped
    canonical = geo.timezone_by_lower_name().get(stripped.lower())
    if canonical is None:
        raise ValueError(f"unknown IANA time zone {name!r}")
    return canonical


UtcIn = Annotated[AwareDatetime, AfterValidator(_as_utc)]
UtcOut = Annotated[datetime, PlainSerializer(_utc_text, return_type=str)]
Currency = Annotated[str, AfterValidator(_currency)]
Country = Annotated[str, AfterValidator(_country)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
Identifier = Annotated[str, Field(min_length=1, max_length=255)]
# Response and advice codes are strings ("05" ≠ 5), but a number is taken as its text.
NetworkCode = Annotated[str, Field(min_length=1, max_length=8, coerce_numbers_to_str=True)]


class _Lenient(BaseModel):
    """Ignore unknown fields: a newer scheduler's request stays valid here."""

    model_config = ConfigDict(extra="ignore")


class Card(_Lenient):
    """The card on file, as the processor reports it (never the card number)."""

    brand: Annotated[str, Field(min_length=1, max_length=32)]
    funding: Annotated[str, Field(max_length=32)] | None = None
    country: Country | None = None
    exp_month: Annotated[int, Field(ge=1, le=12, strict=True)] | None = None
    exp_year: Annotated[int, Field(ge=1000, le=9999, strict=True)] | None = None
    fingerprint: Annotated[str, Field(max_length=255)] | None = None


class Attempt(_Lenient):
    """One failed charge attempt of the invoice."""

    attempt_id: Identifier
    attempted_at: UtcIn
    decline_code: Annotated[str, Field(min_length=1, max_length=64)]
    network_decline_code: NetworkCode | None = None
    merchant_advice_code: NetworkCode | None = None


class DecisionRequest(_Lenient):
    """When (and whether) to retry a failed recurring payment, given its history."""

    invoice_id: Identifier
    customer_id: Identifier
    amount: Annotated[int, Field(gt=0, le=MAX_AMOUNT, strict=True, description="Minor units.")]
    currency: Currency
    card: Card
    customer_timezone: TimeZone | None = None
    attempts: Annotated[list[Attempt], Field(min_length=1, max_length=MAX_ATTEMPTS)]
    now: UtcIn | None = Field(None, description="Decide as of this time; default: the server clock.")
    window_end: UtcIn | None = Field(
        None, description="Last moment a retry may happen; default: the first failure + the configured window."
    )
    max_retries: Annotated[int, Field(ge=0, le=MAX_RETRIES_LIMIT, strict=True)] | None = Field(
        None, description="Most retries after the first attempt, attempts already made included."
    )
    # Additions to contract §2 (optional): model features the scheduler may know.
    billing_interval: Literal["day", "week", "month", "year"] | None = None
    customer_created_at: UtcIn | None = None


class ScheduledRetry(BaseModel):
    """One planned retry and the model's success probability for it."""

    retry_at: UtcOut
    success_probability: float


class DecisionResponse(BaseModel):
    """The decision: retry at a time, or stop and say why."""

    decision_id: str
    action: Literal["retry", "stop"]
    retry_at: UtcOut | None
    success_probability: float | None = Field(description="Calibrated probability that the retry at retry_at succeeds.")
    expected_recovered_amount: int = Field(
        description="amount × probability that the planned schedule recovers the invoice (1 − Π(1 − p)), minor units."
    )
    schedule: list[ScheduledRetry]
    reasons: list[str]
    model_version: str
    next_step: Literal["request_new_payment_method"] | None = None


class BatchDecisionRequest(_Lenient):
    """Many decisions in one call, decided in one vectorised pass."""

    requests: Annotated[list[DecisionRequest], Field(min_length=1, max_length=MAX_BATCH)]


class BatchDecisionResponse(BaseModel):
    """The decisions, in the order of the requests."""

    decisions: list[DecisionResponse]


class ErrorResponse(BaseModel):
    """Every error the API returns."""

    code: str
    message: str
    field: str | None = None


class OutcomeIn(_Lenient):
    """One attempt the scheduler made, with its result (contract §2, `POST /v1/outcomes`)."""

    attempt_id: Identifier
    invoice_id: Identifier
    customer_id: Identifier
    attempted_at: UtcIn
    succeeded: Annotated[bool, Field(strict=True)]
    amount: Annotated[int, Field(gt=0, le=MAX_AMOUNT, strict=True, description="Minor units.")]
    currency: Currency
    decline_code: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="Required when the attempt failed."
    )
    network_decline_code: NetworkCode | None = None
    merchant_advice_code: NetworkCode | None = None
    decision_id: Identifier | None = None
    # Addition to contract §2: the card key network caps are counted by (never a card number).
    card_fingerprint: Annotated[str, Field(max_length=255)] | None = None

    @model_validator(mode="after")
    def _failed_needs_code(self) -> OutcomeIn:
        """A failed attempt without a decline code could not be learned from or exported."""
        if not self.succeeded and self.decline_code is None:
            raise ValueError("decline_code is required when succeeded is false")
        return self


class OutcomeAck(BaseModel):
    """The outcome is durably stored (`created`) or was already stored identically (`duplicate`)."""

    attempt_id: str
    status: Literal["created", "duplicate"]


class CardUpdateIn(_Lenient):
    """A new card for a customer (contract §2, `POST /v1/card-updates`)."""

    update_id: Identifier
    customer_id: Identifier
    invoice_id: Identifier | None = None
    card: Card
    updated_at: UtcIn
    source: Literal["account_updater", "customer"]


class CardUpdateAck(BaseModel):
    """The card update is stored (`created`) or was already stored identically (`duplicate`)."""

    update_id: str
    status: Literal["created", "duplicate"]
