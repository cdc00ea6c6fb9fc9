"""Suite-wide safety net: no test writes a store or an MLflow run into the working tree."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Point the default store and MLflow at a scratch directory unless a test sets its own."""
    scratch = Path(tempfile.mkdtemp(prefix="retryopt-tests-"))
    os.environ.setdefault("RETRYOPT_DATABASE_URL", f"sqlite:///{scratch / 'store.db'}")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{scratch / 'mlflow.db'}")
