"""All-or-nothing gang placement in the narrowest topology domain that fits.

A gang is tried at the node level first, then each wider level up to the widest it
allows (its required level, or the whole cluster). Within a level the domain that fits
most tightly wins, which keeps large empty domains for large gangs. Within the domain,
nodes are taken in the scorer's order. Either every required pod gets a place or the
state is rolled back and nothing is placed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from scheduler.core.cluster import FULL, ClusterState, Held, Shape
from scheduler.core.preferences import Preferred
from scheduler.core.shapecache import ShapeCache

CLUSTER_LEVEL = -1  # the whole cluster as one domain
_DOMAINS_TRIED_PER_LEVEL = 3


class RequestKey:
    """What a shared request is made of: its pod shapes, the node filters' signature of its
    gangs and its widest level. Hashed once, since the cycle's memos ask for it many times."""

    __slots__ = ("_hash", "parts")

    def __init__(self, shapes: tuple[Shape, ...], signature: Hashable, widest: int) -> None:
        self.parts = (shapes, signature, widest)
        self._hash = hash(self.parts)

    @property
    def shapes(self) -> tuple[Shape, ...]:
        return self.parts[0]

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequestKey) and self.parts == other.parts

    def __repr__(self) -> str:
        return f"RequestKey{self.parts!r}"


class DynamicPlacement(Protocol):
    """How a gang whose pods depend on the other pods is placed (podplace.DynamicPlacer)."""

    def place(self, state: ClusterState, cache: ShapeCache, req: GangRequest) -> Placement | None: ...

    def for_diagnosis(self, req: GangRequest) -> GangRequest: ...


@dataclass(frozen=True, slots=True)
class GangRequest:
    """What must be placed together: pods (as shapes, in order) and where they may go."""

    shapes: tuple[Shape, ...]
    model_ok: np.ndarray | None
    widest_level: int  # index into the topology levels, or CLUSTER_LEVEL
    pinned: np.ndarray | None = None  # node mask the gang must stay in (running members)
    whole_node_gpus: int = 8
    # What the request is made of (shapes, the node filters' signature, widest level) when
    # it is shared by look-alike gangs; None for a gang's own (pinned, nominated) request.
    key: RequestKey | None = field(default=None, compare=False)
    # What rules nodes out, for the reason a person reads: (filter, node count, words).
    ruled_out: Callable[[], list[tuple[str, int, str]]] | None = field(default=None, compare=False)
    # The gang's node preferences, weighed with the fragmentation score (None: that alone).
    prefer: Preferred | None = field(default=None, compare=False)
    # A gang whose pods depend on the other pods (podplace.DynamicPlacer): placed pod by pod
    # with masks from the cycle's placed pods; never a shared request.
    dynamic: DynamicPlacement | None = field(default=None, compare=False)
    counts: dict[Shape, int] = field(init=False, compare=False)
    whole_gpus: int = field(init=False, compare=False)  # whole GPUs of all the pods
    largest_gpus: int = field(init=False, compare=False)  # whole GPUs of the largest pod

    def __post_init__(self) -> None:
        counts: dict[Shape, int] = {}
        for s in self.shapes:
            counts[s] = counts.get(s, 0) + 1
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "whole_gpus", sum(s.gpus for s in self.shapes))
        object.__setattr__(self, "largest_gpus", max((s.gpus for s in self.shapes), default=0))


@dataclass(frozen=True, slots=True)
class Placement:
    held: tuple[Held, ...]  # one per shape in request order
    level: int  # the level whose single domain holds the whole gang


def allowed_nodes(state: ClusterState, *masks: np.ndarray | None) -> np.ndarray:
    """Nodes a pod may go to: placeable, and within every mask given (None: no limit)."""
    ok = state.placeable
    for mask in masks:
        if mask is not None:
            ok = ok & mask
    return ok


