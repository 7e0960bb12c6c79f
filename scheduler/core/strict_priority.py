"""`strict-priority`: the baseline of a scheduler with no notion of teams (kube-scheduler's
PrioritySort queue, Slurm's priority/basic): training gangs go by PriorityClass value, then
age, whichever team they come from. No fair share, usage history, budgets or reclaim; the
tiers still hold (production first, scavenger work last). It is the worked example of
docs/architecture.md: one queue order and one policy, registered in policies.POLICIES."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from scheduler.core.framework import QueueOrder
from scheduler.core.policy import TIERED, Policy
from scheduler.core.victims import ProtectShares

if TYPE_CHECKING:
    from scheduler.core.cycle import Cycle
    from scheduler.core.waiting import Lane


class StrictPriority(QueueOrder):
    """The team whose head gang has the highest priority, then the oldest head."""

    name = "strict-priority"
    skips_doomed = False  # the key is the head's own: every gang passed over moves the team

    def keys(self, cyc: Cycle) -> Callable[[int, Lane], tuple]:
        def key(t: int, lane: Lane) -> tuple:
            return (-lane.head_gang().priority, *lane.head_key())

        return key


POLICY = Policy(
    "strict-priority",
    "best-fit",
    StrictPriority(),
    TIERED,
    ProtectShares(),
    None,
    budgets=False,
    history=False,
)
