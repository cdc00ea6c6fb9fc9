"""MLflow logging of a training run: parameters, metrics, plots, the bundle and the model.

MLflow is configured only when a command runs (`configure_mlflow`), never at import. The local
default is a SQLite store in the working directory; `MLFLOW_TRACKING_URI` wins when set.
"""

from __future__ import annotations

import os
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.candidates import FEATURE_COLUMNS
from training.metrics import calibration_table
from training.train import TrainConfig, TrainResult

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "retryopt"


def configure_mlflow(tracking_uri: str | None = None, experiment: str = EXPERIMENT) -> str:
    """Point MLflow at `tracking_uri`, else `MLFLOW_TRACKING_URI`, else the local SQLite store."""
    import mlflow

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    return uri


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metric dicts as MLflow keys (`test.auc`, `test_by_decline_category.insufficient_funds.ece`)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and np.isfinite(value):
            flat[name] = float(value)
    return flat


def calibration_figure(result: TrainResult) -> Any:
    """Reliability diagram of the calibrated model and the logistic baseline on the test split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y_test = result.table.labels[(result.split == "test").to_numpy()]
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, p in (
        ("LightGBM (calibrated)", result.test_probability),
        ("logistic baseline", result.test_baseline_probability),
    ):
        table = calibration_table(y_test, p)
        ax.plot(table["mean_prediction"], table["observed_rate"], marker="o", label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.set_xlabel("predicted success probability")
    ax.set_ylabel("observed success rate")
    ax.set_title("Calibration on the time-split holdout")
    ax.legend()
    fig.tight_layout()
    return fig


def importance_figure(result: TrainResult) -> Any:
    """Total gain per feature, largest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gain = pd.Series(result.booster.feature_importance("gain"), index=list(FEATURE_COLUMNS)).sort_values()
    fig, ax = plt.subplots(figsize=(6, 7))
    ax.barh(gain.index, gain.to_numpy())
    ax.set_xlabel("total gain")
    ax.set_title("Feature importance")
    fig.tight_layout()
    return fig


def log_run(result: TrainResult, config: TrainConfig, data_path: str | None = None) -> str:
    """Log one training run to the configured MLflow store; returns the run id."""
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.models import infer_signature

    with mlflow.start_run(run_name=result.manifest["model_version"]) as run:
        mlflow.log_params({f"lgbm.{k}": v for k, v in config.params.items()})
        mlflow.log_params(
            {
                "seed": config.seed,
                "split_fractions": ",".join(map(str, config.split_fractions)),
                "best_iteration": result.booster.best_iteration,
                "data_path": data_path or "",
                "model_version": result.manifest["model_version"],
            }
        )
        mlflow.log_metrics(flatten_metrics(result.manifest["metrics"]))
        for name, figure in (
            ("calibration.png", calibration_figure(result)),
            ("feature_importance.png", importance_figure(result)),
        ):
            mlflow.log_figure(figure, f"plots/{name}")
            plt.close(figure)
        mlflow.log_artifacts(str(result.bundle_dir), artifact_path="bundle")
        example = result.table.features.head(5)
        signature = infer_signature(example, result.booster.predict(example.to_numpy(dtype=np.float64)))
        # Pinned requirements: without them MLflow infers them in a subprocess (~9 s a run).
        mlflow.lightgbm.log_model(
            result.booster,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=[f"lightgbm=={lgb.__version__}", f"pandas=={pd.__version__}", f"numpy=={np.__version__}"],
        )
        return str(run.info.run_id)
