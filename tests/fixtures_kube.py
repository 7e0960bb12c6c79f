"""Pytest fixtures: a real Kubernetes control plane (etcd, kube-apiserver with RBAC,
kube-controller-manager, KWOK) on loopback, started once per session.

- `kube_cluster` (session): the shared cluster, 8 fake nodes of 8 H100 GPUs on 2 leaves
  (`gpu-0000` ... `gpu-0007`; leaf-0 holds 0000-0003, leaf-1 holds 0004-0007). Tests
  that add nodes delete them again; tests that need another node set use the factory.
- `kube_cluster_factory` (module): `factory(nodes, **DevCluster kwargs)` starts a separate
  cluster (nodes: simulator Nodes, a ClusterSpec dict / YAML text / file path, or None for
  the default 8), stopped at the end of the module or by its `.stop()`.
- `kube_namespace` (function): a fresh namespace (its default ServiceAccount exists, so
  pods are admitted at once), deleted after the test.

The binaries come from `make control-plane`; if they are missing the fixture errors
with that instruction (never skips).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from scheduler.core.model import Node
from scheduler.devcluster.binaries import MissingBinary
from scheduler.devcluster.cluster import DevCluster
from scheduler.devcluster.nodes import LEAF, SPINE, gpu_nodes
from simulator.cluster_spec import load_cluster_spec, nodes_from_spec

DEFAULT_NODES = 8
DEFAULT_GPUS_PER_NODE = 8
DEFAULT_NODES_PER_LEAF = 4


def default_nodes() -> tuple[Node, ...]:
    """8 nodes x 8 H100 on 2 leaves of one spine, each node its own NVLink clique."""
    return gpu_nodes(
        DEFAULT_NODES, gpus_per_node=DEFAULT_GPUS_PER_NODE, nodes_per_leaf=DEFAULT_NODES_PER_LEAF
    )


@dataclass
class KubeCluster:
    """What a test gets: the running cluster, an admin client, and node helpers."""

    dev: DevCluster
    api: client.ApiClient
    nodes: list[Node] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (bearer token in group system:masters, CA embedded)."""
        return self.dev.kubeconfig

    @property
    def server(self) -> str:
        return self.dev.server

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def create_nodes(self, nodes: Iterable[Node], *, wait_ready: bool = True) -> list[str]:
        """Create fake GPU nodes (simulator `Node` values) and wait until KWOK has them Ready."""
        nodes = list(nodes)
        names = self.dev.create_nodes(nodes, wait_ready=wait_ready)
        self.nodes.extend(nodes)
        return names

    def add_gpu_nodes(self, count: int, *, name: str | None = None, **kwargs: Any) -> list[Node]:
        """`count` more nodes (see `scheduler.devcluster.nodes.gpu_nodes` for kwargs), on new
        leaves and a new spine after those in use, so they never join an existing leaf."""
        leaves = [int(n.labels[LEAF].rsplit("-", 1)[1]) for n in self.nodes if LEAF in n.labels]
        spines = [int(n.labels[SPINE].rsplit("-", 1)[1]) for n in self.nodes if SPINE in n.labels]
        kwargs.setdefault("first_leaf", max(leaves, default=-1) + 1)
        kwargs.setdefault("first_spine", max(spines, default=-1) + 1)
        made = list(gpu_nodes(count, name=name or f"x{secrets.token_hex(2)}", **kwargs))
        self.create_nodes(made)
        return made

    def delete_nodes(self, names: Iterable[str | Node]) -> None:
        """Delete nodes (by name or Node) and wait until they are gone."""
        gone = {n.name if isinstance(n, Node) else n for n in names}
        self.dev.delete_nodes(gone)
        self.nodes = [n for n in self.nodes if n.name not in gone]

    def restart_apiserver(self, downtime_s: float = 0.0) -> None:
        self.dev.restart_apiserver(downtime_s)

    def serviceaccount_kubeconfig(self, namespace: str, name: str, **kwargs: Any) -> Path:
        return self.dev.serviceaccount_kubeconfig(namespace, name, **kwargs)

    def static_kubeconfig(self, user: str) -> Path:
        """Kubeconfig of a static-token user: `gpufair-admin`, `gpufair-nobody` (no rights), or
        one passed as `tokens={user: [groups]}` to the factory."""
        return self.dev.static_kubeconfig(user)

    def stop(self) -> None:
        """Stop this cluster now (the fixtures also stop it at the end of their scope)."""
        if self.dev.procs:
            self.api.close()
            self.dev.stop()

    def new_api_client(self, kubeconfig: Path | None = None) -> client.ApiClient:
        """A separate ApiClient (admin by default) for code under test; close it after."""
        from scheduler.devcluster.kubeconfig import api_client

        return api_client(kubeconfig or self.kubeconfig)


