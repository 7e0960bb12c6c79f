"""Where the control-plane binaries, kubectl and helm live: built by `make control-plane`,
cached by version.

The versions here must match `scripts/build-control-plane.sh` (a test checks that they do),
so a version bump in the script is noticed before a stale binary is started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.3"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"

VERSIONS: dict[str, str] = {
    "etcd": ETCD_VERSION,
    "kwok": KWOK_VERSION,
    "kube-apiserver": K8S_VERSION,
    "kube-controller-manager": K8S_VERSION,
    "kube-scheduler": K8S_VERSION,
    "kubectl": K8S_VERSION,
    "helm": HELM_VERSION,
}


class MissingBinary(RuntimeError):
    """A control-plane binary is not in the cache; the message says how to build it."""


def cache_dir() -> Path:
    """`$GPUFAIR_CACHE` or `~/.cache/gpufair`, outside the work tree so `git clean` keeps it."""
    env = os.environ.get("GPUFAIR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gpufair"


@dataclass(frozen=True, slots=True)
class Binaries:
    """Absolute paths of the pinned control-plane binaries."""

    etcd: Path
    kwok: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    helm: Path


def binary(name: str) -> Path:
    """The cached binary `name` at its pinned version, or MissingBinary naming the fix."""
    if name not in VERSIONS:
        raise KeyError(f"{name!r} is not a control-plane binary (known: {', '.join(VERSIONS)})")
    path = cache_dir() / "bin" / f"{name}-{VERSIONS[name]}"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingBinary(
            f"control-plane binary {name} {VERSIONS[name]} is missing: {path} does not exist; "
            "run `make control-plane` (scripts/build-control-plane.sh) to build it"
        )
    return path


def find_binaries() -> Binaries:
    """Every control-plane binary, failing on the first missing one (all are built together)."""
    missing = []
    for name in VERSIONS:
        try:
            binary(name)
        except MissingBinary:
            missing.append(name)
    if missing:
        raise MissingBinary(
            f"control-plane binaries missing from {cache_dir() / 'bin'}: {', '.join(missing)}; "
            "run `make control-plane` (scripts/build-control-plane.sh) to build them"
        )
    return Binaries(*(binary(name) for name in VERSIONS))
