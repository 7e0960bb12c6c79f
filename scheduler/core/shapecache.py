"""GPU capacity and scores per pod shape for one cycle's placements, kept current node by node.

A cycle places many pods on one state, and each placement changes a node or two: the
vectors over all nodes are kept and only the nodes that changed since the last look (from
the state's change log) are worked out again. `fresh=True` (the reference mode, see
shortcuts.py) works every vector out from scratch on each look instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from scheduler.core.cluster import ClusterState, Shape
from scheduler.core.scoring import NodeScorer


class ShapeCache:
    """GPU capacity and scores per pod shape, kept current through the state's change log."""

    def __init__(
        self, state: ClusterState, scorer: NodeScorer | Callable[[], NodeScorer], fresh: bool = False
    ) -> None:
        """`scorer`: a scorer, or what makes one when a score is first asked for (a cycle
        on a full cluster often places nothing, and then never pays for one)."""
        self.state = state
        self.fresh = fresh
        self._scorer = scorer if isinstance(scorer, NodeScorer) else None
        self._make_scorer = scorer
        # Scores and GPU capacity are kept apart: a placement that fails (most tries on a
        # full cluster) finds out from the capacity alone and never pays for scoring.
        self._entries: dict[tuple[int, ...], tuple[np.ndarray, int]] = {}  # scores
        self._caps: dict[tuple, tuple[np.ndarray, int]] = {}  # per GPU size and other resources
        self._all = np.arange(state.node_count)
        self._stats: np.ndarray | None = None
        self._stats_seen = -1  # the per-node figures are worked out with the scorer
        # Per node, the change-log length just after its last change (0: not since start).
        self._last_change = np.zeros(state.node_count, dtype=np.int64)
        self._last_seen = len(state.change_log)
        self._variants: dict[tuple[int, int], int] = {}  # full shapes seen per GPU size
        self._gpu_shapes: dict[Shape, Shape] = {}  # a shape's GPU request alone
        self._room: tuple[int, int] = (0, 0)
        self._room_seen = -1

    def _moved_since(self, seen: int) -> np.ndarray:
        """Nodes changed since the change log was `seen` long, ascending."""
        log = self.state.change_log
        if len(log) - seen <= self._all.size // 8:
            # A few changes (the usual case: one placement): a set is far cheaper than np.unique.
            return np.array(sorted(set(log[seen:])), dtype=np.int64)
        if self._last_seen < len(log):
            fresh = np.array(log[self._last_seen :], dtype=np.int64)
            np.maximum.at(self._last_change, fresh, np.arange(self._last_seen + 1, len(log) + 1))
            self._last_seen = len(log)
        return np.nonzero(self._last_change > seen)[0]

    @property
    def scorer(self) -> NodeScorer:
        if self._scorer is None:
            make = self._make_scorer
            self._scorer = make if isinstance(make, NodeScorer) else make()
        return self._scorer

    @property
    def _full_shape(self) -> bool:
        return self.scorer.uses_resources

    def _stats_for(self, idx: np.ndarray) -> np.ndarray | None:
        """The scorer's per-node figures for `idx`, refreshed once per change for all shapes."""
        log = self.state.change_log
        if self._stats_seen < 0:
            self._stats = self.scorer.node_stats(self.state, self._all)
            self._stats_seen = len(log)
        if self._stats is None:
            return None
        if self._stats_seen < len(log):
            moved = self._moved_since(self._stats_seen)
            self._stats[moved] = self.scorer.node_stats(self.state, moved)
            self._stats_seen = len(log)
        return self._stats if idx is self._all else self._stats[idx]

    def _scores(self, shape: Shape, idx: np.ndarray) -> np.ndarray:
        stats = self._stats_for(idx)
        return self.scorer.scores(self.state, shape, idx, stats=stats)

    def whole_room(self) -> tuple[int, int]:
        """Whole free GPUs on placeable nodes: in all, and the most on one node. A request
        for more fails by room alone, whatever else it asks, without a look at any node."""
        seen = len(self.state.change_log)
        if self._room_seen != seen or self.fresh:
            free = self.state.whole_free[self.state.placeable]
            self._room = (int(free.sum()), int(free.max(initial=0)))
            self._room_seen = seen
        return self._room

    def capacity(self, shape: Shape) -> np.ndarray:
        """Pods of this shape each node can take by all but CPU and memory (GPUs, the pods
        count, other resources: ClusterState.count_capacity). Do not modify it."""
        if self.fresh:
            return self.state.count_capacity(shape)
        key = (shape.gpus, shape.milli, shape.extras)
        log = self.state.change_log
        entry = self._caps.get(key)
        if entry is None:
            cap = self.state.count_capacity(shape)  # reads no CPU or memory
        else:
            cap, seen = entry
            if seen < len(log):
                moved = self._moved_since(seen)
                cap[moved] = self.state.count_capacity(shape, moved)
        self._caps[key] = (cap, len(log))
        return cap

    def get(self, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
        """(GPU capacity per node, score per node) for pods of this shape.

        Capacity counts GPUs only. Scores are per GPU size, or per full shape for scorers
        whose score depends on the pod's CPU and memory too; a full shape seen for the
        first time starts from its GPU size's scores and computes only the nodes where
        the CPU and memory can matter.
        """
        gpu_shape = self._gpu_shapes.get(shape)
        if gpu_shape is None:
            gpu_shape = self._gpu_shapes[shape] = Shape(shape.gpus, shape.milli, 0, 0)
        if self.fresh:
            scored = shape if self._full_shape else gpu_shape
            stats = self.scorer.node_stats(self.state, self._all)
            return self.capacity(shape), self.scorer.scores(self.state, scored, self._all, stats=stats)
        if not self._full_shape or shape == gpu_shape or self.scorer.volatile:
            return self.capacity(shape), self._gpu_size_scores(gpu_shape if not self._full_shape else shape)
        key = (shape.gpus, shape.milli, shape.cpu, shape.mem)
        log = self.state.change_log
        entry = self._entries.get(key)
        if entry is None:
            size = (shape.gpus, shape.milli)
            self._variants[size] = self._variants.get(size, 0) + 1
            base = self._gpu_size_scores(gpu_shape)
            same = self.scorer.unaffected_by_resources(self.state, shape, self._all)
            score = self._on_top_of(base, shape, self._all, same)
        else:
            score, seen = entry
            if seen < len(log):
                moved = self._moved_since(seen)
                if self._variants[(shape.gpus, shape.milli)] > 1:
                    # Several CPU sizes share this GPU size: refresh its scores once, for
                    # all of them, and compute only where the CPU and memory matter.
                    base = self._gpu_size_scores(gpu_shape)
                    same = self.scorer.unaffected_by_resources(self.state, shape, moved)
                    score[moved] = self._on_top_of(base, shape, moved, same)
                else:
                    score[moved] = self._scores(shape, moved)
        self._entries[key] = (score, len(log))
        return self.capacity(shape), score

    def _on_top_of(
        self, base: np.ndarray, shape: Shape, idx: np.ndarray, same: np.ndarray | None
    ) -> np.ndarray:
        """Scores of `shape` on `idx`: the GPU size's where CPU and memory cannot matter."""
        if same is None:
            return self._scores(shape, idx)
        out = base[idx]  # a copy (fancy indexing)
        tight = np.nonzero(~same)[0]
        if tight.size:
            out[tight] = self._scores(shape, idx[tight])
        return out

    def _gpu_size_scores(self, shape: Shape) -> np.ndarray:
        key = (shape.gpus, shape.milli)
        log = self.state.change_log
        entry = self._entries.get(key)
        if entry is None:
            score = self._scores(shape, self._all)
        else:
            score, seen = entry
            if self.scorer.volatile:
                score = self._scores(shape, self._all)
            elif seen < len(log):
                moved = self._moved_since(seen)
                score[moved] = self._scores(shape, moved)
        self._entries[key] = (score, len(log))
        return score
