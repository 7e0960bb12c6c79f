"""gpufair's NodeResourcesFit against the real kube-scheduler, on generated cases; and the
daemon fitting extended resources and hugepages on a real API server.

Each round writes random allocatable amounts to the nodes of a real control plane (through
their /status subresource): GPUs, CPU, memory, a small `pods` count, ephemeral-storage,
hugepages and extended resources, some left out altogether, and binds a few pods straight
to nodes that use part of them. Random pods (init containers, sidecars, every resource, a
nodeSelector now and then) are then handed to the real kube-scheduler one at a time, so each
meets the state the pods before it left. gpufair reads the same API objects with the daemon's
translation and must agree: the node kube-scheduler bound the pod to is one gpufair fits it
on, and a pod kube-scheduler finds unschedulable fits nowhere for gpufair either, with the
same node counts per reason ("3 Insufficient rdma/ib", "2 Too many pods", ...), which the
core's own pending reason repeats. A disagreement prints a manifest to replay.
"""

from __future__ import annotations

import copy
import random
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
import yaml

from scheduler.core import decide
from scheduler.core.cluster import ClusterState, Shape
from scheduler.core.config import PolicyConfig
from scheduler.core.filters import DEFAULT_FILTERS, allowed, ruled_out
from scheduler.core.intake import read_running
from scheduler.core.model import Gang, Pod
from scheduler.core.resources import shortfalls
from scheduler.daemon.podspec import pod_constraints
from scheduler.daemon.translate import SnapshotBuilder, resource_requests, split_requests
from tests.daemon_support import (
    InProcessDaemon,
    condition,
    install_crds_and_priorities,
    kube_for,
    make_namespace,
    make_team,
    pods_in,
    wait_for,
)

ROUNDS = 10
PODS_PER_ROUND = 16
NS = "differential-resources"
POOL = "d.test/pool"
# Each resource, what a node may advertise of it (None: not at all), and what a pod may ask.
RESOURCES: dict[str, tuple[tuple[str | None, ...], tuple[str, ...]]] = {
    "nvidia.com/gpu": (("0", "2", "4", "8"), ("1", "2", "4")),
    "cpu": (("2", "4", "8"), ("100m", "500m", "1", "2", "3")),
    "memory": (("4Gi", "8Gi", "16Gi"), ("256Mi", "1Gi", "3Gi", "6Gi")),
    "pods": (("1", "2", "3", "4", "6", "110"), ()),
    "ephemeral-storage": ((None, "10Gi", "50Gi"), ("500Mi", "5Gi", "20Gi")),
    "hugepages-2Mi": ((None, "0", "8Mi", "64Mi"), ("2Mi", "4Mi", "16Mi")),
    "hugepages-1Gi": ((None, None, "2Gi"), ("1Gi",)),
    "rdma/ib": ((None, "1", "2", "4"), ("1", "2")),
    "example.com/foo": ((None, None, "1", "3"), ("1", "2")),
    "nvidia.com/mig-1g.10gb": ((None, None, "7", "14"), ("1", "3")),
}
# Requested as limits too: kube-apiserver wants limits equal to requests for these.
NOT_OVERCOMMITTED = ("nvidia.com/gpu", "hugepages-", "rdma/ib", "example.com/", "nvidia.com/mig-")
TOLERATE_KWOK = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.fixture(scope="module")
def cluster(kube_cluster_factory):
    c = kube_cluster_factory(None, with_kube_scheduler=True)
    kube = kube_for(c.kubeconfig)
    install_crds_and_priorities(kube)
    make_namespace(kube, NS)
    return c


def _node_status(rng: random.Random) -> dict[str, str | None]:
    return {name: rng.choice(offered) for name, (offered, _) in RESOURCES.items()}


def _resources(requests: dict[str, str]) -> dict[str, dict[str, str]]:
    limits = {k: v for k, v in requests.items() if k.startswith(NOT_OVERCOMMITTED)}
    out = {"requests": dict(requests)}
    if limits:
        out["limits"] = limits
    return out


def _container(name: str, requests: dict[str, str], restart: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "registry.example/app:1", "resources": _resources(requests)}
    if restart:
        c["restartPolicy"] = restart
    return c


def _asks(rng: random.Random, chance: float) -> dict[str, str]:
    out = {"cpu": rng.choice(RESOURCES["cpu"][1])}  # hugepages need a CPU or memory request
    for name, (_, asked) in RESOURCES.items():
        if asked and name != "cpu" and rng.random() < chance:
            out[name] = rng.choice(asked)
    return out


def _pod(rng: random.Random, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 0,
        "tolerations": TOLERATE_KWOK,
        "containers": [_container("c", _asks(rng, 0.3))],
    }
    if rng.random() < 0.3:
        spec["containers"].append(_container("d", _asks(rng, 0.2)))
    if rng.random() < 0.3:
        spec["initContainers"] = [
            _container(f"i{k}", _asks(rng, 0.2), "Always" if rng.random() < 0.5 else None)
            for k in range(rng.randint(1, 2))
        ]
    if rng.random() < 0.2:
        spec["nodeSelector"] = {POOL: "a"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}, "spec": spec}


