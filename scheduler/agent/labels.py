"""Node labels from an NVML reading, and the patch of the agent's own Node object.

`nvidia.com/gpu.clique` is written the way GPU feature discovery writes it
(`<clusterUUID>.<cliqueId>`, only when the GPUs are attached to a multi-node NVLink fabric), so
gpufair and GFD agree when both run. `gpufair.io/nvlink-domain-size` counts the GPUs of this node
that share one NVLink domain (8 on HGX boards, 4 on a GB200 tray, 1 on PCIe boxes); a multi-node
domain is the set of nodes with the same clique label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from scheduler.agent.nvml_reader import Inventory
from scheduler.core.errors import InvalidInput

CLIQUE = "nvidia.com/gpu.clique"
GPU_MODEL = "gpufair.io/gpu-model"
DOMAIN_SIZE = "gpufair.io/nvlink-domain-size"
#: labels the agent owns and may remove; the clique label is shared with GFD and is never removed.
OWNED = (GPU_MODEL, DOMAIN_SIZE)
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def label_value(text: str) -> str:
    """A Kubernetes label value: 'NVIDIA H100 80GB HBM3' -> 'NVIDIA-H100-80GB-HBM3' (GFD's style)."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip())
    value = value[:63].strip("-_.")
    if not value or not _VALUE.match(value):
        raise InvalidInput("GPU", "name", f"{text!r} gives no valid label value", "report a GPU name")
    return value


def node_labels(inventory: Inventory) -> dict[str, str]:
    """The labels this node should carry; empty on a node without GPUs."""
    if not inventory.gpus:
        return {}
    labels = {DOMAIN_SIZE: str(inventory.domain_size)}
    if inventory.model:
        labels[GPU_MODEL] = label_value(inventory.model)
    if inventory.clique:
        labels[CLIQUE] = inventory.clique
    return labels


def label_patch(labels: Mapping[str, str]) -> dict:
    """A merge patch that sets `labels` and removes owned labels that no longer apply."""
    body: dict[str, str | None] = {key: None for key in OWNED if key not in labels}
    body.update(labels)
    return {"metadata": {"labels": body}}


def patch_own_node(node_name: str, labels: Mapping[str, str], api_client: object | None = None) -> None:
    """Patch the Node the agent runs on (only that one: its RBAC should allow `patch` on its own
    node, e.g. through the NodeRestriction-style name check in its ClusterRole binding).

    Loads the in-cluster config, or the local kubeconfig outside a cluster, unless a client is given.
    """
    if not node_name:
        raise InvalidInput("agent", "--node / NODE_NAME", "no node name", "set NODE_NAME from spec.nodeName")
    from kubernetes import client, config

    if api_client is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api_client = client.ApiClient()
    client.CoreV1Api(api_client).patch_node(node_name, label_patch(labels))
