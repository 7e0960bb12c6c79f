"""Kubeconfig files for the dev cluster: one per identity (admin, a ServiceAccount, ...).

The CA is embedded, so a kubeconfig stays usable when copied elsewhere (a container, CI
artefacts) as long as the API server runs.
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml
from kubernetes import client, config

CLUSTER_NAME = "gpufair-dev"


def kubeconfig_text(server: str, ca_pem: bytes, token: str, user: str, namespace: str | None = None) -> str:
    """A kubeconfig that authenticates to `server` with a bearer `token`."""
    context: dict[str, str] = {"cluster": CLUSTER_NAME, "user": user}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": f"{user}@{CLUSTER_NAME}", "context": context}],
        "current-context": f"{user}@{CLUSTER_NAME}",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_kubeconfig(
    path: Path, server: str, ca_pem: bytes, token: str, user: str, namespace: str | None = None
) -> Path:
    """Write a kubeconfig readable only by its owner (it holds a credential)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(kubeconfig_text(server, ca_pem, token, user, namespace))
    path.chmod(0o600)
    return path


def api_client(kubeconfig: Path, pool_size: int = 16) -> client.ApiClient:
    """An ApiClient for `kubeconfig`, with a connection pool sized for concurrent calls."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)
