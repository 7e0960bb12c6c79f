"""What a pod's volumes ask of its node, and the filters that hold it (kube-scheduler's
VolumeBinding, VolumeZone and NodeVolumeLimits plugins).

The shell reads PersistentVolumeClaims, PersistentVolumes, StorageClasses and CSINodes into
`VolumeConstraints` (scheduler/daemon/volumes.py); the core sees only node terms, label
values and node names, never an API object. Semantics, from kube-scheduler's volume binder:
- a bound claim's PV node affinity must match the node ("volume node affinity conflict");
- an unbound WaitForFirstConsumer claim needs, on the node, an available PV that matches it
  (the smallest one not already chosen for another claim of the pod, claims taken smallest
  request first) or a class that provisions there (its allowedTopologies) ("didn't find
  available persistent volumes to bind");
- a bound PV's zone and region labels must hold a value the node has, unless the node has
  no zone or region label at all ("no available volume zone");
- a node whose CSI attach limit the pod's new volumes would pass is ruled out ("exceed max
  volume count").
What keeps the pod from being tried at all (a missing claim, an unbound Immediate claim, a
ReadWriteOncePod claim in use) is in `waits`, in kube-scheduler's PreFilter words.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from scheduler.core.cluster import ClusterState
from scheduler.core.constraints import PodConstraints, Requirement, Term
from scheduler.core.framework import NodeFilter
from scheduler.core.labels import columns
from scheduler.core.model import Gang

NODE_CONFLICT = "node(s) didn't match PersistentVolume's node affinity"
BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
PV_MISSING = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
ZONE_CONFLICT = "node(s) had no available volume zone"
MAX_VOLUMES = "node(s) exceed max volume count"
# The node labels VolumeZone compares, and the GA name a beta one is also looked up under.
ZONE_LABELS = {
    "failure-domain.beta.kubernetes.io/zone": "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region": "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone": "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region": "topology.kubernetes.io/region",
}

Affinity = tuple[Term, ...] | None  # a PV's required node affinity (None: every node)


@dataclass(frozen=True, slots=True, order=True)
class Claim:
    """An unbound WaitForFirstConsumer claim: the PVs it may bind, in the binder's order of
    preference (smallest first), and whether its class provisions, and where."""

    name: str  # namespace/name, for the words
    size: int = 0  # requested bytes: the binder takes the pod's smaller claims first
    pvs: tuple[tuple[str, Affinity], ...] = ()
    provisions: bool = False
    topology: Affinity = None  # the class's allowedTopologies (None: any node)
    selected: str = ""  # volume.kubernetes.io/selected-node already set: only that node


@dataclass(frozen=True, slots=True, order=True)
class VolumeConstraints:
    waits: tuple[str, ...] = ()
    bound: tuple[Affinity, ...] = ()  # each bound claim's PV node affinity
    pv_missing: bool = False  # a bound claim whose PV does not exist
    claims: tuple[Claim, ...] = ()  # sorted by size, as the binder takes them
    zones: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (zone label, values) of bound PVs
    over_limit: tuple[str, ...] = ()  # nodes whose CSI attach limit the pod would pass


def _volumes(gang: Gang) -> list[VolumeConstraints]:
    return [v for c in gang.constraints for v in c.volumes]


class _Columns:
    """Each distinct term's node mask, worked out once per mask call (PVs pinned to nodes
    repeat the same few keys), over the node label columns of labels.py."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.labels = columns(state.nodes)
        self._terms: dict[Affinity, np.ndarray] = {}

    def column(self, key: str) -> np.ndarray:
        """The nodes' values of label `key` (None where a node has none)."""
        return self.labels.column(key)

    def _requirement(self, r: Requirement, field: bool) -> np.ndarray:
        if field:  # a PV's affinity is checked on the node's labels alone: no field is set
            return np.full(self.state.node_count, r.matches(None), dtype=bool)
        return self.labels.requirement(r)

    def affinity(self, terms: Affinity) -> np.ndarray:
        """Nodes an OR of terms admits (an empty term admits none)."""
        mask = self._terms.get(terms)
        if mask is not None:
            return mask
        n = self.state.node_count
        if terms is None:
            mask = np.ones(n, dtype=bool)
        else:
            mask = np.zeros(n, dtype=bool)
            for t in terms:
                if not t.expressions and not t.fields:
                    continue
                m = np.ones(n, dtype=bool)
                for r in t.expressions:
                    m &= self._requirement(r, False)
                for r in t.fields:
                    m &= self._requirement(r, True)
                mask |= m
        self._terms[terms] = mask
        return mask

    def named(self, names: Iterable[str]) -> np.ndarray:
        mask = np.zeros(self.state.node_count, dtype=bool)
        index = self.state.index
        for name in names:
            i = index.get(name)
            if i is not None:
                mask[i] = True
        return mask


