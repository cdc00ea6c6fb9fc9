"""Synthetic failed subscription invoices, the retries a legacy scheduler made, and their truth.

The simulator draws customers, cards and failed renewal charges from a written-down process
(docs/simulator.md), then replays a *legacy* retry scheduler over them. `World` holds the latent
truth of every invoice, so the true success probability of any retry at any time can be asked for
later (closed-loop policy evaluation). Every constant here is the simulator's view of the world:
the product must learn these patterns from data, never import them.

Everything is vectorised over invoices; the scheduler loops over retry *rounds*, not invoices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import CONTRACT_COLUMNS

# ---------------------------------------------------------------------------------------------
# Output schema (shared/contract.md §1), in contract order.
# ---------------------------------------------------------------------------------------------
ATTEMPT_COLUMNS: tuple[str, ...] = CONTRACT_COLUMNS

_STRING_COLUMNS = tuple(
    c
    for c in ATTEMPT_COLUMNS
    if c not in {"attempted_at", "amount", "succeeded", "card_exp_month", "card_exp_year", "customer_created_at"}
)
_NS_PER_HOUR = 3_600_000_000_000
_NS_PER_DAY = 24 * _NS_PER_HOUR
_NAT = np.iinfo(np.int64).min  # pandas' integer view of NaT


# ---------------------------------------------------------------------------------------------
# Countries: time zones, currency, list prices, payday customs, card mix.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Country:
    """One country's share of customers and the customs the simulator gives it."""

    weight: float
    currency: str  # ISO 4217, lower case
    timezones: tuple[tuple[str, float], ...]  # IANA zone, share of the country's customers
    prices: tuple[int, ...]  # monthly list prices in minor units (JPY has none: whole yen)
    paydays: tuple[tuple[str, int, float], ...]  # (calendar kind, day parameter, share)
    credit_share: float  # share of credit cards; the rest is mostly debit
    brands: tuple[tuple[str, float], ...]
    debit_midnight: bool  # debit approvals better just after local midnight (Stripe's note)
    early_deposit_share: float = 0.0  # neobank "early direct deposit": funds 2 days early


# Payday calendar kinds. `day` means: weekday (Mon=0) for weekly/biweekly, day of month for
# month_day, n for month_nth_bd; unused otherwise.
PAY_KINDS: tuple[str, ...] = (
    "weekly",
    "biweekly",
    "semimonthly",  # 15th and last day, previous business day when on a weekend
    "month_last_bd",  # last business day of the month
    "month_day",  # fixed day of month, previous business day when on a weekend
    "month_nth_bd",  # n-th business day (Brazil: 5th)
)
_PERIOD_DAYS = np.array([7.0, 14.0, 365.25 / 24, 365.25 / 12, 365.25 / 12, 365.25 / 12])
_FRI = 4

COUNTRIES: dict[str, Country] = {
    "US": Country(
        0.36,
        "usd",
        (
            ("America/New_York", 0.46),
            ("America/Chicago", 0.29),
            ("America/Denver", 0.06),
            ("America/Los_Angeles", 0.17),
            ("America/Phoenix", 0.02),
        ),
        (499, 999, 1499, 1999, 2900, 4900, 9900, 19900),
        (
            ("biweekly", _FRI, 0.43),
            ("semimonthly", 0, 0.20),
            ("weekly", _FRI, 0.20),
            ("month_last_bd", 0, 0.10),
            ("month_day", 1, 0.07),
        ),
        0.48,
        (("visa", 0.53), ("mastercard", 0.27), ("amex", 0.14), ("discover", 0.06)),
        True,
        0.12,
    ),
    "GB": Country(
        0.10,
        "gbp",
        (("Europe/London", 1.0),),
        (499, 799, 999, 1499, 2500, 4900, 9900),
        (
            ("month_last_bd", 0, 0.55),
            ("month_day", 25, 0.12),
            ("month_day", 28, 0.08),
            ("weekly", _FRI, 0.15),
            ("biweekly", _FRI, 0.10),
        ),
        0.30,
        (("visa", 0.68), ("mastercard", 0.27), ("amex", 0.05)),
        True,
    ),
    "DE": Country(
        0.08,
        "eur",
        (("Europe/Berlin", 1.0),),
        (499, 999, 1499, 2900, 4900, 9900),
        (
            ("month_last_bd", 0, 0.72),
            ("month_day", 1, 0.12),
            ("month_day", 15, 0.06),
            ("weekly", _FRI, 0.05),
            ("biweekly", _FRI, 0.05),
        ),
        0.25,
        (("visa", 0.45), ("mastercard", 0.50), ("amex", 0.05)),
        False,
    ),
    "FR": Country(
        0.06,
        "eur",
        (("Europe/Paris", 1.0),),
        (499, 999, 1499, 2900, 4900, 9900),
        (
            ("month_last_bd", 0, 0.70),
            ("month_day", 28, 0.10),
            ("month_day", 1, 0.08),
            ("month_day", 5, 0.07),
            ("weekly", _FRI, 0.05),
        ),
        0.25,
        (("visa", 0.55), ("mastercard", 0.42), ("amex", 0.03)),
        False,
    ),
    "NL": Country(
        0.03,
        "eur",
        (("Europe/Amsterdam", 1.0),),
        (499, 999, 1499, 2900, 4900, 9900),
        (
            ("month_day", 25, 0.45),
            ("month_last_bd", 0, 0.35),
            ("biweekly", _FRI, 0.10),
            ("weekly", _FRI, 0.10),
        ),
        0.20,
        (("visa", 0.50), ("mastercard", 0.47), ("amex", 0.03)),
        False,
    ),
    "BR": Country(
        0.08,
        "brl",
        (("America/Sao_Paulo", 0.80), ("America/Manaus", 0.10), ("America/Recife", 0.10)),
        (1990, 2990, 3990, 4990, 9990, 19990),
        (
            ("month_nth_bd", 5, 0.55),
            ("semimonthly", 0, 0.20),
            ("month_last_bd", 0, 0.10),
            ("month_day", 1, 0.10),
            ("weekly", _FRI, 0.05),
        ),
        0.72,
        (("visa", 0.38), ("mastercard", 0.50), ("elo", 0.09), ("amex", 0.03)),
        False,
    ),
    "IN": Country(
        0.07,
        "inr",
        (("Asia/Kolkata", 1.0),),
        (9900, 19900, 29900, 49900, 99900, 149900),
        (
            ("month_last_bd", 0, 0.50),
            ("month_day", 1, 0.38),
            ("month_day", 7, 0.07),
            ("weekly", _FRI, 0.05),
        ),
        0.45,
        (("visa", 0.48), ("mastercard", 0.30), ("rupay", 0.18), ("amex", 0.04)),
        False,
    ),
    "AU": Country(
        0.05,
        "aud",
        (
            ("Australia/Sydney", 0.40),
            ("Australia/Melbourne", 0.33),
            ("Australia/Brisbane", 0.17),
            ("Australia/Perth", 0.10),
        ),
        (599, 999, 1499, 2499, 4999, 9999),
        (
            ("biweekly", 3, 0.55),  # fortnightly, often Thursday
            ("weekly", 3, 0.20),
            ("month_last_bd", 0, 0.15),
            ("month_day", 15, 0.10),
        ),
        0.45,
        (("visa", 0.55), ("mastercard", 0.38), ("amex", 0.07)),
        True,
    ),
    "JP": Country(
        0.05,
        "jpy",
        (("Asia/Tokyo", 1.0),),
        (500, 980, 1480, 1980, 2980, 4980, 9800),
        (
            ("month_day", 25, 0.68),
            ("month_last_bd", 0, 0.12),
            ("month_day", 20, 0.10),
            ("month_day", 15, 0.10),
        ),
        0.85,
        (("jcb", 0.33), ("visa", 0.42), ("mastercard", 0.20), ("amex", 0.05)),
        False,
    ),
    "CA": Country(
        0.06,
        "cad",
        (
            ("America/Toronto", 0.55),
            ("America/Vancouver", 0.20),
            ("America/Edmonton", 0.12),
            ("America/Winnipeg", 0.05),
            ("America/Halifax", 0.08),
        ),
        (599, 999, 1499, 2499, 3999, 7999),
        (
            ("biweekly", _FRI, 0.55),
            ("semimonthly", 0, 0.28),
            ("weekly", _FRI, 0.10),
            ("month_last_bd", 0, 0.07),
        ),
        0.60,
        (("visa", 0.55), ("mastercard", 0.40), ("amex", 0.05)),
        True,
    ),
    "MX": Country(
        0.06,
        "mxn",
        (("America/Mexico_City", 0.80), ("America/Monterrey", 0.10), ("America/Tijuana", 0.10)),
        (9900, 14900, 19900, 29900, 49900, 99900),
        (
            ("semimonthly", 0, 0.70),  # quincena
            ("weekly", _FRI, 0.22),
            ("month_last_bd", 0, 0.08),
        ),
        0.50,
        (("visa", 0.55), ("mastercard", 0.40), ("amex", 0.05)),
        False,
    ),
}

