"""The model registry: pyfunc versions with aliases, bundles back from `models:/` URIs, promotion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.bundle import load_bundle, save_bundle
from features.candidates import CATEGORICAL_FEATURES
from retryopt.cli import app
from training.data import write_attempts
from training.registry import (
    CHALLENGER,
    CHAMPION,
    Comparison,
    ModelScore,
    PromotionPolicy,
    RegistryError,
    download_bundle,
    promote,
    register_model,
    resolve_model_uri,
    worse_reasons,
)
from training.simulate import simulate
from training.tracking import EXPERIMENT, configure_mlflow
from training.train import TrainConfig, build_training_table, train_model

# Small and quick: one LightGBM thread (faster than two on a busy 2-core machine).
CONFIG = TrainConfig(num_boost_round=100, early_stopping_rounds=20, params={**TrainConfig().params, "num_threads": 1})
# Enough holdout retries for a stable log loss; a small closed-loop world keeps each replay to seconds.
POLICY = PromotionPolicy(holdout_invoices=600, closed_loop_invoices=60)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """MLflow (runs, registry and artifacts) and the working directory in a temporary directory."""
    work = tmp_path_factory.mktemp("registry")
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)  # anything written to a relative path lands here, not in the repo
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
        mlflow.create_experiment(EXPERIMENT, artifact_location=(work / "artifacts").as_uri())
        configure_mlflow()
        yield work
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def attempts() -> pd.DataFrame:
    """About 2,000 simulated failed invoices."""
    return simulate(2000, 5).attempts


@pytest.fixture(scope="module")
def good_bundle(attempts: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained the ordinary way."""
    return train_model(attempts, tmp_path_factory.mktemp("good"), CONFIG).bundle_dir


