"""Reading a snapshot's gangs into columns, without a Python step per running pod where avoidable.

A large cluster has far more running pods than pending ones (KAI's reference scale is
140,000 running and 5,000 pending), so the running side is read into arrays: one row
per bound pod on a known node, gangs as contiguous row ranges.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from scheduler.core.model import Extras, Gang, Pod


@dataclass(slots=True)
class RunningTable:
    """Running gangs (at least one bound pod) and their bound pods, as arrays."""

    gangs: list[Gang]
    team: np.ndarray  # team index, or the sink index for gangs without a team
    priority: np.ndarray
    gpus: np.ndarray  # GPUs held, shares counted as fractions
    cpu: np.ndarray
    mem: np.ndarray
    start: np.ndarray  # earliest start of a bound pod
    min_runtime: np.ndarray  # NaN: use the team's or the policy's default
    checkpoint: np.ndarray  # NaN: does not checkpoint
    evictable: np.ndarray
    offsets: np.ndarray  # rows of gang g are offsets[g]:offsets[g + 1]
    pod_node: np.ndarray
    pod_gpus: np.ndarray
    pod_milli: np.ndarray
    pod_cpu: np.ndarray
    pod_mem: np.ndarray
    pod_names: list[str]
    indices: dict[int, tuple[int, ...]]  # known GPU slots of a pod, by row
    extras: dict[int, Extras]  # other resources of the few pods that ask for any, by row

    def rows(self, g: int) -> range:
        return range(int(self.offsets[g]), int(self.offsets[g + 1]))


def _col(items: Sequence, name: str, dtype: type, count: int) -> np.ndarray:
    return np.fromiter(map(attrgetter(name), items), dtype=dtype, count=count)


def read_running(
    gangs: Sequence[Gang],
    team_index: dict[str, int],
    sink: int,
    node_index: dict[str, int],
    now: float,
) -> tuple[RunningTable, list[tuple[int, Gang]]]:
    """Split gangs into the running table and the list of (position, gang) with pending pods."""
    running: list[Gang] = []
    waiting: list[tuple[int, Gang]] = []
    bound_pods: list[Pod] = []
    sizes: list[int] = []
    for pos, gang in enumerate(gangs):
        pods = gang.pods
        if len(pods) == 1:
            pod = pods[0]
            if pod.node is None:
                waiting.append((pos, gang))
            elif pod.node in node_index:
                running.append(gang)
                bound_pods.append(pod)
                sizes.append(1)
            else:
                running.append(gang)
                sizes.append(0)
            continue
        else:
            bound = [p for p in pods if p.node is not None]
            if len(bound) < len(pods):
                waiting.append((pos, gang))
            if not bound:
                continue
        known = [p for p in bound if p.node in node_index]
        running.append(gang)
        bound_pods.extend(known)
        sizes.append(len(known))
    n_rows = len(bound_pods)
    n = len(running)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.array(sizes, dtype=np.int64), out=offsets[1:])
    gang_of_row = np.repeat(np.arange(n), np.array(sizes, dtype=np.int64))
    # Every pod here is bound (`or ""` only tells the type checker so).
    pod_node = np.fromiter((node_index[p.node or ""] for p in bound_pods), dtype=np.int64, count=n_rows)
    pod_gpus = _col(bound_pods, "gpus", np.int64, n_rows)
    pod_milli = _col(bound_pods, "gpu_milli", np.int64, n_rows)
    pod_cpu = _col(bound_pods, "cpu_milli", np.int64, n_rows)
    pod_mem = _col(bound_pods, "memory_mib", np.int64, n_rows)
    pod_start = np.fromiter(
        (now if p.start_s is None else p.start_s for p in bound_pods),
        dtype=np.float64,
        count=n_rows,
    )
    special = [(row, p) for row, p in enumerate(bound_pods) if p.gpu_indices or p.extras]
    indices = {row: p.gpu_indices for row, p in special if p.gpu_indices}
    extras = {row: p.extras for row, p in special if p.extras}
    amount = pod_gpus + pod_milli / 1000.0
    for row, p in special:
        if p.mig_milli:  # MIG slices are charged as the GPU fraction they are (mig.py)
            amount[row] += p.mig_milli / 1000.0
    start = np.full(n, now)
    np.minimum.at(start, gang_of_row, pod_start)
    table = RunningTable(
        gangs=running,
        team=np.fromiter((team_index.get(g.team, sink) for g in running), dtype=np.int64, count=n),
        priority=_col(running, "priority", np.int64, n),
        gpus=np.bincount(gang_of_row, weights=amount, minlength=n),
        cpu=np.bincount(gang_of_row, weights=pod_cpu, minlength=n),
        mem=np.bincount(gang_of_row, weights=pod_mem, minlength=n),
        start=start,
        min_runtime=np.fromiter(
            (np.nan if g.min_runtime_s is None else g.min_runtime_s for g in running),
            dtype=np.float64,
            count=n,
        ),
        checkpoint=np.fromiter(
            (np.nan if g.checkpoint_s is None else g.checkpoint_s for g in running),
            dtype=np.float64,
            count=n,
        ),
        evictable=_col(running, "evictable", bool, n),
        offsets=offsets,
        pod_node=pod_node,
        pod_gpus=pod_gpus,
        pod_milli=pod_milli,
        pod_cpu=pod_cpu,
        pod_mem=pod_mem,
        pod_names=[p.name for p in bound_pods],
        indices=indices,
        extras=extras,
    )
    return table, waiting


def _known_rows(gang: Gang, node_index: dict[str, int]) -> list[Pod] | None:
    """The gang's bound pods on known nodes (the table's rows), or None when no pod is bound."""
    pods = gang.pods
    if len(pods) == 1:
        pod = pods[0]
        if pod.node is None:
            return None
        return [pod] if pod.node in node_index else []
    bound = [p for p in pods if p.node is not None]
    if not bound:
        return None
    return [p for p in bound if p.node in node_index]


_GANG_COLS = (
    "team",
    "priority",
    "gpus",
    "cpu",
    "mem",
    "start_known",
    "min_runtime",
    "checkpoint",
    "evictable",
)
_POD_COLS = ("pod_node", "pod_gpus", "pod_milli", "pod_cpu", "pod_mem", "pod_indexed", "pod_extra")
_SHAPE_COLS = ("pod_gpus", "pod_milli", "pod_cpu", "pod_mem")  # a pod's type, as the mix counts it
_DTYPES = {
    "team": np.int64,
    "priority": np.int64,
    "evictable": bool,
    "pod_indexed": bool,
    "pod_extra": bool,
    "pod_node": np.int64,
    "pod_gpus": np.int64,
    "pod_milli": np.int64,
    "pod_cpu": np.int64,
    "pod_mem": np.int64,
}


class _Columns:
    """Numpy columns of equal length that grow by doubling and lose rows in place, so a
    change costs a slice copy, not a new array per column."""

    def __init__(self, names: Sequence[str]) -> None:
        self.n = 0
        self.cols = {name: np.zeros(8, dtype=_DTYPES.get(name, np.float64)) for name in names}

    def replace(self, arrays: dict[str, np.ndarray], n: int) -> None:
        """Adopts `arrays` (no copy when the dtype already fits); the next append grows them."""
        self.n = n
        for name, col in self.cols.items():
            self.cols[name] = np.asarray(arrays[name], dtype=col.dtype)

    def append(self, values: dict[str, Sequence]) -> None:
        k = len(next(iter(values.values())))
        if self.n + k > len(next(iter(self.cols.values()))):
            for name, col in self.cols.items():
                grown = np.zeros(max(8, 2 * (self.n + k)), dtype=col.dtype)
                grown[: self.n] = col[: self.n]
                self.cols[name] = grown
        if k == 1:  # one row (a gang, or a one-pod gang's pod): item stores cost far less
            for name, vals in values.items():
                self.cols[name][self.n] = vals[0]
        else:
            for name, vals in values.items():
                self.cols[name][self.n : self.n + k] = vals
        self.n += k

    def delete(self, start: int, stop: int) -> None:
        k = stop - start
        for col in self.cols.values():
            col[start : self.n - k] = col[stop : self.n]
        self.n -= k

    def get(self, name: str) -> np.ndarray:
        """The live column: a view, valid until the next change."""
        return self.cols[name][: self.n]


class RunningStore:
    """The running table kept current gang by gang, in the order gangs were added.

    `table(now)` gives the same RunningTable that `read_running` builds from the same
    gangs in the same order, without reading every running gang again each cycle."""

    def __init__(self, team_index: dict[str, int], sink: int, node_index: dict[str, int]) -> None:
        self.team_index, self.sink, self.node_index = team_index, sink, node_index
        self.ids: list[str] = []
        self.gangs: list[Gang] = []
        self._g = _Columns((*_GANG_COLS, "sizes"))
        self._p = _Columns(_POD_COLS)
        self.pod_names: list[str] = []
        self.pod_slots: list[tuple[int, ...]] = []
        self.pod_extras: list[Extras] = []
        # Running GPU pods by (GPUs, share, CPU, memory): the fragmentation scorer weighs
        # them every cycle, and counting as pods come and go is cheaper than recounting.
        self.gpu_pod_shapes: Counter[tuple[int, int, int, int]] = Counter()
        # Bumped by every change: what a cycle derived from the table holds while it is equal.
        self.version = 0
        # Bumped when a pod may have left (a gang removed, or all read again): while it is
        # equal, pods have only come, and no node has more room than it had.
        self.removals = 0
        # Pods that came (+1) or went (-1) since the reader last took them, as (sign, node,
        # GPUs, share, CPU, memory, known slots or other resources); None: read everything
        # again (see reading.read_running).
        self.changes: list[tuple[int, int, int, int, int, int, bool]] | None = None

    def _count_shapes(self, shapes: Iterable[tuple[int, int, int, int]], sign: int) -> None:
        counts = self.gpu_pod_shapes
        for shape in shapes:
            if shape[0] or shape[1]:
                left = counts[shape] + sign
                if left:
                    counts[shape] = left
                else:
                    del counts[shape]

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, gangs: Sequence[Gang]) -> list[tuple[int, Gang]]:
        """Replace the contents with `gangs` read all at once (far cheaper than adding them
        one by one); returns the (position, gang) of those with pending pods."""
        self.version += 1
        self.removals += 1
        self.changes = None
        table, waiting = read_running(gangs, self.team_index, self.sink, self.node_index, np.inf)
        self.ids = [g.id for g in table.gangs]
        self.gangs = list(table.gangs)
        cols = {name: getattr(table, name) for name in _GANG_COLS if name != "start_known"}
        cols["start_known"] = table.start
        cols["sizes"] = np.diff(table.offsets)
        self._g.replace(cols, len(self.ids))
        pods = {name: getattr(table, name) for name in _POD_COLS if name not in ("pod_indexed", "pod_extra")}
        indexed = np.zeros(len(table.pod_names), dtype=bool)
        indexed[list(table.indices)] = True
        pods["pod_indexed"] = indexed
        extra = np.zeros(len(table.pod_names), dtype=bool)
        extra[list(table.extras)] = True
        pods["pod_extra"] = extra
        self._p.replace(pods, len(table.pod_names))
        self.pod_names = list(table.pod_names)
        self.pod_slots = [()] * len(self.pod_names)
        for row, slots in table.indices.items():
            self.pod_slots[row] = slots
        self.pod_extras = [()] * len(self.pod_names)
        for row, asked in table.extras.items():
            self.pod_extras[row] = asked
        self.gpu_pod_shapes = Counter()
        shape_cols = (table.pod_gpus, table.pod_milli, table.pod_cpu, table.pod_mem)
        self._count_shapes(zip(*(c.tolist() for c in shape_cols), strict=True), +1)
        return waiting

    def add(self, gang: Gang) -> bool:
        """Append `gang` if it has a bound pod; False (nothing added) when it has none."""
        rows = _known_rows(gang, self.node_index)
        if rows is None:
            return False
        self.version += 1
        amount = 0.0
        cpu = mem = 0.0
        known = np.inf
        for p in rows:
            amount += p.gpus + p.gpu_milli / 1000.0 + p.mig_milli / 1000.0  # as read_running sums it
            cpu += p.cpu_milli
            mem += p.memory_mib
            if p.start_s is not None and p.start_s < known:
                known = p.start_s
        self._g.append(
            {
                "team": (self.team_index.get(gang.team, self.sink),),
                "priority": (gang.priority,),
                "gpus": (amount,),
                "cpu": (cpu,),
                "mem": (mem,),
                "start_known": (known,),
                "min_runtime": (np.nan if gang.min_runtime_s is None else gang.min_runtime_s,),
                "checkpoint": (np.nan if gang.checkpoint_s is None else gang.checkpoint_s,),
                "evictable": (gang.evictable,),
                "sizes": (len(rows),),
            }
        )
        if rows:
            nodes = [self.node_index[p.node or ""] for p in rows]  # known rows are bound
            if self.changes is not None:
                self.changes.extend(
                    (+1, i, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib, bool(p.gpu_indices or p.extras))
                    for i, p in zip(nodes, rows, strict=True)
                )
            self._p.append(
                {
                    "pod_node": nodes,
                    "pod_gpus": [p.gpus for p in rows],
                    "pod_milli": [p.gpu_milli for p in rows],
                    "pod_cpu": [p.cpu_milli for p in rows],
                    "pod_mem": [p.memory_mib for p in rows],
                    "pod_indexed": [bool(p.gpu_indices) for p in rows],
                    "pod_extra": [bool(p.extras) for p in rows],
                }
            )
            self.pod_names.extend(p.name for p in rows)
            self.pod_slots.extend(p.gpu_indices for p in rows)
            self.pod_extras.extend(p.extras for p in rows)
            self._count_shapes(((p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib) for p in rows), +1)
        self.ids.append(gang.id)
        self.gangs.append(gang)
        return True

    def remove(self, gang_id: str) -> None:
        g = self.ids.index(gang_id)
        self.version += 1
        self.removals += 1
        sizes = self._g.get("sizes")
        start = int(sizes[:g].sum())
        stop = start + int(sizes[g])
        self._g.delete(g, g + 1)
        if stop > start:
            cols = [self._p.get(name)[start:stop].tolist() for name in _SHAPE_COLS]
            if self.changes is not None:
                nodes = self._p.get("pod_node")[start:stop].tolist()
                indexed = (
                    self._p.get("pod_indexed")[start:stop] | self._p.get("pod_extra")[start:stop]
                ).tolist()
                shapes = zip(*cols, strict=True)
                self.changes.extend(
                    (-1, i, *shape, x) for i, shape, x in zip(nodes, shapes, indexed, strict=True)
                )
            self._count_shapes(zip(*cols, strict=True), -1)
            self._p.delete(start, stop)
            del self.pod_names[start:stop], self.pod_slots[start:stop], self.pod_extras[start:stop]
        del self.ids[g], self.gangs[g]

    def table(self) -> RunningTable:
        """The table as it stands (`start` is infinite where no pod's start is known). Its
        columns are views into the store, valid until the next change (see `version`): a
        cycle reads them, and the Core changes only between cycles."""
        g, p = self._g, self._p
        offsets = np.zeros(len(self.ids) + 1, dtype=np.int64)
        np.cumsum(g.get("sizes"), out=offsets[1:])
        indexed = np.nonzero(p.get("pod_indexed"))[0].tolist()
        extra = np.nonzero(p.get("pod_extra"))[0].tolist()
        return RunningTable(
            gangs=self.gangs,
            team=g.get("team"),
            priority=g.get("priority"),
            gpus=g.get("gpus"),
            cpu=g.get("cpu"),
            mem=g.get("mem"),
            start=g.get("start_known"),
            min_runtime=g.get("min_runtime"),
            checkpoint=g.get("checkpoint"),
            evictable=g.get("evictable"),
            offsets=offsets,
            pod_node=p.get("pod_node"),
            pod_gpus=p.get("pod_gpus"),
            pod_milli=p.get("pod_milli"),
            pod_cpu=p.get("pod_cpu"),
            pod_mem=p.get("pod_mem"),
            pod_names=self.pod_names,
            indices={row: self.pod_slots[row] for row in indexed},
            extras={row: self.pod_extras[row] for row in extra},
        )
