"""Node filters: which nodes a gang's pods may use at all (kube-scheduler's Filter point).

Each filter's mask is worked out once per signature (what of the gang it reads) and node
list, and shared by every look-alike gang; a gang's pods may use a node only where every
pod's constraints allow it. `explain` counts the nodes a filter rules out in the words
kube-scheduler's FailedScheduling messages use, so a person reads the same reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from functools import partial

import numpy as np

from scheduler.core.cluster import ClusterState
from scheduler.core.constraints import PodConstraints
from scheduler.core.framework import NodeFilter
from scheduler.core.labels import columns
from scheduler.core.model import Gang
from scheduler.core.podfilters import POD_FILTERS, PodTermFilter
from scheduler.core.volumes import NodeVolumeLimits, VolumeBinding, VolumeZone


class GpuModel(NodeFilter):
    """Only nodes whose GPU model the gang allows (`gpu_models`; empty: any model)."""

    name = "gpu-model"
    static = True

    def signature(self, gang: Gang) -> Hashable:
        return gang.gpu_models

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        return state.model_mask(gang.gpu_models)

    def explain(self, state: ClusterState, gang: Gang, ruled_out: np.ndarray) -> list[tuple[int, str]]:
        return [(int(ruled_out.sum()), "node(s) didn't have an allowed GPU model")]


_NONE = (PodConstraints(),)


def _per_pod(gang: Gang) -> tuple[PodConstraints, ...]:
    """The gang's pods' constraints; a gang that states none is a pod that tolerates no
    taint and selects any node."""
    return gang.constraints or _NONE


class TeamPool(NodeFilter):
    """Nodes of a pool a GPUTeam has dedicated to itself (spec.nodePool.dedicated) are for its
    pods alone: another team's pod is kept off, whatever its own spec tolerates or selects.
    (A team's own pool, selector and tolerations are merged into its pods' constraints by
    pools.with_team_pool; this filter holds the other side.)"""

    name = "team-pool"
    constraint_only = True
    static = True

    def signature(self, gang: Gang) -> Hashable:
        return tuple(c.excluded for c in _per_pod(gang))

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        pools = {pool for c in _per_pod(gang) for pool in c.excluded}
        if not pools:
            return None
        cols = columns(state.nodes)
        inside = np.zeros(state.node_count, dtype=bool)
        for pool in pools:
            inside |= cols.equal(pool)
        return ~inside

    def explain(self, state: ClusterState, gang: Gang, ruled_out: np.ndarray) -> list[tuple[int, str]]:
        return [(int(ruled_out.sum()), "node(s) are dedicated to another team's node pool")]


class NodeUnschedulable(NodeFilter):
    """A cordoned node (spec.unschedulable) takes only pods that tolerate the cordon's
    node.kubernetes.io/unschedulable:NoSchedule taint (kube-scheduler's NodeUnschedulable):
    a drain must not be refilled, but the pods meant to run there still may."""

    name = "node-unschedulable"
    plugin = "NodeUnschedulable"
    static = True
    constraint_only = True  # a gang without constraints tolerates no cordon: all alike

    def signature(self, gang: Gang) -> Hashable:
        return all(c.tolerates_cordon for c in _per_pod(gang))

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        if not state.cordoned.any() or all(c.tolerates_cordon for c in _per_pod(gang)):
            return None
        return ~state.cordoned

    def explain(self, state: ClusterState, gang: Gang, ruled_out: np.ndarray) -> list[tuple[int, str]]:
        return [(int(ruled_out.sum()), "node(s) were unschedulable")]


class TaintToleration(NodeFilter):
    """A node's NoSchedule and NoExecute taints keep off every pod that does not tolerate
    them: how a platform reserves a node pool (PreferNoSchedule only scores, not kept here)."""

    name = "taint-toleration"
    constraint_only = True
    static = True
    plugin = "TaintToleration"

    def signature(self, gang: Gang) -> Hashable:
        return tuple(c.tolerations for c in _per_pod(gang))

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        groups = columns(state.nodes).taint_groups()  # few distinct taint sets: each judged once
        if not groups:
            return None
        ok = np.ones(state.node_count, dtype=bool)
        pods = _per_pod(gang)
        for taints, idx in groups.items():
            if not all(c.untolerated(taints) is None for c in pods):
                ok[idx] = False
        return ok

    def explain(self, state: ClusterState, gang: Gang, ruled_out: np.ndarray) -> list[tuple[int, str]]:
        by: Counter[str] = Counter()
        for i in np.flatnonzero(ruled_out):
            taints = state.nodes[i].taints
            first = next((t for c in _per_pod(gang) if (t := c.untolerated(taints)) is not None), None)
            by[str(first)] += 1
        return [(n, f"node(s) had untolerated taint {t}") for t, n in sorted(by.items())]


class NodeAffinity(NodeFilter):
    """nodeSelector and required node affinity (requiredDuringSchedulingIgnoredDuringExecution),
    both of which must hold; preferred terms only score, and are not kept here."""

    name = "node-affinity"
    constraint_only = True
    static = True
    plugin = "NodeAffinity"

    def signature(self, gang: Gang) -> Hashable:
        return tuple((c.node_selector, c.required) for c in _per_pod(gang) if c.limits_nodes)

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        limits = [c for c in _per_pod(gang) if c.limits_nodes]
        if not limits:
            return None
        cols = columns(state.nodes)
        out = cols.selects(limits[0])
        for c in limits[1:]:
            out &= cols.selects(c)
        return out

    def explain(self, state: ClusterState, gang: Gang, ruled_out: np.ndarray) -> list[tuple[int, str]]:
        return [(int(ruled_out.sum()), "node(s) didn't match Pod's node affinity/selector")]

    def prefilter(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        """kube-scheduler narrows the nodes first when every required term names nodes
        (matchFields metadata.name In): the others are ruled out before any filter runs,
        and counted as such. None: no such narrowing."""
        out: np.ndarray | None = None
        for c in _per_pod(gang):
            if c.required is None:
                continue
            names: set[str] | None = set()
            for term in c.required:
                pinned = [
                    set(r.values) for r in term.fields if r.key == "metadata.name" and r.operator == "In"
                ]
                if not pinned:
                    names = None  # a term that names no node: every node may match it
                    break
                assert names is not None
                names |= set.intersection(*pinned)
            if names is None:
                continue
            mask = np.array([n.name in names for n in state.nodes], dtype=bool).reshape(len(state.nodes))
            out = mask if out is None else out & mask
        return out


MaskMemo = Callable[[tuple[str, Hashable], Callable[[], "np.ndarray | None"]], "np.ndarray | None"]


def allowed(
    state: ClusterState, gang: Gang, filters: Sequence[NodeFilter], memo: MaskMemo | None = None
) -> np.ndarray | None:
    """Nodes every filter lets the gang use (None: all). `memo` keeps a static filter's mask
    per signature (Shortcuts.mask), so gangs of any shape alike in it share one."""
    out: np.ndarray | None = None
    for f in filters:
        if memo is not None and f.static:
            mask = memo((f.name, f.signature(gang)), partial(f.mask, state, gang))
        else:
            mask = f.mask(state, gang)
        if mask is not None:
            out = mask if out is None else out & mask
    return out


def ruled_out(state: ClusterState, gang: Gang, filters: Sequence[NodeFilter]) -> list[tuple[str, int, str]]:
    """What rules each node out for the gang, as kube-scheduler counts it: a node under the
    first filter that keeps the gang off it, as (filter name, node count, words)."""
    left = np.ones(state.node_count, dtype=bool)
    out = []
    for f in filters:
        pre = f.prefilter(state, gang)
        if pre is not None:
            off = left & ~pre
            if off.any():
                out.append((f.name, int(off.sum()), f"node(s) didn't satisfy plugin(s) [{f.plugin}]"))
            left &= pre
    unschedulable = int((left & ~state.open).sum())  # not ready
    if unschedulable:
        out.append(("unschedulable", unschedulable, "node(s) were unschedulable"))
    left &= state.open
    for f in filters:
        mask = f.mask(state, gang)
        if mask is None:
            continue
        off = left & ~mask
        if off.any():
            out.extend((f.name, n, text) for n, text in f.explain(state, gang, off) if n)
        left &= mask
    return out


NODE_FILTERS: dict[str, NodeFilter] = {
    f.name: f
    for f in (
        TeamPool(),
        NodeUnschedulable(),
        NodeAffinity(),
        TaintToleration(),
        GpuModel(),
        NodeVolumeLimits(),
        VolumeBinding(),
        VolumeZone(),
        *POD_FILTERS,
    )
}
# kube-scheduler's order (NodeUnschedulable, TaintToleration, NodeAffinity, NodePorts, the
# volume filters NodeVolumeLimits, VolumeBinding, VolumeZone, then PodTopologySpread and
# InterPodAffinity): a node ruled out by several is counted
# under the first, as in its FailedScheduling message.
# The team's pool first: the platform's rule, whatever the pod says.
DEFAULT_FILTERS: tuple[NodeFilter, ...] = (
    NODE_FILTERS["team-pool"],
    NODE_FILTERS["node-unschedulable"],
    NODE_FILTERS["taint-toleration"],
    NODE_FILTERS["node-affinity"],
    NODE_FILTERS["node-ports"],
    NODE_FILTERS["gpu-model"],
    NODE_FILTERS["node-volume-limits"],
    NODE_FILTERS["volume-binding"],
    NODE_FILTERS["volume-zone"],
    NODE_FILTERS["pod-topology-spread"],
    NODE_FILTERS["inter-pod-affinity"],
)


def static_filters(filters: Sequence[NodeFilter]) -> tuple[NodeFilter, ...]:
    """The filters whose masks depend on the nodes and the gang alone (shareable)."""
    return tuple(f for f in filters if not isinstance(f, PodTermFilter))
