"""gpufair's volume filters against the real kube-scheduler, on generated cases.

Each case is one pod with a StorageClass of its own (WaitForFirstConsumer, no
provisioner), so cases do not share PVs: random PVs of that class (capacity, access modes,
volumeMode, labels, node affinity to random nodes or node labels, zone labels) and claims
(unbound, bound through the real PV controller, Immediate and unbound, or missing). The
nodes get random disk and zone labels. kube-scheduler (`schedulerName: default-scheduler`)
gives its verdict; gpufair's feasibility for the same pod on the same objects (the core's
filters over the daemon's own read of them, taken before any pod was scheduled) must agree:
the node kube-scheduler bound is one gpufair allows, a pod it finds unschedulable is one
gpufair allows nowhere, with the same node counts per reason, or the same PreFilter words.
A disagreement prints the objects as a manifest to replay.
"""

from __future__ import annotations

import random
import time
from functools import partial
from typing import Any

import pytest
import yaml

from scheduler.core.cluster import ClusterState
from scheduler.core.config import PolicyConfig
from scheduler.core.filters import DEFAULT_FILTERS, allowed, ruled_out
from scheduler.core.model import Gang, Pod
from scheduler.daemon.podspec import pod_constraints
from scheduler.daemon.translate import node_from_api
from scheduler.daemon.volumes import VolumeReader
from tests.daemon_support import kube_for, wait_for
from tests.test_kube_scheduler_differential import _kube_counts, _ours, _verdict

ROUNDS = 3
PODS_PER_ROUND = 40
ZONE = "topology.kubernetes.io/zone"
SIZES = ("1Gi", "5Gi", "10Gi", "20Gi")


@pytest.fixture(scope="module")
def cluster(kube_cluster_factory):
    return kube_cluster_factory(None, with_kube_scheduler=True)


def _pv(rng: random.Random, name: str, cls: str, nodes: list[str]) -> dict[str, Any]:
    modes = rng.choice((["ReadWriteOnce"], ["ReadWriteOnce", "ReadWriteMany"], ["ReadWriteMany"]))
    labels = {"d.test/tier": rng.choice(("x", "y"))}
    if rng.random() < 0.3:
        labels[ZONE] = rng.choice(("z1", "z2", "z1__z2"))
    spec: dict[str, Any] = {
        "capacity": {"storage": rng.choice(SIZES)},
        "accessModes": modes,
        "storageClassName": cls if rng.random() < 0.85 else "decoy",
        "hostPath": {"path": f"/mnt/{name}"},
    }
    if rng.random() < 0.1:
        spec["volumeMode"] = "Block"
    kind = rng.random()
    if kind < 0.5:
        values = rng.sample(nodes, rng.randint(1, 2))
        expr = {"key": "kubernetes.io/hostname", "operator": "In", "values": values}
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [expr]}]}}
    elif kind < 0.8:
        op = rng.choice(("In", "NotIn", "Exists"))
        expr = {"key": "d.test/disk", "operator": op}
        if op != "Exists":
            expr["values"] = [rng.choice("abc")]
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [expr]}]}}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }


def _pvc(rng: random.Random, name: str, cls: str, volume: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"] if rng.random() < 0.2 and not volume else ["ReadWriteOnce"],
        "storageClassName": cls,
        "resources": {"requests": {"storage": "1Gi" if volume else rng.choice(SIZES[:3])}},
    }
    if volume:
        spec["volumeName"] = volume
    else:
        if rng.random() < 0.1:
            spec["volumeMode"] = "Block"
        if rng.random() < 0.15:
            spec["selector"] = {"matchLabels": {"d.test/tier": rng.choice(("x", "y"))}}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec}


