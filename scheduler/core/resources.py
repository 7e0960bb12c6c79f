"""Every resource beyond GPUs, CPU and memory, as kube-scheduler's NodeResourcesFit counts it.

A node advertises how many pods it takes and any other resource (ephemeral-storage,
hugepages-*, rdma/ib, nvidia.com/mig-*, ...); the cluster state keeps them as columns
(`pods_free`, `extra_free`, one column per resource name any node has). A pod takes one
of its node's pods whatever it asks, and its other requests from their columns; a request
of a resource the node does not advertise at all fits nowhere there. A cluster without
any of them (a trace replay) has empty columns, and placement never reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from scheduler.core import mig
from scheduler.core.model import MILLI_PER_GPU, Extras, Node

if TYPE_CHECKING:
    from scheduler.core.cluster import ClusterState, Shape

GPU_RESOURCE = "nvidia.com/gpu"
UNLIMITED = np.iinfo(np.int64).max // 4
Columns = tuple[tuple[int, int], ...]  # (column of ClusterState.extra_free, amount)


def load_columns(state: ClusterState, nodes: Sequence[Node]) -> None:
    """The nodes' pods counts and other resources onto `state`, and their MIG slices into
    the GPUs fair share divides (in what the slices would be charged, mig.py), so that the
    teams' shares still add up on a MIG-partitioned cluster."""
    n = len(nodes)
    state.pods_limited = any(node.max_pods is not None for node in nodes)
    state.pods_free = np.array(
        [UNLIMITED if node.max_pods is None else node.max_pods for node in nodes], dtype=np.int64
    ).reshape(n)
    state.extra_names = tuple(sorted({name for node in nodes for name, _ in node.extras}))
    state.extra_col = {name: k for k, name in enumerate(state.extra_names)}
    state.extra_free = np.zeros((n, len(state.extra_names)), dtype=np.int64)
    if not state.extra_names:
        return
    for i, node in enumerate(nodes):
        for name, amount in node.extras:
            state.extra_free[i, state.extra_col[name]] = amount
    ok = state.schedulable.tolist()
    slices = sum(mig.capacity_milli(node) for node, up in zip(nodes, ok, strict=True) if up)
    if slices:
        state._healthy += slices / MILLI_PER_GPU


def request_columns(state: ClusterState, extras: Extras) -> Columns | None:
    """A request's resources as columns; None when no node has one of them."""
    out = []
    for name, amount in extras:
        k = state.extra_col.get(name)
        if k is None:
            return None
        out.append((k, amount))
    return tuple(out)


def take_running(state: ClusterState, node: np.ndarray, extras: dict[int, Extras]) -> dict[int, Columns]:
    """Take what the bound pods at the rows of `extras` hold (a few pods: a step each). A
    pod that holds a resource its node does not advertise marks the node overcommitted."""
    out = {}
    for row, asked in extras.items():
        i = int(node[row])
        cols = request_columns(state, asked)
        if cols is None:
            state.overcommitted[i] = True
            cols = tuple((k, a) for name, a in asked if (k := state.extra_col.get(name)) is not None)
        for k, amount in cols:
            state.extra_free[i, k] -= amount
        out[row] = cols
    return out


def overcommitted(state: ClusterState) -> np.ndarray | None:
    """Nodes whose pods hold more pods or other resources than they have (None: none can)."""
    over: np.ndarray | None = None
    if state.pods_limited:
        over = state.pods_free < 0
    if state.extra_names:
        short = np.asarray((state.extra_free < 0).any(axis=1))
        over = short if over is None else over | short
    return over


def fit(state: ClusterState, shape: Shape, cap: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    """`cap` (pods of `shape` per node by other measures) limited by the pods count and the
    shape's other resources."""
    if state.pods_limited:
        pods = state.pods_free if idx is None else state.pods_free[idx]
        cap = np.minimum(cap, np.maximum(pods, 0))
    for name, amount in shape.extras:
        k = state.extra_col.get(name)
        if k is None:
            return np.zeros_like(cap)
        free = state.extra_free[:, k] if idx is None else state.extra_free[idx, k]
        cap = np.minimum(cap, np.maximum(free, 0) // amount)
    return cap


def shortfalls(state: ClusterState, shape: Shape, nodes: np.ndarray) -> list[tuple[str, int, str]]:
    """Per resource, how many of `nodes` (a mask) are short of it for one more pod of
    `shape`, as (resource, node count, kube-scheduler's words): a node short of several is
    counted under each, and a resource the pod does not ask for is never short."""
    idx = np.flatnonzero(nodes)
    out = []

    def short(name: str, lacking: np.ndarray, text: str) -> None:
        n = int(np.count_nonzero(lacking))
        if n:
            out.append((name, n, text))

    if state.pods_limited:
        short("pods", state.pods_free[idx] < 1, "Too many pods")
    if shape.cpu:
        short("cpu", state.cpu_free[idx] < shape.cpu, "Insufficient cpu")
    if shape.mem:
        short("memory", state.mem_free[idx] < shape.mem, "Insufficient memory")
    if shape.gpus or shape.milli:
        short(GPU_RESOURCE, state.gpu_capacity(shape, idx) < 1, f"Insufficient {GPU_RESOURCE}")
    for name, amount in shape.extras:
        k = state.extra_col.get(name)
        free = state.extra_free[idx, k] if k is not None else np.zeros(idx.size, dtype=np.int64)
        short(name, free < amount, f"Insufficient {name}")
    return out
