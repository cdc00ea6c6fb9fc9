"""Bad data files, clear answers: `training.data.load_attempts` on the cases of docs/bad-input.md.

A file the loader cannot use at all is an `AttemptsDataError` with a one-line reason. A bad row is
reported with its 1-based data row number, column and reason, and the other rows of its invoice
are set aside with it; nothing is ever dropped without a line in `LoadReport.errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.data import AttemptsDataError, LoadReport, load_attempts, validate_attempts

MISSING = "required value is missing"


def attempt(n: int, invoice: str = "in_1", **overrides: Any) -> dict[str, Any]:
    """One valid failed attempt as a CSV carries it (text), the n-th of its invoice."""
    base: dict[str, Any] = {
        "invoice_id": invoice,
        "customer_id": f"cus_{invoice}",
        "attempt_id": f"{invoice}_a{n}",
        "attempted_at": f"2026-11-0{n}T14:00:00Z",
        "amount": "4900",
        "currency": "usd",
        "succeeded": "false",
        "decline_code": "insufficient_funds",
        "card_brand": "visa",
    }
    return {**base, **overrides}


def two_invoices() -> list[dict[str, Any]]:
    """in_1 with three attempts (rows 1-3), in_2 with two (rows 4-5)."""
    return [attempt(1), attempt(2), attempt(3), attempt(1, "in_2"), attempt(2, "in_2")]


def load_csv(tmp_path: Path, rows: list[dict[str, Any]]) -> tuple[pd.DataFrame, LoadReport]:
    """Rows written as a CSV (None as an empty cell) and loaded back."""
    path = tmp_path / "attempts.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return load_attempts(path)


def load_parquet(tmp_path: Path, frame: pd.DataFrame) -> tuple[pd.DataFrame, LoadReport]:
    """A typed frame written as Parquet and loaded back."""
    path = tmp_path / "attempts.parquet"
    frame.to_parquet(path, index=False)
    return load_attempts(path)


def typed_frame() -> pd.DataFrame:
    """two_invoices() with the types a Parquet writer would use."""
    frame = pd.DataFrame(two_invoices())
    frame["attempted_at"] = pd.to_datetime(frame["attempted_at"], utc=True)
    frame["amount"] = frame["amount"].astype("int64")
    frame["succeeded"] = False
    return frame


def errors_of(report: LoadReport) -> list[tuple[int, str, str]]:
    """(row, column, reason) of every reported problem, in row order."""
    return list(report.errors[["row", "column", "reason"]].itertuples(index=False, name=None))


def assert_no_silent_drop(attempt_ids: list[str], frame: pd.DataFrame, report: LoadReport) -> None:
    """Every row of the input is either in the frame or named in the errors; the counts add up."""
    kept = set(frame["attempt_id"])
    dropped_rows = {i + 1 for i, attempt_id in enumerate(attempt_ids) if attempt_id not in kept}
    assert dropped_rows == set(report.errors["row"])
    assert_counts_add_up(report, frame)


def assert_counts_add_up(report: LoadReport, frame: pd.DataFrame) -> None:
    """Kept rows are the frame; every rejected row, and only those, has at least one line in the errors."""
    assert report.rows_valid == len(frame) == report.rows_read - report.rows_rejected
    assert report.errors["row"].nunique() == report.rows_rejected


# --- wrong types ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("amount", "49.99", "must be an integer number of minor units"),  # major units
        ("amount", "forty", "must be an integer number of minor units"),
        ("succeeded", "maybe", "must be a boolean (true/false, 1/0, yes/no, t/f)"),
        ("attempted_at", "last tuesday", "not an ISO 8601 timestamp"),
        ("attempted_at", "1762005600", "not an ISO 8601 timestamp"),  # Unix seconds
        ("card_exp_month", "April", "must be an integer from 1 to 12"),
    ],
)
def test_wrong_type_in_csv_names_row_and_column(tmp_path: Path, column: str, value: str, reason: str) -> None:
    rows = two_invoices()
    rows[1] = rows[1] | {column: value}
    frame, report = load_csv(tmp_path, rows)
    assert errors_of(report) == [
        (1, "invoice_id", "invoice in_1 has an invalid row 2"),
        (2, column, reason),
        (3, "invoice_id", "invoice in_1 has an invalid row 2"),
    ]
    assert report.errors["value"].iloc[1] == value  # as written
    assert set(frame["invoice_id"]) == {"in_2"}  # in_1's other rows are set aside with it
    assert_no_silent_drop([r["attempt_id"] for r in rows], frame, report)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("amount", 49.5, "must be an integer number of minor units"),
        ("succeeded", 2, "must be a boolean (true/false, 1/0, yes/no, t/f)"),
        ("card_exp_month", 4.5, "must be an integer from 1 to 12"),
    ],
)
def test_wrong_type_in_parquet_names_row_and_column(tmp_path: Path, column: str, value: Any, reason: str) -> None:
    frame = typed_frame()
    frame[column] = [value if i == 3 else 1 for i in range(5)]  # row 4 (in_2's first) is the bad one
    loaded, report = load_parquet(tmp_path, frame)
    assert errors_of(report) == [(4, column, reason), (5, "invoice_id", "invoice in_2 has an invalid row 4")]
    assert set(loaded["invoice_id"]) == {"in_1"}
    assert_no_silent_drop(frame["attempt_id"].tolist(), loaded, report)


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        ("amount", [True] * 5, "must be an integer number of minor units"),  # a boolean column
        ("attempted_at", [1762005600] * 5, "not an ISO 8601 timestamp"),  # Unix seconds
        ("attempted_at", list(pd.date_range("2026-11-01", periods=5, freq="D")), "timestamp without UTC offset"),
    ],
)
def test_wrongly_typed_parquet_column_is_a_file_error(
    tmp_path: Path, column: str, values: list[Any], reason: str
) -> None:
    """Every row bad: nothing to train on, and the reason names the first row."""
    frame = typed_frame()
    frame[column] = values
    with pytest.raises(AttemptsDataError) as caught:
        load_parquet(tmp_path, frame)
    assert str(caught.value) == f"no valid rows: 5 rows rejected (first: row 1, {column}: {reason})"


# --- missing columns --------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["invoice_id", "attempt_id", "attempted_at", "amount", "currency", "succeeded"])
def test_missing_required_column_is_a_file_error(tmp_path: Path, column: str) -> None:
    rows = [{k: v for k, v in r.items() if k != column} for r in two_invoices()]
    with pytest.raises(AttemptsDataError, match=rf"^missing required column\(s\): {column}$"):
        load_csv(tmp_path, rows)


def test_all_missing_required_columns_are_named(tmp_path: Path) -> None:
    rows = [{"invoice_id": "in_1", "succeeded": "false"}]
    with pytest.raises(AttemptsDataError) as caught:
        load_csv(tmp_path, rows)
    assert str(caught.value) == (
        "missing required column(s): customer_id, attempt_id, attempted_at, amount, currency, card_brand"
    )


def test_missing_optional_columns_are_fine(tmp_path: Path) -> None:
    frame, report = load_csv(tmp_path, two_invoices())  # no network code, card country, time zone...
    assert report.errors.empty
    assert len(frame) == 5
    assert (frame["customer_timezone"] == "UTC").all()


# --- duplicate attempt ids --------------------------------------------------------------------------


def test_duplicate_attempt_id_names_both_rows(tmp_path: Path) -> None:
    rows = two_invoices()
    rows[4] = rows[4] | {"attempt_id": "in_1_a2"}  # in_2's second attempt reuses row 2's id
    frame, report = load_csv(tmp_path, rows)
    assert errors_of(report) == [
        (4, "invoice_id", "invoice in_2 has an invalid row 5"),
        (5, "attempt_id", "duplicate attempt_id (first at row 2)"),
    ]
    assert set(frame["invoice_id"]) == {"in_1"}  # the first occurrence is kept
    assert_counts_add_up(report, frame)


def test_duplicate_row_in_parquet(tmp_path: Path) -> None:
    frame = pd.concat([typed_frame(), typed_frame().iloc[[0]]], ignore_index=True)
    loaded, report = load_parquet(tmp_path, frame)
    assert (6, "attempt_id", "duplicate attempt_id (first at row 1)") in errors_of(report)
    assert report.rows_rejected == 4  # the repeat and in_1's three rows; in_2 is kept
    assert set(loaded["invoice_id"]) == {"in_2"}


# --- mixed time-zone offsets --------------------------------------------------------------------------


def test_mixed_offsets_are_accepted_and_converted_to_utc(tmp_path: Path) -> None:
    rows = [
        attempt(1, attempted_at="2026-11-01T23:30:00-05:00"),  # 2026-11-02T04:30Z
        attempt(2, attempted_at="2026-11-02T06:00:00+02:00"),  # 2026-11-02T04:00Z: earlier, despite the text
        attempt(3, attempted_at="2026-11-02T05:00:00Z"),
    ]
    frame, report = load_csv(tmp_path, rows)
    assert report.errors.empty
    assert str(frame["attempted_at"].dt.tz) == "UTC"
    ordered = frame.sort_values("attempt_number")
    assert ordered["attempt_id"].tolist() == ["in_1_a2", "in_1_a1", "in_1_a3"]  # numbered by the UTC instant
    assert ordered["attempted_at"].tolist() == [
        pd.Timestamp("2026-11-02T04:00:00Z"),
        pd.Timestamp("2026-11-02T04:30:00Z"),
        pd.Timestamp("2026-11-02T05:00:00Z"),
    ]


def test_parquet_in_another_zone_is_converted_to_utc(tmp_path: Path) -> None:
    """A Parquet column has one zone; a non-UTC one is the same instants, read as UTC."""
    frame = typed_frame()
    frame["attempted_at"] = frame["attempted_at"].dt.tz_convert("Asia/Tokyo")
    loaded, report = load_parquet(tmp_path, frame)
    assert report.errors.empty
    assert str(loaded["attempted_at"].dt.tz) == "UTC"
    assert sorted(loaded["attempted_at"]) == sorted(typed_frame()["attempted_at"])


# --- NaNs and missing values in required columns ----------------------------------------------------


@pytest.mark.parametrize(
    "column", ["invoice_id", "customer_id", "attempt_id", "attempted_at", "amount", "currency", "succeeded"]
)
def test_nan_in_a_required_parquet_column_names_the_row(tmp_path: Path, column: str) -> None:
    frame = typed_frame()
    frame[column] = frame[column].astype(object)
    frame.loc[3, column] = np.nan  # in_2's first attempt (row 4)
    loaded, report = load_parquet(tmp_path, frame)
    assert (4, column, MISSING) in errors_of(report)
    # A row without an invoice id can't take its invoice down with it; any other bad row does.
    assert set(loaded["invoice_id"]) == ({"in_1", "in_2"} if column == "invoice_id" else {"in_1"})
    assert_no_silent_drop(frame["attempt_id"].tolist(), loaded, report)


@pytest.mark.parametrize("spelling", ["", "nan", "NaN", "None", "<NA>", "NaT"])
@pytest.mark.parametrize("column", ["invoice_id", "attempted_at", "amount", "currency", "succeeded", "card_brand"])
def test_missing_value_spellings_in_csv_are_missing(tmp_path: Path, column: str, spelling: str) -> None:
    """What str() makes of a missing value is read as missing, not as an invoice "nan" or a brand "None"."""
    rows = two_invoices()
    rows[2] = rows[2] | {column: spelling}
    frame, report = load_csv(tmp_path, rows)
    assert (3, column, MISSING) in errors_of(report)
    assert len(frame) == (4 if column == "invoice_id" else 2)  # row 3 alone, or in_1 with it
    assert_no_silent_drop([r["attempt_id"] for r in rows], frame, report)


def test_nan_decline_code_of_a_failed_attempt_is_reported(tmp_path: Path) -> None:
    rows = two_invoices()
    rows[0] = rows[0] | {"decline_code": "nan"}
    _, report = load_csv(tmp_path, rows)
    assert errors_of(report)[0] == (1, "decline_code", "required when succeeded is false")


def test_nan_in_an_optional_column_reads_as_missing(tmp_path: Path) -> None:
    rows = [r | {"card_fingerprint": "nan", "network_decline_code": "NaN"} for r in two_invoices()]
    frame, report = load_csv(tmp_path, rows)
    assert report.errors.empty
    assert frame["card_fingerprint"].isna().all()
    assert frame["network_decline_code"].isna().all()


def test_namibia_and_null_are_still_values(tmp_path: Path) -> None:
    rows = [r | {"card_country": "NA", "customer_id": "null"} for r in two_invoices()]
    frame, report = load_csv(tmp_path, rows)
    assert report.errors.empty
    assert set(frame["card_country"]) == {"NA"}


def test_every_row_bad_is_a_file_error_naming_the_first(tmp_path: Path) -> None:
    rows = [r | {"amount": "nan"} for r in two_invoices()]
    with pytest.raises(AttemptsDataError, match=r"^no valid rows: 5 rows rejected \(first: row 1, amount: required"):
        load_csv(tmp_path, rows)


# --- any corruption: reported, never a crash, never a silent drop ---------------------------------

COLUMNS = list(attempt(1))
JUNK = st.one_of(
    st.sampled_from(["", "nan", "None", "-1", "0", "1e3", "12.5", "true", "2026-11-01", "NA", "9" * 25, " "]),
    st.text(max_size=12),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corruptions=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(COLUMNS), JUNK), min_size=1, max_size=6))
def test_any_corruption_is_reported_row_by_row(corruptions: list[tuple[int, str, str]]) -> None:
    rows = two_invoices()
    for index, column, value in corruptions:
        rows[index] = rows[index] | {column: value}
    raw = pd.DataFrame(rows, dtype="str")  # what the CSV reader hands over: text, "" for empty cells
    try:
        frame, report = validate_attempts(raw)
    except AttemptsDataError as exc:
        assert str(exc).startswith("no valid rows: 5 rows rejected")
        return
    assert report.rows_read == len(rows)
    assert_counts_add_up(report, frame)
