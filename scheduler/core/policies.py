"""Named policies: gpufair's own and the baselines, each a set of units behind the
extension points of framework.py, all run by the same cycle.

`fifo` is strict first-come first-served with first-fit placement (the first gang that
cannot start blocks the ones behind it); `drf` orders teams by their instantaneous
dominant share (no usage history, no budgets) with best-fit placement, which is what
Volcano's proportion plugin and YuniKorn's fair ordering do. A new policy is one `Policy`
(see docs/architecture.md) and one line in `POLICIES`.
"""

from __future__ import annotations

from scheduler.core import strict_priority
from scheduler.core.errors import InvalidInput
from scheduler.core.ordering import Arrival, DominantShare, FairShare
from scheduler.core.passes import Fifo, Nominated
from scheduler.core.policy import TIERED, Policy
from scheduler.core.reclaim import BelowShare, Borrowing
from scheduler.core.victims import ProtectShares

__all__ = ["POLICIES", "Policy", "get_policy"]


POLICIES: dict[str, Policy] = {
    "gpufair": Policy("gpufair", "fragmentation", FairShare(), TIERED, ProtectShares(), Borrowing()),
    "drf": Policy(
        "drf",
        "best-fit",
        DominantShare(),
        TIERED,
        ProtectShares(),
        BelowShare(),
        budgets=False,
        history=False,
    ),
    "fifo": Policy(
        "fifo",
        "first-fit",
        Arrival(),
        (Nominated(), Fifo()),
        ProtectShares(),
        None,
        tiers=False,
        budgets=False,
        history=False,
        preemption=False,
    ),
    strict_priority.POLICY.name: strict_priority.POLICY,
}


def get_policy(name: str | Policy) -> Policy:
    if isinstance(name, Policy):
        return name
    try:
        return POLICIES[name]
    except KeyError:
        raise InvalidInput(
            "policy",
            "name",
            f"unknown policy {name!r}",
            f"use one of {', '.join(sorted(POLICIES))}",
        ) from None
