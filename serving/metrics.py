"""Prometheus metrics of one app: a registry per app, so two apps (or tests) never share counters."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

# Decisions run in milliseconds; the top buckets catch a slow model or a huge window.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Metrics:
    """The service's instruments."""

    registry: CollectorRegistry
    decisions: Counter
    decision_seconds: Histogram
    model_reloads: Counter


def create_metrics() -> Metrics:
    """Fresh instruments in a fresh registry."""
    registry = CollectorRegistry(auto_describe=True)
    decisions = Counter("retryopt_decisions", "Retry decisions made, by action.", ["action"], registry=registry)
    seconds = Histogram(
        "retryopt_decision_seconds",
        "Time to decide one retry, model call included.",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    reloads = Counter(
        "retryopt_model_reloads",
        "Model reloads by result: success (a new model is served), unchanged, failure (the old model is kept).",
        ["result"],
        registry=registry,
    )
    return Metrics(registry=registry, decisions=decisions, decision_seconds=seconds, model_reloads=reloads)
