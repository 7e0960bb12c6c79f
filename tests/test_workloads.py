"""Gangs found from the workloads that own pods (scheduler/daemon/workloads.py): each kind's
pods as its controller makes them (labels, owner references), the owning object as its API
serves it; the fresh build and the daemon's incremental state must agree."""

from __future__ import annotations

from typing import Any

from scheduler.core.config import PolicyConfig
from scheduler.core.policies import get_policy
from scheduler.daemon.cache import Cache, Store
from scheduler.daemon.live import LiveState
from scheduler.daemon.translate import SnapshotBuilder, timestamp
from scheduler.daemon.workloads import CacheOwners
from tests.test_daemon_translate import node, pod, team
from tests.test_gang_identity import _all_or_nothing, _decide

T0 = "2026-11-29T08:00:00Z"  # the workloads' creation: older than their pods


def _owned(p: dict, api: str, kind: str, name: str) -> dict:
    p["metadata"]["ownerReferences"] = [
        {"apiVersion": api, "kind": kind, "name": name, "uid": f"uid-{name}", "controller": True}
    ]
    return p


def _obj(api: str, kind: str, name: str, spec: dict, ns: str = "ml", **meta: Any) -> dict:
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": T0, "uid": f"uid-{name}", **meta},
        "spec": spec,
    }


def _stores(**objs: list[dict]) -> dict[str, Store]:
    out: dict[str, Store] = {}
    for resource, items in objs.items():
        out[resource] = Store()
        out[resource].replace(items)
    return out


def _build(pods: list[dict], stores: dict[str, Store], nodes: int = 4, **labels: str):
    ns = [node(f"n{i}", **{k.replace("_", "."): v for k, v in labels.items()}) for i in range(nodes)]
    return SnapshotBuilder([team("t", "ml")]).build(0.0, ns, pods, owners=CacheOwners(stores))


# ---------------------------------------------------------------------- JobSet, TrainJob


def _jobset(name: str, jobs: list[tuple[str, int, Any]], **annotations: str) -> dict:
    spec = {
        "replicatedJobs": [
            {"name": rj, "replicas": replicas, "template": {"spec": {"parallelism": par, "completions": par}}}
            for rj, replicas, par in jobs
        ]
    }
    return _obj("jobset.x-k8s.io/v1alpha2", "JobSet", name, spec, annotations=annotations)


def _jobset_pods(js: str, rj: str, job: int, pods: int, gpus: int = 8) -> list[dict]:
    out = []
    for i in range(pods):
        labels = {
            "jobset.sigs.k8s.io/jobset-name": js,
            "jobset.sigs.k8s.io/replicatedjob-name": rj,
            "jobset.sigs.k8s.io/job-index": str(job),
            "batch.kubernetes.io/job-name": f"{js}-{rj}-{job}",
            "batch.kubernetes.io/job-completion-index": str(i),
        }
        p = pod(f"{js}-{rj}-{job}-{i}-x", gpus=gpus, labels=labels)
        out.append(_owned(p, "batch/v1", "Job", f"{js}-{rj}-{job}"))
    return out


def test_a_jobset_is_one_gang_of_every_replicated_job_and_starts_whole_or_not_at_all():
    js = _jobset("train", [("driver", 1, 1), ("workers", 2, 2)])
    pods = _jobset_pods("train", "driver", 0, 1) + [
        p for j in range(2) for p in _jobset_pods("train", "workers", j, 2)
    ]
    tr = _build(pods, _stores(jobsets=[js], jobs=[]), nodes=5)
    (gang,) = tr.snapshot.gangs
    assert gang.id == "ml/workload:jobset/train"
    assert gang.required_members == 5 and len(gang.pods) == 5
    assert gang.submit_s == timestamp(T0)  # the JobSet's age, not its pods'
    assert _all_or_nothing(tr, _decide(tr)) == {gang.id: 5}
    # One node fewer: none of it starts (never 4 of 5).
    tr = _build(pods, _stores(jobsets=[js], jobs=[]), nodes=4)
    assert _all_or_nothing(tr, _decide(tr)) == {}


