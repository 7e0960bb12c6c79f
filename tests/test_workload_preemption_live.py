"""Whole-workload preemption and the owning controller's recovery, for each kind a training
team submits (an indexed Job, a PyTorchJob, a RayCluster; JobSet and LWS are in
test_workloads_live.py), on the real API server with the real controllers and the real daemon:
a production LeaderWorkerSet group evicts every pod of the workload through the Eviction API
(not only the two nodes it needs), the controller makes the pods anew, they wait whole while
the LWS runs, and run whole once it goes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.daemon_support import InProcessDaemon, kube_for, make_team, pods_in, wait_for
from tests.fixtures_workloads import WorkloadCluster
from tests.test_workloads_kubeflow_ray_live import (
    _pod_spec,
    blocker,
    bound,
    labelled,
    pytorchjob,
    ray_cluster_spec,
)
from tests.test_workloads_live import LWS, _lws


def _indexed_job(name: str, pods: int) -> dict[str, Any]:
    """The Job docs' way to keep a disruption from counting as a failure: the Eviction API
    marks the pod DisruptionTarget, and podFailurePolicy ignores that."""
    spec = _pod_spec("main", 8)
    spec["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "parallelism": pods,
            "completions": pods,
            "backoffLimit": 0,
            "podFailurePolicy": {
                "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
            },
            "template": {"spec": spec},
        },
    }


def _raycluster(name: str, workers: int) -> dict[str, Any]:
    """The KubeRay docs' RayCluster: a head and one worker group, every worker required."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": ray_cluster_spec(workers),
    }


def _job_not_failed(kube, ns: str) -> None:
    job = kube.request("GET", f"/apis/batch/v1/namespaces/{ns}/jobs/train")
    conditions = {c["type"]: c["status"] for c in (job.get("status") or {}).get("conditions") or []}
    assert conditions.get("Failed") != "True", conditions
    assert not (job.get("status") or {}).get("failed"), job.get("status")


def _no_check(kube, ns: str) -> None:
    return None


# kind -> (collection path, body, the label its pods carry, pods, nodes taken by production
# pods beside it, a check on the owner after recovery). The Job controller makes failed
# pods anew after a backoff that doubles with each (10 s, 20 s, 40 s, ...), ignored failures
# too, so the Job is 3 pods beside 5 production ones rather than 8 alone.
KINDS: dict[str, tuple[str, dict[str, Any], str, int, int, Callable[[Any, str], None]]] = {
    "job": (
        "/apis/batch/v1/namespaces/{ns}/jobs",
        _indexed_job("train", 3),
        "batch.kubernetes.io/job-name=train",
        3,
        5,
        _job_not_failed,
    ),
    "pytorchjob": (
        "/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs",
        pytorchjob("train", 7),
        "training.kubeflow.org/job-name=train",
        8,
        0,
        _no_check,
    ),
    "raycluster": (
        "/apis/ray.io/v1/namespaces/{ns}/rayclusters",
        _raycluster("train", 8),
        "ray.io/cluster=train",
        9,
        0,
        _no_check,
    ),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_production_lws_evicts_the_whole_workload_and_its_controller_brings_it_back(
    kind: str, workload_cluster: WorkloadCluster, workload_namespace: str
) -> None:
    from tests.test_daemon_integration import _policy

    ns, kube = workload_namespace, kube_for(workload_cluster.kubeconfig)
    path, body, selector, count, blockers, check = KINDS[kind]
    label, value = selector.split("=")
    make_team(kube, f"mixed-{kind}", [ns], production={"allowed": True})

    def ours() -> dict[str, dict]:
        return labelled(kube, ns, label, value)

    def uids(pods: dict[str, dict]) -> set[str]:
        return {p["metadata"]["uid"] for p in pods.values()}

    with InProcessDaemon(workload_cluster.kubeconfig, policy=_policy(default_min_runtime_s=0.0)):
        if blockers:
            kube.request(
                "POST",
                f"/apis/batch/v1/namespaces/{ns}/jobs",
                body=blocker("serving", blockers, "gpufair-production"),
            )
            serving = "batch.kubernetes.io/job-name"
            wait_for(
                "the production pods bound",
                lambda: len(bound(labelled(kube, ns, serving, "serving"))) == blockers,
                timeout_s=60,
            )
        kube.request("POST", path.format(ns=ns), body=body)
        wait_for(f"the {kind} bound whole", lambda: len(bound(ours())) == count, timeout_s=90)
        first = uids(ours())
        assert len(first) == count

        kube.request("POST", LWS.format(ns=ns), body=_lws("infer", 2))
        lws = "leaderworkerset.sigs.k8s.io/name"
        try:
            wait_for("the LWS group bound", lambda: len(bound(labelled(kube, ns, lws))) == 2, timeout_s=90)
        except AssertionError as exc:
            from tests.daemon_support import condition

            said = {
                n: (p["spec"].get("nodeName"), condition(p).get("message"))
                for n, p in pods_in(kube, ns).items()
            }
            raise AssertionError(f"{exc}: {said}") from None
        # Every pod of the workload went, not only those on the two nodes the group took.
        wait_for("the first pods gone", lambda: not (first & uids(ours())), timeout_s=60)
        try:
            anew = wait_for(
                f"the {kind}'s controller making its pods anew",
                lambda: len(p := ours()) == count and not (first & uids(p)) and p,
                timeout_s=120,
            )
        except AssertionError as exc:
            now = {
                n: (p["status"].get("phase"), p["metadata"].get("deletionTimestamp"))
                for n, p in ours().items()
            }
            owner = kube.request("GET", path.format(ns=ns) + "/train").get("status")
            raise AssertionError(f"{exc}: pods {now}, owner {owner}") from None
        # The LWS's 2 nodes are gone from what the workload had: it waits whole.
        time.sleep(3)
        assert bound(ours()) == {}
        assert uids(ours()) == uids(anew)
        check(kube, ns)

        kube.request("DELETE", LWS.format(ns=ns) + "/infer")
        wait_for(f"the {kind} rescheduled whole", lambda: len(bound(ours())) == count, timeout_s=120)
        # The pods that waited are the ones that run: no further churn.
        assert uids(ours()) == uids(anew)
