"""Request and response bodies of the HTTP API (contract §2), as pydantic v2 models.

Unknown fields are ignored so older services accept newer schedulers' requests; the fields
named here are type-checked. Checks that tie fields together (attempt order, `now`, the
window) need the server clock and live in `serving.policy.context`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, model_validator
from pydantic_core import PydanticCustomError

from features import geo, money

MAX_AMOUNT = 10**12
MAX_ATTEMPTS = 1000
MAX_BATCH = 10_000  # a nightly batch of a mid-size merchant fits in one call
MAX_RETRIES_LIMIT = 100  # more retries than any provider allows (Recurly: 20 attempts)
# Timestamps outside this range are rejected, as the attempts loader rejects them (training.data).
TIMESTAMP_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TIMESTAMP_MAX = datetime(2100, 1, 1, tzinfo=UTC)


def _utc_text(at: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, the contract's timestamp form."""
    text = at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    return text + "Z"


def _as_utc(at: datetime) -> datetime:
    """The same instant in UTC (requests may carry any offset), within the range the service handles.

    The bounds are the attempts loader's: an instant outside them is a typo or a placeholder
    (0001-01-01, 9999-12-31), and converting one could overflow `datetime` or pandas' timestamps.
    """
    if not TIMESTAMP_MIN <= at < TIMESTAMP_MAX:  # aware comparison: no conversion, no overflow
        raise ValueError(f"timestamp out of range ({TIMESTAMP_MIN:%Y-%m-%d} to {TIMESTAMP_MAX:%Y-%m-%d})")
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


# A card number (PAN) is 13 to 19 digits, sometimes grouped by spaces or dashes, ending in a Luhn
# check digit. Card networks' numbers start with 3 (Amex, Diners, JCB), 4 (Visa), 5 (Mastercard),
# 6 (Discover, UnionPay) or 2221-2720 (Mastercard 2-series); requiring such a prefix spares ids that
# merely contain a number, a tenth of which pass the Luhn check: a Unix time in milliseconds
# (1730469600002) or a date-stamped number (2026110100012346).
# A run glued to letters ("cus_b47302422155619", a hex id) is part of an id, not a number someone
# pasted, so runs must stand alone: bounded by the text's ends, spaces or punctuation.
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])\d{13,19}(?![0-9A-Za-z])")
_GROUPED_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])\d(?:[ -]?\d){12,}(?![0-9A-Za-z])")
_PAN_FIRST_DIGITS = frozenset("3456")
_MASTERCARD_2_SERIES = range(2221, 2721)
CARD_NUMBER_ERROR = "card_number"  # the pydantic error type, kept in the 422's `errors`
_CARD_NUMBER_MESSAGE = "looks like a card number (PAN); send the processor's card fingerprint, never the number"


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number ends with."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_network_prefix(digits: str) -> bool:
    """True when digits start like a card network's numbers (the issuer identification number)."""
    return digits[0] in _PAN_FIRST_DIGITS or int(digits[:4]) in _MASTERCARD_2_SERIES


def _digit_runs(text: str) -> Iterator[str]:
    """Candidate numbers in text: bare runs of 13-19 digits, and runs grouped by spaces or dashes."""
    for match in _DIGIT_RUN.finditer(text):
        yield match.group()
    for match in _GROUPED_DIGIT_RUN.finditer(text):
        yield match.group().replace(" ", "").replace("-", "")


def looks_like_card_number(text: str) -> bool:
    """True when text contains 13-19 digits (grouped or not) that could be a card's number.

    Why: the service must never receive, log or store a PAN (PCI DSS scope); a scheduler that
    puts one in an id or a fingerprint by mistake gets a 422 instead of a stored card number.
    """
    if len(text) < 13:  # most ids: no regex at all
        return False
    return any(13 <= len(run) <= 19 and _card_network_prefix(run) and luhn_valid(run) for run in _digit_runs(text))


# Control characters and unpaired surrogates (a JSON "\ud800" escape) can't be stored: PostgreSQL
# rejects NUL in text and JSON, and no store can encode a lone surrogate as UTF-8 (both were 500s).
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
UNSTORABLE_ERROR = "unstorable_text"


def _storable(text: str) -> str:
    """Reject text holding control characters or unpaired surrogates, which no store accepts."""
    if _UNSTORABLE.search(text):
        raise PydanticCustomError(
            UNSTORABLE_ERROR, "must not contain control characters (U+0000-U+001F, U+007F) or unpaired surrogates"
        )
    return text


def _printable(key: str, limit: int = 64) -> str:
    """A client-chosen key, safe to put in a JSON message: surrogates escaped, at most `limit` characters."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


def _no_card_number(text: str) -> str:
    """Reject free text holding a card number; the message never repeats the value."""
    if looks_like_card_number(text):
        raise PydanticCustomError(CARD_NUMBER_ERROR, _CARD_NUMBER_MESSAGE)
    return text


def _card_number_key(value: Any, path: str = "") -> str | None:
    """The dotted path, inside an unknown (ignored) value, of the first string or number that looks like a PAN."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return path if looks_like_card_number(str(value)) else None
    items: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    for key, item in items:
        name = _printable(str(key))
        found = _card_number_key(item, f"{path}.{name}" if path else name)
        if found is not None:
            return found
    return None


