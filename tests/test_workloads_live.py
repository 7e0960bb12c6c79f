"""Workloads as people submit them, on the real API server with the real JobSet and
LeaderWorkerSet controllers (fixture `workload_cluster`: 8 nodes x 8 GPUs on 2 leaves, no
kube-scheduler), scheduled by the real gpufair daemon: manifests from the upstream docs with
only schedulerName and priorityClassName set, no gpufair labels."""

from __future__ import annotations

import time
from typing import Any

from scheduler.devcluster.nodes import LEAF
from tests.daemon_support import InProcessDaemon, condition, kube_for, make_team, pods_in, wait_for
from tests.fixtures_workloads import WorkloadCluster

JOBSETS = "/apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets"
LWS = "/apis/leaderworkerset.x-k8s.io/v1/namespaces/{ns}/leaderworkersets"


def _template(priority: str, gpus: int = 8) -> dict[str, Any]:
    return {
        "spec": {
            "schedulerName": "gpufair",
            "priorityClassName": priority,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"limits": {"nvidia.com/gpu": gpus}},
                }
            ],
        }
    }


def _jobset(name: str, replicas: int, pods: int, annotations: dict | None = None, **spec: Any) -> dict:
    """The JobSet docs' simple example: one replicated job of `replicas` indexed Jobs."""
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "replicatedJobs": [
                {
                    "name": "workers",
                    "replicas": replicas,
                    "template": {
                        "spec": {
                            "parallelism": pods,
                            "completions": pods,
                            "backoffLimit": 0,
                            "template": _template("gpufair-training"),
                        }
                    },
                }
            ],
            **spec,
        },
    }


def _lws(name: str, size: int) -> dict:
    """The LWS docs' quick start: one group of a leader and size-1 workers."""
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "leaderWorkerTemplate": {
                "size": size,
                "leaderTemplate": _template("gpufair-production"),
                "workerTemplate": _template("gpufair-production"),
            },
        },
    }


def _ours(kube, ns: str, label: str) -> dict[str, dict]:
    return {n: p for n, p in pods_in(kube, ns).items() if label in (p["metadata"].get("labels") or {})}


def _bound(pods: dict[str, dict]) -> dict[str, str]:
    return {n: p["spec"]["nodeName"] for n, p in pods.items() if p["spec"].get("nodeName")}


def _leaf_of(cluster: WorkloadCluster) -> dict[str, str]:
    return {n.name: n.labels[LEAF] for n in cluster.nodes}


def test_jobsets_bind_whole_or_wait_whole_in_their_level_charged_to_their_team(
    workload_cluster: WorkloadCluster, workload_namespace: str
) -> None:
    ns, kube = workload_namespace, kube_for(workload_cluster.kubeconfig)
    make_team(kube, "js-team", [ns])
    js = "jobset.sigs.k8s.io/jobset-name"
    with InProcessDaemon(workload_cluster.kubeconfig):
        # 9 pods of 8 GPUs on 64 GPUs: none of it starts, and its pods say why.
        kube.request("POST", JOBSETS.format(ns=ns), body=_jobset("huge", 3, 3))
        wait_for("the huge JobSet's 9 pods", lambda: len(_ours(kube, ns, js)) == 9, timeout_s=60)
        # The reason is the gang's, all 9 pods at once.
        wait_for(
            "the gang's reason on its pods",
            lambda: all(
                "9 pods x 8 GPUs" in condition(p).get("message", "") for p in _ours(kube, ns, js).values()
            ),
        )
        time.sleep(3)
        assert _bound(_ours(kube, ns, js)) == {}
        kube.request("DELETE", JOBSETS.format(ns=ns) + "/huge", query={"propagationPolicy": "Foreground"})
        wait_for("its pods gone", lambda: not _ours(kube, ns, js), timeout_s=60)

        # Two Jobs of 2 pods: the 4 bind together, charged to the namespace's team.
        kube.request("POST", JOBSETS.format(ns=ns), body=_jobset("train", 2, 2))
        placed = wait_for("the JobSet bound whole", lambda: len(b := _bound(_ours(kube, ns, js))) == 4 and b)
        assert len(_ours(kube, ns, js)) == 4
        status = wait_for(
            "the team charged",
            lambda: (
                (s := kube.request("GET", "/apis/gpufair.io/v1alpha1/gputeams/js-team").get("status") or {})
                and s.get("allocatedGPUs", 0) >= 32
                and s
            ),
        )
        assert status["allocatedGPUs"] == 32
        assert len(set(placed.values())) == 4

        kube.request("DELETE", JOBSETS.format(ns=ns) + "/train", query={"propagationPolicy": "Foreground"})
        wait_for("its pods gone", lambda: not _ours(kube, ns, js), timeout_s=60)
        # One Job under exclusive topology: its leader first, then JobSet admits the
        # followers pinned to the leader's leaf; all 3 land in one leaf.
        excl = {"alpha.jobset.sigs.k8s.io/exclusive-topology": LEAF}
        kube.request("POST", JOBSETS.format(ns=ns), body=_jobset("leafy", 1, 3, excl))
        leafy = "jobset.sigs.k8s.io/jobset-name=leafy"
        got = wait_for(
            "the exclusive JobSet bound",
            lambda: (
                len(
                    b := _bound(
                        {
                            n: p
                            for n, p in _ours(kube, ns, js).items()
                            if leafy.split("=")[1] == p["metadata"]["labels"][js]
                        }
                    )
                )
                == 3
                and b
            ),
            timeout_s=60,
        )
        leaves = _leaf_of(workload_cluster)
        assert len({leaves[n] for n in got.values()}) == 1


