"""The attempts loader: contract section 1 types, row errors, whole-invoice rejection, round trips."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training.data import (
    ATTEMPT_COLUMNS,
    AttemptsDataError,
    LoadReport,
    load_attempts,
    validate_attempts,
    write_attempts,
)


def row(**overrides: Any) -> dict[str, Any]:
    """One valid failed attempt, as text the way a CSV carries it, with some fields replaced."""
    base: dict[str, Any] = {
        "invoice_id": "in_1",
        "customer_id": "cus_1",
        "attempt_id": "at_1",
        "attempted_at": "2026-11-01T14:00:00Z",
        "amount": "4900",
        "currency": "usd",
        "succeeded": "false",
        "decline_code": "insufficient_funds",
        "network_decline_code": "51",
        "merchant_advice_code": "",
        "card_brand": "visa",
        "card_funding": "debit",
        "card_country": "US",
        "customer_timezone": "America/New_York",
        "card_exp_month": "4",
        "card_exp_year": "2027",
        "card_fingerprint": "fp_7Hq2",
        "billing_interval": "month",
        "customer_created_at": "2025-01-15T09:30:00+00:00",
    }
    return {**base, **overrides}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as a CSV file, every value written as given ("" for missing)."""
    pd.DataFrame(rows).astype(str).to_csv(path, index=False)
    return path


def load_rows(tmp_path: Path, rows: list[dict[str, Any]]) -> tuple[pd.DataFrame, LoadReport]:
    """Write rows to a CSV and load it back."""
    return load_attempts(write_csv(tmp_path / "attempts.csv", rows))


def errors_of(report: LoadReport) -> list[tuple[int, str, str]]:
    """(row, column, reason) of every reported problem."""
    return list(report.errors[["row", "column", "reason"]].itertuples(index=False, name=None))


def history() -> list[dict[str, Any]]:
    """Two invoices: in_1 fails twice then succeeds; in_2 fails once."""
    return [
        row(attempt_id="at_1", attempted_at="2026-11-01T14:00:00Z"),
        row(attempt_id="at_2", attempted_at="2026-11-03T11:00:00Z", decline_code="do_not_honor"),
        row(attempt_id="at_3", attempted_at="2026-11-05T11:00:00Z", succeeded="true", decline_code=""),
        row(invoice_id="in_2", customer_id="cus_2", attempt_id="b_1", amount="1500", currency="eur"),
    ]


# --- happy path and types -----------------------------------------------------------------


def test_valid_csv_is_typed_per_contract(tmp_path: Path) -> None:
    frame, report = load_rows(tmp_path, history())
    assert (report.rows_read, report.rows_valid, report.rows_rejected) == (4, 4, 0)
    assert report.errors.empty
    assert list(report.errors.columns) == ["row", "column", "value", "reason"]
    assert tuple(frame.columns) == ATTEMPT_COLUMNS
    assert frame["attempted_at"].dtype == "datetime64[ns, UTC]"
    assert frame["customer_created_at"].dtype == "datetime64[ns, UTC]"
    assert frame["amount"].dtype == "int64"
    assert frame["succeeded"].dtype == bool
    assert frame["card_exp_month"].dtype == "Int64"
    assert frame["card_exp_year"].dtype == "Int64"
    assert frame["attempt_number"].dtype == "int64"
    for column in ("invoice_id", "attempt_id", "currency", "decline_code", "card_country", "customer_timezone"):
        assert pd.api.types.is_string_dtype(frame[column].dtype), column
    assert frame["succeeded"].tolist() == [False, False, True, False]
    assert frame["decline_code"].isna().tolist() == [False, False, True, False]
    assert frame["merchant_advice_code"].isna().all()


