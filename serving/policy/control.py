"""The control arm: a fixed retry schedule for a hashed share of invoices, to prove uplift.

The same fixed schedule serves the fallback arm when no model can be loaded.

Merchants prove a retry tool pays by comparing it with a holdout on a plain schedule. The
control arm obeys the same rules as the learned planner; only the choice of times differs.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import pandas as pd

from serving.policy.context import DecisionContext
from serving.policy.planner import FloatArray, Plan
from serving.settings import Settings

# `fallback`: no model can be served, so every invoice follows the fixed schedule (policy/fallback.py).
Arm = Literal["learned", "control", "fallback"]


def policy_arm(invoice_id: str, control_share: float) -> Arm:
    """Stable arm of an invoice: the first 8 bytes of sha256(invoice_id) as a fraction of 2^64."""
    if control_share <= 0:
        return "learned"
    bucket = int.from_bytes(hashlib.sha256(invoice_id.encode()).digest()[:8], "big") / 2**64
    return "control" if bucket < control_share else "learned"


def control_plan(times: pd.DatetimeIndex, probs: FloatArray, ctx: DecisionContext, settings: Settings) -> Plan:
    """The fixed schedule's remaining retries on the candidate grid (first grid time at or after each).

    Retry k after the first failure is due at first failure + `control_schedule_days[k]`; one
    that falls before the earliest allowed time moves to it, and later ones keep the spacing.
    """
    offsets = settings.control_schedule_days[ctx.retries_made :][: probs.shape[0]]
    slots: list[int] = []
    not_before = times[0] if len(times) else None
    for days in offsets:
        if not_before is None:
            break
        due = max(ctx.first_failure + pd.Timedelta(days=days), not_before)
        slot = int(times.searchsorted(due, side="left"))
        if slot >= len(times):
            break
        slots.append(slot)
        not_before = times[slot] + pd.Timedelta(hours=settings.min_retry_spacing_hours)
    probabilities = tuple(float(probs[k, s]) for k, s in enumerate(slots))
    return Plan(
        slots=tuple(slots),
        times=tuple(times[s] for s in slots),
        probabilities=probabilities,
        value=float("nan"),
        best_slot=slots[0] if slots else None,
    )
