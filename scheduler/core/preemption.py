"""Choosing victims: whole gangs, in the domain the pending gang needs, at the least lost GPU-time.

For each candidate domain (narrowest level first, as placement does) nodes are ranked
by what it costs to clear them per pod they could then hold (scavenger victims count as
far cheaper than training ones), and victims are taken node by node, cheapest first,
until the gang fits; then victims that turn out not to be needed are given back,
dearest first. The cheapest domain's plan wins. Everything is tried on the live state
and rolled back; the cycle applies the plan it is handed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from scheduler.core.cluster import ClusterState, Held
from scheduler.core.model import Tier
from scheduler.core.placement import CLUSTER_LEVEL, GangRequest, allowed_nodes, capacity_at, place_gang
from scheduler.core.shapecache import ShapeCache

MAX_VICTIMS_TRIED = 256


@dataclass(frozen=True, slots=True)
class Victim:
    """A running gang that could be evicted, and what evicting it would cost."""

    ref: int  # the cycle's index of the running gang
    gang: str
    team: str
    tier: Tier
    gpus: float
    lost_gpu_seconds: float
    held: tuple[Held, ...]
    pods: tuple[str, ...]
    nodes: np.ndarray  # node indices its pods are on


@dataclass(frozen=True, slots=True)
class Plan:
    victims: tuple[Victim, ...]
    cost: float  # GPU-seconds of work lost
    level: int

    @property
    def rank(self) -> float:
        """Lost work, with any training victim outweighing every scavenger one."""
        return sum(v.lost_gpu_seconds + v.tier * _TIER_PENALTY for v in self.victims)


@dataclass(frozen=True, slots=True)
class Candidates:
    """Running gangs a given pending gang may evict, as arrays over their pods.

    `tier` and `cost` are indexed by running gang; `victim(g)` builds the full record
    only for gangs actually considered, so a cluster with 100,000 running pods does not
    pay for objects it never looks at.
    """

    tier: np.ndarray
    cost: np.ndarray
    pod_node: np.ndarray
    pod_gang: np.ndarray
    pod_milli: np.ndarray
    victim: Callable[[int], Victim]
    # Per running gang: whether `accept` takes it when nothing is chosen yet (None: unknown).
    # Choosing more only makes accept stricter, so no plan ever holds a gang marked False.
    acceptable: np.ndarray | None = None
    # Per running gang its team, and per team the GPUs `accept` lets a plan take from its
    # training gangs in all (None: no such limit). Scavenger gangs are never limited.
    team: np.ndarray | None = None
    slack: np.ndarray | None = None


# accept(training GPUs already chosen per team, victim): may this victim be taken too?
Accept = Callable[[Mapping[str, float], Victim], bool]


def plan_preemption(
    state: ClusterState,
    cache: ShapeCache,
    req: GangRequest,
    cand: Candidates,
    accept: Accept,
    domains_per_level: int,
    bounds: bool = True,
) -> Plan | None:
    """The cheapest set of victims whose eviction lets `req` be placed, or None.
    `bounds=False` (the reference mode) walks every candidate domain in full, without
    the bounds that skip walks which cannot succeed or cannot beat the best plan."""
    if cand.pod_node.size == 0:
        return None
    # Room per node if every victim that may be taken went (each team no more than its
    # slack): worked out once, for the bound over the whole cluster and for ranking domains.
    pods = _acceptable_pods(cand, None)
    slots, freed = _freeable(state.node_count, cand, pods)
    if (
        bounds
        and _bounded(cand, req)
        and not (
            _room_fits(state, req, slots, freed, req.pinned)
            and _slack_clears_nodes(state, req, cand, pods, slots)
        )
    ):
        return None  # not even with every victim that may be taken gone, anywhere
    levels = list(range(len(state.levels) - 1, req.widest_level - 1, -1))
    if req.widest_level == CLUSTER_LEVEL:
        levels.append(CLUSTER_LEVEL)
    # Hopeless domains are skipped, and those with the most room are tried first.
    freeable = state.total_free + freed
    need = sum(s.gpus * 1000 + s.milli for s in req.shapes)
    weight = cand.cost + cand.tier * _TIER_PENALTY  # what each victim adds to a plan's rank
    for level in levels:
        best: Plan | None = None
        for within in _candidate_domains(state, level, freeable, need, req, domains_per_level):
            if (
                bounds
                and best is not None
                and within is not None
                and not _may_beat(best, weight, cand, within)
            ):
                continue
            plan = _plan_in(state, cache, req, cand, accept, within, level, (slots, freed), bounds)
            if plan is not None and (best is None or _key(plan) < _key(best)):
                best = plan
        if best is not None:
            return best
    return None


def _key(plan: Plan) -> tuple[float, int]:
    """Plans compare by rank, then by fewer victims; the first of equals is kept."""
    return plan.rank, len(plan.victims)


def _may_beat(best: Plan, weight: np.ndarray, cand: Candidates, within: np.ndarray) -> bool:
    """Whether a plan in the domain could come before `best`. Every plan there holds at
    least one victim with a pod in the domain that `accept` may take, so its rank is at
    least the cheapest such victim's; it would also need fewer victims to win a tie."""
    gangs = cand.pod_gang[within[cand.pod_node]]
    if cand.acceptable is not None:
        gangs = gangs[cand.acceptable[gangs]]
    if gangs.size == 0:
        return False  # no victim to take: no plan there
    least = float(weight[gangs].min())
    rank, count = _key(best)
    return least < rank or (least == rank and count > 1)


