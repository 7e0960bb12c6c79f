"""The pinned kubectl, run against a dev cluster's kubeconfig: server-side apply (CRDs too
large for client-side apply's annotation, such as KubeRay's, need it) and waiting for CRDs
to be Established. A failure raises the caller's error type with kubectl's own words."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scheduler.devcluster.binaries import binary

FIELD_MANAGER = "gpufair-dev-cluster"


def kubectl(
    kubeconfig: Path,
    *args: str,
    error: type[Exception] = RuntimeError,
    stdin: str | None = None,
    timeout_s: float = 120.0,
) -> str:
    done = subprocess.run(
        [str(binary("kubectl")), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise error(f"kubectl {' '.join(args[:3])} failed: {done.stderr.strip()}")
    return done.stdout


_SSA = ("apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}")


def apply_files(kubeconfig: Path, path: Path, error: type[Exception] = RuntimeError) -> None:
    """Server-side apply a YAML file or every YAML file of a directory."""
    kubectl(kubeconfig, *_SSA, "-f", str(path), error=error)


def apply_docs(
    kubeconfig: Path, docs: Sequence[Mapping[str, Any]], error: type[Exception] = RuntimeError
) -> None:
    """Server-side apply objects given as dicts, in one List."""
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)})
    kubectl(kubeconfig, *_SSA, "-f", "-", error=error, stdin=body)


def wait_established(
    kubeconfig: Path, crds: Iterable[str], timeout_s: float, error: type[Exception] = RuntimeError
) -> None:
    names = [f"crd/{c}" for c in crds]
    if names:
        kubectl(
            kubeconfig,
            "wait",
            "--for=condition=Established",
            f"--timeout={int(timeout_s)}s",
            *names,
            error=error,
            timeout_s=timeout_s + 10,
        )


__all__ = ["FIELD_MANAGER", "apply_docs", "apply_files", "kubectl", "wait_established"]
