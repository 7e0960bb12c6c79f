"""The first ledger schema: period usage, gangs, decayed usage per team, audit log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_period_usage",
        sa.Column("team", sa.String(), primary_key=True),
        sa.Column("period_start_s", sa.Float(), primary_key=True),
        sa.Column("tier", sa.String(), primary_key=True),
        sa.Column("period_end_s", sa.Float(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False, server_default="0"),
    )
    op.create_table(
        "ledger_gang",
        sa.Column("gang_id", sa.String(), primary_key=True),
        sa.Column("namespace", sa.String(), nullable=False, server_default=""),
        sa.Column("team", sa.String(), nullable=False),
        sa.Column("tier", sa.String(), nullable=False),
        sa.Column("gpus", sa.Float(), nullable=False),
        sa.Column("submit_s", sa.Float(), nullable=True),
        sa.Column("start_s", sa.Float(), nullable=True),
        sa.Column("run_start_s", sa.Float(), nullable=True),
        sa.Column("end_s", sa.Float(), nullable=True),
        sa.Column("nodes", sa.String(), nullable=False, server_default=""),
        sa.Column("preemptions", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lost_gpu_seconds", sa.Float(), nullable=False, server_default="0"),
        sa.Column("charged_until_s", sa.Float(), nullable=True),
    )
    op.create_table(
        "ledger_team_usage",
        sa.Column("team", sa.String(), primary_key=True),
        sa.Column("decayed_gpu_seconds", sa.Float(), nullable=False, server_default="0"),
        sa.Column("decayed_at_s", sa.Float(), nullable=False, server_default="0"),
    )
    op.create_table(
        "ledger_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at_s", sa.Float(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("gang", sa.String(), nullable=False),
        sa.Column("pod", sa.String(), nullable=False, server_default=""),
        sa.Column("node", sa.String(), nullable=False, server_default=""),
        sa.Column("team", sa.String(), nullable=False, server_default=""),
        sa.Column("tier", sa.String(), nullable=False, server_default=""),
        sa.Column("preemptor", sa.String(), nullable=False, server_default=""),
        sa.Column("kind", sa.String(), nullable=False, server_default=""),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    for table in ("ledger_audit", "ledger_team_usage", "ledger_gang", "ledger_period_usage"):
        op.drop_table(table)
