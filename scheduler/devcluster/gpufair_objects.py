"""gpufair's own cluster objects on a dev cluster: its CRDs (deploy/crds) and the three tier
PriorityClasses, so `kubectl apply -f deploy/examples/teams.yaml` works right after
`gpufair dev-cluster up`.

The PriorityClasses are rendered from the Helm chart's own template
(deploy/helm/gpufair/templates/priorityclasses.yaml with the chart's default values) by the
pinned helm binary, so the dev cluster and a chart install cannot drift apart.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from scheduler.devcluster.binaries import binary
from scheduler.devcluster.kubectl import apply_docs, apply_files, wait_established

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "deploy" / "crds"
CHART = ROOT / "deploy" / "helm" / "gpufair"
PRIORITY_TEMPLATE = "templates/priorityclasses.yaml"


class GpufairObjectsError(RuntimeError):
    """gpufair's CRDs or PriorityClasses could not be rendered or applied; says why."""


def _run(argv: list[str], stdin: str | None = None, timeout_s: float = 120.0) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise GpufairObjectsError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} failed: {done.stderr.strip()}")
    return done.stdout


def priority_classes() -> list[dict[str, Any]]:
    """The chart's PriorityClasses, rendered with its default values (names and values as
    a `helm install` would create them; the chart's labels dropped, no release owns them)."""
    if not (CHART / PRIORITY_TEMPLATE).is_file():
        raise GpufairObjectsError(f"{CHART / PRIORITY_TEMPLATE} is missing; run from a gpufair checkout")
    text = _run([str(binary("helm")), "template", "gpufair", str(CHART), "--show-only", PRIORITY_TEMPLATE])
    out = []
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "PriorityClass":
            doc["metadata"] = {"name": doc["metadata"]["name"]}
            out.append(doc)
    if not out:
        raise GpufairObjectsError(f"helm rendered no PriorityClass from {CHART / PRIORITY_TEMPLATE}")
    return out


def priority_values() -> dict[str, int]:
    """PriorityClass name -> value, as the chart ships them."""
    return {pc["metadata"]["name"]: int(pc["value"]) for pc in priority_classes()}


def crd_names() -> list[str]:
    return [yaml.safe_load(p.read_text())["metadata"]["name"] for p in sorted(CRDS.glob("*.yaml"))]


def install_gpufair_objects(kubeconfig: Path, timeout_s: float = 60.0) -> list[str]:
    """Server-side apply deploy/crds and the chart's PriorityClasses, wait until the CRDs are
    Established; returns the names of what was applied."""
    apply_files(kubeconfig, CRDS, GpufairObjectsError)
    crds = crd_names()
    wait_established(kubeconfig, crds, timeout_s, GpufairObjectsError)
    pcs = priority_classes()
    apply_docs(kubeconfig, pcs, GpufairObjectsError)
    return [*crds, *(pc["metadata"]["name"] for pc in pcs)]


__all__ = ["GpufairObjectsError", "install_gpufair_objects", "priority_classes", "priority_values"]