def test_a_production_lws_evicts_a_whole_jobset_which_restarts_and_runs_whole_later(
    workload_cluster: WorkloadCluster, workload_namespace: str
) -> None:
    ns, kube = workload_namespace, kube_for(workload_cluster.kubeconfig)
    make_team(kube, "mixed", [ns], production={"allowed": True})
    js, lws = "jobset.sigs.k8s.io/jobset-name", "leaderworkerset.sigs.k8s.io/name"
    from tests.test_daemon_integration import _policy

    with InProcessDaemon(workload_cluster.kubeconfig, policy=_policy(default_min_runtime_s=0.0)):
        # 8 pods of 8 GPUs: the whole cluster. failurePolicy lets JobSet restart it.
        body = _jobset("fill", 2, 4, failurePolicy={"maxRestarts": 3})
        kube.request("POST", JOBSETS.format(ns=ns), body=body)
        wait_for(
            "the cluster full of the JobSet", lambda: len(_bound(_ours(kube, ns, js))) == 8, timeout_s=60
        )
        first = set(_ours(kube, ns, js))

        kube.request("POST", LWS.format(ns=ns), body=_lws("infer", 2))
        group = wait_for(
            "the LWS group bound", lambda: len(b := _bound(_ours(kube, ns, lws))) == 2 and b, timeout_s=90
        )
        assert len(group) == 2
        # Every pod of the first attempt went (whole-workload eviction), and JobSet restarted it.
        wait_for(
            "the first attempt's pods gone", lambda: not (first & set(_ours(kube, ns, js))), timeout_s=60
        )
        restarted = wait_for(
            "the JobSet's restart",
            lambda: (kube.request("GET", JOBSETS.format(ns=ns) + "/fill").get("status") or {}).get(
                "restarts"
            ),
            timeout_s=60,
        )
        assert restarted >= 1
        # The restarted JobSet (8 pods, 48 GPUs free) waits whole.
        wait_for("the restarted pods", lambda: len(_ours(kube, ns, js)) == 8, timeout_s=60)
        time.sleep(3)
        assert _bound(_ours(kube, ns, js)) == {}

        # Evicting one pod of the LWS group: LWS recreates the whole group, gpufair binds it.
        leader = next(
            n
            for n, p in _ours(kube, ns, lws).items()
            if p["metadata"]["labels"].get("leaderworkerset.sigs.k8s.io/worker-index") == "0"
        )
        uids = {p["metadata"]["uid"] for p in _ours(kube, ns, lws).values()}
        kube.request(
            "POST",
            f"/api/v1/namespaces/{ns}/pods/{leader}/eviction",
            body={
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": leader, "namespace": ns},
            },
        )
        wait_for(
            "the LWS group recreated and bound",
            lambda: (
                len(b := _bound(p := _ours(kube, ns, lws))) == 2
                and not ({q["metadata"]["uid"] for q in p.values()} & uids)
                and b
            ),
            timeout_s=90,
        )

        # The LWS goes: the restarted JobSet runs whole.
        kube.request("DELETE", LWS.format(ns=ns) + "/infer")
        wait_for("the JobSet rescheduled whole", lambda: len(_bound(_ours(kube, ns, js))) == 8, timeout_s=90)


