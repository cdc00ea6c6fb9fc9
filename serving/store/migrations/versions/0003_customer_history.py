"""Customer history: outcomes and decisions by customer, for a decision's customer features.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Each decision reads the customer's earlier invoices (when they failed and were recovered); these
indexes keep that read to the customer's own rows. Written by hand and frozen, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Index outcomes and decisions by customer and time."""
    op.create_index("ix_outcomes_customer_id_attempted_at", "outcomes", ["customer_id", "attempted_at"])
    op.create_index("ix_decisions_customer_id_decided_at", "decisions", ["customer_id", "decided_at"])


def downgrade() -> None:
    """Drop the indexes."""
    op.drop_index("ix_decisions_customer_id_decided_at", table_name="decisions")
    op.drop_index("ix_outcomes_customer_id_attempted_at", table_name="outcomes")
