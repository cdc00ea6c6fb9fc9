"""Probability-quality metrics for the retry model: discrimination and calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Count-weighted mean |observed rate − mean prediction| over equal-width probability bins."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    observed = np.bincount(which, weights=y, minlength=bins)
    predicted = np.bincount(which, weights=p, minlength=bins)
    filled = counts > 0
    gaps = np.abs(observed[filled] - predicted[filled]) / counts[filled]
    return float(np.sum(gaps * counts[filled]) / len(y))


def probability_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, log loss, Brier score, ECE and base rates of one set of predictions."""
    y = np.asarray(y, dtype=np.int8)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    both_classes = 0 < y.sum() < len(y)
    return {
        "rows": float(len(y)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "mean_prediction": float(p.mean()) if len(y) else float("nan"),
        "auc": float(roc_auc_score(y, p)) if both_classes else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "brier": float(brier_score_loss(y, p)) if len(y) else float("nan"),
        "ece": expected_calibration_error(y, p),
    }


def metrics_by_group(
    y: np.ndarray, p: np.ndarray, groups: pd.Series, min_rows: int = 200
) -> dict[str, dict[str, float]]:
    """`probability_metrics` per group value with at least `min_rows` rows."""
    out: dict[str, dict[str, float]] = {}
    values = groups.fillna("missing").astype(str).to_numpy()
    for value in sorted(set(values)):
        mask = values == value
        if mask.sum() >= min_rows:
            out[value] = probability_metrics(np.asarray(y)[mask], np.asarray(p)[mask])
    return out


def customer_history_groups(features: pd.DataFrame) -> pd.Series:
    """What each row's customer history holds: a funds bracket, earlier failures only, or nothing known.

    The funds-bracket features place a candidate in one customer's own pay cycle; such
    customer-specific positions are what a model can over-trust out of sample, so the holdout
    metrics are broken down by these groups where it would show (mean prediction vs success rate).
    """
    failed = features["customer_prior_failed_invoices"].fillna(0).to_numpy() > 0
    bracket = features["days_from_funds_back_day_of_month"].notna().to_numpy()
    labels = np.where(bracket, "funds_bracket", np.where(failed, "earlier_failures_only", "no_earlier_failure"))
    return pd.Series(labels, index=features.index)


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """Mean prediction against observed rate per equal-width bin (for the calibration plot)."""
    frame = pd.DataFrame({"y": np.asarray(y, dtype=float), "p": np.asarray(p, dtype=float)})
    frame["bin"] = np.minimum((frame["p"] * bins).astype(int), bins - 1)
    table = frame.groupby("bin").agg(mean_prediction=("p", "mean"), observed_rate=("y", "mean"), rows=("y", "size"))
    return table.reset_index()
