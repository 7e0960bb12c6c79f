"""Which tier a gang runs in: by PriorityClass value, and by its team's budget."""

from __future__ import annotations

from scheduler.core.config import PolicyConfig
from scheduler.core.model import Tier


def tier_by_priority(priority: int, config: PolicyConfig) -> Tier:
    if priority >= config.production_min_priority:
        return Tier.PRODUCTION
    if priority < config.scavenger_below_priority:
        return Tier.SCAVENGER
    return Tier.TRAINING


def effective_tier(priority: int, budget_exhausted: bool, config: PolicyConfig) -> Tier:
    """A team over its budget (onExhausted: scavenge) runs as scavenger.

    Production is exempt unless `budget_applies_to_production`: an inference service
    should not go down because the same team's experiments used the month's hours.
    """
    tier = tier_by_priority(priority, config)
    if not budget_exhausted:
        return tier
    if tier is Tier.PRODUCTION and not config.budget_applies_to_production:
        return tier
    return Tier.SCAVENGER
