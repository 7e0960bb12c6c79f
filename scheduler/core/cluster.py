"""The cluster as arrays: free milli-GPUs per GPU slot, CPU, memory, pods, every other
resource (ephemeral-storage, hugepages, extended resources), topology domain ids.

One cycle builds this once from the snapshot and then changes it in place as it places
and evicts; a journal lets a trial placement be undone. Every node change is logged so
per-shape caches (capacity, fragmentation scores) recompute only the nodes that moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from scheduler.core import resources
from scheduler.core.config import PolicyConfig
from scheduler.core.model import MILLI_PER_GPU, Extras, Node

if TYPE_CHECKING:
    from scheduler.core.podindex import PodIndex

FULL = MILLI_PER_GPU
UNUSABLE = -1
_BIG = np.iinfo(np.int64).max // 4


@dataclass(frozen=True, slots=True)
class Shape:
    """What one pod takes from a node; pods with equal shapes are interchangeable."""

    gpus: int
    milli: int
    cpu: int
    mem: int
    extras: Extras = ()  # every other resource it asks for (most pods: none)

    @property
    def gpu_amount(self) -> float:
        return self.gpus + self.milli / FULL


@dataclass(frozen=True, slots=True)
class Held:
    """GPU slots and resources one placed pod holds on a node (for release and undo)."""

    node: int
    slots: tuple[int, ...]
    milli_per_slot: int
    cpu: int
    mem: int
    anonymous_whole: int = 0  # whole GPUs of a running pod whose slot indices are unknown
    extras: resources.Columns = ()  # its other resources, by column of ClusterState.extra_free


_TOPOLOGY_MEMO: dict[tuple[int, tuple[str, ...]], tuple] = {}


def _topology(nodes: tuple[Node, ...], levels: tuple[str, ...]) -> tuple[list[np.ndarray], list[list[str]]]:
    """Domain ids per level. Levels form a hierarchy: a domain is the path of labels from
    the widest level down, so a narrower domain always lies inside one domain of every
    wider level. A node without the label is a domain of its own at that level.

    Remembered for the last few node tuples (by identity), since a simulator or daemon
    passes the same tuple cycle after cycle while no node changes."""
    key = (id(nodes), levels)
    hit = _TOPOLOGY_MEMO.get(key)
    if hit is not None and hit[0] is nodes:
        return hit[1], hit[2]
    n = len(nodes)
    domains: list[np.ndarray] = []
    names: list[list[str]] = []
    path = [""] * n
    for label in levels:
        for i, node in enumerate(nodes):
            value = node.labels.get(label)
            if value is None and label == "kubernetes.io/hostname":
                value = node.name
            part = value if value is not None else f"(unlabelled:{node.name})"
            path[i] = f"{path[i]}/{part}"
        uniq, inverse = np.unique(np.array(path, dtype=object), return_inverse=True)
        domains.append(inverse.astype(np.int64).reshape(n))
        names.append([str(u).rsplit("/", 1)[-1] for u in uniq])
    if len(_TOPOLOGY_MEMO) >= 4:
        _TOPOLOGY_MEMO.pop(next(iter(_TOPOLOGY_MEMO)))
    _TOPOLOGY_MEMO[key] = (nodes, domains, names)
    return domains, names


class ClusterState:
    """Mutable per-cycle view of free capacity. Index order is the snapshot's node order."""

    # The pods count and every other resource (resources.py): set by resources.load_columns.
    pods_limited: bool  # whether any node limits its pods (a replay's nodes do not)
    pods_free: np.ndarray
    extra_names: tuple[str, ...]
    extra_col: dict[str, int]
    extra_free: np.ndarray  # nodes x extra_names

    def __init__(self, nodes: Sequence[Node], config: PolicyConfig) -> None:
        n = len(nodes)
        self.nodes = tuple(nodes)  # for the node filters, which read labels and taints
        self.names = [node.name for node in nodes]
        self.index = {name: i for i, name in enumerate(self.names)}
        width = max([node.gpus for node in nodes] + [1])
        counts = np.array([node.gpus for node in nodes], dtype=np.int64).reshape(n)
        self.free = np.where(np.arange(width)[None, :] < counts[:, None], FULL, UNUSABLE).astype(np.int32)
        for i, node in enumerate(nodes):
            if node.unhealthy_gpus:
                self.free[i, sorted(node.unhealthy_gpus)] = UNUSABLE
        self.usable = (self.free >= 0).sum(axis=1).astype(np.int64)
        self.cpu_free = np.array([node.cpu_milli for node in nodes], dtype=np.int64).reshape(n)
        self.mem_free = np.array([node.memory_mib for node in nodes], dtype=np.int64).reshape(n)
        self.schedulable = np.array([node.schedulable for node in nodes], dtype=bool).reshape(n)
        # Cordoned nodes stay open to the pods that tolerate the cordon (the node-unschedulable
        # filter keeps every other pod off), but give no GPUs to the teams' fair shares.
        self.cordoned = np.array([node.cordoned for node in nodes], dtype=bool).reshape(n)
        self.open = self.schedulable | self.cordoned
        # Nodes never change in a state: counted once.
        self._healthy: float = int(self.usable[self.schedulable & ~self.cordoned].sum())
        resources.load_columns(self, nodes)  # pods counts and other resources
        self.models = sorted({node.gpu_model for node in nodes})
        model_index = {m: i for i, m in enumerate(self.models)}
        self.model_id = np.array([model_index[node.gpu_model] for node in nodes], dtype=np.int32)
        self.anon_mask = np.zeros(self.free.shape, dtype=bool)
        self.levels = config.topology_levels
        self.domains, self.domain_names = _topology(tuple(nodes), self.levels)
        self.overcommitted = np.zeros(n, dtype=bool)
        self.placeable = self.open.copy()  # open and not overcommitted
        self.change_log: list[int] = []
        self.journal: list[tuple[int, Held]] = []
        # The placed pods' labels, ports and anti-affinity (podindex.py), set by a cycle
        # that needs them; the pod-dependent filters read it.
        self.pod_index: PodIndex | None = None
        self._refresh(np.arange(n))

    def copy(self) -> ClusterState:
        """A state with the same nodes and the same free capacity, free to change on its own.

        The node-derived parts that never change in a cycle (names, topology, models) are
        shared; what placement and release change is copied."""
        other = object.__new__(ClusterState)
        shared: tuple[str, ...] = (
            "nodes",
            "names",
            "index",
            "usable",
            "schedulable",
            "cordoned",
            "open",
            "models",
            "model_id",
            "levels",
            "extra_names",
            "extra_col",
            "pods_limited",
        )
        shared += ("placeable",)
        shared += ("_healthy", "overcommitted")  # both set by load_running only, which makes its own
        for name in shared:
            setattr(other, name, getattr(self, name))
        other.domains, other.domain_names = self.domains, self.domain_names
        mutable: tuple[str, ...] = ("free", "cpu_free", "mem_free", "anon_mask", "whole_free", "total_free")
        mutable += ("pods_free", "extra_free")
        for name in mutable:
            setattr(other, name, getattr(self, name).copy())
        other.change_log = []
        other.journal = []
        other.pod_index = None
        return other

    # ------------------------------------------------------------ derived columns

    def _refresh(self, idx: np.ndarray) -> None:
        rows = self.free[idx]
        if not hasattr(self, "whole_free"):
            n = len(self.names)
            self.whole_free = np.zeros(n, dtype=np.int64)
            self.total_free = np.zeros(n, dtype=np.int64)
        self.whole_free[idx] = (rows == FULL).sum(axis=1)
        self.total_free[idx] = np.where(rows > 0, rows, 0).sum(axis=1)

    @property
    def node_count(self) -> int:
        return len(self.names)

    def healthy_gpus(self) -> float:
        """GPUs on schedulable nodes: healthy whole GPUs, and MIG slices as GPU fractions."""
        return self._healthy

    # ------------------------------------------------------------ loading running pods

    def load_running(
        self,
        node: np.ndarray,
        gpus: np.ndarray,
        milli: np.ndarray,
        cpu: np.ndarray,
        mem: np.ndarray,
        indices: dict[int, tuple[int, ...]],
        extras: dict[int, Extras] | None = None,
    ) -> dict[int, Held]:
        """Account for bound pods, given as columns (one row per pod), with the other
        resources of the few that ask for any in `extras` (by row).

        Whole-GPU pods without known slot indices are counted per node in one vector
        step (the device plugin, not the scheduler, picks their GPUs). Pods with known
        indices and shared-GPU pods take specific slots; what they hold is returned by
        row. Anything that does not fit (a GPU turned unhealthy under a pod) marks the
        node overcommitted, and nothing more is placed there.
        """
        n = self.node_count
        held: dict[int, Held] = {}
        if node.size == 0:
            return held
        self.overcommitted = self.overcommitted.copy()  # shared with the state it was copied from
        self.cpu_free -= np.bincount(node, weights=cpu, minlength=n).astype(np.int64)
        self.mem_free -= np.bincount(node, weights=mem, minlength=n).astype(np.int64)
        if self.pods_limited:  # every bound pod takes one of its node's pods, whatever it asks
            self.pods_free = self.pods_free - np.bincount(node, minlength=n)
        taken_extras = resources.take_running(self, node, extras) if extras else {}
        anon = gpus > 0
        if indices:
            anon[list(indices)] = False
        for row, slots in indices.items():
            i = int(node[row])
            amount = int(milli[row]) or FULL
            slots_taken: list[int] = []
            for s in slots:
                if 0 <= s < self.free.shape[1] and self.free[i, s] >= amount:
                    self.free[i, s] -= amount
                    slots_taken.append(s)
                else:  # an unhealthy or overbooked GPU: hold nothing there, trust the node less
                    self.overcommitted[i] = True
            held[row] = Held(i, tuple(slots_taken), amount, int(cpu[row]), int(mem[row]))
        taken: np.ndarray | None = None
        if anon.any():
            want = np.bincount(node[anon], weights=gpus[anon], minlength=n).astype(np.int64)
            avail = self.free == FULL
            rank = np.cumsum(avail, axis=1)
            take = avail & (rank <= want[:, None])
            self.free[take] = 0
            self.anon_mask |= take
            taken = take.sum(axis=1)
            self.overcommitted |= taken < want
        shared = np.nonzero((milli > 0) & (gpus == 0))[0]
        if not held and shared.size == 0:
            # Whole GPUs only, none at known slots: each taken slot was FULL, so the derived
            # columns drop by the count alone (no pass over every node's slots).
            if taken is not None:
                self.whole_free -= taken
                self.total_free -= taken * FULL
            self._mark_overcommitted()
            self._hold_extras(held, taken_extras, node, gpus, cpu, mem)
            return held
        shared = shared[np.argsort(-milli[shared], kind="stable")]  # large shares first pack best
        for shared_row in shared:
            row = int(shared_row)
            if row in indices:
                continue
            i = int(node[row])
            slot = self._best_shared_slot(i, int(milli[row]))
            if slot is None:
                self.overcommitted[i] = True
                continue
            self.free[i, slot] -= int(milli[row])
            held[row] = Held(i, (slot,), int(milli[row]), int(cpu[row]), int(mem[row]))
        self._mark_overcommitted()
        self._refresh(np.arange(n))
        self._hold_extras(held, taken_extras, node, gpus, cpu, mem)
        return held

    def _mark_overcommitted(self) -> None:
        self.overcommitted |= (self.cpu_free < 0) | (self.mem_free < 0)
        over = resources.overcommitted(self)
        if over is not None:
            self.overcommitted |= over
        self.placeable = self.open & ~self.overcommitted

    def _hold_extras(
        self,
        held: dict[int, Held],
        taken: dict[int, resources.Columns],
        node: np.ndarray,
        gpus: np.ndarray,
        cpu: np.ndarray,
        mem: np.ndarray,
    ) -> None:
        """What a pod with other resources holds includes them, for release and undo."""
        for row, cols in taken.items():
            h = held.get(row)
            if h is None:
                h = Held(int(node[row]), (), 0, int(cpu[row]), int(mem[row]), int(gpus[row]))
            held[row] = replace(h, extras=cols)

    def shift_running(self, changes: list[tuple[int, int, int, int, int, int, bool]]) -> bool:
        """Pods that came (+1) or went (-1), as (sign, node, GPUs, share, CPU, memory, known
        slots or other resources), all of them whole-GPU pods at no known slot (or with no
        GPU) that ask for nothing but CPU and memory besides: the state
        becomes what `load_running` of the pods now running gives, provided it was that for
        the pods before and no node is or gets overcommitted. Such pods hold the first free
        GPUs of their node, so one that comes takes the next free ones and one that goes
        gives back the last held ones. False (the state is then of no use) for anything
        else: the caller loads afresh."""
        if any(c[3] or c[6] for c in changes) or self.overcommitted.any():
            return False
        for sign, i, gpus, _, cpu, mem, _ in sorted(changes):  # those that went first
            row = self.free[i].tolist()
            if gpus:
                anon = self.anon_mask[i]
                if sign > 0:
                    slots = [s for s, v in enumerate(row) if v == FULL][:gpus]
                else:
                    slots = [s for s in range(len(row)) if anon[s]][-gpus:]
                if len(slots) < gpus:
                    return False
                for s in slots:
                    row[s], anon[s] = (0, True) if sign > 0 else (FULL, False)
                self.free[i] = row
                self.whole_free[i] = row.count(FULL)
                self.total_free[i] = sum(v for v in row if v > 0)
            self.cpu_free[i] -= sign * cpu
            self.mem_free[i] -= sign * mem
            if self.cpu_free[i] < 0 or self.mem_free[i] < 0:
                return False
            if self.pods_limited:
                self.pods_free[i] -= sign
                if self.pods_free[i] < 0:
                    return False
        return True

    # ------------------------------------------------------------ place / release

    def _best_shared_slot(self, i: int, milli: int) -> int | None:
        row = self.free[i]
        fits = np.nonzero(row >= milli)[0]
        if fits.size == 0:
            return None
        return int(fits[np.argmin(row[fits])])

    def allocate(self, i: int, shape: Shape) -> Held:
        """Take one pod of `shape` on node `i`; the caller checked it fits."""
        if shape.gpus:
            slots = tuple(int(s) for s in np.nonzero(self.free[i] == FULL)[0][: shape.gpus])
            amount = FULL
        elif shape.milli:
            slot = self._best_shared_slot(i, shape.milli)
            slots = () if slot is None else (slot,)
            amount = shape.milli
        else:
            slots, amount = (), 0
        cols = resources.request_columns(self, shape.extras) if shape.extras else ()
        assert cols is not None  # the caller checked it fits, so the node has every resource
        held = Held(i, slots, amount, shape.cpu, shape.mem, 0, cols)
        self._apply(held, -1)
        self.journal.append((-1, held))
        return held

    def release(self, held: Held) -> None:
        self._apply(held, +1)
        self.journal.append((+1, held))

    def retake(self, held: Held) -> None:
        """Take back exactly what `held` had (undoing a trial release)."""
        self._apply(held, -1)
        self.journal.append((-1, held))

    def _apply(self, held: Held, sign: int) -> None:
        # Plain Python on one short row: cheaper than numpy calls at this size.
        i = held.node
        row = self.free[i].tolist()
        for s in held.slots:
            row[s] += sign * held.milli_per_slot
        if held.anonymous_whole:
            anon = self.anon_mask[i]
            k = held.anonymous_whole
            for s, value in enumerate(row):
                if k == 0:
                    break
                if sign > 0 and anon[s]:
                    row[s], anon[s] = FULL, False
                    k -= 1
                elif sign < 0 and value == FULL:
                    row[s], anon[s] = 0, True
                    k -= 1
        self.free[i] = row
        self.cpu_free[i] += sign * held.cpu
        self.mem_free[i] += sign * held.mem
        if self.pods_limited:
            self.pods_free[i] += sign  # one pod
        for k, amount in held.extras:
            self.extra_free[i, k] += sign * amount
        self.whole_free[i] = row.count(FULL)
        self.total_free[i] = sum(v for v in row if v > 0)
        self.change_log.append(i)

    def mark(self) -> int:
        return len(self.journal)

    def rollback(self, mark: int) -> None:
        """Undo every allocate and release since `mark`."""
        while len(self.journal) > mark:
            sign, held = self.journal.pop()
            self._apply(held, -sign)

    def commit(self) -> None:
        """Forget the journal (the changes stay)."""
        self.journal.clear()

    # ------------------------------------------------------------ capacity

    def gpu_capacity(self, shape: Shape, idx: np.ndarray | None = None) -> np.ndarray:
        """How many pods of `shape` fit on each node by GPUs alone (its CPU and memory are
        not read)."""
        if idx is None:
            whole, free = self.whole_free, self.free
        else:
            whole, free = self.whole_free[idx], self.free[idx]
        if shape.gpus:
            return whole // shape.gpus
        if shape.milli:
            return (np.where(free > 0, free, 0) // shape.milli).sum(axis=1)
        return np.full(whole.shape[0], _BIG, dtype=np.int64)

    def count_capacity(self, shape: Shape, idx: np.ndarray | None = None) -> np.ndarray:
        """How many pods of `shape` fit on each node by its GPUs, its pods count and every
        other resource (CPU and memory are not read), as NodeResourcesFit counts them: a
        resource the node does not advertise at all fits no pod that asks for it."""
        return resources.fit(self, shape, self.gpu_capacity(shape, idx), idx)

    def capacity(self, shape: Shape, model_ok: np.ndarray | None = None) -> np.ndarray:
        """Pods of `shape` each node can take: GPUs, CPU, memory, pods, every other
        resource, schedulable, model."""
        cap = self.count_capacity(shape)
        if shape.cpu:
            cap = np.minimum(cap, np.maximum(self.cpu_free, 0) // shape.cpu)
        if shape.mem:
            cap = np.minimum(cap, np.maximum(self.mem_free, 0) // shape.mem)
        ok = self.placeable
        if model_ok is not None:
            ok = ok & model_ok
        return np.where(ok, cap, 0)

    def model_mask(self, models: frozenset[str]) -> np.ndarray | None:
        """Nodes whose GPU model is allowed; None when any model will do."""
        if not models:
            return None
        ids = [i for i, m in enumerate(self.models) if m in models]
        return np.isin(self.model_id, ids)
