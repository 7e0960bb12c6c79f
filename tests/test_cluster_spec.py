"""Clusters for replays: the real trace node lists, a bare GPU count, and ClusterSpec files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from scheduler.core import Gang, Pod, Snapshot, Team, decide
from scheduler.core.config import API_VERSION, DEFAULT_TOPOLOGY_LEVELS
from scheduler.core.model import Node
from simulator.cluster_spec import (
    CLIQUE,
    HOSTNAME,
    LEAF,
    SPINE,
    load_cluster_spec,
    nodes_for_gpus,
    nodes_from_csv,
    nodes_from_spec,
)
from simulator.model import TraceError
from tests.builders import SHARED_TRACES, names, refused, shared_trace

ROOT = Path(__file__).resolve().parents[1]
TRACES = SHARED_TRACES
OPENB_GPU = TRACES / "openb" / "openb_node_list_gpu_node.csv"
OPENB_ALL = TRACES / "openb" / "openb_node_list_all_node.csv"
SPOT = TRACES / "alibaba-spot-2026" / "node_info_df.csv"
EXAMPLE = ROOT / "deploy" / "examples" / "cluster.yaml"


def _trace(path: Path) -> Path:
    return shared_trace(*path.relative_to(TRACES).parts)


def _gpus_by_model(nodes: tuple[Node, ...]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for n in nodes:
        out[n.gpu_model] += n.gpus
    return dict(out)


def _leaf_sizes(nodes: tuple[Node, ...]) -> Counter[str]:
    return Counter(n.labels[LEAF] for n in nodes)


def _assert_topology(nodes: tuple[Node, ...]) -> None:
    """Every node carries the default levels, names are unique, and each narrower domain
    lies inside exactly one wider one (the core reads the levels as a path)."""
    assert len({n.name for n in nodes}) == len(nodes)
    for n in nodes:
        assert n.labels[HOSTNAME] == n.name
        assert {SPINE, LEAF, HOSTNAME} <= set(n.labels)
        assert set(n.labels) <= set(DEFAULT_TOPOLOGY_LEVELS)
        assert (CLIQUE in n.labels) == (n.gpus > 0)
    for narrow, wide in ((CLIQUE, LEAF), (LEAF, SPINE)):
        parents: dict[str, set[str]] = {}
        for n in nodes:
            if narrow in n.labels:
                parents.setdefault(n.labels[narrow], set()).add(n.labels[wide])
        assert all(len(p) == 1 for p in parents.values()), f"a {narrow} spans two {wide} domains"


# ------------------------------------------------------------------ trace node lists


def test_openb_gpu_node_list() -> None:
    nodes = nodes_from_csv(_trace(OPENB_GPU))
    assert len(nodes) == 1213
    assert sum(n.gpus for n in nodes) == 6212
    assert Counter(n.gpu_model for n in nodes) == {
        "G2": 549,
        "T4": 404,
        "P100": 134,
        "V100M16": 55,
        "G3": 39,
        "V100M32": 30,
        "A10": 2,
    }
    assert Counter(n.gpus for n in nodes) == {8: 617, 2: 518, 4: 54, 1: 24}
    first = nodes[0]
    assert (first.name, first.gpus, first.cpu_milli, first.memory_mib, first.gpu_model) == (
        "openb-node-0000",
        2,
        64_000,
        262_144,
        "P100",
    )
    assert first.labels == {
        SPINE: "spine-0",
        LEAF: "leaf-0",
        CLIQUE: "clique-openb-node-0000",
        HOSTNAME: "openb-node-0000",
    }
    # 32 nodes per leaf, 8 leaves per spine, in file order: 1,213 nodes fill 38 leaves
    # (the last holds 29) under 5 spines.
    leaves = _leaf_sizes(nodes)
    assert len(leaves) == 38 and leaves["leaf-0"] == 32 and leaves["leaf-37"] == 1213 - 37 * 32
    assert nodes[32].labels[LEAF] == "leaf-1" and nodes[255].labels[SPINE] == "spine-0"
    assert nodes[256].labels[SPINE] == "spine-1" and nodes[-1].labels[SPINE] == "spine-4"
    assert all(n.unhealthy_gpus == frozenset() and n.schedulable for n in nodes)
    _assert_topology(nodes)


def test_openb_all_node_list_adds_cpu_only_nodes() -> None:
    nodes = nodes_from_csv(_trace(OPENB_ALL))
    assert len(nodes) == 1523
    assert sum(n.gpus for n in nodes) == 6212
    cpu_only = [n for n in nodes if n.gpus == 0]
    assert len(cpu_only) == 310
    assert all(n.gpu_model == "" and CLIQUE not in n.labels for n in cpu_only)
    assert _gpus_by_model(nodes)["G2"] == 549 * 8
    assert len(_leaf_sizes(nodes)) == 48  # ceil(1523 / 32)
    _assert_topology(nodes)


def test_alibaba_spot_node_list() -> None:
    nodes = nodes_from_csv(_trace(SPOT))
    assert len(nodes) == 4278
    assert sum(n.gpus for n in nodes) == 10_412
    assert _gpus_by_model(nodes) == {
        "A100-SXM4-80GB": 3456,
        "A10": 2494,
        "H800": 1752,
        "GPU-series-1": 1558,
        "GPU-series-2": 976,
        "A800-SXM4-80GB": 176,
    }
    assert len({n.gpu_model for n in nodes}) == 6
    assert Counter(n.gpus for n in nodes) == {1: 3396, 8: 872, 4: 10}
    # cores -> milli-CPU, and the documented 8 GiB of memory per core
    first = nodes[0]
    assert (first.name, first.gpus, first.cpu_milli, first.memory_mib) == (
        "spot-node-0",
        4,
        192_000,
        192 * 8192,
    )
    assert nodes[-1].name == "spot-node-4340"
    assert all(n.memory_mib == n.cpu_milli // 1000 * 8192 for n in nodes)
    assert len(_leaf_sizes(nodes)) == 134  # ceil(4278 / 32)
    assert nodes[-1].labels[SPINE] == "spine-16"
    _assert_topology(nodes)


def test_reading_is_deterministic() -> None:
    assert nodes_from_csv(_trace(OPENB_GPU)) == nodes_from_csv(OPENB_GPU)


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nodes.csv"
    path.write_text(text)
    return path


OPENB_HEADER = "sn,cpu_milli,memory_mib,gpu,model\n"
SPOT_HEADER = "gpu_model,gpu_capacity_num,cpu_num,node_name\n"


@pytest.mark.parametrize(
    ("body", "row", "column", "word"),
    [
        ("a,64000,262144,2,P100\nb,lots,262144,2,P100\n", 3, "cpu_milli", "'lots'"),
        ("a,64000,-1,2,P100\n", 2, "memory_mib", "'-1'"),
        ("a,64000,262144,1.5,T4\n", 2, "gpu", "'1.5'"),
        ("a,64000,262144,2,\n", 2, "model", "no GPU model"),
        ("a,64000,262144,2,P100\n,64000,262144,2,P100\n", 3, "sn", "node name"),
        ("a,64000,262144,2,P100\nA B,64000,262144,2,P100\n", 3, "sn", "'A B'"),
        ("a,64000,262144,2,P100\na,64000,262144,2,P100\n", 3, "sn", "first on row 2"),
        ("a,64000,262144\n", 2, "gpu", "3 fields"),
    ],
)
def test_bad_openb_rows_name_file_row_and_column(
    tmp_path: Path, body: str, row: int, column: str, word: str
) -> None:
    path = _csv(tmp_path, OPENB_HEADER + body)
    err = refused(nodes_from_csv, path)
    assert isinstance(err, TraceError)
    assert (err.path, err.row, err.column) == (str(path), row, column)
    names(err, f"{path}, row {row}", column, word)


def test_bad_spot_row(tmp_path: Path) -> None:
    path = _csv(tmp_path, SPOT_HEADER + "A10,1,128,0\nA10,one,128,1\n")
    err = refused(nodes_from_csv, path)
    assert isinstance(err, TraceError) and (err.row, err.column) == (3, "gpu_capacity_num")
    names(err, f"{path}, row 3", "gpu_capacity_num", "'one'", "0 or more")


def test_unknown_or_empty_header(tmp_path: Path) -> None:
    path = _csv(tmp_path, "host,gpus\nx,8\n")
    err = refused(nodes_from_csv, path)
    assert isinstance(err, TraceError) and err.row == 1
    names(err, f"{path}, row 1", "(header)", "sn,cpu_milli", "gpu_model,gpu_capacity_num")
    empty = _csv(tmp_path, "")
    assert refused(nodes_from_csv, empty).field == "(header)"
    only_header = _csv(tmp_path, OPENB_HEADER)
    assert "no nodes" in str(refused(nodes_from_csv, only_header))


def test_missing_file_is_named(tmp_path: Path) -> None:
    err = refused(nodes_from_csv, tmp_path / "nope.csv")
    assert "nope.csv" in str(err) and "check the path" in str(err)


def test_columns_in_any_order_blank_lines_and_spot_cpu_only(tmp_path: Path) -> None:
    path = _csv(tmp_path, "node_name,cpu_num,gpu_capacity_num,gpu_model,extra\n7,96,0,,x\n\n8,96,8,H800,y\n")
    a, b = nodes_from_csv(path)
    assert (a.name, a.gpus, a.gpu_model, a.cpu_milli) == ("spot-node-7", 0, "", 96_000)
    assert (b.name, b.gpus, b.gpu_model, b.memory_mib) == ("spot-node-8", 8, "H800", 96 * 8192)


# ------------------------------------------------------------------ a GPU count


def test_nodes_for_gpus() -> None:
    nodes = nodes_for_gpus(4096)
    assert len(nodes) == 512
    assert nodes[0].name == "node-00000" and nodes[-1].name == "node-00511"
    assert all(
        (n.gpus, n.cpu_milli, n.memory_mib, n.gpu_model) == (8, 128_000, 1_048_576, "H100") for n in nodes
    )
    assert set(_leaf_sizes(nodes).values()) == {32} and len(_leaf_sizes(nodes)) == 16
    assert Counter(n.labels[SPINE] for n in nodes) == {"spine-0": 256, "spine-1": 256}
    assert len({n.labels[CLIQUE] for n in nodes}) == 512
    _assert_topology(nodes)
    small = nodes_for_gpus(12, gpus_per_node=4, model="A100")
    assert [(n.name, n.gpus, n.gpu_model) for n in small] == [
        ("node-00000", 4, "A100"),
        ("node-00001", 4, "A100"),
        ("node-00002", 4, "A100"),
    ]


@pytest.mark.parametrize(("gpus", "hint"), [(100, "104"), (0, "8"), (-16, "8"), (4, "8")])
def test_nodes_for_gpus_refuses_a_count_that_is_not_whole_nodes(gpus: int, hint: str) -> None:
    err = refused(nodes_for_gpus, gpus)
    names(err, "cluster", "--gpus", str(gpus), f"such as {hint}")


# ------------------------------------------------------------------ ClusterSpec


def test_example_cluster_spec() -> None:
    nodes = nodes_from_spec(EXAMPLE)
    assert len(nodes) == 64 + 72 + 16
    assert sum(n.gpus for n in nodes) == 64 * 8 + 72 * 4 + 16 * 4
    assert sum(n.healthy_gpus for n in nodes) == 864 - 3
    by_group = Counter(n.name.rsplit("-", 1)[0] for n in nodes)
    assert by_group == {"h100": 64, "gb200": 72, "l40s": 16}
    assert nodes[0].name == "h100-0000" and nodes[64].name == "gb200-0000" and nodes[-1].name == "l40s-0015"
    h100 = nodes[0]
    assert (h100.cpu_milli, h100.memory_mib, h100.gpu_model) == (112_000, 2_097_152, "H100")
    # GB200 NVL72: four racks of 18 trays x 4 GPUs, each rack one NVLink clique
    gb200 = [n for n in nodes if n.gpu_model == "GB200"]
    cliques = Counter(n.labels[CLIQUE] for n in gb200)
    assert cliques == {f"clique-gb200-rack-{k}": 18 for k in range(4)}
    assert (
        gb200[17].labels[CLIQUE] == "clique-gb200-rack-0"
        and gb200[18].labels[CLIQUE] == "clique-gb200-rack-1"
    )
    # every other node is its own clique
    assert all(n.labels[CLIQUE] == f"clique-{n.name}" for n in nodes if n.gpu_model != "GB200")
    # each group starts on a fresh leaf and spine; numbering runs on across groups
    assert _leaf_sizes(nodes) == {"leaf-0": 32, "leaf-1": 32, "leaf-2": 36, "leaf-3": 36, "leaf-4": 16}
    assert Counter(n.labels[SPINE] for n in nodes) == {"spine-0": 64, "spine-1": 72, "spine-2": 16}
    # three failed GPUs, on three different H100 nodes
    broken = {n.name: n.unhealthy_gpus for n in nodes if n.unhealthy_gpus}
    assert len(broken) == 3 and all(name.startswith("h100-") for name in broken)
    assert sum(len(v) for v in broken.values()) == 3
    _assert_topology(nodes)
    assert nodes_from_spec(EXAMPLE) == nodes  # deterministic


def test_a_72_gpu_gang_lands_in_one_nvl72_rack() -> None:
    """The core sees the rack as one clique: a clique-bound 18 x 4 GPU gang fits there."""
    nodes = tuple(n for n in nodes_from_spec(EXAMPLE) if n.gpu_model == "GB200")
    pods = tuple(Pod(f"llm-{k}", gpus=4, cpu_milli=1000, memory_mib=1024) for k in range(18))
    gang = Gang("llm", "nlp", pods, topology_required=CLIQUE)
    decisions = decide(Snapshot(1.8e9, nodes, (Team("nlp", namespaces=("nlp",)),), (gang,)))
    assert len(decisions.binds) == 18
    by_name = {n.name: n for n in nodes}
    assert len({by_name[b.node].labels[CLIQUE] for b in decisions.binds}) == 1


def _spec(*groups: str, head: str = f"apiVersion: {API_VERSION}\nkind: ClusterSpec\n") -> str:
    return head + "groups:\n" + "".join(groups)


H100 = "  - {count: 4, gpusPerNode: 8, gpuModel: H100, cpuMilli: 128000, memoryMiB: 1048576}\n"


def test_minimal_spec_defaults_and_group_names() -> None:
    nodes = load_cluster_spec(_spec(H100, H100))
    assert [n.name for n in nodes][:5] == [
        "group-0-0000",
        "group-0-0001",
        "group-0-0002",
        "group-0-0003",
        "group-1-0000",
    ]
    assert [n.labels[LEAF] for n in nodes] == ["leaf-0"] * 4 + ["leaf-1"] * 4
    assert [n.labels[SPINE] for n in nodes] == ["spine-0"] * 4 + ["spine-1"] * 4
    cpus = load_cluster_spec(_spec("  - {count: 1, gpusPerNode: 2, gpuModel: T4, cpus: 7.5, memoryMiB: 1}\n"))
    assert cpus[0].cpu_milli == 7500


def test_spine_numbering_with_many_leaves() -> None:
    group = (
        "  - {name: a, count: 100, gpusPerNode: 8, gpuModel: H100, cpuMilli: 1, memoryMiB: 1,"
        " nodesPerLeaf: 10, leavesPerSpine: 4}\n"
    )
    nodes = load_cluster_spec(_spec(group, H100))
    assert len(_leaf_sizes(nodes)) == 11
    assert Counter(n.labels[SPINE] for n in nodes) == {
        "spine-0": 40,
        "spine-1": 40,
        "spine-2": 20,
        "spine-3": 4,
    }
    assert nodes[-1].labels[LEAF] == "leaf-10"
    _assert_topology(nodes)


def test_unhealthy_gpus_spread_over_nodes() -> None:
    group = (
        "  - {name: x, count: 4, gpusPerNode: 2, gpuModel: T4, cpuMilli: 1, memoryMiB: 1,"
        " unhealthyGPUs: %d}\n"
    )
    few = load_cluster_spec(_spec(group % 2))
    assert [n.unhealthy_gpus for n in few] == [frozenset(), frozenset({0}), frozenset(), frozenset({0})]
    assert sum(n.healthy_gpus for n in load_cluster_spec(_spec(group % 6))) == 2
    assert sum(n.healthy_gpus for n in load_cluster_spec(_spec(group % 8))) == 0


GOOD = {
    "count": "4",
    "gpusPerNode": "8",
    "gpuModel": "H100",
    "cpuMilli": "128000",
    "memoryMiB": "1048576",
}


def _group(**fields: str | None) -> str:
    body = {**GOOD, **fields}
    return "  - {" + ", ".join(f"{k}: {v}" for k, v in body.items() if v is not None) + "}\n"


@pytest.mark.parametrize(
    ("fields", "field", "word"),
    [
        ({"count": "-2"}, "count", "below 1"),
        ({"count": None}, "count", "missing"),
        ({"gpusPerNode": "-8"}, "gpusPerNode", "below 0"),
        ({"gpusPerNode": "eight"}, "gpusPerNode", "whole number"),
        ({"gpuModel": None}, "gpuModel", "missing"),
        ({"memoryMiB": None}, "memoryMiB", "missing"),
        ({"cpuMilli": None}, "cpuMilli", "missing"),
        ({"cpus": "8"}, "cpus", "together with cpuMilli"),
        ({"cpuMilli": None, "cpus": "-1"}, "cpus", "not a CPU count"),
        ({"gpus": "8"}, "gpus", "unknown field"),
        ({"nvlinkDomain": "board"}, "nvlinkDomain", "'board'"),
        ({"nvlinkDomain": "rack"}, "nodesPerRack", "missing"),
        ({"nodesPerRack": "18"}, "nodesPerRack", "nvlinkDomain: rack"),
        ({"nvlinkDomain": "rack", "nodesPerRack": "3"}, "count", "whole racks of 3"),
        (
            {"count": "36", "nvlinkDomain": "rack", "nodesPerRack": "18", "nodesPerLeaf": "32"},
            "nodesPerLeaf",
            "split",
        ),
        ({"nodesPerLeaf": "0"}, "nodesPerLeaf", "below 1"),
        ({"leavesPerSpine": "true"}, "leavesPerSpine", "whole number"),
        ({"unhealthyGPUs": "-1"}, "unhealthyGPUs", "below 0"),
        ({"unhealthyGPUs": "33"}, "unhealthyGPUs", "32 GPUs"),
        ({"name": "H_100"}, "name", "'H_100'"),
    ],
)
def test_bad_group_names_the_field_and_the_fix(fields: dict[str, str | None], field: str, word: str) -> None:
    err = refused(load_cluster_spec, _spec(H100, _group(**fields)))
    names(err, "ClusterSpec", f"groups[1].{field}", word)


def test_bad_documents() -> None:
    names(refused(load_cluster_spec, _spec(H100, head="kind: ClusterSpec\n")), "ClusterSpec", "apiVersion")
    wrong_kind = _spec(H100, head=f"apiVersion: {API_VERSION}\nkind: GPUTeam\n")
    names(refused(load_cluster_spec, wrong_kind), "ClusterSpec", "kind", "set kind: ClusterSpec")
    names(refused(load_cluster_spec, _spec()), "ClusterSpec", "groups", "at least one group")
    names(refused(load_cluster_spec, _spec(H100) + "nodes: 3\n"), "ClusterSpec", "nodes", "unknown field")
    names(refused(load_cluster_spec, "groups: [\n"), "ClusterSpec", "(yaml)")
    names(refused(load_cluster_spec, "- 1\n"), "ClusterSpec", "(document)")
    names(refused(load_cluster_spec, _spec("  - 3\n")), "ClusterSpec", "groups[0]", "not a mapping")
    twice = "  - {name: a, count: 1, gpusPerNode: 1, gpuModel: T4, cpuMilli: 1, memoryMiB: 1}\n"
    names(refused(load_cluster_spec, _spec(twice, twice)), "ClusterSpec", "groups[1].name", "used twice")


def test_spec_file_errors_name_the_file_and_cluster(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        _spec(
            _group(count="0"), head=f"apiVersion: {API_VERSION}\nkind: ClusterSpec\nmetadata: {{name: lab}}\n"
        )
    )
    err = refused(nodes_from_spec, path)
    names(err, f"ClusterSpec 'lab' ({path})", "groups[0].count", "1 or more")
    assert "check the path" in str(refused(nodes_from_spec, tmp_path / "missing.yaml"))


def test_cpu_only_group() -> None:
    nodes = load_cluster_spec(
        _spec("  - {name: cpu, count: 2, gpusPerNode: 0, cpus: 64, memoryMiB: 262144}\n")
    )
    assert [(n.name, n.gpus, n.gpu_model) for n in nodes] == [("cpu-0000", 0, ""), ("cpu-0001", 0, "")]
    assert all(CLIQUE not in n.labels for n in nodes)
