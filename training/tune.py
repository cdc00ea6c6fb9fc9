"""Hyper-parameter tuning: an Optuna study over LightGBM's parameters on the fixed time split.

The split is made once, before the study, with `time_split`: every trial fits on the `train` part
and is scored on the `early_stop` part (the objective is its best log loss), so the calibration and
test parts never influence the choice. Trials are pruned by a LightGBM callback that reports the
validation log loss to the trial (what `optuna_integration.LightGBMPruningCallback` does, without
the extra package). The study lives in a storage (default: `sqlite:///optuna.db`) and is resumed
when it exists, so `--tune 20` twice gives 40 trials. Each trial is a nested MLflow run under a
tuning run; after the study, `train_model` with the best parameters writes the bundle.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd

from features.candidates import CATEGORICAL_FEATURES
from training.train import SPLITS, TrainConfig, TrainResult, build_training_table, time_split, train_model

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///optuna.db"
DEFAULT_STUDY = "retryopt-lgbm"
METRIC = "binary_logloss"
VALID_NAME = "early_stop"
# Trials are compared at equal total shrinkage (rounds x learning rate), not at equal rounds:
# at round 30 a trial with learning rate 0.01 is always behind one with 0.1, and a median pruner
# comparing rounds kills every slow learner (it did: all 12 trials below 0.06 of a 20-trial study,
# while the best trials had 0.012). One pruning step is this much shrinkage: every 10 rounds at
# 0.05, every 50 at 0.01. It also bounds the reports, each a committed transaction in the study's
# storage (~20 ms with SQLite, more than a boosting round on small data).
SHRINKAGE_PER_STEP = 0.5
# No pruning before 4 steps (a total shrinkage of 2: 200 rounds at 0.01, 20 at 0.1).
WARMUP_STEPS = 4
TUNED_PARAMS: tuple[str, ...] = (
    "learning_rate",
    "num_leaves",
    "min_data_in_leaf",
    "feature_fraction",
    "bagging_fraction",
    "lambda_l2",
    "cat_smooth",
)


@dataclass(frozen=True)
class TuningData:
    """The fixed fit and early-stopping parts of the time split, as float matrices."""

    train_x: pd.DataFrame
    train_y: np.ndarray
    valid_x: pd.DataFrame
    valid_y: np.ndarray


@dataclass(frozen=True)
class TuneResult:
    """What a tuning session produced: the study's best, the final model and the MLflow runs."""

    study_name: str
    storage_url: str
    trials_run: int  # in this session
    trials_total: int  # in the study, across sessions
    pruned: int  # in this session
    best_params: dict[str, Any]
    best_value: float
    config: TrainConfig  # the config the final model was trained with (best params applied)
    train_result: TrainResult
    parent_run_id: str | None
    seconds: float