def _case(rng: random.Random, r: int, i: int, ns: str, nodes: list[str]) -> dict[str, list[dict[str, Any]]]:
    """One pod and the storage objects of its own class."""
    cls = f"d{r}-c{i}"
    out: dict[str, list[dict[str, Any]]] = {"classes": [], "pvs": [], "pvcs": [], "bound": []}
    out["classes"].append(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": cls},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
        }
    )
    out["pvs"] = [_pv(rng, f"{cls}-pv{k}", cls, nodes) for k in range(rng.choice((0, 1, 2, 2, 3, 4)))]
    claims = []
    for k in range(rng.choice((1, 1, 2))):
        name = f"{cls}-claim{k}"
        kind = rng.random()
        if kind < 0.55:
            out["pvcs"].append(_pvc(rng, name, cls))
        elif kind < 0.85:  # bound by the PV controller before the pod comes
            pv = _pv(rng, f"{cls}-b{k}", cls, nodes)
            pv["spec"].update(
                accessModes=["ReadWriteOnce"], storageClassName=cls, capacity={"storage": "5Gi"}
            )
            pv["spec"].pop("volumeMode", None)
            out["pvs"].append(pv)
            out["pvcs"].append(_pvc(rng, name, cls, volume=pv["metadata"]["name"]))
            out["bound"].append({"metadata": {"name": name}})
        elif kind < 0.95:
            out["pvcs"].append(_pvc(rng, name, f"imm-{r}"))  # Immediate, and no PV: never bound
        claims.append(name)  # the rest are never created
    spec: dict[str, Any] = {
        "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 0,
        "tolerations": [{"operator": "Exists"}],
        "containers": [
            {"name": "c", "image": "registry.example/app:1", "resources": {"requests": {"cpu": "1m"}}}
        ],
        "volumes": [
            {"name": f"v{k}", "persistentVolumeClaim": {"claimName": c}} for k, c in enumerate(claims)
        ],
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{cls}-pod", "namespace": ns},
        "spec": spec,
    }
    out["pod"] = [pod]
    return out


def _replay(nodes: list[dict[str, Any]], case: dict[str, list[dict[str, Any]]]) -> str:
    docs: list[dict[str, Any]] = [
        {"kind": "Node", "metadata": {"name": n["metadata"]["name"], "labels": n["metadata"].get("labels")}}
        for n in nodes
    ]
    for key in ("classes", "pvs", "pvcs", "pod"):
        docs.extend(case[key])
    return yaml.safe_dump_all(docs)


