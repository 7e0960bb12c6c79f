"""The real workload controllers on the real API server (fixture `workload_cluster`): each
turns a minimal manifest from its upstream docs (schedulerName and priorityClassName set)
into its child objects and pods, its webhooks served with the dev cluster's CA."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from scheduler.devcluster import workloads
from tests.fixtures_workloads import WorkloadCluster

SCHEDULER = "gpufair"
TRAINING = "gpufair-training"
PRODUCTION = "gpufair-production"


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.2)


def _pods(kube: WorkloadCluster, ns: str, selector: str) -> list[client.V1Pod]:
    return list(client.CoreV1Api(kube.api).list_namespaced_pod(ns, label_selector=selector).items)


def _create(kube: WorkloadCluster, ns: str, group: str, version: str, plural: str, body: dict) -> dict:
    api = client.CustomObjectsApi(kube.api)
    api.create_namespaced_custom_object(group, version, ns, plural, body)
    got: dict = api.get_namespaced_custom_object(group, version, ns, plural, body["metadata"]["name"])
    return got


def _pod_template(name: str, priority: str, gpus: int = 1) -> dict[str, Any]:
    return {
        "spec": {
            "schedulerName": SCHEDULER,
            "priorityClassName": priority,
            "containers": [
                {
                    "name": name,
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"limits": {"nvidia.com/gpu": gpus}},
                }
            ],
        }
    }


def _owner_kinds(kube: WorkloadCluster, ns: str, pod: client.V1Pod) -> list[str]:
    """The pod's controller chain upwards, by kind (Pod's owner, its owner, ...)."""
    apps, batch = client.AppsV1Api(kube.api), client.BatchV1Api(kube.api)
    kinds = []
    refs = pod.metadata.owner_references or []
    while refs:
        ref = next(r for r in refs if r.controller)
        kinds.append(ref.kind)
        if ref.kind == "Job":
            refs = batch.read_namespaced_job(ref.name, ns).metadata.owner_references or []
        elif ref.kind == "StatefulSet":
            refs = apps.read_namespaced_stateful_set(ref.name, ns).metadata.owner_references or []
        else:
            break
    return kinds


def test_versions_match_the_build_script() -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "build-workload-controllers.sh"
    text = script.read_text()
    pins = {
        "jobset": "JOBSET_VERSION",
        "lws": "LWS_VERSION",
        "kuberay-operator": "KUBERAY_VERSION",
        "training-operator": "TRAINING_OPERATOR_VERSION",
        "trainer": "TRAINER_VERSION",
    }
    assert set(pins) == set(workloads.WORKLOAD_VERSIONS)
    for name, var in pins.items():
        assert f"{var}={workloads.WORKLOAD_VERSIONS[name]}\n" in text, name


def test_controllers_ready_and_crds_established(workload_cluster: WorkloadCluster) -> None:
    ext = client.ApiextensionsV1Api(workload_cluster.api)
    assert set(workload_cluster.controllers) == set(workloads.DEFAULT_CONTROLLERS)
    for running in workload_cluster.controllers.values():
        assert workload_cluster.dev.procs[running.name].running(), running.name
        assert running.crds, running.name
        for crd in running.crds:
            conds = {c.type: c.status for c in ext.read_custom_resource_definition(crd).status.conditions}
            assert conds.get("Established") == "True", crd
    adm = client.AdmissionregistrationV1Api(workload_cluster.api)
    names = {m.metadata.name for m in adm.list_mutating_webhook_configuration().items}
    validating = {v.metadata.name for v in adm.list_validating_webhook_configuration().items}
    for name in ("training-operator", "trainer"):
        hooks = workload_cluster.controllers[name].webhook_configurations
        assert hooks and set(hooks) <= validating, name
    for name in ("jobset", "lws"):
        assert workload_cluster.controllers[name].webhook_configurations
        hooks = [h for h in workload_cluster.controllers[name].webhook_configurations if "mutating" in h]
        assert hooks and set(hooks) <= names


@pytest.mark.parametrize(
    ("name", "pod_label"),
    [("jobset", "jobset.sigs.k8s.io/jobset-name"), ("lws", "leaderworkerset.sigs.k8s.io/name")],
)
def test_webhook_configurations_point_at_loopback_with_upstream_pod_selectors(
    name: str, pod_label: str
) -> None:
    docs = workloads.webhook_configurations(name, 12345, b"CA")
    assert {d["kind"] for d in docs} == {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    assert all(d["metadata"]["name"].startswith(f"gpufair-dev-{name}-") for d in docs)
    hooks = [h for d in docs for h in d["webhooks"]]
    assert hooks and all(h["clientConfig"]["url"].startswith("https://127.0.0.1:12345/") for h in hooks)
    assert all(h["clientConfig"]["caBundle"] == "Q0E=" for h in hooks)
    pod_hooks = [h for h in hooks if h["clientConfig"]["url"].endswith("-v1-pod")]
    assert len(pod_hooks) == 2  # mutating and validating, each only for the controller's own pods
    for hook in pod_hooks:
        keys = [e["key"] for e in hook["objectSelector"]["matchExpressions"]]
        assert keys == [pod_label]


def test_jobset_makes_jobs_and_pods(workload_cluster: WorkloadCluster, workload_namespace: str) -> None:
    ns = workload_namespace
    # The JobSet docs' simple example, with schedulerName and a priority class; no restartPolicy,
    # so the stored object shows the defaulting webhook ran (the CRD cannot default it).
    body = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "trainer"},
        "spec": {
            "replicatedJobs": [
                {
                    "name": "workers",
                    "replicas": 2,
                    "template": {
                        "spec": {
                            "parallelism": 2,
                            "completions": 2,
                            "backoffLimit": 0,
                            "template": _pod_template("worker", TRAINING),
                        }
                    },
                }
            ]
        },
    }
    stored = _create(workload_cluster, ns, "jobset.x-k8s.io", "v1alpha2", "jobsets", body)
    job_spec = stored["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job_spec["template"]["spec"]["restartPolicy"] == "OnFailure"
    assert job_spec["completionMode"] == "Indexed"
    pods = _wait(
        "4 JobSet pods",
        lambda: (
            (p := _pods(workload_cluster, ns, "jobset.sigs.k8s.io/jobset-name=trainer")) and len(p) == 4 and p
        ),
    )
    for pod in pods:
        assert pod.spec.scheduler_name == SCHEDULER
        assert pod.spec.priority_class_name == TRAINING
        assert pod.status.phase == "Pending"  # no scheduler but gpufair's would bind them
        assert _owner_kinds(workload_cluster, ns, pod) == ["Job", "JobSet"]
    jobs = client.BatchV1Api(workload_cluster.api).list_namespaced_job(ns).items
    assert sorted(j.metadata.name for j in jobs) == ["trainer-workers-0", "trainer-workers-1"]


def test_leaderworkerset_makes_groups(workload_cluster: WorkloadCluster, workload_namespace: str) -> None:
    ns = workload_namespace
    # The LWS docs' quick-start shape: 2 groups of 3 (a leader and 2 workers).
    body = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "infer"},
        "spec": {
            "replicas": 2,
            "leaderWorkerTemplate": {"size": 3, "workerTemplate": _pod_template("server", PRODUCTION)},
        },
    }
    _create(workload_cluster, ns, "leaderworkerset.x-k8s.io", "v1", "leaderworkersets", body)
    pods = _wait(
        "6 LWS pods",
        lambda: (
            (p := _pods(workload_cluster, ns, "leaderworkerset.sigs.k8s.io/name=infer")) and len(p) == 6 and p
        ),
    )
    groups: dict[str, list[str]] = {}
    for pod in pods:
        labels = pod.metadata.labels
        # Set by LWS's pod webhook (the StatefulSets do not carry them): proof it is served.
        assert "leaderworkerset.sigs.k8s.io/worker-index" in labels
        assert "leaderworkerset.sigs.k8s.io/group-key" in labels
        groups.setdefault(labels["leaderworkerset.sigs.k8s.io/group-index"], []).append(
            labels["leaderworkerset.sigs.k8s.io/worker-index"]
        )
        assert pod.spec.scheduler_name == SCHEDULER
        assert _owner_kinds(workload_cluster, ns, pod)[0] == "StatefulSet"
    assert {k: sorted(v) for k, v in groups.items()} == {"0": ["0", "1", "2"], "1": ["0", "1", "2"]}


def test_raycluster_makes_head_and_workers(
    workload_cluster: WorkloadCluster, workload_namespace: str
) -> None:
    ns = workload_namespace
    # KubeRay's minimal RayCluster sample shape: a head and one worker group of minReplicas 2.
    container = {"name": "ray", "image": "rayproject/ray:2.46.0"}
    body = yaml.safe_load(
        """
