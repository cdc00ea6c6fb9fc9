"""The model bundle: the one thing that crosses from training to serving.

A bundle is a directory holding the LightGBM model, its isotonic calibration, and a manifest
(format, feature list and spec hash, library versions, metrics, data summary, signature). Serving
loads it with `load_bundle`, which refuses anything it does not understand with a clear reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.candidates import CATEGORICAL_FEATURES, FEATURE_COLUMNS, feature_spec_version
from features.compiled import CompiledSlot

BUNDLE_FORMAT = "retryopt-bundle/1"
MANIFEST = "manifest.json"
MODEL_FILE = "model.txt"
CALIBRATION_FILE = "calibration.json"


class BundleError(Exception):
    """The bundle cannot be served; the message says why and what to do."""


@dataclass(frozen=True)
class Bundle:
    """A loaded, validated model: features in, calibrated success probabilities out."""

    path: Path
    manifest: dict[str, Any]
    booster: lgb.Booster
    calibration_x: np.ndarray
    calibration_y: np.ndarray
    # The model compiled to native code (features.compiled), once a Compiler has filled it; until
    # then, or without one, LightGBM predicts. It belongs to this bundle's model only.
    compiled: CompiledSlot = field(default_factory=CompiledSlot, compare=False, repr=False)

    @property
    def model_version(self) -> str:
        """The version string reported with every decision."""
        return str(self.manifest["model_version"])

    @property
    def model_file(self) -> Path:
        """The LightGBM model text inside the bundle."""
        return self.path / MODEL_FILE

    def compile_now(self, cache_dir: Path | None = None) -> None:
        """Compile the model (or load it from the cache) in this thread, for batch work that should not
        start on LightGBM; a failure leaves LightGBM predicting and says why in `compiled`."""
        from features.compiled import Compiler, default_cache_dir

        Compiler(cache_dir or default_cache_dir()).run(self.compiled, self.model_file, self.booster)

    def raw_probability(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Uncalibrated booster probability of each row: the compiled model when it is ready, else LightGBM."""
        matrix = feature_matrix(features)
        compiled = self.compiled.predictor  # read once: set by the compile job, never unset
        if compiled is not None:
            return compiled.raw_probability(matrix)
        return self.lightgbm_probability(matrix)

    def lightgbm_probability(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Uncalibrated probability from LightGBM itself (`Booster.predict`, one thread)."""
        return np.asarray(self.booster.predict(feature_matrix(features), num_threads=1), dtype=np.float64)

    def predict(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Calibrated success probability of each row of a `build_retry_features` frame (or its matrix)."""
        return calibrate(self.raw_probability(features), self.calibration_x, self.calibration_y)

    def contributions(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Per-feature log-odds contributions (LightGBM `pred_contrib`); last column is the bias."""
        return np.asarray(self.booster.predict(feature_matrix(features), pred_contrib=True, num_threads=1))


def feature_matrix(features: pd.DataFrame | np.ndarray) -> np.ndarray:
    """The float64 model input of a feature frame (`FEATURE_COLUMNS`, in that order) or matrix.

    A matrix is taken as it is (columns in `FEATURE_COLUMNS` order); a frame whose columns are
    already in that order is read without copying.
    """
    if isinstance(features, np.ndarray):
        return np.asarray(features, dtype=np.float64)
    if tuple(features.columns) != FEATURE_COLUMNS:
        features = features.loc[:, list(FEATURE_COLUMNS)]
    return np.asarray(features.to_numpy(dtype=np.float64, copy=False))


# Isotonic calibration maps the score's tails to exactly 0 or 1; no retry is certain either way,
# and a single surprise at p = 0 would cost ~14 nats of log loss, so probabilities stay inside.
PROBABILITY_FLOOR = 1e-3


def calibrate(raw: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Apply a monotone (isotonic) calibration map given as breakpoints, kept off exact 0 and 1."""
    return np.clip(np.interp(raw, x, y), PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)


def signature() -> dict[str, Any]:
    """The model's input/output signature, as written into every manifest."""
    return {
        "inputs": [
            {"name": name, "type": "double", "categorical": name in CATEGORICAL_FEATURES} for name in FEATURE_COLUMNS
        ],
        "outputs": [{"name": "success_probability", "type": "double"}],
    }


def save_bundle(
    directory: Path,
    booster: lgb.Booster,
    calibration_x: np.ndarray,
    calibration_y: np.ndarray,
    manifest: dict[str, Any],
) -> Path:
    """Write a bundle; `manifest` holds the training facts (version, metrics, data summary...)."""
    directory.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(directory / MODEL_FILE))
    (directory / CALIBRATION_FILE).write_text(
        json.dumps({"method": "isotonic", "x": list(map(float, calibration_x)), "y": list(map(float, calibration_y))})
    )
    full = {
        "format": BUNDLE_FORMAT,
        "feature_spec": feature_spec_version(),
        "features": list(FEATURE_COLUMNS),
        "categorical_features": list(CATEGORICAL_FEATURES),
        "signature": signature(),
        **manifest,
    }
    (directory / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    return directory


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a bundle file, or a BundleError naming the file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path.name} is missing in {path.parent}") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object")
    return data


def load_bundle(directory: str | Path) -> Bundle:
    """Load and validate a bundle; raise BundleError with the reason when it cannot be served."""
    path = Path(directory)
    if not path.is_dir():
        raise BundleError(f"model directory {path} does not exist")
    manifest = _read_json(path / MANIFEST)
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: unknown bundle format {manifest.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    if "model_version" not in manifest:
        raise BundleError(f"{path}: manifest has no model_version")
    if manifest.get("features") != list(FEATURE_COLUMNS) or manifest.get("feature_spec") != feature_spec_version():
        raise BundleError(
            f"{path}: model was trained on feature spec {manifest.get('feature_spec')!r}, this build computes "
            f"{feature_spec_version()!r}; retrain it with `retryopt train`"
        )
    try:
        booster = lgb.Booster(model_file=str(path / MODEL_FILE))
    except Exception as exc:  # LightGBM raises its own error types for unreadable models
        raise BundleError(f"{path / MODEL_FILE} is not a readable LightGBM model: {exc}") from None
    if booster.feature_name() != list(FEATURE_COLUMNS):
        raise BundleError(f"{path}: the model's features differ from its manifest")
    calibration = _read_json(path / CALIBRATION_FILE)
    x = np.asarray(calibration.get("x", []), dtype=np.float64)
    y = np.asarray(calibration.get("y", []), dtype=np.float64)
    if len(x) < 2 or len(x) != len(y) or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
        raise BundleError(f"{path / CALIBRATION_FILE}: calibration must be two equal-length increasing lists")
    return Bundle(path=path, manifest=manifest, booster=booster, calibration_x=x, calibration_y=y)
