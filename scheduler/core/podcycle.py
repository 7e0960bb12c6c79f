"""How a cycle meets the pod-dependent filters: whether it builds the PodIndex at all, which
gangs it places pod by pod, and keeping the index current as it binds and evicts.

A cycle in which no gang states host ports, pod (anti-)affinity or spread builds nothing
and does nothing here beyond one emptiness check (the usual case: the fast path stays as
it was). Otherwise the index is built once from the running set, and every pod the cycle
binds or holds room for goes into it, so a later pod's masks see it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from scheduler.core.filters import static_filters
from scheduler.core.model import Gang, Pod
from scheduler.core.placement import GangRequest, Placement
from scheduler.core.podfilters import PodTermFilter
from scheduler.core.podindex import PodIndex
from scheduler.core.podplace import DynamicPlacer, is_dynamic
from scheduler.core.podterms import AffinityTerm

if TYPE_CHECKING:
    from scheduler.core.cycle import Cycle
    from scheduler.core.preemption import Candidates, Plan
    from scheduler.core.waiting import SignatureGroup, Waiting


def states_terms(gang: Gang) -> bool:
    """Whether a pod of the gang states anything the pod-dependent filters read (a running
    pod's host ports and required anti-affinity included)."""
    return bool(gang.terms) and any(t is not None and (t.filters or t.ports) for t in gang.terms)


def index_for(cyc: Cycle) -> tuple[PodIndex | None, tuple[AffinityTerm, ...]]:
    """The cycle's index of placed pods (None when no gang states such terms) and the
    required anti-affinity terms a waiting gang's labels are checked against: those of the
    running pods and of the waiting ones (which may be placed first)."""
    core = cyc.core
    if not core.term_gangs:
        return None, ()
    state = cyc.state
    idx = PodIndex.of_running(state.nodes, state.index, cyc.rt.gangs)
    anti = set(idx.anti)
    for gid in core.term_gangs:
        gang = core.gangs[gid]
        for pod, terms in zip(gang.pods, gang.terms, strict=True):
            if terms is not None and pod.node is None:
                anti.update(terms.anti_affinity)
    return idx, tuple(sorted(anti))


def pod_filters(cyc: Cycle) -> tuple[PodTermFilter, ...]:
    return tuple(f for f in cyc.policy.filters if isinstance(f, PodTermFilter))


def dynamic(cyc: Cycle, gang: Gang) -> bool:
    return cyc.pods is not None and bool(pod_filters(cyc)) and is_dynamic(gang, cyc.anti_terms)


def static_mask(cyc: Cycle, gang: Gang) -> np.ndarray | None:
    from scheduler.core.filters import allowed

    return allowed(cyc.state, gang, static_filters(cyc.policy.filters))


def placer(cyc: Cycle, gang: Gang, need: tuple[Pod, ...]) -> DynamicPlacer:
    assert cyc.pods is not None
    at = {p.name: k for k, p in enumerate(gang.pods)}
    return DynamicPlacer(cyc.pods, gang, tuple(at[p.name] for p in need), pod_filters(cyc))


def placed(cyc: Cycle, req: GangRequest | None, pods: tuple[Pod, ...], where: Placement) -> None:
    """Pods of a gang placed by the shared path: into the index, so later masks see them
    (a dynamic gang's pods went in as they were placed)."""
    if cyc.pods is None or req is None or req.dynamic is not None:
        return
    for pod, held in zip(pods, where.held, strict=True):
        cyc.pods.add(held.node, pod, None)


def extra(cyc: Cycle, w: Waiting, pod: Pod) -> DynamicPlacer | None:
    """A dynamic gang's pod beyond minMember, placed on its own with its masks."""
    assert w.request is not None
    dyn = w.request.dynamic
    if not isinstance(dyn, DynamicPlacer):
        return None
    return dyn.only((next(k for k, p in enumerate(w.gang.pods) if p.name == pod.name),))


def preemption(cyc: Cycle, w: Waiting, cand: Candidates) -> Plan | None:
    """Victims for a dynamic gang, chosen node by node (podpreempt.py)."""
    from scheduler.core.podpreempt import plan_for

    assert w.request is not None and isinstance(w.request.dynamic, DynamicPlacer)
    return plan_for(cyc, w.request, w.request.dynamic, cand, cyc.policy.victims.accept(cyc, w))


def split_groups(
    cyc: Cycle, groups: list[SignatureGroup], singles: list[tuple[Gang, int]]
) -> tuple[list[SignatureGroup], list[tuple[Gang, int]]]:
    """Groups some gang of which a required anti-affinity term matches are looked at gang by
    gang this cycle (so each such gang is placed pod by pod); the others stay groups."""
    kept: list[SignatureGroup] = []
    alone = list(singles)
    for c in groups:
        if any(is_dynamic(g, cyc.anti_terms) for g in c.gangs):
            alone.extend(zip(c.gangs, c.seqs, strict=True))
        else:
            kept.append(c)
    return kept, alone


def diagnose(cyc: Cycle, req: GangRequest) -> tuple[str, str]:
    """Why a dynamic gang waits: the usual words on the nodes its pods' masks allow now, and
    when room is what is short, the nodes the filters rule out besides, counted as
    kube-scheduler counts them."""
    from scheduler.core import reasons

    assert req.dynamic is not None
    code, text = reasons.diagnose(cyc.state, cyc.cache, req.dynamic.for_diagnosis(req))
    if code != "Unschedulable" and req.ruled_out is not None:
        words = [f"{n} {w}" for f, n, w in req.ruled_out() if f not in ("gpu-model", "unschedulable")]
        if words:
            text = f"{text}; of {cyc.state.node_count} nodes, {', '.join(sorted(words))}"
    return code, text
