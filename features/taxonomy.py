"""Decline-code taxonomy: what a decline code says about whether and when a retry can work.

One table maps Stripe's decline-code vocabulary to a category, a hard/soft flag and whether the
card data must change first. A second maps ISO 8583 response codes (field 39) to Visa's decline
categories. The policy's rules table refers to these categories; it never re-lists codes.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np
import pandas as pd

T = TypeVar("T")


class DeclineCategory(StrEnum):
    """Why a charge failed, grouped by what it means for a retry."""

    INSUFFICIENT_FUNDS = "insufficient_funds"  # money arrives later: timing matters most
    DO_NOT_HONOR = "do_not_honor"  # issuer risk decision, often softens with time
    GENERIC = "generic"  # issuer gave no reason
    TRANSIENT = "transient"  # processing/issuer availability: retry soon
    VELOCITY = "velocity"  # card limits that reset (daily or monthly)
    NEEDS_NEW_CARD = "needs_new_card"  # card data must change before a retry can work
    HARD = "hard"  # will never succeed on this card
    OTHER = "other"  # an unknown code: kept, treated as soft


# Stripe decline codes (https://docs.stripe.com/declines/codes) grouped per shared/domain.md.
_CODES: dict[DeclineCategory, tuple[str, ...]] = {
    DeclineCategory.INSUFFICIENT_FUNDS: ("insufficient_funds",),
    DeclineCategory.DO_NOT_HONOR: ("do_not_honor",),
    DeclineCategory.GENERIC: (
        "generic_decline",
        "call_issuer",
        "card_declined",
        "no_action_taken",
        "approve_with_id",
        "not_permitted",
        "issuer_declined",
    ),
    DeclineCategory.TRANSIENT: (
        "processing_error",
        "issuer_not_available",
        "try_again_later",
        "reenter_transaction",
        "duplicate_transaction",
        "offline_pin_required",
        "online_or_offline_pin_required",
    ),
    DeclineCategory.VELOCITY: (
        "card_velocity_exceeded",
        "withdrawal_count_limit_exceeded",
    ),
    DeclineCategory.NEEDS_NEW_CARD: (
        "expired_card",
        "incorrect_cvc",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "incorrect_zip",
        "incorrect_pin",
        "invalid_pin",
        "pin_try_exceeded",
    ),
    DeclineCategory.HARD: (
        "lost_card",
        "stolen_card",
        "pickup_card",
        "fraudulent",
        "merchant_blacklist",
        "restricted_card",
        "security_violation",
        "stop_payment_order",
        "revocation_of_authorization",
        "revocation_of_all_authorizations",
        "do_not_try_again",
        "invalid_account",
        "incorrect_number",
        "invalid_number",
        "card_not_supported",
        "currency_not_supported",
        "transaction_not_allowed",
        "authentication_required",
        "invalid_amount",
        "new_account_information_available",
        "testmode_decline",
    ),
}

DECLINE_CATEGORY: dict[str, DeclineCategory] = {code: category for category, codes in _CODES.items() for code in codes}
KNOWN_DECLINE_CODES: tuple[str, ...] = tuple(DECLINE_CATEGORY)
_CATEGORY_VALUE: dict[str, str] = {code: cat.value for code, cat in DECLINE_CATEGORY.items()}
DECLINE_CATEGORIES: tuple[str, ...] = tuple(c.value for c in DeclineCategory)

# Visa decline categories by ISO 8583 response code (shared/domain.md, Visa's "Decline
# categories" in its reattempt rules, 2021+). 14 appears in some Category 1 lists; Visa's own
# table puts it in Category 3, which we follow. Codes not listed are Category 4 (generic).
VISA_CATEGORY: dict[str, int] = {
    **dict.fromkeys(("04", "07", "12", "15", "41", "43", "46", "57", "62", "78", "93"), 1),
    **dict.fromkeys(("R0", "R1", "R3"), 1),
    **dict.fromkeys(("19", "51", "59", "61", "65", "91", "96"), 2),
    **dict.fromkeys(("14", "54", "55", "N7", "1A"), 3),
}
VISA_GENERIC_CATEGORY = 4


def map_unique(values: pd.Series | np.ndarray, fn: Callable[[str | None], T]) -> list[T]:
    """Apply `fn` once per distinct value (missing values as None) and broadcast the results.

    Code columns hold a handful of distinct values, so this costs one factorize whatever the
    length, for a 300-row request and a million-row table alike.
    """
    return list(map_unique_array(values, fn))


def map_unique_array(values: pd.Series | np.ndarray, fn: Callable[[str | None], T]) -> np.ndarray:
    """`map_unique` as an object array (no list of a million items for a training table)."""
    return map_unique_arrays(values, fn)[0]


def map_unique_arrays(values: pd.Series | np.ndarray, *fns: Callable[[str | None], Any]) -> tuple[np.ndarray, ...]:
    """`map_unique_array` of several functions over one factorize of the column."""
    codes, uniques = _factorized(values)
    out = []
    for fn in fns:
        mapped = [fn(None if pd.isna(u) else str(u)) for u in uniques]
        mapped.append(fn(None))  # code -1: a missing value
        table = np.empty(len(mapped), dtype=object)
        table[:] = mapped
        out.append(table[codes])
    return tuple(out)


def _factorized(values: pd.Series | np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Codes (-1 where missing) and distinct values of a column, read as text values.

    A pandas string column is factorized as it is stored (Arrow's hashing of its buffers); any
    other input as Python objects, which costs ~10x more on a million rows.
    """
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.StringDtype):
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        return np.asarray(codes), list(uniques)
    object_codes, object_uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    return object_codes, list(object_uniques)


