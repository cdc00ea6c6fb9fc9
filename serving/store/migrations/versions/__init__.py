"""Alembic revisions of the store, oldest first by their ``down_revision`` chain."""
