"""The pod spec's node rules through the daemon on a real kube-apiserver: node selectors and
required node affinity, cordons, and the soft preferences (preferred node affinity,
PreferNoSchedule taints). Placement is checked, not phase: KWOK would run a pod anywhere."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from tests.daemon_support import (
    InProcessDaemon,
    bound,
    condition,
    delete_pods,
    delete_teams,
    install_crds_and_priorities,
    kube_for,
    make_namespace,
    make_team,
    pods_in,
    wait_for,
)

_names = itertools.count()


@pytest.fixture(scope="module")
def cluster(kube_cluster_factory):
    c = kube_cluster_factory(None)  # 8 nodes x 8 GPUs
    install_crds_and_priorities(kube_for(c.kubeconfig))
    return c


@pytest.fixture
def kube(cluster):
    return kube_for(cluster.kubeconfig)


@pytest.fixture
def ns(kube):
    name = f"spec-{next(_names)}"
    make_namespace(kube, name)
    make_team(kube, name, [name])
    yield name
    delete_pods(kube, name)
    delete_teams(kube)


def _pod(kube, ns: str, name: str, gpus: int, **spec: Any) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "schedulerName": "gpufair",
            "priorityClassName": "gpufair-training",
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/trainer:1",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
            "terminationGracePeriodSeconds": 0,
            **spec,
        },
    }
    body["spec"]["tolerations"] = [
        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
        *spec.get("tolerations", []),
    ]
    kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=body)


def _patch_node(kube, name: str, body: dict) -> None:
    kube.request("PATCH", f"/api/v1/nodes/{name}", body=body, content_type="application/merge-patch+json")


def _add_taint(kube, name: str, taint: dict | None) -> None:
    node = kube.request("GET", f"/api/v1/nodes/{name}")
    keep = [t for t in node["spec"].get("taints") or [] if t["key"] == "kwok.x-k8s.io/node"]
    _patch_node(kube, name, {"spec": {"taints": keep + ([taint] if taint else [])}})


def _reason(kube, ns: str, pod: str) -> str:
    cond = wait_for(
        f"{pod}'s reason",
        lambda: (c := condition(pods_in(kube, ns).get(pod, {}))) and c.get("status") == "False" and c,
        timeout_s=30,
    )
    return cond["message"]


def test_node_selector_and_required_node_affinity_keep_pods_on_their_pool(cluster, kube, ns):
    pool = ["gpu-0000", "gpu-0001"]
    for name in pool:
        _patch_node(kube, name, {"metadata": {"labels": {"pool": "a"}}})
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    }
    try:
        for i in range(2):
            _pod(kube, ns, f"sel{i}", 4, nodeSelector={"pool": "a"})
            _pod(kube, ns, f"aff{i}", 4, affinity=affinity)
        _pod(kube, ns, "late", 4, nodeSelector={"pool": "a"})
        with InProcessDaemon(cluster.kubeconfig):
            wait_for("four pool pods bound", lambda: len(bound(kube, ns)) == 4, timeout_s=30)
            time.sleep(1.5)
            placed = bound(kube, ns)
            assert set(placed.values()) == set(pool)  # the pool is full: the fifth waits, never elsewhere
            (left,) = set(pods_in(kube, ns)) - set(placed)
            message = _reason(kube, ns, left)
            assert "6 node(s) didn't match Pod's node affinity/selector" in message, message
    finally:
        for name in pool:
            _patch_node(kube, name, {"metadata": {"labels": {"pool": None}}})


def test_a_cordoned_node_takes_only_pods_that_tolerate_the_cordon(cluster, kube, ns):
    target = "gpu-0002"
    _patch_node(kube, target, {"spec": {"unschedulable": True}})
    here = {"kubernetes.io/hostname": target}
    cordon = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
    try:
        _pod(kube, ns, "plain", 1, nodeSelector=here)
        _pod(kube, ns, "tolerant", 1, nodeSelector=here, tolerations=[cordon])
        with InProcessDaemon(cluster.kubeconfig):
            wait_for(
                "the tolerant pod bound", lambda: bound(kube, ns).get("tolerant") == target, timeout_s=30
            )
            assert "1 node(s) were unschedulable" in _reason(kube, ns, "plain")
            time.sleep(1.5)
            assert "plain" not in bound(kube, ns)
    finally:
        _patch_node(kube, target, {"spec": {"unschedulable": None}})


def test_soft_preferences_choose_among_the_nodes_a_pod_may_use(cluster, kube, ns):
    soft = {"key": "spot", "value": "yes", "effect": "PreferNoSchedule"}
    names = [f"gpu-{i:04d}" for i in range(8)]
    for name in names[1:]:
        _add_taint(kube, name, soft)
    _patch_node(kube, names[5], {"metadata": {"labels": {"rack": "r5"}}})
    preferred = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "preference": {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["r5"]}]},
                }
            ]
        }
    }
    try:
        _pod(kube, ns, "untainted", 1)
        _pod(kube, ns, "prefers", 1, affinity=preferred, tolerations=[{"key": "spot", "operator": "Exists"}])
        with InProcessDaemon(cluster.kubeconfig):
            wait_for("both bound", lambda: len(bound(kube, ns)) == 2, timeout_s=30)
            placed = bound(kube, ns)
            assert placed["untainted"] == names[0]  # the only node without the soft taint
            assert placed["prefers"] == names[5]  # it tolerates the taint and prefers rack r5
    finally:
        for name in names:
            _add_taint(kube, name, None)
        _patch_node(kube, names[5], {"metadata": {"labels": {"rack": None}}})
