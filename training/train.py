"""Training: attempts → retry table → time split → LightGBM + isotonic calibration → bundle.

Every step is a small function; `train_model` wires them and `log_run` records the result in
MLflow. The split is by each invoice's first failure time, so a whole invoice lands in one part
and the holdout is strictly later than what the model learned from.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import lightgbm as lgb
import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

import features
from features.bundle import calibrate, save_bundle
from features.candidates import (
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    VOCABULARIES,
    build_retry_features,
    feature_spec_version,
    retry_training_rows,
)
from features.taxonomy import decline_category
from training.metrics import customer_history_groups, metrics_by_group, probability_metrics

SPLITS = ("train", "early_stop", "calibration", "test")

# The logistic baseline is a reference figure, not the model: past ~100k rows its test metrics
# stop moving (AUC within ~0.001), while its fit grows with the data (3.8 s on 447k rows).
BASELINE_MAX_ROWS = 100_000


@dataclass(frozen=True)
class TrainConfig:
    """What a training run may vary; the defaults build the shipped model."""

    seed: int = 7
    # Shares of invoices by first-failure time, oldest first: fit, early stopping, calibration, test.
    split_fractions: tuple[float, float, float, float] = (0.6, 0.1, 0.15, 0.15)
    num_boost_round: int = 600
    early_stopping_rounds: int = 50
    # Rows the logistic baseline is fitted on (a stratified sample of the fit split); None: all.
    baseline_max_rows: int | None = BASELINE_MAX_ROWS
    params: dict[str, Any] = field(
        default_factory=lambda: {
            "objective": "binary",
            "learning_rate": 0.05,
            "num_leaves": 63,
            # Depth-capped leaf-wise trees: the uncapped ones averaged depth 14 (max 23), and exact
            # TreeSHAP for the reasons costs O(trees x leaves x depth^2): 7.7 -> 5.4 ms a row at
            # depth 8, holdout AUC 0.7523 -> 0.7529 on the 1M simulation (bench/README.md).
            "max_depth": 8,
            "min_data_in_leaf": 100,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "cat_smooth": 10.0,
            "max_cat_to_onehot": 8,
            "verbose": -1,
        }
    )


@dataclass(frozen=True)
class TrainingTable:
    """Features, labels and the facts needed to split and report, one row per historical retry."""

    features: pd.DataFrame
    labels: np.ndarray
    invoice_first_failure: pd.Series  # per row: its invoice's first attempt time
    decline_category: pd.Series  # per row: the category of the decline it retries


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: the bundle's directory, its manifest and the evaluation."""

    bundle_dir: Path
    manifest: dict[str, Any]
    booster: lgb.Booster
    baseline: Pipeline
    table: TrainingTable
    split: pd.Series
    test_probability: np.ndarray
    test_baseline_probability: np.ndarray
    calibration_x: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))
    calibration_y: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))


def build_training_table(attempts: pd.DataFrame) -> TrainingTable:
    """One row per retry of a failed invoice, with point-in-time features and its outcome."""
    rows = retry_training_rows(attempts)
    if rows.empty:
        raise ValueError("no retries to learn from: the data has no invoice with a failed first attempt and a retry")
    matrix = build_retry_features(attempts, rows)
    first_failure = _first_attempt_of(attempts, rows)
    last_category = pd.Series(
        np.asarray(VOCABULARIES["last_decline_category"], dtype=object)[
            matrix["last_decline_category"].fillna(0).astype(int).to_numpy()
        ],
        index=rows.index,
    ).where(matrix["last_decline_category"].notna(), "missing")
    return TrainingTable(
        features=matrix.reset_index(drop=True),
        labels=rows["succeeded"].astype(int).to_numpy(),
        invoice_first_failure=pd.to_datetime(first_failure, utc=True).reset_index(drop=True),
        decline_category=last_category.astype(str).reset_index(drop=True),
    )


def _first_attempt_of(attempts: pd.DataFrame, rows: pd.DataFrame) -> pd.Series:
    """Each row's invoice's earliest `attempted_at` (a groupby-min and map, without sorting the ids)."""
    ids = attempts["invoice_id"]
    at = attempts["attempted_at"]
    if ids.isna().any() or at.isna().any():  # not valid attempts data: the plain groupby
        return rows["invoice_id"].map(attempts.groupby("invoice_id")["attempted_at"].min())
    # One numbering of the attempts' and the rows' ids (every row's invoice is among the attempts'):
    # hashing both beats looking 740k row ids up in an index of the distinct ones.
    codes = np.asarray(pd.factorize(pd.concat([ids, rows["invoice_id"]], ignore_index=True))[0])
    codes, row_codes = codes[: len(ids)], codes[len(ids) :]
    order = np.lexsort((pd.DatetimeIndex(pd.to_datetime(at, utc=True)).as_unit("ns").asi8, codes))
    first_of_group = np.full(codes.max() + 1, -1, dtype=np.int64)
    sorted_codes = codes[order]
    is_first = np.ones(len(order), dtype=bool)
    is_first[1:] = sorted_codes[1:] != sorted_codes[:-1]
    first_of_group[sorted_codes[is_first]] = order[is_first]
    picked = at.iloc[first_of_group[row_codes]]
    # `.array` keeps the datetime64 values; `.to_numpy()` of a tz-aware column boxes every one of
    # them as a Timestamp and back (~3 s of the 1M-attempt table).
    return pd.Series(picked.array, index=rows.index, name=rows["invoice_id"].name)