def test_normalises_case_and_codes(tmp_path: Path) -> None:
    rows = [
        row(
            currency=" USD ",
            card_brand="Visa",
            card_funding="CREDIT",
            card_country="gb",
            billing_interval="Month",
            decline_code=" Insufficient_Funds ",
            network_decline_code="5",
            merchant_advice_code="1",
            customer_timezone="europe/london",
            succeeded="No",
        )
    ]
    frame, report = load_rows(tmp_path, rows)
    assert report.errors.empty
    got = frame.iloc[0]
    assert (got["currency"], got["card_brand"], got["card_funding"]) == ("usd", "visa", "credit")
    assert (got["card_country"], got["billing_interval"]) == ("GB", "month")
    assert got["decline_code"] == "insufficient_funds"
    assert (got["network_decline_code"], got["merchant_advice_code"]) == ("05", "01")
    assert got["customer_timezone"] == "Europe/London"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("true", True),
        ("FALSE", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("No", False),
        ("t", True),
        ("F", False),
    ],
)
def test_boolean_spellings(tmp_path: Path, given: str, expected: bool) -> None:
    decline = "" if expected else "do_not_honor"
    frame, report = load_rows(tmp_path, [row(succeeded=given, decline_code=decline)])
    assert report.errors.empty
    assert bool(frame["succeeded"].iloc[0]) is expected


def test_unknown_decline_code_and_brand_are_kept(tmp_path: Path) -> None:
    frame, report = load_rows(tmp_path, [row(decline_code="brand_new_code_42", card_brand="elo")])
    assert report.errors.empty
    assert frame["decline_code"].iloc[0] == "brand_new_code_42"
    assert frame["card_brand"].iloc[0] == "elo"


def test_namibia_is_not_read_as_missing(tmp_path: Path) -> None:
    frame, report = load_rows(tmp_path, [row(card_country="NA", customer_timezone="")])
    assert report.errors.empty
    assert frame["card_country"].iloc[0] == "NA"
    assert frame["customer_timezone"].iloc[0] == "Africa/Windhoek"


def test_extra_columns_are_ignored(tmp_path: Path) -> None:
    frame, report = load_rows(tmp_path, [row(note="anything", shard="7")])
    assert report.errors.empty
    assert tuple(frame.columns) == ATTEMPT_COLUMNS


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    required = ["invoice_id", "customer_id", "attempt_id", "attempted_at", "amount", "currency", "succeeded"]
    minimal = [{k: v for k, v in row().items() if k in [*required, "card_brand", "decline_code"]}]
    frame, report = load_rows(tmp_path, minimal)
    assert report.errors.empty
    assert tuple(frame.columns) == ATTEMPT_COLUMNS
    assert frame["customer_timezone"].iloc[0] == "UTC"
    assert frame["card_exp_month"].isna().all()
    assert frame["customer_created_at"].isna().all()


# --- timestamps -----------------------------------------------------------------------------


def test_mixed_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    rows = [
        row(attempt_id="a", attempted_at="2026-11-01T14:00:00+02:00"),
        row(attempt_id="b", attempted_at="2026-11-01 09:30:00-05:00"),
        row(attempt_id="c", attempted_at="2026-11-01T14:00:00.250Z"),
        row(attempt_id="d", attempted_at="20261101T160000+0100"),
    ]
    frame, report = load_rows(tmp_path, rows)
    assert report.errors.empty
    by_id = frame.set_index("attempt_id")["attempted_at"]
    assert by_id["a"] == pd.Timestamp("2026-11-01T12:00:00Z")
    assert by_id["b"] == pd.Timestamp("2026-11-01T14:30:00Z")
    assert by_id["c"] == pd.Timestamp("2026-11-01T14:00:00.250Z")
    assert by_id["d"] == pd.Timestamp("2026-11-01T15:00:00Z")


@pytest.mark.parametrize("naive", ["2026-11-01T14:00:00", "2026-11-01 14:00", "2026-11-01"])
def test_naive_timestamps_are_rejected(tmp_path: Path, naive: str) -> None:
    _, report = load_rows(tmp_path, [row(attempt_id="x", invoice_id="in_x", attempted_at=naive), row()])
    assert errors_of(report) == [(1, "attempted_at", "timestamp without UTC offset")]
    assert report.errors["value"].iloc[0] == naive


def test_naive_customer_created_at_is_rejected(tmp_path: Path) -> None:
    _, report = load_rows(
        tmp_path, [row(customer_created_at="2025-01-01 00:00:00"), row(invoice_id="ok", attempt_id="o")]
    )
    assert errors_of(report) == [(1, "customer_created_at", "timestamp without UTC offset")]


