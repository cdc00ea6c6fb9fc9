"""The model card: a human summary of a bundle, written next to it from its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CARD_FILE = "MODEL_CARD.md"


def _fmt(value: float) -> str:
    """Metric value with four decimals."""
    return f"{value:.4f}"


def _group_table(title: str, groups: dict[str, dict[str, float]]) -> list[str]:
    """Holdout metrics per group: size, success rate against mean prediction, AUC and ECE."""
    return [
        f"| {title} | retries | success rate | mean prediction | AUC | ECE |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {int(m['rows'])} | {_fmt(m['positive_rate'])} | {_fmt(m['mean_prediction'])} | "
            f"{_fmt(m['auc'])} | {_fmt(m['ece'])} |"
            for name, m in groups.items()
        ),
    ]


def render_model_card(manifest: dict[str, Any], command: str) -> str:
    """Markdown card: what the model is for, the data, the holdout metrics, the limits."""
    metrics = manifest["metrics"]
    data = manifest["data_summary"]
    test, base = metrics["test"], metrics["baseline_logistic_test"]
    rows = [
        "| model | AUC | log loss | Brier | ECE |",
        "|---|---|---|---|---|",
        f"| LightGBM + isotonic | {_fmt(test['auc'])} | {_fmt(test['log_loss'])} | {_fmt(test['brier'])} | {_fmt(test['ece'])} |",
        f"| LightGBM, uncalibrated | {_fmt(metrics['test_uncalibrated']['auc'])} | "
        f"{_fmt(metrics['test_uncalibrated']['log_loss'])} | {_fmt(metrics['test_uncalibrated']['brier'])} | "
        f"{_fmt(metrics['test_uncalibrated']['ece'])} |",
        f"| logistic baseline | {_fmt(base['auc'])} | {_fmt(base['log_loss'])} | {_fmt(base['brier'])} | {_fmt(base['ece'])} |",
    ]
    by_category = _group_table("last decline category", metrics["test_by_decline_category"])
    # Bundles trained before the breakdown by customer history have no such table.
    history = metrics.get("test_by_customer_history")
    by_history = [*_group_table("customer history", history), ""] if history else []
    split = manifest["split"]
    return "\n".join(
        [
            f"# Model card: {manifest['model_version']}",
            "",
            "**What it does.** Estimates the probability that a retry of a failed recurring card payment",
            "succeeds at a given time, from the invoice's decline history, the card, and the customer's",
            "local calendar. The retry policy uses it to choose when to retry; card-network rules are",
            "applied before and after it, never learned.",
            "",
            "## Data",
            f"- {data['invoices']:,} invoices, {data['attempts']:,} attempts, {data['retries']:,} retries "
            f"({data['first_attempt']} to {data['last_attempt']}); retry success rate {data['retry_success_rate']:.3f}.",
            "- Source: the project's simulator (`docs/simulator.md`), not real payments.",
            f"- Split: {split['method']}; fractions {split['fractions']}; rows {split['rows']}.",
            "",
            "## Holdout metrics (the latest 15% of invoices by first failure)",
            *rows,
            "",
            *by_category,
            "",
            *by_history,
            "## Reproduce",
            "```",
            command,
            "```",
            "",
            "## Limits",
            "- Trained on simulated data: its timing patterns are the simulator's, not any real",
            "  population's. Retrain on your own attempts (`retryopt train`) before trusting its timing.",
            "- Probabilities assume the scheduler's card and amount stay the same; card updates and",
            "  card-network rules are handled by the policy, not the model.",
            "- Hard declines are never retried whatever the model says.",
            f"- Library versions: {manifest['versions']}; feature spec `{manifest['feature_spec']}`.",
            "",
        ]
    )


def write_model_card(bundle_dir: Path, manifest: dict[str, Any], command: str) -> Path:
    """Write MODEL_CARD.md into the bundle directory."""
    path = Path(bundle_dir) / CARD_FILE
    path.write_text(render_model_card(manifest, command))
    return path
