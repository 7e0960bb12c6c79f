"""Node scoring strategies: which node a pod should go to (lower score is better).

`fragmentation` is gpufair's default, after "Beware of Fragmentation" (ATC'23): a node's
fragmentation is the GPU capacity that the expected workload could not use there, and
a pod goes where it grows that the least. `best-fit` and `first-fit` are the baselines.
Scores are vectors over nodes, cached per pod shape and refreshed only for nodes that
changed since the last look.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from scheduler.core.cluster import FULL, ClusterState, Shape


@dataclass(frozen=True)
class WorkloadMix:
    """The expected pod sizes, with how often each comes: the 'M' of FGD."""

    whole: np.ndarray  # GPUs per pod, for whole-GPU pods
    whole_p: np.ndarray
    share: np.ndarray  # milli-GPUs per pod, for shared-GPU pods
    share_p: np.ndarray

    @staticmethod
    def from_shapes(shapes: Iterable[tuple[int, int]], top: int) -> WorkloadMix:
        """From (gpus, milli) of the pods the cluster sees; keeps the `top` commonest."""
        counts = Counter((g, m) for g, m in shapes if g or m)
        if not counts:
            counts = Counter({(1, 0): 1, (2, 0): 1, (4, 0): 1, (8, 0): 1})
        common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        total = float(sum(c for _, c in common))
        whole = [(g, c / total) for (g, m), c in common if g]
        share = [(m, c / total) for (g, m), c in common if not g]
        return WorkloadMix(
            np.array([g for g, _ in whole], dtype=np.int64),
            np.array([p for _, p in whole], dtype=np.float64),
            np.array([m for m, _ in share], dtype=np.int64),
            np.array([p for _, p in share], dtype=np.float64),
        )


class NodeScorer:
    """A placement strategy: a vector of scores for putting one pod of `shape` on nodes."""

    name: ClassVar[str] = ""

    def scores(self, state: ClusterState, shape: Shape, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class FirstFit(NodeScorer):
    """The first node (in snapshot order) that has room."""

    name = "first-fit"

    def scores(self, state: ClusterState, shape: Shape, idx: np.ndarray) -> np.ndarray:
        return idx.astype(np.float64)


class BestFit(NodeScorer):
    """The node left with the fewest free GPUs."""

    name = "best-fit"

    def scores(self, state: ClusterState, shape: Shape, idx: np.ndarray) -> np.ndarray:
        taken = shape.gpus * FULL + shape.milli
        return (state.total_free[idx] - taken).astype(np.float64) + idx * 1e-9


class Fragmentation(NodeScorer):
    """Least growth in expected fragmentation, then best fit."""

    name = "fragmentation"

    def __init__(self, mix: WorkloadMix) -> None:
        self.mix = mix

    def _whole_frag(self, whole: np.ndarray, partial: np.ndarray, total: np.ndarray) -> np.ndarray:
        """Fragmentation seen by whole-GPU pods: all free capacity where they cannot fit,
        and the partial GPUs where they can."""
        if self.mix.whole.size == 0:
            return np.zeros(whole.shape[0])
        fits = whole[:, None] >= self.mix.whole[None, :]
        frag = np.where(fits, partial[:, None], total[:, None])
        return frag @ self.mix.whole_p

    def _share_frag_of(self, free: np.ndarray) -> np.ndarray:
        """Fragmentation a single GPU slot with `free` milli causes for shared pods."""
        if self.mix.share.size == 0:
            return np.zeros(free.shape)
        small = (free[..., None] >= 0) & (free[..., None] < self.mix.share)
        return (np.where(small, free[..., None], 0) * self.mix.share_p).sum(axis=-1)

    def scores(self, state: ClusterState, shape: Shape, idx: np.ndarray) -> np.ndarray:
        whole = state.whole_free[idx]
        total = state.total_free[idx]
        partial = total - whole * FULL
        before = self._whole_frag(whole, partial, total)
        if shape.gpus:
            after = self._whole_frag(whole - shape.gpus, partial, total - shape.gpus * FULL)
            delta = after - before
            left = total - shape.gpus * FULL
        elif shape.milli:
            rows = state.free[idx]
            candidates = np.where(rows >= shape.milli, rows, np.iinfo(np.int32).max)
            chosen = candidates.min(axis=1).astype(np.int64)
            chosen = np.where(chosen == np.iinfo(np.int32).max, shape.milli, chosen)
            rest = chosen - shape.milli
            was_full = chosen == FULL
            after = self._whole_frag(
                whole - was_full,
                np.where(was_full, partial + rest, partial - shape.milli),
                total - shape.milli,
            )
            delta = after - before + self._share_frag_of(rest) - self._share_frag_of(chosen)
            left = total - shape.milli
        else:
            return idx * 1e-9
        # Ties go to the node left fullest (best fit), then to the lower index.
        return delta + left * 1e-6 + idx * 1e-12


SCORERS: dict[str, type[NodeScorer]] = {
    FirstFit.name: FirstFit,
    BestFit.name: BestFit,
    Fragmentation.name: Fragmentation,
}


class ShapeCache:
    """GPU capacity and scores per pod shape, kept current through the state's change log."""

    def __init__(self, state: ClusterState, scorer: NodeScorer) -> None:
        self.state = state
        self.scorer = scorer
        self._entries: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, int]] = {}
        self._all = np.arange(state.node_count)

    def get(self, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
        """(GPU capacity per node, score per node) for pods of this GPU size."""
        key = (shape.gpus, shape.milli)
        gpu_shape = Shape(shape.gpus, shape.milli, 0, 0)
        log = self.state.change_log
        entry = self._entries.get(key)
        if entry is None:
            cap = self.state.gpu_capacity(gpu_shape)
            score = self.scorer.scores(self.state, gpu_shape, self._all)
        else:
            cap, score, seen = entry
            if seen < len(log):
                moved = np.unique(np.array(log[seen:], dtype=np.int64))
                cap[moved] = self.state.gpu_capacity(gpu_shape, moved)
                score[moved] = self.scorer.scores(self.state, gpu_shape, moved)
        self._entries[key] = (cap, score, len(log))
        return cap, score