# --- one bad value per column ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("amount", "12.5", "must be an integer number of minor units"),
        ("amount", "49.00", "must be an integer number of minor units"),
        ("amount", "abc", "must be an integer number of minor units"),
        ("amount", "0", "must be > 0"),
        ("amount", "-300", "must be > 0"),
        ("amount", "1000000000001", "must be <= 1000000000000"),
        ("amount", "99999999999999999999999", "must be <= 1000000000000"),
        ("amount", "", "required value is missing"),
        ("currency", "usdx", "not an ISO 4217 currency code"),
        ("currency", "", "required value is missing"),
        ("succeeded", "maybe", "must be a boolean (true/false, 1/0, yes/no, t/f)"),
        ("succeeded", "", "required value is missing"),
        ("decline_code", "", "required when succeeded is false"),
        ("attempted_at", "yesterday", "not an ISO 8601 timestamp"),
        ("attempted_at", "2026-13-01T00:00:00Z", "not an ISO 8601 timestamp"),
        ("attempted_at", "", "required value is missing"),
        ("attempted_at", "1969-07-20T20:17:00Z", "timestamp out of range (1970-01-01 to 2100-01-01)"),
        ("customer_created_at", "soon", "not an ISO 8601 timestamp"),
        ("invoice_id", "  ", "required value is missing"),
        ("customer_id", "", "required value is missing"),
        ("attempt_id", "", "required value is missing"),
        ("card_brand", "", "required value is missing"),
        ("card_funding", "gold", "must be one of: credit, debit, prepaid, unknown"),
        ("card_country", "ZZ", "not an ISO 3166-1 alpha-2 country code"),
        ("card_country", "USA", "not an ISO 3166-1 alpha-2 country code"),
        ("customer_timezone", "Mars/Olympus_Mons", "not an IANA time zone name"),
        ("card_exp_month", "13", "must be an integer from 1 to 12"),
        ("card_exp_month", "0", "must be an integer from 1 to 12"),
        ("card_exp_month", "4.5", "must be an integer from 1 to 12"),
        ("card_exp_year", "27", "must be an integer from 2000 to 2100"),
        ("billing_interval", "fortnight", "must be one of: day, month, week, year"),
    ],
)
def test_bad_value_is_reported_with_row_column_and_reason(tmp_path: Path, column: str, value: str, reason: str) -> None:
    good = row(invoice_id="in_ok", customer_id="cus_ok", attempt_id="ok_1")
    bad = row(invoice_id="in_bad", attempt_id="bad_1") | {column: value}
    frame, report = load_rows(tmp_path, [good, good | {"attempt_id": "ok_2"}, bad])
    assert errors_of(report) == [(3, column, reason)]
    assert report.rows_valid == 2
    assert set(frame["attempt_id"]) == {"ok_1", "ok_2"}
    given = report.errors["value"].iloc[0]
    assert given == value if value else pd.isna(given)  # the value as written; "" reads as missing


def test_several_problems_in_one_row_are_all_reported(tmp_path: Path) -> None:
    _, report = load_rows(tmp_path, [row(), row(invoice_id="in_2", attempt_id="x", amount="0", currency="zzz")])
    assert errors_of(report) == [(2, "amount", "must be > 0"), (2, "currency", "not an ISO 4217 currency code")]
    assert report.rows_rejected == 1


# --- cross-row rules ----------------------------------------------------------------------------


def test_duplicate_attempt_ids_name_the_first_row(tmp_path: Path) -> None:
    rows = [
        row(invoice_id="in_1", attempt_id="dup"),
        row(invoice_id="in_2", attempt_id="other"),
        row(invoice_id="in_3", attempt_id="dup"),
        row(invoice_id="in_4", attempt_id="dup"),
    ]
    frame, report = load_rows(tmp_path, rows)
    assert errors_of(report) == [
        (3, "attempt_id", "duplicate attempt_id (first at row 1)"),
        (4, "attempt_id", "duplicate attempt_id (first at row 1)"),
    ]
    assert sorted(frame["invoice_id"]) == ["in_1", "in_2"]


def test_whole_invoice_is_rejected_with_its_bad_row(tmp_path: Path) -> None:
    rows = [
        *history(),
        row(invoice_id="in_1", attempt_id="at_4", attempted_at="2026-11-06T11:00:00Z", amount="-1"),
    ]
    frame, report = load_rows(tmp_path, rows)
    assert errors_of(report) == [
        (1, "invoice_id", "invoice in_1 has an invalid row 5"),
        (2, "invoice_id", "invoice in_1 has an invalid row 5"),
        (3, "invoice_id", "invoice in_1 has an invalid row 5"),
        (5, "amount", "must be > 0"),
    ]
    assert (report.rows_read, report.rows_valid) == (5, 1)
    assert frame["invoice_id"].tolist() == ["in_2"]


