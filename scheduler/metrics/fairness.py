"""The cluster after a decision cycle, and the simulator's yardsticks computed on it.

Jain's index and fragmented GPUs follow `simulator.summary` and `simulator.engine`
exactly (the tests check the two agree), so a dashboard of the live cluster and one of a
replay mean the same thing. Entitled share: weighted max-min water-filling of the healthy
GPUs over each team's demand (running plus waiting, all tiers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from scheduler.core.model import Decisions, Snapshot, Team
from scheduler.core.teamtree import entitled_shares

# A waiting pod with no whole GPU counts as needing this much (as the simulator does).
_SHARED_POD = 0.001


@dataclass(frozen=True, slots=True)
class ClusterView:
    """GPUs per team after the cycle's binds and evictions, and the cluster's totals."""

    healthy_gpus: float
    allocated: Mapping[str, float]  # team -> GPUs held, all tiers
    demand: Mapping[str, float]  # team -> GPUs asked by running plus waiting gangs, all tiers
    fragmented_gpus: float

    @property
    def allocated_gpus(self) -> float:
        return float(sum(self.allocated.values()))


def jain_index(
    allocated: Mapping[str, float], demand: Mapping[str, float], healthy: float, teams: Mapping[str, Team]
) -> float | None:
    """Jain's index of x_i = allocated_i / entitled_i over teams with demand and entitlement.

    (sum x)^2 / (n sum x^2); None when no team qualifies or every x is 0 (as the simulator).
    """
    entitled = entitled_shares(healthy, demand, teams)
    pairs = [(allocated.get(n, 0.0), e) for n, e in entitled.items() if e > 0]
    xs = [a / e for a, e in pairs]
    try:
        sum_x2 = sum(x * x for x in xs)
        if not xs or (sum_x2 <= 0 and not any(xs)):
            return None
        jain = sum(xs) ** 2 / (len(xs) * sum_x2)
    except (OverflowError, ZeroDivisionError):
        jain = math.nan
    if math.isfinite(jain):
        return jain
    # A tiny entitlement makes some x (or its square) overflow, or tiny xs square to 0; the
    # index does not depend on the xs' scale, so compute it exactly instead (rarely taken).
    return _exact_jain(pairs)


def _exact_jain(pairs: list[tuple[float, float]]) -> float | None:
    if not all(math.isfinite(a) and math.isfinite(e) for a, e in pairs):
        return None
    xs = [Fraction(a) / Fraction(e) for a, e in pairs]
    sum_x2 = sum(x * x for x in xs)
    if sum_x2 <= 0:
        return None
    return float(sum(xs) ** 2 / (len(xs) * sum_x2))


def fragmented_gpus(free_by_node: Iterable[float], waiting_pod_gpus: Iterable[float]) -> float:
    """Free GPUs on nodes whose free amount is above 0 but below the smallest waiting pod."""
    smallest = min(waiting_pod_gpus, default=None)
    if smallest is None:
        return 0.0
    return float(sum(f for f in free_by_node if 0 < f < smallest))


def cluster_view(snapshot: Snapshot, decisions: Decisions) -> ClusterView:
    """The cluster as it will be once the cycle's binds and evictions are carried out."""
    evicted = {e.gang for e in decisions.evictions}
    bound_now = {b.pod: b.node for b in decisions.binds}
    used: dict[str, float] = {}
    allocated: dict[str, float] = {}
    demand: dict[str, float] = {}
    waiting: list[float] = []
    for gang in snapshot.gangs:
        for pod in gang.pods:
            demand[gang.team] = demand.get(gang.team, 0.0) + pod.gpu_amount
            node = None if gang.id in evicted else (pod.node or bound_now.get(pod.name))
            if node is None:
                waiting.append(float(pod.gpus) if pod.gpus else _SHARED_POD)
                continue
            used[node] = used.get(node, 0.0) + pod.gpu_amount
            allocated[gang.team] = allocated.get(gang.team, 0.0) + pod.gpu_amount
    free = (n.healthy_gpus - used.get(n.name, 0.0) for n in snapshot.nodes)
    return ClusterView(
        healthy_gpus=float(sum(n.healthy_gpus for n in snapshot.nodes)),
        allocated=allocated,
        demand=demand,
        fragmented_gpus=fragmented_gpus(free, waiting),
    )
