"""gpufair's pod-dependent filters (NodePorts, InterPodAffinity, PodTopologySpread) against the
real kube-scheduler, on generated cases.

Each round labels the nodes of a real control plane with random zones (some without) and
taints, and pins existing pods to them with spec.nodeName (random labels, host ports, some
with required anti-affinity). Then random pods (host ports, required pod affinity and
anti-affinity on hostname and zone keys across namespaces and namespace selectors,
DoNotSchedule spread with maxSkew, minDomains, node inclusion policies, matchLabelKeys) go
to the real kube-scheduler one at a time. For each, gpufair's feasibility on the same state
(the core's filters over the daemon's own translation, against the pods bound at that
moment) must agree: the node kube-scheduler bound it to is one gpufair allows; a pod it
finds unschedulable is one gpufair allows nowhere, with the same node counts per reason. An
unschedulable pod is deleted before the next is sent (so it cannot bind later behind the
comparison's back); a bound one stays, and the next pod sees it. A disagreement prints the
nodes, the pods bound and the pod as a manifest to replay.
"""

from __future__ import annotations

import random
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
from scheduler.core.podindex import PodIndex
from scheduler.daemon.podspec import pod_constraints
from scheduler.daemon.podterms import pod_labels, pod_terms
from scheduler.daemon.translate import node_from_api, pod_key
from tests.daemon_support import kube_for, wait_for
from tests.test_kube_scheduler_differential import _kube_counts, _ours, _verdict

ROUNDS = 8
EXISTING = 12
INCOMING = 40
HOST = "kubernetes.io/hostname"
ZONE = "d.test/zone"
NAMESPACES = {"dt-x": "x", "dt-y": "y"}
APPS = ("web", "db", "cache")
SPOT = {"key": "d.test/spot", "value": "x", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def cluster(kube_cluster_factory):
    return kube_cluster_factory(None, with_kube_scheduler=True)


def _labels(rng: random.Random) -> dict[str, str]:
    out = {}
    if rng.random() < 0.9:
        out["app"] = rng.choice(APPS)
    if rng.random() < 0.5:
        out["tier"] = rng.choice(("1", "2"))
    return out


def _selector(rng: random.Random) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.6:
        return {"matchLabels": {"app": rng.choice(APPS)}}
    if kind < 0.8:
        return {"matchExpressions": [{"key": "app", "operator": "In", "values": rng.sample(APPS, 2)}]}
    if kind < 0.9:
        return {"matchExpressions": [{"key": "tier", "operator": rng.choice(("Exists", "DoesNotExist"))}]}
    return {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [rng.choice(APPS)]}]}


def _term(rng: random.Random) -> dict[str, Any]:
    term: dict[str, Any] = {"topologyKey": rng.choice((HOST, HOST, ZONE)), "labelSelector": _selector(rng)}
    which = rng.random()
    if which < 0.2:
        term["namespaces"] = [rng.choice(list(NAMESPACES))]
    elif which < 0.3:
        term["namespaceSelector"] = {}
    elif which < 0.4:
        term["namespaceSelector"] = {"matchLabels": {"d.test/team": rng.choice(("x", "y"))}}
    if rng.random() < 0.1 and "tier" not in str(term["labelSelector"]):
        term["matchLabelKeys"] = ["tier"]
    return term


def _ports(rng: random.Random) -> list[dict[str, Any]]:
    port: dict[str, Any] = {"containerPort": 80, "hostPort": rng.choice((8080, 8081))}
    if rng.random() < 0.25:
        port["protocol"] = "UDP"
    ip = rng.choice(("", "", "10.0.0.1", "10.0.0.2", "0.0.0.0"))
    if ip:
        port["hostIP"] = ip
    return [port]


def _spread(rng: random.Random, key: str) -> dict[str, Any]:
    c: dict[str, Any] = {
        "maxSkew": rng.choice((1, 1, 2)),
        "topologyKey": key,
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": _selector(rng),
    }
    if rng.random() < 0.2:
        c["minDomains"] = rng.randint(2, 4)
    if rng.random() < 0.15:
        c["nodeAffinityPolicy"] = "Ignore"
    if rng.random() < 0.2:
        c["nodeTaintsPolicy"] = "Honor"
    if rng.random() < 0.15 and "tier" not in str(c["labelSelector"]):
        c["matchLabelKeys"] = ["tier"]
    return c


