"""Choosing victims: whole gangs, in the domain the pending gang needs, at the least lost GPU-time.

For each candidate domain (narrowest level first, as placement does) victims are added
cheapest-first (lower tier first, then least lost GPU-time) until the gang fits, then the
ones that turn out not to be needed are given back, dearest first. The cheapest
domain's plan wins. Everything is tried on the live state and rolled back; the engine
applies the plan it is handed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.core.cluster import ClusterState, Held
from scheduler.core.model import Tier
from scheduler.core.placement import CLUSTER_LEVEL, GangRequest, capacity_of, place_gang
from scheduler.core.scoring import ShapeCache

MAX_VICTIMS_TRIED = 256


@dataclass(frozen=True, slots=True)
class Victim:
    """A running gang that could be evicted, and what evicting it would cost."""

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
    cost: float
    level: int


@dataclass(frozen=True, slots=True)
class Candidates:
    """Running gangs a given pending gang may evict, as arrays over their pods.

    `rank[g]` orders running gang g among victims (lower goes first); `victim(g)` builds
    the full record only for gangs actually considered, so a cluster with 100,000
    running pods does not pay for objects it never looks at.
    """

    rank: np.ndarray
    pod_node: np.ndarray
    pod_gang: np.ndarray
    pod_milli: np.ndarray
    victim: Callable[[int], Victim]


Accept = Callable[[Sequence[Victim], Victim], bool]


def plan_preemption(
    state: ClusterState,
    cache: ShapeCache,
    req: GangRequest,
    cand: Candidates,
    accept: Accept,
    domains_per_level: int,
) -> Plan | None:
    """The cheapest set of victims whose eviction lets `req` be placed, or None."""
    if cand.pod_node.size == 0:
        return None
    levels = list(range(len(state.levels) - 1, req.widest_level - 1, -1))
    if req.widest_level == CLUSTER_LEVEL:
        levels.append(CLUSTER_LEVEL)
    # Optimistic room per node if every candidate went: used to skip hopeless domains.
    freeable = state.total_free + np.bincount(
        cand.pod_node, weights=cand.pod_milli, minlength=state.node_count
    )
    need = sum(s.gpus * 1000 + s.milli for s in req.shapes)
    for level in levels:
        plans = []
        for within in _candidate_domains(state, level, freeable, need, req, domains_per_level):
            plan = _plan_in(state, cache, req, cand, accept, within, level)
            if plan is not None:
                plans.append(plan)
        if plans:
            return min(plans, key=lambda p: (p.cost, len(p.victims)))
    return None


def _candidate_domains(
    state: ClusterState,
    level: int,
    freeable: np.ndarray,
    need: int,
    req: GangRequest,
    limit: int,
) -> list[np.ndarray | None]:
    ok = state.schedulable & ~state.overcommitted
    if req.model_ok is not None:
        ok = ok & req.model_ok
    if req.pinned is not None:
        ok = ok & req.pinned
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


def _fits(
    state: ClusterState, cache: ShapeCache, req: GangRequest, within: np.ndarray | None
) -> bool:
    for shape, count in req.counts.items():
        cap = capacity_of(state, cache, shape, req)
        if within is not None:
            cap = cap[within]
        if int(cap.sum()) < count:
            return False
    return True


def _plan_in(
    state: ClusterState,
    cache: ShapeCache,
    req: GangRequest,
    cand: Candidates,
    accept: Accept,
    within: np.ndarray | None,
    level: int,
) -> Plan | None:
    here = cand.pod_gang if within is None else cand.pod_gang[within[cand.pod_node]]
    gangs = np.unique(here)
    gangs = gangs[np.argsort(cand.rank[gangs], kind="stable")]
    mark = state.mark()
    chosen: list[Victim] = []
    fitted = False
    for g in gangs[:MAX_VICTIMS_TRIED]:
        v = cand.victim(int(g))
        if not accept(chosen, v):
            continue
        for h in v.held:
            state.release(h)
        chosen.append(v)
        if _fits(state, cache, req, within):
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
        rest = [c for c in chosen if c is not v]
        if _fits(state, cache, req, within):
            chosen = rest
        else:
            state.rollback(inner)
    narrowed = GangRequest(
        req.shapes, req.model_ok, req.widest_level, _and(req.pinned, within), req.whole_node_gpus
    )
    placed = place_gang(state, cache, narrowed)
    state.rollback(mark)
    if placed is None:
        return None
    return Plan(tuple(chosen), sum(v.lost_gpu_seconds for v in chosen), level)


def _and(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b