_COUNTED = ("nvidia.com/gpu", "rdma/ib", "example.com/foo", "nvidia.com/mig-1g.10gb")


def _running(rng: random.Random, name: str, node: str, left: dict[str, int]) -> dict[str, Any]:
    """A pod bound straight to `node`, asking for one of what is `left` there (never over)."""
    requests = {"cpu": "100m"}
    for res in _COUNTED:
        if left.get(res, 0) > 0 and rng.random() < 0.5:
            requests[res] = "1"
            left[res] -= 1
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "nodeName": node,
            "schedulerName": "default-scheduler",
            "terminationGracePeriodSeconds": 0,
            "tolerations": TOLERATE_KWOK,
            "containers": [_container("c", requests)],
        },
    }


def _kube_counts(message: str) -> Counter[str]:
    """Per-reason node counts of a FailedScheduling message (before its preemption part)."""
    head = message.split(". preemption:")[0].rstrip(".")
    _, _, reasons = head.partition("nodes are available: ")
    out: Counter[str] = Counter()
    for part in reasons.split(", "):
        n, _, text = part.partition(" ")
        out[text] += int(n)
    return out


def _verdict(pod: dict[str, Any]) -> tuple[str, str] | None:
    node = pod["spec"].get("nodeName")
    if node:
        return "bound", node
    c = condition(pod)
    if c.get("status") == "False" and c.get("reason") == "Unschedulable":
        return "unschedulable", c.get("message", "")
    return None


def _replay(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], pod: dict[str, Any]) -> str:
    docs = [
        {
            "kind": "Node",
            "metadata": {"name": n["metadata"]["name"], "labels": n["metadata"].get("labels")},
            "status": {"allocatable": n["status"].get("allocatable")},
        }
        for n in nodes
    ]
    docs += [{k: p[k] for k in ("apiVersion", "kind", "metadata", "spec")} for p in pods]
    return yaml.safe_dump_all([*docs, {k: pod[k] for k in ("apiVersion", "kind", "metadata", "spec")}])


def _gpufair(kube: Any, pod: dict[str, Any]) -> tuple[np.ndarray, Counter[str], ClusterState, str | None]:
    """gpufair's fit for `pod` on the cluster as it stands: the nodes it fits on, its reason
    counts, and what the core itself says (None: it binds the pod)."""
    nodes_raw = kube.request("GET", "/api/v1/nodes")["items"]
    pods_raw = kube.request("GET", "/api/v1/pods")["items"]
    now = time.time()
    snap = SnapshotBuilder([]).build(now, nodes_raw, pods_raw).snapshot
    state = ClusterState(snap.nodes, PolicyConfig())
    run, _ = read_running(snap.gangs, {}, 0, state.index, now)
    state.load_running(
        run.pod_node, run.pod_gpus, run.pod_milli, run.pod_cpu, run.pod_mem, run.indices, run.extras
    )
    gpus, cpu, mem, extras = split_requests(resource_requests(pod))
    shape = Shape(gpus, 0, cpu, mem, extras)
    c = pod_constraints(pod)
    gang = Gang(f"{NS}/x", "", (Pod("x"),), constraints=(c,) if c else ())
    mask = allowed(state, gang, DEFAULT_FILTERS)
    ok = state.schedulable if mask is None else state.schedulable & mask
    fits = ok & (state.capacity(shape) > 0)
    counts = Counter(
        {text: n for _, n, text in (*ruled_out(state, gang, DEFAULT_FILTERS), *shortfalls(state, shape, ok))}
    )
    # The core's own decision on the same objects, the pod as gpufair's, of a team.
    mine = copy.deepcopy(pod)
    mine["spec"]["schedulerName"] = "gpufair"
    mine["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    team = {
        "apiVersion": "gpufair.io/v1alpha1",
        "kind": "GPUTeam",
        "metadata": {"name": "t"},
        "spec": {"namespaces": [NS]},
    }
    d = decide(SnapshotBuilder([team]).build(now, nodes_raw, [*pods_raw, mine]).snapshot)
    said = None if d.binds else (d.pending[0].reason if d.pending else "")
    return fits, counts, state, said