def _claims_ok(cols: _Columns, claims: tuple[Claim, ...]) -> np.ndarray:
    """Per node: every claim finds a PV there (not one an earlier claim took) or provisions."""
    n = cols.state.node_count
    ok = np.ones(n, dtype=bool)
    taken: dict[str, np.ndarray] = {}  # PV -> nodes where an earlier claim of the pod chose it
    for claim in claims:
        if claim.selected:
            here = cols.named((claim.selected,))
            ok &= here & claim.provisions & cols.affinity(claim.topology)
            continue
        found = np.zeros(n, dtype=bool)
        for pv, terms in claim.pvs:  # smallest first: a node takes the first it can reach
            reach = cols.affinity(terms) & ~found
            if pv in taken:
                reach &= ~taken[pv]
            if reach.any():
                taken[pv] = taken[pv] | reach if pv in taken else reach
                found |= reach
        if claim.provisions:
            found |= cols.affinity(claim.topology)
        ok &= found
    return ok


class VolumeBinding(NodeFilter):
    """A bound claim's PV must be reachable from the node, and each unbound
    WaitForFirstConsumer claim must find an available PV there or be provisioned there:
    else the kubelet cannot mount the pod's volumes."""

    name = "volume-binding"
    constraint_only = True
    plugin = "VolumeBinding"

    def signature(self, gang: Gang) -> Hashable:
        return tuple((v.bound, v.pv_missing, v.claims) for v in _volumes(gang))

    def _parts(self, state: ClusterState, gang: Gang) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        vols = [v for v in _volumes(gang) if v.bound or v.pv_missing or v.claims]
        if not vols:
            return None
        cols = _Columns(state)
        n = state.node_count
        bound = np.ones(n, dtype=bool)
        unbound = np.ones(n, dtype=bool)
        missing = any(v.pv_missing for v in vols)
        for v in vols:
            for terms in v.bound:
                bound &= cols.affinity(terms)
            unbound &= _claims_ok(cols, v.claims)
        return bound, unbound, np.full(n, not missing, dtype=bool)

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        parts = self._parts(state, gang)
        if parts is None:
            return None
        bound, unbound, found = parts
        return bound & unbound & found

    def explain(self, state: ClusterState, gang: Gang, ruled_out: np.ndarray) -> list[tuple[int, str]]:
        parts = self._parts(state, gang)
        if parts is None:
            return []
        bound, unbound, found = parts
        return [
            (int((ruled_out & ~bound).sum()), NODE_CONFLICT),
            (int((ruled_out & ~unbound).sum()), BIND_CONFLICT),
            (int((ruled_out & ~found).sum()), PV_MISSING),
        ]


class VolumeZone(NodeFilter):
    """A bound PV labelled with a zone or region is usable only from nodes in it (a node
    with no zone or region label at all is taken to be in every one, as in a one-zone
    cluster)."""

    name = "volume-zone"
    constraint_only = True
    plugin = "VolumeZone"

    def signature(self, gang: Gang) -> Hashable:
        return tuple(v.zones for v in _volumes(gang))

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        zones = [z for v in _volumes(gang) for z in v.zones]
        if not zones:
            return None
        cols = _Columns(state)
        n = state.node_count
        unlabelled = np.ones(n, dtype=bool)
        for key in ZONE_LABELS:
            unlabelled &= cols.column(key) == None  # noqa: E711 (elementwise on an object array)
        ok = np.ones(n, dtype=bool)
        for key, values in zones:
            have = cols.column(key)
            # A beta label on the PV is also matched by the GA label on the node.
            value = np.where(have != None, have, cols.column(ZONE_LABELS[key]))  # noqa: E711
            ok &= (value != None) & np.isin(value, np.array(list(values), dtype=object))  # noqa: E711
        return ok | unlabelled

    def explain(self, state: ClusterState, gang: Gang, ruled_out: np.ndarray) -> list[tuple[int, str]]:
        return [(int(ruled_out.sum()), ZONE_CONFLICT)]


class NodeVolumeLimits(NodeFilter):
    """A node's CSINode attach limit per driver: the pod's volumes not attached there yet,
    with those its pods use, must not pass it (counted by the shell from the pods there)."""

    name = "node-volume-limits"
    constraint_only = True
    plugin = "NodeVolumeLimits"

    def signature(self, gang: Gang) -> Hashable:
        return tuple(v.over_limit for v in _volumes(gang))

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        over = [name for v in _volumes(gang) for name in v.over_limit]
        if not over:
            return None
        return ~_Columns(state).named(over)

    def explain(self, state: ClusterState, gang: Gang, ruled_out: np.ndarray) -> list[tuple[int, str]]:
        return [(int(ruled_out.sum()), MAX_VOLUMES)]


def volume_waits(gang: Gang) -> list[str]:
    """Why the gang's volumes keep it from being tried at all (kube-scheduler's PreFilter)."""
    return sorted({w for v in _volumes(gang) for w in v.waits})


def with_volumes(c: PodConstraints | None, v: VolumeConstraints | None) -> PodConstraints | None:
    """`c` with the pod's volume constraints added (None and None: no constraints)."""
    if v is None or v == VolumeConstraints():
        return c
    return replace(c or PodConstraints(), volumes=(v,))
