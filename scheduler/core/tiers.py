"""Which tier a gang runs in: by PriorityClass value, and by its team's budget."""

from __future__ import annotations

import numpy as np

from scheduler.core.config import PolicyConfig
from scheduler.core.model import Tier


def tier_by_priority(priority: int, config: PolicyConfig) -> Tier:
    """The tier a PriorityClass value gives, budgets aside."""
    return effective_tier(priority, False, config)


def effective_tiers(priorities: np.ndarray, scavenging: np.ndarray, config: PolicyConfig) -> np.ndarray:
    """Tiers of many gangs at once; `scavenging` marks gangs of teams over budget
    with onExhausted: scavenge. Those run as scavenger.

    Production is exempt unless `budget_applies_to_production`: an inference service
    should not go down because the same team's experiments used the month's hours.
    """
    # Below the scavenger bound, between the bounds, at or above the production bound: the
    # tiers in value order (the config keeps the bounds in that order).
    bounds = (config.scavenger_below_priority, config.production_min_priority)
    base = np.searchsorted(bounds, priorities, side="right")
    if not scavenging.any():
        return base
    demoted = scavenging & ((base != int(Tier.PRODUCTION)) | bool(config.budget_applies_to_production))
    return np.where(demoted, int(Tier.SCAVENGER), base)


def effective_tier(priority: int, budget_exhausted: bool, config: PolicyConfig) -> Tier:
    """The tier of one gang (see `effective_tiers`)."""
    one = effective_tiers(np.array([priority]), np.array([budget_exhausted]), config)
    return Tier(int(one[0]))