def test_invoice_rejection_names_its_first_bad_row(tmp_path: Path) -> None:
    rows = [row(attempt_id="a", amount="x"), row(attempt_id="b"), row(attempt_id="c", currency="???")]
    with pytest.raises(AttemptsDataError) as caught:
        load_rows(tmp_path, rows)
    assert str(caught.value) == (
        "no valid rows: 3 rows rejected (first: row 1, amount: must be an integer number of minor units)"
    )


def test_attempt_number_follows_time_not_file_order(tmp_path: Path) -> None:
    rows = [
        row(invoice_id="in_b", attempt_id="b2", attempted_at="2026-11-03T00:00:00Z"),
        row(invoice_id="in_a", attempt_id="a1", attempted_at="2026-11-01T00:00:00Z"),
        row(invoice_id="in_b", attempt_id="b1", attempted_at="2026-11-02T23:00:00-02:00"),
        row(invoice_id="in_b", attempt_id="b3", attempted_at="2026-11-04T00:00:00Z", succeeded="1", decline_code=""),
        # Same instant as b3: ties are broken by attempt_id.
        row(invoice_id="in_b", attempt_id="b0", attempted_at="2026-11-04T01:00:00+01:00"),
    ]
    frame, report = load_rows(tmp_path, rows)
    assert report.errors.empty
    got = list(frame[["invoice_id", "attempt_id", "attempt_number"]].itertuples(index=False, name=None))
    assert got == [("in_a", "a1", 1), ("in_b", "b2", 1), ("in_b", "b1", 2), ("in_b", "b0", 3), ("in_b", "b3", 4)]
    assert frame.index.tolist() == list(range(5))


def test_reordering_keeps_each_rows_values_together(tmp_path: Path) -> None:
    """Rows out of order: every column (codes and zones too, missing ones included) moves with its row."""
    rng = np.random.default_rng(3)
    codes = ["insufficient_funds", "do_not_honor", "card_velocity_exceeded"]
    rows = [
        row(
            invoice_id=f"in_{i % 7}",
            attempt_id=f"at_{i}",
            attempted_at=f"2026-11-{1 + i // 7:02d}T{i % 24:02d}:00:00Z",
            decline_code=codes[i % 3],
            merchant_advice_code="" if i % 4 else "24",
            card_brand=["visa", "mastercard"][i % 2],
            customer_timezone="" if i % 5 == 0 else "Europe/Berlin",
            card_country="DE",
            amount=str(100 + i),
        )
        for i in range(40)
    ]
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    frame, report = load_rows(tmp_path, shuffled)
    assert report.errors.empty
    assert frame["invoice_id"].tolist() == sorted(frame["invoice_id"].tolist())
    for got in frame.itertuples(index=False):
        i = int(got.attempt_id.removeprefix("at_"))
        assert got.amount == 100 + i
        assert got.decline_code == codes[i % 3]
        assert (got.merchant_advice_code == "24") if i % 4 == 0 else pd.isna(got.merchant_advice_code)
        assert got.card_brand == ["visa", "mastercard"][i % 2]
        # a missing zone is resolved from the card's country
        assert got.customer_timezone == "Europe/Berlin"


def test_attempts_after_a_success_are_kept(tmp_path: Path) -> None:
    rows = [
        row(attempt_id="a1", succeeded="true", decline_code=""),
        row(attempt_id="a2", attempted_at="2026-11-02T14:00:00Z"),
    ]
    frame, report = load_rows(tmp_path, rows)
    assert report.errors.empty
    assert frame["attempt_number"].tolist() == [1, 2]


# --- time zones ---------------------------------------------------------------------------------


