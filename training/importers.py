"""Import a payment provider's charge export as a contract §1 attempts dataset.

A `ProviderMapping` says, per field, which of the provider's export columns carry it (the first
one present wins, so one mapping covers several export flavours), how its values are converted,
and which charges are recurring attempts at all. `import_export` reads the file as text, picks
the columns, converts them, and hands the result to `training.data.validate_attempts`, so every
contract check applies and a bad row is reported with its row number in the provider's file.

Adding a provider is one mapping. For Chargebee, say, map its transactions export:

    CHARGEBEE = ProviderMapping(
        provider="chargebee",
        columns={"attempt_id": ("transactions.id",), "invoice_id": ("transactions.linked_invoices",),
                 "attempted_at": ("transactions.date",), "succeeded": ("transactions.status",), ...},
        transforms={"succeeded": lambda f: f["succeeded"].map({"success": "true", "failure": "false"})},
        required=("attempt_id", "invoice_id", ...),
        amount_unit="minor",
    )

Recurly and Braintree are the same exercise (Braintree's transaction search CSV has amounts in
major units: `major_unit_amount_columns={"Amount Authorized"}`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd

from features.money import CURRENCY_EXPONENTS
from training.data import CONTRACT_COLUMNS, AttemptsDataError, LoadReport, validate_attempts

AmountUnit = Literal["major", "minor"]
Transform = Callable[[pd.DataFrame], pd.Series]
_STR: Final = "str"  # pandas' default string dtype: Arrow-backed, NaN for missing


@dataclass(frozen=True)
class ProviderMapping:
    """How one provider's export becomes attempts: columns, conversions, which rows count."""

    provider: str
    # Field -> the export's column names that carry it, in order of preference. Fields are the
    # contract's columns plus any helper field a transform reads (e.g. a status or a message).
    columns: Mapping[str, tuple[str, ...]]
    # Contract column -> function of the picked fields giving its values as text (missing: NA).
    transforms: Mapping[str, Transform] = field(default_factory=dict)
    required: tuple[str, ...] = ()  # fields the export must have
    amount_unit: AmountUnit = "minor"  # unit of the amount column unless it is a major-unit one
    major_unit_amount_columns: frozenset[str] = frozenset()  # export columns documented in major units
    # The provider's own minor-unit exponent where it differs from ISO 4217 (currency -> exponent).
    provider_exponents: Mapping[str, int] = field(default_factory=dict)
    # Rows that are recurring attempts (others are skipped and counted under `skip_reason`).
    keep: Transform | None = None
    skip_reason: str = "not a recurring charge"


@dataclass(frozen=True, eq=False)
class ImportReport:
    """What an import read, skipped, took from where, and what validation rejected."""

    provider: str
    rows_read: int
    skipped: dict[str, int]  # reason -> rows left out before validation (never silently)
    columns: dict[str, str]  # field -> the export column it came from
    ignored_columns: tuple[str, ...]  # export columns no field uses
    amount_unit: AmountUnit
    load: LoadReport  # validation of the kept rows; error rows are the export's data rows

    @property
    def rows_valid(self) -> int:
        """Attempts in the imported dataset."""
        return self.load.rows_valid

    @property
    def errors(self) -> pd.DataFrame:
        """One row per problem: export row (1-based, header excluded), column, value, reason."""
        return self.load.errors


