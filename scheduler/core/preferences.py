"""Node preferences: what a pod would rather have, weighed against packing (kube-scheduler's
Score point for the filters' soft halves).

A filter says where a pod may go; a preference says where it would rather go among those
nodes. Each preference scores the nodes a placement considers from 0 (best) to 100 (worst),
normalised over those nodes as kube-scheduler normalises its plugin scores, and the
placement orders them by

    weight(fragmentation) * fragmentation (0..100 over the same nodes) + sum of weight(p) * p

with the weights of `placement.scoreWeights` (defaults: kube-scheduler's own plugin weights,
fragmentation counted as its NodeResourcesFit). A gang with no preference, on a cluster
without PreferNoSchedule taints, is placed by fragmentation alone, as before.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.core.cluster import ClusterState
from scheduler.core.constraints import PodConstraints
from scheduler.core.labels import columns
from scheduler.core.model import Gang

FRAGMENTATION = "fragmentation"  # config.SCORE_NAMES names the weights
_NONE = (PodConstraints(),)


def _per_pod(gang: Gang) -> tuple[PodConstraints, ...]:
    return gang.constraints or _NONE


class Preference(ABC):
    """One soft rule: a raw per-node score, turned into 0 (best) .. 100 (worst)."""

    name: str  # the key of its weight in placement.scoreWeights
    higher_is_better: bool  # of the raw score

    @abstractmethod
    def signature(self, gang: Gang) -> Hashable:
        """What of the gang the raw score reads (gangs alike in it score alike)."""

    @abstractmethod
    def raw(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        """The raw score per node; None: every node scores the same."""


class PreferredNodeAffinity(Preference):
    """preferredDuringSchedulingIgnoredDuringExecution: a node scores the weights of the
    preferred terms it matches, so a pod lands where its author said it runs best."""

    name = "nodeAffinity"
    higher_is_better = True

    def signature(self, gang: Gang) -> Hashable:
        return tuple(c.preferred for c in _per_pod(gang))

    def raw(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        terms = [t for c in _per_pod(gang) for t in c.preferred]
        if not terms:
            return None
        cols = columns(state.nodes)
        score = np.zeros(state.node_count, dtype=np.float64)
        for weight, term in terms:
            score += weight * cols.term(term)
        return score


class PreferNoScheduleTaints(Preference):
    """A PreferNoSchedule taint the pod does not tolerate counts against the node: such
    nodes are used last, never refused."""

    name = "taintToleration"
    higher_is_better = False

    def signature(self, gang: Gang) -> Hashable:
        return tuple(c.tolerations for c in _per_pod(gang))

    def raw(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        pods = _per_pod(gang)
        score: np.ndarray | None = None
        for taints, idx in columns(state.nodes).taint_groups().items():  # each taint set once
            soft = [t for t in taints if t.effect == "PreferNoSchedule"]
            if not soft:
                continue
            untolerated = max(sum(not any(t.tolerates(x) for t in c.tolerations) for x in soft) for c in pods)
            if untolerated:
                if score is None:
                    score = np.zeros(state.node_count, dtype=np.float64)
                score[idx] = untolerated
        return score


PREFERENCES: dict[str, Preference] = {p.name: p for p in (PreferredNodeAffinity(), PreferNoScheduleTaints())}
DEFAULT_PREFERENCES: tuple[Preference, ...] = tuple(PREFERENCES.values())


@dataclass(frozen=True, slots=True)
class Preferred:
    """A request's preferences: raw scores per node, with the weight of each."""

    raw: tuple[tuple[np.ndarray, bool, float], ...]  # (score, higher is better, weight)
    fragmentation_weight: float

    def order(self, score: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """The combined score (lower is better) of `nodes`, whose fragmentation is `score`."""
        total = self.fragmentation_weight * _normalised(score.astype(np.float64), higher_is_better=False)
        for raw, higher, weight in self.raw:
            total = total + weight * _normalised(raw[nodes], higher)
        return total


def _normalised(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """0 for the best of `values`, 100 for the worst (all 0 when they are equal)."""
    if values.size == 0:
        return values
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float64)
    scaled = (values - lo) * (100.0 / (hi - lo))
    return 100.0 - scaled if higher_is_better else scaled


def preference_signature(gang: Gang, prefs: Sequence[Preference]) -> Hashable:
    """What the preferences read of the gang (None for a gang that states no constraint)."""
    if not gang.constraints:
        return None
    return tuple(p.signature(gang) for p in prefs)


def preferred(
    state: ClusterState, gang: Gang, prefs: Sequence[Preference], weights: Mapping[str, int]
) -> Preferred | None:
    """The gang's preferences over the nodes of `state`, or None when none sets any node
    apart (then fragmentation alone orders the nodes)."""
    raw = []
    for p in prefs:
        weight = weights.get(p.name, 0)
        if not weight:
            continue
        score = p.raw(state, gang)
        if score is not None:
            raw.append((score, p.higher_is_better, float(weight)))
    if not raw:
        return None
    return Preferred(tuple(raw), float(weights.get(FRAGMENTATION, 1)))
