"""Soft preferences that read the placed pods: preferred pod affinity and anti-affinity and
ScheduleAnyway topology spread (kube-scheduler's InterPodAffinity and PodTopologySpread
scores). They join the node preferences of preferences.py for a gang placed pod by pod,
normalised and weighed the same way (placement.scoreWeights interPodAffinity and
podTopologySpread)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from scheduler.core.podfilters import in_namespace
from scheduler.core.podindex import PodIndex
from scheduler.core.podterms import PodTerms
from scheduler.core.preferences import FRAGMENTATION, Preferred


def _affinity(index: PodIndex, terms: PodTerms) -> np.ndarray | None:
    """Per node: the weights of its preferred terms times the matching pods in the node's
    domain, anti-affinity counting against it (higher is better)."""
    if not (terms.preferred_affinity or terms.preferred_anti_affinity):
        return None
    score = np.zeros(index.n, dtype=np.float64)
    for sign, weighted in ((1.0, terms.preferred_affinity), (-1.0, terms.preferred_anti_affinity)):
        for w in weighted:
            near = index.in_domains(w.term.topology_key, index.per_node(index.term_rows(w.term)))
            score += sign * w.weight * near
    return score if score.any() else None


def _spread(index: PodIndex, terms: PodTerms, namespace: str) -> np.ndarray | None:
    """Per node: the matching pods already in its domain of each ScheduleAnyway constraint
    (lower is better: the pod goes where its group is thinnest)."""
    soft = [c for c in terms.spread if not c.filters and c.selector is not None]
    if not soft:
        return None
    score = np.zeros(index.n, dtype=np.float64)
    for c in soft:
        rows = index.matching(("spread", c.selector, namespace), in_namespace(c, namespace))
        score += index.in_domains(c.topology_key, index.per_node(rows))
    return score if score.any() else None


def with_pod_scores(
    index: PodIndex,
    terms: PodTerms | None,
    namespace: str,
    base: Preferred | None,
    weights: Mapping[str, int],
) -> Preferred | None:
    """`base` (the node preferences) with the pod-reading scores of `terms` added."""
    if terms is None:
        return base
    raw = list(base.raw) if base is not None else []
    for name, score, higher in (
        ("interPodAffinity", _affinity(index, terms), True),
        ("podTopologySpread", _spread(index, terms, namespace), False),
    ):
        weight = weights.get(name, 0)
        if score is not None and weight:
            raw.append((score, higher, float(weight)))
    if not raw:
        return None
    return Preferred(tuple(raw), float(weights.get(FRAGMENTATION, 1)))