UtcIn = Annotated[AwareDatetime, AfterValidator(_as_utc)]
UtcOut = Annotated[datetime, PlainSerializer(_utc_text, return_type=str)]
# The accepted codes are listed in the OpenAPI document (in the contract's spelling; other cases are
# accepted too), so clients and generated tests know them.
Currency = Annotated[
    str, AfterValidator(_currency), Field(json_schema_extra={"enum": sorted(money.CURRENCY_EXPONENTS)})
]
Country = Annotated[str, AfterValidator(_country), Field(json_schema_extra={"enum": sorted(geo.COUNTRIES)})]
TimeZone = Annotated[str, AfterValidator(_timezone)]
# Every free-text field of a request: any storable string the scheduler chooses, never a card number.
FreeText = Annotated[str, AfterValidator(_storable), AfterValidator(_no_card_number)]
Identifier = Annotated[FreeText, Field(min_length=1, max_length=255)]
# Response and advice codes are strings ("05" ≠ 5), but a number is taken as its text.
# (Flat, not nested in FreeText: a nested Annotated would lose coerce_numbers_to_str.)
NetworkCode = Annotated[
    str,
    Field(min_length=1, max_length=8, coerce_numbers_to_str=True),
    AfterValidator(_storable),
    AfterValidator(_no_card_number),
]


# The contract's examples (shared/contract.md §2), shown in /docs and sent first by the API fuzz tests.
_CARD_EXAMPLE: dict[str, Any] = {
    "brand": "visa",
    "funding": "debit",
    "country": "US",
    "exp_month": 4,
    "exp_year": 2027,
    "fingerprint": "fp_7Hq2",
}
DECISION_EXAMPLE: dict[str, Any] = {
    "invoice_id": "in_123",
    "customer_id": "cus_9",
    "amount": 4900,
    "currency": "usd",
    "card": _CARD_EXAMPLE,
    "customer_timezone": "America/Chicago",
    "attempts": [
        {
            "attempt_id": "in_123_a1",
            "attempted_at": "2026-11-01T14:00:00Z",
            "decline_code": "insufficient_funds",
            "network_decline_code": "51",
            "merchant_advice_code": None,
        }
    ],
    "now": "2026-11-01T14:05:00Z",
    "window_end": "2026-11-15T14:00:00Z",
    "max_retries": 4,
}
OUTCOME_EXAMPLE: dict[str, Any] = {
    "attempt_id": "in_123_a2",
    "invoice_id": "in_123",
    "customer_id": "cus_9",
    "attempted_at": "2026-11-03T11:00:00Z",
    "succeeded": True,
    "amount": 4900,
    "currency": "usd",
    "decision_id": None,
}
CARD_UPDATE_EXAMPLE: dict[str, Any] = {
    "update_id": "cu_1",
    "customer_id": "cus_9",
    "invoice_id": "in_123",
    "card": {**_CARD_EXAMPLE, "exp_year": 2030},
    "updated_at": "2026-11-02T09:00:00Z",
    "source": "account_updater",
}


class _Lenient(BaseModel):
    """Ignore unknown fields: a newer scheduler's request stays valid here (unless one holds a card number)."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _no_card_number_in_unknown_fields(cls, data: Any) -> Any:
        """An ignored field is not stored, but a card number in it is still the caller's bug to hear about."""
        if not isinstance(data, dict):
            return data
        unknown = {key: value for key, value in data.items() if key not in cls.model_fields}
        key = _card_number_key(unknown)
        if key is not None:
            # `key` in the context lets the error handler name the field (`card.number`).
            raise PydanticCustomError(CARD_NUMBER_ERROR, _CARD_NUMBER_MESSAGE, {"key": key})
        return data


class Card(_Lenient):
    """The card on file, as the processor reports it (never the card number)."""

    brand: Annotated[FreeText, Field(min_length=1, max_length=32)]
    funding: Annotated[FreeText, Field(max_length=32)] | None = None
    country: Country | None = None
    exp_month: Annotated[int, Field(ge=1, le=12, strict=True)] | None = None
    exp_year: Annotated[int, Field(ge=1000, le=9999, strict=True)] | None = None
    fingerprint: Annotated[FreeText, Field(max_length=255)] | None = None


class Attempt(_Lenient):
    """One failed charge attempt of the invoice."""

    attempt_id: Identifier
    attempted_at: UtcIn
    decline_code: Annotated[FreeText, Field(min_length=1, max_length=64)]
    network_decline_code: NetworkCode | None = None
    merchant_advice_code: NetworkCode | None = None


