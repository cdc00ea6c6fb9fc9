"""The MLflow model registry: register bundles, resolve `models:/` URIs, promote challengers.

A registered version is an MLflow pyfunc model that carries the whole bundle directory as an
artifact (`artifacts/bundle/`), so any MLflow tool can score it and serving can take the bundle
back out unchanged. Versions are named by aliases, never by the deprecated stages: every new
version becomes `challenger`, the first one also `champion`, and `promote` moves `champion` to the
challenger only when the challenger is not worse on one fixed holdout:

- holdout log loss not higher than the champion's by more than `log_loss_tolerance`
  (0.002 nats per retry: about the noise of a paired difference on a few thousand retries), and
- closed-loop recovery rate (the learned policy replayed on the simulator's held-out invoices,
  both models facing the same invoices and dice) not lower by more than `recovery_tolerance`
  (1 percentage point: about one standard error of a paired difference on 1,000 invoices).
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from serving.model_source import ModelSourceError, download_bundle, is_model_uri

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_NAME = "retry_model"  # the logged model's name inside its run
BUNDLE_ARTIFACT = "bundle"
# What loading the pyfunc needs besides the retryopt package itself (the `features` library).
PYFUNC_REQUIREMENTS = ("mlflow", "lightgbm", "numpy", "pandas", "scikit-learn", "pyarrow", "tzdata", "cloudpickle")


# The registry cannot do what was asked; str() is a one-line reason. One class with the model
# source's error, so `except RegistryError` still catches what the moved `download_bundle` raises.
RegistryError = ModelSourceError


# ---------------------------------------------------------------------------------------------
# The pyfunc wrapper and registration.
# ---------------------------------------------------------------------------------------------
class BundleModel(PythonModel):
    """MLflow pyfunc around a retryopt bundle: a frame of FEATURE_COLUMNS in, probabilities out."""

    def load_context(self, context: Any) -> None:
        """Load and validate the bundle MLflow unpacked next to the model."""
        from features.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """Calibrated success probability of each row."""
        return np.asarray(self.bundle.predict(pd.DataFrame(model_input)), dtype=np.float64)


def model_code_file(directory: Path) -> Path:
    """The model as code (MLflow's "models from code"): loading runs this file instead of
    unpickling an object, so a version stays loadable across Python and cloudpickle upgrades."""
    path = directory / "retryopt_bundle_model.py"
    path.write_text(
        '"""retryopt bundle as an MLflow pyfunc (needs the retryopt package installed)."""\n'
        "import mlflow.models\n\n"
        "from training.registry import BundleModel\n\n"
        "mlflow.models.set_model(BundleModel())\n"
    )
    return path


def pyfunc_requirements() -> list[str]:
    """Pinned pip requirements of the installed versions (no slow inference by MLflow)."""
    pins = []
    for name in PYFUNC_REQUIREMENTS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def example_features(rows: int = 5, seed: int = 0) -> pd.DataFrame:
    """A few feature rows from a tiny simulation, for the model's signature and input example."""
    from training.simulate import simulate
    from training.train import build_training_table

    return build_training_table(simulate(40, seed).attempts).features.head(rows)


@contextmanager
def _bundle_from(source: str | Path) -> Iterator[tuple[Path, str | None]]:
    """(bundle directory, run id or None) for a bundle directory or a run that logged one."""
    path = Path(source)
    if path.is_dir():
        yield path, None
        return
    run_id = str(source)
    with tempfile.TemporaryDirectory(prefix="retryopt-register-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=BUNDLE_ARTIFACT, dst_path=tmp)
        except MlflowException as exc:
            raise RegistryError(f"{source} is neither a bundle directory nor a run with a bundle: {exc}") from None
        yield Path(local), run_id


def register_model(source: str | Path, name: str, example: pd.DataFrame | None = None) -> int:
    """Register a bundle (a directory, or the `bundle` artifacts of a run id) as a new version of
    `name`; it becomes `challenger`, and `champion` too when the model has none. Returns the version.
    """
    from mlflow.models import infer_signature

    from features.bundle import BundleError, load_bundle

    with _bundle_from(source) as (bundle_dir, run_id):
        try:
            bundle = load_bundle(bundle_dir)  # refuse to register what serving would refuse
        except BundleError as exc:
            raise RegistryError(str(exc)) from None
        example = example_features() if example is None else example
        signature = infer_signature(example, bundle.predict(example))
        if run_id is None:
            run = mlflow.start_run(run_name=f"register-{bundle.model_version}")
        else:
            run = mlflow.start_run(run_id=run_id)
        with run, tempfile.TemporaryDirectory(prefix="retryopt-pyfunc-") as code_dir:
            mlflow.set_tag("retryopt.registered_as", name)
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(model_code_file(Path(code_dir))),
                artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
                signature=signature,
                input_example=example,
                pip_requirements=pyfunc_requirements(),
                registered_model_name=name,
                metadata={"model_version": bundle.model_version, "bundle_format": bundle.manifest["format"]},
            )
    version = int(info.registered_model_version)
    client = MlflowClient()
    client.set_model_version_tag(name, str(version), "retryopt.model_version", bundle.model_version)
    client.set_registered_model_alias(name, CHALLENGER, str(version))
    if alias_version(client, name, CHAMPION) is None:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    return version


def alias_version(client: MlflowClient, name: str, alias: str) -> int | None:
    """The version an alias points to, or None when the alias is not set."""
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


# ---------------------------------------------------------------------------------------------
# From a registry URI back to a bundle directory (`download_bundle`, `is_model_uri`: serving.model_source).
# ---------------------------------------------------------------------------------------------
def resolve_model_uri(uri: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local bundle directory for a path or an MLflow URI (downloaded into `cache_dir`, else a
    fresh temporary directory that the caller owns)."""
    if not is_model_uri(uri):
        return Path(uri)
    dst = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="retryopt-model-"))
    dst.mkdir(parents=True, exist_ok=True)
    return download_bundle(str(uri), dst)


# ---------------------------------------------------------------------------------------------
# Comparison on one fixed holdout.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromotionPolicy:
    """When a challenger may replace the champion, and the fixed holdout it is judged on."""

    log_loss_tolerance: float = 0.002  # nats per retry the challenger may lose
    recovery_tolerance: float = 0.01  # share of invoices the challenger may recover fewer of
    # Both simulated from one seed and start (a later period than the default training data):
    # the retries the legacy scheduler made score the models, and the invoices' truth replays the
    # learned policies. Scoring is cheap, the replay is not (tens of ms per invoice), hence two sizes.
    holdout_invoices: int = 3000
    closed_loop_invoices: int = 1000
    seed: int = 2026
    start: str = "2026-02-01"
    days: int = 90
    closed_loop: bool = True  # replay the learned policy (needs training/evaluate.py)


@dataclass(frozen=True)
class ModelScore:
    """One model's figures on the holdout."""

    model_version: str
    metrics: dict[str, float]  # probability_metrics on the holdout's retries
    recovery: dict[str, float] = field(default_factory=dict)  # closed-loop policy metrics, if run


@dataclass(frozen=True)
class Comparison:
    """Champion and challenger on the same holdout."""

    champion: ModelScore
    challenger: ModelScore
    holdout: str  # what the holdout was, for the printout
    closed_loop: str = "not run"  # what the closed-loop replay was, or why it did not run

    def table(self) -> pd.DataFrame:
        """One row per figure: champion, challenger and the change."""
        rows = []
        for section, a, b in (
            ("", self.champion.metrics, self.challenger.metrics),
            ("closed-loop ", self.champion.recovery, self.challenger.recovery),
        ):
            for key in a:
                if key in b and key not in {"rows", "invoices", "seconds"}:
                    rows.append({"figure": f"{section}{key}", "champion": a[key], "challenger": b[key]})
        frame = pd.DataFrame(rows, columns=["figure", "champion", "challenger"])
        frame["change"] = frame["challenger"] - frame["champion"]
        return frame


def simulated_holdout(policy: PromotionPolicy) -> pd.DataFrame:
    """The fixed-seed held-out attempts (the legacy scheduler's retries and their outcomes)."""
    from training.simulate import simulate

    return simulate(policy.holdout_invoices, policy.seed, start=policy.start, days=policy.days).attempts


def model_metrics(bundle_dir: Path, holdout: pd.DataFrame) -> tuple[str, dict[str, float]]:
    """(model version, probability metrics) of a bundle on the holdout's historical retries."""
    from features.bundle import load_bundle
    from training.metrics import probability_metrics
    from training.train import build_training_table

    bundle = load_bundle(bundle_dir)
    table = build_training_table(holdout)
    return bundle.model_version, probability_metrics(table.labels, bundle.predict(table.features))


def closed_loop_available() -> bool:
    """True when the closed-loop evaluator (training/evaluate.py) is installed."""
    return importlib.util.find_spec("training.evaluate") is not None


def closed_loop_recovery(bundle_dir: Path, policy: PromotionPolicy) -> dict[str, float]:
    """Recovery figures of the bundle's learned policy on the simulator's held-out invoices."""
    from training.evaluate import EvaluationConfig, run_evaluation

    config = EvaluationConfig(
        invoices=policy.closed_loop_invoices, seed=policy.seed, start=policy.start, days=policy.days
    )
    row = run_evaluation(bundle_dir, config, policies=["learned"]).table.iloc[0]
    keys = ("recovery_rate", "amount_recovery_rate", "retries_per_invoice", "rule_violations")
    return {k: float(row[k]) for k in keys if k in row}


def compare_models(
    champion_dir: Path,
    challenger_dir: Path,
    holdout: pd.DataFrame | None = None,
    policy: PromotionPolicy | None = None,
) -> Comparison:
    """Score both bundles on one holdout (given, or the fixed-seed simulated one) and, when the
    evaluator is there, replay both learned policies on the same simulated invoices."""
    policy = policy or PromotionPolicy()
    label = "given dataset"
    if holdout is None:
        holdout = simulated_holdout(policy)
        label = f"simulated: {policy.holdout_invoices:,} invoices, seed {policy.seed}, from {policy.start}"
    replay = policy.closed_loop and closed_loop_available()
    scores = []
    for bundle_dir in (champion_dir, challenger_dir):
        version, metrics = model_metrics(Path(bundle_dir), holdout)
        recovery = closed_loop_recovery(Path(bundle_dir), policy) if replay else {}
        scores.append(ModelScore(version, metrics, recovery))
    if replay:
        closed = f"learned policy on {policy.closed_loop_invoices:,} simulated invoices, seed {policy.seed}"
    else:
        closed = (
            "not run"
            + ("" if policy.closed_loop else " (disabled)")
            + ("" if closed_loop_available() else " (no training/evaluate.py)")
        )
    return Comparison(champion=scores[0], challenger=scores[1], holdout=label, closed_loop=closed)


def worse_reasons(comparison: Comparison, policy: PromotionPolicy) -> list[str]:
    """Why the challenger is worse than the champion beyond the tolerances (empty: not worse)."""
    reasons = []
    old, new = comparison.champion.metrics["log_loss"], comparison.challenger.metrics["log_loss"]
    if not np.isfinite(new) or new > old + policy.log_loss_tolerance:
        reasons.append(
            f"holdout log loss {new:.4f} vs champion {old:.4f} (+{new - old:.4f} > {policy.log_loss_tolerance})"
        )
    old_rate = comparison.champion.recovery.get("recovery_rate")
    new_rate = comparison.challenger.recovery.get("recovery_rate")
    if old_rate is not None and new_rate is not None and new_rate < old_rate - policy.recovery_tolerance:
        reasons.append(
            f"recovery rate {new_rate:.1%} vs champion {old_rate:.1%} "
            f"({new_rate - old_rate:+.1%} < -{policy.recovery_tolerance:.1%})"
        )
    return reasons


# ---------------------------------------------------------------------------------------------
# Promotion.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Promotion:
    """What `promote` decided, and why."""

    promoted: bool
    champion_version: int  # after the decision
    challenger_version: int
    message: str  # "promoted vN" or "kept champion vM: <why>"
    comparison: Comparison | None = None


def promote(
    name: str,
    holdout: pd.DataFrame | None = None,
    policy: PromotionPolicy | None = None,
    echo: Callable[[str], None] = print,
) -> Promotion:
    """Move `champion` to the challenger when it is not worse; print the comparison table."""
    policy = policy or PromotionPolicy()
    client = MlflowClient()
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"model {name!r} has no {CHALLENGER!r} version; register one first")
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        client.set_registered_model_alias(name, CHAMPION, str(challenger))
        return Promotion(True, challenger, challenger, f"promoted v{challenger} (there was no champion)")
    if champion == challenger:
        return Promotion(False, champion, challenger, f"kept champion v{champion}: it is also the challenger")
    with tempfile.TemporaryDirectory(prefix="retryopt-promote-") as tmp:
        champion_dir = download_bundle(f"models:/{name}/{champion}", Path(tmp) / "champion")
        challenger_dir = download_bundle(f"models:/{name}/{challenger}", Path(tmp) / "challenger")
        comparison = compare_models(champion_dir, challenger_dir, holdout, policy)
    echo(format_comparison(comparison, champion, challenger))
    reasons = worse_reasons(comparison, policy)
    _tag_comparison(client, name, challenger, comparison, champion)
    if reasons:
        return Promotion(False, champion, challenger, f"kept champion v{champion}: {'; '.join(reasons)}", comparison)
    client.set_registered_model_alias(name, CHAMPION, str(challenger))
    return Promotion(True, challenger, challenger, f"promoted v{challenger}", comparison)


def format_comparison(comparison: Comparison, champion: int, challenger: int) -> str:
    """The comparison as aligned text with the holdout it was made on."""
    table = comparison.table().rename(
        columns={"champion": f"champion v{champion}", "challenger": f"challenger v{challenger}"}
    )
    body = table.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    return f"holdout: {comparison.holdout}\nclosed loop: {comparison.closed_loop}\n{body}"


def _tag_comparison(client: MlflowClient, name: str, version: int, comparison: Comparison, champion: int) -> None:
    """Record the comparison on the challenger's version, so the registry shows why it moved or not."""
    table = comparison.table()
    for figure, change in zip(table["figure"].astype(str), table["change"].astype(float), strict=True):
        if np.isfinite(change):
            key = f"vs_v{champion}.{figure.replace(' ', '_')}"
            client.set_model_version_tag(name, str(version), key, f"{change:+.5f}")