def time_split(first_failure: pd.Series, fractions: tuple[float, ...]) -> pd.Series:
    """Name of each row's split, by its invoice's first failure time (whole invoices per split)."""
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    invoices = first_failure.drop_duplicates().sort_values()
    edges = np.cumsum(fractions)[:-1]
    cut_times = [invoices.iloc[min(int(e * len(invoices)), len(invoices) - 1)] for e in edges]
    labels = np.full(len(first_failure), SPLITS[-1], dtype=object)
    for name, cut in reversed(list(zip(SPLITS[:-1], cut_times, strict=True))):
        labels[(first_failure < cut).to_numpy()] = name
    return pd.Series(labels, index=first_failure.index)


def fit_booster(
    train: pd.DataFrame, y_train: np.ndarray, valid: pd.DataFrame, y_valid: np.ndarray, config: TrainConfig
) -> lgb.Booster:
    """LightGBM with fixed-vocabulary categoricals and early stopping on a later time slice."""
    # num_threads 0 (all cores) unless the config pins it: on a shared machine 1 can be much faster.
    params = {"num_threads": 0, **config.params, "seed": config.seed}
    # The features are all float columns: handing LightGBM one float matrix skips its per-column
    # pandas checks and conversion (same bins, same model).
    train_set = lgb.Dataset(
        train.to_numpy(dtype=np.float64),
        label=y_train,
        feature_name=list(train.columns),
        categorical_feature=list(CATEGORICAL_FEATURES),
        free_raw_data=False,
    )
    valid_set = lgb.Dataset(valid.to_numpy(dtype=np.float64), label=y_valid, reference=train_set)
    return lgb.train(
        params,
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )


