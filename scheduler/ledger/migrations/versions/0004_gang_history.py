"""The ledger as a trace: each gang's shape and asks, each run of it, and the node inventory.

Revision ID: 0004
Revises: 0002 (the coordinator re-chains onto 0003 at merge)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003_team_tree_levels"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_history_gang",
        sa.Column("gang_id", sa.String(), primary_key=True),
        sa.Column("namespace", sa.String(), nullable=False, server_default=""),
        sa.Column("team", sa.String(), nullable=False),
        sa.Column("tier", sa.String(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("submit_s", sa.Float(), nullable=False),
        sa.Column("pods", sa.Integer(), nullable=False),
        sa.Column("gpus_per_pod", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("gpu_milli", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cpu_milli", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("memory_mib", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("gpu_model", sa.String(), nullable=False, server_default=""),
        sa.Column("topology_required", sa.String(), nullable=False, server_default=""),
        sa.Column("topology_preferred", sa.String(), nullable=False, server_default=""),
        sa.Column("min_runtime_s", sa.Float(), nullable=True),
        sa.Column("checkpoint_s", sa.Float(), nullable=True),
        sa.Column("start_s", sa.Float(), nullable=True),
        sa.Column("end_s", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False, server_default=""),
        sa.Column("ended_by", sa.String(), nullable=False, server_default=""),
        sa.Column("nodes", sa.Text(), nullable=False, server_default=""),
        sa.Column("runs", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_ledger_history_gang_submit", "ledger_history_gang", ["submit_s"])
    op.create_index("ix_ledger_history_gang_open", "ledger_history_gang", ["end_s"])
    op.create_table(
        "ledger_history_run",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("gang_id", sa.String(), nullable=False),
        sa.Column("team", sa.String(), nullable=False),
        sa.Column("tier", sa.String(), nullable=False),
        sa.Column("gpus", sa.Float(), nullable=False),
        sa.Column("gpu_model", sa.String(), nullable=False, server_default=""),
        sa.Column("nodes", sa.Text(), nullable=False, server_default=""),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("end_s", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False, server_default=""),
        sa.Column("ended_by", sa.String(), nullable=False, server_default=""),
        sa.Column("kind", sa.String(), nullable=False, server_default=""),
    )
    op.create_index("ix_ledger_history_run_gang", "ledger_history_run", ["gang_id", "start_s"])
    op.create_index("ix_ledger_history_run_end", "ledger_history_run", ["end_s"])
    op.create_table(
        "ledger_history_node",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("gpu_model", sa.String(), nullable=False, server_default=""),
        sa.Column("cpu_milli", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("first_seen_s", sa.Float(), nullable=False),
        sa.Column("last_seen_s", sa.Float(), nullable=False),
        sa.Column("gone_s", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("ledger_history_node")
    op.drop_index("ix_ledger_history_run_end", "ledger_history_run")
    op.drop_index("ix_ledger_history_run_gang", "ledger_history_run")
    op.drop_table("ledger_history_run")
    op.drop_index("ix_ledger_history_gang_open", "ledger_history_gang")
    op.drop_index("ix_ledger_history_gang_submit", "ledger_history_gang")
    op.drop_table("ledger_history_gang")
