"""Host ports, pod anti-affinity and topology spread honoured by the daemon on a real
kube-apiserver (KWOK plays the kubelets): placement is checked, not phase.

The module has a control plane of its own: 8 nodes of 8 GPUs, labelled into two zones of
four. Without these terms gpufair's fragmentation scorer packs one-GPU pods onto one node,
so each spread seen here is the filters' doing.
"""

from __future__ import annotations

import itertools
from collections import Counter
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

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"
_names = itertools.count()


@pytest.fixture(scope="module")
def cluster(kube_cluster_factory):
    c = kube_cluster_factory(None)
    kube = kube_for(c.kubeconfig)
    install_crds_and_priorities(kube)
    names = sorted(n["metadata"]["name"] for n in kube.request("GET", "/api/v1/nodes")["items"])
    for i, name in enumerate(names):
        body = {"metadata": {"labels": {ZONE: "za" if i < len(names) // 2 else "zb"}}}
        kube.request("PATCH", f"/api/v1/nodes/{name}", body=body, content_type="application/merge-patch+json")
    c.zone_of = {name: "za" if i < len(names) // 2 else "zb" for i, name in enumerate(names)}
    return c


@pytest.fixture
def kube(cluster):
    return kube_for(cluster.kubeconfig)


@pytest.fixture
def ns(kube):
    made: list[str] = []

    def make() -> str:
        name = f"terms-{next(_names)}"
        make_namespace(kube, name)
        made.append(name)
        make_team(kube, name, [name])
        return name

    yield make
    for name in made:
        delete_pods(kube, name)
    delete_teams(kube)


def _pod(kube, ns: str, name: str, labels: dict, annotations: dict | None = None, **spec: Any) -> dict:
    container: dict[str, Any] = {
        "name": "main",
        "image": "registry.example/infer:1",
        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "1"}},
    }
    if "ports" in spec:
        container["ports"] = spec.pop("ports")
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations or {}},
        "spec": {
            "schedulerName": "gpufair",
            "priorityClassName": "gpufair-training",
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [container],
            **spec,
        },
    }
    return kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=body)


def _anti(app: str, key: str = HOST) -> dict:
    term = {"topologyKey": key, "labelSelector": {"matchLabels": {"app": app}}}
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}


def test_replicas_with_hostname_anti_affinity_spread_over_four_nodes(cluster, kube, ns):
    a = ns()
    for i in range(4):
        _pod(kube, a, f"infer-{i}", {"app": "infer"}, affinity=_anti("infer"))
    with InProcessDaemon(cluster.kubeconfig):
        placed = wait_for("4 replicas bound", lambda: len(bound(kube, a)) == 4 and bound(kube, a))
    assert len(set(placed.values())) == 4, placed


def test_two_pods_on_host_port_8080_end_on_different_nodes(cluster, kube, ns):
    a = ns()
    for i in range(2):
        _pod(kube, a, f"web-{i}", {"app": f"web-{i}"}, ports=[{"containerPort": 80, "hostPort": 8080}])
    with InProcessDaemon(cluster.kubeconfig):
        placed = wait_for("both bound", lambda: len(bound(kube, a)) == 2 and bound(kube, a))
    assert placed["web-0"] != placed["web-1"]


def test_eight_replicas_with_zone_spread_max_skew_one_end_balanced(cluster, kube, ns):
    a = ns()
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": ZONE,
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "svc"}},
        }
    ]
    for i in range(8):
        _pod(kube, a, f"svc-{i}", {"app": "svc"}, topologySpreadConstraints=spread)
    with InProcessDaemon(cluster.kubeconfig):
        placed = wait_for("8 replicas bound", lambda: len(bound(kube, a)) == 8 and bound(kube, a))
    zones = Counter(cluster.zone_of[n] for n in placed.values())
    assert zones == {"za": 4, "zb": 4}, zones


def test_a_gang_with_anti_affinity_among_its_pods_lands_on_distinct_nodes_or_not_at_all(cluster, kube, ns):
    a = ns()
    for i in range(4):
        _pod(
            kube,
            a,
            f"fit-{i}",
            {"app": "fit", "gpufair.io/gang": "fit"},
            {"gpufair.io/gang-size": "4"},
            affinity=_anti("fit"),
        )
    for i in range(9):  # one more pod than there are nodes
        _pod(
            kube,
            a,
            f"big-{i}",
            {"app": "big", "gpufair.io/gang": "big"},
            {"gpufair.io/gang-size": "9"},
            affinity=_anti("big"),
        )
    with InProcessDaemon(cluster.kubeconfig):
        placed = wait_for("the gang of 4 bound", lambda: len(bound(kube, a)) == 4 and bound(kube, a))
        assert sorted(placed) == [f"fit-{i}" for i in range(4)]
        assert len(set(placed.values())) == 4
        waiting = wait_for(
            "a reason on the gang of 9",
            lambda: all(
                condition(p).get("reason") == "Unschedulable"
                for n, p in pods_in(kube, a).items()
                if n.startswith("big")
            ),
        )
        assert waiting
        assert not [n for n in bound(kube, a) if n.startswith("big")]


def test_a_pod_no_node_admits_says_so_in_kube_scheduler_words(cluster, kube, ns):
    a = ns()
    zone_anti = _anti("solo", ZONE)
    _pod(kube, a, "solo-0", {"app": "solo"}, affinity=zone_anti)
    _pod(kube, a, "solo-1", {"app": "solo"}, affinity=zone_anti)
    _pod(kube, a, "solo-2", {"app": "solo"}, affinity=zone_anti)  # two zones only: one waits
    with InProcessDaemon(cluster.kubeconfig):
        wait_for("two bound", lambda: len(bound(kube, a)) == 2)
        left = wait_for(
            "the third's reason",
            lambda: next(
                (
                    p
                    for n, p in pods_in(kube, a).items()
                    if n not in bound(kube, a) and condition(p).get("message")
                ),
                None,
            ),
        )
    message = condition(left)["message"]
    assert "8 node(s) didn't match pod anti-affinity rules" in message, message