def fit_isotonic(raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic calibration as increasing breakpoints (applied with np.interp at serving)."""
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
    x = np.asarray(iso.X_thresholds_, dtype=np.float64)
    fitted = np.asarray(iso.y_thresholds_, dtype=np.float64)
    return np.concatenate([[0.0], x, [1.0]]), np.concatenate([[fitted[0]], fitted, [fitted[-1]]])


def baseline_sample(y_train: np.ndarray, max_rows: int = BASELINE_MAX_ROWS, seed: int = 0) -> np.ndarray:
    """Row positions of a seeded sample of at most `max_rows`, stratified by label (all rows if fewer)."""
    y = np.asarray(y_train)
    if len(y) <= max_rows:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        take = max(1, round(len(members) * max_rows / len(y)))
        picked.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(picked))


def fit_logistic_baseline(train: pd.DataFrame, y_train: np.ndarray, max_rows: int | None = None) -> Pipeline:
    """The baseline to beat: logistic regression on the same features (one-hot categoricals).

    Fitted on a label-stratified sample of at most `max_rows` training rows (None: all rows).
    """
    if max_rows is not None and len(train) > max_rows:
        rows = baseline_sample(y_train, max_rows)
        train, y_train = train.iloc[rows], np.asarray(y_train)[rows]
    numeric = [c for c in FEATURE_COLUMNS if c not in CATEGORICAL_FEATURES]
    prepare = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value=-1.0),
                    OneHotEncoder(handle_unknown="ignore", min_frequency=20),
                ),
                list(CATEGORICAL_FEATURES),
            ),
        ]
    )
    # Newton steps with the exact Hessian (97 columns) reach the optimum in ~5 iterations, where
    # lbfgs took ~120 and stopped short of it (test AUC 0.70636 vs 0.70629 on 1M attempts; fit
    # 0.3 vs 1.1 s); the objective (L2, C=1) is the same.
    model = Pipeline(
        [("prepare", prepare), ("logistic", LogisticRegression(max_iter=500, C=1.0, solver="newton-cholesky"))]
    )
    with one_blas_thread():
        return model.fit(train, y_train)


def baseline_probability(baseline: Pipeline, features: pd.DataFrame) -> np.ndarray:
    """The baseline's success probability of each row (one BLAS thread, as it was fitted)."""
    with one_blas_thread():
        return np.asarray(baseline.predict_proba(features)[:, 1])


def one_blas_thread() -> threadpool_limits:
    """Limit BLAS to one thread: the baseline's products (~100k x 97) are too small to share.

    Measured with lbfgs (~120 matrix-vector products): OpenBLAS's two threads on the 2-core
    machine took 4.5 s, one thread 1.1 s. One thread also keeps the fit's summation order fixed.
    """
    return threadpool_limits(limits=1, user_api="blas")


def data_summary(attempts: pd.DataFrame, table: TrainingTable) -> dict[str, Any]:
    """What the model was trained on, for the manifest and the model card."""
    categories = decline_category(attempts["decline_code"]).fillna("none").value_counts(normalize=True)
    return {
        "attempts": len(attempts),
        "invoices": int(attempts["invoice_id"].nunique()),
        "retries": len(table.labels),
        "retry_success_rate": float(table.labels.mean()),
        "first_attempt": str(attempts["attempted_at"].min()),
        "last_attempt": str(attempts["attempted_at"].max()),
        "decline_mix": {k: round(float(v), 4) for k, v in categories.items()},
        "countries": int(attempts["card_country"].nunique()) if "card_country" in attempts else 0,
    }


def library_versions() -> dict[str, str]:
    """Versions that produced the bundle (serving checks the format, people read the rest)."""
    return {
        "python": platform.python_version(),
        "lightgbm": lgb.__version__,
        "scikit-learn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "retryopt": getattr(features, "__version__", "0.1.0"),
    }


def new_model_version(created: datetime) -> str:
    """Time, feature spec and a random tag: two models trained in the same second stay distinct."""
    return f"lgbm-{created:%Y%m%d%H%M%S}-{feature_spec_version()[:6]}-{uuid4().hex[:4]}"


def train_model(attempts: pd.DataFrame, out_dir: Path, config: TrainConfig | None = None) -> TrainResult:
    """Train, calibrate and evaluate on a time split, then write a servable bundle to `out_dir`."""
    config = config or TrainConfig()
    table = build_training_table(attempts)
    split = time_split(table.invoice_first_failure, config.split_fractions)
    parts = {name: (split == name).to_numpy() for name in SPLITS}
    for name, mask in parts.items():
        if mask.sum() == 0 or len(np.unique(table.labels[mask])) < 2:
            raise ValueError(f"the {name} split has too few retries to learn from; supply more data")
    x, y = table.features, table.labels

    x_train, y_train = x[parts["train"]], y[parts["train"]]
    booster = fit_booster(x_train, y_train, x[parts["early_stop"]], y[parts["early_stop"]], config)
    raw_calibration = booster.predict(x[parts["calibration"]].to_numpy(dtype=np.float64))
    cal_x, cal_y = fit_isotonic(np.asarray(raw_calibration), y[parts["calibration"]])
    test_raw = np.asarray(booster.predict(x[parts["test"]].to_numpy(dtype=np.float64)))
    test_p = calibrate(test_raw, cal_x, cal_y)

    baseline = fit_logistic_baseline(x_train, y_train, config.baseline_max_rows)
    baseline_p = baseline_probability(baseline, x[parts["test"]])

    y_test = y[parts["test"]]
    metrics = {
        "test": probability_metrics(y_test, test_p),
        "test_uncalibrated": probability_metrics(y_test, test_raw),
        "baseline_logistic_test": probability_metrics(y_test, baseline_p),
        "test_by_decline_category": metrics_by_group(y_test, test_p, table.decline_category[parts["test"]]),
        "test_by_customer_history": metrics_by_group(y_test, test_p, customer_history_groups(x[parts["test"]])),
    }
    created = datetime.now(UTC)
    manifest = {
        "model_version": new_model_version(created),
        "created_at": created.isoformat(),
        "versions": library_versions(),
        "metrics": metrics,
        "data_summary": data_summary(attempts, table),
        "split": {
            "method": "by invoice first-failure time",
            "fractions": dict(zip(SPLITS, config.split_fractions, strict=True)),
            "rows": {name: int(mask.sum()) for name, mask in parts.items()},
        },
        "training": {"params": config.params, "seed": config.seed, "best_iteration": booster.best_iteration},
        "calibration": {"method": "isotonic", "fitted_on": "calibration split"},
    }
    bundle_dir = save_bundle(Path(out_dir), booster, cal_x, cal_y, manifest)
    return TrainResult(
        bundle_dir=bundle_dir,
        manifest=manifest,
        booster=booster,
        baseline=baseline,
        table=table,
        split=split,
        test_probability=test_p,
        test_baseline_probability=baseline_p,
        calibration_x=cal_x,
        calibration_y=cal_y,
    )
