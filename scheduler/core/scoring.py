"""Node scoring strategies: which node a pod should go to (lower score is better).

`fragmentation` is gpufair's default, after "Beware of Fragmentation" (ATC'23): a node's
fragmentation is the GPU capacity that the expected workload could not use there, and
a pod goes where it leaves the least of it (see Fragmentation for how this differs from
FGD's least growth, which is kept as an option). The expected workload is a mix of pod
types with their GPUs, CPU, memory and allowed GPU models, so a node that still has GPUs
but not the CPU to feed them counts those GPUs as stranded. `best-fit` and `first-fit` are
the core's baselines; `gpu-packing`, `dot-product` and `random` are the other baselines
of the paper's packing experiment. Scores are vectors over nodes, cached per pod shape
and refreshed only for nodes that changed since the last look.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from scheduler.core.cluster import FULL, ClusterState, Shape
from scheduler.core.config import PolicyConfig

if TYPE_CHECKING:
    from scheduler.core.shortcuts import Shortcuts

# A pod type of the mix: (gpus, milli, cpu_milli, memory_mib, allowed GPU models).
TypeKey = tuple[int, int, int, int, tuple[str, ...]]

_NONE_FITS = np.iinfo(np.int32).max


def _type_key(item: tuple) -> TypeKey:
    """(gpus, milli[, cpu[, mem[, models]]]) as a full key; models as a sorted tuple."""
    gpus, milli = int(item[0]), int(item[1])
    cpu = int(item[2]) if len(item) > 2 else 0
    mem = int(item[3]) if len(item) > 3 else 0
    models: tuple[str, ...] = tuple(sorted(item[4])) if len(item) > 4 and item[4] else ()
    return gpus, milli, cpu, mem, models


@dataclass(frozen=True)
class WorkloadMix:
    """The expected pod types, with how often each comes: the 'M' of FGD.

    One entry per type: whole GPUs per pod (`gpus`, 0 for a shared-GPU pod), the share
    of one GPU (`milli`, for shared pods), CPU and memory per pod, allowed GPU models
    (empty: any) and the type's probability `p`.
    """

    gpus: np.ndarray
    milli: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    p: np.ndarray
    models: tuple[tuple[str, ...], ...] = ()

    @staticmethod
    def from_shapes(shapes: Iterable[tuple], top: int, coverage: float = 1.0) -> WorkloadMix:
        """From (gpus, milli[, cpu[, mem[, models]]]) of the pods the cluster sees."""
        return WorkloadMix.from_counts(Counter(_type_key(s) for s in shapes), top, coverage)

    @staticmethod
    def from_counts(counts: Mapping[tuple, float], top: int, coverage: float = 1.0) -> WorkloadMix:
        """From pod counts per type (see `ranked` for which types are kept)."""
        return WorkloadMix.of(*WorkloadMix.ranked(counts, top, coverage))

    @staticmethod
    def ranked(
        counts: Mapping[tuple, float], top: int, coverage: float = 1.0
    ) -> tuple[tuple[TypeKey, ...], tuple[float, ...]]:
        """The types kept from pod counts per type, and their probabilities: the commonest
        types, at most `top` of them and no more than it takes to cover `coverage` of the
        pods (FGD keeps 95%). Pods that ask for no GPU are left out: they strand no GPU
        capacity whatever the node."""
        merged: dict[TypeKey, float] = {}
        for key, c in counts.items():
            k = _type_key(key)
            if (k[0] or k[1]) and c > 0:
                merged[k] = merged.get(k, 0) + c
        if not merged:
            merged = {(g, 0, 0, 0, ()): 1 for g in (1, 2, 4, 8)}
        ranked = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
        all_pods = float(sum(c for _, c in ranked))
        kept: list[tuple[TypeKey, float]] = []
        running = 0.0
        for key, c in ranked[:top]:
            kept.append((key, c))
            running += c
            if running >= coverage * all_pods - 1e-9:
                break
        total = float(sum(c for _, c in kept))
        return tuple(k for k, _ in kept), tuple(c / total for _, c in kept)

    @staticmethod
    def of(keys: tuple[TypeKey, ...], p: tuple[float, ...]) -> WorkloadMix:
        """The mix of these types with these probabilities."""
        return WorkloadMix(
            np.array([k[0] for k in keys], dtype=np.int64),
            np.array([0 if k[0] else k[1] for k in keys], dtype=np.int64),
            np.array([k[2] for k in keys], dtype=np.int64),
            np.array([k[3] for k in keys], dtype=np.int64),
            np.array(p, dtype=np.float64),
            tuple(k[4] for k in keys),
        )

    @property
    def whole(self) -> np.ndarray:
        """GPUs per pod of the whole-GPU types (one entry per type)."""
        return self.gpus[self.gpus > 0]

    @property
    def whole_p(self) -> np.ndarray:
        return self.p[self.gpus > 0]

    @property
    def share(self) -> np.ndarray:
        """Milli-GPUs per pod of the shared-GPU types."""
        return self.milli[self.gpus == 0]

    @property
    def share_p(self) -> np.ndarray:
        return self.p[self.gpus == 0]

    @property
    def uses_resources(self) -> bool:
        """Whether any type asks for CPU or memory (then a pod's CPU matters to the score)."""
        return bool((self.cpu > 0).any() or (self.mem > 0).any())


PodType = tuple[int, int, int, int]  # (GPUs, share, CPU, memory) of one pod


@dataclass(frozen=True, slots=True)
class ScoringContext:
    """What a scorer may weigh when a cycle makes it: the policy settings, the pods that
    wait and run by type (scavenger work is not among the waiting: it must not steer where
    in-budget work goes), and the Core's memos. `waiting` is worked out only when called."""

    config: PolicyConfig
    waiting: Callable[[], Counter[PodType]]
    running: Counter[PodType]
    memo: Shortcuts


class NodeScorer(ABC):
    """A placement strategy: a vector of scores for putting one pod of `shape` on nodes."""

    name: ClassVar[str] = ""
    # Whether the score depends on the pod's CPU and memory (the shape cache then keeps
    # one entry per full shape instead of one per GPU size).
    uses_resources: bool = False
    # Whether scores change without any node changing (random): never cached.
    volatile: ClassVar[bool] = False

    @abstractmethod
    def scores(
        self, state: ClusterState, shape: Shape, idx: np.ndarray, stats: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores of nodes `idx` for one pod of `shape`; lower is better."""

    @classmethod
    def for_cycle(cls, ctx: ScoringContext) -> NodeScorer:
        """The scorer a cycle uses; one that weighs the workload reads it from `ctx`."""
        return cls()

    def node_stats(self, state: ClusterState, idx: np.ndarray) -> np.ndarray | None:
        """Per-node figures every score needs whatever the pod, one row per node; the shape
        cache keeps them current and hands them to `scores(..., stats=)`. None: no such."""
        return None

    def unaffected_by_resources(
        self, state: ClusterState, shape: Shape, idx: np.ndarray
    ) -> np.ndarray | None:
        """Per node of `idx`: True where the pod's CPU and memory cannot change its score,
        which there is the score of the same GPU request without them. None: not known."""
        return None


class FirstFit(NodeScorer):
    """The first node (in snapshot order) that has room."""

    name = "first-fit"

    def scores(
        self, state: ClusterState, shape: Shape, idx: np.ndarray, stats: np.ndarray | None = None
    ) -> np.ndarray:
        return idx.astype(np.float64)


class BestFit(NodeScorer):
    """The node left with the fewest free GPUs."""

    name = "best-fit"

    def scores(
        self, state: ClusterState, shape: Shape, idx: np.ndarray, stats: np.ndarray | None = None
    ) -> np.ndarray:
        taken = shape.gpus * FULL + shape.milli
        return (state.total_free[idx] - taken).astype(np.float64) + idx * 1e-9


def _shared_slot_free(rows: np.ndarray, milli: int) -> np.ndarray:
    """Free milli of the GPU a shared pod would take on each row (the best-fitting one,
    as ClusterState.allocate picks it); `milli` itself where none fits."""
    candidates = np.where(rows >= milli, rows, _NONE_FITS)
    chosen = candidates.min(axis=1).astype(np.int64)
    return np.where(chosen == _NONE_FITS, milli, chosen)


class GpuPacking(NodeScorer):
    """Pack GPUs: first onto GPUs already in use, then onto free GPUs of nodes already in
    use (fewest free GPUs taken), and only then onto an idle node (the smallest)."""

    name = "gpu-packing"

    def scores(
        self, state: ClusterState, shape: Shape, idx: np.ndarray, stats: np.ndarray | None = None
    ) -> np.ndarray:
        whole = state.whole_free[idx]
        idle = whole == state.usable[idx]
        tie = idx * 1e-9
        if shape.gpus:
            used_node = 1.0 + shape.gpus / 100.0
            return np.where(idle, 2.0 + whole / 100.0, used_node) + tie
        if shape.milli:
            chosen = _shared_slot_free(state.free[idx], shape.milli)
            on_used_gpu = chosen < FULL
            score = np.where(on_used_gpu, chosen / (10.0 * FULL), 1.01)
            return np.where(idle, 2.0 + whole / 100.0, score) + tie
        return tie


class DotProduct(NodeScorer):
    """Tetris-style alignment: the node whose free (CPU, GPU) vector has the smallest dot
    product with the pod's request, both normalised by a large node (128 cores, 8 GPUs)."""

    name = "dot-product"
    uses_resources = True
    CPU_SPEC = 128_000.0
    GPU_SPEC = 8.0 * FULL

    def scores(
        self, state: ClusterState, shape: Shape, idx: np.ndarray, stats: np.ndarray | None = None
    ) -> np.ndarray:
        gpu = (shape.gpus * FULL + shape.milli) / self.GPU_SPEC
        cpu = shape.cpu / self.CPU_SPEC
        free_gpu = state.total_free[idx] / self.GPU_SPEC
        free_cpu = np.maximum(state.cpu_free[idx], 0) / self.CPU_SPEC
        return free_cpu * cpu + free_gpu * gpu + idx * 1e-12


class Random(NodeScorer):
    """Any node with room, drawn from a seeded generator (the same seed, the same draws)."""

    name = "random"
    volatile = True

    def __init__(self, rng: np.random.Generator | None = None, seed: int = 0) -> None:
        self.rng = rng if rng is not None else np.random.default_rng(seed)

    def scores(
        self, state: ClusterState, shape: Shape, idx: np.ndarray, stats: np.ndarray | None = None
    ) -> np.ndarray:
        return np.asarray(self.rng.random(idx.shape[0]))


class Fragmentation(NodeScorer):
    """Least expected fragmentation, then best fit.

    For each pod type of the mix a node's fragment is, as in FGD: all its free GPU
    capacity when the node cannot host one pod of the type (too few GPUs with enough
    free, too little CPU or memory, a GPU model the type may not use), else the free
    capacity on GPUs with less free than one pod of the type needs. A node's expected
    fragmentation is the mix-weighted sum of its fragments.

    The default objective, `residual`, charges a placement per type: for a type the node
    can host now, the fragment the node is left with for that type; for a type it cannot
    host anyway, the capacity the pod takes counts as a gain (it uses what that type
    could not). FGD's objective, `growth`, charges the change of the fragment for every
    type. The two differ in what a node's existing fragment is worth: growth credits a
    pod for landing where fragments already are, residual does not, so it spreads less
    work onto nodes that are already fragmented. On the openb traces residual strands
    fewer GPUs when CPU is short, partly by letting more 8-GPU pods wait (see
    simulator/packing.py, which runs both).
    """

    name = "fragmentation"
    OBJECTIVES: ClassVar[tuple[str, ...]] = ("residual", "growth")

    def __init__(self, mix: WorkloadMix, objective: str = "residual") -> None:
        if objective not in self.OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; use one of {', '.join(self.OBJECTIVES)}")
        self._mix = mix
        self.objective = objective
        need = np.where(mix.gpus > 0, FULL, mix.milli).astype(np.int64)
        self._needs, self._need_of = np.unique(need, return_inverse=True)
        self._whole_only = self._needs.tolist() == [FULL]
        self._count = np.where(mix.gpus > 0, mix.gpus, 1).astype(np.int64)
        self._cpu = mix.cpu.astype(np.int64)
        self._mem = mix.mem.astype(np.int64)
        self._p = mix.p.astype(np.float64)
        self._check_cpu = bool((self._cpu > 0).any())
        self._check_mem = bool((self._mem > 0).any())
        self._cpu_max = int(self._cpu.max(initial=0))
        self._mem_max = int(self._mem.max(initial=0))
        self.uses_resources = self._check_cpu or self._check_mem
        self._models = mix.models if any(mix.models) else ()
        self._access_for: tuple[tuple[str, ...], np.ndarray] | None = None

    @classmethod
    def for_cycle(cls, ctx: ScoringContext) -> NodeScorer:
        """Weighs the pod types of the waiting and the running pods (the top types that
        cover `workloadTypes`); the scorer for the same types is reused, reweighted."""
        shapes = ctx.waiting()
        shapes.update(ctx.running)
        types, p = WorkloadMix.ranked(shapes, ctx.config.workload_types)
        objective = ctx.config.fragmentation_objective
        made = ctx.memo.scorer(types, lambda: cls(WorkloadMix.of(types, p), objective))
        return made.reweighted(p)

    def reweighted(self, p: tuple[float, ...]) -> Fragmentation:
        """The same scorer for the same types in other proportions. Only the final weighted
        sum depends on them, so a caller whose mix keeps its types (a cycle after cycle on
        a busy cluster) reuses what the types alone decide instead of working it out again."""
        other = object.__new__(Fragmentation)
        other.__dict__.update(self.__dict__)  # a shallow copy, without copy.copy's detours
        other._p = np.array(p, dtype=np.float64)
        return other

    @property
    def mix(self) -> WorkloadMix:
        """The mix this scorer weighs, in its current proportions."""
        return replace(self._mix, p=self._p)

    # ---------------------------------------------------------------- pieces

    def _access(self, state: ClusterState, idx: np.ndarray) -> np.ndarray | None:
        """Per node and type: may the type use this node's GPU model (None: all may)."""
        if not self._models:
            return None
        models = tuple(state.models)
        if self._access_for is None or self._access_for[0] != models:
            table = np.array(
                [[not allowed or m in allowed for allowed in self._models] for m in models], dtype=bool
            ).reshape(len(models), len(self._models))
            self._access_for = (models, table)
        return self._access_for[1][state.model_id[idx]]

    def _per_need(self, state: ClusterState, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per node of `idx` and distinct per-GPU need: GPUs with at least that much free,
        and the free capacity on usable GPUs with less."""
        if self._whole_only:
            # Every type takes whole GPUs: the state's own columns say it, no slot is read.
            whole = state.whole_free[idx]
            return whole[:, None], (state.total_free[idx] - whole * FULL)[:, None]
        rows = state.free[idx]
        fits = rows[:, :, None] >= self._needs
        below = np.where(fits, 0, np.maximum(rows, 0)[:, :, None]).sum(axis=1)
        return fits.sum(axis=1), below

    def _host(
        self, fits: np.ndarray, cpu: np.ndarray | None, mem: np.ndarray | None, access: np.ndarray | None
    ) -> np.ndarray:
        """Per node and type: can the node host one pod of the type. `cpu` and `mem` (CPU
        and memory free) are read only when some type asks for them."""
        host = fits[:, self._need_of] >= self._count
        if cpu is not None and self._check_cpu:
            host &= cpu[:, None] >= self._cpu
        if mem is not None and self._check_mem:
            host &= mem[:, None] >= self._mem
        if access is not None:
            host &= access
        return host

    def _frag_by_type(
        self,
        fits: np.ndarray,
        below: np.ndarray,
        total: np.ndarray,
        cpu: np.ndarray | None,
        mem: np.ndarray | None,
        access: np.ndarray | None,
    ) -> np.ndarray:
        host = self._host(fits, cpu, mem, access)
        return np.where(host, below[:, self._need_of], total[:, None])

    def fragmentation(self, state: ClusterState, idx: np.ndarray | None = None) -> np.ndarray:
        """Expected fragmentation of each node as it is now, in milli-GPUs."""
        if idx is None:
            idx = np.arange(state.node_count)
        total = state.total_free[idx]
        fits, below = self._per_need(state, idx)
        cpu, mem = state.cpu_free[idx], state.mem_free[idx]
        return self._frag_by_type(fits, below, total, cpu, mem, self._access(state, idx)) @ self._p

    # ---------------------------------------------------------------- score

    def unaffected_by_resources(self, state: ClusterState, shape: Shape, idx: np.ndarray) -> np.ndarray:
        """Nodes left with enough CPU and memory for every type whatever the pod takes."""
        ok = np.ones(idx.shape[0], dtype=bool)
        if self._check_cpu:
            ok &= state.cpu_free[idx] - shape.cpu >= self._cpu_max
        if self._check_mem:
            ok &= state.mem_free[idx] - shape.mem >= self._mem_max
        return ok

    def node_stats(self, state: ClusterState, idx: np.ndarray) -> np.ndarray:
        """Per node: fitting GPUs per need, free capacity below each need, and per type
        whether the node can host it (0 or 1)."""
        fits, below = self._per_need(state, idx)
        cpu = state.cpu_free[idx] if self._check_cpu else None
        mem = state.mem_free[idx] if self._check_mem else None
        host = self._host(fits, cpu, mem, self._access(state, idx))
        return np.concatenate([fits, below, host], axis=1)

    def scores(
        self, state: ClusterState, shape: Shape, idx: np.ndarray, stats: np.ndarray | None = None
    ) -> np.ndarray:
        if not (shape.gpus or shape.milli or self.uses_resources):
            return idx * 1e-9  # takes nothing any expected pod type needs
        total = state.total_free[idx]
        if stats is None:
            stats = self.node_stats(state, idx)
        r = self._needs.size
        fits, below, host_now = stats[:, :r], stats[:, r : 2 * r], stats[:, 2 * r :] > 0
        if shape.gpus:
            # Whole GPUs come off fully free slots: every need loses that many fitting GPUs.
            taken = shape.gpus * FULL
            fits_after, below_after = fits - shape.gpus, below
        elif shape.milli:
            taken = shape.milli
            chosen = _shared_slot_free(state.free[idx], shape.milli)[:, None]
            rest = chosen - shape.milli
            needs = self._needs
            fits_after = fits - (chosen >= needs) + (rest >= needs)
            below_after = below - np.where(chosen < needs, chosen, 0) + np.where(rest < needs, rest, 0)
        else:
            taken = 0
            fits_after, below_after = fits, below
        left = total - taken
        # CPU and memory left only where a type asks for them (most mixes ask for GPUs only).
        cpu = state.cpu_free[idx] - shape.cpu if self._check_cpu else None
        mem = state.mem_free[idx] - shape.mem if self._check_mem else None
        access = self._access(state, idx)
        after = self._frag_by_type(fits_after, below_after, left, cpu, mem, access)
        if self.objective == "growth":
            before = np.where(host_now, below[:, self._need_of], total[:, None])
            score = (after - before) @ self._p
        else:
            # A type the node cannot host now cannot be hosted after either: its fragment
            # shrinks by exactly what the pod takes.
            score = np.where(host_now, after, -taken) @ self._p
        # Ties go to the node left fullest (best fit), then to the lower index.
        return score + left * 1e-6 + idx * 1e-12


SCORERS: dict[str, type[NodeScorer]] = {
    FirstFit.name: FirstFit,
    BestFit.name: BestFit,
    Fragmentation.name: Fragmentation,
    GpuPacking.name: GpuPacking,
    DotProduct.name: DotProduct,
    Random.name: Random,
}