def suggest_params(trial: optuna.Trial) -> dict[str, Any]:
    """The search space (log scales where the effect is multiplicative)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 255, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 1000, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 100.0, log=True),
        "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 100.0, log=True),
    }


def tuning_data(attempts: pd.DataFrame, config: TrainConfig) -> TuningData:
    """Split once, by time, exactly as `train_model` will; keep only the fit and early-stop parts."""
    table = build_training_table(attempts)
    split = time_split(table.invoice_first_failure, config.split_fractions)
    parts = {name: (split == name).to_numpy() for name in SPLITS[:2]}
    for name, mask in parts.items():
        if mask.sum() == 0 or len(np.unique(table.labels[mask])) < 2:
            raise ValueError(f"the {name} split has too few retries to tune on; supply more data")
    x, y = table.features, table.labels
    return TuningData(x[parts["train"]], y[parts["train"]], x[parts[VALID_NAME]], y[parts[VALID_NAME]])


class PruningCallback:
    """LightGBM callback: report the validation metric to the trial, stop it when the pruner says so."""

    order = 25  # after the evaluation is recorded, before early stopping (order 30) decides

    def __init__(
        self,
        trial: optuna.Trial,
        metric: str = METRIC,
        valid_name: str = VALID_NAME,
        shrinkage_per_step: float | None = SHRINKAGE_PER_STEP,
    ):
        """`shrinkage_per_step` None reports every round with the round as the step (as Optuna's
        integration does); a number reports once per that much total shrinkage (see above)."""
        self.trial, self.metric, self.valid_name = trial, metric, valid_name
        self.shrinkage_per_step = shrinkage_per_step
        self.step = -1  # last step reported
        self.last: tuple[int, float] | None = None  # (round, value) last reported

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        """Called by LightGBM after every boosting round."""
        step = self.step_of(env.iteration, float(env.params.get("learning_rate", 0.1)))
        if step <= self.step:
            return
        for data_name, metric, value, *_ in env.evaluation_result_list or []:
            if data_name == self.valid_name and metric == self.metric:
                self.trial.report(float(value), step=step)
                self.step, self.last = step, (env.iteration, float(value))
                if self.trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at round {env.iteration} ({metric} {value:.5f})")
                return
        raise ValueError(f"no {self.metric} on {self.valid_name!r} to report; is it in valid_sets/metric?")

    def step_of(self, iteration: int, learning_rate: float) -> int:
        """The pruning step of a round: the round itself, or its total shrinkage in steps."""
        if self.shrinkage_per_step is None:
            return iteration
        return int((iteration + 1) * learning_rate / self.shrinkage_per_step + 1e-9)


def fit_trial(
    params: dict[str, Any], data: TuningData, config: TrainConfig, callbacks: list[Callable[..., None]]
) -> lgb.Booster:
    """One LightGBM fit with early stopping on the early-stop part (a fresh Dataset: the trial may
    change min_data_in_leaf, which LightGBM fixes when a Dataset is constructed)."""
    train_set = lgb.Dataset(data.train_x, label=data.train_y, categorical_feature=list(CATEGORICAL_FEATURES))
    valid_set = lgb.Dataset(data.valid_x, label=data.valid_y, reference=train_set)
    return lgb.train(
        params,
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[valid_set],
        valid_names=[VALID_NAME],
        callbacks=[*callbacks, lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )


def trial_params(trial: optuna.Trial, config: TrainConfig) -> dict[str, Any]:
    """The config's fixed parameters with the trial's choices over them."""
    return {"num_threads": 0, **config.params, **suggest_params(trial), "metric": METRIC, "seed": config.seed}


def make_objective(
    data: TuningData, config: TrainConfig, track: bool, shrinkage_per_step: float | None = SHRINKAGE_PER_STEP
) -> Callable[[optuna.Trial], float]:
    """The study's objective: early-stop log loss of a fit with the trial's parameters."""

    def objective(trial: optuna.Trial) -> float:
        params = trial_params(trial, config)
        run = _start_trial_run(trial) if track else None
        pruning = PruningCallback(trial, shrinkage_per_step=shrinkage_per_step)
        status = "FAILED"
        try:
            booster = fit_trial(params, data, config, [pruning])
            value = float(booster.best_score[VALID_NAME][METRIC])
            trial.set_user_attr("best_iteration", int(booster.best_iteration))
            if run is not None:
                _log_trial_result(value, booster.best_iteration)
            status = "FINISHED"
            return value
        except optuna.TrialPruned:
            status = "KILLED"  # MLflow's word for a run stopped on purpose
            if run is not None:
                _log_pruned(pruning.last)
            raise
        finally:
            if run is not None:
                import mlflow

                mlflow.end_run(status=status)

    return objective


def _start_trial_run(trial: optuna.Trial) -> Any:
    """A nested MLflow run for the trial, holding its parameters."""
    import mlflow

    run = mlflow.start_run(run_name=f"trial-{trial.number}", nested=True)
    mlflow.set_tags({"retryopt.kind": "tuning_trial", "optuna.trial_number": str(trial.number)})
    mlflow.log_params(trial.params)
    return run


def _log_trial_result(value: float, best_iteration: int) -> None:
    """The trial's objective and where early stopping ended it."""
    import mlflow

    mlflow.log_metrics({"early_stop.log_loss": value, "best_iteration": float(best_iteration)})
    mlflow.set_tag("optuna.state", "COMPLETE")


def _log_pruned(last: tuple[int, float] | None) -> None:
    """That the trial was pruned, and the value it was pruned on."""
    import mlflow

    mlflow.set_tag("optuna.state", "PRUNED")
    if last is not None:
        mlflow.log_metric("early_stop.log_loss", last[1], step=last[0])


