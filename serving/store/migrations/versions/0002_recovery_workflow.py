"""Recovery workflow: the plan's recovery odds on each decision, per-card and expiry lookups.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Adds ``decisions.recovery_probability`` (P(the planned schedule recovers the invoice by its
window's end)) and ``decisions.expected_hours_to_recovery`` (expected hours from the decision to the
success, given that the plan recovers it), which the worklist ranks by; and indexes for the
per-card attempt caps (outcomes and decisions by card fingerprint) and the expiring-cards list.
Written by hand and frozen, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the two decision columns and the per-card indexes."""
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("recovery_probability", sa.Float(), nullable=True))
        batch.add_column(sa.Column("expected_hours_to_recovery", sa.Float(), nullable=True))
    op.create_index("ix_decisions_card_fingerprint_decided_at", "decisions", ["card_fingerprint", "decided_at"])
    op.create_index("ix_outcomes_card_fingerprint_attempted_at", "outcomes", ["card_fingerprint", "attempted_at"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_outcomes_card_fingerprint_attempted_at", table_name="outcomes")
    op.drop_index("ix_decisions_card_fingerprint_decided_at", table_name="decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("expected_hours_to_recovery")
        batch.drop_column("recovery_probability")
