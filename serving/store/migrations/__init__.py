"""Alembic environment of the store (the only way its schema is created or changed)."""