@pytest.fixture(scope="module")
def bad_bundle(attempts: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deliberately bad model: two large boosting steps on shuffled labels, no calibration."""
    table = build_training_table(attempts)
    labels = np.random.default_rng(0).permutation(table.labels)
    params = {"objective": "binary", "learning_rate": 1.0, "num_leaves": 63, "min_data_in_leaf": 5}
    train_set = lgb.Dataset(table.features, label=labels, categorical_feature=list(CATEGORICAL_FEATURES))
    booster = lgb.train({**params, "verbose": -1, "num_threads": 1, "seed": 0}, train_set, num_boost_round=2)
    identity = np.array([0.0, 1.0])
    return save_bundle(tmp_path_factory.mktemp("bad"), booster, identity, identity, {"model_version": "bad-shuffled"})


def aliases(name: str) -> dict[str, int]:
    """Alias -> version of a registered model."""
    return {k: int(v) for k, v in mlflow.MlflowClient().get_registered_model(name).aliases.items()}


def test_register_twice_gives_versions_with_aliases_and_a_servable_bundle(
    tracking: Path, good_bundle: Path, attempts: pd.DataFrame
) -> None:
    assert register_model(good_bundle, "retry-a") == 1
    assert aliases("retry-a") == {CHAMPION: 1, CHALLENGER: 1}  # the first version is also champion

    with mlflow.start_run() as run:  # a training run that logged its bundle, as `log_run` does
        mlflow.log_artifacts(str(good_bundle), artifact_path="bundle")
    assert register_model(run.info.run_id, "retry-a") == 2
    assert aliases("retry-a") == {CHAMPION: 1, CHALLENGER: 2}
    assert mlflow.MlflowClient().get_model_version("retry-a", "2").run_id == run.info.run_id

    bundle_dir = download_bundle("models:/retry-a@champion", tracking / "download")
    bundle = load_bundle(bundle_dir)
    assert bundle.model_version == load_bundle(good_bundle).model_version
    assert load_bundle(resolve_model_uri("models:/retry-a/2", tracking / "cache")).model_version == bundle.model_version
    assert resolve_model_uri(good_bundle) == good_bundle  # a local path stays as it is

    # Any MLflow tool can score the registered pyfunc: features in, the bundle's probabilities out.
    features = build_training_table(attempts.head(400)).features
    pyfunc = mlflow.pyfunc.load_model("models:/retry-a@challenger")
    np.testing.assert_allclose(np.asarray(pyfunc.predict(features)), bundle.predict(features))


def test_register_refuses_what_is_not_a_bundle(tracking: Path, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"manifest\.json is missing"):
        register_model(tmp_path, "retry-x")
    with pytest.raises(RegistryError, match="neither a bundle directory nor a run"):
        register_model("no-such-run", "retry-x")


def test_promote_refuses_a_worse_challenger_and_accepts_a_better_one(
    tracking: Path, good_bundle: Path, bad_bundle: Path
) -> None:
    printed: list[str] = []
    assert register_model(bad_bundle, "retry-b") == 1  # champion by default: the first version
    assert register_model(good_bundle, "retry-b") == 2

    better = promote("retry-b", policy=POLICY, echo=printed.append)
    assert better.promoted and better.message == "promoted v2"
    assert aliases("retry-b")[CHAMPION] == 2
    assert "log_loss" in printed[0] and "closed-loop recovery_rate" in printed[0]

    assert register_model(bad_bundle, "retry-b") == 3
    worse = promote("retry-b", policy=POLICY, echo=printed.append)
    assert not worse.promoted
    assert worse.message.startswith("kept champion v2: holdout log loss")
    assert aliases("retry-b") == {CHAMPION: 2, CHALLENGER: 3}
    assert worse.comparison is not None
    assert worse.comparison.challenger.metrics["log_loss"] > worse.comparison.champion.metrics["log_loss"] + 0.01
    tags = mlflow.MlflowClient().get_model_version("retry-b", "3").tags
    assert float(tags["vs_v2.log_loss"]) > 0  # the registry shows why it stayed

    # The command prints the decision and exits 0 either way.
    result = CliRunner().invoke(app, ["promote", "retry-b", "--holdout-invoices", "600", "--no-closed-loop"])
    assert result.exit_code == 0, result.output
    assert "kept champion v2:" in result.output


def test_promote_without_a_challenger_is_an_error(tracking: Path) -> None:
    with pytest.raises(RegistryError, match="no 'challenger'"):
        promote("never-registered", policy=POLICY)
    result = CliRunner().invoke(app, ["promote", "never-registered"])
    assert result.exit_code == 1 and "no 'challenger'" in result.output


def score(log_loss: float, recovery_rate: float | None) -> ModelScore:
    """A model's figures, as `compare_models` would give them."""
    return ModelScore("m", {"log_loss": log_loss}, {} if recovery_rate is None else {"recovery_rate": recovery_rate})


@pytest.mark.parametrize(
    ("challenger", "worse"),
    [
        (score(0.4510, 0.600), False),  # equal within both tolerances
        (score(0.4450, 0.650), False),  # better
        (score(0.4600, 0.600), True),  # log loss 0.01 higher
        (score(0.4500, 0.580), True),  # recovers 2 points fewer invoices
        (score(float("nan"), 0.600), True),  # no usable log loss
    ],
)
def test_worse_reasons_apply_the_tolerances(challenger: ModelScore, worse: bool) -> None:
    comparison = Comparison(champion=score(0.4500, 0.600), challenger=challenger, holdout="test")
    assert bool(worse_reasons(comparison, PromotionPolicy())) is worse


def test_without_closed_loop_only_log_loss_decides() -> None:
    comparison = Comparison(champion=score(0.45, 0.6), challenger=score(0.45, None), holdout="test")
    assert worse_reasons(comparison, PromotionPolicy()) == []


@pytest.mark.slow
def test_train_command_tunes_and_registers(tracking: Path, attempts: pd.DataFrame) -> None:
    data = tracking / "attempts.csv"
    write_attempts(attempts, data)
    args = ["train", "--data", str(data), "--out", str(tracking / "tuned"), "--tune", "2", "--register", "retry-c"]
    result = CliRunner().invoke(app, [*args, "--optuna-storage", f"sqlite:///{tracking}/cli-optuna.db"])
    assert result.exit_code == 0, result.output
    assert "tuned 2 trials" in result.output and "registered retry-c v1" in result.output
    final = mlflow.get_run(mlflow.MlflowClient().get_model_version("retry-c", "1").run_id)
    parent = final.data.tags["mlflow.parentRunId"]  # the final model's run sits under its tuning run
    assert mlflow.get_run(parent).data.tags["retryopt.kind"] == "tuning"