def _by_node_and_team(
    n: int, teams: int, node: np.ndarray, team: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """`weights` summed per (node, team), as an n x teams array."""
    return np.bincount(node * teams + team, weights=weights, minlength=n * teams).reshape(n, teams)


def _candidate_domains(
    state: ClusterState,
    level: int,
    freeable: np.ndarray,
    need: int,
    req: GangRequest,
    limit: int,
) -> list[np.ndarray | None]:
    ok = allowed_nodes(state, req.model_ok, req.pinned)
    room_node = np.where(ok, freeable, 0)
    if level == CLUSTER_LEVEL:
        return [None] if room_node.sum() >= need else []
    dom = state.domains[level]
    n_dom = len(state.domain_names[level])
    room = np.bincount(dom, weights=room_node, minlength=n_dom)
    biggest = max(s.gpus for s in req.shapes) * 1000
    if biggest:
        largest = np.zeros(n_dom)
        np.maximum.at(largest, dom, room_node)
        room = np.where(largest >= biggest, room, 0)
    candidates = np.nonzero(room >= need)[0]
    if candidates.size == 0:
        return []
    # Domains that already have most of the room need the fewest evictions.
    free_now = np.bincount(dom, weights=np.where(ok, state.total_free, 0), minlength=n_dom)
    shortfall = need - free_now[candidates]
    pick = candidates[np.argsort(shortfall + candidates * 1e-9, kind="stable")[:limit]]
    return [dom == d for d in pick]


class _Room:
    """Pods of each shape the domain can hold, kept current as victims come and go."""

    def __init__(self, state: ClusterState, req: GangRequest, within: np.ndarray | None) -> None:
        self.state, self.req = state, req
        self.nodes = np.arange(state.node_count) if within is None else np.nonzero(within)[0]
        self.caps = {s: capacity_at(state, s, req, self.nodes) for s in req.counts}
        self.totals = {s: int(c.sum()) for s, c in self.caps.items()}
        self.pos_of = np.full(state.node_count, -1, dtype=np.int64)
        self.pos_of[self.nodes] = np.arange(self.nodes.size)

    def update(self, touched: np.ndarray) -> None:
        if touched.size > 1:
            touched = np.unique(touched)
        pos = self.pos_of[touched]
        inside = touched[pos >= 0]
        if inside.size == 0:
            return
        pos = pos[pos >= 0]
        for s, cap in self.caps.items():
            new = capacity_at(self.state, s, self.req, inside)
            self.totals[s] += int(new.sum() - cap[pos].sum())
            cap[pos] = new

    def fits(self) -> bool:
        return all(self.totals[s] >= c for s, c in self.req.counts.items())


def _plan_in(
    state: ClusterState,
    cache: ShapeCache,
    req: GangRequest,
    cand: Candidates,
    accept: Accept,
    within: np.ndarray | None,
    level: int,
    freeable: tuple[np.ndarray, np.ndarray],
    bounds: bool = True,
) -> Plan | None:
    """`freeable`: `_freeable` of every victim `accept` may take alone, per node."""
    bounded = not bounds  # without bounds: as if already checked
    if within is not None and bounds:
        # Check the bound on all the domain's gangs before ordering them (the same set as
        # the ordered list whenever the domain has no more than are tried). On the domain's
        # nodes only its own gangs' pods run, so what they could free there is what every
        # candidate could: the figures worked out once for the whole cluster.
        pods = within[cand.pod_node]
        if int(pods.sum()) <= MAX_VICTIMS_TRIED or np.unique(cand.pod_gang[pods]).size <= MAX_VICTIMS_TRIED:
            if _bounded(cand, req) and not _room_fits(state, req, *freeable, within):
                return None
            bounded = True
    gangs = _victim_order(state, req, cand, within)[:MAX_VICTIMS_TRIED]
    if not bounded and not _could_fit(state, req, cand, gangs, within):
        return None
    mark = state.mark()
    room = _Room(state, req, within)
    chosen: list[Victim] = []
    taken: dict[str, float] = {}  # training GPUs chosen per team, in the order chosen
    fitted = False
    for g in gangs:
        v = cand.victim(int(g))
        if not accept(taken, v):
            continue
        for h in v.held:
            state.release(h)
        room.update(v.nodes)
        chosen.append(v)
        if v.tier is Tier.TRAINING:
            taken[v.team] = taken.get(v.team, 0) + v.gpus
        if room.fits():
            fitted = True
            break
    if not fitted:
        state.rollback(mark)
        return None
    # Give back victims that were not needed after all, dearest first.
    for v in sorted(chosen, key=lambda v: -v.lost_gpu_seconds):
        if len(chosen) == 1:
            break
        inner = state.mark()
        for h in v.held:
            state.retake(h)
        room.update(v.nodes)
        if room.fits():
            chosen = [c for c in chosen if c is not v]
        else:
            state.rollback(inner)
            room.update(v.nodes)
    if len(req.shapes) > 1:
        # Room for each shape apart is not room for all of them at once: place to be sure.
        # One pod that has room on some node of the domain fits there; nothing to check.
        narrowed = GangRequest(
            req.shapes, req.model_ok, req.widest_level, _and(req.pinned, within), req.whole_node_gpus
        )
        if place_gang(state, cache, narrowed) is None:
            state.rollback(mark)
            return None
    state.rollback(mark)
    return Plan(tuple(chosen), sum(v.lost_gpu_seconds for v in chosen), level)


def _could_fit(
    state: ClusterState, req: GangRequest, cand: Candidates, gangs: np.ndarray, within: np.ndarray | None
) -> bool:
    """False when the request cannot fit even with every victim `accept` might take out of
    `gangs` gone at once: then trying them one by one cannot succeed either (room only
    grows as victims go), and the walk is skipped. GPUs alone bound the room here."""
    if not _bounded(cand, req):
        return True
    slots, freed = _freeable(state.node_count, cand, _acceptable_pods(cand, gangs))
    return _room_fits(state, req, slots, freed, within)


def _bounded(cand: Candidates, req: GangRequest) -> bool:
    """Whether GPUs bound the room: known acceptability, and every pod asks for GPUs."""
    return cand.acceptable is not None and all(s.gpus or s.milli for s in req.counts)


def _room_fits(
    state: ClusterState, req: GangRequest, slots: np.ndarray, freed: np.ndarray, within: np.ndarray | None
) -> bool:
    """Whether the request fits by GPUs alone once `slots` and `freed` milli-GPUs per node
    are free on top of what is free now."""
    whole = np.minimum(state.whole_free + slots, state.usable)
    total = state.total_free + freed
    ok = allowed_nodes(state, req.model_ok, req.pinned, within)
    for s, c in req.counts.items():
        cap = whole // s.gpus if s.gpus else total // s.milli
        if int(cap[ok].sum()) < c:
            return False
    return True


def _slack_clears_nodes(
    state: ClusterState, req: GangRequest, cand: Candidates, pods: np.ndarray, slots: np.ndarray
) -> bool:
    """False when the teams' slack cannot clear enough whole nodes for the request's pods.

    A pod that asks for every GPU of its node needs all of them freed, so each GPU pod
    running there must go, at the cost of its team's slack (its GPUs on that node, at
    least: a gang's GPUs elsewhere count too). Whatever nodes a plan clears, each team
    gives at least the sum of its smallest such costs over that many nodes; more than its
    slack, and no plan exists. `_room_fits` bounds each node on its own; this bounds them
    together, which is what rules out most plans for gangs of several whole-node pods."""
    # One pod of a shape: `_room_fits` already bounds its node. Most requests stop here.
    several = [(s, count) for s, count in req.counts.items() if count > 1 and s.gpus]
    if not several or cand.slack is None or cand.team is None:
        return True
    n, teams = state.node_count, cand.slack.size
    gang = cand.pod_gang[pods]
    limited = cand.tier[gang] != Tier.SCAVENGER  # scavenger victims cost no slack
    cost = _by_node_and_team(
        n, teams, cand.pod_node[pods][limited], cand.team[gang[limited]], cand.pod_milli[pods][limited]
    )
    whole = np.minimum(state.whole_free + slots, state.usable)
    ok = allowed_nodes(state, req.model_ok, req.pinned)
    limit = cand.slack * 1000 + 1.0  # a milli-GPU over, as in `_freeable`
    for s, count in several:
        hosts = ok & (whole >= s.gpus)
        cleared = hosts & (state.usable <= s.gpus)  # holds one such pod, and only when cleared
        # Nodes that hold a pod without being cleared cost no slack (at least), and may
        # hold several: only the pods beyond what they hold need cleared nodes.
        rest = count - int((whole[hosts & ~cleared] // s.gpus).sum())
        if rest <= 0:
            continue
        costs = cost[cleared]
        if costs.shape[0] < rest:
            return False
        cheapest = np.sort(costs, axis=0)[:rest].sum(axis=0)
        if np.any(cheapest > limit):
            return False
    return True


def _acceptable_pods(cand: Candidates, gangs: np.ndarray | None) -> np.ndarray:
    """Rows of the pods of `gangs` (None: all candidates) that `accept` may take alone
    (all of them when that is not known)."""
    if cand.acceptable is None:
        return np.arange(cand.pod_gang.size)
    chosen = np.zeros(cand.acceptable.size, dtype=bool)
    if gangs is None:
        chosen[:] = cand.acceptable
    else:
        chosen[gangs[cand.acceptable[gangs]]] = True
    return np.nonzero(chosen[cand.pod_gang])[0]


def _freeable(n: int, cand: Candidates, pods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per node: GPU slots and milli-GPUs that evicting `pods` could free at most. A team
    gives no more than its slack in all, so on each node no more than that from the team
    either: the bound that rules out most hopeless plans for one-node pods."""
    node, milli = cand.pod_node[pods], cand.pod_milli[pods]
    slots = -(-milli // 1000)
    if cand.slack is None or cand.team is None:
        return (
            np.bincount(node, weights=slots, minlength=n).astype(np.int64),
            np.bincount(node, weights=milli, minlength=n).astype(np.int64),
        )
    gang = cand.pod_gang[pods]
    limited = cand.tier[gang] != Tier.SCAVENGER
    free_slots = np.bincount(node[~limited], weights=slots[~limited], minlength=n).astype(np.float64)
    free_milli = np.bincount(node[~limited], weights=milli[~limited], minlength=n).astype(np.float64)
    teams, team = cand.slack.size, cand.team[gang[limited]]
    by_slots = _by_node_and_team(n, teams, node[limited], team, slots[limited])
    by_milli = _by_node_and_team(n, teams, node[limited], team, milli[limited])
    cap_milli = np.floor(cand.slack * 1000 + 1.0)  # a milli-GPU over: never tighter than accept
    free_milli += np.minimum(by_milli, cap_milli).sum(axis=1)
    if np.all(milli[limited] % 1000 == 0):
        # Whole-GPU victims only: a slot freed is a GPU of the team's slack.
        free_slots += np.minimum(by_slots, cap_milli // 1000).sum(axis=1)
    else:  # a shared GPU's slot frees whole with less than a GPU taken: no limit on slots
        free_slots += by_slots.sum(axis=1)
    return free_slots.astype(np.int64), free_milli.astype(np.int64)


_TIER_PENALTY = 1e15  # any number of scavenger victims before one training victim


def _victim_order(
    state: ClusterState, req: GangRequest, cand: Candidates, within: np.ndarray | None
) -> np.ndarray:
    """Candidate gangs in the domain, cheapest node first, then cheapest victim on it."""
    pods = np.arange(cand.pod_node.size) if within is None else np.nonzero(within[cand.pod_node])[0]
    if pods.size == 0:
        return pods
    node, gang = cand.pod_node[pods], cand.pod_gang[pods]
    weight = cand.cost[gang] + cand.tier[gang] * _TIER_PENALTY
    n = state.node_count
    clear_cost = np.bincount(node, weights=weight, minlength=n)
    room = state.total_free + np.bincount(node, weights=cand.pod_milli[pods], minlength=n)
    unit = max((s.gpus * 1000 + s.milli for s in req.shapes), default=0) or 1
    holds = room // unit
    node_rank = np.where(holds > 0, clear_cost / np.maximum(holds, 1), np.inf)
    gangs, first = np.unique(gang, return_inverse=True)
    home = np.full(gangs.size, np.inf)
    np.minimum.at(home, first, node_rank[node])
    order = np.lexsort((gangs, cand.cost[gangs], cand.tier[gangs], home))
    return gangs[order]


def _and(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b