def open_study(storage_url: str, study_name: str, seed: int) -> optuna.Study:
    """Create the study or resume it from its storage, with a TPE sampler and a median pruner."""
    study = optuna.create_study(
        storage=storage_url,
        study_name=study_name,
        direction="minimize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=WARMUP_STEPS),
        load_if_exists=True,
    )
    # Seeded per session by how many trials exist: a resumed study draws new points, and the same
    # sequence of sessions draws the same points again.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def safe_storage_label(storage_url: str) -> str:
    """The storage URL without its password, for logs and MLflow tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage_url).render_as_string(hide_password=True)
    except Exception:  # not a database URL (e.g. a journal file): nothing secret to hide
        return storage_url


def tune(
    attempts: pd.DataFrame,
    out_dir: Path,
    config: TrainConfig | None = None,
    n_trials: int = 20,
    storage_url: str = DEFAULT_STORAGE,
    study_name: str = DEFAULT_STUDY,
    track: bool = True,
    shrinkage_per_step: float | None = SHRINKAGE_PER_STEP,
) -> TuneResult:
    """Run `n_trials` more trials of the study, then train the final model with its best parameters.

    With `track`, MLflow must be configured (`configure_mlflow`): a tuning run holds one nested run
    per trial and, at the end, the best parameters, the best value and the study's plots.
    """
    if n_trials < 1:
        raise ValueError("the number of trials must be at least 1")
    config = config or TrainConfig()
    started = time.perf_counter()
    data = tuning_data(attempts, config)
    study = open_study(storage_url, study_name, config.seed)
    before = len(study.trials)
    parent_id = _start_parent_run(study_name, storage_url, n_trials, data) if track else None
    status = "FAILED"
    try:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is noise here
        try:
            study.optimize(make_objective(data, config, track, shrinkage_per_step), n_trials=n_trials)
        finally:
            optuna.logging.set_verbosity(verbosity)
        session = study.trials[before:]
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in session)
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            raise ValueError("no trial of the study completed; nothing to train the final model with")
        best_config = replace(config, params={**config.params, **study.best_params})
        result = train_model(attempts, Path(out_dir), best_config)
        if track:
            _log_study(study, len(session), pruned)
        status = "FINISHED"
    finally:
        if track:
            import mlflow

            mlflow.end_run(status=status)
    return TuneResult(
        study_name=study_name,
        storage_url=safe_storage_label(storage_url),
        trials_run=len(session),
        trials_total=len(study.trials),
        pruned=pruned,
        best_params=dict(study.best_params),
        best_value=float(study.best_value),
        config=best_config,
        train_result=result,
        parent_run_id=parent_id,
        seconds=time.perf_counter() - started,
    )


def _start_parent_run(study_name: str, storage_url: str, n_trials: int, data: TuningData) -> str:
    """The tuning session's MLflow run, parent of the trial runs; returns its id."""
    import mlflow

    run = mlflow.start_run(run_name=f"tune-{study_name}")
    mlflow.set_tags(
        {
            "retryopt.kind": "tuning",
            "optuna.study_name": study_name,
            "optuna.storage": safe_storage_label(storage_url),
        }
    )
    mlflow.log_params(
        {
            "n_trials": n_trials,
            "train_rows": len(data.train_y),
            "early_stop_rows": len(data.valid_y),
            "search_space": ",".join(TUNED_PARAMS),
        }
    )
    return str(run.info.run_id)


def _log_study(study: optuna.Study, trials_run: int, pruned: int) -> None:
    """Best parameters and value, trial counts, the trials table and the study's plots."""
    import mlflow

    mlflow.log_params({f"best.{k}": v for k, v in study.best_params.items()})
    mlflow.log_metrics(
        {
            "best.early_stop.log_loss": float(study.best_value),
            "best.trial_number": float(study.best_trial.number),
            "trials_run": float(trials_run),
            "trials_pruned": float(pruned),
            "trials_total": float(len(study.trials)),
        }
    )
    mlflow.log_text(study.trials_dataframe().to_csv(index=False), "tuning/trials.csv")
    figures = study_figures(study)  # before pyplot is imported: it sets the headless backend
    import matplotlib.pyplot as plt

    for name, figure in figures.items():
        mlflow.log_figure(figure, f"tuning/{name}.png")
        plt.close(figure)


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Optimization history and parameter importances (Optuna's matplotlib plots, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as optuna_plots

    figures: dict[str, Any] = {}
    plots: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: optuna_plots.plot_optimization_history(study),
        "param_importances": lambda: optuna_plots.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        ),
    }
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = plot()
            except (ValueError, RuntimeError) as exc:  # e.g. importances need two completed trials
                logger.info("skipping the %s plot: %s", name, exc)
                continue
        figure = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figures[name] = figure
    return figures


def link_to_tuning_run(run_id: str, parent_run_id: str) -> None:
    """Show the final model's run under its tuning run (what `start_run(nested=True)` records)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)
    client.set_tag(run_id, "retryopt.kind", "tuned_model")
    client.set_tag(parent_run_id, "retryopt.final_run_id", run_id)
