"""The rules table: well-formed data, and `evaluate_rules` on tiny attempt frames."""

from __future__ import annotations

import pandas as pd
import pytest

from serving.policy.rules import RULES, Effect, evaluate_rules
from serving.settings import Settings

SETTINGS = Settings()


def attempts(*rows: tuple[str, str, str | None, str | None]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["attempted_at", "decline_code", "network_decline_code", "merchant_advice_code"])
    frame["attempted_at"] = pd.to_datetime(frame["attempted_at"], utc=True)
    return frame


def test_every_rule_cites_a_source_and_has_its_numbers() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))
    for rule in RULES:
        assert rule.source and rule.reason
        if rule.effect is Effect.DELAY:
            assert rule.hours is not None
        if rule.effect in (Effect.SPACING, Effect.CAP):
            assert rule.setting in Settings.model_fields
        if rule.effect is Effect.CAP:
            assert rule.period_days is not None


@pytest.mark.parametrize(
    ("advice", "hours"), [("24", 1), ("25", 24), ("26", 48), ("27", 96), ("28", 144), ("29", 192), ("30", 240)]
)
def test_mastercard_retry_after_codes(advice: str, hours: float) -> None:
    verdict = evaluate_rules(attempts(("2026-11-01T14:00Z", "do_not_honor", "05", advice)), "mastercard", SETTINGS)
    expected = pd.Timestamp("2026-11-01T14:00Z") + pd.Timedelta(hours=max(hours, SETTINGS.min_retry_spacing_hours))
    assert verdict.not_before == expected
    assert not verdict.stops


def test_transient_error_shortens_the_spacing() -> None:
    verdict = evaluate_rules(attempts(("2026-11-01T14:00Z", "processing_error", None, None)), "visa", SETTINGS)
    assert verdict.spacing_hours == SETTINGS.transient_retry_spacing_hours
    assert verdict.not_before == pd.Timestamp("2026-11-01T15:00Z")


def test_transient_error_with_a_mastercard_delay_waits_for_the_delay() -> None:
    verdict = evaluate_rules(attempts(("2026-11-01T14:00Z", "try_again_later", None, "26")), "mastercard", SETTINGS)
    assert verdict.not_before == pd.Timestamp("2026-11-03T14:00Z")


def test_only_the_last_decline_sets_the_new_card_advice() -> None:
    history = attempts(
        ("2026-11-01T14:00Z", "expired_card", None, None), ("2026-11-03T14:00Z", "insufficient_funds", None, None)
    )
    verdict = evaluate_rules(history, "visa", SETTINGS)
    assert not verdict.stops and verdict.next_step is None


def test_a_never_retry_rule_wins_over_the_new_card_advice() -> None:
    history = attempts(
        ("2026-11-01T14:00Z", "stolen_card", None, None), ("2026-11-03T14:00Z", "expired_card", None, None)
    )
    verdict = evaluate_rules(history, "visa", SETTINGS)
    assert verdict.stops[0].rule.name == "hard_decline"
    assert verdict.next_step == "request_new_payment_method"


def test_single_digit_network_codes_are_padded() -> None:
    verdict = evaluate_rules(attempts(("2026-11-01T14:00Z", "do_not_honor", "4", None)), "VISA", SETTINGS)
    assert [f.rule.name for f in verdict.stops] == ["visa_category_1"]


def test_mastercard_daily_cap_delays_the_next_retry() -> None:
    start = pd.Timestamp("2026-11-01T00:00Z")
    rows = [((start + pd.Timedelta(hours=2 * i)).isoformat(), "processing_error", None, None) for i in range(10)]
    verdict = evaluate_rules(attempts(*rows), "mastercard", SETTINGS)
    # Ten declines within 18 h: the eleventh must wait until the first is 24 h old.
    assert verdict.not_before == start + pd.Timedelta(hours=24)
    assert any(f.rule.name == "mastercard_declines_24h" for f in verdict.firings)
