"""Kubeflow (training-operator v1 PyTorchJob, Trainer v2 TrainJob) and KubeRay (RayJob)
workloads as their docs write them, on the real API server with their real controllers
(fixture `workload_cluster`: 8 nodes x 8 GPUs on 2 leaves, no kube-scheduler), scheduled by the
real gpufair daemon, with no gpufair labels: each binds whole or waits whole, with the gang's
reason on its pods, and is charged to the namespace's team."""

from __future__ import annotations

import time
from typing import Any

from tests.daemon_support import InProcessDaemon, condition, kube_for, make_team, pods_in, wait_for
from tests.fixtures_workloads import WorkloadCluster

PYTORCHJOBS = "/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs"
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs"
RAYJOBS = "/apis/ray.io/v1/namespaces/{ns}/rayjobs"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"


def _pod_spec(container: str, gpus: int) -> dict[str, Any]:
    return {
        "schedulerName": "gpufair",
        "priorityClassName": "gpufair-training",
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": container,
                "image": "docker.io/kubeflowkatib/pytorch-mnist:v1beta1-45c5727",
                "resources": {"limits": {"nvidia.com/gpu": gpus}},
            }
        ],
    }


def pytorchjob(name: str, workers: int, gpus: int = 8) -> dict[str, Any]:
    """The training-operator docs' PyTorchJob: one Master and `workers` Workers."""

    def replica(n: int) -> dict[str, Any]:
        return {"replicas": n, "restartPolicy": "OnFailure", "template": {"spec": _pod_spec("pytorch", gpus)}}

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name},
        "spec": {"pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(workers)}},
    }


def trainjob(name: str, nodes: int, gpus: int = 8) -> dict[str, Any]:
    """Trainer's quick start: a TrainJob on the `torch-distributed` runtime (whose pods the
    dev cluster gives to gpufair, see scheduler.devcluster.workloads.trainer_runtimes)."""
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name},
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {"numNodes": nodes, "resourcesPerNode": {"limits": {"nvidia.com/gpu": gpus}}},
        },
    }


def ray_cluster_spec(workers: int, gpus: int = 8) -> dict[str, Any]:
    """KubeRay's sample cluster: a head and one worker group of `workers` (all required)."""

    def template(container: str, n: int) -> dict[str, Any]:
        spec = _pod_spec(container, n)
        spec["containers"][0]["image"] = "rayproject/ray:2.46.0"
        return {"spec": spec}

    return {
        "headGroupSpec": {"rayStartParams": {}, "template": template("ray-head", 0)},
        "workerGroupSpecs": [
            {
                "groupName": "gpu",
                "replicas": workers,
                "minReplicas": workers,
                "maxReplicas": workers,
                "rayStartParams": {},
                "template": template("ray-worker", gpus),
            }
        ],
    }


