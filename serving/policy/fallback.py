"""Fallback mode: keep deciding by the rules and the fixed schedule when no model can be served.

When the model is missing or cannot be loaded at start (a deleted directory, a corrupt file, a
registry that does not answer), the service does not refuse to start and the billing scheduler
is not left without answers. Instead, until a reload succeeds:

- every invoice is decided by the **control arm** (`serving.policy.control.control_plan`): the
  fixed schedule `control_schedule_days` (+1, +3, +5, +7 days after the first failure by
  default) on the candidate grid, under the very same rules as the learned policy — hard
  declines and new-card codes still stop, merchant advice codes, spacing, network caps, the
  window and the retry budget still apply;
- decisions report `model_version: "fallback"`;
- every planned retry's `success_probability` is `fallback_success_probability` (default 0.2):
  a **prior, not a prediction** — it does not depend on the card, the decline or the time, and
  `expected_recovered_amount` follows from it;
- `/readyz` answers 200 `{"status": "degraded", "reason": ...}` (the service can decide, so a
  load balancer keeps it in rotation); operators alert on `degraded`.

A later successful reload (the registry alias moving, or `POST /admin/reload`) leaves fallback.
Fallback decisions are stored with policy `fallback` and model version `fallback`, so the
control-vs-learned comparison is not mixed with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.candidates import FEATURE_COLUMNS
from serving.policy.scoring import FloatArray
from serving.settings import Settings

FALLBACK_VERSION = "fallback"


@dataclass(frozen=True)
class FallbackScorer:
    """A Scorer without a model: the same prior for every slot, and no feature contributions."""

    probability: float
    model_version: str = FALLBACK_VERSION

    def score(self, slots: pd.DataFrame, features: pd.DataFrame) -> FloatArray:
        """The prior for every slot row (the control schedule picks the times, not the scores)."""
        return np.full(len(slots), self.probability, dtype=np.float64)

    def contributions(self, features: pd.DataFrame) -> FloatArray:
        """All zeros, bias included: no model, nothing to explain."""
        return np.zeros((len(features), len(FEATURE_COLUMNS) + 1), dtype=np.float64)


def fallback_scorer(settings: Settings) -> FallbackScorer:
    """The fallback's scorer, with the configured prior."""
    return FallbackScorer(settings.fallback_success_probability)
