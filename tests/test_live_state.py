"""The daemon's incremental state (scheduler/daemon/live.py) against a fresh build of the
whole cache, on a real API server: after every step of a random run of creates, binds,
deletions, node, team, PodGroup, PodDisruptionBudget and namespace changes, relists and an
API server restart, the incremental Core holds the same input as a fresh build, and decides
the same."""

from __future__ import annotations

import random
import time
from typing import Any

from scheduler.core import decide
from scheduler.core.config import PolicyConfig
from scheduler.core.model import Snapshot
from scheduler.core.policies import get_policy
from scheduler.daemon.cache import Cache
from scheduler.daemon.kube import MERGE_PATCH, Kube, KubeError
from scheduler.daemon.live import LiveState
from tests.daemon_support import (
    install_crds_and_priorities,
    kube_for,
    make_namespace,
    make_pod,
    make_team,
    wait_for,
)
from tests.fixtures_kube import KubeCluster

NAMESPACES = ("lv-a", "lv-b", "lv-c", "lv-free")  # lv-free belongs to no team


ANTI_AFFINITY = {
    "podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {
                "labelSelector": {"matchLabels": {"app": "guarded"}},
                "namespaceSelector": {"matchLabels": {"lv.gpufair.io/zone": "x"}},
                "topologyKey": "kubernetes.io/hostname",
            }
        ]
    }
}


def _pod(kube: Kube, ns: str, name: str, rng: random.Random, **kw: Any) -> dict:
    """A gpufair pod of random size and class; some guarded by the PDB, some keeping away
    from guarded pods in the namespaces labelled zone x (it reads namespace labels)."""
    labels = dict(kw.pop("labels", {}))
    if rng.random() < 0.3:
        labels["app"] = "guarded"
    pc = rng.choice(["gpufair-training", "gpufair-production", "gpufair-scavenger", None])
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": kw.get("annotations", {}),
        },
        "spec": {
            "schedulerName": "gpufair",
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/trainer:1",
                    "resources": {"limits": {"nvidia.com/gpu": str(rng.choice([0, 1, 1, 2]))}},
                }
            ],
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 0,
        },
    }
    if pc:
        body["spec"]["priorityClassName"] = pc
    if rng.random() < 0.3:
        body["spec"]["affinity"] = ANTI_AFFINITY
    return kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=body)


