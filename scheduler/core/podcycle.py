"""How a cycle meets the pod-dependent filters: whether it builds the PodIndex at all, which
gangs it places pod by pod, and keeping the index current as it binds and evicts.

A cycle in which no gang states host ports, pod (anti-)affinity or spread builds nothing
and does nothing here beyond one emptiness check (the usual case: the fast path stays as
it was). Otherwise the index is built once from the running set, and every pod the cycle
binds or holds room for goes into it, so a later pod's masks see it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from scheduler.core import reasons
from scheduler.core.filters import allowed, static_filters
from scheduler.core.model import Gang, Pod
from scheduler.core.placement import GangRequest, Placement, place_gang
from scheduler.core.podfilters import PodTermFilter
from scheduler.core.podindex import PodIndex
from scheduler.core.podplace import DynamicPlacer, is_dynamic
from scheduler.core.podpreempt import plan_for
from scheduler.core.podterms import AffinityTerm

if TYPE_CHECKING:
    from scheduler.core.cycle import Cycle
    from scheduler.core.preemption import Candidates, Plan
    from scheduler.core.waiting import SignatureGroup, Waiting


def states_terms(gang: Gang) -> bool:
    """Whether a pod of the gang states anything the pod-dependent filters read (a running
    pod's host ports and required anti-affinity included)."""
    return bool(gang.terms) and any(t is not None and (t.filters or t.ports or t.scores) for t in gang.terms)


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
    """The policy's filters that read the placed pods."""
    return tuple(f for f in cyc.policy.filters if isinstance(f, PodTermFilter))


def dynamic(cyc: Cycle, gang: Gang) -> bool:
    """Whether the gang is placed pod by pod this cycle (see podplace.is_dynamic)."""
    return cyc.pods is not None and bool(pod_filters(cyc)) and is_dynamic(gang, cyc.anti_terms)


def static_mask(cyc: Cycle, gang: Gang) -> np.ndarray | None:
    """The nodes the static filters (shareable masks) let the gang use."""
    return allowed(cyc.state, gang, static_filters(cyc.policy.filters), cyc.shortcuts.mask)


def placer(cyc: Cycle, gang: Gang, need: tuple[Pod, ...]) -> DynamicPlacer:
    """How the gang's pods `need` are placed, against the cycle's index."""
    assert cyc.pods is not None
    at = {p.name: k for k, p in enumerate(gang.pods)}
    return DynamicPlacer(
        cyc.pods, gang, tuple(at[p.name] for p in need), pod_filters(cyc), cyc.config.weights
    )


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
    assert req.dynamic is not None
    code, text = reasons.diagnose(cyc.state, cyc.cache, req.dynamic.for_diagnosis(req))
    if code == "NoRoom" and len(req.shapes) > 1 and _fits_without_terms(cyc, req):
        code = "Unschedulable"
        text = (
            f"the gang's {len(req.shapes)} pods fit by room, but not all at once under their host "
            "ports, pod (anti-)affinity and topology spread, which they hold against each other too"
        )
    if code != "Unschedulable" and req.ruled_out is not None:
        words = [f"{n} {w}" for f, n, w in req.ruled_out() if f not in ("gpu-model", "unschedulable")]
        if words:
            text = f"{text}; of {cyc.state.node_count} nodes, {', '.join(sorted(words))}"
    return code, text


def _fits_without_terms(cyc: Cycle, req: GangRequest) -> bool:
    """Whether the gang would fit were its pods' terms not checked (tried, then undone)."""
    state = cyc.state
    mark = state.mark()
    fits = place_gang(state, cyc.cache, replace(req, dynamic=None)) is not None
    state.rollback(mark)
    return fits
