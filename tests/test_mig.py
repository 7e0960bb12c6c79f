"""MIG slices in fair share and budgets: a slice is charged the fraction of a GPU it is
(docs/mig.md), in the running table, the waiting demand, the fair-share capacity and the
ledger's runs, so a team on MIG slices is never charged 0."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.core import Gang, Node, Pod, PolicyConfig, decide
from scheduler.core.cluster import ClusterState
from scheduler.core.mig import MigRates, slice_milli
from scheduler.daemon.hooks import _gang_runs
from scheduler.daemon.translate import SnapshotBuilder
from tests.builders import NOW, gang, names, node, refused, snapshot, teams

CONFIG = PolicyConfig()
H100 = "NVIDIA-H100-80GB-HBM3"
SMALL = "nvidia.com/mig-1g.10gb"
HALF = "nvidia.com/mig-3g.40gb"


def mig_node(name: str, gpus: int = 1, model: str = H100, **slices: int) -> Node:
    """A node whose `gpus` GPUs are all partitioned into the slices given per GPU."""
    per = {"small": SMALL, "half": HALF}
    extras = tuple(sorted((per[k], v * gpus) for k, v in slices.items()))
    return replace(node(name, gpus=0, model=model), extras=extras)


@pytest.mark.parametrize(
    ("resource", "model", "memory_mib", "milli"),
    [
        (SMALL, H100, 0, 143),  # 1 of 7 compute slices; 10 of 80 GB is less
        ("nvidia.com/mig-1g.20gb", H100, 0, 250),  # memory-heavy: a quarter of the memory
        (HALF, H100, 0, 500),  # 3/7 compute, half the memory
        ("nvidia.com/mig-3g.20gb", "NVIDIA-A100-SXM4-40GB", 0, 500),
        ("nvidia.com/mig-4g.20gb", "NVIDIA-A100-SXM4-40GB", 0, 571),  # 4/7 compute
        ("nvidia.com/mig-7g.80gb", H100, 0, 1000),
        ("nvidia.com/mig-1g.6gb", "NVIDIA-A30", 24576, 250),  # an A30 has 4 compute slices
        ("nvidia.com/mig-1g.18gb", "NVIDIA-H200", 143771, 143),  # memory from the node's label
        ("nvidia.com/mig-2g.20gb", "some-gpu", 0, 286),  # memory unknown: compute alone
        ("nvidia.com/mig-odd", H100, 0, 1000),  # not a profile gpufair can read: a whole GPU
    ],
)
def test_a_slice_is_charged_the_larger_of_its_compute_and_memory_fractions(
    resource, model, memory_mib, milli
):
    n = replace(node("n", gpus=0, model=model), gpu_memory_mib=memory_mib)
    assert slice_milli(resource, n) == milli


def test_a_pod_on_mig_slices_must_be_charged_for_them():
    err = refused(Pod, "p", extras=((SMALL, 1),))
    names(err, "pod 'p'", "mig_milli", "charge_milli")
    names(
        refused(Pod, "p", extras=(("rdma/ib", 1),), mig_milli=10), "pod 'p'", "mig_milli", "any other pod 0"
    )
    assert Pod("p", extras=((SMALL, 2),), mig_milli=286).gpu_amount == pytest.approx(0.286)


def _mig_gang(gid: str, team: str, resource: str, count: int, rates: MigRates, on: str | None = None) -> Gang:
    asked = ((resource, count),)
    pod = Pod(
        f"{gid}-0",
        cpu_milli=1_000,
        extras=asked,
        mig_milli=rates.charge_milli(asked, on),
        node=on,
        start_s=NOW - 600 if on else None,
    )
    return Gang(gid, team, (pod,), submit_s=NOW - 3600)


def test_running_and_waiting_mig_pods_count_in_the_teams_shares_and_demand():
    nodes_ = (mig_node("m0", gpus=2, small=7), node("g0", gpus=2))
    rates = MigRates(nodes_)
    run = _mig_gang("a/run", "a", SMALL, 7, rates, on="m0")  # one GPU's worth of slices
    wait = _mig_gang("b/wait", "b", SMALL, 14, rates)  # more than are free: it waits
    whole = [gang(f"b/w{i}", "b", gpus=2) for i in range(2)]  # b wants more than there is
    d = decide(snapshot(nodes_, teams(("a", 1.0), ("b", 1.0)), [run, wait, *whole]), CONFIG)
    a, b = d.teams["a"], d.teams["b"]
    assert a.allocated_gpus == pytest.approx(7 * 0.143)
    assert a.demand_gpus == pytest.approx(7 * 0.143)
    assert b.allocated_gpus == pytest.approx(2)  # one 2-GPU gang bound
    assert b.demand_gpus == pytest.approx(4 + 14 * 0.143)
    # The partitioned GPUs count in the capacity fair share divides, as they are charged.
    assert ClusterState(nodes_, CONFIG).healthy_gpus() == pytest.approx(2 + 14 * 0.143)
    assert a.fair_share_gpus + b.fair_share_gpus == pytest.approx(2 + 14 * 0.143)
    # What the slices would be charged adds up to the capacity they give: shares add up.
    assert rates.charge_milli(((SMALL, 14),), "m0") / 1000 == pytest.approx(14 * 0.143)


def test_a_mig_pod_binds_where_its_profile_is_and_its_team_is_charged_at_once():
    nodes_ = (node("g0", gpus=8), mig_node("m0", half=2))
    rates = MigRates(nodes_)
    d = decide(snapshot(nodes_, teams(("a", 1.0)), [_mig_gang("a/g", "a", HALF, 1, rates)]), CONFIG)
    assert [b.node for b in d.binds] == ["m0"]
    assert d.teams["a"].allocated_gpus == pytest.approx(0.5)


def _api(name: str, labels: dict, alloc: dict) -> dict:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_the_daemon_charges_mig_pods_by_their_nodes_model_in_the_ledger():
    nodes_raw = [
        _api("a100", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}, {"cpu": "64", HALF: "0"}),
        _api(
            "h100",
            {"nvidia.com/gpu.product": H100, "nvidia.com/gpu.memory": "81559"},
            {"cpu": "64", "nvidia.com/mig-3g.40gb": "2", "pods": "110"},
        ),
    ]
    team = {
        "apiVersion": "gpufair.io/v1alpha1",
        "kind": "GPUTeam",
        "metadata": {"name": "a"},
        "spec": {"weight": 1, "namespaces": ["a"]},
    }

    def pod(name: str, node_name: str | None) -> dict:
        spec = {
            "schedulerName": "gpufair",
            "containers": [{"name": "c", "resources": {"limits": {HALF: "1"}}}],
        }
        if node_name:
            spec["nodeName"] = node_name
        return {
            "metadata": {"name": name, "namespace": "a", "creationTimestamp": "2027-01-15T00:00:00Z"},
            "spec": spec,
            "status": {"phase": "Running" if node_name else "Pending"},
        }

    tr = SnapshotBuilder([team]).build(NOW, nodes_raw, [pod("bound", "h100"), pod("waiting", None)])
    by_id = {g.id: g for g in tr.snapshot.gangs}
    assert by_id["a/bound"].pods[0].mig_milli == round(max(3 / 7, 40 / (81559 / 1024)) * 1000)
    assert by_id["a/waiting"].pods[0].mig_milli > 0
    runs = _gang_runs(tr, lambda g, start: "training")
    assert runs["a/bound"].gpus == pytest.approx(by_id["a/bound"].pods[0].gpu_amount)
    assert runs["a/bound"].gpus > 0.49