def _pod(rng: random.Random, name: str, node: str | None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "c",
        "image": "registry.example/app:1",
        "resources": {"requests": {"cpu": "1m"}},
    }
    spec: dict[str, Any] = {"schedulerName": "default-scheduler", "terminationGracePeriodSeconds": 0}
    affinity: dict[str, Any] = {}
    if node is not None:  # an existing pod, pinned
        spec["nodeName"] = node
        if rng.random() < 0.3:
            container["ports"] = _ports(rng)
        if rng.random() < 0.3:
            affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [_term(rng)]}
    else:
        if rng.random() < 0.25:
            container["ports"] = _ports(rng)
        if rng.random() < 0.25:
            affinity["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [_term(rng)]}
        if rng.random() < 0.35:
            terms = [_term(rng) for _ in range(rng.choice((1, 1, 2)))]
            affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": terms}
        if rng.random() < 0.4:
            keys = rng.sample((ZONE, ZONE, HOST), 1) if rng.random() < 0.7 else [ZONE, HOST]
            spec["topologySpreadConstraints"] = [_spread(rng, k) for k in keys]
        if rng.random() < 0.15:
            spec["nodeSelector"] = {ZONE: rng.choice(("a", "b"))}
        if rng.random() < 0.5:
            spec["tolerations"] = [{"key": SPOT["key"], "operator": "Exists"}]
    if affinity:
        spec["affinity"] = affinity
    spec["containers"] = [container]
    ns = rng.choice(list(NAMESPACES))
    meta = {"name": name, "namespace": ns, "labels": _labels(rng)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _gang(obj: dict[str, Any], known: dict[str, dict[str, str]]) -> Gang:
    """A pod as the daemon translates it, alone in its gang."""
    terms, unread = pod_terms(obj, known)
    assert not unread, unread
    c = pod_constraints(obj)
    pod = Pod(
        pod_key(obj),
        node=obj["spec"].get("nodeName"),
        labels=pod_labels(obj),
        namespace=obj["metadata"]["namespace"],
    )
    return Gang(pod_key(obj), "", (pod,), constraints=(c,) if c else (), terms=(terms,) if terms else ())


def _replay(nodes: list[dict[str, Any]], placed: list[dict[str, Any]], pod: dict[str, Any]) -> str:
    docs: list[dict[str, Any]] = [
        {
            "kind": "Node",
            "metadata": {"name": n["metadata"]["name"], "labels": n["metadata"].get("labels")},
            "spec": {"taints": (n.get("spec") or {}).get("taints") or []},
        }
        for n in nodes
    ]
    keep = ("apiVersion", "kind", "metadata", "spec")
    docs += [{k: p[k] for k in keep} for p in placed]
    return yaml.safe_dump_all([*docs, {k: pod[k] for k in keep}])


def _verdict_of(kube: Any, ns: str, name: str) -> tuple[str, str] | None:
    return _verdict(kube.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}"))


def test_pod_dependent_filters_agree_with_kube_scheduler(cluster):
    kube = kube_for(cluster.kubeconfig)
    rng = random.Random(20261204)
    for ns, team in NAMESPACES.items():
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"d.test/team": team}},
        }
        kube.request("POST", "/api/v1/namespaces", body=body)
        wait_for(
            f"{ns} ServiceAccount",
            lambda ns=ns: kube.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts")["items"],
        )
    known = {ns: {"d.test/team": t, "kubernetes.io/metadata.name": ns} for ns, t in NAMESPACES.items()}
    names = [n["metadata"]["name"] for n in kube.request("GET", "/api/v1/nodes")["items"]]
    tally: Counter[str] = Counter()
    reasons: Counter[str] = Counter()  # nodes per kube-scheduler reason, over the unschedulable
    failures: list[str] = []
    for r in range(ROUNDS):
        for name in names:
            zone = rng.choice(("a", "b", "c", None)) if rng.random() < 0.85 else None
            taints = [SPOT] if rng.random() < 0.25 else []
            body = {"metadata": {"labels": {ZONE: zone}}, "spec": {"taints": taints}}
            kube.request(
                "PATCH", f"/api/v1/nodes/{name}", body=body, content_type="application/merge-patch+json"
            )
        nodes_raw = kube.request("GET", "/api/v1/nodes")["items"]
        state = ClusterState([node_from_api(n) for n in nodes_raw], PolicyConfig())
        placed = [_pod(rng, f"r{r}-e{i}", rng.choice(names)) for i in range(EXISTING)]
        for p in placed:
            kube.request("POST", f"/api/v1/namespaces/{p['metadata']['namespace']}/pods", body=p)
        time.sleep(0.5)  # the scheduler's informer has seen the pinned pods
        for i in range(INCOMING):
            p = _pod(rng, f"r{r}-p{i}", None)
            ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
            kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=p)
            kind, detail = wait_for(
                f"kube-scheduler's verdict on {name}", partial(_verdict_of, kube, ns, name), 30, 0.05
            )
            gangs = [_gang(q, known) for q in placed]
            state.pod_index = PodIndex.of_running(state.nodes, state.index, gangs)
            gang = _gang(p, known)
            mask = allowed(state, gang, DEFAULT_FILTERS)
            ok = state.schedulable if mask is None else mask & state.schedulable
            tally["cases"] += 1
            if kind == "bound":
                tally["bound"] += 1
                agree = bool(ok[state.index[detail]])
                mine_nodes = [state.names[j] for j in ok.nonzero()[0]]
                why = f"kube-scheduler bound it to {detail}; gpufair allows {mine_nodes}"
                before = list(placed)
                placed.append({**p, "spec": {**p["spec"], "nodeName": detail}})
            else:
                tally["unschedulable"] += 1
                theirs, mine = _kube_counts(detail), _ours(ruled_out(state, gang, DEFAULT_FILTERS))
                reasons.update(theirs)
                agree = not ok.any() and theirs == mine
                why = f"kube-scheduler: {detail!r} ({dict(theirs)}); gpufair: {dict(mine)}"
                why += f", allows {int(ok.sum())} node(s)"
                before = placed
                kube.request(
                    "DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", query={"gracePeriodSeconds": 0}
                )
            if not agree:
                tally["disagreements"] += 1
                failures.append(f"--- case {name}: {why}\n{_replay(nodes_raw, before, p)}")
        for ns in NAMESPACES:
            kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods", query={"gracePeriodSeconds": 0})
        for ns in NAMESPACES:
            wait_for(
                f"pods in {ns} gone",
                lambda ns=ns: not kube.request("GET", f"/api/v1/namespaces/{ns}/pods")["items"],
                60,
            )
        time.sleep(0.3)
    print(f"differential (pod terms): {dict(tally)}")
    print(f"differential (pod terms): reasons {dict(reasons)}")
    assert tally["cases"] >= 200 and tally["bound"] > 40 and tally["unschedulable"] > 40
    assert not failures, "\n".join(failures[:5])