def test_timezone_falls_back_to_country_then_utc(tmp_path: Path) -> None:
    rows = [
        row(invoice_id="i1", attempt_id="1", customer_timezone="Asia/Kolkata", card_country="US"),
        row(invoice_id="i2", attempt_id="2", customer_timezone="", card_country="DE"),
        row(invoice_id="i3", attempt_id="3", customer_timezone="", card_country="us"),
        row(invoice_id="i4", attempt_id="4", customer_timezone="", card_country=""),
        row(invoice_id="i5", attempt_id="5", customer_timezone="", card_country="BV"),
    ]
    frame, report = load_rows(tmp_path, rows)
    assert report.errors.empty
    assert frame.set_index("invoice_id")["customer_timezone"].to_dict() == {
        "i1": "Asia/Kolkata",
        "i2": "Europe/Berlin",
        "i3": "America/Chicago",
        "i4": "UTC",
        "i5": "UTC",
    }


# --- file-level errors --------------------------------------------------------------------------


def test_missing_required_columns_are_named(tmp_path: Path) -> None:
    rows = [{k: v for k, v in row().items() if k not in ("attempted_at", "amount")}]
    with pytest.raises(AttemptsDataError, match=r"^missing required column\(s\): attempted_at, amount$"):
        load_rows(tmp_path, rows)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "attempts.json"
    path.write_text("{}")
    with pytest.raises(AttemptsDataError, match=r"unsupported file type: attempts\.json"):
        load_attempts(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "attempts.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(AttemptsDataError, match="not a readable Parquet file") as caught:
        load_attempts(path)
    assert "\n" not in str(caught.value)


def test_truncated_parquet(tmp_path: Path) -> None:
    frame, _ = validate_attempts(pd.DataFrame(history()))
    path = tmp_path / "attempts.parquet"
    write_attempts(frame, path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(AttemptsDataError, match="not a readable Parquet file"):
        load_attempts(path)


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(AttemptsDataError, match=r"^file is empty$"):
        load_attempts(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(row()) + "\n")
    with pytest.raises(AttemptsDataError, match=r"^no data rows$"):
        load_attempts(header_only)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AttemptsDataError, match=r"^file not found$"):
        load_attempts(tmp_path / "nope.csv")


def test_ragged_csv_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text(",".join(row()) + "\n" + ",".join(row().values()) + ",extra,fields\n")
    with pytest.raises(AttemptsDataError, match="not a readable CSV file") as caught:
        load_attempts(path)
    assert "\n" not in str(caught.value)


def test_duplicate_contract_column_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    header = [*row(), "amount"]
    path.write_text(",".join(header) + "\n" + ",".join([*row().values(), "5"]) + "\n")
    with pytest.raises(AttemptsDataError, match=r"^duplicate column\(s\): amount$"):
        load_attempts(path)


def test_bom_and_gzip_csv(tmp_path: Path) -> None:
    frame = pd.DataFrame([row()]).astype(str)
    path = tmp_path / "attempts.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8-sig", newline="") as handle:
        frame.to_csv(handle, index=False)
    loaded, report = load_attempts(path)
    assert report.errors.empty
    assert loaded["invoice_id"].tolist() == ["in_1"]


def test_not_gzip_despite_extension(tmp_path: Path) -> None:
    path = tmp_path / "attempts.csv.gz"
    path.write_text("invoice_id\nplain text\n")
    with pytest.raises(AttemptsDataError, match="cannot read the file"):
        load_attempts(path)


# --- round trips and typed input ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["attempts.csv", "attempts.csv.gz", "attempts.parquet", "attempts.pq"])
def test_write_then_load_round_trip(tmp_path: Path, name: str) -> None:
    rows = [
        *history(),
        row(
            invoice_id="in_3",
            attempt_id="c_1",
            attempted_at="2026-11-01T14:00:00.123456+05:30",
            customer_timezone="",
            card_country="",
            card_exp_month="",
            card_exp_year="",
            card_funding="",
            customer_created_at="",
            merchant_advice_code="24",
        ),
    ]
    frame, _ = load_rows(tmp_path, rows)
    path = tmp_path / name
    write_attempts(frame, path)
    loaded, report = load_attempts(path)
    assert report.errors.empty
    pd.testing.assert_frame_equal(loaded, frame)


def test_csv_timestamps_are_written_with_offset(tmp_path: Path) -> None:
    frame, _ = load_rows(tmp_path, history())
    path = tmp_path / "out.csv"
    write_attempts(frame, path)
    text = path.read_text()
    assert "2026-11-01T14:00:00+00:00" in text
    assert ",false," in text and ",true," in text


