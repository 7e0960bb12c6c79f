"""Usage booked at every level of the team tree: each charge to a team is also booked to
each group above it (GPUTeam spec.parent), in that group's own budget period.

Revision ID: 0003_team_tree_levels
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_team_tree_levels"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_level_usage",
        sa.Column("level", sa.String(), primary_key=True),
        sa.Column("period_start_s", sa.Float(), primary_key=True),
        sa.Column("tier", sa.String(), primary_key=True),
        sa.Column("period_end_s", sa.Float(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False, server_default="0"),
    )
    op.create_index("ix_ledger_level_usage_end", "ledger_level_usage", ["period_end_s"])


def downgrade() -> None:
    op.drop_index("ix_ledger_level_usage_end", "ledger_level_usage")
    op.drop_table("ledger_level_usage")