# ---------------------------------------------------------------------------------------------
# Decline codes: latent root causes and the codes they emit.
# ---------------------------------------------------------------------------------------------
ROOT_CAUSES: tuple[str, ...] = (
    "none",  # nothing wrong: only a transient error made the first charge fail
    "insufficient_funds",
    "do_not_honor",
    "generic_decline",
    "velocity",
    "expired_card",
    "hard",
)
_NONE, _NSF, _DNH, _GEN, _VEL, _EXP, _HARD = range(len(ROOT_CAUSES))
# Root-cause mix (before conditioning on failure, see `_condition_on_failure`) chosen so
# insufficient_funds + do_not_honor make ~70% of first declines
# (one acquirer: ~72%, shared/domain.md) and hard declines ~7%.
ROOT_MIX = (0.03, 0.66, 0.10, 0.035, 0.035, 0.07, 0.07)

TRANSIENT_CODES: tuple[tuple[str, float], ...] = (
    ("processing_error", 0.40),
    ("issuer_not_available", 0.35),
    ("try_again_later", 0.25),
)
HARD_CODES: tuple[tuple[str, float], ...] = (
    ("lost_card", 0.15),
    ("stolen_card", 0.08),
    ("pickup_card", 0.07),
    ("fraudulent", 0.12),
    ("restricted_card", 0.08),
    ("do_not_try_again", 0.12),
    ("invalid_account", 0.08),
    ("incorrect_number", 0.05),
    ("transaction_not_allowed", 0.12),
    ("security_violation", 0.03),
    ("stop_payment_order", 0.04),
    ("revocation_of_authorization", 0.04),
    ("card_not_supported", 0.02),
)
_HARD_SET = frozenset(code for code, _ in HARD_CODES)
_TRANSIENT_SET = frozenset(code for code, _ in TRANSIENT_CODES)
# Hard codes that mean the cardholder stopped the recurring payment: Mastercard MAC 21.
_CANCEL_CODES = frozenset({"do_not_try_again", "stop_payment_order", "revocation_of_authorization"})

# What a failing charge says, by root cause. Issuers blur NSF and do-not-honor.
EMISSIONS: dict[int, tuple[tuple[str, float], ...]] = {
    _NONE: (("generic_decline", 0.5), ("do_not_honor", 0.5)),
    _NSF: (("insufficient_funds", 0.84), ("do_not_honor", 0.12), ("generic_decline", 0.04)),
    _DNH: (("do_not_honor", 0.86), ("generic_decline", 0.09), ("insufficient_funds", 0.05)),
    _GEN: (("generic_decline", 0.65), ("do_not_honor", 0.35)),
    _VEL: (("card_velocity_exceeded", 0.7), ("withdrawal_count_limit_exceeded", 0.3)),
    _EXP: (("expired_card", 1.0),),
}
# After an account-updater refresh the new card can still fail, for ordinary reasons.
_POST_REFRESH_EMISSION = (("insufficient_funds", 0.6), ("do_not_honor", 0.3), ("generic_decline", 0.1))
# A velocity limit that has reset but the charge still failed.
_VEL_RESET_EMISSION = (
    ("card_velocity_exceeded", 0.4),
    ("withdrawal_count_limit_exceeded", 0.1),
    ("insufficient_funds", 0.3),
    ("do_not_honor", 0.2),
)
STICKY_CODE = 0.75  # a failing retry repeats the previous code when it fits the cause

# ISO 8583 field 39 response codes per decline code (Visa/Mastercard conventions).
NETWORK_CODES: dict[str, tuple[tuple[str, float], ...]] = {
    "insufficient_funds": (("51", 1.0),),
    "do_not_honor": (("05", 1.0),),
    "generic_decline": (("05", 0.85), ("01", 0.15)),
    "expired_card": (("54", 1.0),),
    "lost_card": (("41", 1.0),),
    "stolen_card": (("43", 1.0),),
    "pickup_card": (("04", 0.7), ("07", 0.3)),
    "fraudulent": (("59", 0.8), ("34", 0.2)),
    "restricted_card": (("62", 0.8), ("93", 0.2)),
    "do_not_try_again": (("R1", 0.6), ("05", 0.4)),
    "invalid_account": (("14", 0.5), ("78", 0.5)),
    "incorrect_number": (("14", 1.0),),
    "transaction_not_allowed": (("57", 0.7), ("58", 0.2), ("93", 0.1)),
    "security_violation": (("63", 1.0),),
    "stop_payment_order": (("R0", 1.0),),
    "revocation_of_authorization": (("R1", 1.0),),
    "card_not_supported": (("57", 1.0),),
    "processing_error": (("96", 1.0),),
    "issuer_not_available": (("91", 1.0),),
    "try_again_later": (("19", 0.6), ("96", 0.4)),
    "card_velocity_exceeded": (("61", 0.5), ("65", 0.5)),
    "withdrawal_count_limit_exceeded": (("65", 1.0),),
}
NETWORK_CODE_MISSING = 0.04  # some processors pass no raw response code

# Mastercard merchant advice codes 24..30: retry after this many hours (shared/domain.md).
MAC_RETRY_AFTER_HOURS: dict[str, float] = {
    "24": 1.0,
    "25": 24.0,
    "26": 48.0,
    "27": 96.0,
    "28": 144.0,
    "29": 192.0,
    "30": 240.0,
}
_MAC_STOP = frozenset({"03", "21"})  # do not try again / recurring payment cancelled
_RETRY_AFTER_MIX = (("24", 0.08), ("25", 0.30), ("26", 0.20), ("27", 0.15), ("28", 0.10), ("29", 0.08), ("30", 0.09))


# ---------------------------------------------------------------------------------------------
# Truth coefficients (logit scale unless said otherwise).
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Truth:
    """Coefficients of the true success probability; the simulator's, never the product's."""

    nsf_base: float = -1.8
    nsf_liquidity: float = 0.85
    payday_lift: float = 3.0  # insufficient funds right after funds land vs. end of period
    payday_ramp_days: float = 0.3  # funds clear within hours of landing
    dnh_base: float = -2.3
    dnh_cooloff: float = 1.4  # gained after a long pause since the last decline
    dnh_cooloff_hours: float = 48.0
    dnh_business_hours: float = 0.5
    gen_base: float = -1.7
    vel_base: float = 0.4
    vel_same_day_p: float = 0.02  # limit still hit until local midnight (probability)
    exp_refreshed_base: float = 1.3
    none_base: float = 2.0
    other_liquidity: float = 0.3
    fatigue: float = -0.12  # per attempt after the first
    rapid_retry: float = -0.7  # right after a decline, decaying over a few hours
    rapid_retry_hours: float = 3.0
    night: float = -0.3  # local 01:00-05:00: issuer batch windows
    business_hours: float = 0.1
    weekend: float = -0.1
    debit_midnight: float = 0.45  # local 00:00-03:00 for debit cards in some countries
    cross_border: float = -0.25
    nsf_amount: float = -0.3  # per log-unit of price above the currency's median
    transient_outage_hours: float = 1.5  # mean remaining issuer/processor outage
    glitch: float = 0.02  # any charge can fail on a random processing error
    nonreloadable_p: float = 0.01  # a non-reloadable prepaid card never gets funds
    p_max: float = 0.98


TRUTH = Truth()
FUNDING_NSF = {"credit": 0.5, "debit": 0.0, "prepaid": -0.8, "unknown": 0.0}
FUNDING_OTHER = {"credit": 0.1, "debit": 0.0, "prepaid": -0.3, "unknown": 0.0}
BRAND_EFFECT = {"amex": 0.25, "discover": 0.05, "jcb": -0.1, "elo": -0.15, "rupay": -0.15}


# ---------------------------------------------------------------------------------------------
# Small helpers.
# ---------------------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def _choice(rng: np.random.Generator, table: tuple[tuple[str, float], ...], size: int) -> np.ndarray:
    """Draw `size` values from a (value, weight) table, as an object array."""
    values = np.array([v for v, _ in table], dtype=object)
    weights = np.array([w for _, w in table], dtype=float)
    return values[rng.choice(len(values), size=size, p=weights / weights.sum())]


def _isin(values: np.ndarray, codes: Iterable[str]) -> np.ndarray:
    """Membership of possibly-missing codes (None/NaN never match); safe for object arrays."""
    return pd.Series(values, dtype=object).isin(list(codes)).to_numpy()


def _mac_wait_hours(mac: np.ndarray) -> np.ndarray:
    """Hours a Mastercard retry-after advice code (24..30) asks to wait; 0 for anything else."""
    return pd.Series(mac, dtype=object).map(MAC_RETRY_AFTER_HOURS).fillna(0.0).to_numpy(float)