def test_write_refuses_naive_timestamps(tmp_path: Path) -> None:
    frame = pd.DataFrame({"attempted_at": pd.to_datetime(["2026-11-01 14:00"])})
    with pytest.raises(ValueError, match="attempted_at"):
        write_attempts(frame, tmp_path / "x.csv")


def test_write_refuses_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(AttemptsDataError, match="unsupported file type"):
        write_attempts(pd.DataFrame({"a": [1]}), tmp_path / "x.xlsx")


def test_validate_accepts_typed_frames() -> None:
    raw = pd.DataFrame(
        {
            "invoice_id": [101, 101],
            "customer_id": ["c", "c"],
            "attempt_id": ["a2", "a1"],
            "attempted_at": pd.to_datetime(["2026-11-02 10:00", "2026-11-01 10:00"]).tz_localize("Europe/Paris"),
            "amount": np.array([4900, 4900], dtype="int32"),
            "currency": pd.Categorical(["USD", "usd"]),
            "succeeded": [True, False],
            "decline_code": [None, "expired_card"],
            "merchant_advice_code": [1.0, np.nan],
            "card_brand": ["visa", "visa"],
            "card_exp_month": [4.0, np.nan],
            "card_exp_year": pd.array([2027, None], dtype="Int64"),
        },
        index=[10, 20],
    )
    frame, report = validate_attempts(raw)
    assert report.errors.empty
    assert frame["invoice_id"].tolist() == ["101", "101"]
    assert frame["attempt_id"].tolist() == ["a1", "a2"]
    assert frame["attempted_at"].tolist() == [pd.Timestamp("2026-11-01 09:00Z"), pd.Timestamp("2026-11-02 09:00Z")]
    assert frame["amount"].dtype == "int64"
    assert frame["currency"].tolist() == ["usd", "usd"]
    assert frame["merchant_advice_code"].iloc[1] == "01"
    assert frame["card_exp_month"].tolist() == [pd.NA, 4]


def test_typed_naive_timestamps_and_fractional_amounts_are_rejected() -> None:
    raw = pd.DataFrame([row(), row(invoice_id="in_2", attempt_id="x")])
    raw["attempted_at"] = pd.to_datetime(raw["attempted_at"]).dt.tz_localize(None)
    raw["amount"] = [4900.0, 12.5]
    with pytest.raises(AttemptsDataError, match="no valid rows: 2 rows rejected") as caught:
        validate_attempts(raw)
    assert "attempted_at: timestamp without UTC offset" in str(caught.value)


def test_validate_missing_columns_and_empty_frame() -> None:
    with pytest.raises(AttemptsDataError, match=r"missing required column\(s\): invoice_id, customer_id"):
        validate_attempts(pd.DataFrame({"attempt_id": ["a"]}))
    with pytest.raises(AttemptsDataError, match="no data rows"):
        validate_attempts(pd.DataFrame(columns=list(row())))


@pytest.mark.parametrize("name", ["minimal.csv", "minimal.parquet"])
def test_round_trip_with_every_optional_column_empty(tmp_path: Path, name: str) -> None:
    raw = pd.DataFrame(
        {
            "invoice_id": ["i"],
            "customer_id": ["c"],
            "attempt_id": ["a"],
            "attempted_at": ["2026-01-01T00:00:00Z"],
            "amount": [5],
            "currency": ["usd"],
            "succeeded": [True],
            "card_brand": ["visa"],
        }
    )
    frame, _ = validate_attempts(raw)
    write_attempts(frame, tmp_path / name)
    loaded, _ = load_attempts(tmp_path / name)
    pd.testing.assert_frame_equal(loaded, frame)


def test_duplicate_columns_in_a_frame() -> None:
    raw = pd.DataFrame([row() | {"extra": 1}]).rename(columns={"extra": "amount"})
    with pytest.raises(AttemptsDataError, match=r"^duplicate column\(s\): amount$"):
        validate_attempts(raw)


def test_huge_float_ids_and_amounts_do_not_crash() -> None:
    raw = pd.DataFrame([row(), row(invoice_id="in_2", attempt_id="x")])
    raw["amount"] = [4900.0, 1e20]
    raw["customer_id"] = [1.0, 1e30]
    frame, report = validate_attempts(raw)
    assert errors_of(report) == [(2, "amount", "must be <= 1000000000000")]
    assert frame["customer_id"].tolist() == ["1.0"]
