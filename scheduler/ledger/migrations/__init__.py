"""Alembic environment of the ledger; `scheduler.ledger.migrate` runs it in code."""
