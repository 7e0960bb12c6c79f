"""A real Kubernetes control plane on loopback for tests, demos and benchmarks.

etcd, kube-apiserver (RBAC, token auth, ServiceAccount signing), kube-controller-manager
and KWOK (fake GPU nodes), built by `make control-plane`; see `DevCluster`.

Names are imported on first use, so `gpufair` subcommands that never start a cluster do
not pay for importing the Kubernetes client.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VERSIONS": "binaries",
    "MissingBinary": "binaries",
    "cache_dir": "binaries",
    "find_binaries": "binaries",
    "ADMIN_USER": "cluster",
    "NOBODY_USER": "cluster",
    "DevCluster": "cluster",
    "DevClusterError": "cluster",
    "GPU_MODEL_LABEL": "nodes",
    "GPU_RESOURCE": "nodes",
    "KWOK_ANNOTATION": "nodes",
    "create_nodes": "nodes",
    "gpu_nodes": "nodes",
    "delete_nodes": "nodes",
    "node_manifest": "nodes",
    "wait_nodes_ready": "nodes",
    "ProcessFailed": "processes",
    "FAKE_NODE_STATUS_ANNOTATION": "stages",
    "FAKE_RUNTIME_ANNOTATION": "stages",
    "serviceaccount_token": "tokens",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