def test_a_single_job_jobsets_exclusive_topology_is_its_required_level():
    js = _jobset(
        "one", [("w", 1, 3)], **{"alpha.jobset.sigs.k8s.io/exclusive-topology": "network.gpufair.io/leaf"}
    )
    # JobSet makes a Job's followers once its leader is bound: while the leader waits, the
    # snapshot stands in for the two to come, so the gang is all three, in one leaf.
    (gang,) = _build(_jobset_pods("one", "w", 0, 1), _stores(jobsets=[js])).snapshot.gangs
    assert gang.topology_required == "network.gpufair.io/leaf" and gang.required_members == 3
    assert [p.name for p in gang.pods] == [
        "ml/one-w-0-0-x",
        "ml/one-w-0-0-x~follower-to-come-1",
        "ml/one-w-0-0-x~follower-to-come-2",
    ]
    assert {p.gpus for p in gang.pods} == {8}
    # Once the leader is bound no stand-in is left: the followers come pinned to its leaf.
    pods = _jobset_pods("one", "w", 0, 3)
    pods[0]["spec"]["nodeName"] = "n0"
    (gang,) = _build(pods, _stores(jobsets=[js])).snapshot.gangs
    assert gang.required_members == 1 and len(gang.pods) == 3
    # More Jobs: each Job's domain is the JobSet webhook's pod affinity, not one for all;
    # each pending leader brings its own stand-ins.
    js = _jobset(
        "two", [("w", 2, 2)], **{"alpha.jobset.sigs.k8s.io/exclusive-topology": "network.gpufair.io/leaf"}
    )
    pods = _jobset_pods("two", "w", 0, 1) + _jobset_pods("two", "w", 1, 1)
    (gang,) = _build(pods, _stores(jobsets=[js])).snapshot.gangs
    assert gang.topology_required is None and gang.required_members == 4 and len(gang.pods) == 4


def test_an_exclusive_jobs_leader_binds_only_in_a_leaf_where_its_whole_job_fits():
    js = _jobset(
        "one", [("w", 1, 3)], **{"alpha.jobset.sigs.k8s.io/exclusive-topology": "network.gpufair.io/leaf"}
    )
    leader = _jobset_pods("one", "w", 0, 1)
    stores = _stores(jobsets=[js])

    def build(leaf_b_nodes: int):
        spine = {"network.gpufair.io/spine": "s"}
        nodes = [node(f"a{i}", **spine, **{"network.gpufair.io/leaf": "a"}) for i in range(2)]
        nodes += [node(f"b{i}", **spine, **{"network.gpufair.io/leaf": "b"}) for i in range(leaf_b_nodes)]
        return SnapshotBuilder([team("t", "ml")]).build(0.0, nodes, leader, owners=CacheOwners(stores))

    # Two leaves of 2 nodes: 4 free nodes, but no leaf takes the Job's 3 pods, so the leader
    # does not bind (it would hold 8 GPUs for followers that cannot fit beside it).
    tr = build(2)
    d = _decide(tr)
    assert d.binds == ()
    assert "waiting for 24 GPUs (3 pods x 8 GPUs) in one network.gpufair.io/leaf" in (
        d.pending_reason("ml/workload:jobset/one").reason
    )
    # Leaf b of 3: the leader binds there (the stand-ins' binds name no pod; the daemon
    # skips them), and its followers will be pinned beside it.
    tr = build(3)
    binds = {b.pod: b.node for b in _decide(tr).binds}
    assert binds["ml/one-w-0-0-x"].startswith("b")
    assert set(binds) - {"ml/one-w-0-0-x"} == {
        "ml/one-w-0-0-x~follower-to-come-1",
        "ml/one-w-0-0-x~follower-to-come-2",
    }
    assert all(n.startswith("b") for n in binds.values())
    assert set(tr.pods) == {"ml/one-w-0-0-x"}


def test_a_jobset_whose_parallelism_cannot_be_read_waits_naming_the_field():
    js = _jobset("bad", [("a", 1, 1), ("b", 1, "four")])
    tr = _build(_jobset_pods("bad", "a", 0, 1), _stores(jobsets=[js]))
    assert tr.snapshot.gangs == ()
    (why,) = tr.invalid.values()
    assert "JobSet ml/bad" in why and "spec.replicatedJobs[1].template.spec.parallelism" in why
    assert [p.name for p in tr.problems] == ["bad-a-0-0-x"]