def _hex_ids(rng: np.random.Generator, prefix: str, size: int) -> np.ndarray:
    """Unique random ids like `in_x3f9a...`, redrawn on the (astronomically rare) collision.

    The `x` keeps an all-digit draw from looking like a card number to the API's PAN check.
    """
    while True:
        raw = rng.integers(0, 2**60, size=size, dtype=np.int64)
        if np.unique(raw).size == size:
            return np.array([f"{prefix}x{v:015x}" for v in raw.tolist()], dtype=object)


def _utc_ns(values: object) -> np.ndarray:
    """Any timestamp-like input (naive = UTC) as int64 ns since the epoch; NaT as `_NAT`."""
    if isinstance(values, (pd.Series, pd.Index)):
        idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    else:
        idx = pd.DatetimeIndex(pd.to_datetime(np.atleast_1d(np.asarray(values)), utc=True))
    return idx.as_unit("ns").asi8.copy()


def _weekday(day: np.ndarray) -> np.ndarray:
    """Weekday (Mon=0) of an epoch day number (1970-01-01 was a Thursday)."""
    return (day + 3) % 7


def _month_index(day: np.ndarray) -> np.ndarray:
    """Months since 1970-01 of an epoch day number."""
    return day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def _month_start(month: np.ndarray) -> np.ndarray:
    """Epoch day number of the first day of a month index."""
    return month.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _prev_business_day(day: np.ndarray) -> np.ndarray:
    """The day itself on weekdays, else the Friday before (payroll moves paydays earlier)."""
    wd = _weekday(day)
    return day - np.where(wd == 5, 1, np.where(wd == 6, 2, 0))


