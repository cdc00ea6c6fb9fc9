"""Small parts of the policy: the projected retry matrix and the reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.candidates import FEATURE_COLUMNS, project_retries
from serving.policy.reasons import model_reasons


def feature_frame(n: int) -> pd.DataFrame:
    frame = pd.DataFrame(np.zeros((n, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS))
    frame["retry_number"] = 1.0
    frame["hours_since_last_attempt"] = np.arange(n, dtype=np.float64) + 24
    frame["n_insufficient_funds"] = 1.0
    return frame


def stack(frame: pd.DataFrame, retries: int, last_category: str) -> pd.DataFrame:
    """Copy k of every row scored as the k-th retry from now."""
    n = len(frame)
    rows = np.tile(np.arange(n), retries)
    k = np.repeat(np.arange(retries), n)
    return project_retries(frame.iloc[rows], k, 24.0, np.array([last_category] * len(rows), dtype=object))


def test_stacked_copies_advance_the_retry_number() -> None:
    stacked = stack(feature_frame(3), retries=3, last_category="insufficient_funds")
    assert stacked.shape == (9, len(FEATURE_COLUMNS))
    assert stacked["retry_number"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert stacked["n_insufficient_funds"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    # Copy 0 keeps the real wait; later copies assume the spacing (these slots are close).
    assert stacked["hours_since_last_attempt"].tolist() == [24, 25, 26, 24, 24, 24, 24, 24, 24]
    assert (stacked["n_do_not_honor"] == 0).all()


def test_far_slots_split_the_wait_evenly_between_planned_retries() -> None:
    frame = feature_frame(2)
    frame["hours_since_last_attempt"] = [240.0, 30.0]  # 10 days and 30 hours after the last attempt
    stacked = stack(frame, retries=3, last_category="insufficient_funds")
    # k planned failures before the slot: k + 1 equal gaps, never below the 24 h spacing.
    assert stacked["hours_since_last_attempt"].tolist() == [240, 30, 120, 24, 80, 24]


def test_other_declines_leave_the_counters_alone() -> None:
    stacked = stack(feature_frame(2), retries=2, last_category="generic")
    assert (stacked["n_insufficient_funds"] == 1).all()


def test_model_reasons_group_rank_and_drop_negatives() -> None:
    names = list(FEATURE_COLUMNS)
    contributions = np.zeros(len(names) + 1)
    contributions[names.index("local_day")] = 0.2
    contributions[names.index("days_to_month_end")] = 0.2  # same idea as local_day: summed
    contributions[names.index("local_hour")] = 0.3
    contributions[names.index("card_brand")] = 0.05
    contributions[names.index("retry_number")] = -0.5
    contributions[-1] = 5.0  # the bias is never a reason
    row = pd.Series({"local_hour": 23.0, "local_weekday": 0.0, "local_day": 2.0})
    found = model_reasons(contributions, names, row)
    assert found[0].startswith("success is higher at this point of the customer's month (day 2")
    assert found[1] == "customers of this card succeed more at this local hour (23:00)"
    assert "cards like this one" in found[2]
    assert len(found) == 3
    assert model_reasons(-np.abs(contributions), names, row) == []
