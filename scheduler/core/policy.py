"""A policy: the set of units, one behind each extension point of framework.py, that a
cycle runs. The named policies are in policies.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.core.filters import DEFAULT_FILTERS, NODE_FILTERS
from scheduler.core.framework import (
    Gate,
    NodeFilter,
    QueueOrder,
    ReclaimRule,
    TierPass,
    VictimPolicy,
    resolve,
)
from scheduler.core.gates import GATES, BudgetBlock, ProductionAllowance
from scheduler.core.ordering import QUEUE_ORDERS
from scheduler.core.passes import TIER_PASSES, Nominated, Production, Scavenger, Training
from scheduler.core.preferences import DEFAULT_PREFERENCES, Preference
from scheduler.core.reclaim import RECLAIM_RULES, BelowShare
from scheduler.core.scoring import SCORERS
from scheduler.core.victims import VICTIM_POLICIES, ProtectShares

# Nominated gangs, then production, training in the queue order, scavenger work.
TIERED: tuple[TierPass, ...] = (Nominated(), Production(), Training(), Scavenger())


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    scorer: str  # a key of scoring.SCORERS
    order: QueueOrder  # which team the training pass serves next
    passes: tuple[TierPass, ...]  # run in this order
    victims: VictimPolicy  # who may be evicted for whom
    reclaim: ReclaimRule | None  # None: no team takes GPUs back from another
    filters: tuple[NodeFilter, ...] = DEFAULT_FILTERS
    gates: tuple[Gate, ...] = (BudgetBlock(), ProductionAllowance())
    # Scores of the pods' soft preferences, weighed by PolicyConfig.score_weights.
    preferences: tuple[Preference, ...] = DEFAULT_PREFERENCES
    tiers: bool = True  # production first; lower tiers can be preempted by higher ones
    budgets: bool = True  # GPU-hour budgets take effect
    history: bool = True  # decayed usage orders teams
    preemption: bool = True

    def __post_init__(self) -> None:
        resolve(SCORERS, "scorer", self.scorer)

    @classmethod
    def build(
        cls,
        name: str,
        scorer: str,
        order: str,
        passes: Sequence[str],
        victims: str = ProtectShares.name,
        reclaim: str | None = BelowShare.name,
        filters: Sequence[str] = tuple(f.name for f in DEFAULT_FILTERS),
        gates: Sequence[str] = (BudgetBlock.name, ProductionAllowance.name),
        **switches: bool,
    ) -> Policy:
        """A policy from the names of its units; an unknown name is refused with the list
        of valid ones."""
        return cls(
            name,
            scorer,  # checked by __post_init__
            resolve(QUEUE_ORDERS, "order", order),
            tuple(resolve(TIER_PASSES, "pass", p) for p in passes),
            resolve(VICTIM_POLICIES, "victims", victims),
            None if reclaim is None else resolve(RECLAIM_RULES, "reclaim", reclaim),
            tuple(resolve(NODE_FILTERS, "filter", f) for f in filters),
            tuple(resolve(GATES, "gate", g) for g in gates),
            DEFAULT_PREFERENCES,
            **switches,
        )
