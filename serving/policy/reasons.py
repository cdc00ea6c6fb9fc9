"""Reasons in billing words: why this time, how likely, and which rules shaped the decision.

The model's part comes from its own per-feature contributions at the chosen slot; a small table
turns feature names into phrases a billing team reads without knowing the features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Feature → the idea it stands for; features of one idea are summed before ranking.
FEATURE_GROUPS: dict[str, str] = {
    "local_hour": "hour",
    "local_weekday": "weekday",
    "days_since_friday": "weekday",
    "local_day": "month",
    "days_to_month_end": "month",
    "days_since_last_business_day": "month",
    "days_since_15th": "month",
    "retry_number": "retries",
    "hours_since_last_attempt": "wait",
    "hours_since_first_attempt": "age",
    "n_insufficient_funds": "history",
    "n_do_not_honor": "history",
    "visa_category": "decline",
    "last_decline_code": "decline",
    "last_decline_category": "decline",
    "first_decline_category": "decline",
    "last_advice_code": "decline",
    "months_to_expiry": "expiry",
    "amount_usd_log": "amount",
    "tenure_days": "tenure",
    "card_brand": "card",
    "card_funding": "card",
    "card_country": "card",
    "billing_interval": "interval",
    "customer_prior_failed_invoices": "customer_record",
    "customer_prior_recoveries": "customer_record",
    "days_from_funds_back_day_of_month": "customer_calendar",
    "days_from_funds_short_day_of_month": "customer_calendar",
    "days_into_funds_back_week": "customer_calendar",
    "days_into_funds_back_fortnight": "customer_calendar",
}

# The idea → a phrase; {hour}, {weekday} and {day} are the chosen slot's local calendar.
GROUP_PHRASES: dict[str, str] = {
    "hour": "customers of this card succeed more at this local hour ({hour})",
    "weekday": "success is higher on this day of the customer's week ({weekday})",
    "month": "success is higher at this point of the customer's month (day {day}, near a common payday)",
    "retries": "few retries so far: early retries of an invoice succeed more often",
    "wait": "enough time has passed since the last decline for the balance to change",
    "age": "invoices this long after their first failure still recover well",
    "history": "this invoice's decline history points to a temporary shortfall",
    "decline": "this kind of decline often recovers on a later retry",
    "expiry": "the card is far from its expiry date",
    "amount": "invoices of this amount recover well",
    "tenure": "long-standing customers recover well",
    "card": "cards like this one (brand, funding, country) recover well",
    "interval": "invoices on this billing interval recover well",
    "customer_record": "this customer's record of earlier failed payments points to a recovery",
    "customer_calendar": "this customer's money came back at this point of their pay cycle after an earlier shortfall",
}

MIN_CONTRIBUTION = 0.01  # log-odds; smaller pushes are noise, not a reason


def utc_text(at: pd.Timestamp) -> str:
    """An instant as the API writes it (ISO 8601, UTC, `Z`)."""
    return at.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _slot_values(row: pd.Series) -> dict[str, str]:
    """The chosen slot's local calendar, for the phrases."""
    hour = row.get("local_hour", math.nan)
    weekday = row.get("local_weekday", math.nan)
    day = row.get("local_day", math.nan)
    return {
        "hour": "?" if pd.isna(hour) else f"{int(hour):02d}:00",
        "weekday": "?" if pd.isna(weekday) else WEEKDAYS[int(weekday) % 7],
        "day": "?" if pd.isna(day) else str(int(day)),
    }


def model_reasons(
    contributions: npt.NDArray[np.float64], feature_names: Sequence[str], row: pd.Series, top: int = 3
) -> list[str]:
    """The `top` ideas that push the chosen slot's success up most, in billing words."""
    totals: dict[str, float] = {}
    for name, value in zip(feature_names, contributions, strict=False):  # last column (bias) unpaired
        group = FEATURE_GROUPS.get(name)
        if group is not None and np.isfinite(value):
            totals[group] = totals.get(group, 0.0) + float(value)
    ranked = sorted((g for g, v in totals.items() if v > MIN_CONTRIBUTION), key=lambda g: -totals[g])
    values = _slot_values(row)
    return [GROUP_PHRASES[g].format(**values) for g in ranked[:top]]


def search_reason(n_candidates: int, now: pd.Timestamp, window_end: pd.Timestamp) -> str:
    """How wide the search was."""
    days = (window_end - now) / pd.Timedelta(days=1)
    return f"best of {n_candidates} candidate times over the next {days:.1f} days"


def probability_reason(first: float, total: float, retries: int) -> str:
    """The numbers behind the decision."""
    if retries == 1:
        return f"success probability {first:.0%} for this retry, the only one planned"
    return f"success probability {first:.0%} for this retry; {total:.0%} that the {retries} planned retries recover the invoice"


def budget_reason(made: int, allowed: int) -> str:
    """Why a decision stopped on the retry budget."""
    return f"retry budget spent: {made} of {allowed} allowed retries made"


def window_over_reason(window_end: pd.Timestamp) -> str:
    """Why a decision stopped on the window."""
    return f"the retry window ended at {utc_text(window_end)}"


def no_time_left_reason(earliest: pd.Timestamp, window_end: pd.Timestamp) -> str:
    """Why the rules leave no time in the window."""
    return f"no retry allowed before the window ends at {utc_text(window_end)}: the earliest allowed is {utc_text(earliest)}"


def not_worth_reason(probability: float, at: pd.Timestamp, cost: float) -> str:
    """Why the planner found nothing worth an attempt."""
    return (
        f"no slot worth an attempt: the best retry ({utc_text(at)}, success probability {probability:.1%}) "
        f"is worth less than an attempt's cost ({cost:.1%} of the amount)"
    )


def window_cut_reason(max_days: float) -> str:
    """Why the window is shorter than asked."""
    return f"the retry window was cut to {max_days:g} days after the first failure (the longest allowed)"


def fixed_schedule_reason(arm: str, days: tuple[float, ...]) -> str:
    """Why an invoice follows the fixed schedule: the control group, or the fallback without a model."""
    offsets = ", ".join(f"+{d:g}" for d in days)
    schedule = f"fixed schedule ({offsets} days after the first failure)"
    if arm == "fallback":
        return f"fallback mode: no model can be served, so the {schedule} applies under the same rules"
    return f"control group: {schedule}, kept to measure the learned policy's uplift"


def card_slots_taken_reason(others: int, earliest: pd.Timestamp, last: pd.Timestamp) -> str:
    """Every allowed time is next to a retry another invoice on the card already holds."""
    return (
        f"the card's other {others} planned retr{'y' if others == 1 else 'ies'} hold every allowed time "
        f"from {utc_text(earliest)} to {utc_text(last)}: retries of one card are planned apart"
    )
