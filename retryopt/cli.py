"""The `retryopt` command: wires the packages together; each command's logic lives in them.

Heavy imports happen inside the commands so `retryopt --help` stays fast and nothing runs at
import time. Bad input ends with a one-line reason on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

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
) -> None:
    """Write a synthetic attempts dataset (contract §1)."""
    from training.data import write_attempts
    from training.simulate import simulate as run_simulation

    if out.suffix not in {".csv", ".parquet", ".pq"} and not out.name.endswith(".csv.gz"):
        fail(f"--out must end in .csv, .csv.gz or .parquet, got {out.name}")
    result = run_simulation(invoices, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_attempts(result.attempts, out)
    if truth is not None:
        truth.parent.mkdir(parents=True, exist_ok=True)
        result.invoices.to_parquet(truth)
    succeeded = result.attempts.groupby("invoice_id")["succeeded"].any().mean()
    typer.echo(
        f"wrote {len(result.attempts):,} attempts of {invoices:,} invoices to {out} (recovered: {succeeded:.1%})"
    )


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Attempts dataset (.csv or .parquet).")],
    out: Annotated[Path, typer.Option(help="Directory for the servable model bundle.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db).")
    ] = None,
    mlflow_logging: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the run to MLflow.")] = True,
) -> None:
    """Train, evaluate, log to MLflow and write a servable model to OUT."""
    from training.data import AttemptsDataError, load_attempts
    from training.model_card import write_model_card
    from training.train import TrainConfig, train_model

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
    config = TrainConfig(seed=seed)
    try:
        result = train_model(attempts, out, config)
    except ValueError as exc:
        fail(str(exc))
    manifest = json.loads((result.bundle_dir / "manifest.json").read_text())
    command = "retryopt " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "retryopt train"
    write_model_card(result.bundle_dir, manifest, command)
    if mlflow_logging:
        from training.tracking import configure_mlflow, log_run

        uri = configure_mlflow(tracking_uri)
        run_id = log_run(result, config, str(data))
        typer.echo(f"logged MLflow run {run_id} to {uri}")
    test, base = manifest["metrics"]["test"], manifest["metrics"]["baseline_logistic_test"]
    typer.echo(
        f"model {manifest['model_version']} written to {out}: holdout AUC {test['auc']:.4f} "
        f"(logistic {base['auc']:.4f}), log loss {test['log_loss']:.4f}, ECE {test['ece']:.4f}"
    )


@app.command()
def serve(
    model: Annotated[Path | None, typer.Option(help="Model bundle directory (default: the shipped model).")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Start the HTTP API."""
    import uvicorn

    from features.bundle import BundleError, load_bundle
    from serving.app import create_app
    from serving.settings import get_settings

    settings = get_settings()
    if model is not None:
        settings = settings.model_copy(update={"model_dir": model})
    try:
        load_bundle(settings.model_dir)  # fail fast with the reason, before binding a port
    except BundleError as exc:
        fail(str(exc))
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def main() -> None:
    """Entry point for `python -m retryopt`."""
    app()
