"""The daemon binds pods with PersistentVolumeClaims on a real API server, with the real
controller manager's PV binder finishing the bindings it starts: a WaitForFirstConsumer
claim on a local PV ends Bound and its pod lands on the PV's node; an unbound Immediate
claim keeps its pod waiting with kube-scheduler's reason; two pods and one PV: one binds,
the other waits saying why."""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

import pytest

from scheduler.daemon.kube import KubeError
from tests.daemon_support import (
    InProcessDaemon,
    bound,
    condition,
    install_crds_and_priorities,
    kube_for,
    make_team,
    pods_in,
    wait_for,
)


@pytest.fixture
def kube(kube_cluster):
    k = kube_for(kube_cluster.kubeconfig)
    install_crds_and_priorities(k)
    return k


@pytest.fixture
def storage(kube, kube_namespace):
    """Makes cluster-scoped StorageClasses and PVs named for this test, and removes them
    (and the test's GPUTeam) afterwards."""
    tag = secrets.token_hex(3)
    made: list[str] = []
    team = f"vol-{tag}"
    make_team(kube, team, [kube_namespace])

    def cls(mode: str = "WaitForFirstConsumer") -> str:
        name = f"local-{tag}-{mode.lower()}"
        body = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": mode,
        }
        kube.request("POST", "/apis/storage.k8s.io/v1/storageclasses", body=body)
        made.append(f"/apis/storage.k8s.io/v1/storageclasses/{name}")
        return name

    def pv(name: str, node: str, sc: str, size: str = "10Gi") -> str:
        name = f"{name}-{tag}"
        terms = [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
        ]
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": sc,
                "local": {"path": "/mnt/disks/d1"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": terms}},
            },
        }
        kube.request("POST", "/api/v1/persistentvolumes", body=body)
        made.append(f"/api/v1/persistentvolumes/{name}")
        return name

    def pvc(name: str, sc: str, size: str = "5Gi") -> None:
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": sc,
                "resources": {"requests": {"storage": size}},
            },
        }
        kube.request("POST", f"/api/v1/namespaces/{kube_namespace}/persistentvolumeclaims", body=body)

    yield cls, pv, pvc
    kube.request("DELETE", f"/api/v1/namespaces/{kube_namespace}/pods", query={"gracePeriodSeconds": 0})
    kube.request("DELETE", f"/api/v1/namespaces/{kube_namespace}/persistentvolumeclaims")
    for path in made:
        with contextlib.suppress(KubeError):
            kube.request("DELETE", path)
    kube.request("DELETE", f"/apis/gpufair.io/v1alpha1/gputeams/{team}")


def pod_with_claims(kube, ns: str, name: str, *claims: str) -> dict:
    """A gpufair pod of 1 GPU that mounts the claims."""
    spec: dict[str, Any] = {
        "schedulerName": "gpufair",
        "priorityClassName": "gpufair-training",
        "containers": [
            {
                "name": "main",
                "image": "registry.example/trainer:1",
                "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "1"}},
            }
        ],
        "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 0,
        "volumes": [
            {"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)
        ],
    }
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec}
    return kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=body)


def claim(kube, ns: str, name: str) -> dict:
    return kube.request("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}")


def test_a_wait_for_first_consumer_claim_on_a_local_pv_ends_bound_with_its_pod_on_the_pvs_node(
    kube_cluster, kube, kube_namespace, storage
):
    cls, pv, pvc = storage
    ns = kube_namespace
    nodes = kube_cluster.node_names
    target = nodes[5]
    sc = cls()
    volume = pv("disk", target, sc)
    pvc("data", sc)
    time.sleep(1)  # the PV controller sees the claim waits for its first consumer
    assert not claim(kube, ns, "data")["spec"].get("volumeName")
    pod_with_claims(kube, ns, "trainer", "data")
    with InProcessDaemon(kube_cluster.kubeconfig):
        placed = wait_for("the pod bound", lambda: bound(kube, ns))
        done = wait_for(
            "the claim Bound", lambda: (c := claim(kube, ns, "data"))["status"].get("phase") == "Bound" and c
        )
    assert placed == {"trainer": target}
    assert done["spec"]["volumeName"] == volume


def test_an_unbound_immediate_claim_keeps_its_pod_waiting_with_the_reason(
    kube_cluster, kube, kube_namespace, storage
):
    cls, _pv, pvc = storage
    ns = kube_namespace
    pvc("data", cls("Immediate"))  # no PV: it stays Pending
    pod_with_claims(kube, ns, "trainer", "data")
    with InProcessDaemon(kube_cluster.kubeconfig):
        cond = wait_for(
            "the reason",
            lambda: (c := condition(pods_in(kube, ns)["trainer"])).get("status") == "False" and c,
        )
        time.sleep(1.5)
        assert not bound(kube, ns)
    assert "pod has unbound immediate PersistentVolumeClaims" in cond["message"], cond


def test_two_pods_one_pv_one_binds_and_the_other_waits(kube_cluster, kube, kube_namespace, storage):
    cls, pv, pvc = storage
    ns = kube_namespace
    target = kube_cluster.node_names[2]
    sc = cls()
    pv("only", target, sc)
    pvc("c1", sc)
    pvc("c2", sc)
    pod_with_claims(kube, ns, "p1", "c1")
    pod_with_claims(kube, ns, "p2", "c2")
    with InProcessDaemon(kube_cluster.kubeconfig):
        placed = wait_for("one pod bound", lambda: bound(kube, ns))
        loser = ({"p1", "p2"} - set(placed)).pop()
        cond = wait_for(
            "the other's reason",
            lambda: (
                "persistent volumes to bind" in (condition(pods_in(kube, ns)[loser]).get("message") or "")
                and condition(pods_in(kube, ns)[loser])
            ),
        )
        time.sleep(2)
        assert bound(kube, ns) == placed
    assert list(placed.values()) == [target]
    assert "didn't find available persistent volumes to bind" in cond["message"]
    claims = {c: claim(kube, ns, c) for c in ("c1", "c2")}
    assert sorted(c["status"].get("phase") for c in claims.values()) == ["Bound", "Pending"]


def test_a_gang_whose_pods_cannot_all_have_a_pv_binds_none_of_them(
    kube_cluster, kube, kube_namespace, storage
):
    """Both pods' claims can reach the one PV, so the core places the gang; only one claim
    can have it, so the daemon binds neither pod (all-or-nothing), until a second PV comes."""
    cls, pv, pvc = storage
    ns = kube_namespace
    target = kube_cluster.node_names[3]
    sc = cls()
    pv("first", target, sc)
    for i in range(2):
        pvc(f"g{i}", sc)
    for i in range(2):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"w{i}",
                "namespace": ns,
                "labels": {"gpufair.io/gang": "pair"},
                "annotations": {"gpufair.io/gang-size": "2"},
            },
            "spec": {
                "schedulerName": "gpufair",
                "priorityClassName": "gpufair-training",
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.example/trainer:1",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "1"}},
                    }
                ],
                "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
                "terminationGracePeriodSeconds": 0,
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": f"g{i}"}}],
            },
        }
        kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=pod)
    with InProcessDaemon(kube_cluster.kubeconfig):
        wait_for(
            "a pod of the gang told why",
            lambda: any(
                "persistent volumes to bind" in (condition(p).get("message") or "")
                for p in pods_in(kube, ns).values()
            ),
        )
        time.sleep(3)
        assert bound(kube, ns) == {}, "half a gang was bound"
        pv("second", target, sc)
        got = wait_for("the whole gang bound", lambda: len(bound(kube, ns)) == 2 and bound(kube, ns))
    assert set(got.values()) == {target}