class Run:
    def __init__(self, cluster: KubeCluster, kube: Kube, rng: random.Random) -> None:
        self.cluster, self.kube, self.rng = cluster, kube, rng
        self.cache = Cache(kube, lambda: None, backoff_s=0.2)
        self.live = LiveState(self.cache, PolicyConfig(), get_policy("gpufair"))
        self.n = 0
        self.overlay: dict[str, str] = {}
        self.hold: set[str] = set()
        self.nominated: dict[str, str] = {}
        self.steps: list[str] = []
        self.protected_seen = False  # a bound pod under the PDB (or being deleted) was compared

    def pods(self, *, bound: bool | None = None, ours: bool = True) -> list[dict]:
        out = []
        for p in self.cache["pods"].values():
            if (p["spec"].get("schedulerName") == "gpufair") != ours:
                continue
            if bound is None or bool(p["spec"].get("nodeName")) == bound:
                out.append(p)
        return sorted(out, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}-{self.n}"

    # ------------------------------------------------------------------ steps

    def create_lone(self) -> None:
        _pod(self.kube, self.rng.choice(NAMESPACES), self.name("lone"), self.rng)

    def create_label_gang(self) -> None:
        ns, gang = self.rng.choice(NAMESPACES), self.name("lg")
        size = self.rng.choice(["2", "2", "2", "3", "x"])  # 3 and x: the gang waits, saying why
        for i in range(2):
            _pod(
                self.kube,
                ns,
                f"{gang}-{i}",
                self.rng,
                labels={"gpufair.io/gang": gang},
                annotations={"gpufair.io/gang-size": size},
            )

    def create_podgroup_gang(self) -> None:
        """One gang whose PodGroup comes first, one whose pods come first (they wait as
        invalid until their PodGroup exists)."""
        for pods_first in (False, True):
            ns, group = self.rng.choice(NAMESPACES), self.name("pg")
            body = {
                "apiVersion": "scheduling.x-k8s.io/v1alpha1",
                "kind": "PodGroup",
                "metadata": {"name": group, "namespace": ns},
                "spec": {"minMember": 2},
            }
            path = f"/apis/scheduling.x-k8s.io/v1alpha1/namespaces/{ns}/podgroups"
            if not pods_first:
                self.kube.request("POST", path, body=body)
            for i in range(2):
                _pod(self.kube, ns, f"{group}-{i}", self.rng, labels={"scheduling.x-k8s.io/pod-group": group})
            if pods_first:
                self.settle_and_compare("podgroup pods before their group")
                assert f"{ns}/{group}-0" in self.live.pod_invalid or f"{ns}/{group}-0" not in self.live.pods
                self.kube.request("POST", path, body=body)

    def create_foreign(self) -> None:
        ns, name = self.rng.choice(NAMESPACES), self.name("other")
        make_pod(self.kube, ns, name, gpus=self.rng.choice([0, 1]), scheduler="default-scheduler")
        self._bind(ns, name, self.rng.choice(self.cluster.node_names))

    def bind(self) -> None:
        pending = self.pods(bound=False)
        if pending:
            p = self.rng.choice(pending)
            self._bind(
                p["metadata"]["namespace"], p["metadata"]["name"], self.rng.choice(self.cluster.node_names)
            )

    def _bind(self, ns: str, name: str, node: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            self.kube.request("POST", f"/api/v1/namespaces/{ns}/pods/{name}/binding", body=body)
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise

    def delete(self) -> None:
        pods = self.pods() + self.pods(ours=False)
        if pods:
            p = self.rng.choice(pods)
            meta = p["metadata"]
            try:
                self.kube.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}")
            except KubeError as exc:
                if exc.status != 404:
                    raise

    def node_change(self) -> None:
        node = self.rng.choice(self.cluster.node_names)
        if self.rng.random() < 0.5:
            body: dict[str, Any] = {"spec": {"unschedulable": self.rng.random() < 0.5}}
        else:
            body = {"metadata": {"labels": {"lv.gpufair.io/mark": str(self.n)}}}
        self.kube.request("PATCH", f"/api/v1/nodes/{node}", body=body, content_type=MERGE_PATCH)

    def node_join_or_leave(self) -> None:
        if self.rng.random() < 0.5 or len(self.cluster.node_names) < 6:
            self.cluster.add_gpu_nodes(1)
        else:
            self.cluster.delete_nodes([self.rng.choice(self.cluster.node_names)])

    def team_change(self) -> None:
        """lv-c moves to the other team (b gives it up first: a namespace stays with its
        older claim), and team a's weight changes."""
        a_has_c = self.live.builder.team_of_ns.get("lv-c") == "lv-team-a"
        weight = self.rng.choice([1, 2, 3])
        if a_has_c:
            make_team(self.kube, "lv-team-a", ["lv-a"], weight=weight)
            make_team(self.kube, "lv-team-b", ["lv-b", "lv-c"])
        else:
            make_team(self.kube, "lv-team-b", ["lv-b"])
            make_team(self.kube, "lv-team-a", ["lv-a", "lv-c"], weight=weight)

    def pdb_change(self) -> None:
        ns = self.rng.choice(NAMESPACES)
        path = f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets"
        try:
            self.kube.request("DELETE", f"{path}/guard")
        except KubeError as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "guard", "namespace": ns},
                "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "guarded"}}},
            }
            self.kube.request("POST", path, body=body)

    def namespace_change(self) -> None:
        ns = self.rng.choice(NAMESPACES)
        body = {"metadata": {"labels": {"lv.gpufair.io/zone": self.rng.choice(["x", "y"])}}}
        self.kube.request("PATCH", f"/api/v1/namespaces/{ns}", body=body, content_type=MERGE_PATCH)

    def daemon_bookkeeping(self) -> None:
        """What the daemon itself adds: a bind it sent (assumed), a preemptor it holds back,
        a node nominated for a preemptor."""
        pending = self.pods(bound=False)
        if not pending:
            return
        p = self.rng.choice(pending)
        key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        what = self.rng.random()
        if what < 0.4:
            self.overlay = {key: self.rng.choice(self.cluster.node_names)}
        elif what < 0.7:
            self.nominated = {key: self.rng.choice(self.cluster.node_names)}
        else:
            entry = self.live.entries.get(key)
            self.hold = {entry.gid} if entry is not None and entry.gid else set()

    def relist(self) -> None:
        """What the watch does after a 410 Gone: the store is replaced from a fresh list."""
        for name in self.rng.sample(sorted(self.cache.stores), 3):
            resource = next(r for r in self.cache.resources if r.name == name)
            try:
                items, _rv = self.kube.list(resource.path)
            except KubeError:
                continue
            self.cache[name].replace(items)

    # ------------------------------------------------------------------ checking

    def settle_and_compare(self, step: str) -> None:
        self.steps.append(step)
        now = time.time()
        for _ in range(50):
            time.sleep(0.15)
            tr = self.live.refresh(
                now, hold=self.hold, nominated=self.nominated, overlay=self.overlay, unhealthy={}
            )
            fresh = self.live.fresh(now)
            if not any(s.pending for s in self.cache.stores.values()):
                break
        assert self.live.differences(fresh) == [], f"after {self.steps[-5:]}"
        core = self.live.core
        assert core is not None
        theirs_by_id = {g.id: g for g in fresh.snapshot.gangs}
        ordered = tuple(theirs_by_id[gid] for gid in core.gangs)  # the order is the Core's
        snap = Snapshot(now, fresh.snapshot.nodes, fresh.snapshot.teams, ordered, {})
        theirs = decide(snap, PolicyConfig(), "gpufair")
        mine = core.decide(now, {})
        assert mine.binds == theirs.binds, step
        assert mine.evictions == theirs.evictions, step
        assert mine.nominations == theirs.nominations, step
        assert tuple(mine.pending) == theirs.pending, step
        assert mine.teams == theirs.teams, step
        assert set(tr.pods) == set(fresh.pods)
        self.protected_seen |= any(not g.evictable for g in self.live.gangs.values() if g.team)


