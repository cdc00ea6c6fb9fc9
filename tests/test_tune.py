"""Tuning: an Optuna study on the fixed time split, trials as nested MLflow runs, resumable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightgbm as lgb
import mlflow
import optuna
import pandas as pd
import pytest

from features.bundle import load_bundle
from training.simulate import simulate
from training.tracking import EXPERIMENT, configure_mlflow
from training.train import TrainConfig
from training.tune import PruningCallback, fit_trial, tune, tuning_data

# Small and quick: few rounds, one LightGBM thread (faster than two on a busy 2-core machine).
CONFIG = TrainConfig(num_boost_round=80, early_stopping_rounds=10, params={**TrainConfig().params, "num_threads": 1})


@pytest.fixture(scope="module")
def attempts() -> pd.DataFrame:
    """About 2,000 simulated failed invoices."""
    return simulate(2000, 5).attempts


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """MLflow (runs and artifacts) and the working directory in a temporary directory."""
    work = tmp_path_factory.mktemp("tune")
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)  # anything written to a relative path lands here, not in the repo
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
        mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
        mlflow.create_experiment(EXPERIMENT, artifact_location=(work / "artifacts").as_uri())
        configure_mlflow()
        yield work
    mlflow.set_tracking_uri(previous)


def trial_runs(parent_run_id: str) -> pd.DataFrame:
    """The nested runs under a tuning run."""
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    assert isinstance(runs, pd.DataFrame)
    return runs


def test_study_logs_nested_trials_and_resumes_from_its_storage(attempts: pd.DataFrame, tracking: Path) -> None:
    storage = f"sqlite:///{tracking}/optuna.db"
    first = tune(attempts, tracking / "model-1", CONFIG, n_trials=3, storage_url=storage, study_name="t")
    assert (first.trials_run, first.trials_total) == (3, 3)

    runs = trial_runs(str(first.parent_run_id))
    assert len(runs) == 3
    assert set(runs["tags.retryopt.kind"]) == {"tuning_trial"}
    assert runs["params.learning_rate"].notna().all() and runs["metrics.early_stop.log_loss"].notna().all()
    assert runs["metrics.early_stop.log_loss"].min() == pytest.approx(first.best_value)

    parent = mlflow.get_run(str(first.parent_run_id))
    assert parent.data.metrics["best.early_stop.log_loss"] == pytest.approx(first.best_value)
    assert float(parent.data.params["best.learning_rate"]) == pytest.approx(first.best_params["learning_rate"])
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "tuning")}
    assert {"tuning/optimization_history.png", "tuning/param_importances.png", "tuning/trials.csv"} <= plots

    bundle = load_bundle(first.train_result.bundle_dir)  # the final model is servable
    assert bundle.manifest["training"]["params"]["learning_rate"] == pytest.approx(first.best_params["learning_rate"])

    second = tune(attempts, tracking / "model-2", CONFIG, n_trials=3, storage_url=storage, study_name="t")
    assert (second.trials_run, second.trials_total) == (3, 6)  # added to the study, not started over
    assert second.best_value <= first.best_value
    numbers = sorted(trial_runs(str(second.parent_run_id))["tags.optuna.trial_number"].astype(int))
    assert numbers == [3, 4, 5]
    study = optuna.load_study(study_name="t", storage=storage)
    assert study.trials[3].params != study.trials[0].params  # a resumed session draws new points


class ScriptedTrial:
    """A trial stand-in that asks to be pruned after a given number of reports."""

    def __init__(self, prune_after: int) -> None:
        self.prune_after = prune_after
        self.reports: list[tuple[int, float]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return len(self.reports) >= self.prune_after


@pytest.mark.parametrize(("shrinkage_per_step", "rounds"), [(None, [0, 1, 2]), (0.5, [0, 9, 19])])
def test_pruning_callback_reports_validation_loss_and_stops_the_fit(
    attempts: pd.DataFrame, shrinkage_per_step: float | None, rounds: list[int]
) -> None:
    data = tuning_data(attempts, CONFIG)
    trial = ScriptedTrial(prune_after=3)
    params = {**CONFIG.params, "learning_rate": 0.05, "metric": "binary_logloss", "seed": 7}
    callback = PruningCallback(trial, shrinkage_per_step=shrinkage_per_step)  # type: ignore[arg-type]
    with pytest.raises(optuna.TrialPruned):
        fit_trial(params, data, CONFIG, [callback])
    # Steps are rounds, or units of total shrinkage: at 0.05, a step of 0.5 is 10 rounds.
    assert [step for step, _ in trial.reports] == [0, 1, 2]
    assert callback.last is not None and callback.last[0] == rounds[-1]
    assert all(0 < value < 1 for _, value in trial.reports)


def test_tuning_never_sees_the_calibration_or_test_parts(attempts: pd.DataFrame) -> None:
    data = tuning_data(attempts, CONFIG)
    from training.train import build_training_table, time_split

    table = build_training_table(attempts)
    split = time_split(table.invoice_first_failure, CONFIG.split_fractions)
    assert len(data.train_y) == (split == "train").sum()
    assert len(data.valid_y) == (split == "early_stop").sum()


def test_tune_without_tracking_needs_no_mlflow_run(attempts: pd.DataFrame, tmp_path: Path) -> None:
    result = tune(attempts, tmp_path / "m", CONFIG, n_trials=1, storage_url=f"sqlite:///{tmp_path}/o.db", track=False)
    assert result.parent_run_id is None and result.trials_total == 1
    assert mlflow.active_run() is None
    assert isinstance(lgb.Booster(model_file=str(tmp_path / "m" / "model.txt")), lgb.Booster)
