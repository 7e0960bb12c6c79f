"""Node filters: which nodes a gang's pods may use at all (kube-scheduler's Filter point).

Each filter's mask is worked out once per signature (what of the gang it reads) and node
list, and shared by every look-alike gang; a gang's pods may use a node only where every
pod's constraints allow it. `explain` counts the nodes a filter rules out in the words
kube-scheduler's FailedScheduling messages use, so a person reads the same reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np

from scheduler.core.cluster import ClusterState
from scheduler.core.constraints import PodConstraints
from scheduler.core.framework import NodeFilter
from scheduler.core.model import Gang
from scheduler.core.podfilters import POD_FILTERS, PodTermFilter


class GpuModel(NodeFilter):
    """Only nodes whose GPU model the gang allows (`gpu_models`; empty: any model)."""

    name = "gpu-model"

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

    def signature(self, gang: Gang) -> Hashable:
        return tuple(c.excluded for c in _per_pod(gang))

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        pools = [c for c in _per_pod(gang) if c.excluded]
        if not pools:
            return None
        return np.array(
            [not any(c.in_excluded_pool(n.labels) for c in pools) for n in state.nodes], dtype=bool
        ).reshape(len(state.nodes))

    def explain(self, state: ClusterState, gang: Gang, ruled_out: np.ndarray) -> list[tuple[int, str]]:
        return [(int(ruled_out.sum()), "node(s) are dedicated to another team's node pool")]


class TaintToleration(NodeFilter):
    """A node's NoSchedule and NoExecute taints keep off every pod that does not tolerate
    them: how a platform reserves a node pool (PreferNoSchedule only scores, not kept here)."""

    name = "taint-toleration"
    constraint_only = True
    plugin = "TaintToleration"

    def signature(self, gang: Gang) -> Hashable:
        return tuple(c.tolerations for c in _per_pod(gang))

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        tainted = [i for i, n in enumerate(state.nodes) if n.taints]
        if not tainted:
            return None
        ok = np.ones(len(state.nodes), dtype=bool)
        verdicts: dict[tuple, bool] = {}  # few distinct taint sets: each judged once
        for i in tainted:
            taints = state.nodes[i].taints
            verdict = verdicts.get(taints)
            if verdict is None:
                verdict = verdicts[taints] = all(c.untolerated(taints) is None for c in _per_pod(gang))
            ok[i] = verdict
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
    plugin = "NodeAffinity"

    def signature(self, gang: Gang) -> Hashable:
        return tuple((c.node_selector, c.required) for c in _per_pod(gang) if c.limits_nodes)

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        limits = [c for c in _per_pod(gang) if c.limits_nodes]
        if not limits:
            return None
        return np.array(
            [all(c.selects(n.name, n.labels) for c in limits) for n in state.nodes], dtype=bool
        ).reshape(len(state.nodes))

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


def allowed(state: ClusterState, gang: Gang, filters: Sequence[NodeFilter]) -> np.ndarray | None:
    """Nodes every filter lets the gang use (None: all)."""
    out: np.ndarray | None = None
    for f in filters:
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
    unschedulable = int((left & ~state.schedulable).sum())
    if unschedulable:
        out.append(("unschedulable", unschedulable, "node(s) were unschedulable"))
    left &= state.schedulable
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
    f.name: f for f in (TeamPool(), NodeAffinity(), TaintToleration(), GpuModel(), *POD_FILTERS)
}
# kube-scheduler's order (TaintToleration, NodeAffinity, NodePorts, ..., PodTopologySpread,
# InterPodAffinity): a node ruled out by several is counted under the first, as in its
# FailedScheduling message. The team's pool first: the platform's rule, whatever the pod says.
DEFAULT_FILTERS: tuple[NodeFilter, ...] = (
    NODE_FILTERS["team-pool"],
    NODE_FILTERS["taint-toleration"],
    NODE_FILTERS["node-affinity"],
    NODE_FILTERS["node-ports"],
    NODE_FILTERS["gpu-model"],
    NODE_FILTERS["pod-topology-spread"],
    NODE_FILTERS["inter-pod-affinity"],
)


def static_filters(filters: Sequence[NodeFilter]) -> tuple[NodeFilter, ...]:
    """The filters whose masks depend on the nodes and the gang alone (shareable)."""
    return tuple(f for f in filters if not isinstance(f, PodTermFilter))
