"""Named policies: gpufair's own and the baselines, all run by the same engine.

A policy only picks strategies; the engine holds no policy of its own beyond the order
of the passes. Baselines exist so the simulator can put numbers side by side:
`fifo` is strict first-come first-served with first-fit placement (the first gang that
cannot start blocks the ones behind it); `drf` orders teams by their instantaneous
dominant share (no usage history, no budgets) with best-fit placement, which is what
Volcano's proportion plugin and YuniKorn's fair ordering do.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.core.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    scorer: str  # a key of scoring.SCORERS
    ordering: str  # 'fair-share', 'dominant-share' or 'fifo'
    tiers: bool  # production first; lower tiers can be preempted by higher ones
    budgets: bool  # GPU-hour budgets take effect
    history: bool  # decayed usage orders teams
    preemption: bool
    reclaim: bool  # under-share teams take GPUs back from over-share teams
    head_of_line: bool  # a waiting gang blocks every gang behind it


POLICIES: dict[str, Policy] = {
    "gpufair": Policy(
        "gpufair",
        "fragmentation",
        "fair-share",
        tiers=True,
        budgets=True,
        history=True,
        preemption=True,
        reclaim=True,
        head_of_line=False,
    ),
    "drf": Policy(
        "drf",
        "best-fit",
        "dominant-share",
        tiers=True,
        budgets=False,
        history=False,
        preemption=True,
        reclaim=True,
        head_of_line=False,
    ),
    "fifo": Policy(
        "fifo",
        "first-fit",
        "fifo",
        tiers=False,
        budgets=False,
        history=False,
        preemption=False,
        reclaim=False,
        head_of_line=True,
    ),
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
