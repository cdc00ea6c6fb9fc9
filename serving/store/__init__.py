"""The store: what the service decided, what happened, and the recovery KPIs.

Plain functions over SQLAlchemy engines and sessions (no web framework), used by the HTTP
routes and the CLI:

* schema: :func:`upgrade_database` (Alembic, at startup; the only way the schema is made);
* connections: :func:`make_engine`, :func:`session_factory`, :func:`is_reachable`;
* writes: :func:`record_decision(s) <record_decisions>`, :func:`record_outcome`,
  :func:`record_card_update` (idempotent, commit before returning);
* reads: :func:`get_decision`, :func:`latest_card_update`, :func:`outcomes_frame` (training
  export), :func:`compute_kpis`;
* worklists: :func:`recoverable_invoices` (open failed invoices by expected recoverable amount),
  :func:`expiring_cards` (cards in use that expire soon), in ``serving.store.worklist``.
"""

from serving.store.engine import is_reachable, make_engine, session_factory
from serving.store.kpis import GROUP_BY_CHOICES, compute_kpis
from serving.store.migrate import alembic_config, current_revision, head_revision, upgrade_database
from serving.store.repository import (
    ATTEMPTS_COLUMNS,
    CardUpdateConflict,
    CardUpdateRecord,
    ConflictError,
    DecisionRecord,
    OutcomeConflict,
    OutcomeRecord,
    card_update_times,
    get_decision,
    latest_card_update,
    outcomes_frame,
    record_card_update,
    record_decision,
    record_decisions,
    record_outcome,
)
from serving.store.worklist import ExpiringCard, Page, RecoverableInvoice, expiring_cards, recoverable_invoices

__all__ = [
    "ATTEMPTS_COLUMNS",
    "GROUP_BY_CHOICES",
    "CardUpdateConflict",
    "CardUpdateRecord",
    "ConflictError",
    "DecisionRecord",
    "ExpiringCard",
    "OutcomeConflict",
    "OutcomeRecord",
    "Page",
    "RecoverableInvoice",
    "alembic_config",
    "card_update_times",
    "compute_kpis",
    "current_revision",
    "expiring_cards",
    "get_decision",
    "head_revision",
    "is_reachable",
    "latest_card_update",
    "make_engine",
    "outcomes_frame",
    "record_card_update",
    "record_decision",
    "record_decisions",
    "record_outcome",
    "recoverable_invoices",
    "session_factory",
    "upgrade_database",
]