NodeSet = Iterable[Node] | Mapping[str, Any] | str | Path | None


def resolve_nodes(nodes: NodeSet) -> tuple[Node, ...]:
    """The nodes a cluster starts with: `None` (the default 8), simulator `Node` values, a
    ClusterSpec as a dict (groups without CPU or memory get 112 cores and 2 TiB) or YAML
    text, or the path of a ClusterSpec file."""
    if nodes is None:
        return default_nodes()
    if isinstance(nodes, Mapping):
        # Tests rarely care about host CPU and memory: HGX-class defaults where a group has none.
        spec = dict(nodes)
        if isinstance(spec.get("groups"), list):
            spec["groups"] = [
                {
                    **({} if "cpuMilli" in g or "cpus" in g else {"cpus": 112}),
                    "memoryMiB": 2 * 1024 * 1024,
                    **g,
                }
                if isinstance(g, Mapping)
                else g
                for g in spec["groups"]
            ]
        return load_cluster_spec(json.dumps(spec), source="kube_cluster_factory")
    if isinstance(nodes, Path) or (isinstance(nodes, str) and "\n" not in nodes):
        return nodes_from_spec(nodes)
    if isinstance(nodes, str):
        return load_cluster_spec(nodes, source="kube_cluster_factory")
    return tuple(nodes)


def start_kube_cluster(nodes: NodeSet = None, **kwargs: Any) -> KubeCluster:
    """Start a DevCluster with `nodes` (see `resolve_nodes`; kwargs go to DevCluster);
    pytest.fail, never skip, when the binaries are missing."""
    made = resolve_nodes(nodes)  # a bad spec fails before anything starts
    try:
        dev = DevCluster(**kwargs).start()
    except MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        api = dev.api_client(pool_size=32)
        kube = KubeCluster(dev, api)
        kube.create_nodes(made)
    except BaseException:
        dev.stop()
        raise
    return kube


def stop_kube_cluster(kube: KubeCluster) -> None:
    kube.stop()


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """The session's shared control plane with the default 8 GPU nodes."""
    kube = start_kube_cluster()
    try:
        yield kube
    finally:
        stop_kube_cluster(kube)


@pytest.fixture(scope="module")
def kube_cluster_factory() -> Iterator[Callable[..., KubeCluster]]:
    """Start separate clusters, each with its own etcd and node set: `factory(nodes, **kwargs)`.

    Module-scoped, so a module fixture can build its own cluster; clusters live until the
    module ends unless a test calls `.stop()` on one it no longer needs."""
    made: list[KubeCluster] = []

    def factory(nodes: NodeSet = None, **kwargs: Any) -> KubeCluster:
        kube = start_kube_cluster(nodes, **kwargs)
        made.append(kube)
        return kube

    try:
        yield factory
    finally:
        for kube in reversed(made):
            stop_kube_cluster(kube)


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{stem}-{secrets.token_hex(3)}"


@contextlib.contextmanager
def fresh_namespace(core: client.CoreV1Api, test_name: str, wait_gone_s: float = 0.0) -> Iterator[str]:
    """A namespace named after the test, ready once its default ServiceAccount exists (pods
    are refused before); deleted afterwards, waiting up to `wait_gone_s` for its pods to go
    (tests that fill a shared cluster must not leave the next one less room)."""
    name = _namespace_name(test_name)
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
        deadline = time.monotonic() + wait_gone_s
        while time.monotonic() < deadline and core.list_namespaced_pod(name, limit=1).items:
            time.sleep(0.2)


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted (without waiting) afterwards."""
    with fresh_namespace(kube_cluster.core, request.node.name) as name:
        yield name
