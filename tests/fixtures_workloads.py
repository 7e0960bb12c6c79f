"""Pytest fixtures: a real control plane WITH the real workload controllers (JobSet,
LeaderWorkerSet, KubeRay; see scheduler.devcluster.workloads), started once per session.

- `workload_cluster` (session): its own KubeCluster (the default 8 fake nodes of 8 H100 on
  2 leaves, no kube-scheduler: pods with `schedulerName: gpufair` wait for gpufair), with
  gpufair's CRDs and PriorityClasses installed and every controller ready, its webhooks
  served. `workload_cluster.controllers` maps controller name -> RunningController.
- `workload_namespace` (function): a fresh namespace on it, deleted after the test (which
  waits until its pods are gone).

Missing binaries make the fixture fail with the build instruction (never skip).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from scheduler.devcluster.binaries import MissingBinary
from scheduler.devcluster.gpufair_objects import install_gpufair_objects
from scheduler.devcluster.workloads import RunningController, start_workload_controllers
from tests.fixtures_kube import KubeCluster, fresh_namespace, start_kube_cluster, stop_kube_cluster


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
    """A fresh namespace on the workload cluster; deleted afterwards, waiting for its pods to
    go, since each test may fill the cluster."""
    with fresh_namespace(workload_cluster.core, request.node.name, wait_gone_s=120.0) as name:
        yield name
