"""The command line's own behaviour: one-line errors, and `export` feeding `train`'s loader."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from retryopt.cli import app
from serving.store import OutcomeRecord, make_engine, record_outcome, session_factory, upgrade_database
from training.data import load_attempts

runner = CliRunner()


def test_export_writes_a_loadable_attempts_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_database(url)
    with session_factory(make_engine(url))() as session:
        for i, (ok, code) in enumerate([(False, "insufficient_funds"), (False, "do_not_honor"), (True, None)]):
            record_outcome(
                session,
                OutcomeRecord(
                    attempt_id=f"a{i}",
                    invoice_id="in_1",
                    customer_id="cus_1",
                    attempted_at=datetime(2026, 11, 1 + i, 14, tzinfo=UTC),
                    succeeded=ok,
                    amount=4900,
                    currency="usd",
                    decline_code=code,
                ),
            )
    out = tmp_path / "export.parquet"
    result = runner.invoke(app, ["export", "--out", str(out), "--database-url", url])
    assert result.exit_code == 0, result.output
    attempts, report = load_attempts(out)
    assert report.rows_valid == 3
    assert attempts["attempt_number"].tolist() == [1, 2, 3]
    assert attempts["card_brand"].tolist() == ["unknown"] * 3  # no decision ever described the card


def test_export_of_an_empty_store_fails_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade_database(url)
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "x.csv"), "--database-url", url])
    assert result.exit_code != 0
    assert "holds no outcomes" in result.output


def test_evaluate_refuses_a_missing_model(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "nope"), "--no-mlflow"])
    assert result.exit_code != 0
    assert "does not exist" in result.output


def test_evaluate_refuses_an_unknown_policy_before_simulating() -> None:
    result = runner.invoke(app, ["evaluate", "--policy", "orcale", "--no-mlflow"])
    assert result.exit_code != 0
    assert "orcale" in result.output and "oracle_without_calendar" in result.output


def test_evaluate_runs_only_the_policies_asked_for() -> None:
    args = ["evaluate", "--invoices", "40", "--policy", "fixed_1_3_5_7", "--policy", "oracle", "--no-mlflow"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "fixed_1_3_5_7" in result.output and "oracle" in result.output
    assert "learned" not in result.output and "hyperswitch" not in result.output


def test_simulate_refuses_an_unknown_extension(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--invoices", "10", "--out", str(tmp_path / "x.json")])
    assert result.exit_code != 0
    assert ".csv" in result.output
