"""Unit tests of the feature library on tiny frames: taxonomy, local time (DST), point-in-time history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.candidates import (
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    VOCABULARIES,
    build_retry_features,
    candidate_times,
    encode_categorical,
    retry_training_rows,
)
from features.history import history_at
from features.taxonomy import decline_category, is_hard_decline, needs_new_card, visa_category
from features.timing import local_time_features


def utc(*values: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values), utc=True))


def attempts_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "invoice_id": ["a", "a", "a", "b"],
            "attempted_at": utc("2026-03-01T10:00Z", "2026-03-03T10:00Z", "2026-03-05T10:00Z", "2026-03-05T00:00Z"),
            "decline_code": ["insufficient_funds", "do_not_honor", None, "expired_card"],
            "network_decline_code": ["51", "05", None, "54"],
            "merchant_advice_code": [None, "25", None, None],
            "succeeded": [False, False, True, False],
        }
    )


def context(invoice: str, times: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "invoice_id": invoice,
            "candidate_at": times.to_numpy(),
            "amount": 4900,
            "currency": "usd",
            "card_brand": "visa",
            "card_funding": "debit",
            "card_country": "US",
            "card_exp_month": 4,
            "card_exp_year": 2027,
            "customer_timezone": "America/New_York",
        }
    )


class TestTaxonomy:
    def test_categories_and_unknown_codes(self) -> None:
        codes = pd.Series(["insufficient_funds", "Stolen_Card ", "brand_new_code", None, "expired_card"])
        assert decline_category(codes).tolist() == ["insufficient_funds", "hard", "other", pd.NA, "needs_new_card"]
        assert is_hard_decline(codes).tolist() == [False, True, False, False, False]
        assert needs_new_card(codes).tolist() == [False, False, False, False, True]

    def test_visa_categories(self) -> None:
        codes = pd.Series(["43", "51", "54", "05", "5", None, "R0"])
        assert visa_category(codes).tolist() == [1, 2, 3, 4, 4, 0, 1]


class TestLocalTime:
    def test_hour_follows_dst_in_new_york(self) -> None:
        # 2026-03-08 is the US spring-forward day: 07:00Z is 02:00 EST the day before, 03:00 EDT after.
        at = utc("2026-03-07T07:00Z", "2026-03-08T07:00Z", "2026-11-01T05:30Z", "2026-11-01T06:30Z")
        frame = local_time_features(at, pd.Series(["America/New_York"] * 4))
        assert frame["local_hour"].tolist() == [2, 3, 1, 1]
        assert frame["local_day"].tolist() == [7, 8, 1, 1]

    def test_day_crosses_midnight_in_local_zone(self) -> None:
        at = utc("2026-01-31T20:00Z", "2026-01-31T20:00Z")
        frame = local_time_features(at, pd.Series(["Asia/Tokyo", "America/Los_Angeles"]))
        assert frame["local_day"].tolist() == [1, 31]
        assert frame["days_to_month_end"].tolist() == [27, 0]  # Feb 2026 has 28 days

    def test_pay_anchor_distances(self) -> None:
        # Friday 2026-07-31 is July's last business day; Monday 2026-08-03 is 3 days after it.
        at = utc("2026-07-31T12:00Z", "2026-08-03T12:00Z", "2026-08-16T12:00Z", "2026-08-02T12:00Z")
        frame = local_time_features(at, pd.Series(["UTC"] * 4))
        assert frame["days_since_last_business_day"].tolist() == [0, 3, 16, 2]
        assert frame["days_since_15th"].tolist() == [16, 19, 1, 18]
        assert frame["days_since_friday"].tolist() == [0, 3, 2, 2]

    def test_saturday_month_end_moves_business_day_back(self) -> None:
        # 2026-10-31 is a Saturday: the last business day is Friday the 30th.
        frame = local_time_features(utc("2026-10-31T12:00Z"), pd.Series(["UTC"]))
        assert frame["days_since_last_business_day"].tolist() == [1]


class TestHistory:
    def test_point_in_time_excludes_same_instant_and_later(self) -> None:
        attempts = attempts_frame()
        candidates = pd.DataFrame(
            {
                "invoice_id": ["a", "a", "a"],
                "candidate_at": utc("2026-03-02T10:00Z", "2026-03-03T10:00Z", "2026-03-04T10:00Z"),
            }
        )
        history = history_at(attempts, candidates)
        assert history["retry_number"].tolist() == [1, 1, 2]
        assert history["hours_since_last_attempt"].tolist() == [24, 48, 24]
        assert history["last_decline_code"].tolist() == ["insufficient_funds", "insufficient_funds", "do_not_honor"]
        assert history["last_advice_code"].tolist()[2] == "25"

    def test_other_invoices_do_not_leak(self) -> None:
        candidates = pd.DataFrame({"invoice_id": ["b"], "candidate_at": utc("2026-03-04T00:00Z")})
        history = history_at(attempts_frame(), candidates)
        assert np.isnan(history["retry_number"].iloc[0])


class TestCandidates:
    def test_candidate_times_are_whole_hours_after_start(self) -> None:
        times = candidate_times(pd.Timestamp("2026-03-01T10:05Z"), pd.Timestamp("2026-03-01T13:00Z"))
        assert [t.hour for t in times] == [11, 12, 13]
        assert len(candidate_times(pd.Timestamp("2026-03-01T10:05Z"), pd.Timestamp("2026-03-01T10:30Z"))) == 0

    def test_feature_matrix_shape_and_encoding(self) -> None:
        times = pd.Series(candidate_times(pd.Timestamp("2026-03-03T10:00Z"), pd.Timestamp("2026-03-17T10:00Z")))
        matrix = build_retry_features(attempts_frame(), context("a", times))
        assert list(matrix.columns) == list(FEATURE_COLUMNS)
        assert len(matrix) == 14 * 24
        assert matrix["card_country"].iloc[0] == VOCABULARIES["card_country"].index("US")
        assert (matrix["retry_number"] >= 2).all()

    def test_unknown_category_maps_to_other_and_missing_to_nan(self) -> None:
        codes = encode_categorical(pd.Series(["visa", "martian", None]), VOCABULARIES["card_brand"])
        assert codes[0] == 0
        assert codes[1] == VOCABULARIES["card_brand"].index("other")
        assert np.isnan(codes[2])

    def test_training_rows_are_retries_until_first_success(self) -> None:
        rows = retry_training_rows(attempts_frame())
        assert rows["candidate_at"].tolist() == list(utc("2026-03-03T10:00Z", "2026-03-05T10:00Z"))
        assert rows["succeeded"].tolist() == [False, True]

    def test_missing_optional_context_is_nan_not_an_error(self) -> None:
        candidates = pd.DataFrame(
            {"invoice_id": ["a"], "candidate_at": utc("2026-03-02T10:00Z"), "amount": [100], "currency": ["xyz"]}
        )
        matrix = build_retry_features(attempts_frame(), candidates)
        assert np.isnan(matrix["card_brand"].iloc[0])
        assert np.isnan(matrix["amount_usd_log"].iloc[0])
        assert matrix["local_hour"].iloc[0] == 10  # no zone and no country: UTC


@settings(max_examples=40, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=1, max_value=24 * 60), min_size=1, max_size=6, unique=True),
    probe=st.integers(min_value=0, max_value=24 * 70),
)
def test_history_sees_only_earlier_attempts(offsets: list[int], probe: int) -> None:
    """Property: retry_number equals the count of attempts strictly before the candidate."""
    start = pd.Timestamp("2026-01-01T00:00Z")
    times = sorted(start + pd.Timedelta(hours=h) for h in offsets)
    attempts = pd.DataFrame(
        {"invoice_id": "x", "attempted_at": times, "decline_code": "insufficient_funds", "succeeded": False}
    )
    at = start + pd.Timedelta(hours=probe)
    history = history_at(attempts, pd.DataFrame({"invoice_id": ["x"], "candidate_at": [at]}))
    expected = sum(t < at for t in times)
    got = history["retry_number"].iloc[0]
    assert (np.isnan(got) and expected == 0) or got == expected


@pytest.mark.parametrize("name", CATEGORICAL_FEATURES)
def test_vocabularies_have_no_duplicates(name: str) -> None:
    assert len(set(VOCABULARIES[name])) == len(VOCABULARIES[name])


def test_by_distinct_transforms_each_value_once_and_keeps_missing() -> None:
    from features.distinct import by_distinct

    seen: list[int] = []

    def upper(values: pd.Series) -> pd.Series:
        seen.append(len(values))
        return values.str.upper().fillna("never")  # a missing value must not reach the output

    values = pd.Series(["eur", None, "usd", "eur", "usd"], dtype="str", index=[5, 6, 7, 8, 9])
    got = by_distinct(values, upper)
    assert seen == [2]
    assert got.index.tolist() == [5, 6, 7, 8, 9]
    assert got.tolist()[0] == "EUR" and pd.isna(got.iloc[1]) and got.tolist()[2:] == ["USD", "EUR", "USD"]


def test_customer_history_groups_name_what_the_history_holds() -> None:
    from training.metrics import customer_history_groups

    features = pd.DataFrame(
        {
            "customer_prior_failed_invoices": [0.0, 2.0, 1.0, np.nan],
            "days_from_funds_back_day_of_month": [np.nan, np.nan, 3.5, np.nan],
        }
    )
    assert customer_history_groups(features).tolist() == [
        "no_earlier_failure",
        "earlier_failures_only",
        "funds_bracket",
        "no_earlier_failure",
    ]
