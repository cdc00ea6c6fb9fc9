"""The customer's earlier invoices as features: point-in-time history and the funds bracket's phases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.candidates import FEATURE_COLUMNS, build_retry_features, retry_training_rows
from features.customer import CUSTOMER_FEATURES, customer_history, funds_phase_features, invoice_events

UTC = "UTC"
NSF, DNH = "insufficient_funds", "do_not_honor"


def _attempts(rows: list[tuple[str, str, str, bool, str | None]]) -> pd.DataFrame:
    """Contract rows from (invoice, customer, time, succeeded, decline code)."""
    return pd.DataFrame(
        {
            "invoice_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "attempted_at": pd.to_datetime([r[2] for r in rows], utc=True),
            "succeeded": [r[3] for r in rows],
            "decline_code": [r[4] for r in rows],
        }
    )


HISTORY = _attempts(
    [
        ("in_1", "cus_a", "2026-01-05T10:00Z", False, NSF),
        ("in_1", "cus_a", "2026-01-07T10:00Z", False, NSF),  # still short on the 7th
        ("in_1", "cus_a", "2026-01-09T16:00Z", True, None),  # money back by the 9th
        ("in_2", "cus_a", "2026-02-05T10:00Z", False, DNH),
        ("in_2", "cus_a", "2026-02-06T10:00Z", True, None),  # recovered, but no funds decline: no bracket
        ("in_3", "cus_a", "2026-03-05T10:00Z", False, NSF),
        ("in_4", "cus_b", "2026-01-01T00:00Z", True, None),  # paid at once: not a failed invoice
        ("in_5", "cus_b", "2026-02-01T00:00Z", False, NSF),
    ]
)


def test_invoice_events_find_failure_recovery_and_the_last_funds_decline() -> None:
    events = invoice_events(HISTORY)
    assert len(events) == 4  # in_4 never failed
    first = events.iloc[0]
    assert first["failed_at"] == pd.Timestamp("2026-01-05T10:00Z")
    assert first["short_at"] == pd.Timestamp("2026-01-07T10:00Z")
    assert first["recovered_at"] == pd.Timestamp("2026-01-09T16:00Z")
    assert pd.isna(events.iloc[1]["short_at"]) and events.iloc[1]["recovered_at"] == pd.Timestamp("2026-02-06T10:00Z")
    assert pd.isna(events.iloc[2]["recovered_at"])


def test_history_sees_only_what_happened_before() -> None:
    queries = pd.DataFrame(
        {
            "customer_id": ["cus_a", "cus_a", "cus_a", "cus_a", "cus_b"],
            "at": pd.to_datetime(
                [
                    "2026-01-05T10:00Z",
                    "2026-01-08T00:00Z",
                    "2026-02-05T10:00Z",
                    "2026-03-05T10:00Z",
                    "2026-02-01T00:00Z",
                ],
                utc=True,
            ),
        }
    )
    got = customer_history(invoice_events(HISTORY), queries)
    # At in_1's own first failure nothing came before (an invoice never counts itself).
    assert got["customer_prior_failed_invoices"].tolist() == [0, 1, 1, 2, 0]
    # in_1 recovered on the 9th: unknown on the 8th, known from then on; cus_b's paid invoice is no failure.
    assert got["customer_prior_recoveries"].tolist() == [0, 0, 1, 2, 0]
    # The bracket stays in_1's: in_2 recovered later but never declined for funds.
    assert got["customer_funds_back_at"].isna().tolist() == [True, True, False, False, True]
    assert got["customer_funds_back_at"].iloc[3] == pd.Timestamp("2026-01-09T16:00Z")
    assert got["customer_funds_short_at"].iloc[3] == pd.Timestamp("2026-01-07T10:00Z")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 200), st.one_of(st.none(), st.integers(1, 40)), st.booleans()),
        min_size=0,
        max_size=25,
    ),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 260)), min_size=1, max_size=10),
)
def test_history_matches_a_direct_count(
    invoices: list[tuple[int, int, int | None, bool]], asks: list[tuple[int, int]]
) -> None:
    """Against a plain loop over the events: counts and the latest funds bracket strictly before each query."""
    day = pd.Timestamp("2026-01-01", tz=UTC)
    hours = [pd.Timedelta(hours=h) for h in range(300)]
    events = pd.DataFrame(
        {
            "customer_id": [f"c{c}" for c, *_ in invoices],
            "failed_at": pd.to_datetime([day + hours[f] for _, f, _, _ in invoices], utc=True),
            "recovered_at": pd.to_datetime(
                [pd.NaT if r is None else day + hours[f + r] for _, f, r, _ in invoices], utc=True
            ),
            "short_at": pd.to_datetime(
                [day + hours[f] if short and r is not None else pd.NaT for _, f, r, short in invoices], utc=True
            ),
        }
    )
    queries = pd.DataFrame({"customer_id": [f"c{c}" for c, _ in asks], "at": [day + hours[h] for _, h in asks]})
    got = customer_history(events, queries)
    for i, (c, h) in enumerate(asks):
        at = day + hours[h]
        mine = events[events["customer_id"] == f"c{c}"]
        recovered = mine[mine["recovered_at"] < at]
        funds = recovered[recovered["short_at"].notna()]
        assert got["customer_prior_failed_invoices"].iloc[i] == (mine["failed_at"] < at).sum()
        assert got["customer_prior_recoveries"].iloc[i] == len(recovered)
        back = got["customer_funds_back_at"].iloc[i]
        if funds.empty:
            assert pd.isna(back)
        else:
            assert back == funds["recovered_at"].max()
            # Ties in recovery time may pick either invoice's short time; each is one of theirs.
            tied = funds[funds["recovered_at"] == back]
            assert got["customer_funds_short_at"].iloc[i] in set(tied["short_at"])


def test_phases_against_the_funds_bracket() -> None:
    back = np.array(["2026-01-09T16:00"], dtype="datetime64[ns]")
    short = np.array(["2026-01-07T10:00"], dtype="datetime64[ns]")
    candidates = np.array(
        ["2026-02-09T16:00", "2026-02-20T04:00", "2026-01-23T16:00", "2026-01-31T16:00"], dtype="datetime64[ns]"
    )
    got = funds_phase_features(candidates, np.repeat(short, 4), np.repeat(back, 4))
    assert got["days_from_funds_back_day_of_month"].tolist() == pytest.approx([0.0, 10.5, 14.0, -8.44], abs=0.01)
    assert got["days_from_funds_short_day_of_month"][0] == pytest.approx(2.25)
    # 31 days later is 3 days into the week and the fortnight; 14 days later starts both again.
    assert got["days_into_funds_back_week"][[0, 2]].tolist() == pytest.approx([3.0, 0.0])
    assert got["days_into_funds_back_fortnight"][[0, 2]].tolist() == pytest.approx([3.0, 0.0])
    nat = np.array(["NaT"], dtype="datetime64[ns]")
    none = funds_phase_features(candidates[:1], nat, nat)
    assert all(np.isnan(v[0]) for v in none.values())


def test_training_rows_carry_the_customer_history_into_the_features() -> None:
    attempts = HISTORY.assign(
        attempt_id=[f"a{i}" for i in range(len(HISTORY))],
        amount=1000,
        currency="usd",
        card_brand="visa",
        customer_timezone="Europe/Paris",
    )
    # A retry of in_3 on 2026-03-09 17:00 Paris (16:00 UTC), the same local moment of the month as in_1's recovery.
    retry = attempts.iloc[[5]].assign(
        attempt_id="a_retry", attempted_at=pd.Timestamp("2026-03-09T16:00Z"), succeeded=True, decline_code=None
    )
    attempts = pd.concat([attempts, retry], ignore_index=True).sort_values(["invoice_id", "attempted_at"])
    rows = retry_training_rows(attempts)
    features = build_retry_features(attempts, rows)
    assert set(CUSTOMER_FEATURES) <= set(FEATURE_COLUMNS)
    last = features.loc[(rows["invoice_id"] == "in_3").to_numpy()].iloc[0]
    assert last["customer_prior_failed_invoices"] == 2 and last["customer_prior_recoveries"] == 2
    assert last["days_from_funds_back_day_of_month"] == pytest.approx(0.0)
    first = features.loc[(rows["invoice_id"] == "in_1").to_numpy()].iloc[0]
    assert np.isnan(first["days_from_funds_back_day_of_month"]) and first["customer_prior_failed_invoices"] == 0
