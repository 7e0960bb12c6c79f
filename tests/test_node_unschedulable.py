"""Cordoned nodes (spec.unschedulable): kept off every pod but those that tolerate the
cordon, and left out of the GPUs the teams' fair shares divide."""

from __future__ import annotations

from dataclasses import replace

from scheduler.core import Gang, Pod, Team, decide
from scheduler.core.cluster import ClusterState
from scheduler.core.config import PolicyConfig
from scheduler.core.constraints import PodConstraints, Toleration
from scheduler.daemon.translate import node_from_api
from tests.builders import gang, node, snapshot

TEAM = Team("a", 1, namespaces=("a",))
CORDON_OK = Toleration("node.kubernetes.io/unschedulable", "Exists", "", "NoSchedule")


def _nodes():
    return (replace(node("c0", 8), schedulable=False, cordoned=True), node("n0", 8))


def test_a_cordoned_node_takes_only_pods_that_tolerate_the_cordon():
    plain = [gang(f"a/p{i}", "a", gpus=8, submit=i) for i in range(2)]
    d = decide(snapshot(_nodes(), (TEAM,), plain))
    assert [b.node for b in d.binds] == ["n0"]
    alone = decide(snapshot((_nodes()[0],), (TEAM,), plain[:1])).pending_reason("a/p0")
    assert alone.code == "Unschedulable"
    assert "0/1 nodes are available: 1 node(s) were unschedulable" in alone.reason
    tolerant = Gang(
        "a/t", "a", (Pod("a/t-0", gpus=8),), constraints=(PodConstraints(tolerations=(CORDON_OK,)),)
    )
    d = decide(snapshot((_nodes()[0],), (TEAM,), [tolerant]))
    assert [b.node for b in d.binds] == ["c0"]
    # A toleration of another effect does not tolerate the cordon.
    other = Toleration("node.kubernetes.io/unschedulable", "Exists", "", "NoExecute")
    g = Gang("a/u", "a", (Pod("a/u-0", gpus=1),), constraints=(PodConstraints(tolerations=(other,)),))
    assert decide(snapshot((_nodes()[0],), (TEAM,), [g])).binds == ()


def test_cordoned_gpus_are_not_divided_among_the_teams():
    assert ClusterState(_nodes(), PolicyConfig()).healthy_gpus() == 8


def test_the_daemon_reads_a_cordon_apart_from_readiness():
    def api(unschedulable: bool, ready: bool) -> dict:
        return {
            "metadata": {"name": "x", "labels": {}},
            "spec": {"unschedulable": unschedulable},
            "status": {
                "allocatable": {"cpu": "8", "memory": "8Gi", "nvidia.com/gpu": "8"},
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }

    cordoned = node_from_api(api(True, True))
    assert cordoned.cordoned and not cordoned.schedulable
    down = node_from_api(api(True, False))  # not ready: no pod goes there, cordon or not
    assert not down.cordoned and not down.schedulable