# ---------------------------------------------------------------------------------------------
# The generic import.
# ---------------------------------------------------------------------------------------------
def read_export(path: str | Path) -> pd.DataFrame:
    """A CSV (optionally gzipped) or Parquet export with every value as text, "" as missing."""
    path = Path(path)
    if not path.is_file():
        raise AttemptsDataError(f"{path}: file not found")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
            frame = frame.astype(_STR).where(frame.notna())
        elif name.endswith((".csv", ".csv.gz")):
            # keep_default_na=False: "NA" is Namibia and "null" could be an id; only "" is missing.
            frame = pd.read_csv(
                path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig", skipinitialspace=True
            )
        else:
            raise AttemptsDataError(f"{path.name}: unsupported file type (expected .csv, .csv.gz or .parquet)")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise AttemptsDataError(f"{path.name}: not a readable export: {str(exc).splitlines()[0]}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def pick_columns(mapping: ProviderMapping, header: list[str]) -> dict[str, str]:
    """Field -> export column (first candidate present); a one-line error naming missing required ones."""
    present = set(header)
    picked = {f: next(c for c in names if c in present) for f, names in mapping.columns.items() if present & set(names)}
    missing = [f for f in mapping.required if f not in picked]
    if missing:
        wanted = "; ".join(" or ".join(repr(c) for c in mapping.columns[f]) for f in missing)
        raise AttemptsDataError(f"missing required column(s) for a {mapping.provider} export: {wanted}")
    return picked


def to_minor_units(
    amount: pd.Series, currency: pd.Series, unit: AmountUnit, provider_exponents: Mapping[str, int]
) -> pd.Series:
    """ISO 4217 minor units as text; a value that does not convert exactly is kept as given, so
    validation rejects its row with the value the export had."""
    code = currency.astype(_STR).str.strip().str.lower()
    iso = code.map(CURRENCY_EXPONENTS)
    # Major units scale up by ISO's exponent; a provider's own minor units are rescaled to ISO's
    # (only where they differ: most minor-unit amounts pass through untouched).
    shift = iso if unit == "major" else iso - code.map(provider_exponents).fillna(iso)
    todo = np.flatnonzero((shift.fillna(0) != 0).to_numpy() | ((unit == "major") & iso.notna()).to_numpy())
    out = amount.astype(object).copy()
    for i in todo:
        minor = _scaled(out.iloc[i], int(shift.iloc[i]))
        if minor is not None:
            out.iloc[i] = minor
    return out.astype(_STR)


def _scaled(value: object, shift: int) -> str | None:
    """`value` × 10^shift as integer text, or None when it is not a number or not whole after."""
    if not isinstance(value, str):
        return None
    try:
        number = Decimal(value.strip().replace(",", "")).scaleb(shift)
    except InvalidOperation:
        return None
    return str(int(number)) if number.is_finite() and number == number.to_integral_value() else None


def _clean(values: pd.Series) -> pd.Series:
    """Stripped text, blank as missing."""
    text = values.astype(_STR).str.strip()
    return text.where(text != "")


def export_row_numbers(errors: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """Validation errors numbered as the export's rows (the skipped rows shift the kept ones),
    in the row column and in reasons that cite a row ("invoice … has an invalid row 10")."""
    rows = [int(positions[int(r) - 1]) + 1 for r in errors["row"]]
    reasons = [cite_export_rows(str(reason), positions) for reason in errors["reason"]]
    return errors.assign(
        row=pd.Series(rows, index=errors.index, dtype="int64"),
        reason=pd.Series(reasons, index=errors.index, dtype=_STR),
    )


def cite_export_rows(text: str, positions: np.ndarray) -> str:
    """A message with each "row N" of the kept rows renumbered as the export's row."""
    return re.sub(r"\brow (\d+)", lambda m: f"row {int(positions[int(m.group(1)) - 1]) + 1}", text)


def import_export(
    mapping: ProviderMapping, path: str | Path, amount_unit: AmountUnit | None = None
) -> tuple[pd.DataFrame, ImportReport]:
    """Read a provider export and return contract §1 attempts and a report (see module doc)."""
    raw = read_export(path)
    picked = pick_columns(mapping, list(raw.columns))
    fields = pd.DataFrame({f: _clean(raw[c]) for f, c in picked.items()}, index=raw.index)
    keep = np.ones(len(raw), dtype=bool) if mapping.keep is None else mapping.keep(fields).fillna(False).to_numpy(bool)
    skipped = {mapping.skip_reason: int((~keep).sum())} if (~keep).any() else {}
    positions = np.flatnonzero(keep)
    if len(positions) == 0:
        raise AttemptsDataError(f"nothing to import: all {len(raw):,} rows skipped ({mapping.skip_reason})")
    fields = fields.iloc[positions].reset_index(drop=True)
    unit = amount_unit or (
        "major" if picked.get("amount") in mapping.major_unit_amount_columns else mapping.amount_unit
    )
    attempts = pd.DataFrame(index=fields.index)
    for column in CONTRACT_COLUMNS:
        if column in mapping.transforms:
            attempts[column] = mapping.transforms[column](fields).astype(_STR)
        elif column in fields:
            attempts[column] = fields[column]
    if "amount" in attempts and "currency" in attempts:
        attempts["amount"] = to_minor_units(attempts["amount"], attempts["currency"], unit, mapping.provider_exponents)
    try:
        frame, load = validate_attempts(attempts)
    except AttemptsDataError as exc:
        raise AttemptsDataError(cite_export_rows(str(exc), positions)) from None
    errors = export_row_numbers(load.errors, positions)
    used = set(picked.values())
    report = ImportReport(
        provider=mapping.provider,
        rows_read=len(raw),
        skipped=skipped,
        columns=picked,
        ignored_columns=tuple(c for c in raw.columns if c not in used),
        amount_unit=unit,
        load=LoadReport(rows_read=load.rows_read, rows_valid=load.rows_valid, errors=errors),
    )
    return frame, report


# ---------------------------------------------------------------------------------------------
# Stripe: the charges export (Sigma / Data Pipeline `charges` table, API field paths, Dashboard).
# ---------------------------------------------------------------------------------------------
# Statuses of a charge that was approved (refunds and disputes came later); "failed" was declined.
_STRIPE_SUCCEEDED = frozenset({"succeeded", "paid", "refunded", "partially refunded", "disputed"})
_STRIPE_FAILED = frozenset({"failed"})
# Stripe's brand display names (Sigma, Dashboard) -> the contract's brand words.
_STRIPE_BRANDS = {
    "american express": "amex",
    "amex": "amex",
    "diners club": "diners",
    "diners": "diners",
    "mastercard": "mastercard",
    "master card": "mastercard",
    "visa": "visa",
    "discover": "discover",
    "jcb": "jcb",
    "unionpay": "unionpay",
    "china unionpay": "unionpay",
}
# A Dashboard export has no decline-code column; its seller message names the code.
_SELLER_MESSAGE_CODE = r"decline code `?([a-z_]+)`?"
_SELLER_MESSAGE_GENERIC = "did not return any further details"


def stripe_timestamps(values: pd.Series) -> pd.Series:
    """ISO 8601 UTC text from Stripe's `created` (unix seconds, or UTC text with or without an
    offset, as Sigma and the Dashboard write it); anything else stays as given and is rejected."""
    text = values.astype(_STR).str.strip()
    unix = text.str.fullmatch(r"\d{9,11}").fillna(False).astype(bool)
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    parsed[unix] = pd.to_datetime(text[unix].astype("int64"), unit="s", utc=True)
    iso_like = ~unix & text.str.match(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}").fillna(False).astype(bool)
    # The columns are documented in UTC: a time without an offset is a UTC time.
    parsed[iso_like] = pd.to_datetime(text[iso_like], format="ISO8601", utc=True, errors="coerce")
    iso = parsed.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    return iso.where(parsed.notna(), text).astype(_STR)


def stripe_succeeded(fields: pd.DataFrame) -> pd.Series:
    """ "true"/"false" from the charge status; other statuses (pending…) stay as given and are rejected."""
    status = fields["succeeded"].astype(_STR).str.strip().str.lower()
    out = status.copy()
    out[status.isin(_STRIPE_SUCCEEDED)] = "true"
    out[status.isin(_STRIPE_FAILED)] = "false"
    return out


def stripe_decline_code(fields: pd.DataFrame) -> pd.Series:
    """Stripe's decline code of a failed charge: `outcome.reason` of an issuer decline (where the
    code lives, `failure_code` being just `card_declined`), else `failure_code`, else the code the
    Dashboard's seller message names."""

    outcome_type, reason = _lower(fields, "outcome_type"), _lower(fields, "outcome_reason")
    issuer = outcome_type.isna() | (outcome_type == "issuer_declined")
    code = reason.where(issuer).fillna(_lower(fields, "failure_code"))
    message = _lower(fields, "seller_message")
    named = message.str.extract(_SELLER_MESSAGE_CODE, expand=False).astype(_STR)
    generic = message.str.contains(_SELLER_MESSAGE_GENERIC, regex=False).fillna(False).astype(bool)
    code = code.fillna(named.mask(generic, "generic_decline"))
    return code.where(stripe_succeeded(fields) != "true")


def _lower(fields: pd.DataFrame, name: str) -> pd.Series:
    """A field as lower-case text, all missing when the export lacks it."""
    if name not in fields:
        return pd.Series(pd.NA, index=fields.index, dtype=_STR)
    return fields[name].astype(_STR).str.lower()


def stripe_brand(fields: pd.DataFrame) -> pd.Series:
    """Contract brand words from Stripe's display names ("American Express" -> "amex")."""
    brand = fields["card_brand"].astype(_STR).str.strip().str.lower()
    return brand.map(lambda b: _STRIPE_BRANDS.get(b, b) if isinstance(b, str) else b).astype(_STR)


def stripe_merchant_advice(fields: pd.DataFrame) -> pd.Series:
    """The network advice code as the contract's Mastercard merchant advice code: only on
    Mastercard charges, because other networks' advice codes mean other things."""
    if "network_advice_code" not in fields:
        return pd.Series(pd.NA, index=fields.index, dtype=_STR)
    return fields["network_advice_code"].astype(_STR).where(stripe_brand(fields) == "mastercard")


def stripe_has_invoice(fields: pd.DataFrame) -> pd.Series:
    """Charges of an invoice; the others (one-off payments) are not recurring attempts."""
    return fields["invoice_id"].notna()


STRIPE = ProviderMapping(
    provider="stripe",
    columns={
        # Sigma / Data Pipeline `charges` table, then API field paths, then Dashboard export headers.
        "attempt_id": ("id",),
        "invoice_id": ("invoice_id", "invoice", "Invoice ID"),
        "customer_id": ("customer_id", "customer", "Customer ID"),
        "attempted_at": ("created", "Created (UTC)", "Created date (UTC)"),
        "amount": ("amount", "Amount"),
        "currency": ("currency", "Currency"),
        "succeeded": ("status", "Status"),
        "failure_code": ("failure_code",),
        "outcome_type": ("outcome_type", "outcome.type"),
        "outcome_reason": ("outcome_reason", "outcome.reason"),
        "seller_message": ("outcome_seller_message", "outcome.seller_message", "Seller Message"),
        "network_decline_code": ("outcome_network_decline_code", "outcome.network_decline_code"),
        "network_advice_code": ("outcome_network_advice_code", "outcome.network_advice_code"),
        "card_brand": ("card_brand", "payment_method_details.card.brand", "Card Brand"),
        "card_funding": ("card_funding", "payment_method_details.card.funding", "Card Funding"),
        "card_country": ("card_country", "payment_method_details.card.country", "Card Issue Country"),
        "card_exp_month": ("card_exp_month", "payment_method_details.card.exp_month", "Card Exp Month"),
        "card_exp_year": ("card_exp_year", "payment_method_details.card.exp_year", "Card Exp Year"),
        "card_fingerprint": ("card_fingerprint", "payment_method_details.card.fingerprint", "Card Fingerprint"),
    },
    transforms={
        "attempted_at": lambda f: stripe_timestamps(f["attempted_at"]),
        "succeeded": stripe_succeeded,
        "decline_code": stripe_decline_code,
        "merchant_advice_code": stripe_merchant_advice,
        "card_brand": stripe_brand,
    },
    required=(
        "attempt_id",
        "invoice_id",
        "customer_id",
        "attempted_at",
        "amount",
        "currency",
        "succeeded",
        "card_brand",
    ),
    # Sigma and the API give amounts in Stripe's minor units; the Dashboard's "Amount" is in major units.
    amount_unit="minor",
    major_unit_amount_columns=frozenset({"Amount"}),
    # Stripe keeps ISK and UGX amounts with two decimals for backwards compatibility (ISO: none).
    provider_exponents={"isk": 2, "ugx": 2},
    keep=stripe_has_invoice,
    skip_reason="no invoice (not a recurring charge)",
)

PROVIDERS: dict[str, ProviderMapping] = {"stripe": STRIPE}