def _clean(code: str | None) -> str | None:
    """A stripped code, None when missing or blank."""
    if code is None:
        return None
    stripped = code.strip()
    return stripped or None


def _normal_code(code: str | None) -> str | None:
    """One decline code, stripped and lower-cased."""
    clean = _clean(code)
    return clean.lower() if clean else None


def category_of(code: str | None) -> str | None:
    """One decline code's category value (unknown → other)."""
    normal = _normal_code(code)
    return None if normal is None else _CATEGORY_VALUE.get(normal, DeclineCategory.OTHER.value)


def normal_response_code(code: str | None) -> str | None:
    """One ISO 8583 response or advice code: upper-case, single digits zero-padded ("5" → "05")."""
    clean = _clean(code)
    if clean is None:
        return None
    if clean.endswith(".0") and clean[:-2].isdigit():  # a numeric column read as float
        clean = clean[:-2]
    return "0" + clean if len(clean) == 1 and clean.isdigit() else clean.upper()


def visa_category_of(code: str | None) -> int:
    """One response code's Visa category; 0 when missing."""
    normal = normal_response_code(code)
    return 0 if normal is None else VISA_CATEGORY.get(normal, VISA_GENERIC_CATEGORY)


def normalise_codes(codes: pd.Series) -> pd.Series:
    """Lower-case, stripped decline codes; missing stays missing."""
    return pd.Series(map_unique_array(codes, _normal_code), index=codes.index, dtype="string")


def decline_category(codes: pd.Series) -> pd.Series:
    """Category of each decline code; unknown codes map to `other`, missing to <NA>."""
    return pd.Series(map_unique_array(codes, category_of), index=codes.index, dtype="string")


def is_hard_decline(codes: pd.Series) -> pd.Series:
    """True where the code can never succeed on the same card."""
    return (decline_category(codes) == DeclineCategory.HARD.value).fillna(False).astype(bool)


def needs_new_card(codes: pd.Series) -> pd.Series:
    """True where the card data must change (account updater or customer) before a retry."""
    category = decline_category(codes)
    return (category == DeclineCategory.NEEDS_NEW_CARD.value).fillna(False).astype(bool)


def normalise_response_codes(codes: pd.Series) -> pd.Series:
    """ISO 8583 response (or advice) codes as upper-case text, single digits padded ("5" → "05")."""
    return pd.Series(map_unique_array(codes, normal_response_code), index=codes.index, dtype="string")


def visa_category(network_codes: pd.Series) -> pd.Series:
    """Visa decline category (1–4) of each ISO response code; 0 where the code is missing."""
    values = np.asarray(map_unique_array(network_codes, visa_category_of), dtype=np.int8)
    return pd.Series(values, index=network_codes.index)
