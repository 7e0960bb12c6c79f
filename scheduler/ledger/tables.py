"""The ledger's tables at the newest schema (the migrations build them; these map them).

Times are UTC epoch seconds (floats), as everywhere in the core. Table names carry a
`ledger_` prefix so the ledger can share a PostgreSQL database with other tools.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel

VERSION_TABLE = "gpufair_ledger_version"


class PeriodUsage(SQLModel, table=True):
    """GPU-seconds a team used in one budget period, per tier."""

    __tablename__ = "ledger_period_usage"

    team: str = Field(primary_key=True)
    period_start_s: float = Field(primary_key=True)
    tier: str = Field(primary_key=True)
    period_end_s: float
    gpu_seconds: float = 0.0


class LevelUsage(SQLModel, table=True):
    """GPU-seconds charged below a group of the team tree (schema 0003) in one of the
    group's own budget periods, per tier: what its budget counts."""

    __tablename__ = "ledger_level_usage"

    level: str = Field(primary_key=True)  # the group's name
    period_start_s: float = Field(primary_key=True)
    tier: str = Field(primary_key=True)
    period_end_s: float
    gpu_seconds: float = 0.0


class GangRecord(SQLModel, table=True):
    """One gang's life: first start, current run, end, preemptions, and how far it is charged.

    `charged_until_s` is the checkpoint that makes accrual idempotent: usage is charged
    from there (or the current run's start, whichever is later) up to the accrual instant.
    """

    __tablename__ = "ledger_gang"

    gang_id: str = Field(primary_key=True)
    namespace: str = ""
    team: str
    tier: str
    gpus: float
    submit_s: float | None = None
    start_s: float | None = None
    run_start_s: float | None = None
    end_s: float | None = None
    nodes: str = ""
    preemptions: int = 0
    lost_gpu_seconds: float = 0.0
    charged_until_s: float | None = None


class TeamDecay(SQLModel, table=True):
    """A team's decayed GPU-seconds as of `decayed_at_s` (decayed further on read)."""

    __tablename__ = "ledger_team_usage"

    team: str = Field(primary_key=True)
    decayed_gpu_seconds: float = 0.0
    decayed_at_s: float = 0.0


class AuditEntry(SQLModel, table=True):
    """One decision carried out: an eviction (with its preemptor and reason) or a bind."""

    __tablename__ = "ledger_audit"

    id: int | None = Field(default=None, primary_key=True)
    at_s: float
    action: str  # 'evict' or 'bind'
    gang: str
    pod: str = ""
    node: str = ""
    team: str = ""
    tier: str = ""
    preemptor: str = ""
    kind: str = ""
    reason: str = ""


class Checkpoint(SQLModel, table=True):
    """Named instants the ledger keeps (schema 0002): the last accrual and the last pruning."""

    __tablename__ = "ledger_checkpoint"

    name: str = Field(primary_key=True)
    value_s: float
