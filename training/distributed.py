"""Training on a Dask cluster: partitioned Parquet → per-partition features → LightGBM-Dask → bundle.

The pipeline keeps the single-machine semantics of `training.train.train_model` while no step
needs the whole dataset on one machine:

1. read the Parquet files lazily (`read_attempts`);
2. put all attempts of a customer in one partition (`partition_by_customer`), because the
   point-in-time history of a retry is built from every earlier attempt of its invoice and of
   the customer's other invoices (`features.customer`);
3. per partition, validate with `training.data.validate_attempts` and build the training table
   with `training.train.build_training_table` (`retry_training_rows` + `build_retry_features`),
   so validation and features stay single implementations;
4. split by invoice first-failure time with the same rule as `time_split` (cut times picked on the
   client from the per-invoice first-failure times, then applied per partition);
5. fit `lightgbm.DaskLGBMClassifier` (data-parallel) on the fit split with `TrainConfig.params`;
6. choose the boosting round on the early-stop split (the log-loss curve of every round is summed
   over partitions on the workers, then the early-stopping rule is applied on the client);
7. calibrate (`fit_isotonic`) and evaluate (`training.metrics`) on the client, on the calibration
   and test splits collected to pandas, and write the same bundle as `train_model`.

Early stopping is chosen after the fact because LightGBM's Dask interface does not support it
during training (workers that stop on their local eval data deadlock the others; LightGBM issues
#3712, #6351): all `num_boost_round` rounds are trained and the model is cut at the round the
`lgb.early_stopping` rule would have picked on the same split.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.bundle import calibrate, save_bundle
from features.candidates import CATEGORICAL_FEATURES, FEATURE_COLUMNS, retry_training_rows
from features.taxonomy import decline_category
from training.data import CONTRACT_COLUMNS, REQUIRED_COLUMNS, AttemptsDataError, validate_attempts, write_attempts
from training.metrics import customer_history_groups, metrics_by_group, probability_metrics
from training.train import (
    SPLITS,
    TrainConfig,
    TrainingTable,
    TrainResult,
    build_training_table,
    fit_isotonic,
    fit_logistic_baseline,
    library_versions,
    new_model_version,
    time_split,
)

logger = logging.getLogger(__name__)

# A LocalCluster for a single box: two single-threaded workers. 8 GiB each leaves room on a 24 GiB
# machine for the client, which holds the calibration and test splits and the scheduler.
LOCAL_WORKERS = 2
LOCAL_THREADS_PER_WORKER = 1
LOCAL_MEMORY_LIMIT = "8GiB"
# The logistic baseline is fitted on the client; beyond this many fit rows it uses a sample.
BASELINE_MAX_ROWS = 200_000
# Rows per block when computing per-round predictions (rows x rounds floats live at once).
CURVE_BLOCK_ROWS = 10_000

LABEL, FIRST_FAILURE, CATEGORY, INVOICE, SPLIT = "label", "first_failure", "decline_category", "invoice_id", "split"
CUSTOMER = "customer_id"
_GLOB = re.compile(r"[*?\[]")


# ---------------------------------------------------------------------------------------
# Cluster


@contextmanager
def connect(address: str, processes: bool = True) -> Iterator[Any]:
    """A `distributed.Client` for `address`; "local" starts (and later stops) a 2-worker LocalCluster."""
    from distributed import Client, LocalCluster

    if address != "local":
        with Client(address) as client:
            yield client
        return
    # One thread per worker: LightGBM runs one thread per Dask thread, and more threads than
    # cores make its OpenMP loops spin against each other.
    with (
        LocalCluster(
            n_workers=LOCAL_WORKERS,
            threads_per_worker=LOCAL_THREADS_PER_WORKER,
            processes=processes,
            memory_limit=LOCAL_MEMORY_LIMIT,
            dashboard_address=None,
            silence_logs=logging.ERROR,  # p2p shuffle start/stop notices are logged as warnings
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


# ---------------------------------------------------------------------------------------
# Reading and partitioning


def read_attempts(data: str | Path, *, split_files: bool = True) -> Any:
    """Attempts from a directory, glob or URL of Parquet files, as a lazy Dask DataFrame.

    `split_files=False` keeps each file in one partition (needed when files are invoice-partitioned
    and the shuffle is skipped).
    """
    import dask.dataframe as dd

    location = str(data)
    local = "://" not in location and not _GLOB.search(location)
    if local and not Path(location).exists():
        raise AttemptsDataError(f"{location}: no such file or directory")
    try:
        frame = dd.read_parquet(location, index=False, split_row_groups="infer" if split_files else False)
    except (OSError, ValueError, IndexError) as exc:
        raise AttemptsDataError(f"{location}: not readable as Parquet: {str(exc).splitlines()[0]}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise AttemptsDataError(f"{location}: missing required column(s): {', '.join(missing)}")
    return frame[[c for c in CONTRACT_COLUMNS if c in frame.columns]]


def partition_by_customer(attempts: Any) -> Any:
    """Hash-shuffle rows by customer_id so every customer's attempts (so every invoice's) share one partition.

    Point-in-time history needs all earlier attempts of an invoice (`features.history`) and of the
    customer's other invoices (`features.customer`): when they span files (daily exports, say), a
    partition would see only part of the history and compute wrong retry numbers, counters,
    first-decline categories and customer recoveries. A hash shuffle moves every
    row once over the network; when the producer can write files already partitioned by invoice
    (`write_customer_partitions`, `retryopt simulate --partitions`) the shuffle can be skipped.
    """
    return attempts.shuffle(CUSTOMER)


def write_customer_partitions(attempts: pd.DataFrame, directory: Path, partitions: int) -> list[Path]:
    """Write attempts as `partitions` Parquet files hashed by customer_id (the cheap layout for Dask)."""
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    # pandas' hash is stable across runs and machines, so re-exports land in the same files.
    bucket = pd.util.hash_array(attempts[CUSTOMER].astype(str).to_numpy(dtype=object)) % np.uint64(partitions)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(partitions):
        path = directory / f"part-{index:05d}.parquet"
        write_attempts(attempts.loc[bucket == index], path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------
# Per-partition work (runs on the workers)


def _example_attempt() -> pd.DataFrame:
    """One valid contract row; validating it gives the schema every validated partition has."""
    return pd.DataFrame(
        {
            "invoice_id": ["in_meta"],
            "customer_id": ["cus_meta"],
            "attempt_id": ["in_meta_a1"],
            "attempted_at": [pd.Timestamp("2025-01-01", tz="UTC")],
            "amount": [100],
            "currency": ["usd"],
            "succeeded": [False],
            "decline_code": ["insufficient_funds"],
            "card_brand": ["visa"],
        }
    )


def validated_meta() -> pd.DataFrame:
    """The empty frame `validate_attempts` would return: the Dask schema of validated attempts."""
    return validate_attempts(_example_attempt())[0].iloc[:0]


def validate_partition(raw: pd.DataFrame) -> pd.DataFrame:
    """`validate_attempts` on one partition: its valid rows (whole invoices), or none."""
    if raw.empty:
        return validated_meta()
    try:
        valid, _ = validate_attempts(raw)
    except AttemptsDataError:  # columns were checked up front: every row of this partition is invalid
        return validated_meta()
    return valid


def table_meta() -> pd.DataFrame:
    """The empty training table: features, label, invoice first failure, decline category, invoice."""
    frame = pd.DataFrame({name: pd.Series(dtype="float64") for name in FEATURE_COLUMNS})
    frame[LABEL] = pd.Series(dtype="int64")
    frame[FIRST_FAILURE] = pd.Series(dtype="datetime64[ns, UTC]")
    frame[CATEGORY] = pd.Series(dtype="str")
    frame[INVOICE] = pd.Series(dtype="str")
    return frame


def table_partition(attempts: pd.DataFrame) -> pd.DataFrame:
    """`build_training_table` on one partition of whole invoices, flattened to one frame."""
    # retry_training_rows is called again inside build_training_table; here it only names the
    # invoice of each row (same order) and spots partitions without retries.
    rows = retry_training_rows(attempts)
    if rows.empty:
        return table_meta()
    table = build_training_table(attempts)
    frame = table.features.copy()
    frame[LABEL] = table.labels.astype("int64")
    frame[FIRST_FAILURE] = table.invoice_first_failure.astype("datetime64[ns, UTC]")
    frame[CATEGORY] = table.decline_category.astype("str")
    frame[INVOICE] = rows[INVOICE].astype("str").to_numpy()
    return frame


def stats_meta() -> pd.DataFrame:
    """Schema of per-partition statistics: (stat, key, value) rows."""
    return pd.DataFrame(
        {"stat": pd.Series(dtype="str"), "key": pd.Series(dtype="str"), "value": pd.Series(dtype="int64")}
    )


def stats_partition(attempts: pd.DataFrame) -> pd.DataFrame:
    """Counts, time range, decline mix and countries of one partition, to add up for the data summary."""
    if attempts.empty:
        return stats_meta()
    times = attempts["attempted_at"].astype("datetime64[ns, UTC]")
    scalars = {
        "attempts": len(attempts),
        # Summing per-partition counts is exact because an invoice lives in one partition.
        "invoices": int(attempts[INVOICE].nunique()),
        "first_attempt": int(times.min().value),
        "last_attempt": int(times.max().value),
    }
    mix = decline_category(attempts["decline_code"]).fillna("none").value_counts()
    countries = attempts["card_country"].value_counts()
    parts = [
        pd.DataFrame({"stat": list(scalars), "key": "", "value": list(scalars.values())}),
        pd.DataFrame({"stat": "decline", "key": mix.index.astype(str), "value": mix.to_numpy()}),
        pd.DataFrame({"stat": "country", "key": countries.index.astype(str), "value": countries.to_numpy()}),
    ]
    return pd.concat(parts, ignore_index=True).astype(stats_meta().dtypes.to_dict())


def split_partition(table: pd.DataFrame, cuts: np.ndarray) -> pd.DataFrame:
    """Add each row's split index (0 = fit … 3 = test) from its invoice's first-failure time."""
    out = table.copy()
    times = table[FIRST_FAILURE].to_numpy(dtype="datetime64[ns]")
    # A row belongs to the first split whose cut is later than its time (as in `time_split`).
    out[SPLIT] = np.searchsorted(cuts, times, side="right").astype("int8")
    return out


def leaf_values(booster: lgb.Booster) -> np.ndarray:
    """Output of every leaf, as a (trees, max leaves) array, to rebuild per-round raw scores."""
    trees = booster.dump_model()["tree_info"]
    values = np.zeros((len(trees), max(t["num_leaves"] for t in trees)))
    for index, tree in enumerate(trees):
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "leaf_value" in node:
                values[index, node.get("leaf_index", 0)] = node["leaf_value"]
            else:
                stack.extend((node["left_child"], node["right_child"]))
    return values


def loss_curve_partition(part: pd.DataFrame, booster: lgb.Booster, values: np.ndarray) -> pd.DataFrame:
    """Summed binary log loss of the partition's rows after each boosting round (one row per round)."""
    rounds = values.shape[0]
    total = np.zeros(rounds)
    x = part.loc[:, list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
    y = part[LABEL].to_numpy(dtype=np.float64)
    for start in range(0, len(part), CURVE_BLOCK_ROWS):
        block = slice(start, start + CURVE_BLOCK_ROWS)
        # One thread: the Dask worker thread is the unit of parallelism here.
        leaves = booster.predict(x[block], pred_leaf=True, start_iteration=0, num_iteration=rounds, num_threads=1)
        leaves = np.asarray(leaves, dtype=np.int64)
        raw = np.cumsum(values[np.arange(rounds), leaves], axis=1)
        # log(1 + e^raw) - y * raw is the log loss of sigmoid(raw), stable for any raw score.
        total += (np.logaddexp(0.0, raw) - y[block, None] * raw).sum(axis=0)
    return pd.DataFrame({"loss": total, "rows": float(len(part))}, index=pd.RangeIndex(rounds, name="round"))


# ---------------------------------------------------------------------------------------
# Client-side decisions


def cut_times(first_failure: pd.Series, fractions: tuple[float, ...]) -> np.ndarray:
    """First-failure times where each later split starts, by `time_split`'s own rule.

    `time_split` labels the per-invoice times; each cut is the earliest time labelled with a
    later split, so `searchsorted(cuts, t, side="right")` reproduces its labels exactly.
    """
    names = time_split(first_failure.reset_index(drop=True), fractions)
    order = names.map({name: i for i, name in enumerate(SPLITS)}).to_numpy()
    times = first_failure.reset_index(drop=True).to_numpy(dtype="datetime64[ns]")
    cuts = []
    for split in range(1, len(SPLITS)):
        later = times[order >= split]
        if len(later) == 0:
            raise ValueError(f"the {SPLITS[split]} split has too few retries to learn from; supply more data")
        cuts.append(later.min())
    return np.asarray(cuts, dtype="datetime64[ns]")


def early_stopping_round(mean_loss: np.ndarray, patience: int) -> int:
    """The 1-based round `lgb.early_stopping(patience)` would keep, given the validation loss per round."""
    best, best_loss = 0, np.inf
    for index, loss in enumerate(mean_loss):
        if loss < best_loss:
            best, best_loss = index, loss
        elif index - best >= patience:
            break
    return best + 1


def check_splits(counts: pd.DataFrame) -> None:
    """Fail like `train_model` when a split is empty or has a single class."""
    for index, name in enumerate(SPLITS):
        rows = int(counts["rows"].get(index, 0))
        positives = int(counts["positives"].get(index, 0))
        if rows == 0 or positives in (0, rows):
            raise ValueError(f"the {name} split has too few retries to learn from; supply more data")


def summarise(stats: pd.DataFrame, retries: int, retry_success_rate: float) -> dict[str, Any]:
    """`training.train.data_summary`'s fields from the per-partition statistics."""

    def values(stat: str) -> pd.Series:
        """The `value` column of one statistic, over all partitions."""
        return stats.loc[stats["stat"] == stat, "value"]

    mix = stats[stats["stat"] == "decline"].groupby("key")["value"].sum()
    return {
        "attempts": int(values("attempts").sum()),
        "invoices": int(values("invoices").sum()),
        "retries": retries,
        "retry_success_rate": retry_success_rate,
        "first_attempt": str(pd.Timestamp(int(values("first_attempt").min()), tz="UTC")),
        "last_attempt": str(pd.Timestamp(int(values("last_attempt").max()), tz="UTC")),
        "decline_mix": {k: round(float(v), 4) for k, v in (mix / mix.sum()).sort_values(ascending=False).items()},
        "countries": int(stats.loc[stats["stat"] == "country", "key"].nunique()),
    }


def dask_versions() -> dict[str, str]:
    """`library_versions` plus the Dask stack that trained the model."""
    import dask
    import distributed

    return {**library_versions(), "dask": dask.__version__, "distributed": distributed.__version__}


# ---------------------------------------------------------------------------------------
# The pipeline


def training_table(data: str | Path, *, invoice_partitioned: bool = False) -> tuple[Any, Any, Any]:
    """Lazy (raw attempts, training table, per-partition stats) for the Parquet data at `data`."""
    raw = read_attempts(data, split_files=not invoice_partitioned)
    laid_out = raw if invoice_partitioned else partition_by_customer(raw)
    valid = laid_out.map_partitions(validate_partition, meta=validated_meta())
    table = valid.map_partitions(table_partition, meta=table_meta())
    stats = valid.map_partitions(stats_partition, meta=stats_meta())
    return raw, table, stats


def fit_dask_booster(client: Any, fit: Any, config: TrainConfig) -> lgb.Booster:
    """`DaskLGBMClassifier` with `config.params` for `config.num_boost_round` rounds; the Booster."""
    from lightgbm import DaskLGBMClassifier

    # LightGBM's own parameter names win over the scikit-learn aliases' defaults, so the booster
    # gets exactly `config.params`; num_threads is set by LightGBM-Dask from each worker's threads.
    model = DaskLGBMClassifier(client=client, n_estimators=config.num_boost_round, **config.params, seed=config.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")  # it is meant to be
        model.fit(fit[list(FEATURE_COLUMNS)], fit[LABEL], categorical_feature=list(CATEGORICAL_FEATURES))
    return model.booster_


def choose_rounds(client: Any, booster: lgb.Booster, early_stop: Any, patience: int) -> tuple[lgb.Booster, int]:
    """The booster cut at the early-stopping round, picked on the early-stop split's loss curve."""
    import dask

    # Wrapped in delayed so the model is shipped once, not embedded in every task.
    model, values = dask.delayed(booster, pure=True), dask.delayed(leaf_values(booster), pure=True)
    curves = early_stop.map_partitions(
        loss_curve_partition,
        model,
        values,
        meta=pd.DataFrame({"loss": pd.Series(dtype="float64"), "rows": pd.Series(dtype="float64")}),
    )
    curve = client.compute(curves).result().groupby(level=0).sum()
    best = early_stopping_round((curve["loss"] / curve["rows"]).to_numpy(), patience)
    cut = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    cut.best_iteration = best  # what `lgb.train` reports after early stopping
    return cut, best


def laid_out_table(
    client: Any, data: str | Path, config: TrainConfig, invoice_partitioned: bool
) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """The persisted training table with each row's split, per-split (rows, positives), and data stats."""
    raw, table, stats = training_table(data, invoice_partitioned=invoice_partitioned)
    # One pass over the data: validation and features run once, feeding both the table and stats.
    table, stats = client.persist([table, stats])
    stats_frame = client.compute(stats).result()
    if stats_frame.empty:
        raise AttemptsDataError(f"no valid rows: all {len(raw)} rows rejected")
    rejected = len(raw) - int(stats_frame.loc[stats_frame["stat"] == "attempts", "value"].sum())
    if rejected:
        logger.warning("attempts: %d of %d rows rejected (with their invoices)", rejected, len(raw))
    # Distinct first-failure times per partition suffice: `time_split` de-duplicates times anyway.
    invoice_times = client.compute(table[FIRST_FAILURE].map_partitions(pd.Series.drop_duplicates)).result()
    if invoice_times.empty:
        raise ValueError("no retries to learn from: the data has no invoice with a failed first attempt and a retry")
    cuts = cut_times(invoice_times, config.split_fractions)
    table = client.persist(table.map_partitions(split_partition, cuts, meta=split_partition(table_meta(), cuts)))
    counts = client.compute(table.groupby(SPLIT)[LABEL].agg(["count", "sum"])).result()
    counts = counts.rename(columns={"count": "rows", "sum": "positives"})
    check_splits(counts)
    return table, counts, stats_frame


def evaluate(
    booster: lgb.Booster, baseline: Any, calibration: pd.DataFrame, test: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Isotonic calibration, test predictions and `train_model`'s metrics, all on the client."""
    x_cal = calibration[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
    cal_x, cal_y = fit_isotonic(np.asarray(booster.predict(x_cal)), calibration[LABEL].to_numpy())
    x_test = test[list(FEATURE_COLUMNS)]
    y_test = test[LABEL].to_numpy()
    raw = np.asarray(booster.predict(x_test.to_numpy(dtype=np.float64)))
    predictions = {
        "raw": raw,
        "calibrated": calibrate(raw, cal_x, cal_y),
        "baseline": baseline.predict_proba(x_test)[:, 1],
    }
    metrics = {
        "test": probability_metrics(y_test, predictions["calibrated"]),
        "test_uncalibrated": probability_metrics(y_test, raw),
        "baseline_logistic_test": probability_metrics(y_test, predictions["baseline"]),
        "test_by_decline_category": metrics_by_group(y_test, predictions["calibrated"], test[CATEGORY]),
        "test_by_customer_history": metrics_by_group(
            y_test, predictions["calibrated"], customer_history_groups(x_test)
        ),
    }
    return cal_x, cal_y, predictions, metrics


def dask_manifest(
    metrics: dict[str, Any],
    summary: dict[str, Any],
    counts: pd.DataFrame,
    config: TrainConfig,
    training: dict[str, Any],
) -> dict[str, Any]:
    """The manifest `train_model` writes, plus how the cluster trained the model."""
    created = datetime.now(UTC)
    return {
        "model_version": new_model_version(created),
        "created_at": created.isoformat(),
        "versions": dask_versions(),
        "metrics": metrics,
        "data_summary": summary,
        "split": {
            "method": "by invoice first-failure time",
            "fractions": dict(zip(SPLITS, config.split_fractions, strict=True)),
            "rows": {name: int(counts["rows"].get(index, 0)) for index, name in enumerate(SPLITS)},
        },
        "training": {"params": config.params, "seed": config.seed, **training},
        "calibration": {"method": "isotonic", "fitted_on": "calibration split"},
    }


def train_distributed(
    data: str | Path,
    out_dir: Path,
    client: Any,
    config: TrainConfig | None = None,
    *,
    invoice_partitioned: bool = False,
) -> TrainResult:
    """Train on a Dask cluster from partitioned Parquet and write the same bundle as `train_model`.

    Customers are hash-shuffled by customer_id first (`partition_by_customer`) so point-in-time
    history is complete; pass `invoice_partitioned=True` only when each invoice's attempts are
    already in one file with all its customer's (e.g. written by `write_customer_partitions`), which skips the shuffle.
    The result's `table` and `split` hold only the test split (collected to the client); the full
    training table stays on the cluster.
    """
    config = config or TrainConfig()
    table, counts, stats = laid_out_table(client, data, config, invoice_partitioned)
    parts = {name: table[table[SPLIT] == index] for index, name in enumerate(SPLITS)}

    full = fit_dask_booster(client, parts["train"], config)
    booster, best = choose_rounds(client, full, parts["early_stop"], config.early_stopping_rounds)
    baseline = fit_logistic_baseline(*_baseline_sample(client, parts["train"], int(counts["rows"][0]), config.seed))
    columns = [*FEATURE_COLUMNS, LABEL, FIRST_FAILURE, CATEGORY]
    calibration, test = (
        client.compute(parts[name][columns]).result().reset_index(drop=True) for name in ("calibration", "test")
    )
    cal_x, cal_y, predictions, metrics = evaluate(booster, baseline, calibration, test)

    retries = int(counts["rows"].sum())
    summary = summarise(stats, retries, float(counts["positives"].sum() / retries))
    training = {
        "best_iteration": best,
        "engine": "lightgbm.dask",
        "rounds_trained": full.num_trees(),
        "early_stopping": f"round picked after training on the early_stop split (patience {config.early_stopping_rounds})",
        "dask": {
            "workers": len(client.scheduler_info()["workers"]),
            "partitions": table.npartitions,
            "shuffled_by_invoice": not invoice_partitioned,
        },
    }
    manifest = dask_manifest(metrics, summary, counts, config, training)
    bundle_dir = save_bundle(Path(out_dir), booster, cal_x, cal_y, manifest)
    features = test[list(FEATURE_COLUMNS)]
    return TrainResult(
        bundle_dir=bundle_dir,
        manifest=manifest,
        booster=booster,
        baseline=baseline,
        table=TrainingTable(
            features=features,
            labels=test[LABEL].to_numpy(),
            invoice_first_failure=test[FIRST_FAILURE],
            decline_category=test[CATEGORY],
        ),
        split=pd.Series(SPLITS[-1], index=features.index, dtype=object),
        test_probability=predictions["calibrated"],
        test_baseline_probability=predictions["baseline"],
        calibration_x=cal_x,
        calibration_y=cal_y,
    )


def _baseline_sample(client: Any, fit: Any, rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The fit split on the client for the logistic baseline: all of it, or a sample when large."""
    part = fit if rows <= BASELINE_MAX_ROWS else fit.sample(frac=BASELINE_MAX_ROWS / rows, random_state=seed)
    frame = client.compute(part[[*FEATURE_COLUMNS, LABEL]]).result()
    return frame[list(FEATURE_COLUMNS)], frame[LABEL].to_numpy()