def test_a_trainjobs_jobset_is_the_trainjob():
    js = _jobset("tj", [("node", 1, 2)])
    js["metadata"]["ownerReferences"] = [
        {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "name": "tj", "controller": True}
    ]
    tj = _obj("trainer.kubeflow.org/v1alpha1", "TrainJob", "tj", {})
    tj["metadata"]["creationTimestamp"] = "2026-11-29T07:00:00Z"
    (gang,) = _build(_jobset_pods("tj", "node", 0, 2), _stores(jobsets=[js], trainjobs=[tj])).snapshot.gangs
    assert gang.id == "ml/workload:trainjob/tj" and gang.required_members == 2
    assert gang.submit_s == timestamp("2026-11-29T07:00:00Z")


# ---------------------------------------------------------------------- LeaderWorkerSet


def _lws(name: str, size: Any, **annotations: str) -> dict:
    spec = {"replicas": 2, "leaderWorkerTemplate": {"size": size, "workerTemplate": {"spec": {}}}}
    return _obj("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", name, spec, annotations=annotations)


def _lws_pods(name: str, group: int, size: int, priority: int = 0) -> list[dict]:
    out = []
    for w in range(size):
        labels = {
            "leaderworkerset.sigs.k8s.io/name": name,
            "leaderworkerset.sigs.k8s.io/group-index": str(group),
            "leaderworkerset.sigs.k8s.io/worker-index": str(w),
        }
        pname = f"{name}-{group}" if w == 0 else f"{name}-{group}-{w}"
        owner = f"{name}" if w == 0 else f"{name}-{group}"
        out.append(
            _owned(pod(pname, gpus=8, labels=labels, priority=priority), "apps/v1", "StatefulSet", owner)
        )
    return out


def test_each_leaderworkerset_group_is_a_gang_with_the_sets_level_and_priority():
    lws = _lws("infer", 3, **{"leaderworkerset.sigs.k8s.io/exclusive-topology": "network.gpufair.io/leaf"})
    pods = _lws_pods("infer", 0, 3, priority=100000) + _lws_pods("infer", 1, 3, priority=100000)
    tr = _build(pods, _stores(leaderworkersets=[lws]))
    by_id = {g.id: g for g in tr.snapshot.gangs}
    assert set(by_id) == {"ml/workload:leaderworkerset/infer/0", "ml/workload:leaderworkerset/infer/1"}
    for g in by_id.values():
        assert g.required_members == 3 and g.priority == 100000
        assert g.topology_required == "network.gpufair.io/leaf"


def test_a_leaderworkerset_size_that_is_not_a_count_is_named():
    tr = _build(_lws_pods("bad", 0, 2), _stores(leaderworkersets=[_lws("bad", 0)]))
    (why,) = set(tr.invalid.values())
    assert "LeaderWorkerSet ml/bad" in why and "spec.leaderWorkerTemplate.size" in why


# ---------------------------------------------------------------------- Ray


def _raycluster(name: str, groups: list[tuple[str, int, int]]) -> dict:
    spec = {
        "headGroupSpec": {"template": {"spec": {}}},
        "workerGroupSpecs": [
            {"groupName": g, "replicas": low, "minReplicas": low, "maxReplicas": 10, "numOfHosts": hosts}
            for g, low, hosts in groups
        ],
    }
    return _obj("ray.io/v1", "RayCluster", name, spec)


def _ray_pods(name: str, workers: dict[str, int]) -> list[dict]:
    head = pod(f"{name}-head-x", gpus=0, labels={"ray.io/cluster": name, "ray.io/node-type": "head"})
    out = [_owned(head, "ray.io/v1", "RayCluster", name)]
    for g, n in workers.items():
        for i in range(n):
            labels = {"ray.io/cluster": name, "ray.io/node-type": "worker", "ray.io/group": g}
            out.append(_owned(pod(f"{name}-{g}-{i}", gpus=8, labels=labels), "ray.io/v1", "RayCluster", name))
    return out


def test_a_rayclusters_head_and_minimum_workers_are_the_gang_and_more_are_extras():
    rc = _raycluster("rc", [("gpu", 2, 1), ("tpu", 1, 2)])
    pods = _ray_pods("rc", {"gpu": 3, "tpu": 2})  # one gpu worker beyond minReplicas
    tr = _build(pods, _stores(rayclusters=[rc], rayjobs=[]), nodes=4)
    (gang,) = tr.snapshot.gangs
    assert gang.id == "ml/workload:raycluster/rc"
    assert gang.required_members == 1 + 2 * 1 + 1 * 2 and len(gang.pods) == 6
    # 4 nodes of 8 GPUs: the head and the 4 required workers start; the extra worker waits.
    assert _all_or_nothing(tr, _decide(tr)) == {gang.id: 5}


