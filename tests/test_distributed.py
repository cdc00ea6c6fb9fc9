"""Dask training: same features, same split and the same quality as single-machine `train_model`.

The cluster tests use a real 2-worker `LocalCluster` with worker *processes* (LightGBM's network
is per process, so two workers in one process could not form a LightGBM cluster).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.bundle import load_bundle
from features.candidates import FEATURE_COLUMNS, retry_training_rows
from training.data import validate_attempts, write_attempts
from training.distributed import (
    INVOICE,
    LABEL,
    cut_times,
    early_stopping_round,
    leaf_values,
    loss_curve_partition,
    partition_by_customer,
    read_attempts,
    table_meta,
    table_partition,
    validate_partition,
    validated_meta,
    write_customer_partitions,
)
from training.simulate import simulate
from training.train import SPLITS, TrainConfig, TrainResult, build_training_table, time_split, train_model

FILES = 6
AUC_TOLERANCE = 0.01
# No row or feature subsampling on either side: bagging is drawn per worker in data-parallel
# LightGBM, which alone moved the small test's AUC by up to 0.011 between runs.
COMPARABLE = TrainConfig(
    params={**TrainConfig().params, "bagging_fraction": 1.0, "bagging_freq": 0, "feature_fraction": 1.0}
)


@pytest.fixture(scope="module")
def attempts() -> pd.DataFrame:
    """About 6,000 simulated invoices, as the contract's attempts."""
    return simulate(15000, seed=5).attempts


