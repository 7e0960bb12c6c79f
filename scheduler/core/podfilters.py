"""The node filters that depend on the other pods: NodePorts, PodTopologySpread, InterPodAffinity.

Unlike the static filters (filters.py) their masks change as pods are placed, so no two
gangs share one and no memo keeps one: each is worked out per pod from the cycle's
PodIndex (`state.pod_index`), and a gang that needs them is placed pod by pod (podplace.py)
so that its own pods see each other. Each unit gives per node a code (0: allowed, else the
1-based index of its reason in `WORDS`), so the mask and kube-scheduler's words for the
nodes it rules out come from one computation, in the plugin's own order of checks.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from scheduler.core.constraints import PodConstraints
from scheduler.core.framework import NodeFilter
from scheduler.core.podterms import AffinityTerm, PodTerms, SpreadConstraint, self_matches_all

if TYPE_CHECKING:
    from scheduler.core.cluster import ClusterState
    from scheduler.core.model import Gang
    from scheduler.core.podindex import PodIndex


def terms_of(gang: Gang, k: int) -> PodTerms | None:
    return gang.terms[k] if gang.terms else None


class PodTermFilter(NodeFilter):
    """A filter whose mask depends on the placed pods (see the module doc)."""

    constraint_only = True
    WORDS: ClassVar[tuple[str, ...]] = ()

    def signature(self, gang: Gang) -> Hashable:
        return None  # never part of a shared request: the mask is each pod's own

    @abstractmethod
    def codes(self, idx: PodIndex, gang: Gang, k: int) -> np.ndarray | None:
        """Per node, for pod `k` of the gang: 0 where it may go, else its reason's number
        (None: it may go anywhere as far as this filter goes)."""

    def pod_mask(self, idx: PodIndex, gang: Gang, k: int) -> np.ndarray | None:
        codes = self.codes(idx, gang, k)
        return None if codes is None else codes == 0

    def _gang_codes(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        """Per node, the code of the first of the gang's waiting pods the filter refuses."""
        idx = state.pod_index
        if idx is None:
            return None
        out: np.ndarray | None = None
        for k, pod in enumerate(gang.pods):
            if pod.node is not None:
                continue
            codes = self.codes(idx, gang, k)
            if codes is not None:
                out = codes if out is None else np.where(out == 0, codes, out)
        return out

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        codes = self._gang_codes(state, gang)
        return None if codes is None else codes == 0

    def explain(self, state: ClusterState, gang: Gang, ruled_out: np.ndarray) -> list[tuple[int, str]]:
        codes = self._gang_codes(state, gang)
        if codes is None:
            return []
        counts = np.bincount(codes[ruled_out], minlength=len(self.WORDS) + 1)
        return [(int(counts[c + 1]), w) for c, w in enumerate(self.WORDS) if counts[c + 1]]


class NodePorts(PodTermFilter):
    """A host port (protocol, port) is held by one pod per node; a pod bound to 0.0.0.0 (or no
    host IP) holds it on every IP of the node, so it conflicts whatever IP the other names."""

    name = "node-ports"
    plugin = "NodePorts"
    WORDS = ("node(s) didn't have free ports for the requested pod ports",)

    def codes(self, idx: PodIndex, gang: Gang, k: int) -> np.ndarray | None:
        terms = terms_of(gang, k)
        if terms is None or not terms.ports:
            return None
        clash = idx.port_conflicts(terms.ports)
        return None if clash is None else clash.astype(np.int8)


def _node_facts(idx: PodIndex, gang: Gang) -> tuple[np.ndarray, np.ndarray]:
    """Per node: whether the gang's node affinity (nodeSelector and required terms) admits
    it, and whether it tolerates the node's NoSchedule/NoExecute taints, as the spread
    plugin's nodeAffinityPolicy and nodeTaintsPolicy read them."""
    cs = gang.constraints or (PodConstraints(),)
    key = ("node-facts", cs)
    hit = idx.memo.get(key)
    if hit is None:
        facts = [
            (all(c.selects(n.name, n.labels) for c in cs), all(c.untolerated(n.taints) is None for c in cs))
            for n in idx.nodes
        ]
        hit = idx.memo[key] = np.array(facts, dtype=bool).reshape(idx.n, 2)
    return hit[:, 0], hit[:, 1]


def in_namespace(c: SpreadConstraint, ns: str) -> Callable[[str, dict[str, str]], bool]:
    """Whether a pod counts for constraint `c` of a pod in namespace `ns`."""
    return lambda n, labels: n == ns and c.counts(labels)


