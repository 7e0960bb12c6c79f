"""Node labels and taints in the cluster spec, and job node constraints in the native trace:
a replay runs them through the same node filters as the daemon, bad values are bad rows
(or named spec fields), and a trace without them reads, writes and replays as before."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scheduler.cli import main
from scheduler.core import Team
from scheduler.core.constraints import Requirement, Taint, Term, Toleration
from scheduler.core.errors import InvalidInput
from scheduler.daemon.podspec import pod_constraints
from simulator.cluster_spec import HOSTNAME, load_cluster_spec, nodes_from_spec
from simulator.engine import Replay
from simulator.traces import read_trace
from simulator.traces.native import write
from tests.builders import names
from tests.test_trace_bad_rows import STRICT, check_bad_row

ROOT = Path(__file__).resolve().parent.parent
POOLS = ROOT / "deploy" / "examples" / "cluster-pools.yaml"
HEAD = "job_id,submit_s,duration_s,pods,gpus_per_pod,team,tier,node_selector,tolerations,node_affinity\n"
SECURE_TOLERATION = [{"key": "dedicated", "operator": "Equal", "value": "secure", "effect": "NoSchedule"}]


def cell(value: object) -> str:
    """A JSON value as one quoted CSV cell."""
    return '"' + json.dumps(value).replace('"', '""') + '"'


def row(job_id: str, submit: float, duration: float, gpus: int, team: str = "a", **json_cells: object) -> str:
    cells = [cell(json_cells[c]) if c in json_cells else "" for c in ("selector", "tolerations", "affinity")]
    return f"{job_id},{submit},{duration},1,{gpus},{team},training,{','.join(cells)}\n"


def test_the_pool_cluster_spec_labels_and_taints_its_nodes():
    nodes = nodes_from_spec(POOLS)
    secure = [n for n in nodes if n.labels.get("pool") == "secure"]
    general = [n for n in nodes if n.labels.get("pool") == "general"]
    assert [n.name for n in secure] == ["secure-0000", "secure-0001"] and len(general) == 4
    assert all(n.taints == (Taint("dedicated", "secure", "NoSchedule"),) for n in secure)
    assert all(n.taints == () for n in general)
    assert all(n.labels[HOSTNAME] == n.name for n in nodes), "the topology labels are kept"


def test_jobs_that_select_a_tainted_pool_run_only_there_and_no_other_job_lands_on_it(tmp_path):
    """Six 8-GPU jobs select the secure pool (2 nodes): they queue for it while general nodes
    stand idle. Ten unconstrained jobs fill the general pool and queue too, never using the
    idle secure nodes. A job that only tolerates the taint may go either way; one with node
    affinity lands where its terms allow."""
    lines = [HEAD]
    for k in range(10):
        lines.append(row(f"gen-{k}", 0, 1_000, 8))
    for k in range(6):
        lines.append(row(f"sec-{k}", 5, 500, 8, selector={"pool": "secure"}, tolerations=SECURE_TOLERATION))
    affinity = [
        {
            "matchExpressions": [{"key": "pool", "operator": "In", "values": ["general"]}],
            "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["general-0000"]}],
        }
    ]
    lines.append(row("aff-0", 20_000, 100, 8, affinity=affinity))
    lines.append(row("tol-0", 20_000, 100, 8, tolerations=SECURE_TOLERATION))
    path = tmp_path / "pools.csv"
    path.write_text("".join(lines))
    trace = read_trace(path, "native", options=STRICT)
    nodes = nodes_from_spec(POOLS)
    result = Replay(trace, nodes, (Team("a", namespaces=("a",)),), "gpufair").run()
    placed = {r.job_id: r for r in result.jobs}
    assert all(len(r.nodes) == 1 for r in placed.values()), "every job ran"
    for k in range(6):
        assert placed[f"sec-{k}"].nodes[0].startswith("secure-")
    for k in range(10):
        assert placed[f"gen-{k}"].nodes[0].startswith("general-")
    # The pool is too small for the selecting jobs: they waited while general nodes were free
    # (after the first 1,000 s only 2 general jobs are still queued for 4 nodes).
    assert max(placed[f"sec-{k}"].start_s for k in range(6)) == pytest.approx(5 + 2 * 500)
    assert sorted(placed[f"gen-{k}"].start_s for k in range(10)) == [0] * 4 + [1_000] * 4 + [2_000] * 2
    assert placed["aff-0"].nodes[0] in {"general-0001", "general-0002", "general-0003"}
    assert placed["tol-0"].nodes[0].startswith(("general-", "secure-"))


def test_a_teams_dedicated_pool_holds_in_a_replay_whatever_other_jobs_tolerate(tmp_path):
    """GPUTeam nodePools reach the simulator's core as they reach the daemon's: team b's jobs
    stay in its pool without saying so, and team a's tolerating jobs are kept out."""
    path = tmp_path / "teams.csv"
    lines = [HEAD] + [row(f"a-{k}", 0, 100, 8, "a", tolerations=SECURE_TOLERATION) for k in range(8)]
    lines += [row(f"b-{k}", 0, 100, 8, "b") for k in range(3)]
    path.write_text("".join(lines))
    pool = Team(
        "b",
        namespaces=("b",),
        node_selector=(("pool", "secure"),),
        tolerations=(Toleration("dedicated", "Equal", "secure", "NoSchedule"),),
        dedicated=True,
    )
    trace = read_trace(path, "native", options=STRICT)
    result = Replay(trace, nodes_from_spec(POOLS), (Team("a", namespaces=("a",)), pool), "gpufair").run()
    for r in result.jobs:
        assert r.nodes[0].startswith("secure-" if r.team == "b" else "general-"), r