def _all_verdicts(kube: Any, ns: str, count: int) -> dict[str, tuple[str, str]] | None:
    items = kube.request("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
    got = {p["metadata"]["name"]: v for p in items if (v := _verdict(p)) is not None}
    return got if len(got) == count else None


def _settled(kube: Any, ns: str, bound: set[str], pvs: set[str]) -> bool:
    claims = kube.request("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims")["items"]
    done = {c["metadata"]["name"] for c in claims if (c.get("status") or {}).get("phase") == "Bound"}
    phases = {
        v["metadata"]["name"]: (v.get("status") or {}).get("phase")
        for v in kube.request("GET", "/api/v1/persistentvolumes")["items"]
    }
    return bound <= done and all(phases.get(p) in ("Available", "Bound") for p in pvs)


def test_gpufair_volume_filters_agree_with_kube_scheduler(cluster):
    kube = kube_for(cluster.kubeconfig)
    rng = random.Random(20261217)
    names = [n["metadata"]["name"] for n in kube.request("GET", "/api/v1/nodes")["items"]]
    cases = disagreements = bound_cases = unschedulable_cases = wait_cases = 0
    failures: list[str] = []
    for r in range(ROUNDS):
        ns = f"vol-differential-{r}"
        kube.request(
            "POST",
            "/api/v1/namespaces",
            body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        )
        wait_for(
            "default ServiceAccount",
            lambda ns=ns: kube.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts")["items"],
        )
        for name in names:
            labels = {
                "d.test/disk": rng.choice(("a", "b", "c", None)),
                ZONE: rng.choice(("z1", "z2", None, None)),
            }
            kube.request(
                "PATCH",
                f"/api/v1/nodes/{name}",
                body={"metadata": {"labels": labels}},
                content_type="application/merge-patch+json",
            )
        imm = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": f"imm-{r}"},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
        }
        kube.request("POST", "/apis/storage.k8s.io/v1/storageclasses", body=imm)
        batch = [_case(rng, r, i, ns, names) for i in range(PODS_PER_ROUND)]
        for case in batch:
            for sc in case["classes"]:
                kube.request("POST", "/apis/storage.k8s.io/v1/storageclasses", body=sc)
            for pv in case["pvs"]:
                kube.request("POST", "/api/v1/persistentvolumes", body=pv)
            for pvc in case["pvcs"]:
                kube.request("POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", body=pvc)
        want_bound = {b["metadata"]["name"] for c in batch for b in c["bound"]}
        want_pvs = {v["metadata"]["name"] for c in batch for v in c["pvs"]}
        wait_for(
            "claims bound by the PV controller",
            partial(_settled, kube, ns, want_bound, want_pvs),
            timeout_s=90,
        )
        # The state both schedulers decide from, read before any pod exists.
        nodes_raw = kube.request("GET", "/api/v1/nodes")["items"]
        state = ClusterState([node_from_api(n) for n in nodes_raw], PolicyConfig())
        reader = VolumeReader(
            kube.request("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims")["items"],
            kube.request("GET", "/api/v1/persistentvolumes")["items"],
            kube.request("GET", "/apis/storage.k8s.io/v1/storageclasses")["items"],
        )
        for case in batch:
            kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=case["pod"][0])
        seen = wait_for(
            f"kube-scheduler's verdicts, round {r}",
            partial(_all_verdicts, kube, ns, len(batch)),
            timeout_s=90,
        )
        for case in batch:
            p = case["pod"][0]
            cases += 1
            c = pod_constraints(p, reader.read)
            gang = Gang(
                f"{ns}/{p['metadata']['name']}",
                "",
                (Pod(p["metadata"]["name"]),),
                constraints=(c,) if c else (),
            )
            waits = [w for v in (c.volumes if c else ()) for w in v.waits]
            mask = allowed(state, gang, DEFAULT_FILTERS)
            ok = state.schedulable if mask is None else mask & state.schedulable
            kind, detail = seen[p["metadata"]["name"]]
            if kind == "bound":
                bound_cases += 1
                agree = not waits and bool(ok[state.index[detail]])
                mine = [state.names[i] for i in ok.nonzero()[0]]
                why = f"kube-scheduler bound it to {detail}; gpufair allows {mine}, waits {waits}"
            elif waits:
                unschedulable_cases += 1
                wait_cases += 1
                agree = waits[0].split(" (storageclass")[0] in detail
                why = f"kube-scheduler: {detail!r}; gpufair waits: {waits}"
            else:
                unschedulable_cases += 1
                theirs, ours = _kube_counts(detail), _ours(ruled_out(state, gang, DEFAULT_FILTERS))
                agree = not ok.any() and theirs == ours
                why = f"kube-scheduler: {detail!r} ({dict(theirs)}); gpufair: {dict(ours)}"
                why += f", allows {int(ok.sum())} node(s)"
            if not agree:
                disagreements += 1
                failures.append(f"--- case {p['metadata']['name']}: {why}\n{_replay(nodes_raw, case)}")
        kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods", query={"gracePeriodSeconds": 0})
        time.sleep(0.2)
    print(f"volume differential: {cases} cases ({bound_cases} bound, {unschedulable_cases} unschedulable),")
    print(f"volume differential: {disagreements} disagreements ({wait_cases} PreFilter waits)")
    assert cases >= 100 and bound_cases > 20 and unschedulable_cases > 20 and wait_cases > 5
    assert not failures, "\n".join(failures[:5])
