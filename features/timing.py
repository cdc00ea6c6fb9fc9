"""Calendar features in the customer's local time (DST-correct).

The model learns *when* money arrives from these positions in the local calendar; no payday
calendar is assumed. The anchors (month end, the 15th, the last business day, Friday) are the
common ones payrolls use; which of them matter, and for whom, is left to the data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TIMING_FEATURES: tuple[str, ...] = (
    "local_hour",
    "local_weekday",
    "local_day",
    "days_to_month_end",
    "days_since_last_business_day",
    "days_since_15th",
    "days_since_friday",
)


def to_local_wall_time(at: pd.Series, timezones: pd.Series) -> pd.Series:
    """Naive local wall-clock time of each UTC instant in its own IANA zone."""
    at = pd.to_datetime(at, utc=True)
    local = pd.Series(pd.NaT, index=at.index, dtype="datetime64[ns]")
    zones = timezones.astype("string").fillna("UTC")
    for zone, index in zones.groupby(zones, sort=False).groups.items():
        converted = at.loc[index].dt.tz_convert(str(zone)).dt.tz_localize(None)
        local.loc[index] = converted.astype("datetime64[ns]")
    return local


def _last_business_day(month_start: pd.Series) -> pd.Series:
    """The last Monday–Friday of the month that starts at each `month_start`."""
    month_end = month_start + pd.offsets.MonthEnd(0)
    weekday = month_end.dt.day_of_week
    back = np.where(weekday == 5, 1, np.where(weekday == 6, 2, 0))
    return month_end - pd.to_timedelta(back, unit="D")


def local_time_features(at: pd.Series, timezones: pd.Series) -> pd.DataFrame:
    """Hour, weekday, day of month and distances to common pay anchors, in local time."""
    local = to_local_wall_time(at, timezones)
    day = local.dt.normalize()
    dom = local.dt.day
    days_in_month = local.dt.days_in_month
    month_start = day - pd.to_timedelta(dom - 1, unit="D")
    prev_month_start = month_start - pd.offsets.MonthBegin(1)

    lbd_this = _last_business_day(month_start)
    lbd_prev = _last_business_day(prev_month_start)
    since_lbd = np.where(day >= lbd_this, (day - lbd_this).dt.days, (day - lbd_prev).dt.days)

    prev_days_in_month = prev_month_start.dt.days_in_month
    since_15th = np.where(dom >= 15, dom - 15, dom + prev_days_in_month - 15)

    weekday = local.dt.day_of_week
    return pd.DataFrame(
        {
            "local_hour": local.dt.hour.astype(np.float64),
            "local_weekday": weekday.astype(np.float64),
            "local_day": dom.astype(np.float64),
            "days_to_month_end": (days_in_month - dom).astype(np.float64),
            "days_since_last_business_day": np.asarray(since_lbd, dtype=np.float64),
            "days_since_15th": np.asarray(since_15th, dtype=np.float64),
            "days_since_friday": ((weekday - 4) % 7).astype(np.float64),
        },
        index=at.index,
    )
