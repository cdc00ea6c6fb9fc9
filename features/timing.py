"""Calendar features in the customer's local time (DST-correct).

The model learns *when* money arrives from these positions in the local calendar; no payday
calendar is assumed. The anchors (month end, the 15th, the last business day, Friday) are the
common ones payrolls use; which of them matter, and for whom, is left to the data.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def to_local_wall_time(at: pd.Series, timezones: pd.Series) -> np.ndarray:
    """Naive local wall-clock time (datetime64[ns]) of each UTC instant in its own IANA zone."""
    instants = pd.DatetimeIndex(pd.to_datetime(at, utc=True)).as_unit("ns")
    zones = timezones.astype("string").fillna("UTC").to_numpy(dtype=object)
    codes, uniques = pd.factorize(zones)
    return local_wall_time(instants.asi8, codes, uniques)


def local_wall_time(at_ns: np.ndarray, zone_codes: np.ndarray, zones: Sequence[object] | np.ndarray) -> np.ndarray:
    """Naive local wall-clock time (datetime64[ns]) of UTC instants (int64 ns), zone `zones[code]` per row."""
    instants = pd.DatetimeIndex(np.asarray(at_ns, dtype=np.int64).view("datetime64[ns]"), tz="UTC")
    local = np.empty(len(instants), dtype="datetime64[ns]")
    if len(zones) == 1 and len(instants) and bool(np.all(zone_codes == 0)):
        return instants.tz_convert(str(zones[0])).tz_localize(None).to_numpy()
    for code, zone in enumerate(zones):
        rows = zone_codes == code
        # tz_convert applies each instant's own offset, so DST changes inside a window are exact.
        local[rows] = instants[rows].tz_convert(str(zone)).tz_localize(None).to_numpy()
    return local


def _weekday(days: np.ndarray) -> np.ndarray:
    """Monday = 0 … Sunday = 6 of datetime64[D] values (1970-01-01 was a Thursday)."""
    return (days.astype(np.int64) + 3) % 7


def _last_business_day(month: np.ndarray) -> np.ndarray:
    """The last Monday–Friday (datetime64[D]) of each month (datetime64[M])."""
    month_end = (month + 1).astype("datetime64[D]") - 1
    weekday = _weekday(month_end)
    back = np.where(weekday == 5, 1, np.where(weekday == 6, 2, 0))
    return month_end - back


def local_time_features(at: pd.Series, timezones: pd.Series) -> pd.DataFrame:
    """Hour, weekday, day of month and distances to common pay anchors, in local time."""
    return pd.DataFrame(calendar_features(to_local_wall_time(at, timezones)), index=at.index)


def calendar_features(local: np.ndarray) -> dict[str, np.ndarray]:
    """`TIMING_FEATURES` (float64 arrays) of naive local wall-clock times (datetime64[ns])."""
    day = local.astype("datetime64[D]")
    month = local.astype("datetime64[M]")
    dom = (day - month.astype("datetime64[D]")).astype(np.int64) + 1
    days_in_month = ((month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")).astype(np.int64)
    hour = (local - day).astype("timedelta64[h]").astype(np.int64)

    lbd_this = _last_business_day(month)
    lbd_prev = _last_business_day(month - 1)
    since_lbd = np.where(day >= lbd_this, day - lbd_this, day - lbd_prev).astype(np.int64)
    prev_days_in_month = (month.astype("datetime64[D]") - (month - 1).astype("datetime64[D]")).astype(np.int64)
    since_15th = np.where(dom >= 15, dom - 15, dom + prev_days_in_month - 15)
    weekday = _weekday(day)
    return {
        "local_hour": hour.astype(np.float64),
        "local_weekday": weekday.astype(np.float64),
        "local_day": dom.astype(np.float64),
        "days_to_month_end": (days_in_month - dom).astype(np.float64),
        "days_since_last_business_day": since_lbd.astype(np.float64),
        "days_since_15th": since_15th.astype(np.float64),
        "days_since_friday": ((weekday - 4) % 7).astype(np.float64),
    }
