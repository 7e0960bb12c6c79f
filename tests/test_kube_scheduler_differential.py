"""gpufair's node filters against the real kube-scheduler, on generated cases.

Random node labels, taints and cordons are written to the nodes of a real control plane; random
pods (nodeSelector, required node affinity with every operator, tolerations with every
operator and effect) are handed to the real kube-scheduler (`schedulerName:
default-scheduler`). For each pod, gpufair's feasibility on the same nodes (the core's
filters over the daemon's own translation of the API objects) must agree with the
verdict: the node kube-scheduler bound it to is one gpufair allows; a pod kube-scheduler
finds unschedulable is one gpufair allows nowhere, with the same node counts per reason.
A disagreement prints the nodes and the pod as a manifest to replay.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
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
from tests.daemon_support import kube_for, wait_for

ROUNDS = 10
PODS_PER_ROUND = 52
KEYS = ("pool", "zone", "tier", "rank")
VALUES = ("a", "b", "c")
TAINT_KEYS = ("dedicated", "gpu", "spot")
EFFECTS = ("NoSchedule", "NoExecute", "PreferNoSchedule")
OPS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
CORDON = "node.kubernetes.io/unschedulable"


@pytest.fixture(scope="module")
def cluster(kube_cluster_factory):
    return kube_cluster_factory(None, with_kube_scheduler=True)


def _node_labels(rng: random.Random) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for k in KEYS:
        if rng.random() < 0.6:
            out[f"d.test/{k}"] = str(rng.randint(1, 5)) if k == "rank" else rng.choice(VALUES)
        else:
            out[f"d.test/{k}"] = None  # removed by the merge patch
    return out


def _node_taints(rng: random.Random) -> list[dict[str, str]]:
    taints = {}
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        key = f"d.test/{rng.choice(TAINT_KEYS)}"
        t = {"key": key, "effect": rng.choice(EFFECTS)}
        if rng.random() < 0.7:
            t["value"] = rng.choice(VALUES)
        taints[(key, t["effect"])] = t
    return list(taints.values())


def _requirement(rng: random.Random) -> dict[str, Any]:
    op = rng.choice(OPS)
    key = f"d.test/{rng.choice(KEYS)}"
    r: dict[str, Any] = {"key": key, "operator": op}
    if op in ("In", "NotIn"):
        r["values"] = rng.sample(VALUES, rng.randint(1, 2))
    elif op in ("Gt", "Lt"):
        r["key"] = "d.test/rank"
        r["values"] = [str(rng.randint(0, 6))]
    return r


def _toleration(rng: random.Random) -> dict[str, Any]:
    t: dict[str, Any] = {}
    kind = rng.random()
    if kind < 0.08:
        t = {"key": CORDON, "operator": "Exists"}  # may go to a cordoned node
    elif kind < 0.16:
        t["operator"] = "Exists"  # no key: tolerates every taint (of the effect, if given)
    else:
        t["key"] = f"d.test/{rng.choice(TAINT_KEYS)}"
        if rng.random() < 0.4:
            t["operator"] = "Exists"
        else:
            t["operator"] = "Equal"
            t["value"] = rng.choice(VALUES)
    if rng.random() < 0.6:
        t["effect"] = rng.choice(EFFECTS)
    return t


def _pod(rng: random.Random, name: str, nodes: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {"name": "c", "image": "registry.example/app:1", "resources": {"requests": {"cpu": "1m"}}}
        ],
    }
    if rng.random() < 0.4:
        k = rng.choice(KEYS)
        spec["nodeSelector"] = {f"d.test/{k}": str(rng.randint(1, 5)) if k == "rank" else rng.choice(VALUES)}
    if rng.random() < 0.6:
        terms = []
        for _ in range(rng.randint(1, 2)):
            term: dict[str, Any] = {"matchExpressions": [_requirement(rng) for _ in range(rng.randint(1, 2))]}
            if rng.random() < 0.15:
                term["matchFields"] = [
                    {
                        "key": "metadata.name",
                        "operator": rng.choice(("In", "NotIn")),
                        "values": [rng.choice(nodes)],
                    }
                ]
            terms.append(term)
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
        }
    tolerations = [_toleration(rng) for _ in range(rng.choice((0, 1, 1, 2, 3)))]
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


_REASON = re.compile(r"(\d+) (node\(s\) [^,.]*|Insufficient [^,.]*)")


def _kube_counts(message: str) -> Counter[str]:
    """Per-reason node counts of a FailedScheduling message (before its preemption part)."""
    head = message.split(". preemption:")[0]
    out: Counter[str] = Counter()
    for n, text in _REASON.findall(head):
        if "taint" in text:
            out["taint"] += int(n)
        elif "affinity/selector" in text:
            out["affinity"] += int(n)
        elif "unschedulable" in text:
            out["unschedulable"] += int(n)
        else:
            out[text] += int(n)
    return out


def _ours(counts: list[tuple[str, int, str]]) -> Counter[str]:
    """gpufair's reasons, read the way kube-scheduler's message is."""
    return _kube_counts(", ".join(f"{n} {text}" for _, n, text in counts))


def _verdict(pod: dict[str, Any]) -> tuple[str, str] | None:
    node = pod["spec"].get("nodeName")
    if node:
        return "bound", node
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable":
            return "unschedulable", c.get("message", "")
    return None


def _replay(nodes: list[dict[str, Any]], pod: dict[str, Any]) -> str:
    docs = [
        {
            "kind": "Node",
            "metadata": {"name": n["metadata"]["name"], "labels": n["metadata"].get("labels")},
            "spec": {
                "taints": (n.get("spec") or {}).get("taints") or [],
                "unschedulable": bool((n.get("spec") or {}).get("unschedulable")),
            },
        }
        for n in nodes
    ]
    return yaml.safe_dump_all([*docs, {k: pod[k] for k in ("apiVersion", "kind", "metadata", "spec")}])


def _verdicts(kube: Any, ns: str, count: int) -> dict[str, tuple[str, str]] | None:
    items = kube.request("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
    got = {p["metadata"]["name"]: v for p in items if (v := _verdict(p)) is not None}
    return got if len(got) == count else None


def test_gpufair_filters_agree_with_kube_scheduler(cluster):
    kube = kube_for(cluster.kubeconfig)
    rng = random.Random(20261203)
    ns = "differential"
    kube.request(
        "POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    wait_for(
        "default ServiceAccount",
        lambda: kube.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts")["items"],
    )
    names = [n["metadata"]["name"] for n in kube.request("GET", "/api/v1/nodes")["items"]]
    cases = disagreements = bound_cases = unschedulable_cases = 0
    failures: list[str] = []
    for r in range(ROUNDS):
        for name in names:
            kube.request(
                "PATCH",
                f"/api/v1/nodes/{name}",
                body={
                    "metadata": {"labels": _node_labels(rng)},
                    "spec": {"taints": _node_taints(rng), "unschedulable": rng.random() < 0.12},
                },
                content_type="application/merge-patch+json",
            )
        nodes_raw = kube.request("GET", "/api/v1/nodes")["items"]
        nodes = [node_from_api(n) for n in nodes_raw]
        state = ClusterState(nodes, PolicyConfig())
        pods = [_pod(rng, f"r{r}-p{i}", names) for i in range(PODS_PER_ROUND)]
        for p in pods:
            kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=p)

        seen = wait_for(
            f"kube-scheduler's verdicts, round {r}", partial(_verdicts, kube, ns, len(pods)), timeout_s=90
        )
        for p in pods:
            cases += 1
            c = pod_constraints(p)
            gang = Gang(
                f"{ns}/{p['metadata']['name']}",
                "",
                (Pod(p["metadata"]["name"]),),
                constraints=(c,) if c else (),
            )
            mask = allowed(state, gang, DEFAULT_FILTERS)
            ok = state.placeable if mask is None else mask & state.placeable
            kind, detail = seen[p["metadata"]["name"]]
            if kind == "bound":
                bound_cases += 1
                agree = bool(ok[state.index[detail]])
                mine_nodes = [state.names[i] for i in ok.nonzero()[0]]
                why = f"kube-scheduler bound it to {detail}; gpufair allows {mine_nodes}"
            else:
                unschedulable_cases += 1
                theirs, mine = _kube_counts(detail), _ours(ruled_out(state, gang, DEFAULT_FILTERS))
                agree = not ok.any() and theirs == mine
                why = f"kube-scheduler: {detail!r} ({dict(theirs)}); gpufair: {dict(mine)}"
                why += f", allows {int(ok.sum())} node(s)"
            if not agree:
                disagreements += 1
                failures.append(f"--- case {p['metadata']['name']}: {why}\n{_replay(nodes_raw, p)}")
        kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods", query={"gracePeriodSeconds": 0})
        wait_for(
            "pods gone",
            lambda: not kube.request("GET", f"/api/v1/namespaces/{ns}/pods")["items"],
            timeout_s=60,
        )
        time.sleep(0.2)
    print(f"differential: {cases} cases ({bound_cases} bound, {unschedulable_cases} unschedulable),")
    print(f"differential: {disagreements} disagreements")
    assert cases >= 500 and bound_cases > 50 and unschedulable_cases > 50
    assert not failures, "\n".join(failures[:5])
