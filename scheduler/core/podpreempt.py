"""Victims for a gang whose pods depend on the other pods, node by node (as kube-scheduler's
DefaultPreemption does for one pod).

Room alone does not decide here: a node is worth clearing only if the pod could then run
there, and a victim that holds the conflicting host port, or matches the pod's required
anti-affinity (or whose anti-affinity refuses the pod) in the node's domain, frees the node
as surely as one that frees GPUs. For each pod of the gang, the nodes it could use with
every candidate gone are ranked by what clearing them costs; on each of the first few,
candidates near it (on the node, or in its domain of the keys the pod's terms name) are
taken cheapest first until the pod fits and its masks allow the node, then those not needed
are given back, dearest first. The cheapest node's victims are kept for the next pod. All of
it is tried on the live cluster and index and rolled back; the cycle applies the plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from scheduler.core.placement import CLUSTER_LEVEL, GangRequest, allowed_nodes, capacity_at
from scheduler.core.podfilters import terms_of
from scheduler.core.preemption import _TIER_PENALTY, Accept, Candidates, Plan, Victim

if TYPE_CHECKING:
    from scheduler.core.cluster import Shape
    from scheduler.core.cycle import Cycle
    from scheduler.core.podplace import DynamicPlacer

NODES_TRIED = 8
VICTIMS_NEAR = 64


def plan_for(
    cyc: Cycle, req: GangRequest, dyn: DynamicPlacer, cand: Candidates, accept: Accept
) -> Plan | None:
    state, idx = cyc.state, dyn.index
    if cand.pod_node.size == 0:
        return None
    weight = cand.cost + cand.tier * _TIER_PENALTY
    ok_gang = np.zeros(weight.size, dtype=bool)
    ok_gang[cand.pod_gang] = True
    if cand.acceptable is not None:
        ok_gang &= cand.acceptable
    mark, imark = state.mark(), idx.mark()
    chosen: list[Victim] = []
    taken: dict[str, float] = {}
    order = sorted(range(len(req.shapes)), key=lambda j: (-req.shapes[j].gpus, -req.shapes[j].milli))
    try:
        for j in order:
            shape, k = req.shapes[j], dyn.pods[j]
            best = _best_node(cyc, req, dyn, cand, accept, weight, ok_gang, shape, k, chosen, taken)
            if best is None:
                return None
            node, victims = best
            for v in victims:
                _take(cyc, v, chosen, taken)
                ok_gang[v.ref] = False
            state.allocate(node, shape)
            idx.add(node, dyn.gang.pods[k], terms_of(dyn.gang, k))
    finally:
        state.rollback(mark)
        idx.rollback(imark)
    if not chosen:
        return None
    return Plan(tuple(chosen), sum(v.lost_gpu_seconds for v in chosen), CLUSTER_LEVEL)


def _take(cyc: Cycle, v: Victim, chosen: list[Victim], taken: dict[str, float]) -> None:
    for h in v.held:
        cyc.state.release(h)
    assert cyc.pods is not None
    cyc.pods.remove_gang(v.ref)
    chosen.append(v)
    if v.tier == 1:  # training: counted against the team's slack by `accept`
        taken[v.team] = taken.get(v.team, 0.0) + v.gpus


def _fits(cyc: Cycle, req: GangRequest, dyn: DynamicPlacer, shape: Shape, k: int, i: int) -> bool:
    nodes = np.array([i])
    if int(capacity_at(cyc.state, shape, req, nodes)[0]) < 1:
        return False
    m = dyn.mask(k)
    return m is None or bool(m[i])


def _near(cyc: Cycle, dyn: DynamicPlacer, cand: Candidates, k: int, i: int) -> np.ndarray:
    """Candidate pods on node `i` or, for the keys the pod's anti-affinity (or a placed
    pod's against it) names, in node `i`'s domain of that key."""
    idx = dyn.index
    near = np.zeros(idx.n, dtype=bool)
    near[i] = True
    terms = terms_of(dyn.gang, k)
    keys = {t.topology_key for t in terms.anti_affinity} if terms is not None else set()
    pod = dyn.gang.pods[k]
    labels = dict(pod.labels)
    keys |= {t.topology_key for t in idx.anti if t.matches(pod.namespace, labels)}
    for key in keys:
        dom, _ = idx.domains(key)
        if dom[i] >= 0:
            near |= dom == dom[i]
    return near[cand.pod_node]


def _best_node(
    cyc: Cycle,
    req: GangRequest,
    dyn: DynamicPlacer,
    cand: Candidates,
    accept: Accept,
    weight: np.ndarray,
    ok_gang: np.ndarray,
    shape: Shape,
    k: int,
    chosen: list[Victim],
    taken: dict[str, float],
) -> tuple[int, list[Victim]] | None:
    state, idx = cyc.state, dyn.index
    live = ok_gang[cand.pod_gang]
    # The nodes the pod could use were every candidate gone (from the index: its masks).
    trial = idx.mark()
    for g in np.unique(cand.pod_gang[live]):
        idx.remove_gang(int(g))
    could = dyn.mask(k)
    idx.rollback(trial)
    ok = allowed_nodes(state, req.model_ok, req.pinned)
    if could is not None:
        ok = ok & could
    room = state.total_free + np.bincount(
        cand.pod_node[live], weights=cand.pod_milli[live], minlength=state.node_count
    )
    ok = ok & (room >= shape.gpus * 1000 + shape.milli)  # a new array: `ok` may be the state's own
    nodes = np.flatnonzero(ok)
    if nodes.size == 0:
        return None
    cost = np.bincount(cand.pod_node[live], weights=weight[cand.pod_gang[live]], minlength=state.node_count)
    nodes = nodes[np.argsort(cost[nodes], kind="stable")][:NODES_TRIED]
    best: tuple[float, int, list[Victim]] | None = None
    for i in nodes.tolist():
        if _fits(cyc, req, dyn, shape, k, i):
            return i, []  # no victim needed here after those already chosen
        near = live & _near(cyc, dyn, cand, k, i)
        gangs = np.unique(cand.pod_gang[near])
        gangs = gangs[np.argsort(weight[gangs], kind="stable")][:VICTIMS_NEAR]
        mark, imark = state.mark(), idx.mark()
        mine: list[Victim] = []
        mine_taken = dict(taken)
        fitted = False
        for g in gangs.tolist():
            v = cand.victim(g)
            if not accept(mine_taken, v):
                continue
            _take(cyc, v, mine, mine_taken)
            if _fits(cyc, req, dyn, shape, k, i):
                fitted = True
                break
        state.rollback(mark)
        idx.rollback(imark)
        if not fitted:
            continue
        mine = _reprieve(cyc, req, dyn, shape, k, i, mine, taken)
        price = float(sum(weight[v.ref] for v in mine))
        if best is None or price < best[0]:
            best = (price, i, mine)
    return None if best is None else (best[1], best[2])


def _reprieve(
    cyc: Cycle,
    req: GangRequest,
    dyn: DynamicPlacer,
    shape: Shape,
    k: int,
    i: int,
    mine: list[Victim],
    taken: dict[str, float],
) -> list[Victim]:
    """Give back the victims the pod does not need on node `i`, dearest first."""
    state, idx = cyc.state, dyn.index
    for v in sorted(mine, key=lambda v: -v.lost_gpu_seconds):
        if len(mine) == 1:
            break
        rest = [x for x in mine if x is not v]
        mark, imark = state.mark(), idx.mark()
        scratch: list[Victim] = []
        for x in rest:
            _take(cyc, x, scratch, dict(taken))
        still = _fits(cyc, req, dyn, shape, k, i)
        state.rollback(mark)
        idx.rollback(imark)
        if still:
            mine = rest
    return mine
