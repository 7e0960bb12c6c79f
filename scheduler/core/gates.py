"""Gates: whether a team's gangs of a tier may be tried at all this cycle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.core import reasons
from scheduler.core.framework import Gate
from scheduler.core.model import Tier

if TYPE_CHECKING:
    from scheduler.core.cycle import Cycle


class BudgetBlock(Gate):
    """A team over its GPU-hour budget with `onExhausted: block` (or whose work cannot
    scavenge) waits until the period resets: its budget is the platform's limit. Production
    is exempt unless `budgetAppliesToProduction`, so serving does not stop with a budget."""

    name = "budget"

    def applies(self, cyc: Cycle) -> bool:
        return any(cyc.exhausted)

    def refuse(self, cyc: Cycle, t: int, tier: Tier, scavenging: bool) -> tuple[str, str] | None:
        blocked = (
            cyc.exhausted[t]
            and not scavenging
            and (tier is not Tier.PRODUCTION or cyc.config.budget_applies_to_production)
        )
        if not blocked:
            return None
        at = cyc.exhausted_at[t]  # the first exhausted budget on the team's path
        return "BudgetBlocked", reasons.budget_blocked(cyc.teams[t], cyc.budgets[at], cyc.teams[at])


class ProductionAllowance(Gate):
    """Production preempts other teams' work, so only a team the platform has granted it
    (GPUTeam spec.production.allowed) may run it; a pod's own PriorityClass cannot."""

    name = "production-allowance"

    def applies(self, cyc: Cycle) -> bool:
        return not all(t.production_allowed for t in cyc.teams)

    def refuse(self, cyc: Cycle, t: int, tier: Tier, scavenging: bool) -> tuple[str, str] | None:
        if tier is not Tier.PRODUCTION or t == cyc.sink or cyc.teams[t].production_allowed:
            return None
        return "ProductionNotAllowed", reasons.production_not_allowed(cyc.teams[t])


GATES: dict[str, Gate] = {g.name: g for g in (BudgetBlock(), ProductionAllowance())}