def _nth_business_day(month_start: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Epoch day of the n-th weekday (business day) of the month starting at `month_start`."""
    out = np.full(month_start.shape, -1, dtype=np.int64)
    count = np.zeros(month_start.shape, dtype=np.int64)
    for k in range(15):  # n <= 10 always fits in the first 15 days
        day = month_start + k
        business = _weekday(day) < 5
        count += business
        hit = business & (count == n) & (out < 0)
        out[hit] = day[hit]
    return out


def _month_paydays(month: np.ndarray, kind: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (up to two) paydays of each row's month-based calendar in `month`, as epoch days."""
    start = _month_start(month)
    last = _month_start(month + 1) - 1
    length = last - start + 1
    last_bd = _prev_business_day(last)
    fixed = _prev_business_day(start + np.minimum(np.maximum(day, 1), length) - 1)
    nth = _nth_business_day(start, np.maximum(day, 1))
    mid = _prev_business_day(start + 14)
    first = np.select(
        [
            kind == PAY_KINDS.index("month_last_bd"),
            kind == PAY_KINDS.index("month_nth_bd"),
            kind == PAY_KINDS.index("semimonthly"),
        ],
        [last_bd, nth, mid],
        fixed,
    )
    second = np.where(kind == PAY_KINDS.index("semimonthly"), last_bd, first)
    return first, second


def last_payday(date: np.ndarray, kind: np.ndarray, day: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Latest payday (epoch day) on or before each local `date` under each row's calendar."""
    date = np.asarray(date, dtype=np.int64)
    weekly = date - (_weekday(date) - day) % 7
    anchor = (day - 3) % 7 + 7 * phase  # the first such weekday after 1970-01-01, plus phase
    biweekly = date - (date - anchor) % 14
    month = _month_index(date)
    best = np.full(date.shape, np.iinfo(np.int64).min, dtype=np.int64)
    # Next month's payday can move back into this month (weekend rule), so look at three months.
    for offset in (-1, 0, 1):
        for cand in _month_paydays(month + offset, kind, day):
            best = np.where((cand <= date) & (cand > best), cand, best)
    return np.select([kind == 0, kind == 1], [weekly, biweekly], best)


def _fractional_days(local_ns: np.ndarray) -> np.ndarray:
    """Local wall-clock ns as fractional epoch days (NaN for NaT): for smooth curves, not for bands."""
    return np.where(local_ns == _NAT, np.nan, local_ns / _NS_PER_DAY)


def _day_and_hour(local_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Epoch day (int64; very negative for NaT) and hour of day of local wall-clock ns.

    In integers: ns / ns-per-day as a float can land just below a whole day or hour (10:00:00
    read as 9.999999 h), which put exact-hour times in the wrong hour band (a 05:00 retry counted
    as night) and midnight in the day before.
    """
    day = np.where(local_ns == _NAT, -(10**9), np.floor_divide(local_ns, _NS_PER_DAY))
    hour = np.where(local_ns == _NAT, np.nan, (local_ns - day * _NS_PER_DAY) / _NS_PER_HOUR)
    return day, hour


def payday_effect(days_since: np.ndarray, period: np.ndarray, ramp_days: float = TRUTH.payday_ramp_days) -> np.ndarray:
    """0..1 lift: rises within hours of funds landing, decays over the pay period."""
    tau = 0.25 * period + 1.5
    return (1.0 - np.exp(-days_since / ramp_days)) * np.exp(-days_since / tau)


# ---------------------------------------------------------------------------------------------
# The world: latent truth of each invoice.
# ---------------------------------------------------------------------------------------------
class World:
    """The simulator's truth for a set of invoices, usable for closed-loop policy evaluation."""

    def __init__(self, invoices: pd.DataFrame) -> None:
        """Index the latent columns of `invoices` (as returned by `simulate`) into arrays."""
        inv = invoices
        self.invoices = inv
        self._index = pd.Index(inv.index.astype(str))
        self._tz_names, tz_codes = np.unique(inv["timezone"].astype(str).to_numpy(), return_inverse=True)
        self._tz = tz_codes.astype(np.int64)
        self._root = np.array([ROOT_CAUSES.index(r) for r in inv["root_cause"].astype(str)], dtype=np.int64)
        self._kind = np.array([PAY_KINDS.index(k) for k in inv["pay_kind"].astype(str)], dtype=np.int64)
        self._pay_day = inv["pay_day"].to_numpy(np.int64)
        self._pay_phase = inv["pay_phase"].to_numpy(np.int64)
        self._funds_hour = inv["funds_hour"].to_numpy(float)
        self._lead = inv["funds_lead_days"].to_numpy(np.int64)
        self._period = _PERIOD_DAYS[self._kind]
        self._liquidity = inv["liquidity"].to_numpy(float)
        self._issuer = inv["issuer_effect"].to_numpy(float)
        self._amount_z = inv["amount_z"].to_numpy(float)
        self._brand = inv["card_brand"].astype(str).to_numpy(object)
        funding = inv["card_funding"].astype(str).to_numpy(object)
        self._debit = funding == "debit"
        self._funding_nsf = np.array([FUNDING_NSF.get(f, 0.0) for f in funding])
        self._funding_other = np.array([FUNDING_OTHER.get(f, 0.0) for f in funding])
        self._brand_effect = np.array([BRAND_EFFECT.get(b, 0.0) for b in self._brand])
        self._cross_border = (
            inv["card_country"].astype(object).fillna("").to_numpy(object) != inv["country"].to_numpy(object)
        ) & inv["card_country"].notna().to_numpy()
        self._debit_midnight = inv["debit_midnight"].to_numpy(bool)
        self._nonreloadable = inv["prepaid_nonreloadable"].to_numpy(bool)
        self._hard_code = inv["hard_code"].astype(object).to_numpy(object)
        self._refresh = _utc_ns(inv["updater_refresh_at"])
        self._exp = inv[["card_exp_month", "card_exp_year"]].to_numpy(np.int64)
        self._new_exp = inv[["new_card_exp_month", "new_card_exp_year"]].to_numpy(np.int64)

    # -- public, id-based API ------------------------------------------------------------------
    def positions(self, invoice_ids: object) -> np.ndarray:
        """Row positions of invoice ids; raises KeyError on an unknown id."""
        pos = self._index.get_indexer(pd.Index(np.atleast_1d(np.asarray(invoice_ids)).astype(str)))
        if (pos < 0).any():
            raise KeyError(f"unknown invoice ids: {np.asarray(invoice_ids)[pos < 0][:5].tolist()}")
        return pos

    def success_probability(
        self,
        invoice_ids: np.ndarray,
        at: pd.DatetimeIndex | pd.Series,
        prior_attempts: np.ndarray,
        last_attempt_at: pd.DatetimeIndex | pd.Series,
        last_decline_code: np.ndarray,
        last_merchant_advice_code: np.ndarray | None = None,
    ) -> np.ndarray:
        """The TRUE probability that a charge at `at` succeeds, per row (vectorised)."""
        return self.success_probability_at(
            self.positions(invoice_ids),
            _utc_ns(at),
            np.asarray(prior_attempts),
            _utc_ns(last_attempt_at),
            last_decline_code,
            last_merchant_advice_code,
        )

    def decline(
        self,
        invoice_ids: np.ndarray,
        at: pd.DatetimeIndex | pd.Series,
        last_decline_code: np.ndarray | None,
        rng: np.random.Generator,
        last_attempt_at: pd.DatetimeIndex | pd.Series | None = None,
    ) -> pd.DataFrame:
        """Decline fields for charges at `at` that failed: decline, network and advice codes."""
        pos = self.positions(invoice_ids)
        n = pos.size
        last_ns = (
            np.full(n, _NAT, dtype=np.int64) if last_attempt_at is None else _broadcast(_utc_ns(last_attempt_at), n)
        )
        code, ndc, mac = self._decline(pos, _broadcast(_utc_ns(at), n), _as_obj(last_decline_code, n), last_ns, rng)
        return pd.DataFrame({"decline_code": code, "network_decline_code": ndc, "merchant_advice_code": mac})

    def first_attempts(self) -> pd.DataFrame:
        """The failed scheduled charge of each invoice: time and decline fields."""
        inv = self.invoices
        return pd.DataFrame(
            {
                "attempted_at": inv["first_attempt_at"],
                "decline_code": inv["first_decline_code"],
                "network_decline_code": inv["first_network_decline_code"],
                "merchant_advice_code": inv["first_merchant_advice_code"],
            },
            index=inv.index,
        )

    def card_expiry(self, invoice_ids: np.ndarray, at: pd.DatetimeIndex | pd.Series) -> pd.DataFrame:
        """The card's expiry month/year as a charge at `at` sees it (new after an updater refresh)."""
        pos = self.positions(invoice_ids)
        exp = self._card_exp(pos, _broadcast(_utc_ns(at), pos.size))
        return pd.DataFrame({"card_exp_month": exp[:, 0], "card_exp_year": exp[:, 1]})

    def days_since_payday(self, invoice_ids: np.ndarray, at: pd.DatetimeIndex | pd.Series) -> np.ndarray:
        """Local wall-clock days since the customer's funds last landed (DST-correct)."""
        pos = self.positions(invoice_ids)
        return self._days_since_payday(pos, self._local_days(pos, _broadcast(_utc_ns(at), pos.size)))

    def last_funds_arrival(self, invoice_ids: np.ndarray, at: pd.DatetimeIndex | pd.Series) -> pd.DatetimeIndex:
        """UTC time the customer's pay last landed at or before `at`."""
        pos = self.positions(invoice_ids)
        at_ns = _broadcast(_utc_ns(at), pos.size)
        delta = self._days_since_payday(pos, self._local_days(pos, at_ns))
        # Local wall-clock difference; convert back through the zone to stay DST-correct.
        local = self._local_days(pos, at_ns) - delta
        return self._local_to_utc(pos, np.rint(local * _NS_PER_DAY).astype(np.int64))

    def with_calendars_redrawn(self, samples: int, rng: np.random.Generator) -> World:
        """`samples` copies of these invoices, each customer's pay calendar redrawn from its country's mix.

        Copy s of row i sits at position s * n + i. All else (cause, liquidity, card, zone) is kept:
        the world as known to someone who knows everything but when the customer is paid.
        """
        positions = np.tile(np.arange(len(self.invoices)), samples)
        return self._with_calendars(positions, _draw_paydays(rng, self.invoices["country"].to_numpy(object)[positions]))

    def with_calendars_from(self, positions: np.ndarray, source: World, source_positions: np.ndarray) -> World:
        """These invoices' rows at `positions`, each with the pay calendar of `source`'s row at `source_positions`.

        Row r of the result is invoice positions[r] paid as source row source_positions[r] is: how a
        customer's earlier invoice would have gone under a calendar drawn for a later one.
        """
        rows = np.asarray(source_positions)
        return self._with_calendars(
            np.asarray(positions), {name: source.invoices[name].to_numpy()[rows] for name in PAY_CALENDAR_COLUMNS}
        )

    def _with_calendars(self, positions: np.ndarray, calendars: dict[str, np.ndarray]) -> World:
        """A world of these invoices' rows at `positions` (ids made unique) with the given calendar columns."""
        rows = self.invoices.iloc[positions].copy()
        rows.index = pd.Index([f"{i}#{r}" for r, i in enumerate(self._index[positions])])
        for name in PAY_CALENDAR_COLUMNS:
            rows[name] = calendars[name]
        return World(rows)

    def success_probability_at(
        self,
        positions: np.ndarray,
        at_ns: np.ndarray,
        prior_attempts: np.ndarray,
        last_ns: np.ndarray,
        last_decline_code: np.ndarray,
        last_merchant_advice_code: np.ndarray | None,
    ) -> np.ndarray:
        """`success_probability` by row position, times as int64 UTC ns (NaT's value for none): large batches."""
        n = np.asarray(positions).size
        return self._probability(
            np.asarray(positions, dtype=np.int64),
            _broadcast(np.asarray(at_ns, dtype=np.int64), n),
            _broadcast(np.asarray(prior_attempts, dtype=np.int64), n),
            _broadcast(np.asarray(last_ns, dtype=np.int64), n),
            _as_obj(last_decline_code, n),
            _as_obj(last_merchant_advice_code, n),
        )

    # -- internals (positions and int64 ns) -----------------------------------------------------
    def _local_ns(self, pos: np.ndarray, at_ns: np.ndarray) -> np.ndarray:
        """Local wall-clock time (ns since the epoch, as if UTC) of UTC instants, per row's zone."""
        out = np.full(at_ns.shape, _NAT, dtype=np.int64)
        tz = self._tz[pos]
        valid = at_ns != _NAT
        for code in np.unique(tz[valid]):
            m = valid & (tz == code)
            idx = pd.DatetimeIndex(at_ns[m].view("M8[ns]")).tz_localize("UTC").tz_convert(self._tz_names[code])
            out[m] = idx.tz_localize(None).as_unit("ns").asi8
        return out

    def _local_days(self, pos: np.ndarray, at_ns: np.ndarray) -> np.ndarray:
        """Local wall-clock time as fractional epoch days (NaN for NaT)."""
        return _fractional_days(self._local_ns(pos, at_ns))

    def _local_day(self, pos: np.ndarray, at_ns: np.ndarray) -> np.ndarray:
        """Local epoch day of UTC instants (very negative for NaT), exact (`_day_and_hour`)."""
        return _day_and_hour(self._local_ns(pos, at_ns))[0]

    def _local_to_utc(self, pos: np.ndarray, local_ns: np.ndarray) -> pd.DatetimeIndex:
        """UTC instants of local wall-clock times (ambiguous: first; nonexistent: shifted forward)."""
        out = np.empty(local_ns.shape, dtype=np.int64)
        tz = self._tz[pos]
        for code in np.unique(tz):
            m = tz == code
            idx = pd.DatetimeIndex(local_ns[m].view("M8[ns]")).tz_localize(
                self._tz_names[code], ambiguous=np.ones(m.sum(), dtype=bool), nonexistent="shift_forward"
            )
            out[m] = idx.tz_convert("UTC").as_unit("ns").asi8
        return pd.DatetimeIndex(out.view("M8[ns]")).tz_localize("UTC")

    def _days_since_payday(self, pos: np.ndarray, local_days: np.ndarray) -> np.ndarray:
        """Local days since funds landed: payday date - lead days + the local arrival hour."""
        lead = self._lead[pos]
        offset = self._funds_hour[pos] / 24.0 - lead
        # The latest payday D whose arrival D + offset is at or before t.
        shifted = np.floor(np.nan_to_num(local_days - offset)).astype(np.int64)
        payday = last_payday(shifted, self._kind[pos], self._pay_day[pos], self._pay_phase[pos])
        return local_days - (payday + offset)

    def _card_exp(self, pos: np.ndarray, at_ns: np.ndarray) -> np.ndarray:
        """(month, year) rows: the updated card after the account-updater refresh."""
        refresh = self._refresh[pos]
        refreshed = (refresh != _NAT) & (at_ns >= refresh)
        return np.where(refreshed[:, None], self._new_exp[pos], self._exp[pos])

    def _probability(
        self,
        pos: np.ndarray,
        at_ns: np.ndarray,
        prior: np.ndarray,
        last_ns: np.ndarray,
        last_code: np.ndarray,
        last_mac: np.ndarray,
    ) -> np.ndarray:
        """True success probability; see docs/simulator.md for the shape of each term."""
        t = TRUTH
        root = self._root[pos]
        local_ns = self._local_ns(pos, at_ns)
        local = _fractional_days(local_ns)
        day, hour = _day_and_hour(local_ns)
        weekday = _weekday(day)
        has_last = last_ns != _NAT
        hours_since = np.where(has_last, (at_ns - last_ns) / _NS_PER_HOUR, 1e6).clip(min=0.0)
        last_local_day = self._local_day(pos, last_ns)
        lift = payday_effect(self._days_since_payday(pos, local), self._period[pos])
        liquidity = self._liquidity[pos]

        # Terms every cause shares: issuer, card, clock, fatigue and spacing.
        weekend = weekday >= 5
        common = (
            self._issuer[pos]
            + self._brand_effect[pos]
            + t.cross_border * self._cross_border[pos]
            + t.fatigue * np.maximum(prior - 1, 0)
            + t.rapid_retry * np.exp(-hours_since / t.rapid_retry_hours)
            + t.night * ((hour >= 1) & (hour < 5))
            + t.business_hours * ((hour >= 9) & (hour < 18))
            + t.weekend * weekend
            + t.debit_midnight * (self._debit[pos] & self._debit_midnight[pos] & (hour < 3))
        )
        other = common + self._funding_other[pos] + t.other_liquidity * liquidity
        nsf = (
            t.nsf_base
            + t.nsf_liquidity * liquidity
            + t.payday_lift * lift
            + self._funding_nsf[pos]
            + t.nsf_amount * self._amount_z[pos]
            + common
        )
        cooloff = 1.0 - np.exp(-hours_since / t.dnh_cooloff_hours)
        office = (~weekend) & (hour >= 9) & (hour < 17)
        dnh = t.dnh_base + t.dnh_cooloff * cooloff + t.dnh_business_hours * office + 0.8 * lift + other
        gen = t.gen_base + 0.6 * cooloff + 1.2 * lift + other
        logit = np.select(
            [root == _NSF, root == _DNH, root == _GEN, root == _VEL, root == _EXP, root == _NONE],
            [nsf, dnh, gen, t.vel_base + other, t.exp_refreshed_base + 0.5 * lift + other, t.none_base + other],
            -np.inf,  # hard
        )
        p = _sigmoid(logit)

        # Card-level states that override the curve.
        p = np.where(self._nonreloadable[pos] & (root != _HARD) & (root != _EXP), t.nonreloadable_p, p)
        same_local_day = has_last & (day == last_local_day)
        p = np.where((root == _VEL) & same_local_day, t.vel_same_day_p, p)  # resets at local midnight
        refresh = self._refresh[pos]
        p = np.where((root == _EXP) & ((refresh == _NAT) | (at_ns < refresh)), 0.0, p)

        # A transient error: the outage may still be on; afterwards the underlying cause rules.
        transient = _isin(last_code, _TRANSIENT_SET) & has_last
        p = p * np.where(transient, 1.0 - np.exp(-hours_since / t.transient_outage_hours), 1.0)
        p = p * (1.0 - t.glitch)

        # Issuer-enforced rules: hard declines and Mastercard advice codes.
        p = np.where(_isin(last_code, _HARD_SET), 0.0, p)
        p = np.where(_isin(last_mac, _MAC_STOP), 0.0, p)
        wait = _mac_wait_hours(last_mac)
        p = np.where(has_last & (hours_since < wait), 0.0, p)
        return np.clip(np.nan_to_num(p), 0.0, t.p_max)

    def _decline(
        self,
        pos: np.ndarray,
        at_ns: np.ndarray,
        last_code: np.ndarray,
        last_ns: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decline code, ISO 8583 response code and Mastercard advice code of failed charges."""
        t = TRUTH
        n = pos.size
        root = self._root[pos]
        code = np.full(n, None, dtype=object)
        for cause, table in EMISSIONS.items():
            m = root == cause
            code[m] = _choice(rng, table, int(m.sum()))
        refresh = self._refresh[pos]
        refreshed = (root == _EXP) & (refresh != _NAT) & (at_ns >= refresh)
        code[refreshed] = _choice(rng, _POST_REFRESH_EMISSION, int(refreshed.sum()))
        has_last = last_ns != _NAT
        same_day = np.zeros(n, dtype=bool)
        if has_last.any():
            now_day = self._local_day(pos, at_ns)
            last_day = self._local_day(pos, last_ns)
            same_day = has_last & (now_day == last_day)
        vel_reset = (root == _VEL) & has_last & ~same_day
        code[vel_reset] = _choice(rng, _VEL_RESET_EMISSION, int(vel_reset.sum()))

        # Issuers mostly repeat themselves: keep the previous code when it fits the cause.
        sticky = rng.random(n) < STICKY_CODE
        for cause, table in EMISSIONS.items():
            fits = _isin(last_code, [c for c, _ in table])
            m = sticky & fits & (root == cause) & ~refreshed
            code[m] = last_code[m]
        code[root == _HARD] = self._hard_code[pos][root == _HARD]

        # Transient errors: the first charge of a healthy card, random glitches, ongoing outages.
        first = np.array([c is None or c != c for c in last_code])  # None or NaN: the first charge
        hours_since = np.where(has_last, (at_ns - last_ns) / _NS_PER_HOUR, 1e6).clip(min=0.0)
        outage = np.where(_isin(last_code, _TRANSIENT_SET), np.exp(-hours_since / t.transient_outage_hours), 0.0)
        # Given a failure, how likely it was the outage (Bayes, with the cause's rough failure odds).
        p_outage = np.where(root == _NONE, outage / (outage + (1 - outage) * 0.15 + 1e-12), outage)
        q = np.where(first, np.where(root == _NONE, 1.0, 0.025), t.glitch + (1 - t.glitch) * p_outage)
        is_transient = (rng.random(n) < q) & (root != _HARD)
        repeat = is_transient & _isin(last_code, _TRANSIENT_SET) & (rng.random(n) < 0.7)
        code[is_transient] = _choice(rng, TRANSIENT_CODES, int(is_transient.sum()))
        code[repeat] = last_code[repeat]

        ndc = self._network_codes(code, rng)
        # Visa's R0/R1/R3 (stop recurring) exist only on Visa; other networks answer 05.
        ndc[_isin(ndc, ("R0", "R1", "R3")) & (self._brand[pos] != "visa")] = "05"
        mac = self._advice_codes(pos, code, rng)
        return code, ndc, mac

    @staticmethod
    def _network_codes(code: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """ISO 8583 response codes consistent with each decline code; sometimes missing."""
        out = np.full(code.size, None, dtype=object)
        for value in np.unique(code.astype(str)):
            m = code == value
            table = NETWORK_CODES.get(value, (("05", 1.0),))
            out[m] = _choice(rng, table, int(m.sum()))
        out[rng.random(code.size) < NETWORK_CODE_MISSING] = None
        return out

    def _advice_codes(self, pos: np.ndarray, code: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Mastercard merchant advice codes: only on Mastercard, only sometimes."""
        n = code.size
        out = np.full(n, None, dtype=object)
        u = rng.random(n)
        retry_after = _choice(rng, _RETRY_AFTER_MIX, n)
        short_wait = _choice(rng, (("24", 0.3), ("25", 0.4), ("26", 0.3)), n)
        prepaid = _choice(rng, (("40", 0.5), ("41", 0.2), ("43", 0.3)), n)
        nsf_like = _isin(code, ["insufficient_funds", "card_velocity_exceeded", "withdrawal_count_limit_exceeded"])
        dnh_like = _isin(code, ["do_not_honor", "generic_decline"])
        hard = _isin(code, _HARD_SET)
        cancel = _isin(code, _CANCEL_CODES)
        conditions = [
            self._nonreloadable[pos] & ~hard & (u < 0.6),
            nsf_like & (u < 0.45),
            nsf_like & (u < 0.55),
            dnh_like & (u < 0.15),
            dnh_like & (u < 0.30),
            _isin(code, _TRANSIENT_SET) & (u < 0.2),
            cancel & (u < 0.7),
            hard & ~cancel & (u < 0.5),
            (code == "expired_card") & (u < 0.6),
        ]
        choices = [prepaid, retry_after, *(np.full(n, c, dtype=object) for c in ("02", "02")), short_wait]
        choices += [np.full(n, c, dtype=object) for c in ("02", "21", "03", "01")]
        out[:] = np.select(conditions, choices, np.full(n, None, dtype=object))
        out[self._brand[pos] != "mastercard"] = None
        return out


def _as_obj(values: object, n: int) -> np.ndarray:
    """Codes as an object array of length n (None for missing)."""
    if values is None:
        return np.full(n, None, dtype=object)
    if isinstance(values, (pd.Series, pd.Index)):
        arr = values.to_numpy(dtype=object, copy=True)
    else:
        arr = np.array(np.atleast_1d(np.asarray(values, dtype=object)), dtype=object, copy=True)
    arr[pd.isna(arr)] = None
    return _broadcast(arr, n)


def _broadcast(values: np.ndarray, n: int) -> np.ndarray:
    """A scalar or length-1 array repeated n times; a length-n array unchanged."""
    values = np.atleast_1d(values)
    if values.size == 1 and n != 1:
        return np.full(n, values[0], dtype=values.dtype)
    if values.size != n:
        raise ValueError(f"expected {n} values, got {values.size}")
    return values


# ---------------------------------------------------------------------------------------------
# Drawing the population: merchants, customers, cards, invoices.
# ---------------------------------------------------------------------------------------------
N_MERCHANTS = 40
SUBSCRIPTIONS_PER_CUSTOMER = ((1, 0.90), (2, 0.07), (3, 0.03))
# Consecutive monthly renewals that fail, per customer: a customer short of money one month often
# is the next (the simulator's assumption; a customer's earlier recoveries then show when funds land).
FAILED_MONTHS_PER_CUSTOMER = ((1, 0.55), (2, 0.2), (3, 0.12), (4, 0.08), (6, 0.05))
YEARLY_SHARE = 0.15
SHARED_CAUSE = 0.7  # a second subscription on the same card fails for the same reason
TIMEZONE_MISSING = 0.12  # customers with no time zone on file: the loader falls back to country
UPDATER_SHARE = 0.35  # expired cards an account updater refreshes, at a latent time
NONRELOADABLE_SHARE = 0.3  # of prepaid cards
# Legacy scheduler's retry-delay components: minutes-hours, ~1 day, 2-4 days, 5-10 days, anything.
DELAY_ALPHA = (1.0, 1.5, 2.0, 1.2, 1.0)


@dataclass(frozen=True)
class Merchants:
    """Per-merchant settings of the legacy scheduler (the behaviour policy in the data)."""

    weight: np.ndarray
    max_retries: np.ndarray  # 3..8
    window_days: np.ndarray  # 14..30
    retries_hard: np.ndarray  # legacy bug: keeps retrying hard declines
    honors_mac: np.ndarray  # waits for Mastercard retry-after advice, stops on 03/21
    anchor_time: np.ndarray  # bills at the subscription's creation time instead of a batch hour
    batch_hour: np.ndarray  # UTC hour of the nightly billing run
    delay_weights: np.ndarray  # (merchant, component) mixture of retry delays


def _draw_merchants(rng: np.random.Generator) -> Merchants:
    """Merchant sizes and their retry settings."""
    m = N_MERCHANTS
    return Merchants(
        weight=rng.dirichlet(np.full(m, 1.5)),
        max_retries=rng.integers(3, 9, m),
        window_days=rng.integers(14, 31, m),
        retries_hard=rng.random(m) < 0.35,
        honors_mac=rng.random(m) < 0.5,
        anchor_time=rng.random(m) < 0.3,
        batch_hour=rng.integers(0, 24, m),
        delay_weights=rng.dirichlet(np.array(DELAY_ALPHA), m),
    )


def _invoice_counts(n_invoices: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Invoices per customer (summing to exactly n_invoices), each invoice's month offset, and yearly plans.

    A customer has one or more subscriptions on one card; a monthly customer's renewals may fail
    in several consecutive months (one invoice per subscription and month). Yearly plans fail once.
    """
    values = np.array([v for v, _ in SUBSCRIPTIONS_PER_CUSTOMER])
    weights = np.array([w for _, w in SUBSCRIPTIONS_PER_CUSTOMER])
    subscriptions = values[rng.choice(len(values), size=n_invoices, p=weights)]
    yearly = rng.random(n_invoices) < YEARLY_SHARE
    month_values = np.array([v for v, _ in FAILED_MONTHS_PER_CUSTOMER])
    month_weights = np.array([w for _, w in FAILED_MONTHS_PER_CUSTOMER])
    months = np.where(yearly, 1, month_values[rng.choice(len(month_values), size=n_invoices, p=month_weights)])
    counts = subscriptions * months
    total = np.cumsum(counts)
    n_customers = int(np.searchsorted(total, n_invoices)) + 1
    counts, months = counts[:n_customers].copy(), months[:n_customers]
    counts[-1] -= int(total[n_customers - 1] - n_invoices)
    # Invoice i of a customer with M failed months is in month offset i mod M (subscriptions alike).
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    offsets = within % np.repeat(months, counts)
    return counts, offsets, yearly[:n_customers]


def _per_country(
    rng: np.random.Generator, country: np.ndarray, draw: Callable[[np.random.Generator, Country, int], np.ndarray]
) -> np.ndarray:
    """Fill an object array country by country with `draw(rng, Country, size)`."""
    out = np.empty(country.size, dtype=object)
    for code, cfg in COUNTRIES.items():
        m = country == code
        if m.any():
            out[m] = draw(rng, cfg, int(m.sum()))
    return out


# The latent columns of a customer's pay calendar (`_draw_paydays`).
PAY_CALENDAR_COLUMNS: tuple[str, ...] = ("pay_kind", "pay_day", "pay_phase", "funds_hour", "funds_lead_days")


def _draw_paydays(rng: np.random.Generator, country: np.ndarray) -> dict[str, np.ndarray]:
    """Payday calendar per customer from the country's mix, and when the funds land."""
    n = country.size
    kind = np.zeros(n, dtype=np.int64)
    day = np.zeros(n, dtype=np.int64)
    for code, cfg in COUNTRIES.items():
        m = country == code
        pick = rng.choice(len(cfg.paydays), size=int(m.sum()), p=[w for *_, w in cfg.paydays])
        kind[m] = np.array([PAY_KINDS.index(k) for k, *_ in cfg.paydays])[pick]
        day[m] = np.array([d for _, d, _ in cfg.paydays])[pick]
    # Direct deposits post overnight: at local midnight, in the early hours, or in the morning.
    band = rng.choice(3, size=n, p=[0.35, 0.45, 0.20])
    hour = np.select([band == 0, band == 1], [rng.uniform(0, 1, n), rng.uniform(1, 6, n)], rng.uniform(6, 10, n))
    early = np.array([COUNTRIES[c].early_deposit_share for c in country])
    lead = np.where((rng.random(n) < early) & (kind <= 2), 2, 0)
    return {
        "pay_kind": np.array(PAY_KINDS, dtype=object)[kind],
        "pay_day": day,
        "pay_phase": rng.integers(0, 2, n),
        "funds_hour": np.round(hour, 2),
        "funds_lead_days": lead,
    }


def _draw_cards(rng: np.random.Generator, country: np.ndarray) -> dict[str, np.ndarray]:
    """Card brand, funding and issuing country, per customer."""
    n = country.size
    brand = _per_country(rng, country, lambda r, c, k: _choice(r, c.brands, k))
    credit = np.array([COUNTRIES[c].credit_share for c in country])
    u = rng.random(n)
    # credit by country, then debit, ~5% prepaid and ~2% unknown (processors don't always say).
    funding = np.select([u < credit, u < 0.93, u < 0.98], ["credit", "debit", "prepaid"], "unknown").astype(object)
    # Most cards are issued at home; some are foreign (expats, travel cards); a few unknown.
    names = np.array(list(COUNTRIES), dtype=object)
    v = rng.random(n)
    card_country = np.where(v < 0.93, country, names[rng.integers(0, names.size, n)]).astype(object)
    card_country[v > 0.98] = None
    return {
        "card_brand": brand,
        "card_funding": funding,
        "card_country": card_country,
        "card_fingerprint": _hex_ids(rng, "fp_", n),
        "prepaid_nonreloadable": (funding == "prepaid") & (rng.random(n) < NONRELOADABLE_SHARE),
    }


def _anchor_dates(
    rng: np.random.Generator, created_ns: np.ndarray, yearly: np.ndarray, start_ns: int, end_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Renewal date (epoch day) in [start, end) on the billing anchor; yearly falls back to monthly."""
    created_day = created_ns // _NS_PER_DAY
    anchor_dom = created_day - _month_start(_month_index(created_day)) + 1
    start_day, end_day = start_ns // _NS_PER_DAY, end_ns // _NS_PER_DAY
    # Yearly: the first anniversary on or after `start`, at least ~a year after signup.
    created_dt = created_day.astype("datetime64[D]")
    month_of_year = created_dt.astype("datetime64[M]").astype(np.int64) % 12
    year0 = np.int64(start_day).astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64)
    yearly_day = np.full(created_day.shape, -1, dtype=np.int64)
    for dy in (0, 1, 2):
        month = (year0 + dy) * 12 + month_of_year
        length = _month_start(month + 1) - _month_start(month)
        cand = _month_start(month) + np.minimum(anchor_dom, length) - 1
        ok = (yearly_day < 0) & (cand >= start_day) & (cand >= created_day + 360)
        yearly_day = np.where(ok, cand, yearly_day)
    yearly = yearly & (yearly_day >= 0) & (yearly_day < end_day)
    # Monthly: a uniformly chosen month between signup + 4 weeks and the end of the range.
    lo = np.maximum(start_day, created_day + 28)
    m_lo, m_hi = _month_index(lo), _month_index(np.full(lo.shape, end_day - 1))
    month = m_lo + np.floor(rng.random(lo.size) * (m_hi - m_lo + 1)).astype(np.int64)

    def on_anchor(mon: np.ndarray) -> np.ndarray:
        length = _month_start(mon + 1) - _month_start(mon)
        return _month_start(mon) + np.minimum(anchor_dom, length) - 1

    monthly_day = on_anchor(month)
    monthly_day = np.where(monthly_day < lo, on_anchor(month + 1), monthly_day)
    monthly_day = np.where(monthly_day >= end_day, on_anchor(month - 1), monthly_day)
    monthly_day = np.clip(monthly_day, lo, end_day - 1)  # rare edge: signup right before the end
    return np.where(yearly, yearly_day, monthly_day), yearly


def _on_anchor(month: np.ndarray, anchor_dom: np.ndarray) -> np.ndarray:
    """The billing anchor's day (epoch day) in `month`, the month's last day when it is shorter."""
    length = _month_start(month + 1) - _month_start(month)
    return _month_start(month) + np.minimum(anchor_dom, length) - 1


def _renewal_days(
    anchor_day: np.ndarray, created_day: np.ndarray, offset: np.ndarray, start_ns: int, end_ns: int
) -> np.ndarray:
    """Renewal day of each invoice `offset` months after its customer's anchor renewal.

    Months past the range's end mirror to before the anchor (anchor month - offset), so a run of
    failed months stays inside the range; a month still outside it (signup too recent) keeps the
    anchor day.
    """
    anchor_dom = created_day - _month_start(_month_index(created_day)) + 1
    anchor_month = _month_index(anchor_day)
    end_day = end_ns // _NS_PER_DAY
    lo = np.maximum(start_ns // _NS_PER_DAY, created_day + 28)
    day = _on_anchor(anchor_month + offset, anchor_dom)
    day = np.where(day >= end_day, _on_anchor(anchor_month - offset, anchor_dom), day)
    return np.where((offset == 0) | (day < lo) | (day >= end_day), anchor_day, day)


def _month_to_my(month: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(month 1..12, year) of a month index."""
    return month % 12 + 1, 1970 + month // 12


def _draw_invoices(
    n_invoices: int, rng: np.random.Generator, start: str, days: int, merchants: Merchants
) -> pd.DataFrame:
    """The latent truth of each invoice, up to (not including) the first decline's codes."""
    start_ns = pd.Timestamp(start, tz="UTC").as_unit("ns").value
    end_ns = start_ns + days * _NS_PER_DAY
    counts, month_offset, yearly = _invoice_counts(n_invoices, rng)
    c = counts.size
    names = list(COUNTRIES)
    country = np.array(names, dtype=object)[rng.choice(len(names), size=c, p=[COUNTRIES[k].weight for k in names])]
    timezone = _per_country(rng, country, lambda r, cfg, k: _choice(r, cfg.timezones, k))
    reported_tz = timezone.copy()
    reported_tz[rng.random(c) < TIMEZONE_MISSING] = None
    cust: dict[str, np.ndarray] = {
        "customer_id": _hex_ids(rng, "cus_", c),
        "merchant_id": rng.choice(N_MERCHANTS, size=c, p=merchants.weight),
        "country": country,
        "timezone": timezone,
        "customer_timezone": reported_tz,
        "debit_midnight": np.array([COUNTRIES[k].debit_midnight for k in country]),
        "currency": np.array([COUNTRIES[k].currency for k in country], dtype=object),
        "liquidity": rng.standard_normal(c),
        "issuer_effect": rng.normal(0.0, 0.4, c),
        **_draw_paydays(rng, country),
        **_draw_cards(rng, country),
    }
    # Billing: monthly mostly, some yearly; renewals land on the signup's day of month.
    lo_created = start_ns - 4 * 365 * _NS_PER_DAY
    hi_created = np.where(yearly, end_ns - 366 * _NS_PER_DAY, end_ns - 35 * _NS_PER_DAY)
    created = lo_created + (rng.random(c) * (hi_created - lo_created)).astype(np.int64)
    anchor_day, yearly = _anchor_dates(rng, created, yearly, start_ns, end_ns)
    cust["billing_interval"] = np.where(yearly, "year", "month").astype(object)
    cust["customer_created_at"] = created
    # Root cause per customer; card-level causes (expired, hard) are shared by all its invoices.
    cust["root"] = rng.choice(len(ROOT_CAUSES), size=c, p=ROOT_MIX)
    cust["hard_code"] = np.where(cust["root"] == _HARD, _choice(rng, HARD_CODES, c), np.full(c, None, dtype=object))

    inv = {k: np.repeat(v, counts) for k, v in cust.items()}
    inv_anchor = _renewal_days(
        np.repeat(anchor_day, counts), np.repeat(created // _NS_PER_DAY, counts), month_offset, start_ns, end_ns
    )
    n = n_invoices
    soft = np.array([_NONE, _NSF, _DNH, _GEN, _VEL])
    soft_p = np.array(ROOT_MIX)[soft] / np.array(ROOT_MIX)[soft].sum()
    redraw = np.isin(inv["root"], soft) & (rng.random(n) > SHARED_CAUSE)
    inv["root"] = np.where(redraw, soft[rng.choice(soft.size, size=n, p=soft_p)], inv["root"])

    # Amount: a list price of the country (x10 for yearly plans).
    price = _per_country(
        rng, inv["country"], lambda r, cfg, k: np.array(cfg.prices)[r.integers(0, len(cfg.prices), k)]
    ).astype(np.int64)
    median = np.array([np.median(COUNTRIES[k].prices) for k in inv["country"]])
    inv["amount"] = np.where(inv["billing_interval"] == "year", price * 10, price).astype(np.int64)
    inv["amount_z"] = np.log(inv["amount"] / median)

    # First charge time: the merchant's nightly batch, or the signup's time of day.
    merchant = inv["merchant_id"]
    batch = merchants.batch_hour[merchant] * _NS_PER_HOUR + (rng.random(n) * 50 * 60e9).astype(np.int64)
    own = inv["customer_created_at"] % _NS_PER_DAY + (rng.random(n) * 5 * 60e9).astype(np.int64)
    first_at = inv_anchor * _NS_PER_DAY + np.where(merchants.anchor_time[merchant], own, batch)
    inv["first_attempt_at"] = first_at

    # Card expiry: expired cards ran out 1-3 months before the charge; updater cards get +3-4 years.
    first_month = _month_index(first_at // _NS_PER_DAY)
    cust_first_month = first_month[np.cumsum(counts) - counts]
    expired_c = cust["root"] == _EXP
    exp_c = np.where(expired_c, cust_first_month - rng.integers(1, 4, c), cust_first_month + rng.integers(1, 61, c))
    new_exp_c = np.where(expired_c, exp_c + rng.integers(36, 49, c), exp_c)
    refresh_c = np.where(
        expired_c & (rng.random(c) < UPDATER_SHARE),
        first_at[np.cumsum(counts) - counts]
        + (2 * _NS_PER_HOUR + rng.exponential(5.0, c) * _NS_PER_DAY).astype(np.int64),
        _NAT,
    )
    inv["card_exp_month"], inv["card_exp_year"] = _month_to_my(np.repeat(exp_c, counts))
    inv["new_card_exp_month"], inv["new_card_exp_year"] = _month_to_my(np.repeat(new_exp_c, counts))
    inv["updater_refresh_at"] = np.repeat(refresh_c, counts)
    inv["issuer_effect"] = inv["issuer_effect"] + rng.normal(0.0, 0.2, n)

    inv["merchant_max_retries"] = merchants.max_retries[merchant]
    inv["merchant_window_days"] = merchants.window_days[merchant]
    inv["merchant_retries_hard"] = merchants.retries_hard[merchant]
    inv["merchant_honors_mac"] = merchants.honors_mac[merchant]

    invoice_id = _hex_ids(rng, "in_", n)
    df = pd.DataFrame({k: v for k, v in inv.items() if k != "root"})
    df.insert(0, "invoice_id", invoice_id)
    df["root_cause"] = np.array(ROOT_CAUSES, dtype=object)[inv["root"]]
    for col in ("customer_created_at", "first_attempt_at", "updater_refresh_at"):
        ns = df[col].to_numpy(np.int64)
        ns = np.where(ns == _NAT, ns, ns - ns % 1_000_000_000)  # whole seconds, like processors
        df[col] = pd.to_datetime(ns.view("M8[ns]")).tz_localize("UTC")
    df["merchant_id"] = "acct_" + df["merchant_id"].astype(str).str.zfill(3)
    df = df.sort_values(["first_attempt_at", "invoice_id"], kind="stable").set_index("invoice_id")
    return df


# ---------------------------------------------------------------------------------------------
# The legacy scheduler (behaviour policy) and the public entry point.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulationResult:
    """Attempts in contract §1 shape, plus the latent truth of every invoice."""

    attempts: pd.DataFrame  # contract §1 columns exactly, oldest first within invoice
    invoices: pd.DataFrame  # one row per invoice (index invoice_id): the latent truth


def _next_retry(rng: np.random.Generator, last_ns: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Legacy retry time: a per-merchant mixture of delays from 1 hour to ~10 days, any hour."""
    n = last_ns.size
    comp = (rng.random(n)[:, None] > np.cumsum(weights, axis=1)).sum(axis=1).clip(max=4)
    hours = np.select(
        [comp == 0, comp == 1, comp == 4],
        [np.exp(rng.uniform(0.0, np.log(6.0), n)), rng.uniform(20.0, 28.0, n), rng.uniform(1.0, 240.0, n)],
        0.0,
    )
    # Day-based components land at any time of day: spread over the whole local day.
    days = np.where(comp == 2, rng.integers(2, 5, n), rng.integers(5, 11, n))
    by_day = (last_ns // _NS_PER_DAY + days) * _NS_PER_DAY + (rng.random(n) * _NS_PER_DAY).astype(np.int64)
    nxt = np.where((comp == 2) | (comp == 3), by_day, last_ns + (hours * _NS_PER_HOUR).astype(np.int64))
    nxt = np.maximum(nxt, last_ns + _NS_PER_HOUR)
    return nxt - nxt % 1_000_000_000  # processors report whole seconds


def _merchant_stops(code: np.ndarray, mac: np.ndarray, retries_hard: np.ndarray, honors_mac: np.ndarray) -> np.ndarray:
    """Whether the legacy scheduler gives up after this decline."""
    hard = _isin(code, _HARD_SET) & ~retries_hard
    return hard | (_isin(mac, _MAC_STOP) & honors_mac)


def _run_legacy(world: World, rng: np.random.Generator, delay_weights: np.ndarray) -> dict[str, np.ndarray]:
    """Replay the legacy scheduler round by round; returns attempt columns (positions, times, codes)."""
    inv = world.invoices
    n = len(inv)
    first = world.first_attempts()
    last_ns = _utc_ns(first["attempted_at"])
    window_end = last_ns + inv["merchant_window_days"].to_numpy(np.int64) * _NS_PER_DAY
    max_retries = inv["merchant_max_retries"].to_numpy(np.int64)
    retries_hard = inv["merchant_retries_hard"].to_numpy(bool)
    honors_mac = inv["merchant_honors_mac"].to_numpy(bool)
    last_code = _as_obj(first["decline_code"], n)
    last_mac = _as_obj(first["merchant_advice_code"], n)
    attempts = np.ones(n, dtype=np.int64)
    done = _merchant_stops(last_code, last_mac, retries_hard, honors_mac)
    pos_all = np.arange(n)
    rows = {
        "pos": [pos_all],
        "at": [last_ns.copy()],
        "number": [attempts.copy()],
        "succeeded": [np.zeros(n, dtype=bool)],
        "decline_code": [last_code.copy()],
        "network_decline_code": [_as_obj(first["network_decline_code"], n)],
        "merchant_advice_code": [last_mac.copy()],
    }
    while True:
        act = pos_all[~done & (attempts - 1 < max_retries)]
        if act.size == 0:
            break
        nxt = _next_retry(rng, last_ns[act], delay_weights[act])
        wait = _mac_wait_hours(last_mac[act])
        nxt = np.where(honors_mac[act], np.maximum(nxt, last_ns[act] + (wait * _NS_PER_HOUR).astype(np.int64)), nxt)
        late = nxt > window_end[act]
        done[act[late]] = True
        act, nxt = act[~late], nxt[~late]
        if act.size == 0:
            break
        p = world._probability(act, nxt, attempts[act], last_ns[act], last_code[act], last_mac[act])
        ok = rng.random(act.size) < p
        fail = act[~ok]
        code, ndc, mac = world._decline(fail, nxt[~ok], last_code[fail], last_ns[fail], rng)
        k = act.size
        full_code, full_ndc, full_mac = (np.full(k, None, dtype=object) for _ in range(3))
        full_code[~ok], full_ndc[~ok], full_mac[~ok] = code, ndc, mac
        attempts[act] += 1
        for key, value in (
            ("pos", act),
            ("at", nxt),
            ("number", attempts[act].copy()),
            ("succeeded", ok),
            ("decline_code", full_code),
            ("network_decline_code", full_ndc),
            ("merchant_advice_code", full_mac),
        ):
            rows[key].append(value)
        last_ns[act] = nxt
        done[act[ok]] = True
        last_code[fail], last_mac[fail] = code, mac
        done[fail] |= _merchant_stops(code, mac, retries_hard[fail], honors_mac[fail])
    return {k: np.concatenate(v) for k, v in rows.items()}


def _attempts_frame(world: World, rows: dict[str, np.ndarray]) -> pd.DataFrame:
    """Contract §1 attempts from the scheduler's rows, oldest first within invoice."""
    inv = world.invoices
    order = np.lexsort((rows["number"], rows["pos"]))  # invoices are already in time order
    rows = {k: v[order] for k, v in rows.items()}
    pos = rows["pos"]
    exp = world._card_exp(pos, rows["at"])
    invoice_id = inv.index.to_numpy(object)[pos]

    def col(name: str) -> np.ndarray:
        return inv[name].to_numpy()[pos]

    frame = pd.DataFrame(
        {
            "invoice_id": invoice_id,
            "customer_id": col("customer_id"),
            "attempt_id": pd.Series(invoice_id).str.replace("in_", "py_", regex=False)
            + "_"
            + pd.Series(rows["number"]).astype(str),
            "attempted_at": pd.to_datetime(rows["at"].view("M8[ns]")).tz_localize("UTC"),
            "amount": col("amount").astype(np.int64),
            "currency": col("currency"),
            "succeeded": rows["succeeded"].astype(bool),
            "decline_code": rows["decline_code"],
            "network_decline_code": rows["network_decline_code"],
            "merchant_advice_code": rows["merchant_advice_code"],
            "card_brand": col("card_brand"),
            "card_funding": col("card_funding"),
            "card_country": col("card_country"),
            "customer_timezone": col("customer_timezone"),
            "card_exp_month": exp[:, 0].astype(np.int64),
            "card_exp_year": exp[:, 1].astype(np.int64),
            "card_fingerprint": col("card_fingerprint"),
            "billing_interval": col("billing_interval"),
            "customer_created_at": inv["customer_created_at"].iloc[pos].to_numpy(),
        }
    )
    for name in _STRING_COLUMNS:  # pandas' string dtype, missing values as NA
        frame[name] = frame[name].astype("str").where(frame[name].notna(), None)
    frame["customer_created_at"] = pd.to_datetime(frame["customer_created_at"], utc=True)
    return frame[list(ATTEMPT_COLUMNS)]


def _condition_on_failure(invoices: pd.DataFrame, first_ns: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Keep short-of-funds causes where the first charge would plausibly fail.

    Only failed charges enter the data, so an insufficient-funds failure right after payday is
    rare: with the probability the charge would have gone through, the decline is re-labelled an
    issuer decision (do-not-honor or generic) instead. This puts NSF first failures late in the
    pay period, as in real data.
    """
    world = World(invoices)
    pos = np.arange(len(invoices))
    none = np.full(pos.size, None, dtype=object)
    p = world._probability(pos, first_ns, np.ones(pos.size, dtype=np.int64), np.full(pos.size, _NAT), none, none)
    flip = (world._root == _NSF) & (rng.random(pos.size) < p)
    other = np.where(rng.random(pos.size) < 0.75, ROOT_CAUSES[_DNH], ROOT_CAUSES[_GEN])
    out = invoices.copy()
    out["root_cause"] = np.where(flip, other, out["root_cause"].to_numpy(object))
    return out


def simulate(n_invoices: int, seed: int, start: str = "2025-01-01", days: int = 365) -> SimulationResult:
    """Simulate `n_invoices` failed renewals in [start, start + days) and the legacy retries."""
    if n_invoices < 1:
        raise ValueError("n_invoices must be at least 1")
    rng = np.random.default_rng(seed)
    merchants = _draw_merchants(rng)
    invoices = _draw_invoices(n_invoices, rng, start, days, merchants)
    first_ns = _utc_ns(invoices["first_attempt_at"])
    pos = np.arange(len(invoices))
    invoices = _condition_on_failure(invoices, first_ns, rng)
    # The first charge's decline comes from the same World as every retry.
    world = World(invoices)
    code, ndc, mac = world._decline(pos, first_ns, np.full(pos.size, None, dtype=object), np.full(pos.size, _NAT), rng)
    invoices["first_decline_code"] = code
    invoices["first_network_decline_code"] = ndc
    invoices["first_merchant_advice_code"] = mac
    world = World(invoices)
    merchant = invoices["merchant_id"].str.slice(5).astype(int).to_numpy()
    rows = _run_legacy(world, rng, merchants.delay_weights[merchant])
    return SimulationResult(attempts=_attempts_frame(world, rows), invoices=invoices)