def test_constraint_cells_become_the_daemons_pod_constraints(tmp_path):
    selector = {"pool": "a", "zone": "z1"}
    terms = [
        {"matchExpressions": [{"key": "gpus", "operator": "Gt", "values": ["4"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
    ]
    tolerations = [{"operator": "Exists"}, {"key": "k", "value": "v", "effect": "NoExecute"}]
    path = tmp_path / "c.csv"
    path.write_text(HEAD + row("j", 0, 10, 1, selector=selector, tolerations=tolerations, affinity=terms))
    (job,) = read_trace(path, "native", options=STRICT).jobs
    pod = {
        "spec": {
            "nodeSelector": selector,
            "tolerations": tolerations,
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
                }
            },
        }
    }
    assert job.constraints == pod_constraints(pod)
    assert job.constraints is not None and job.constraints.required == (
        Term((Requirement("gpus", "Gt", ("4",)),)),
        Term((), (Requirement("metadata.name", "In", ("n1",)),)),
    )


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_constraints_survive_a_write_and_read(tmp_path, suffix):
    path = tmp_path / "c.csv"
    terms = [{"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["x", "y"]}]}]
    path.write_text(
        HEAD
        + row("j1", 0, 10, 1, selector={"pool": "a"}, tolerations=SECURE_TOLERATION, affinity=terms)
        + row("j2", 1, 10, 1)
    )
    trace = read_trace(path, "native", options=STRICT)
    again = tmp_path / f"again.{suffix}"
    write(trace, again)
    assert read_trace(again, "native", options=STRICT).jobs == trace.jobs
    assert trace.jobs[0].constraints is not None and trace.jobs[1].constraints is None


def test_a_trace_without_constraints_is_written_with_the_columns_it_had(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("job_id,submit_s,duration_s,pods,gpus_per_pod,team,tier\nj,0,10,1,1,a,training\n")
    trace = read_trace(path, "native", options=STRICT)
    for name in ("out.csv", "out.parquet"):
        write(trace, tmp_path / name)
    with open(tmp_path / "out.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert not {"node_selector", "tolerations", "node_affinity"} & set(header)
    assert "tolerations" not in pq.read_schema(tmp_path / "out.parquet").names
    assert read_trace(tmp_path / "out.parquet", "native", options=STRICT).jobs == trace.jobs


# --- bad rows ------------------------------------------------------------------------------

BAD_CELLS = [
    # (column of the header, cell, column the error names, words)
    ("node_selector", '"{pool: a}"', "node_selector", "is not JSON"),
    ("node_selector", cell(["pool"]), "node_selector", "is not an object"),
    ("node_selector", cell({"pool": 1}), "node_selector['pool']", "is not a label value"),
    ("node_selector", cell({"bad key!": "a"}), "node_selector['bad key!']", "is not a label key"),
    ("tolerations", cell({"key": "a"}), "tolerations", "is not a list"),
    ("tolerations", cell([{"key": "a", "operator": "Equals"}]), "tolerations[0].operator", "'Equals'"),
    (
        "tolerations",
        cell([{"key": "a", "operator": "Exists", "value": "x"}]),
        "tolerations[0].value",
        "Exists",
    ),
    ("tolerations", cell([{"value": "x"}]), "tolerations[0].operator", "empty key"),
    ("tolerations", cell([{"key": "a", "efect": "NoSchedule"}]), "tolerations[0].efect", "not a field"),
    ("tolerations", cell([{"key": "a", "effect": "NoScheduled"}]), "tolerations[0].effect", "taint effect"),
    ("tolerations", cell([{"key": 5}]), "tolerations[0].key", "not a string"),
    ("node_affinity", cell([]), "node_affinity", "no term"),
    ("node_affinity", cell([{}]), "node_affinity[0]", "matches no node"),
    (
        "node_affinity",
        cell([{"matchExpressions": [{"key": "pool", "operator": "Inn", "values": ["a"]}]}]),
        "node_affinity[0].matchExpressions[0].operator",
        "'Inn' is not an operator",
    ),
    (
        "node_affinity",
        cell([{"matchExpressions": [{"key": "pool", "operator": "In"}]}]),
        "node_affinity[0].matchExpressions[0].values",
        "at least one value",
    ),
    (
        "node_affinity",
        cell([{"matchExpressions": [{"key": "gpus", "operator": "Gt", "values": ["four"]}]}]),
        "node_affinity[0].matchExpressions[0].values",
        "whole number",
    ),
    (
        "node_affinity",
        cell([{"matchFields": [{"key": "metadata.labels", "operator": "In", "values": ["a"]}]}]),
        "node_affinity[0].matchFields[0].key",
        "not a node field",
    ),
]


@pytest.mark.parametrize(("header", "value", "column", "words"), BAD_CELLS)
def test_a_bad_constraint_cell_is_a_bad_row_naming_the_field(tmp_path, header, value, column, words):
    path = tmp_path / "bad.csv"
    head = "job_id,submit_s,duration_s,pods,gpus_per_pod,team,tier," + header + "\n"
    path.write_text(head + "ok,0,60,1,1,t,training,\n" + f"x,0,60,1,1,t,training,{value}\n")
    check_bad_row(path, "native", 3, column, words, kept=1)


def test_a_bad_constraint_in_parquet_names_the_same_row(tmp_path):
    source = tmp_path / "bad.csv"
    source.write_text(
        HEAD + row("ok", 0, 60, 1) + row("x", 0, 60, 1, tolerations=[{"key": "a", "operator": "In"}])
    )
    with source.open(newline="") as handle:
        records = [{k: (v or None) for k, v in r.items()} for r in csv.DictReader(handle)]
    parquet = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet)
    check_bad_row(parquet, "native", 3, "tolerations[0].operator", "'In'", kept=1)


def test_simulate_lists_a_bad_constraint_row_in_skipped_csv(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text(HEAD + row("ok", 0, 60, 8) + row("bad", 0, 60, 8, selector={"pool": ["a"]}))
    out = tmp_path / "out"
    code = main(
        ["simulate", "--trace", str(trace), "--format", "native", "--cluster", str(POOLS),
         "--policy", "gpufair", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    with open(out / "skipped.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1
    assert (rows[0]["row"], rows[0]["kind"], rows[0]["column"]) == ("3", "bad", "node_selector['pool']")
    assert "['a'] is not a label value" in rows[0]["problem"] and rows[0]["fix"]


# --- cluster spec fields -------------------------------------------------------------------

GROUP = "  - {count: 2, gpusPerNode: 8, gpuModel: H100, cpus: 64, memoryMiB: 1024, %s}\n"
SPEC = "apiVersion: gpufair.io/v1alpha1\nkind: ClusterSpec\ngroups:\n"


def test_group_labels_and_taints_reach_the_nodes():
    nodes = load_cluster_spec(
        SPEC + GROUP % "labels: {pool: a, example.com/tier: gold}, taints: [{key: gpu, effect: NoExecute}]"
    )
    assert all(n.labels["pool"] == "a" and n.labels["example.com/tier"] == "gold" for n in nodes)
    assert all(n.taints == (Taint("gpu", "", "NoExecute"),) for n in nodes)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ("labels: [pool]", "groups[0].labels", "is not an object"),
        ("labels: {pool: 'a b'}", "groups[0].labels['pool']", "is not a label value"),
        (
            "labels: {kubernetes.io/hostname: x}",
            "groups[0].labels['kubernetes.io/hostname']",
            "topology label",
        ),
        ("taints: {key: a}", "groups[0].taints", "is not a list"),
        ("taints: [{key: a, effect: NoScheduled}]", "groups[0].taints[0].effect", "not a taint effect"),
        ("taints: [{effect: NoSchedule}]", "groups[0].taints[0].key", "not a label key"),
        (
            "taints: [{key: a, effect: NoSchedule, operator: Exists}]",
            "groups[0].taints[0].operator",
            "not a field",
        ),
    ],
)
def test_bad_labels_and_taints_name_the_group_field(fields, field, words):
    with pytest.raises(InvalidInput) as caught:
        load_cluster_spec(SPEC + GROUP % fields)
    names(caught.value, "ClusterSpec", field, words)
    assert caught.value.fix
