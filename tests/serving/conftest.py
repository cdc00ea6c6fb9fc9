"""Fixtures of the serving tests: a tiny model bundle trained once per session, an app, a client."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from features.bundle import save_bundle
from features.candidates import FEATURE_COLUMNS, build_retry_features, retry_training_rows
from serving.app import create_app
from serving.schemas import DECISION_EXAMPLE
from serving.settings import Settings

CODES = ("insufficient_funds", "do_not_honor", "generic_decline", "processing_error")


def synthetic_attempts(n_invoices: int, seed: int) -> pd.DataFrame:
    """Invoices whose retries succeed more early in the customer's month (a signal on local_day)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    start = pd.Timestamp("2026-01-01T00:00Z")
    for i in range(n_invoices):
        first = start + pd.Timedelta(hours=int(rng.integers(0, 24 * 200)))
        at = first
        for n in range(int(rng.integers(2, 6))):
            if n > 0:
                at = at + pd.Timedelta(hours=int(rng.integers(24, 24 * 5)))
            chance = 0.45 if at.tz_convert("America/Chicago").day <= 5 else 0.12
            succeeded = n > 0 and bool(rng.random() < chance)
            rows.append(
                {
                    "invoice_id": f"in_{i}",
                    "customer_id": f"cus_{i}",
                    "attempt_id": f"in_{i}_a{n}",
                    "attempted_at": at,
                    "amount": int(rng.integers(500, 20000)),
                    "currency": "usd",
                    "succeeded": succeeded,
                    "decline_code": None if succeeded else CODES[int(rng.integers(0, len(CODES)))],
                    "network_decline_code": None,
                    "merchant_advice_code": None,
                    "card_brand": "visa" if rng.random() < 0.6 else "mastercard",
                    "card_funding": "debit",
                    "card_country": "US",
                    "card_exp_month": 4,
                    "card_exp_year": 2028,
                    "customer_timezone": "America/Chicago",
                }
            )
            if succeeded:
                break
    frame = pd.DataFrame(rows)
    frame["attempted_at"] = pd.to_datetime(frame["attempted_at"], utc=True)
    # Invoice-level context must be constant within an invoice.
    for column in ("amount", "card_brand"):
        frame[column] = frame.groupby("invoice_id")[column].transform("first")
    return frame


def train_tiny_bundle(directory: Path) -> Path:
    """A 20-tree LightGBM model with an identity calibration, saved as a real bundle."""
    attempts = synthetic_attempts(400, seed=7)
    rows = retry_training_rows(attempts)
    features = build_retry_features(attempts, rows)
    labels = rows["succeeded"].astype(int).to_numpy()
    params = {
        "objective": "binary",
        "num_leaves": 7,
        "min_data_in_leaf": 10,
        "learning_rate": 0.1,
        "verbose": -1,
        "seed": 7,
        "num_threads": 1,
    }
    data = lgb.Dataset(features.loc[:, list(FEATURE_COLUMNS)], label=labels, free_raw_data=False)
    booster = lgb.train(params, data, num_boost_round=20)
    return save_bundle(
        directory,
        booster,
        np.array([0.0, 1.0]),
        np.array([0.0, 1.0]),
        {"model_version": "test-0", "trained_on": "tests/serving synthetic attempts"},
    )


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle, trained once for the whole session."""
    return train_tiny_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def settings(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Default settings serving the tiny bundle, with a store of its own."""
    store = tmp_path_factory.mktemp("store") / "retryopt.db"
    return Settings(model_dir=bundle_dir, database_url=f"sqlite:///{store}")


@pytest.fixture(scope="session")
def app(settings: Settings) -> FastAPI:
    """One app for the session (its model loads once)."""
    return create_app(settings)


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[TestClient]:
    """A client with the app's lifespan run, so the model is loaded."""
    with TestClient(app) as test_client:
        yield test_client


# The contract's example request (shared/contract.md §2), as the OpenAPI document shows it.
BASE_REQUEST: dict[str, Any] = copy.deepcopy(DECISION_EXAMPLE)


@pytest.fixture
def request_body() -> dict[str, Any]:
    """A fresh copy of the contract's example request, to mutate per test."""
    return copy.deepcopy(BASE_REQUEST)
