"""Reading a snapshot's gangs into columns, without a Python step per running pod where avoidable.

A large cluster has far more running pods than pending ones (KAI's reference scale is
140,000 running and 5,000 pending), so the running side is read into arrays: one row
per bound pod on a known node, gangs as contiguous row ranges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from scheduler.core.model import Gang, Pod


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
    pod_node = np.fromiter((node_index[p.node] for p in bound_pods), dtype=np.int64, count=n_rows)
    pod_gpus = _col(bound_pods, "gpus", np.int64, n_rows)
    pod_milli = _col(bound_pods, "gpu_milli", np.int64, n_rows)
    pod_cpu = _col(bound_pods, "cpu_milli", np.int64, n_rows)
    pod_mem = _col(bound_pods, "memory_mib", np.int64, n_rows)
    pod_start = np.fromiter(
        (now if p.start_s is None else p.start_s for p in bound_pods),
        dtype=np.float64,
        count=n_rows,
    )
    indices = {row: p.gpu_indices for row, p in enumerate(bound_pods) if p.gpu_indices}
    amount = pod_gpus + pod_milli / 1000.0
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
    )
    return table, waiting