@pytest.fixture(scope="module")
def daily_files(attempts: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The attempts as time-ordered Parquet files (like daily exports): invoices span files."""
    directory = tmp_path_factory.mktemp("daily")
    ordered = attempts.sort_values("attempted_at", kind="stable")
    for index, rows in enumerate(np.array_split(np.arange(len(ordered)), FILES)):
        write_attempts(ordered.iloc[rows], directory / f"day-{index}.parquet")
    return directory


@pytest.fixture(scope="module")
def spanning_invoice(daily_files: Path) -> str:
    """An invoice with retries whose attempts are split over more than one file."""
    files = {path.name: pd.read_parquet(path, columns=[INVOICE, "attempted_at"]) for path in daily_files.iterdir()}
    located = pd.concat(frame.assign(file=name) for name, frame in files.items())
    spread = located.groupby(INVOICE).agg(files=("file", "nunique"), attempts=("file", "size"))
    candidates = spread[(spread["files"] > 1) & (spread["attempts"] >= 4)]
    assert len(candidates), "the fixture should split some invoices across files"
    return str(candidates.index[0])


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A real 2-worker, 1-thread-each LocalCluster with worker processes."""
    from training.distributed import connect

    with connect("local") as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def single(attempts: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """The single-machine reference model on the same data."""
    valid, _ = validate_attempts(attempts)
    return train_model(valid, tmp_path_factory.mktemp("single"), COMPARABLE)


def _invoice_rows(table: pd.DataFrame, invoice: str) -> pd.DataFrame:
    """One invoice's training rows, features and label only, in time order of their retries."""
    rows = table[table[INVOICE] == invoice]
    return rows[[*FEATURE_COLUMNS, LABEL]].reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Fast pieces (no cluster)


def test_cut_times_reproduce_time_split() -> None:
    times = pd.Series(pd.date_range("2025-01-01", periods=200, freq="7h", tz="UTC")).sample(frac=1, random_state=1)
    cuts = cut_times(times, TrainConfig().split_fractions)
    labels = np.asarray(SPLITS)[np.searchsorted(cuts, times.to_numpy(dtype="datetime64[ns]"), side="right")]
    assert (labels == time_split(times, TrainConfig().split_fractions).to_numpy()).all()


def test_round_choice_matches_lightgbm_early_stopping() -> None:
    """Training every round then cutting at the chosen round = `lgb.train` with early stopping."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(4000, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS))
    y = (rng.random(4000) < 1 / (1 + np.exp(-x.iloc[:, 0] - 0.5 * x.iloc[:, 1]))).astype(int)
    # One thread: OpenMP threads spin against each other on a busy 2-core runner.
    params = {"objective": "binary", "learning_rate": 0.3, "num_leaves": 15, "verbose": -1, "seed": 1, "num_threads": 1}
    train = lgb.Dataset(x[:3000], label=y[:3000])
    stopped = lgb.train(
        params,
        train,
        200,
        valid_sets=[lgb.Dataset(x[3000:], label=y[3000:], reference=train)],
        callbacks=[lgb.early_stopping(10, verbose=False)],
    )
    full = lgb.train(params, lgb.Dataset(x[:3000], label=y[:3000]), 200)
    valid = x[3000:].assign(**{LABEL: y[3000:]})
    curve = loss_curve_partition(valid, full, leaf_values(full))
    assert curve["rows"].iloc[0] == 1000
    assert early_stopping_round((curve["loss"] / curve["rows"]).to_numpy(), patience=10) == stopped.best_iteration
    # The per-round raw scores rebuilt from leaf values are the booster's own.
    last = np.log1p(np.exp(full.predict(x[3000:], raw_score=True))) - y[3000:] * full.predict(x[3000:], raw_score=True)
    assert curve["loss"].iloc[-1] == pytest.approx(last.sum(), rel=1e-9)


def test_partition_functions_keep_their_schema_on_empty_input() -> None:
    assert list(validate_partition(validated_meta()).columns) == list(validated_meta().columns)
    empty = table_partition(validated_meta())
    assert empty.empty and (empty.dtypes == table_meta().dtypes).all()


def test_invoice_partitions_keep_each_invoice_in_one_file(attempts: pd.DataFrame, tmp_path: Path) -> None:
    paths = write_customer_partitions(attempts, tmp_path, 4)
    owners = pd.concat(pd.read_parquet(p, columns=[INVOICE]).assign(file=p.name) for p in paths)
    assert len(owners) == len(attempts)
    assert owners.groupby(INVOICE)["file"].nunique().max() == 1


# ---------------------------------------------------------------------------------------
# On a 2-worker LocalCluster


@pytest.mark.slow
def test_spanning_invoice_gets_single_machine_history(
    client: Any, attempts: pd.DataFrame, daily_files: Path, spanning_invoice: str
) -> None:
    """After the shuffle the invoice's history features equal single-machine ones; without it they don't."""
    valid, _ = validate_attempts(attempts)
    reference = build_training_table(valid)
    expected = reference.features.assign(
        **{LABEL: reference.labels, INVOICE: retry_training_rows(valid)[INVOICE].to_numpy()}
    )

    def dask_table(shuffle: bool) -> pd.DataFrame:
        raw = read_attempts(daily_files)
        laid_out = partition_by_customer(raw) if shuffle else raw
        valid_parts = laid_out.map_partitions(validate_partition, meta=validated_meta())
        return client.compute(valid_parts.map_partitions(table_partition, meta=table_meta())).result()

    shuffled = dask_table(shuffle=True)
    pd.testing.assert_frame_equal(_invoice_rows(shuffled, spanning_invoice), _invoice_rows(expected, spanning_invoice))
    assert len(shuffled) == len(expected)
    per_file = _invoice_rows(dask_table(shuffle=False), spanning_invoice)
    assert not per_file.equals(_invoice_rows(expected, spanning_invoice)), "without the shuffle history is cut"


@pytest.mark.slow
def test_dask_model_matches_single_machine(
    client: Any, daily_files: Path, single: TrainResult, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from training.distributed import train_distributed

    result = train_distributed(daily_files, tmp_path_factory.mktemp("dask"), client, COMPARABLE)

    # Same whole-invoice time split: same sizes, and the test split holds the same retries.
    assert result.manifest["split"] == single.manifest["split"]
    single_test = single.table.invoice_first_failure[(single.split == "test").to_numpy()]
    assert (np.sort(result.table.invoice_first_failure.to_numpy()) == np.sort(single_test.to_numpy())).all()
    assert result.manifest["data_summary"] == single.manifest["data_summary"]

    dask_auc, single_auc = result.manifest["metrics"]["test"]["auc"], single.manifest["metrics"]["test"]["auc"]
    assert abs(dask_auc - single_auc) <= AUC_TOLERANCE, (dask_auc, single_auc)
    assert result.manifest["metrics"]["test"]["ece"] < 0.05
    history, single_history = (r.manifest["metrics"]["test_by_customer_history"] for r in (result, single))
    assert {g: m["rows"] for g, m in history.items()} == {g: m["rows"] for g, m in single_history.items()}

    bundle = load_bundle(result.bundle_dir)
    assert set(single.manifest) <= set(bundle.manifest)
    assert bundle.booster.num_trees() == result.manifest["training"]["best_iteration"]
    assert bundle.predict(result.table.features) == pytest.approx(result.test_probability)
    assert result.table.features.columns.tolist() == list(FEATURE_COLUMNS)
    assert result.manifest["training"]["engine"] == "lightgbm.dask"
