"""Initial schema: decisions, outcomes, card_updates.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Written by hand and frozen: it must not import the models, which describe the latest schema,
not this revision's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    """JSON everywhere, jsonb on PostgreSQL."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp() -> sa.DateTime:
    """Timezone-aware timestamp (timestamptz on PostgreSQL; UTC text on SQLite)."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the three tables and their indexes."""
    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.String(), nullable=False),
        sa.Column("invoice_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("card_fingerprint", sa.String(), nullable=True),
        sa.Column("card_brand", sa.String(), nullable=False),
        sa.Column("card_country", sa.String(), nullable=True),
        sa.Column("card_funding", sa.String(), nullable=True),
        sa.Column("card_exp_month", sa.Integer(), nullable=True),
        sa.Column("card_exp_year", sa.Integer(), nullable=True),
        sa.Column("customer_timezone", sa.String(), nullable=True),
        sa.Column("billing_interval", sa.String(), nullable=True),
        sa.Column("customer_created_at", _timestamp(), nullable=True),
        sa.Column("decline_code", sa.String(), nullable=True),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("decided_at", _timestamp(), nullable=False),
        sa.Column("created_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("retry_at", _timestamp(), nullable=True),
        sa.Column("success_probability", sa.Float(), nullable=True),
        sa.Column("expected_recovered_amount", sa.BigInteger(), nullable=False),
        sa.Column("schedule", _json(), nullable=False),
        sa.Column("reasons", _json(), nullable=False),
        sa.Column("next_step", sa.String(), nullable=True),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("policy", sa.String(), nullable=False),
        sa.Column("window_end", _timestamp(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("blocked_by_rule", sa.String(), nullable=True),
        sa.CheckConstraint("action IN ('retry', 'stop')", name="ck_decisions_action"),
        sa.CheckConstraint("policy IN ('learned', 'control', 'fallback')", name="ck_decisions_policy"),
        sa.PrimaryKeyConstraint("decision_id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_invoice_id_decided_at", "decisions", ["invoice_id", "decided_at"])
    op.create_index("ix_decisions_decided_at", "decisions", ["decided_at"])

    op.create_table(
        "outcomes",
        sa.Column("attempt_id", sa.String(), nullable=False),
        sa.Column("invoice_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("attempted_at", _timestamp(), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("decline_code", sa.String(), nullable=True),
        sa.Column("network_decline_code", sa.String(), nullable=True),
        sa.Column("merchant_advice_code", sa.String(), nullable=True),
        sa.Column("decision_id", sa.String(), nullable=True),
        sa.Column("card_fingerprint", sa.String(), nullable=True),
        sa.Column("received_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("attempt_id", name="pk_outcomes"),
    )
    op.create_index("ix_outcomes_invoice_id_attempted_at", "outcomes", ["invoice_id", "attempted_at"])
    op.create_index("ix_outcomes_attempted_at", "outcomes", ["attempted_at"])

    op.create_table(
        "card_updates",
        sa.Column("update_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("invoice_id", sa.String(), nullable=True),
        sa.Column("card", _json(), nullable=False),
        sa.Column("card_fingerprint", sa.String(), nullable=True),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("received_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("source IN ('account_updater', 'customer')", name="ck_card_updates_source"),
        sa.PrimaryKeyConstraint("update_id", name="pk_card_updates"),
    )
    op.create_index("ix_card_updates_customer_id_updated_at", "card_updates", ["customer_id", "updated_at"])


def downgrade() -> None:
    """Drop everything ``upgrade`` created."""
    op.drop_index("ix_card_updates_customer_id_updated_at", table_name="card_updates")
    op.drop_table("card_updates")
    op.drop_index("ix_outcomes_attempted_at", table_name="outcomes")
    op.drop_index("ix_outcomes_invoice_id_attempted_at", table_name="outcomes")
    op.drop_table("outcomes")
    op.drop_index("ix_decisions_decided_at", table_name="decisions")
    op.drop_index("ix_decisions_invoice_id_decided_at", table_name="decisions")
    op.drop_table("decisions")
