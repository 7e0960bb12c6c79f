"""Placing a gang whose pods depend on the other pods (host ports, pod affinity, spread).

Such a gang ("dynamic") shares no request and no memo: each of its pods' masks is worked
out from the cycle's PodIndex as it stands when the pod is placed, and every pod placed is
added to the index at once, so the gang's own pods see each other (four replicas with
hostname anti-affinity take four nodes; two pods on host port 8080 never share one).
All-or-nothing as every gang: a domain that cannot take every pod is rolled back, on the
cluster and on the index, and the next is tried, narrowest topology level first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from scheduler.core.cluster import ClusterState, Held
from scheduler.core.model import Gang
from scheduler.core.placement import CLUSTER_LEVEL, GangRequest, Placement, capacity_of
from scheduler.core.podfilters import PodTermFilter, terms_of
from scheduler.core.podindex import PodIndex
from scheduler.core.podscores import with_pod_scores
from scheduler.core.podterms import AffinityTerm
from scheduler.core.shapecache import ShapeCache

_DOMAINS_TRIED_PER_LEVEL = 3


def is_dynamic(gang: Gang, anti: Sequence[AffinityTerm]) -> bool:
    """Whether the gang must be placed pod by pod: a pod states host ports, required pod
    (anti-)affinity or a DoNotSchedule spread, or a pod's labels match one of `anti` (the
    required anti-affinity terms of the pods placed or waiting this cycle)."""
    if gang.terms and any(t is not None and (t.filters or t.scores) for t in gang.terms):
        return True
    if anti:
        for pod in gang.pods:
            if pod.node is None:
                labels = dict(pod.labels)
                if any(t.matches(pod.namespace, labels) for t in anti):
                    return True
    return False


@dataclass(frozen=True, slots=True, eq=False)
class DynamicPlacer:
    """A dynamic gang's pods (`pods`: their positions in the gang, in the request's shape
    order) and the filters that read the index."""

    index: PodIndex
    gang: Gang
    pods: tuple[int, ...]
    filters: tuple[PodTermFilter, ...]
    weights: Mapping[str, int] = field(default_factory=dict)  # placement.scoreWeights

    def only(self, positions: tuple[int, ...]) -> DynamicPlacer:
        return replace(self, pods=positions)

    def mask(self, k: int) -> np.ndarray | None:
        """Nodes pod `k` may use as the index stands now (None: any)."""
        out: np.ndarray | None = None
        for f in self.filters:
            m = f.pod_mask(self.index, self.gang, k)
            if m is not None:
                out = m if out is None else out & m
        return out

    def gang_mask(self) -> np.ndarray | None:
        """Nodes every waiting pod of the gang may use as the index stands now."""
        out: np.ndarray | None = None
        for k in self.pods:
            m = self.mask(k)
            if m is not None:
                out = m if out is None else out & m
        return out

    def for_diagnosis(self, req: GangRequest) -> GangRequest:
        """The request with the pod masks of now folded into its node mask, for the reason."""
        m = self.gang_mask()
        if m is None:
            return req
        ok = m if req.model_ok is None else req.model_ok & m
        return replace(req, model_ok=ok, dynamic=None)

    def place(self, state: ClusterState, cache: ShapeCache, req: GangRequest) -> Placement | None:
        if len(req.shapes) == 1:
            return self._fill(state, cache, req, None, CLUSTER_LEVEL)
        start = self.gang_mask()
        for level in range(len(state.levels) - 1, max(req.widest_level, 0) - 1, -1):
            dom = state.domains[level]
            n_dom = len(state.domain_names[level])
            fits = np.ones(n_dom, dtype=bool)
            for s, c in req.counts.items():
                cap = capacity_of(state, cache, s, req)
                if start is not None:
                    cap = np.where(start, cap, 0)
                fits &= np.bincount(dom, weights=cap, minlength=n_dom) >= c
            candidates = np.nonzero(fits)[0]
            free = np.bincount(dom, weights=state.total_free, minlength=n_dom)
            order = candidates[np.argsort(free[candidates], kind="stable")]
            for d in order[: _DOMAINS_TRIED_PER_LEVEL * len(req.counts)]:
                placed = self._fill(state, cache, req, dom == d, level)
                if placed is not None:
                    return placed
        if req.widest_level == CLUSTER_LEVEL:
            return self._fill(state, cache, req, None, CLUSTER_LEVEL)
        return None

    def _fill(
        self, state: ClusterState, cache: ShapeCache, req: GangRequest, within: np.ndarray | None, level: int
    ) -> Placement | None:
        """Each pod on the best-scored node its masks allow now, largest pods first."""
        mark, imark = state.mark(), self.index.mark()
        held: list[Held | None] = [None] * len(req.shapes)
        order = sorted(range(len(req.shapes)), key=lambda j: (-req.shapes[j].gpus, -req.shapes[j].milli))
        for j in order:
            shape, k = req.shapes[j], self.pods[j]
            cap = capacity_of(state, cache, shape, req)
            if within is not None:
                cap = np.where(within, cap, 0)
            m = self.mask(k)
            if m is not None:
                cap = np.where(m, cap, 0)
            nodes = np.flatnonzero(cap > 0)
            if nodes.size == 0:
                state.rollback(mark)
                self.index.rollback(imark)
                return None
            _, score = cache.get(shape)
            s = score[nodes]
            prefer = with_pod_scores(
                self.index, terms_of(self.gang, k), self.gang.pods[k].namespace, req.prefer, self.weights
            )
            if prefer is not None:
                s = prefer.order(s, nodes)
            i = int(nodes[np.argmin(s)])
            held[j] = state.allocate(i, shape)
            self.index.add(i, self.gang.pods[k], terms_of(self.gang, k))
        return Placement(tuple(h for h in held if h is not None), level)