def _job(name: str, pods: int, annotations: dict | None = None) -> dict:
    """An indexed Job as the Kubernetes docs write one for distributed work."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "completionMode": "Indexed",
            "parallelism": pods,
            "completions": pods,
            "backoffLimit": 0,
            "template": {
                **_template("gpufair-training"),
                "spec": {**_template("gpufair-training")["spec"], "restartPolicy": "Never"},
            },
        },
    }


def test_an_indexed_job_is_one_gang_and_an_opted_out_job_is_not(
    workload_cluster: WorkloadCluster, workload_namespace: str
) -> None:
    ns, kube = workload_namespace, kube_for(workload_cluster.kubeconfig)
    make_team(kube, "jobs", [ns])
    jobs, name = f"/apis/batch/v1/namespaces/{ns}/jobs", "batch.kubernetes.io/job-name"

    def of(job: str) -> dict[str, dict]:
        return {n: p for n, p in pods_in(kube, ns).items() if p["metadata"]["labels"].get(name) == job}

    with InProcessDaemon(workload_cluster.kubeconfig):
        # 9 pods of 8 GPUs: more than the 64 GPUs there are, so none of the gang starts ...
        kube.request("POST", jobs, body=_job("ddp", 9))
        wait_for("the Job's 9 pods", lambda: len(of("ddp")) == 9, timeout_s=60)
        # ... while the same Job with independent pods fills the cluster, pod by pod.
        kube.request("POST", jobs, body=_job("sweep", 9, {"gpufair.io/independent-pods": "true"}))
        wait_for("8 of the independent pods bound", lambda: len(_bound(of("sweep"))) == 8, timeout_s=60)
        time.sleep(2)
        assert _bound(of("ddp")) == {}


def test_a_rayclusters_head_and_minimum_workers_start_together_and_extras_follow(
    workload_cluster: WorkloadCluster, workload_namespace: str
) -> None:
    ns, kube = workload_namespace, kube_for(workload_cluster.kubeconfig)
    make_team(kube, "ray", [ns])
    # The KubeRay docs' RayCluster: a head and one worker group (minReplicas 2, 3 wanted).
    body = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "raycluster"},
        "spec": {
            "headGroupSpec": {"rayStartParams": {}, "template": _template("gpufair-training", gpus=0)},
            "workerGroupSpecs": [
                {
                    "groupName": "gpu",
                    "replicas": 3,
                    "minReplicas": 2,
                    "maxReplicas": 4,
                    "rayStartParams": {},
                    "template": _template("gpufair-training"),
                }
            ],
        },
    }
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    with InProcessDaemon(workload_cluster.kubeconfig):
        # 7 of the 8 nodes taken: the head and 2 workers cannot start together, so none does.
        kube.request("POST", jobs, body=_job("block", 7, {"gpufair.io/independent-pods": "true"}))
        wait_for(
            "the blocking pods bound",
            lambda: len(_bound(_ours(kube, ns, "batch.kubernetes.io/job-name"))) == 7,
        )
        kube.request("POST", f"/apis/ray.io/v1/namespaces/{ns}/rayclusters", body=body)
        wait_for("the Ray pods", lambda: len(_ours(kube, ns, "ray.io/cluster")) == 4, timeout_s=60)
        time.sleep(3)
        assert _bound(_ours(kube, ns, "ray.io/cluster")) == {}
        kube.request("DELETE", jobs + "/block", query={"propagationPolicy": "Background"})
        got = wait_for(
            "the head and 3 workers bound",
            lambda: len(b := _bound(_ours(kube, ns, "ray.io/cluster"))) == 4 and b,
            timeout_s=90,
        )
    assert len(got) == 4


def test_an_exclusive_jobs_leader_waits_until_a_leaf_has_room_for_its_whole_job(
    workload_cluster: WorkloadCluster, workload_namespace: str
) -> None:
    ns, kube = workload_namespace, kube_for(workload_cluster.kubeconfig)
    make_team(kube, "excl", [ns])
    by_leaf: dict[str, list[str]] = {}
    for n in workload_cluster.nodes:
        by_leaf.setdefault(n.labels[LEAF], []).append(n.name)
    assert len(by_leaf) == 2 and all(len(v) == 4 for v in by_leaf.values())
    # Two nodes of each leaf taken by pods bound by hand: 4 nodes free, 2 in each leaf.
    taken = [name for names in by_leaf.values() for name in sorted(names)[:2]]
    for i, name in enumerate(taken):
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"held-{i}"},
            "spec": {**_template("gpufair-training")["spec"], "nodeName": name},
        }
        kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=body)
    js = "jobset.sigs.k8s.io/jobset-name"
    with InProcessDaemon(workload_cluster.kubeconfig):
        excl = {"alpha.jobset.sigs.k8s.io/exclusive-topology": LEAF}
        kube.request("POST", JOBSETS.format(ns=ns), body=_jobset("leafy", 1, 3, excl))
        # Only the leader exists (JobSet makes the followers once it is bound); it does not
        # bind, since no leaf has room for all 3, and says so.
        wait_for("the leader", lambda: len(_ours(kube, ns, js)) == 1, timeout_s=60)
        wait_for(
            "the leader's reason",
            lambda: all(
                f"waiting for 24 GPUs (3 pods x 8 GPUs) in one {LEAF}" in condition(p).get("message", "")
                for p in _ours(kube, ns, js).values()
            ),
        )
        time.sleep(3)
        assert _bound(_ours(kube, ns, js)) == {}
        # One leaf gets a third free node: the leader binds there, the followers follow.
        kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods/held-0", query={"gracePeriodSeconds": 0})
        got = wait_for(
            "the whole Job bound", lambda: len(b := _bound(_ours(kube, ns, js))) == 3 and b, timeout_s=90
        )
        leaves = _leaf_of(workload_cluster)
        assert {leaves[n] for n in got.values()} == {leaves[taken[0]]}
