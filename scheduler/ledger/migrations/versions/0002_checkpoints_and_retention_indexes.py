"""Checkpoint instants (last accrual, last pruning) and the indexes retention pruning needs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_checkpoint",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("value_s", sa.Float(), nullable=False),
    )
    # A ledger written by 0001 already accrued: its newest charge is the last accrual.
    op.execute(
        "INSERT INTO ledger_checkpoint (name, value_s) "
        "SELECT 'last_accrual_s', MAX(charged_until_s) FROM ledger_gang "
        "WHERE charged_until_s IS NOT NULL HAVING COUNT(charged_until_s) > 0"
    )
    op.create_index("ix_ledger_audit_at_s", "ledger_audit", ["at_s"])
    op.create_index("ix_ledger_gang_end_s", "ledger_gang", ["end_s"])
    op.create_index("ix_ledger_gang_open", "ledger_gang", ["team", "end_s"])
    op.create_index("ix_ledger_period_usage_end", "ledger_period_usage", ["period_end_s"])


def downgrade() -> None:
    op.drop_index("ix_ledger_period_usage_end", "ledger_period_usage")
    op.drop_index("ix_ledger_gang_open", "ledger_gang")
    op.drop_index("ix_ledger_gang_end_s", "ledger_gang")
    op.drop_index("ix_ledger_audit_at_s", "ledger_audit")
    op.drop_table("ledger_checkpoint")