def capacity_of(state: ClusterState, cache: ShapeCache, shape: Shape, req: GangRequest) -> np.ndarray:
    """Pods of `shape` each node can take for this request (all filters applied)."""
    cap = cache.capacity(shape)
    if shape.cpu:
        cap = np.minimum(cap, np.maximum(state.cpu_free, 0) // shape.cpu)
    if shape.mem:
        cap = np.minimum(cap, np.maximum(state.mem_free, 0) // shape.mem)
    return np.where(allowed_nodes(state, req.model_ok, req.pinned), cap, 0)


def capacity_at(state: ClusterState, shape: Shape, req: GangRequest, idx: np.ndarray) -> np.ndarray:
    """Like `capacity_of`, for the nodes `idx` only (no cache: for a handful of nodes)."""
    cap = state.count_capacity(shape, idx)
    if shape.cpu:
        cap = np.minimum(cap, np.maximum(state.cpu_free[idx], 0) // shape.cpu)
    if shape.mem:
        cap = np.minimum(cap, np.maximum(state.mem_free[idx], 0) // shape.mem)
    ok = state.placeable[idx]
    if req.model_ok is not None:
        ok = ok & req.model_ok[idx]
    if req.pinned is not None:
        ok = ok & req.pinned[idx]
    return np.where(ok, cap, 0)


def place_gang(state: ClusterState, cache: ShapeCache, req: GangRequest) -> Placement | None:
    """Place every pod of `req` or none. On success the state holds the placement."""
    if req.dynamic is not None:
        return req.dynamic.place(state, cache, req)
    free, most = cache.whole_room()
    if req.whole_gpus > free or req.largest_gpus > most:
        return None  # fails by whole GPUs alone: most tries on a full cluster, found in one step
    counts = req.counts
    caps = {s: capacity_of(state, cache, s, req) for s in counts}
    for s, c in counts.items():
        if int(caps[s].sum()) < c:
            return None
    if len(req.shapes) == 1:
        return _fill(state, cache, req, None, CLUSTER_LEVEL, caps)
    levels = range(len(state.levels) - 1, max(req.widest_level, 0) - 1, -1)
    for level in levels:
        placed = _place_at_level(state, cache, req, caps, level)
        if placed is not None:
            return placed
    if req.widest_level == CLUSTER_LEVEL:
        return _fill(state, cache, req, None, CLUSTER_LEVEL)
    return None


def _place_at_level(
    state: ClusterState,
    cache: ShapeCache,
    req: GangRequest,
    caps: dict[Shape, np.ndarray],
    level: int,
) -> Placement | None:
    dom = state.domains[level]
    n_dom = len(state.domain_names[level])
    fits = np.ones(n_dom, dtype=bool)
    for s, c in req.counts.items():
        fits &= np.bincount(dom, weights=caps[s], minlength=n_dom) >= c
    if len(req.counts) > 1:
        # Pod sizes compete for the same GPUs: the domain needs their sum free as well.
        ok = allowed_nodes(state, req.model_ok)
        free = np.bincount(dom, weights=np.where(ok, state.total_free, 0), minlength=n_dom)
        fits &= free >= sum(s.gpus * FULL + s.milli for s in req.shapes)
    candidates = np.nonzero(fits)[0]
    if candidates.size == 0:
        return None
    if n_dom == state.node_count:
        # Node level: every domain is one node, so rank by the node score itself.
        _, score = cache.get(req.shapes[0])
        node_of = np.zeros(n_dom, dtype=np.int64)
        node_of[dom] = np.arange(state.node_count)
        rank = score[node_of[candidates]]
        if req.prefer is not None:
            rank = req.prefer.order(rank, node_of[candidates])
    else:
        free = np.bincount(dom, weights=state.total_free, minlength=n_dom)
        rank = free[candidates] + candidates * 1e-9
    k = min(_DOMAINS_TRIED_PER_LEVEL * len(req.counts), candidates.size)
    best = candidates[np.argpartition(rank, k - 1)[:k]] if candidates.size > k else candidates
    best = best[np.argsort(rank[np.searchsorted(candidates, best)], kind="stable")]
    for d in best:
        placed = _fill(state, cache, req, dom == d, level)
        if placed is not None:
            return placed
    return None


def _fill(
    state: ClusterState,
    cache: ShapeCache,
    req: GangRequest,
    within: np.ndarray | None,
    level: int,
    first: dict[Shape, np.ndarray] | None = None,
) -> Placement | None:
    """Put the request's pods on nodes of `within`, best-scored nodes first. `first`:
    `capacity_of` per shape as the state stands now (good until the first pod is placed)."""
    mark = state.mark()
    held_by_shape: dict[Shape, list[Held]] = {}
    for shape, count in sorted(req.counts.items(), key=lambda kv: (-kv[0].gpus, -kv[0].milli)):
        if first is not None and not held_by_shape:
            cap = first[shape]
        else:
            cap = capacity_of(state, cache, shape, req)
        if within is not None:
            cap = np.where(within, cap, 0)
        if shape.gpus >= req.whole_node_gpus:
            empty = cap * (state.whole_free == state.usable)
            if int(empty.sum()) >= count:
                cap = empty
        nodes = np.nonzero(cap > 0)[0]
        if int(cap[nodes].sum()) < count:
            state.rollback(mark)
            return None
        _, score = cache.get(shape)
        s = score[nodes]
        if req.prefer is not None:
            s = req.prefer.order(s, nodes)
        if nodes.size > count:
            top = np.argpartition(s, count - 1)[:count]
            nodes, s = nodes[top], s[top]
        nodes = nodes[np.argsort(s, kind="stable")]
        got: list[Held] = []
        for i in nodes:
            take = min(int(cap[i]), count - len(got))
            for _ in range(take):
                got.append(state.allocate(int(i), shape))
            if len(got) == count:
                break
        if len(got) < count:  # cannot happen when capacity was counted right
            state.rollback(mark)
            return None
        held_by_shape[shape] = got
    ordered = tuple(held_by_shape[s].pop(0) for s in req.shapes)
    return Placement(ordered, level)