def test_incremental_state_equals_a_fresh_build_through_random_changes(kube_cluster_factory) -> None:
    cluster = kube_cluster_factory()
    kube = kube_for(cluster.kubeconfig)
    install_crds_and_priorities(kube)
    for ns in NAMESPACES:
        make_namespace(kube, ns)
    make_team(kube, "lv-team-a", ["lv-a"])
    make_team(kube, "lv-team-b", ["lv-b", "lv-c"])
    run = Run(cluster, kube, random.Random(18))
    run.cache.start()
    try:
        wait_for("cache synced", lambda: run.cache.is_synced)
        run.settle_and_compare("start")
        steps = [
            (run.create_lone, 6),
            (run.create_label_gang, 2),
            (run.create_podgroup_gang, 2),
            (run.create_foreign, 1),
            (run.bind, 5),
            (run.delete, 2),
            (run.node_change, 2),
            (run.node_join_or_leave, 1),
            (run.team_change, 1),
            (run.pdb_change, 1),
            (run.namespace_change, 1),
            (run.daemon_bookkeeping, 2),
            (run.relist, 1),
        ]
        fns, weights = zip(*steps, strict=True)
        rebuilds = run.live.rebuilds
        # Every kind of change once, then a random run of them.
        sequence = [*fns, *fns[:3], *run.rng.choices(fns, weights, k=50)]
        for i, step in enumerate(sequence):
            step()
            run.settle_and_compare(f"{i}: {step.__name__}")
            if i == 40:  # the API server goes away and comes back: every watch relists
                cluster.restart_apiserver(downtime_s=1.0)
                wait_for("cache synced again", lambda: run.cache.is_synced)
                run.settle_and_compare("api server restart")
        assert run.live.rebuilds > rebuilds  # the relists rebuilt it
        assert len(run.live.gangs) >= 10  # the run built something worth comparing
        assert run.protected_seen
    finally:
        run.cache.stop()
