"""``outcomes_frame``: stored outcomes as a contract §1 attempts dataset."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.orm import Session

from serving.store import ATTEMPTS_COLUMNS, OutcomeRecord, outcomes_frame, record_outcome


def test_columns_are_the_contract_columns() -> None:
    data = pytest.importorskip("training.data")
    assert data.CONTRACT_COLUMNS == ATTEMPTS_COLUMNS


def test_rows_values_and_order(history: Session) -> None:
    frame = outcomes_frame(history)
    assert tuple(frame.columns) == (*ATTEMPTS_COLUMNS, "decision_id")
    assert frame["attempt_id"].tolist() == [
        "a1", "a2", "a3", "b1", "b2", "c1", "c2", "c3", "c4", "d1", "d2", "e1", "f1", "f2",
    ]  # fmt: skip
    assert isinstance(frame["attempted_at"].dtype, pd.DatetimeTZDtype)
    assert str(frame["attempted_at"].dt.tz) == "UTC"
    assert frame["amount"].dtype == "int64" and frame["succeeded"].dtype == bool
    b2 = frame.set_index("attempt_id").loc["b2"]
    assert b2["attempted_at"] == pd.Timestamp("2026-03-03T22:30:00Z")
    # Card fields come from the invoice's latest decision (A's first one said mastercard/CA).
    a1 = frame.set_index("attempt_id").loc["a1"]
    assert (a1["card_brand"], a1["card_country"], a1["card_funding"]) == ("visa", "US", "debit")
    assert (a1["card_fingerprint"], a1["customer_timezone"], a1["card_exp_year"]) == (
        "fp_in_A_visa",
        "America/Chicago",
        2027,
    )
    # No decision ever described in_D's card: card_brand is "unknown", the rest missing.
    d = frame[frame["invoice_id"] == "in_D"]
    assert d["card_brand"].tolist() == ["unknown", "unknown"]
    assert d["card_country"].isna().all() and d["card_exp_month"].isna().all()


def test_round_trip_through_the_training_loader(history: Session, tmp_path: Path) -> None:
    data = pytest.importorskip("training.data")
    frame = outcomes_frame(history)
    loaded, report = data.validate_attempts(frame)
    assert report.rows_rejected == 0, report.errors
    assert loaded["attempt_id"].tolist() == frame["attempt_id"].tolist()
    assert (loaded["attempted_at"] == frame["attempted_at"]).all()
    for name in ("csv", "parquet"):
        path = tmp_path / f"export.{name}"
        data.write_attempts(frame, path)
        reread, file_report = data.load_attempts(path)
        assert file_report.rows_rejected == 0, file_report.errors
        pd.testing.assert_frame_equal(reread, loaded, check_dtype=False)


def test_since_until_keep_whole_invoices(history: Session) -> None:
    """Selected by the invoice's first attempt: in_A's later attempts don't bring it in."""
    since = datetime(2026, 3, 3, tzinfo=UTC)
    until = datetime(2026, 3, 9, 8, tzinfo=UTC)
    frame = outcomes_frame(history, since=since, until=until)
    assert frame["attempt_id"].tolist() == ["b1", "b2", "d1", "d2", "f1", "f2"]
    assert outcomes_frame(history, since=datetime(2026, 3, 9, 8, tzinfo=UTC))["invoice_id"].unique().tolist() == [
        "in_C",
        "in_E",
    ]


def test_outcome_fingerprint_wins_over_the_decision(session: Session) -> None:
    record_outcome(
        session,
        OutcomeRecord(
            attempt_id="x1",
            invoice_id="in_X",
            customer_id="cus_X",
            attempted_at=datetime(2026, 1, 1, tzinfo=UTC),
            succeeded=False,
            amount=100,
            currency="usd",
            decline_code="do_not_honor",
            card_fingerprint="fp_from_outcome",
        ),
    )
    frame = outcomes_frame(session)
    assert frame["card_fingerprint"].tolist() == ["fp_from_outcome"]
    assert frame["card_brand"].tolist() == ["unknown"]


def test_an_empty_store_gives_an_empty_frame_with_the_columns(session: Session) -> None:
    frame = outcomes_frame(session)
    assert len(frame) == 0
    assert tuple(frame.columns) == (*ATTEMPTS_COLUMNS, "decision_id")