class PodTopologySpread(PodTermFilter):
    """whenUnsatisfiable DoNotSchedule: a pod may go where, counting the pods its selector
    matches in its own namespace per domain of the topology key, its domain would exceed the
    least-loaded domain by no more than maxSkew. Only nodes with every constraint's key (and,
    by the policies, that the pod's node affinity admits, or whose taints it tolerates) make
    domains; with fewer domains than minDomains the least-loaded counts as 0."""

    name = "pod-topology-spread"
    plugin = "PodTopologySpread"
    WORDS = (
        "node(s) didn't match pod topology spread constraints (missing required label)",
        "node(s) didn't match pod topology spread constraints",
    )

    def codes(self, idx: PodIndex, gang: Gang, k: int) -> np.ndarray | None:
        terms = terms_of(gang, k)
        spread = terms.filtering_spread if terms is not None else ()
        if not spread:
            return None
        pod = gang.pods[k]
        ns, labels = pod.namespace, dict(pod.labels)
        has_all = np.ones(idx.n, dtype=bool)
        for c in spread:
            has_all &= idx.domains(c.topology_key)[0] >= 0
        affinity_ok, taints_ok = _node_facts(idx, gang)
        codes = np.zeros(idx.n, dtype=np.int8)
        for c in spread:
            dom, count = idx.domains(c.topology_key)
            counted = has_all.copy()
            if c.honour_node_affinity:
                counted &= affinity_ok
            if c.honour_taints:
                counted &= taints_ok
            rows = idx.matching(("spread", c.selector, ns), in_namespace(c, ns))
            per_node = idx.per_node(rows)
            per_domain = np.bincount(dom[counted], weights=per_node[counted], minlength=count)
            present = np.zeros(count, dtype=bool)
            present[dom[counted]] = True
            domains = int(present.sum())
            least = float(per_domain[present].min()) if domains else np.inf
            if domains < c.min_domains:
                least = 0.0
            mine = 1 if c.counts(labels) else 0
            missing = dom < 0
            skew = per_domain[np.maximum(dom, 0)] + mine - least > c.max_skew
            codes[(codes == 0) & missing] = 1
            codes[(codes == 0) & ~missing & skew] = 2
        return codes


def _affinity_ok(
    idx: PodIndex, terms: tuple[AffinityTerm, ...], ns: str, labels: dict[str, str]
) -> np.ndarray:
    """Required pod affinity: every term's domain on the node holds a pod matching all the
    terms. When no such pod runs anywhere (in a domain of any term) and the pod matches its
    own terms, it may go to any node with every topology key: the first of a group."""
    rows = idx.term_rows(terms[0])
    for t in terms[1:]:
        rows = rows & idx.term_rows(t)
    per_node = idx.per_node(rows)
    ok = np.ones(idx.n, dtype=bool)
    has_keys = np.ones(idx.n, dtype=bool)
    anywhere = False
    for t in terms:
        has = idx.domains(t.topology_key)[0] >= 0
        has_keys &= has
        anywhere = anywhere or bool(per_node[has].any())
        ok &= has & (idx.in_domains(t.topology_key, per_node) > 0)
    if not anywhere and self_matches_all(terms, ns, labels):
        return has_keys
    return ok


class InterPodAffinity(PodTermFilter):
    """Required pod affinity and anti-affinity, in kube-scheduler's order of checks: the
    pod's affinity, its anti-affinity (no pod its terms match in the node's domain), then the
    placed pods' anti-affinity against it (symmetry: a pod whose required anti-affinity term
    matches the incoming pod keeps it out of its own domain of that term's key)."""

    name = "inter-pod-affinity"
    plugin = "InterPodAffinity"
    WORDS = (
        "node(s) didn't match pod affinity rules",
        "node(s) didn't match pod anti-affinity rules",
        "node(s) didn't satisfy existing pods anti-affinity rules",
    )

    def codes(self, idx: PodIndex, gang: Gang, k: int) -> np.ndarray | None:
        terms = terms_of(gang, k)
        pod = gang.pods[k]
        labels = dict(pod.labels)
        codes: np.ndarray | None = None
        if terms is not None and terms.affinity:
            codes = np.where(_affinity_ok(idx, terms.affinity, pod.namespace, labels), 0, 1).astype(np.int8)
        if terms is not None and terms.anti_affinity:
            clash = np.zeros(idx.n, dtype=bool)
            for t in terms.anti_affinity:
                rows = idx.term_rows(t)
                if rows.any():
                    clash |= idx.in_domains(t.topology_key, idx.per_node(rows)) > 0
            if clash.any():
                codes = np.zeros(idx.n, dtype=np.int8) if codes is None else codes
                codes[(codes == 0) & clash] = 2
        forbidden = idx.forbidding(pod.namespace, labels)
        if forbidden is not None:
            codes = np.zeros(idx.n, dtype=np.int8) if codes is None else codes
            codes[(codes == 0) & forbidden] = 3
        return codes


POD_FILTERS: tuple[PodTermFilter, ...] = (NodePorts(), PodTopologySpread(), InterPodAffinity())
