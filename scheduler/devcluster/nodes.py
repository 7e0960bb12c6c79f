"""Fake GPU nodes: the simulator's `Node` values turned into Kubernetes Nodes that KWOK runs.

Each Node keeps the simulator's topology labels (spine, leaf, NVLink clique, hostname),
gets the GPU model as a label, `nvidia.com/gpu` capacity (all GPUs) and allocatable (the
healthy ones, as the NVIDIA device plugin reports them), CPU, memory and a pod limit,
and the annotation that hands it to KWOK, which then keeps it Ready and runs its pods.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scheduler.core.config import API_VERSION
from scheduler.core.model import Node
from simulator.cluster_spec import LEAF, SPINE, load_cluster_spec

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_MODEL_LABEL = "gpufair.io/gpu-model"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # what NVIDIA GPU feature discovery sets
UNHEALTHY_ANNOTATION = "gpufair.io/unhealthy-gpus"
FAKE_NODE_LABEL = "type"
FAKE_NODE_VALUE = "kwok"
DEFAULT_MAX_PODS = 110

_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


def _label_value(text: str) -> str:
    value = _NOT_LABEL.sub("-", text).strip("-_.")[:63].strip("-_.")
    return value


def node_manifest(node: Node, max_pods: int = DEFAULT_MAX_PODS) -> dict[str, Any]:
    """The Kubernetes Node object for one simulator node (status included: KWOK keeps it)."""
    labels = {
        **node.labels,
        "kubernetes.io/hostname": node.labels.get("kubernetes.io/hostname", node.name),
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        FAKE_NODE_LABEL: FAKE_NODE_VALUE,
    }
    model = _label_value(node.gpu_model)
    if model:
        labels[GPU_MODEL_LABEL] = model
        labels[GPU_PRODUCT_LABEL] = model
    annotations = {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE, "node.alpha.kubernetes.io/ttl": "0"}
    if node.unhealthy_gpus:
        annotations[UNHEALTHY_ANNOTATION] = ",".join(str(i) for i in sorted(node.unhealthy_gpus))
    capacity = {
        "cpu": f"{node.cpu_milli}m",
        "memory": f"{node.memory_mib}Mi",
        "pods": str(max_pods),
        GPU_RESOURCE: str(node.gpus),
    }
    allocatable = {**capacity, GPU_RESOURCE: str(node.healthy_gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels, "annotations": annotations},
        "spec": {"unschedulable": not node.schedulable},
        "status": {"capacity": capacity, "allocatable": allocatable, "phase": "Running"},
    }


def gpu_nodes(
    count: int,
    *,
    name: str = "gpu",
    gpus_per_node: int = 8,
    gpu_model: str = "H100",
    cpus: int = 112,
    memory_mib: int = 2 * 1024 * 1024,
    nodes_per_leaf: int = 32,
    leaves_per_spine: int = 8,
    nodes_per_rack: int | None = None,
    unhealthy_gpus: int = 0,
    first_leaf: int = 0,
    first_spine: int = 0,
) -> tuple[Node, ...]:
    """One ClusterSpec group of identical nodes `<name>-0000`, ..., read by the simulator's
    spec reader (same names, labels and checks as `gpufair simulate --cluster`).

    `first_leaf` / `first_spine` shift the leaf and spine numbers, so nodes added to a
    running cluster land on switches of their own instead of joining `leaf-0`.
    `nodes_per_rack` puts that many nodes in one NVLink clique (GB200 NVL72 style).
    """
    group: dict[str, Any] = {
        "name": name,
        "count": count,
        "gpusPerNode": gpus_per_node,
        "gpuModel": gpu_model,
        "cpus": cpus,
        "memoryMiB": memory_mib,
        "nodesPerLeaf": nodes_per_leaf,
        "leavesPerSpine": leaves_per_spine,
        "unhealthyGPUs": unhealthy_gpus,
    }
    if nodes_per_rack is not None:
        group.update(nvlinkDomain="rack", nodesPerRack=nodes_per_rack)
    spec = {"apiVersion": API_VERSION, "kind": "ClusterSpec", "groups": [group]}
    made = load_cluster_spec(json.dumps(spec), source=f"gpu_nodes({name!r})")
    if not (first_leaf or first_spine):
        return made

    def shifted(labels: Mapping[str, str]) -> dict[str, str]:
        out = dict(labels)
        out[LEAF] = f"leaf-{int(labels[LEAF].rsplit('-', 1)[1]) + first_leaf}"
        out[SPINE] = f"spine-{int(labels[SPINE].rsplit('-', 1)[1]) + first_spine}"
        return out

    return tuple(dataclasses.replace(n, labels=shifted(n.labels)) for n in made)


def _parallel(fn: Any, items: Sequence[Any], workers: int) -> list[Any]:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))


def create_nodes(
    api: client.ApiClient,
    nodes: Iterable[Node],
    *,
    workers: int = 16,
    wait_ready: bool = True,
    timeout_s: float = 120.0,
    max_pods: int = DEFAULT_MAX_PODS,
) -> list[str]:
    """Create the nodes concurrently; by default wait until KWOK reports every one Ready.

    A name that already exists is an error naming the node (delete it first, or pick
    another spec), so a test never silently reuses a node with different labels.
    """
    core = client.CoreV1Api(api)
    bodies = [node_manifest(n, max_pods) for n in nodes]

    def create(body: dict[str, Any]) -> str:
        name = body["metadata"]["name"]
        try:
            # The client turns a dict body into its V1Node model anyway; done here, it is typed.
            core.create_node(client.V1Node.model_validate(body), _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:
                raise ValueError(
                    f"node {name!r} already exists in the dev cluster; delete it first "
                    "(delete_nodes) or use other node names"
                ) from exc
            raise
        return name

    names = _parallel(create, bodies, workers)
    if wait_ready:
        wait_nodes_ready(api, names, timeout_s=timeout_s)
    return names


def node_objects(api: client.ApiClient, label_selector: str | None = None) -> list[dict[str, Any]]:
    """Node objects as plain JSON, with no client model built per node: the GET that
    `CoreV1Api.list_node(_preload_content=False)` sends (whose annotation says it returns a
    V1NodeList, not the raw answer), and the same ApiException for a non-2xx answer."""
    query = [("labelSelector", label_selector)] if label_selector is not None else []
    resp = api.call_api(
        *api.param_serialize(
            "GET",
            "/api/v1/nodes",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
    )
    data = resp.read()
    if not 200 <= resp.status <= 299:
        raise ApiException.from_response(http_resp=resp, body=None, data=None)
    items: list[dict[str, Any]] = json.loads(data)["items"]
    return items


def _ready(item: dict[str, Any]) -> bool:
    for cond in item.get("status", {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def wait_nodes_ready(api: client.ApiClient, names: Iterable[str], timeout_s: float = 120.0) -> None:
    """Block until every named node has condition Ready=True (KWOK sets it)."""
    waiting = set(names)
    deadline = time.monotonic() + timeout_s
    while waiting:
        items = node_objects(api, f"{FAKE_NODE_LABEL}={FAKE_NODE_VALUE}")
        waiting -= {item["metadata"]["name"] for item in items if _ready(item)}
        if not waiting:
            return
        if time.monotonic() > deadline:
            some = ", ".join(sorted(waiting)[:5])
            raise TimeoutError(
                f"{len(waiting)} fake node(s) not Ready after {timeout_s:g}s (e.g. {some}); "
                "is KWOK running? see kwok.log in the dev cluster's state directory"
            )
        time.sleep(0.2)


def delete_nodes(
    api: client.ApiClient, names: Iterable[str], *, workers: int = 16, wait: bool = True
) -> None:
    """Delete the named nodes (missing ones are fine) and by default wait until they are gone."""
    core = client.CoreV1Api(api)
    todo = list(names)

    def delete(name: str) -> None:
        try:
            core.delete_node(name, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    _parallel(delete, todo, workers)
    if not wait:
        return
    deadline = time.monotonic() + 60
    left = set(todo)
    while left and time.monotonic() < deadline:
        left &= {item["metadata"]["name"] for item in node_objects(api)}
        if left:
            time.sleep(0.1)
    if left:
        raise TimeoutError(f"nodes still present 60s after deletion: {', '.join(sorted(left)[:5])}")
