"""The cluster a replay runs on: from a trace's node list, a GPU count, or a ClusterSpec.

Every node carries the default topology labels (see `scheduler.core.config`), so the
core's gang placement sees NVLink cliques, InfiniBand leaves and spines as it would on a
real cluster:

- `kubernetes.io/hostname`: the node name.
- `nvidia.com/gpu.clique`: the NVLink domain. `clique-<node>` when NVLink ends at the
  node (HGX boards, PCIe cards); `clique-<group>-rack-<k>` for a rack-scale domain such
  as a GB200 NVL72 rack (18 nodes x 4 GPUs). Nodes without GPUs get no clique label, as
  GPU feature discovery does not label them either (the core treats them as a domain of
  their own).
- `network.gpufair.io/leaf`, `network.gpufair.io/spine`: `leaf-<i>` and `spine-<j>`,
  numbered across the whole cluster.

Trace node lists hold no topology, so nodes are cabled in file order: 32 nodes per leaf
and 8 leaves per spine (256 nodes, a common rail-optimised pod size), each node its own
clique. Everything here is deterministic: the same input gives the same names and labels.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scheduler.core.config import API_VERSION
from scheduler.core.constraints import Taint
from scheduler.core.errors import InvalidInput
from scheduler.core.model import Node
from simulator import constraints
from simulator.model import TraceError

SPINE = "network.gpufair.io/spine"
LEAF = "network.gpufair.io/leaf"
CLIQUE = "nvidia.com/gpu.clique"
HOSTNAME = "kubernetes.io/hostname"

NODES_PER_LEAF = 32
LEAVES_PER_SPINE = 8

# nodes_for_gpus: an HGX-class node (2 sockets x 64 cores, 1 TiB of host memory).
DEFAULT_CPU_MILLI = 128_000
DEFAULT_MEMORY_MIB = 1024 * 1024

# The alibaba-spot node list gives cores but no memory; 8 GiB per core is the usual
# ratio of GPU servers (a 128-core node gets 1 TiB), so memory rarely decides placement.
SPOT_MEMORY_MIB_PER_CORE = 8 * 1024
SPOT_NODE_PREFIX = "spot-node-"

OPENB_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
SPOT_COLUMNS = ("gpu_model", "gpu_capacity_num", "cpu_num", "node_name")

# A Kubernetes label value (the hostname label holds the node name), at most 63 chars.
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_GROUP_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?")


def _labels(name: str, spine: int, leaf: int, clique: str | None) -> dict[str, str]:
    labels = {SPINE: f"spine-{spine}", LEAF: f"leaf-{leaf}"}
    if clique is not None:
        labels[CLIQUE] = clique
    labels[HOSTNAME] = name
    return labels


def _flat(rows: list[tuple[str, int, int, int, str]]) -> tuple[Node, ...]:
    """(name, gpus, cpu_milli, memory_mib, model) in file order, cabled by the default fabric."""
    nodes = []
    for i, (name, gpus, cpu, mem, model) in enumerate(rows):
        leaf = i // NODES_PER_LEAF
        clique = f"clique-{name}" if gpus > 0 else None
        labels = _labels(name, leaf // LEAVES_PER_SPINE, leaf, clique)
        nodes.append(Node(name, gpus, cpu, mem, model, labels=labels))
    return tuple(nodes)


# ------------------------------------------------------------------ trace node lists


def nodes_from_csv(path: str | Path) -> tuple[Node, ...]:
    """Nodes of a trace's node list; the format (openb or alibaba-spot) is told by the header.

    openb `sn,cpu_milli,memory_mib,gpu,model` is taken as it is (an empty model on a node
    without GPUs). alibaba-spot `gpu_model,gpu_capacity_num,cpu_num,node_name` gives cores
    (x 1000 milli-CPU) and no memory, so each node gets 8 GiB per core; its numeric node
    names become `spot-node-<name>`. Columns beyond these are ignored.
    """
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidInput(
            where, "(file)", f"cannot be read: {exc.strerror or exc}", "check the path"
        ) from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise TraceError(where, 1, "(header)", "the file is empty", _header_fix())
    columns = {name.strip(): i for i, name in enumerate(header)}
    if set(OPENB_COLUMNS) <= set(columns):
        parse, name_column = _openb_row, "sn"
    elif set(SPOT_COLUMNS) <= set(columns):
        parse, name_column = _spot_row, "node_name"
    else:
        raise TraceError(
            where, 1, "(header)", f"{','.join(header)!r} is not a known node list", _header_fix()
        )
    rows: list[tuple[str, int, int, int, str]] = []
    seen: dict[str, int] = {}
    for record in reader:
        row = reader.line_num
        if not record or all(not cell.strip() for cell in record):
            continue
        cells = _Cells(where, row, columns, record)
        parsed = parse(cells)
        if parsed[0] in seen:
            raise TraceError(
                where,
                row,
                name_column,
                f"node {parsed[0]!r} is listed again (first on row {seen[parsed[0]]})",
                "give each node its own name, or drop the repeated row",
            )
        seen[parsed[0]] = row
        rows.append(parsed)
    if not rows:
        raise TraceError(where, 2, "(rows)", "the node list has no nodes", "list at least one node")
    return _flat(rows)


def _header_fix() -> str:
    return (
        f"use the openb header {','.join(OPENB_COLUMNS)} or the alibaba-spot header {','.join(SPOT_COLUMNS)}"
    )


@dataclass(frozen=True, slots=True)
class _Cells:
    """One CSV record with where it came from, so every complaint names file, row and column."""

    path: str
    row: int
    columns: Mapping[str, int]
    record: list[str]

    def text(self, column: str) -> str:
        i = self.columns[column]
        if i >= len(self.record):
            raise TraceError(
                self.path,
                self.row,
                column,
                f"the row has {len(self.record)} fields, the header {len(self.columns)}",
                "give every row one value per header column",
            )
        return self.record[i].strip()

    def count(self, column: str, what: str) -> int:
        raw = self.text(column)
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or value != int(value):
            raise TraceError(
                self.path,
                self.row,
                column,
                f"{raw!r} is not a whole number",
                f"write {what} as a whole number, 0 or more",
            )
        return int(value)

    def name(self, column: str, prefix: str = "") -> str:
        raw = self.text(column)
        name = prefix + raw
        if not raw or not _LABEL_VALUE.fullmatch(name):
            raise TraceError(
                self.path,
                self.row,
                column,
                f"{raw!r} is not a usable node name",
                "use letters, digits, '-', '_' or '.' (63 at most), starting and ending alphanumeric",
            )
        return name

    def model(self, column: str, gpus: int) -> str:
        model = self.text(column)
        if gpus > 0 and not model:
            raise TraceError(
                self.path,
                self.row,
                column,
                f"a node with {gpus} GPUs has no GPU model",
                "write the GPU model (jobs that ask for one are matched against it)",
            )
        return model


def _openb_row(cells: _Cells) -> tuple[str, int, int, int, str]:
    name = cells.name("sn")
    cpu = cells.count("cpu_milli", "milli-CPUs")
    mem = cells.count("memory_mib", "MiB of memory")
    gpus = cells.count("gpu", "the GPU count")
    return name, gpus, cpu, mem, cells.model("model", gpus)


def _spot_row(cells: _Cells) -> tuple[str, int, int, int, str]:
    name = cells.name("node_name", SPOT_NODE_PREFIX)
    gpus = cells.count("gpu_capacity_num", "the GPU count")
    cores = cells.count("cpu_num", "the CPU cores")
    return name, gpus, cores * 1000, cores * SPOT_MEMORY_MIB_PER_CORE, cells.model("gpu_model", gpus)


# ------------------------------------------------------------------ a GPU count


def nodes_for_gpus(n: int, gpus_per_node: int = 8, model: str = "H100") -> tuple[Node, ...]:
    """`n` GPUs as n / gpus_per_node identical nodes `node-00000`, ... (for traces that
    carry no cluster, such as Philly): 128 cores and 1 TiB each, a clique per node,
    32 nodes per leaf, 8 leaves per spine."""
    if isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int) or gpus_per_node < 1:
        raise InvalidInput(
            "cluster", "gpus_per_node", f"{gpus_per_node!r} is not a GPU count", "use 1 or more"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < gpus_per_node or n % gpus_per_node:
        hint = gpus_per_node
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            hint = -(-n // gpus_per_node) * gpus_per_node
        raise InvalidInput(
            "cluster",
            "--gpus",
            f"{n!r} is not a positive multiple of {gpus_per_node} GPUs per node",
            f"give a multiple of {gpus_per_node}, such as {hint}",
        )
    count = n // gpus_per_node
    width = max(5, len(str(count - 1)))
    return _flat(
        [
            (f"node-{i:0{width}d}", gpus_per_node, DEFAULT_CPU_MILLI, DEFAULT_MEMORY_MIB, model)
            for i in range(count)
        ]
    )


# ------------------------------------------------------------------ ClusterSpec


_TOP_KEYS = ("apiVersion", "kind", "metadata", "groups")
_GROUP_KEYS = (
    "name",
    "count",
    "gpusPerNode",
    "gpuModel",
    "cpuMilli",
    "cpus",
    "memoryMiB",
    "nvlinkDomain",
    "nodesPerRack",
    "nodesPerLeaf",
    "leavesPerSpine",
    "unhealthyGPUs",
    "labels",
    "taints",
)
TOPOLOGY_LABELS = (SPINE, LEAF, CLIQUE, HOSTNAME)


def nodes_from_spec(path: str | Path) -> tuple[Node, ...]:
    """Nodes of a ClusterSpec YAML file (see `load_cluster_spec`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(
            f"ClusterSpec {path}", "(file)", f"cannot be read: {exc.strerror or exc}", "check the path"
        ) from exc
    return load_cluster_spec(text, source=str(path))


def load_cluster_spec(text: str, source: str = "") -> tuple[Node, ...]:
    """Nodes of a ClusterSpec document: `groups` of identical nodes, in order.

    Per group: `count` nodes of `gpusPerNode` GPUs of `gpuModel`, `cpuMilli` (or
    `cpus`), `memoryMiB`; `nvlinkDomain: node` (default) or `rack` with `nodesPerRack`
    nodes in one NVLink clique; `nodesPerLeaf` (32) and `leavesPerSpine` (8); an optional
    `name` (default `group-<i>`) that prefixes node names `<name>-0000`, ...; and
    `unhealthyGPUs`, a count spread evenly over the group's nodes; `labels`, node labels
    beside the topology ones (e.g. `{pool: secure}`, for node selectors and team node
    pools), and `taints`, a list of `{key, value, effect}` with effect NoSchedule,
    PreferNoSchedule or NoExecute, as on a Node object. Each group starts on a
    new leaf and a new spine, numbered on from the group before, so groups never share a
    switch. Unknown keys, missing fields and impossible shapes are refused, naming
    `groups[i].<field>` and the fix.
    """
    obj = "ClusterSpec" + (f" {source}" if source else "")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(obj, "(yaml)", f"cannot be parsed: {exc}", "fix the YAML syntax") from exc
    if not isinstance(doc, Mapping):
        raise InvalidInput(obj, "(document)", "is not a mapping", "write apiVersion, kind and groups")
    _unknown(obj, "", doc, _TOP_KEYS)
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidInput(
            obj, "apiVersion", f"{doc.get('apiVersion')!r} is not supported", f"use {API_VERSION}"
        )
    if doc.get("kind") != "ClusterSpec":
        raise InvalidInput(obj, "kind", f"{doc.get('kind')!r} is not ClusterSpec", "set kind: ClusterSpec")
    metadata = doc.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidInput(obj, "metadata", "is not a mapping", "write metadata: {name: CLUSTER}")
    if metadata and metadata.get("name"):
        obj = f"ClusterSpec {metadata['name']!r}" + (f" ({source})" if source else "")
    groups = doc.get("groups")
    if not isinstance(groups, list) or not groups:
        raise InvalidInput(obj, "groups", "missing or empty", "list at least one group of nodes")
    nodes: list[Node] = []
    names: set[str] = set()
    leaf = spine = 0
    for i, body in enumerate(groups):
        group = _group(obj, i, body)
        if group.name in names:
            raise InvalidInput(
                obj, f"groups[{i}].name", f"{group.name!r} is used twice", "give each group its own name"
            )
        names.add(group.name)
        made, leaves = group.nodes(first_leaf=leaf, first_spine=spine)
        nodes.extend(made)
        leaf += leaves
        spine += -(-leaves // group.leaves_per_spine)
    return tuple(nodes)


@dataclass(frozen=True, slots=True)
class _Group:
    name: str
    count: int
    gpus: int
    model: str
    cpu_milli: int
    memory_mib: int
    nodes_per_rack: int | None  # None: NVLink ends at the node
    nodes_per_leaf: int
    leaves_per_spine: int
    unhealthy: int
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[Taint, ...] = ()

    def nodes(self, first_leaf: int, first_spine: int) -> tuple[list[Node], int]:
        """This group's nodes and how many leaves they fill."""
        width = max(4, len(str(self.count - 1)))
        bad = _spread(self.unhealthy, self.count, self.gpus)
        made = []
        for k in range(self.count):
            name = f"{self.name}-{k:0{width}d}"
            local_leaf = k // self.nodes_per_leaf
            if self.gpus == 0:
                clique = None
            elif self.nodes_per_rack is None:
                clique = f"clique-{name}"
            else:
                clique = f"clique-{self.name}-rack-{k // self.nodes_per_rack}"
            labels = _labels(
                name, first_spine + local_leaf // self.leaves_per_spine, first_leaf + local_leaf, clique
            )
            labels.update(self.labels)
            made.append(
                Node(
                    name,
                    self.gpus,
                    self.cpu_milli,
                    self.memory_mib,
                    self.model,
                    bad.get(k, frozenset()),
                    labels,
                    taints=self.taints,
                )
            )
        return made, -(-self.count // self.nodes_per_leaf)


def _spread(unhealthy: int, count: int, gpus: int) -> dict[int, frozenset[int]]:
    """Unhealthy GPU indices per node: `unhealthy` of the count x gpus slots, evenly spaced
    (the k-th at the middle of the k-th equal stretch), so failures land on distinct
    nodes while there are fewer failures than nodes."""
    total = count * gpus
    out: dict[int, set[int]] = {}
    for k in range(unhealthy):
        slot = (2 * k + 1) * total // (2 * unhealthy)
        out.setdefault(slot // gpus, set()).add(slot % gpus)
    return {node: frozenset(idx) for node, idx in out.items()}


def _unknown(obj: str, prefix: str, body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise InvalidInput(obj, f"{prefix}{unknown[0]}", "unknown field", f"use {', '.join(allowed)}")


def _group(obj: str, i: int, body: Any) -> _Group:
    at = f"groups[{i}]"
    if not isinstance(body, Mapping):
        raise InvalidInput(
            obj, at, "is not a mapping", "give count, gpusPerNode, gpuModel, cpuMilli, memoryMiB"
        )
    _unknown(obj, f"{at}.", body, _GROUP_KEYS)

    def whole(key: str, what: str, low: int, default: int | None = None) -> int:
        value = body.get(key, default)
        if value is None:
            raise InvalidInput(obj, f"{at}.{key}", "missing", f"give {what}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(obj, f"{at}.{key}", f"{value!r} is not a whole number", f"give {what}")
        if value < low:
            raise InvalidInput(obj, f"{at}.{key}", f"{value} is below {low}", f"give {what}, {low} or more")
        return value

    name = body.get("name", f"group-{i}")
    if not isinstance(name, str) or not _GROUP_NAME.fullmatch(name):
        raise InvalidInput(
            obj,
            f"{at}.name",
            f"{name!r} is not a usable group name",
            "use lowercase letters, digits and '-' (40 at most), e.g. h100",
        )
    count = whole("count", "the number of nodes", 1)
    gpus = whole("gpusPerNode", "the GPUs of each node", 0)
    model = body.get("gpuModel", "" if gpus == 0 else None)
    if model is None:
        raise InvalidInput(obj, f"{at}.gpuModel", "missing", "give the GPU model, e.g. H100")
    if not isinstance(model, str) or (gpus > 0 and not model.strip()):
        raise InvalidInput(obj, f"{at}.gpuModel", f"{model!r} is not a GPU model", "give a name, e.g. H100")
    cpu_milli = _cpu(obj, at, body, whole)
    memory = whole("memoryMiB", "the memory of each node in MiB", 0)
    domain = body.get("nvlinkDomain", "node")
    rack: int | None = None
    if domain == "rack":
        rack = whole("nodesPerRack", "the nodes of one NVLink rack, e.g. 18 for GB200 NVL72", 1)
        if gpus == 0:
            raise InvalidInput(
                obj, f"{at}.nvlinkDomain", "a rack NVLink domain needs GPUs", "use nvlinkDomain: node"
            )
        if count % rack:
            raise InvalidInput(
                obj,
                f"{at}.count",
                f"{count} nodes are not whole racks of {rack}",
                f"set count to a multiple of nodesPerRack ({rack})",
            )
    elif domain == "node":
        if "nodesPerRack" in body:
            raise InvalidInput(
                obj,
                f"{at}.nodesPerRack",
                "only applies to nvlinkDomain: rack",
                "set nvlinkDomain: rack, or drop nodesPerRack",
            )
    else:
        raise InvalidInput(obj, f"{at}.nvlinkDomain", f"unknown domain {domain!r}", "use 'node' or 'rack'")
    per_leaf = whole("nodesPerLeaf", "the nodes under one leaf switch", 1, NODES_PER_LEAF)
    if rack is not None and per_leaf % rack:
        raise InvalidInput(
            obj,
            f"{at}.nodesPerLeaf",
            f"{per_leaf} would split an NVLink rack of {rack} nodes over two leaves",
            f"use a multiple of nodesPerRack ({rack})",
        )
    per_spine = whole("leavesPerSpine", "the leaves under one spine", 1, LEAVES_PER_SPINE)
    unhealthy = whole("unhealthyGPUs", "the number of failed GPUs", 0, 0)
    if unhealthy > count * gpus:
        raise InvalidInput(
            obj,
            f"{at}.unhealthyGPUs",
            f"{unhealthy} exceeds the group's {count * gpus} GPUs",
            f"use at most {count * gpus}",
        )
    labels, taints = _labels_and_taints(obj, at, body)
    return _Group(
        name,
        count,
        gpus,
        model.strip(),
        cpu_milli,
        memory,
        rack,
        per_leaf,
        per_spine,
        unhealthy,
        labels,
        taints,
    )


def _labels_and_taints(
    obj: str, at: str, body: Mapping[str, Any]
) -> tuple[tuple[tuple[str, str], ...], tuple[Taint, ...]]:
    try:
        labels = constraints.labels(body.get("labels") or {})
    except constraints.SpecProblem as p:
        raise InvalidInput(obj, f"{at}.labels{p.where}", p.problem, p.fix) from None
    for key in labels:
        if key in TOPOLOGY_LABELS:
            raise InvalidInput(
                obj,
                f"{at}.labels[{key!r}]",
                "is a topology label the simulator sets itself",
                "use another key; nodesPerLeaf, leavesPerSpine and nvlinkDomain shape the topology",
            )
    try:
        taints = constraints.taints(body.get("taints") or [])
    except constraints.SpecProblem as p:
        raise InvalidInput(obj, f"{at}.taints{p.where}", p.problem, p.fix) from None
    return tuple(sorted(labels.items())), taints


def _cpu(obj: str, at: str, body: Mapping[str, Any], whole: Callable[..., int]) -> int:
    if "cpuMilli" in body and "cpus" in body:
        raise InvalidInput(obj, f"{at}.cpus", "given together with cpuMilli", "keep one of cpuMilli and cpus")
    if "cpus" not in body:
        return whole("cpuMilli", "the milli-CPUs of each node (or cpus)", 0)
    cpus = body["cpus"]
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not math.isfinite(cpus) or cpus < 0:
        raise InvalidInput(
            obj, f"{at}.cpus", f"{cpus!r} is not a CPU count", "give the cores of each node, 0 or more"
        )
    milli = cpus * 1000
    if milli != int(milli):
        raise InvalidInput(obj, f"{at}.cpus", f"{cpus!r} is finer than a milli-CPU", "round to 3 decimals")
    return int(milli)