apiVersion: ray.io/v1
kind: RayCluster
metadata: {name: raycluster-mini}
spec:
  rayVersion: "2.46.0"
  headGroupSpec:
    rayStartParams: {}
    template: {}
  workerGroupSpecs:
  - groupName: workers
    replicas: 2
    minReplicas: 2
    maxReplicas: 4
    rayStartParams: {}
    template: {}
"""
    )
    for part in (body["spec"]["headGroupSpec"], body["spec"]["workerGroupSpecs"][0]):
        part["template"] = {
            "spec": {
                "schedulerName": SCHEDULER,
                "priorityClassName": TRAINING,
                "containers": [dict(container)],
            }
        }
    _create(workload_cluster, ns, "ray.io", "v1", "rayclusters", body)
    pods = _wait(
        "RayCluster head and 2 workers",
        lambda: (p := _pods(workload_cluster, ns, "ray.io/cluster=raycluster-mini")) and len(p) == 3 and p,
    )
    types = sorted(p.metadata.labels["ray.io/node-type"] for p in pods)
    assert types == ["head", "worker", "worker"]
    for pod in pods:
        assert pod.spec.scheduler_name == SCHEDULER
        assert _owner_kinds(workload_cluster, ns, pod) == ["RayCluster"]


@pytest.mark.parametrize("name", ["jobset", "lws", "training-operator", "trainer"])
def test_controller_logs_in_state_dir(workload_cluster: WorkloadCluster, name: str) -> None:
    log = workload_cluster.dev.state_dir / "logs" / f"{name}.log"
    assert log.is_file() and log.stat().st_size > 0


@pytest.mark.parametrize(
    ("plural", "body", "hook", "words"),
    [
        (
            "pytorchjobs",
            {
                "apiVersion": "kubeflow.org/v1",
                "kind": "PyTorchJob",
                "metadata": {"name": "bad"},
                "spec": {
                    "pytorchReplicaSpecs": {"Boss": {"replicas": 1, "template": _pod_template("p", "x")}}
                },
            },
            "validator.pytorchjob.training-operator.kubeflow.org",
            '"Boss"',
        ),
        (
            "trainjobs",
            {
                "apiVersion": "trainer.kubeflow.org/v1alpha1",
                "kind": "TrainJob",
                "metadata": {"name": "bad"},
                "spec": {"runtimeRef": {"name": "no-such-runtime"}},
            },
            "validator.trainjob.trainer.kubeflow.org",
            "no-such-runtime",
        ),
    ],
)
def test_the_kubeflow_controllers_webhooks_answer_on_loopback(
    workload_cluster: WorkloadCluster, workload_namespace: str, plural: str, body: dict, hook: str, words: str
) -> None:
    # Refused by the controller's own validation, reached through our URL and CA: the
    # training operator's (its rotator running beside it) and Trainer's.
    group, version = body["apiVersion"].split("/")
    api = client.CustomObjectsApi(workload_cluster.api)
    with pytest.raises(client.ApiException) as refused:
        api.create_namespaced_custom_object(group, version, workload_namespace, plural, body)
    message = json.loads(refused.value.body)["message"]
    assert f'admission webhook "{hook}" denied the request' in message
    assert words in message
