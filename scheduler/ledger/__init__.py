"""The GPU-hour ledger (SQLite by default, PostgreSQL by URL); see `store.Ledger`."""

from scheduler.ledger.store import (
    DEFAULT_HALF_LIFE_S,
    DEFAULT_RETENTION_S,
    Accrual,
    GangRun,
    Ledger,
    LedgerError,
    Preemption,
    database_url,
)

__all__ = [
    "DEFAULT_HALF_LIFE_S",
    "DEFAULT_RETENTION_S",
    "Accrual",
    "GangRun",
    "Ledger",
    "LedgerError",
    "Preemption",
    "database_url",
]
