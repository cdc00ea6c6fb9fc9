"""`plan_retries` on hand-made probability arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.policy.planner import Plan, plan_retries, suffix_argmax

NOW = pd.Timestamp("2026-11-01T00:00:00Z")


def hourly(n: int, start_hour: int = 1) -> pd.DatetimeIndex:
    return pd.date_range(NOW + pd.Timedelta(hours=start_hour), periods=n, freq="h", tz="UTC")


def plan(
    probs: list[list[float]], times: pd.DatetimeIndex, spacing: float = 0, cost: float = 0.0, discount: float = 0.0
) -> Plan:
    return plan_retries(times, np.array(probs, dtype=np.float64), 100.0, spacing, cost, discount, NOW)


def test_picks_the_later_higher_slot_when_worth_it() -> None:
    result = plan([[0.1, 0.1, 0.5]], hourly(3), discount=0.005)
    assert result.slots == (2,)
    assert result.probabilities == (0.5,)


def test_waiting_loses_to_the_discount_when_the_gain_is_tiny() -> None:
    times = pd.DatetimeIndex([NOW + pd.Timedelta(hours=1), NOW + pd.Timedelta(days=30)])
    result = plan([[0.40, 0.41]], times, discount=0.01)
    assert result.slots == (0,)


def test_prefers_the_earlier_slot_on_ties() -> None:
    assert plan([[0.3, 0.3, 0.3]], hourly(3)).slots == (0,)
    assert plan([[0.1, 0.3, 0.3]], hourly(3)).slots == (1,)


def test_respects_spacing() -> None:
    probs = [[0.5] * 48, [0.5] * 48, [0.5] * 48]
    result = plan(probs, hourly(48), spacing=24)
    assert len(result.slots) == 2  # 47 hours of slots: two retries 24 h apart fit, not three
    gaps = np.diff([t.value for t in result.times]) / 3.6e12
    assert (gaps >= 24).all()


def test_spacing_moves_the_first_retry_to_make_room() -> None:
    # Retry 0 is good everywhere; retry 1 is only good at the last slot. With 24 h spacing,
    # the first retry must be early enough to leave room for it.
    n = 30
    first = [0.3] * n
    second = [0.01] * (n - 1) + [0.9]
    result = plan([first, second], hourly(n), spacing=24, cost=1.0)
    assert len(result.slots) == 2
    assert result.slots[1] == n - 1
    assert result.times[1] - result.times[0] >= pd.Timedelta(hours=24)


def test_stops_when_no_slot_beats_the_cost() -> None:
    result = plan([[0.01, 0.02, 0.015]], hourly(3), cost=5.0)
    assert result.slots == ()
    assert result.value <= 0
    assert result.best_slot == 1
    assert result.total_probability == 0.0


def test_drops_later_retries_not_worth_their_cost() -> None:
    result = plan([[0.5, 0.5, 0.5], [0.01, 0.01, 0.01]], hourly(3), spacing=1, cost=5.0)
    assert result.slots == (0,)


def test_budget_is_respected() -> None:
    budget = 3
    result = plan([[0.2] * 100] * budget, hourly(100), spacing=1)
    assert len(result.slots) == budget
    assert result.slots == (0, 1, 2)


def test_total_probability() -> None:
    result = plan([[0.5, 0.5], [0.5, 0.5]], hourly(2), spacing=1)
    assert result.probabilities == (0.5, 0.5)
    assert result.total_probability == pytest.approx(0.75)


def test_empty_inputs_plan_nothing() -> None:
    assert plan([[]], hourly(0)).slots == ()
    assert plan_retries(hourly(3), np.zeros((0, 3)), 100.0, 24, 0.0, 0.0, NOW).slots == ()


def test_schedule_is_optimal_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    times = hourly(8)
    for _ in range(50):
        probs = rng.random((2, 8))
        result = plan_retries(times, probs, 1.0, 2, 0.1, 0.0, NOW)
        best = 0.0
        for i in range(8):
            alone = probs[0, i] - 0.1
            best = max(best, alone)
            for j in range(i + 2, 8):
                follow = probs[1, j] - 0.1
                best = max(best, alone + (1 - probs[0, i]) * max(follow, 0.0))
        if best > 0:
            assert result.value == pytest.approx(best)
        else:
            assert result.slots == ()


def test_suffix_argmax_prefers_earliest() -> None:
    best, index = suffix_argmax(np.array([1.0, 3.0, 2.0, 3.0, 0.0]))
    assert best.tolist() == [3.0, 3.0, 3.0, 3.0, 0.0]
    assert index.tolist() == [1, 1, 3, 3, 4]
