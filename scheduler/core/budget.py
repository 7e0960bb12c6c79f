"""GPU-hour budget periods (UTC calendar week and month, or fixed lengths) and their state."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from scheduler.core.model import Budget, TeamUsage

_UTC = dt.UTC


def period_bounds(budget: Budget, now_s: float) -> tuple[float, float]:
    """Start and end (epoch seconds) of the budget period that contains `now_s`."""
    if budget.period == "duration":
        length = float(budget.period_seconds or 0.0)
        index = math.floor((now_s - budget.anchor_s) / length)
        start = budget.anchor_s + index * length
        return start, start + length
    now = dt.datetime.fromtimestamp(now_s, _UTC)
    if budget.period == "week":
        monday = (now - dt.timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        return monday.timestamp(), (monday + dt.timedelta(days=7)).timestamp()
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    return first.timestamp(), nxt.timestamp()


@dataclass(frozen=True, slots=True)
class BudgetState:
    limit_gpu_hours: float | None
    used_gpu_hours: float
    resets_s: float | None

    @property
    def left_gpu_hours(self) -> float | None:
        if self.limit_gpu_hours is None:
            return None
        return max(0.0, self.limit_gpu_hours - self.used_gpu_hours)

    @property
    def exhausted(self) -> bool:
        return self.limit_gpu_hours is not None and self.used_gpu_hours >= self.limit_gpu_hours


def budget_state(budget: Budget | None, usage: TeamUsage, now_s: float) -> BudgetState:
    """Where a team stands against its budget; `usage.period_gpu_hours` comes from the ledger."""
    if budget is None:
        return BudgetState(None, usage.period_gpu_hours, None)
    _, end = period_bounds(budget, now_s)
    return BudgetState(budget.gpu_hours, usage.period_gpu_hours, end)