def test_gpufair_fits_every_resource_as_kube_scheduler_does(cluster):
    kube = kube_for(cluster.kubeconfig)
    rng = random.Random(20261203)
    names = [n["metadata"]["name"] for n in kube.request("GET", "/api/v1/nodes")["items"]]
    cases = disagreements = bound_cases = unschedulable_cases = 0
    kinds: Counter[str] = Counter()
    failures: list[str] = []
    for r in range(ROUNDS):
        statuses = {}
        for name in names:
            status = statuses[name] = _node_status(rng)
            kube.request(
                "PATCH",
                f"/api/v1/nodes/{name}/status",
                body={"status": {"capacity": status, "allocatable": status}},
                content_type="application/merge-patch+json",
            )
            kube.request(
                "PATCH",
                f"/api/v1/nodes/{name}",
                body={"metadata": {"labels": {POOL: rng.choice("ab")}}},
                content_type="application/merge-patch+json",
            )
        running = []
        for name in names:
            room = int(statuses[name]["pods"] or 0)
            left = {res: int(statuses[name][res] or 0) for res in _COUNTED}
            for k in range(rng.randint(0, min(2, room))):
                body = _running(rng, f"r{r}-{name}-{k}", name, left)
                kube.request("POST", f"/api/v1/namespaces/{NS}/pods", body=body)
                running.append(body)
        wait_for(
            f"round {r}'s running pods",
            lambda: all(p.get("status", {}).get("phase") == "Running" for p in pods_in(kube, NS).values()),
            timeout_s=60,
        )
        time.sleep(0.5)  # kube-scheduler's informers see the node updates and the bound pods
        for i in range(PODS_PER_ROUND):
            pod = _pod(rng, f"r{r}-p{i}")
            fits, mine, state, said = _gpufair(kube, pod)
            kube.request("POST", f"/api/v1/namespaces/{NS}/pods", body=pod)
            got = wait_for(
                f"kube-scheduler's verdict on {pod['metadata']['name']}",
                lambda name=pod["metadata"]["name"]: _verdict(pods_in(kube, NS)[name]),
                timeout_s=30,
                every_s=0.05,
            )
            cases += 1
            kind, detail = got
            nodes_raw = kube.request("GET", "/api/v1/nodes")["items"]
            if kind == "bound":
                bound_cases += 1
                agree = bool(fits[state.index[detail]]) and said is None
                why = f"kube-scheduler bound it to {detail}; gpufair fits it on "
                why += f"{[state.names[k] for k in np.flatnonzero(fits)]}"
                why += f" and {'binds it' if said is None else repr(said)}"
            else:
                unschedulable_cases += 1
                theirs = _kube_counts(detail)
                kinds.update(theirs)
                agree = not fits.any() and theirs == mine and said is not None
                # The core says the same counts where something besides GPUs is short (where
                # GPUs are short too it may speak of them in its own words).
                if (
                    agree
                    and "Insufficient nvidia.com/gpu" not in mine
                    and any("node(s)" not in t for t in mine)
                ):
                    agree = ", ".join(sorted(f"{n} {t}" for t, n in mine.items())) in said
                why = f"kube-scheduler: {detail!r}; gpufair: {dict(mine)}, "
                why += f"fits {int(fits.sum())} node(s), says {said!r}"
            if not agree:
                disagreements += 1
                failures.append(
                    f"--- case {pod['metadata']['name']}: {why}\n{_replay(nodes_raw, running, pod)}"
                )
        kube.request("DELETE", f"/api/v1/namespaces/{NS}/pods", query={"gracePeriodSeconds": 0})
        wait_for("pods gone", lambda: not pods_in(kube, NS), timeout_s=60)
    print(
        f"differential (resources): {cases} cases ({bound_cases} bound, {unschedulable_cases} unschedulable)"
    )
    print(f"differential (resources): reasons seen {dict(kinds)}")
    print(f"differential (resources): {disagreements} disagreements")
    assert not failures, "\n".join(failures[:5])
    assert cases >= 150 and bound_cases > 30 and unschedulable_cases > 30
    for reason in ("Too many pods", "Insufficient rdma/ib", "Insufficient hugepages-2Mi", "Insufficient cpu"):
        assert kinds[reason], f"no case where {reason!r} counted"


def test_the_daemon_fits_extended_resources_and_says_which_is_short(cluster):
    kube = kube_for(cluster.kubeconfig)
    names = sorted(n["metadata"]["name"] for n in kube.request("GET", "/api/v1/nodes")["items"])
    for k, name in enumerate(names):
        status = {res: None for res in RESOURCES if res not in ("cpu", "memory", "pods", "nvidia.com/gpu")}
        status.update({"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "8"})
        if k == 3:
            status["rdma/ib"] = "1"
        kube.request(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            body={"status": {"capacity": status, "allocatable": status}},
            content_type="application/merge-patch+json",
        )
    ns = "resources-daemon"
    make_namespace(kube, ns)
    make_team(kube, "res", [ns])

    def pod(name: str, requests: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "schedulerName": "gpufair",
                "priorityClassName": "gpufair-training",
                "terminationGracePeriodSeconds": 0,
                "tolerations": TOLERATE_KWOK,
                "containers": [_container("c", {"cpu": "1", **requests})],
            },
        }

    kube.request(
        "POST", f"/api/v1/namespaces/{ns}/pods", body=pod("ib", {"rdma/ib": "1", "nvidia.com/gpu": "1"})
    )
    kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=pod("huge", {"hugepages-2Mi": "4Mi"}))
    with InProcessDaemon(cluster.kubeconfig):
        node = wait_for("the rdma/ib pod bound", lambda: pods_in(kube, ns)["ib"]["spec"].get("nodeName"))
        msg = wait_for(
            "the hugepages pod's reason", lambda: condition(pods_in(kube, ns)["huge"]).get("message")
        )
        assert not pods_in(kube, ns)["huge"]["spec"].get("nodeName")
    assert node == names[3]
    assert f"0/{len(names)} nodes are available: {len(names)} Insufficient hugepages-2Mi" in msg
