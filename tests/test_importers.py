"""Provider imports: the Stripe charges export becomes a contract §1 dataset that round-trips."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from retryopt.cli import app
from training.data import AttemptsDataError, load_attempts, write_attempts
from training.importers import STRIPE, import_export

FIXTURE = Path(__file__).parent / "fixtures" / "stripe_charges.csv"


def rewrite(tmp_path: Path, change: dict[str, str] | None = None, drop: tuple[str, ...] = (), **extra: str) -> Path:
    """The fixture with columns renamed, dropped or added, as another CSV."""
    frame = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    frame = frame.rename(columns=change or {}).drop(columns=list(drop)).assign(**extra)
    path = tmp_path / "charges.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_stripe_fixture_round_trips_through_the_loader(tmp_path: Path, suffix: str) -> None:
    attempts, _ = import_export(STRIPE, FIXTURE)
    path = tmp_path / f"attempts{suffix}"
    write_attempts(attempts, path)
    loaded, report = load_attempts(path)
    assert report.rows_rejected == 0
    pd.testing.assert_frame_equal(loaded, attempts)


def test_stripe_report_counts_skipped_and_rejected_rows_by_export_row() -> None:
    attempts, report = import_export(STRIPE, FIXTURE)
    assert report.rows_read == 15
    assert report.skipped == {"no invoice (not a recurring charge)": 1}
    assert report.rows_valid == len(attempts) == 12
    # Export row 11 has an unreadable time; row 12 is the rest of its invoice. Row numbers are the
    # export's, although row 10 (no invoice) was skipped before validation.
    assert report.errors[["row", "column"]].values.tolist() == [[11, "attempted_at"], [12, "invoice_id"]]
    assert report.errors["reason"].iloc[1] == "invoice in_6E has an invalid row 11"
    assert "ch_3Q5X01" not in set(attempts["attempt_id"])
    assert report.columns["attempted_at"] == "created" and report.amount_unit == "minor"


def test_stripe_values_are_mapped_to_the_contract_vocabulary() -> None:
    attempts, _ = import_export(STRIPE, FIXTURE)
    by_id = attempts.set_index("attempt_id")
    # The decline code of an issuer decline lives in outcome_reason, not in failure_code (card_declined).
    assert by_id.loc["ch_3Q1A01", "decline_code"] == "insufficient_funds"
    assert by_id.loc["ch_3Q3C01", "card_brand"] == "amex"
    assert by_id.loc["ch_3Q2B01", "card_brand"] == "mastercard"
    # The network advice code is a merchant advice code only on Mastercard.
    assert by_id.loc["ch_3Q7F01", "merchant_advice_code"] == "03"
    assert pd.isna(by_id.loc["ch_3Q1A01", "merchant_advice_code"])
    assert by_id.loc["ch_3Q1A01", "network_decline_code"] == "51"
    assert pd.isna(by_id.loc["ch_3Q1A03", "decline_code"]) and bool(by_id.loc["ch_3Q1A03", "succeeded"])
    # `created` as unix seconds.
    assert by_id.loc["ch_3Q4D02", "attempted_at"] == pd.Timestamp("2026-11-11 03:00", tz="UTC")
    assert by_id.loc["ch_3Q4D02", "amount"] == 1200  # yen: minor units are yen


def test_missing_required_columns_are_named(tmp_path: Path) -> None:
    path = rewrite(tmp_path, drop=("created", "card_brand"))
    with pytest.raises(AttemptsDataError, match=r"missing required column\(s\) for a stripe export") as caught:
        import_export(STRIPE, path)
    assert "'created'" in str(caught.value) and "'card_brand'" in str(caught.value)
    assert "'Created (UTC)'" in str(caught.value)  # the other documented spelling is offered


def test_unknown_columns_are_ignored(tmp_path: Path) -> None:
    expected, _ = import_export(STRIPE, FIXTURE)
    attempts, report = import_export(STRIPE, rewrite(tmp_path, metadata_plan="gold", receipt_url="https://x"))
    pd.testing.assert_frame_equal(attempts, expected)
    assert {"metadata_plan", "receipt_url", "description"} <= set(report.ignored_columns)


def test_dashboard_export_amounts_are_major_units(tmp_path: Path) -> None:
    frame = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    major = frame["amount"].astype(int).where(frame["currency"] == "jpy", frame["amount"].astype(int) / 100)
    frame["amount"] = [f"{v:.2f}" if c != "jpy" else f"{v:.0f}" for v, c in zip(major, frame["currency"], strict=True)]
    frame = frame.rename(
        columns={
            "created": "Created (UTC)",
            "amount": "Amount",
            "customer_id": "Customer ID",
            "invoice_id": "Invoice ID",
            "card_brand": "Card Brand",
            "card_fingerprint": "Card Fingerprint",
        }
    )
    path = tmp_path / "dashboard.csv"
    frame.to_csv(path, index=False)
    expected, _ = import_export(STRIPE, FIXTURE)
    attempts, report = import_export(STRIPE, path)
    assert report.amount_unit == "major"
    pd.testing.assert_series_equal(attempts["amount"], expected["amount"])


def test_amounts_that_do_not_convert_exactly_are_rejected_with_their_row(tmp_path: Path) -> None:
    frame = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    frame.loc[0, "amount"] = "49.005"
    path = tmp_path / "charges.csv"
    frame.to_csv(path, index=False)
    attempts, report = import_export(STRIPE, path, amount_unit="major")
    first = report.errors.iloc[0]
    assert (first["row"], first["column"], first["value"]) == (1, "amount", "49.005")
    assert "in_1A" not in set(attempts["invoice_id"])


def test_stripe_isk_amounts_are_rescaled_to_iso_minor_units(tmp_path: Path) -> None:
    frame = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    frame.loc[frame["invoice_id"] == "in_1A", "currency"] = "isk"
    frame.loc[frame["invoice_id"] == "in_1A", "amount"] = "150000"  # Stripe: 1,500 kr with two decimals
    path = tmp_path / "charges.csv"
    frame.to_csv(path, index=False)
    attempts, _ = import_export(STRIPE, path)
    assert set(attempts.loc[attempts["invoice_id"] == "in_1A", "amount"]) == {1500}


def test_import_command_writes_a_loadable_dataset(tmp_path: Path) -> None:
    out = tmp_path / "attempts.csv"
    result = CliRunner().invoke(app, ["import", "stripe", "--charges", str(FIXTURE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 12 attempts of 5 invoices" in result.output
    loaded, report = load_attempts(out)
    assert len(loaded) == 12 and report.rows_rejected == 0


def test_import_command_fails_with_one_line_on_missing_columns(tmp_path: Path) -> None:
    path = rewrite(tmp_path, drop=("status",))
    result = CliRunner().invoke(app, ["import", "stripe", "--charges", str(path), "--out", str(tmp_path / "a.csv")])
    assert result.exit_code == 1
    assert "missing required column(s)" in result.output and "'status'" in result.output


def test_an_export_without_invoice_charges_has_nothing_to_import(tmp_path: Path) -> None:
    path = rewrite(tmp_path, invoice_id="")
    with pytest.raises(AttemptsDataError, match=r"nothing to import: all 15 rows skipped \(no invoice"):
        import_export(STRIPE, path)


def test_an_export_with_no_valid_row_names_the_export_row(tmp_path: Path) -> None:
    frame = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    frame["currency"] = "zzz"
    frame.loc[0, "invoice_id"] = ""  # skipped: the first row validated is the export's row 2
    path = tmp_path / "charges.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(AttemptsDataError, match=r"no valid rows: 13 rows rejected \(first: row 2, currency"):
        import_export(STRIPE, path)