def rayjob(name: str, workers: int, gpus: int = 8) -> dict[str, Any]:
    """KubeRay's RayJob sample, on that cluster."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name},
        "spec": {
            "entrypoint": "python /home/ray/samples/sample_code.py",
            "rayClusterSpec": ray_cluster_spec(workers, gpus),
        },
    }


def blocker(name: str, pods: int, priority: str = "gpufair-training") -> dict[str, Any]:
    """An indexed Job of independent 8-GPU pods that takes `pods` nodes."""
    spec = _pod_spec("main", 8)
    spec["priorityClassName"] = priority
    spec["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "annotations": {"gpufair.io/independent-pods": "true"}},
        "spec": {
            "parallelism": pods,
            "completions": pods,
            "completionMode": "Indexed",
            "template": {"spec": spec},
        },
    }


def labelled(kube, ns: str, label: str, value: str | None = None) -> dict[str, dict]:
    return {
        n: p
        for n, p in pods_in(kube, ns).items()
        if label in (labels := p["metadata"].get("labels") or {})
        and (value is None or labels[label] == value)
    }


def bound(pods: dict[str, dict]) -> dict[str, str]:
    return {n: p["spec"]["nodeName"] for n, p in pods.items() if p["spec"].get("nodeName")}


def allocated(kube, team: str) -> int:
    status = kube.request("GET", f"/apis/gpufair.io/v1alpha1/gputeams/{team}").get("status") or {}
    return int(status.get("allocatedGPUs") or 0)


def _waits_whole_with_reason(kube, pods, count: int, shape: str) -> None:
    wait_for(f"the {count} pods", lambda: len(pods()) == count, timeout_s=90)
    try:
        wait_for(
            "the gang's reason on every pod",
            lambda: all(shape in condition(p).get("message", "") for p in pods().values()),
            timeout_s=30,
        )
    except AssertionError as exc:
        said = {n: condition(p).get("message") for n, p in pods().items()}
        raise AssertionError(f"{exc}; the pods say {said}") from None
    time.sleep(3)
    assert bound(pods()) == {}


def test_a_pytorchjob_binds_whole_or_waits_whole_charged_to_its_team(
    workload_cluster: WorkloadCluster, workload_namespace: str
) -> None:
    ns, kube = workload_namespace, kube_for(workload_cluster.kubeconfig)
    make_team(kube, "kf-team", [ns])
    name = "training.kubeflow.org/job-name"
    with InProcessDaemon(workload_cluster.kubeconfig):
        # Master + 8 Workers of 8 GPUs: 72 GPUs on 64, so none of it starts.
        kube.request("POST", PYTORCHJOBS.format(ns=ns), body=pytorchjob("huge", 8))
        _waits_whole_with_reason(
            kube,
            lambda: labelled(kube, ns, name, "huge"),
            9,
            "waiting for 72 GPUs (1 pod x 8 GPUs + 8 pods x 8 GPUs) to fit at once; 64 GPUs free",
        )
        kube.request("DELETE", PYTORCHJOBS.format(ns=ns) + "/huge", query={"propagationPolicy": "Foreground"})
        wait_for("its pods gone", lambda: not labelled(kube, ns, name, "huge"), timeout_s=60)

        # Master + 2 Workers: the 3 bind together, on 3 nodes, 24 GPUs charged to the team.
        kube.request("POST", PYTORCHJOBS.format(ns=ns), body=pytorchjob("ddp", 2))
        placed = wait_for(
            "the PyTorchJob bound whole", lambda: len(b := bound(labelled(kube, ns, name, "ddp"))) == 3 and b
        )
        assert len(set(placed.values())) == 3
        wait_for("the team charged", lambda: allocated(kube, "kf-team") >= 24)
        assert allocated(kube, "kf-team") == 24


def test_a_trainjob_binds_whole_or_waits_whole_charged_to_its_team(
    workload_cluster: WorkloadCluster, workload_namespace: str
) -> None:
    ns, kube = workload_namespace, kube_for(workload_cluster.kubeconfig)
    make_team(kube, "tj-team", [ns])
    name = "jobset.sigs.k8s.io/jobset-name"  # a TrainJob runs as a JobSet of its name
    with InProcessDaemon(workload_cluster.kubeconfig):
        kube.request("POST", TRAINJOBS.format(ns=ns), body=trainjob("huge", 9))
        _waits_whole_with_reason(
            kube, lambda: labelled(kube, ns, name, "huge"), 9, "waiting for 72 GPUs (9 pods x 8 GPUs)"
        )
        kube.request("DELETE", TRAINJOBS.format(ns=ns) + "/huge", query={"propagationPolicy": "Foreground"})
        wait_for("its pods gone", lambda: not labelled(kube, ns, name, "huge"), timeout_s=60)

        kube.request("POST", TRAINJOBS.format(ns=ns), body=trainjob("fit", 2))
        placed = wait_for(
            "the TrainJob bound whole", lambda: len(b := bound(labelled(kube, ns, name, "fit"))) == 2 and b
        )
        assert len(set(placed.values())) == 2
        wait_for("the team charged", lambda: allocated(kube, "tj-team") >= 16)
        assert allocated(kube, "tj-team") == 16


def test_a_rayjobs_cluster_starts_whole_when_it_fits(
    workload_cluster: WorkloadCluster, workload_namespace: str
) -> None:
    ns, kube = workload_namespace, kube_for(workload_cluster.kubeconfig)
    make_team(kube, "rj-team", [ns])
    ray = "ray.io/cluster"
    with InProcessDaemon(workload_cluster.kubeconfig):
        # 7 of the 8 nodes taken: the head fits, the 2 workers do not, so none of the 3 starts.
        kube.request("POST", JOBS.format(ns=ns), body=blocker("block", 7))
        wait_for(
            "the blocking pods bound",
            lambda: len(bound(labelled(kube, ns, "batch.kubernetes.io/job-name"))) == 7,
        )
        kube.request("POST", RAYJOBS.format(ns=ns), body=rayjob("rayjob-sample", 2))
        _waits_whole_with_reason(
            kube, lambda: labelled(kube, ns, ray), 3, "waiting for 16 GPUs (2 pods x 8 GPUs + 1 pod x no GPU)"
        )
        kube.request("DELETE", JOBS.format(ns=ns) + "/block", query={"propagationPolicy": "Background"})
        got = wait_for(
            "the RayJob's head and 2 workers bound",
            lambda: len(b := bound(labelled(kube, ns, ray))) == 3 and b,
            timeout_s=90,
        )
        assert len(got) == 3
        wait_for("the team charged", lambda: allocated(kube, "rj-team") == 16, timeout_s=30)