def test_a_rayjobs_cluster_takes_the_rayjobs_age():
    rc = _raycluster("rj-abc", [("gpu", 1, 1)])
    rc["metadata"]["ownerReferences"] = [
        {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": "rj", "controller": True}
    ]
    rj = _obj("ray.io/v1", "RayJob", "rj", {})
    rj["metadata"]["creationTimestamp"] = "2026-11-29T06:00:00Z"
    (gang,) = _build(_ray_pods("rj-abc", {"gpu": 1}), _stores(rayclusters=[rc], rayjobs=[rj])).snapshot.gangs
    assert gang.submit_s == timestamp("2026-11-29T06:00:00Z") and gang.required_members == 2


# ---------------------------------------------------------------------- Kubeflow v1


def test_a_pytorchjob_is_one_gang_of_its_master_and_workers():
    spec = {"pytorchReplicaSpecs": {"Master": {"replicas": 1}, "Worker": {"replicas": 3}}}
    job = _obj("kubeflow.org/v1", "PyTorchJob", "pt", spec)
    pods = []
    for rtype, n in (("master", 1), ("worker", 3)):
        for i in range(n):
            labels = {"training.kubeflow.org/job-name": "pt", "training.kubeflow.org/replica-type": rtype}
            pods.append(
                _owned(pod(f"pt-{rtype}-{i}", gpus=8, labels=labels), "kubeflow.org/v1", "PyTorchJob", "pt")
            )
    (gang,) = _build(pods, _stores(pytorchjobs=[job])).snapshot.gangs
    assert gang.id == "ml/workload:pytorchjob/pt" and gang.required_members == 4


# ---------------------------------------------------------------------- batch/v1 Job


def _job(name: str, parallelism: int, completions: int | None = None, **annotations: str) -> dict:
    spec: dict[str, Any] = {"parallelism": parallelism, "completionMode": "Indexed"}
    if completions is not None:
        spec["completions"] = completions
    return _obj("batch/v1", "Job", name, spec, annotations=annotations)


def _job_pods(name: str, n: int, **annotations: str) -> list[dict]:
    return [
        _owned(pod(f"{name}-{i}-x", gpus=8, annotations=annotations), "batch/v1", "Job", name)
        for i in range(n)
    ]


def test_an_indexed_jobs_parallelism_pods_are_one_gang():
    tr = _build(_job_pods("ddp", 3), _stores(jobs=[_job("ddp", 3, 3)]))
    (gang,) = tr.snapshot.gangs
    assert gang.id == "ml/workload:job/ddp" and gang.required_members == 3


def test_a_job_whose_completions_are_nearly_done_needs_only_the_rest():
    job = _job("tail", 4, 10)
    job["status"] = {"succeeded": 8}
    (gang,) = _build(_job_pods("tail", 2), _stores(jobs=[job])).snapshot.gangs
    assert gang.required_members == 2


def test_the_independent_pods_annotation_on_the_job_or_its_template_opts_out():
    opt = {"gpufair.io/independent-pods": "true"}
    for job, pods in (
        (_job("sweep", 3, 3, **opt), _job_pods("sweep", 3)),
        (_job("sweep", 3, 3), _job_pods("sweep", 3, **opt)),
    ):
        tr = _build(pods, _stores(jobs=[job]))
        assert sorted(g.id for g in tr.snapshot.gangs) == [f"ml/sweep-{i}-x" for i in range(3)]
        assert all(g.required_members == 1 for g in tr.snapshot.gangs)


# ---------------------------------------------------------------------- precedence, absence


def test_a_podgroup_or_gang_label_wins_over_the_owner():
    pods = _job_pods("ddp", 2)
    for p in pods:
        p["metadata"]["labels"] = {"gpufair.io/gang": "mine"}
        p["metadata"]["annotations"] = {"gpufair.io/gang-size": "2"}
    (gang,) = _build(pods, _stores(jobs=[_job("ddp", 3)])).snapshot.gangs
    assert gang.id == "ml/gang:mine" and gang.required_members == 2


def test_a_kind_that_is_not_served_is_not_recognised_and_breaks_nothing():
    absent = Store()
    absent.available = False  # as cache.py marks a list refused with 404 (CRD not installed)
    tr = _build(_jobset_pods("js", "w", 0, 2), {"jobsets": absent})
    assert sorted(g.required_members for g in tr.snapshot.gangs) == [1, 1] and not tr.invalid


def test_pods_whose_owner_is_not_read_yet_wait_saying_so():
    tr = _build(_job_pods("late", 2), _stores(jobs=[]))
    assert tr.snapshot.gangs == ()
    assert all("Job ml/late is not known" in why for why in tr.invalid.values())


# ---------------------------------------------------------------------- incremental


class _Live:
    """The daemon's LiveState over real Stores fed as the watch feeds them."""

    def __init__(self) -> None:
        self.cache = Cache(None, lambda: None)  # type: ignore[arg-type]  # never started
        self.cache["gputeams"].replace([team("t", "ml")])
        self.cache["nodes"].replace([node(f"n{i}") for i in range(6)])
        self.live = LiveState(self.cache, PolicyConfig(), get_policy("gpufair"))
        self.live.refresh(0.0)

    def put(self, resource: str, obj: dict, kind: str = "ADDED") -> None:
        self.cache[resource].apply(kind, obj)

    def check(self) -> dict[str, Any]:
        tr = self.live.refresh(0.0)
        assert self.live.differences(self.live.fresh(0.0)) == []
        return {g.id: g for g in tr.snapshot.gangs} | {g: why for g, why in tr.invalid.items()}


def test_the_live_state_follows_pods_and_owners_as_they_come_and_go():
    run = _Live()
    pods = _jobset_pods("js", "w", 0, 3)
    for p in pods[:2]:  # pods before their JobSet: they wait, naming it
        run.put("pods", p)
    got = run.check()
    assert (
        all(isinstance(v, str) and "JobSet ml/js is not known" in v for v in got.values()) and len(got) == 2
    )
    run.put("jobsets", _jobset("js", [("w", 1, 3)]))  # the owner arrives: its pods are read again
    got = run.check()
    assert list(got) == ["ml/workload:jobset/js"] and got["ml/workload:jobset/js"].required_members == 3
    assert len(got["ml/workload:jobset/js"].pods) == 2
    run.put("pods", pods[2])
    assert len(run.check()["ml/workload:jobset/js"].pods) == 3
    run.put("jobsets", _jobset("js", [("w", 1, 2)]), "MODIFIED")  # a changed shape
    assert run.check()["ml/workload:jobset/js"].required_members == 2
    run.put("pods", pods[0], "DELETED")
    assert len(run.check()["ml/workload:jobset/js"].pods) == 2
    run.put("jobsets", _jobset("js", [("w", 1, 2)]), "DELETED")  # gone: the pods wait again
    assert all(isinstance(v, str) for v in run.check().values())


def test_the_live_state_keeps_an_exclusive_jobs_stand_ins_as_the_fresh_build_does():
    run = _Live()
    excl = {"alpha.jobset.sigs.k8s.io/exclusive-topology": "network.gpufair.io/leaf"}
    run.put("jobsets", _jobset("js", [("w", 1, 3)], **excl))
    leader, *followers = _jobset_pods("js", "w", 0, 3)
    run.put("pods", leader)
    gang = run.check()["ml/workload:jobset/js"]
    assert len(gang.pods) == 3 and gang.required_members == 3  # the leader and 2 stand-ins
    bound = {**leader, "spec": {**leader["spec"], "nodeName": "n0"}}
    bound["metadata"] = {**leader["metadata"], "resourceVersion": "2"}
    run.put("pods", bound, "MODIFIED")
    gang = run.check()["ml/workload:jobset/js"]
    assert [p.name for p in gang.pods] == ["ml/js-w-0-0-x"] and gang.required_members == 1
    for p in followers:  # JobSet makes them now
        run.put("pods", p)
    gang = run.check()["ml/workload:jobset/js"]
    assert len(gang.pods) == 3 and gang.required_members == 1


def test_every_owner_kind_a_recogniser_reads_is_watched():
    from scheduler.daemon.cache import RESOURCES
    from scheduler.daemon.workloads import RESOURCE_OF

    paths = {r.name: r.path for r in RESOURCES}
    for (group, _kind), resource in RESOURCE_OF.items():
        assert resource in paths and paths[resource].startswith(f"/apis/{group}/"), resource
