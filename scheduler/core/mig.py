"""What a MIG slice is worth in fair share and budgets: the fraction of a GPU it takes.

Under the NVIDIA device plugin's mixed strategy a MIG-partitioned GPU is advertised as
slices, `nvidia.com/mig-<g>g.<mem>gb`: `g` compute slices (of the model's 7; an A30 has
4) and `mem` GB of the GPU's memory. A slice is charged the larger of its compute and its
memory fraction, so a memory-heavy profile (an H100's 1g.20gb: one compute slice, a
quarter of the memory) costs what it keeps others from using. The GPU's memory is the
node's `nvidia.com/gpu.memory` label (GPU feature discovery), else the size in its model
name (`...-80GB`); without either only the compute fraction counts. Amounts are kept in
thousandths of a GPU, as shared GPUs are, and the cluster's MIG capacity is counted in the
same units, so what every slice would be charged adds up to the capacity. See docs/mig.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from scheduler.core.model import MIG_PREFIX, MILLI_PER_GPU, Extras, Node

_PROFILE = re.compile(r"^nvidia\.com/mig-(\d+)g\.(\d+)gb(?:[.+-][A-Za-z0-9.+-]*)?$")
_MODEL_MEMORY = re.compile(r"(\d+)\s*GB", re.IGNORECASE)
# Compute slices per GPU where it is not 7 (the A100, H100, H200, B200 and GH200 have 7).
_COMPUTE_SLICES = (("A30", 4),)


def is_mig(resource: str) -> bool:
    return resource.startswith(MIG_PREFIX)


def profile(resource: str) -> tuple[int, int] | None:
    """(compute slices, memory GB) of a MIG resource name; None when it is not one."""
    m = _PROFILE.match(resource)
    return (int(m.group(1)), int(m.group(2))) if m else None


def compute_slices(model: str) -> int:
    upper = model.upper()
    for name, slices in _COMPUTE_SLICES:
        if name in upper:
            return slices
    return 7


def gpu_memory_gb(node: Node | None) -> float | None:
    """One GPU's memory on `node`: its label, else the size its model name gives."""
    if node is None:
        return None
    if node.gpu_memory_mib > 0:
        return node.gpu_memory_mib / 1024
    m = _MODEL_MEMORY.search(node.gpu_model)
    return float(m.group(1)) if m else None


def slice_milli(resource: str, node: Node | None) -> int:
    """Thousandths of a GPU one slice of `resource` is on `node` (None: a node of unknown
    model). A name that is no profile gpufair can read counts as a whole GPU: never free."""
    parsed = profile(resource)
    if parsed is None:
        return MILLI_PER_GPU
    g, mem = parsed
    fraction = g / compute_slices(node.gpu_model if node is not None else "")
    memory = gpu_memory_gb(node)
    if memory:
        fraction = max(fraction, mem / memory)
    return max(1, min(MILLI_PER_GPU, round(fraction * MILLI_PER_GPU)))


class MigRates:
    """Slice worth per (node, resource) for one node list, for the shell to charge pods by.

    A bound pod is charged by the GPU model of its node; a pending one by the dearest node
    that advertises its profile (what it may cost once bound), or the profile alone when no
    node does."""

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.nodes = {n.name: n for n in nodes}
        self._offering: dict[str, list[Node]] = {}
        for n in self.nodes.values():
            for name, amount in n.extras:
                if amount > 0 and is_mig(name):
                    self._offering.setdefault(name, []).append(n)
        self._rates: dict[tuple[str | None, str], int] = {}

    def rate(self, resource: str, node: str | None) -> int:
        key = (node, resource)
        hit = self._rates.get(key)
        if hit is None:
            if node is not None:
                hit = slice_milli(resource, self.nodes.get(node))
            else:
                offering: list[Node | None] = list(self._offering.get(resource, ())) or [None]
                hit = max(slice_milli(resource, n) for n in offering)
            self._rates[key] = hit
        return hit

    def charge_milli(self, extras: Extras, node: str | None) -> int:
        """What a pod's MIG slices are charged, in thousandths of a GPU (0: it asks for none)."""
        return sum(amount * self.rate(name, node) for name, amount in extras if is_mig(name))


def capacity_milli(node: Node) -> int:
    """The node's MIG slices in thousandths of a GPU, as they would be charged."""
    return sum(amount * slice_milli(name, node) for name, amount in node.extras if is_mig(name))
