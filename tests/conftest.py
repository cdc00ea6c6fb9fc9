"""Suite-wide safety net: no test writes a store, an MLflow run or a compiled model outside a scratch directory."""

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
    # Apps and servers under test predict with LightGBM: compiling a model (the shipped one takes
    # ~85 s) is tested on its own, on tiny boosters (tests/test_compiled.py).
    os.environ.setdefault("RETRYOPT_COMPILED_INFERENCE", "false")
    os.environ.setdefault("RETRYOPT_COMPILED_CACHE_DIR", str(scratch / "compiled"))