class DecisionRequest(_Lenient):
    """When (and whether) to retry a failed recurring payment, given its history."""

    model_config = ConfigDict(json_schema_extra={"examples": [DECISION_EXAMPLE]})

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
    next_step: Literal["request_new_payment_method", "notify_customer", "none"] = Field(
        default="none",
        description=(
            "What the billing team should do besides the retry: request_new_payment_method (expired card, hard "
            "decline, Mastercard advice 01/03/40/41/43), notify_customer (the whole plan is unlikely to recover "
            "the invoice, or a soft decline has no retry left), or none."
        ),
    )
    recovery_probability: float = Field(
        default=0.0,
        description="Probability that the planned schedule recovers the invoice by window_end (0 on stop).",
    )
    expected_hours_to_recovery: float | None = Field(
        default=None,
        description="Expected hours from now to the successful retry, given that the plan recovers it (null on stop).",
    )


class BatchDecisionRequest(_Lenient):
    """Many decisions in one call, decided in one vectorised pass."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"requests": [DECISION_EXAMPLE]}]})

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

    model_config = ConfigDict(json_schema_extra={"examples": [OUTCOME_EXAMPLE]})

    attempt_id: Identifier
    invoice_id: Identifier
    customer_id: Identifier
    attempted_at: UtcIn
    succeeded: Annotated[bool, Field(strict=True)]
    amount: Annotated[int, Field(gt=0, le=MAX_AMOUNT, strict=True, description="Minor units.")]
    currency: Currency
    decline_code: Annotated[FreeText, Field(min_length=1, max_length=64)] | None = Field(
        None, description="Required when the attempt failed."
    )
    network_decline_code: NetworkCode | None = None
    merchant_advice_code: NetworkCode | None = None
    decision_id: Identifier | None = None
    # Addition to contract §2: the card key network caps are counted by (never a card number).
    card_fingerprint: Annotated[FreeText, Field(max_length=255)] | None = None

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
    replan_invoice_ids: list[str] = Field(
        default_factory=list,
        description=(
            "Other open invoices on the same card whose planned retry should be decided again now: this attempt "
            "succeeded (the funds are there: their retry comes sooner) or was the invoice's first failure (its "
            "decline counts in the card's caps). Empty when the card is unknown."
        ),
    )


class CardUpdateIn(_Lenient):
    """A new card for a customer (contract §2, `POST /v1/card-updates`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [CARD_UPDATE_EXAMPLE]})

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


# --- The recovery workflow (issue #9): `GET /v1/recoverable` and `GET /v1/expiring-cards` ---------------------


class RecoverableInvoiceOut(BaseModel):
    """One open failed invoice of the worklist, as its latest decision describes it."""

    invoice_id: str
    customer_id: str
    decision_id: str = Field(description="The invoice's latest decision (as of `now`).")
    amount: int = Field(description="Minor units, from the latest decision.")
    currency: str
    action: Literal["retry", "stop"]
    recovery_probability: float = Field(
        description="P(the planned schedule recovers the invoice by window_end); decisions stored before it "
        "existed use their success_probability; 0 on a stop."
    )
    expected_recoverable_amount: int = Field(description="amount × recovery_probability, minor units (rounded).")
    next_retry_at: UtcOut | None = Field(description="The latest decision's retry_at; null on a stop.")
    next_step: str = Field(
        description="The latest decision's: request_new_payment_method, notify_customer or none (as the decision said)."
    )
    decided_at: UtcOut
    window_end: UtcOut
    expected_hours_to_recovery: float | None = Field(description="From decided_at, given the plan recovers it.")
    attempts: int = Field(description="Attempts so far: stored outcomes, or the decision's count when larger.")


class RecoverableResponse(BaseModel):
    """A page of the worklist, ranked by expected_recoverable_amount (highest first)."""

    now: UtcOut
    currency: str | None
    total: int = Field(description="Open failed invoices in the whole list.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="The offset of the next page; null on the last one.")
    invoices: list[RecoverableInvoiceOut]


class ExpiringCardOut(BaseModel):
    """A card seen in decision requests that expires soon, still used by the listed customers."""

    card_fingerprint: str | None = Field(description="Null: a card without one, keyed by customer, brand and expiry.")
    card_brand: str
    exp_month: int
    exp_year: int
    expires_at: UtcOut = Field(description="The last second of the expiry month, UTC.")
    last_seen_at: UtcOut = Field(description="The latest decision on the card by one of its customers.")
    customer_ids: list[str]
    invoice_count: int
    amount_at_risk: dict[str, int] = Field(
        description="{currency: minor units}: each invoice on the card once, at its latest decision's amount."
    )


class ExpiringCardsResponse(BaseModel):
    """A page of the cards expiring in [now, now + within_days], soonest first, then by amount at risk."""

    now: UtcOut
    within_days: int
    total: int = Field(description="Cards in the whole list.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="The offset of the next page; null on the last one.")
    cards: list[ExpiringCardOut]
