"""The `retryopt` command: wires the packages together; each command's logic lives in them.

Heavy imports happen inside the commands so `retryopt --help` stays fast and nothing runs at
import time. Bad input ends with a one-line reason on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

import typer

if TYPE_CHECKING:
    from training.train import TrainConfig, TrainResult
    from training.tune import TuneResult

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Learned retry timing for failed recurring payments."
)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line reason to stderr and exit non-zero."""
    typer.echo(f"error: {message}".replace("\n", " "), err=True)
    raise typer.Exit(code)


@app.command()
def simulate(
    invoices: Annotated[int, typer.Option(min=1, help="Number of failed invoices to simulate.")],
    out: Annotated[Path, typer.Option(help="Output attempts file (.csv or .parquet).")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    truth: Annotated[Path | None, typer.Option(help="Also write the latent truth per invoice (.parquet).")] = None,
    partitions: Annotated[
        int | None,
        typer.Option(min=1, help="Write OUT as a directory of N Parquet files hashed by invoice (for `train --dask`)."),
    ] = None,
) -> None:
    """Write a synthetic attempts dataset (contract §1)."""
    from training.data import write_attempts
    from training.simulate import simulate as run_simulation

    if partitions is None and out.suffix not in {".csv", ".parquet", ".pq"} and not out.name.endswith(".csv.gz"):
        fail(f"--out must end in .csv, .csv.gz or .parquet, got {out.name}")
    result = run_simulation(invoices, seed)
    if partitions is None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_attempts(result.attempts, out)
    else:
        from training.distributed import write_customer_partitions

        write_customer_partitions(result.attempts, out, partitions)
    if truth is not None:
        truth.parent.mkdir(parents=True, exist_ok=True)
        result.invoices.to_parquet(truth)
    succeeded = result.attempts.groupby("invoice_id")["succeeded"].any().mean()
    typer.echo(
        f"wrote {len(result.attempts):,} attempts of {invoices:,} invoices to {out} (recovered: {succeeded:.1%})"
    )


@app.command()
def train(
    data: Annotated[
        str,  # not Path: with --dask it may be a glob or a URL (s3://...), which Path would mangle
        typer.Option(
            help="Attempts dataset (.csv or .parquet); with --dask a directory, glob or URL of Parquet files."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Directory for the servable model bundle.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db).")
    ] = None,
    mlflow_logging: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the run to MLflow.")] = True,
    dask: Annotated[
        str | None,
        typer.Option(
            help="Train with LightGBM's Dask interface on this scheduler address, or 'local' for a 2-worker "
            "LocalCluster (see docs/scaling.md)."
        ),
    ] = None,
    invoice_partitioned: Annotated[
        bool,
        typer.Option(
            "--invoice-partitioned",
            help="With --dask: each customer's attempts (so each invoice's) are in one file (`simulate --partitions`); skip the shuffle.",
        ),
    ] = False,
    tune: Annotated[
        int,
        typer.Option(min=0, help="First run N more Optuna trials of the study, then train with its best parameters."),
    ] = 0,
    study_name: Annotated[str, typer.Option(help="With --tune: the Optuna study to create or resume.")] = (
        "retryopt-lgbm"
    ),
    optuna_storage: Annotated[
        str, typer.Option(help="With --tune: the study's storage URL (resumed when the study exists).")
    ] = "sqlite:///optuna.db",
    register: Annotated[
        str | None,
        typer.Option(help="Register the model in the MLflow registry under this name (alias `challenger`)."),
    ] = None,
) -> None:
    """Train, evaluate, log to MLflow and write a servable model to OUT."""
    from training.model_card import write_model_card
    from training.train import TrainConfig

    if invoice_partitioned and dask is None:
        fail("--invoice-partitioned needs --dask")
    if tune and dask is not None:
        fail("--tune trains in this process; it cannot be combined with --dask")
    if register and not mlflow_logging:
        fail("--register needs MLflow logging (drop --no-mlflow)")
    config = TrainConfig(seed=seed)
    tuned = None
    if tune:
        tuned = _tune_in_process(data, out, config, tune, study_name, optuna_storage, tracking_uri, mlflow_logging)
        config = tuned.config
    result = (
        tuned.train_result
        if tuned is not None
        else _train_in_process(data, out, config)
        if dask is None
        else _train_on_dask(data, out, config, dask, invoice_partitioned)
    )
    manifest = json.loads((result.bundle_dir / "manifest.json").read_text())
    command = "retryopt " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "retryopt train"
    write_model_card(result.bundle_dir, manifest, command)
    if mlflow_logging:
        from training.tracking import configure_mlflow, log_run

        uri = configure_mlflow(tracking_uri)
        run_id = log_run(result, config, str(data))
        typer.echo(f"logged MLflow run {run_id} to {uri}")
        if tuned is not None and tuned.parent_run_id:
            from training.tune import link_to_tuning_run

            link_to_tuning_run(run_id, tuned.parent_run_id)
        if register:
            from training.registry import RegistryError, register_model

            try:
                version = register_model(run_id, register)
            except RegistryError as exc:
                fail(str(exc))
            typer.echo(f"registered {register} v{version} (alias challenger; `retryopt promote {register}` next)")
    test, base = manifest["metrics"]["test"], manifest["metrics"]["baseline_logistic_test"]
    typer.echo(
        f"model {manifest['model_version']} written to {out}: holdout AUC {test['auc']:.4f} "
        f"(logistic {base['auc']:.4f}), log loss {test['log_loss']:.4f}, ECE {test['ece']:.4f}"
    )


def _train_in_process(data: str, out: Path, config: TrainConfig) -> TrainResult:
    """Load and validate one file, then `train_model` in this process."""
    from training.data import AttemptsDataError, load_attempts
    from training.train import train_model

    try:
        attempts, report = load_attempts(data)
    except AttemptsDataError as exc:
        fail(f"{data}: {exc}")
    if len(report.errors):
        first = report.errors.iloc[0]
        typer.echo(
            f"warning: {report.rows_read - report.rows_valid:,} of {report.rows_read:,} rows rejected "
            f"(first: row {first['row']}, {first['column']}: {first['reason']})",
            err=True,
        )
    try:
        return train_model(attempts, out, config)
    except ValueError as exc:
        fail(str(exc))


def _train_on_dask(data: str, out: Path, config: TrainConfig, address: str, invoice_partitioned: bool) -> TrainResult:
    """Train with LightGBM's Dask interface on partitioned Parquet (`training.distributed`)."""
    from training.data import AttemptsDataError
    from training.distributed import connect, train_distributed

    try:
        with connect(address) as client:
            return train_distributed(data, out, client, config, invoice_partitioned=invoice_partitioned)
    except AttemptsDataError as exc:
        fail(str(exc))
    except (ValueError, OSError) as exc:  # OSError: the scheduler could not be reached
        fail(str(exc))


def _tune_in_process(
    data: str,
    out: Path,
    config: TrainConfig,
    n_trials: int,
    study_name: str,
    storage_url: str,
    tracking_uri: str | None,
    mlflow_logging: bool,
) -> TuneResult:
    """Load one file, run the Optuna study (trials as nested MLflow runs), train the best model."""
    from training.data import AttemptsDataError, load_attempts
    from training.tune import tune

    try:
        attempts, report = load_attempts(data)
    except AttemptsDataError as exc:
        fail(f"{data}: {exc}")
    if report.rows_rejected:
        typer.echo(f"warning: {report.rows_rejected:,} of {report.rows_read:,} rows rejected", err=True)
    if mlflow_logging:
        from training.tracking import configure_mlflow

        configure_mlflow(tracking_uri)  # before the study: each trial logs a nested run
    try:
        tuned = tune(attempts, out, config, n_trials, storage_url, study_name, track=mlflow_logging)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(
        f"tuned {tuned.trials_run} trials ({tuned.pruned} pruned; {tuned.trials_total} in study {study_name!r} "
        f"at {tuned.storage_url}) in {tuned.seconds:.0f}s: best early-stop log loss {tuned.best_value:.4f}"
    )
    return tuned


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    holdout: Annotated[
        Path | None, typer.Option(help="Attempts dataset to score both models on (default: a fixed-seed simulation).")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db).")
    ] = None,
    holdout_invoices: Annotated[
        int, typer.Option(min=20, help="Simulated holdout invoices when no --holdout is given.")
    ] = 3000,
    closed_loop_invoices: Annotated[
        int, typer.Option(min=20, help="Simulated invoices the learned policies are replayed on.")
    ] = 1000,
    closed_loop: Annotated[
        bool,
        typer.Option("--closed-loop/--no-closed-loop", help="Also compare the learned policies' recovery rates."),
    ] = True,
) -> None:
    """Make the challenger the champion unless it is worse on one fixed holdout (exit 0 either way)."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException

    from training.data import AttemptsDataError, load_attempts
    from training.registry import PromotionPolicy, RegistryError
    from training.registry import promote as run_promotion
    from training.tracking import configure_mlflow

    attempts = None
    if holdout is not None:
        try:
            attempts, _ = load_attempts(holdout)
        except AttemptsDataError as exc:
            fail(f"{holdout}: {exc}")
    configure_mlflow(tracking_uri)
    policy = PromotionPolicy(
        holdout_invoices=holdout_invoices, closed_loop_invoices=closed_loop_invoices, closed_loop=closed_loop
    )
    try:
        decision = run_promotion(name, attempts, policy, echo=typer.echo)
    except (RegistryError, MlflowException, ValueError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    typer.echo(decision.message)


import_app = typer.Typer(no_args_is_help=True, help="Convert a payment provider's export to an attempts dataset.")
app.add_typer(import_app, name="import")


@import_app.command("stripe")
def import_stripe(
    charges: Annotated[
        Path, typer.Option(help="Stripe charges export: Sigma/Data Pipeline `charges` table or Dashboard CSV.")
    ],
    out: Annotated[Path, typer.Option(help="Output attempts file (.csv or .parquet).")],
    amount_unit: Annotated[
        Literal["major", "minor"] | None,
        typer.Option(help="Unit of the amounts (default: minor for `amount`, major for the Dashboard's `Amount`)."),
    ] = None,
) -> None:
    """Write the invoice charges of a Stripe export as contract §1 attempts (others are skipped)."""
    from training.data import AttemptsDataError, write_attempts
    from training.importers import STRIPE, import_export

    if out.suffix not in {".csv", ".parquet", ".pq"} and not out.name.endswith(".csv.gz"):
        fail(f"--out must end in .csv, .csv.gz or .parquet, got {out.name}")
    try:
        attempts, report = import_export(STRIPE, charges, amount_unit)
    except AttemptsDataError as exc:
        fail(f"{charges}: {exc}")
    write_attempts(attempts, out)
    skipped = ", ".join(f"{n:,} {why}" for why, n in report.skipped.items()) or "none"
    typer.echo(
        f"wrote {report.rows_valid:,} attempts of {attempts['invoice_id'].nunique():,} invoices to {out} "
        f"from {report.rows_read:,} charges (amounts in {report.amount_unit} units); skipped: {skipped}"
    )
    if len(report.errors):
        first = report.errors.iloc[0]
        typer.echo(
            f"warning: {report.load.rows_rejected:,} charges rejected ({len(report.errors):,} problems; first: "
            f"row {first['row']}, {first['column']}: {first['reason']})",
            err=True,
        )


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            help="Model bundle directory or MLflow URI (models:/NAME@champion, models:/NAME/3, runs:/ID/bundle); "
            "default: RETRYOPT_MODEL_URI, else RETRYOPT_MODEL_DIR, else the shipped model."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Start the HTTP API; on SIGTERM, finish the requests in flight, then exit 0."""
    import os
    import signal

    import uvicorn

    from features.bundle import BundleError, load_bundle
    from serving.app import create_app
    from serving.model_source import is_model_uri
    from serving.settings import get_settings

    settings = get_settings()
    if model is not None:
        source = {"model_uri": model} if is_model_uri(model) else {"model_uri": None, "model_dir": Path(model)}
        settings = settings.model_copy(update=source)
    if not settings.model_fallback and settings.model_uri is None:
        try:
            load_bundle(settings.model_dir)  # no fallback wanted: fail fast with the reason, before binding a port
        except BundleError as exc:
            fail(str(exc))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in the log on reloads
    # uvicorn drains in-flight requests on SIGTERM, then raises the signal again once its own handler
    # is gone: this one turns that into a clean exit 0 (and ends the process before uvicorn starts).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )


@app.command()
def evaluate(
    model: Annotated[Path | None, typer.Option(help="Model bundle directory (default: the shipped model).")] = None,
    invoices: Annotated[int, typer.Option(min=10, help="Held-out failed invoices to recover.")] = 3000,
    seed: Annotated[int, typer.Option(help="Seed of the held-out world (not the training seed).")] = 2026,
    max_retries: Annotated[int, typer.Option(min=1, help="Retry budget per invoice.")] = 4,
    window_days: Annotated[float, typer.Option(min=1, help="Retry window from the first failure, in days.")] = 14,
    chart: Annotated[Path | None, typer.Option(help="Where to save the comparison chart (.png).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    mlflow_logging: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the run to MLflow.")] = True,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help="Run only this policy (repeat for several; default: all but the diagnostic "
            "oracle_without_calendar). Uplift capture needs the fixed schedules and the oracle among them.",
        ),
    ] = None,
    workflow: Annotated[
        bool,
        typer.Option(
            "--workflow",
            help="Instead: replay the invoices that share a card in time order, with and without per-card "
            "planning and card updates (training/workflow_eval.py).",
        ),
    ] = False,
) -> None:
    """Closed-loop comparison of the learned policy with baselines and an oracle, in the simulator."""
    from features.bundle import BundleError, load_bundle
    from serving.settings import DEFAULT_MODEL_DIR
    from training.evaluate import (
        EvaluationConfig,
        format_table,
        log_evaluation,
        policy_names,
        run_evaluation,
        save_chart,
    )

    bundle_dir = model or DEFAULT_MODEL_DIR
    try:
        load_bundle(bundle_dir)
    except BundleError as exc:
        fail(str(exc))
    config = EvaluationConfig(invoices=invoices, seed=seed, max_retries=max_retries, window_days=window_days)
    if workflow:
        from training.workflow_eval import format_workflow, run_workflow_evaluation

        typer.echo(format_workflow(run_workflow_evaluation(bundle_dir, config)))
        return
    try:
        names = policy_names(policy)
    except ValueError as exc:
        fail(str(exc))
    result = run_evaluation(bundle_dir, config, policies=names)
    typer.echo(format_table(result))
    if chart is not None:
        typer.echo(f"chart saved to {save_chart(result, chart)}")
    if mlflow_logging:
        from training.tracking import configure_mlflow

        uri = configure_mlflow(tracking_uri, experiment="retryopt-evaluation")
        typer.echo(f"logged MLflow run {log_evaluation(result, config)} to {uri}")


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="Attempts dataset to write (.csv or .parquet).")],
    database_url: Annotated[str | None, typer.Option(help="Store URL (default: RETRYOPT_DATABASE_URL).")] = None,
) -> None:
    """Write the stored outcomes as an attempts dataset (contract §1), ready for `retryopt train`."""
    from sqlalchemy.exc import SQLAlchemyError

    from serving.settings import get_settings
    from serving.store import make_engine, outcomes_frame, session_factory
    from training.data import validate_attempts, write_attempts

    if out.suffix not in {".csv", ".parquet", ".pq"} and not out.name.endswith(".csv.gz"):
        fail(f"--out must end in .csv, .csv.gz or .parquet, got {out.name}")
    url = database_url or get_settings().database_url
    try:
        with session_factory(make_engine(url))() as session:
            frame = outcomes_frame(session)
    except SQLAlchemyError as exc:
        fail(f"cannot read the store at {url}: {exc.__class__.__name__}")
    if frame.empty:
        fail(f"the store at {url} holds no outcomes")
    attempts, report = validate_attempts(frame.drop(columns=["decision_id"], errors="ignore"))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_attempts(attempts, out)
    rejected = report.rows_read - report.rows_valid
    note = (
        f" ({rejected:,} rows failed validation and were left out; first: {report.errors.iloc[0].to_dict()})"
        if rejected
        else ""
    )
    typer.echo(f"wrote {len(attempts):,} attempts of {attempts['invoice_id'].nunique():,} invoices to {out}{note}")


def main() -> None:
    """Entry point for `python -m retryopt`."""
    app()
