"""Pytest fixtures: a real control plane WITH the real workload controllers (JobSet,
LeaderWorkerSet, KubeRay; see scheduler.devcluster.workloads), started once per session.

- `workload_cluster` (session): its own KubeCluster (the default 8 fake nodes of 8 H100 on
  2 leaves, no kube-scheduler: pods with `schedulerName: gpufair` wait for gpufair), with
  gpufair's CRDs and PriorityClasses installed and every controller ready, its webhooks
  served. `workload_cluster.controllers` maps controller name -> RunningController.
- `workload_namespace` (function): a fresh namespace on it, deleted after the test.

Missing binaries make the fixture fail with the build instruction (never skip).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from scheduler.devcluster.binaries import MissingBinary
from scheduler.devcluster.gpufair_objects import install_gpufair_objects
from scheduler.devcluster.workloads import RunningController, start_workload_controllers
from tests.fixtures_kube import KubeCluster, _namespace_name, start_kube_cluster, stop_kube_cluster


@dataclass
class WorkloadCluster(KubeCluster):
    """A KubeCluster whose workload controllers run (`controllers`, by name)."""

    controllers: dict[str, RunningController] = field(default_factory=dict)


@pytest.fixture(scope="session")
def workload_cluster() -> Iterator[WorkloadCluster]:
    kube = start_kube_cluster()
    try:
        install_gpufair_objects(kube.kubeconfig)
        try:
            controllers = start_workload_controllers(kube.dev)
        except MissingBinary as exc:
            pytest.fail(str(exc), pytrace=False)
        wc = WorkloadCluster(kube.dev, kube.api, kube.nodes, controllers)
    except BaseException:
        stop_kube_cluster(kube)
        raise
    try:
        yield wc
    finally:
        stop_kube_cluster(wc)


@pytest.fixture
def workload_namespace(workload_cluster: WorkloadCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the workload cluster; deleted (without waiting) afterwards."""
    name = _namespace_name(request.node.name)
    core = workload_cluster.core
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name, _preload_content=False)
            break
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, grace_period_seconds=0, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise
