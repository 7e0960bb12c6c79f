"""Helpers for the daemon's integration tests: objects on a real API server, and the
daemon itself, in this process (a thread) or as `gpufair run` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from scheduler.daemon.config import DaemonConfig
from scheduler.daemon.daemon import Daemon
from scheduler.daemon.kube import Kube, KubeError, api_client_from
from scheduler.devcluster.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "deploy" / "crds"
PRIORITY_CLASSES = {"gpufair-production": 100000, "gpufair-training": 0, "gpufair-scavenger": -100}


def kube_for(kubeconfig: str | Path) -> Kube:
    return Kube(api_client_from(str(kubeconfig)), qps=0)


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")


def apply(kube: Kube, path: str, body: dict) -> dict:
    try:
        return kube.request("POST", path, body=body)
    except KubeError as exc:
        if exc.status != 409:
            raise
        name = body["metadata"]["name"]
        current = kube.request("GET", f"{path}/{name}")
        body = {
            **body,
            "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
        }
        return kube.request("PUT", f"{path}/{name}", body=body)


def install_crds_and_priorities(kube: Kube) -> None:
    for f in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(f.read_text())
        apply(kube, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        name = crd["metadata"]["name"]

        def established(name: str = name) -> bool:
            obj = kube.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            return any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (obj.get("status") or {}).get("conditions") or []
            )

        wait_for(f"CRD {name} established", established)
    for name, value in PRIORITY_CLASSES.items():
        apply(
            kube,
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
                "description": f"gpufair tier {name.split('-')[1]}",
            },
        )


def make_team(kube: Kube, name: str, namespaces: list[str], weight: float = 1, **spec: Any) -> dict:
    body = {
        "apiVersion": "gpufair.io/v1alpha1",
        "kind": "GPUTeam",
        "metadata": {"name": name},
        "spec": {"weight": weight, "namespaces": namespaces, **spec},
    }
    return apply(kube, "/apis/gpufair.io/v1alpha1/gputeams", body)


def make_namespace(kube: Kube, name: str) -> None:
    """A namespace, once its default ServiceAccount exists (pods are refused before that)."""
    apply(kube, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def has_account() -> bool:
        try:
            kube.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_for(f"ServiceAccount {name}/default", has_account)


def make_pod(
    kube: Kube,
    ns: str,
    name: str,
    gpus: int = 1,
    priority_class: str | None = "gpufair-training",
    scheduler: str = "gpufair",
    labels: dict | None = None,
    annotations: dict | None = None,
) -> dict:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}, "annotations": annotations or {}},
        "spec": {
            "schedulerName": scheduler,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/trainer:1",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"cpu": "1"}},
                }
            ],
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 0,
        },
    }
    if priority_class:
        body["spec"]["priorityClassName"] = priority_class
    return kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=body)


def pods_in(kube: Kube, ns: str) -> dict[str, dict]:
    items = kube.request("GET", f"/api/v1/namespaces/{ns}/pods").get("items") or []
    return {p["metadata"]["name"]: p for p in items}


def bound(kube: Kube, ns: str) -> dict[str, str]:
    return {n: p["spec"]["nodeName"] for n, p in pods_in(kube, ns).items() if p["spec"].get("nodeName")}


def delete_pods(kube: Kube, ns: str, wait: bool = True) -> None:
    kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods", query={"gracePeriodSeconds": 0})
    if wait:
        wait_for(f"pods in {ns} gone", lambda: not pods_in(kube, ns), timeout_s=60)


def delete_teams(kube: Kube) -> None:
    kube.request("DELETE", "/apis/gpufair.io/v1alpha1/gputeams")


def events_for(kube: Kube, ns: str, name: str) -> list[dict]:
    return (
        kube.request(
            "GET",
            f"/api/v1/namespaces/{ns}/events",
            {"fieldSelector": f"involvedObject.name={name}"},
        ).get("items")
        or []
    )


def condition(pod: dict, kind: str = "PodScheduled") -> dict:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


class InProcessDaemon:
    """The real daemon loop, in a thread of the test process."""

    def __init__(self, kubeconfig: str | Path, hooks: Any = None, **changes: Any) -> None:
        cfg = DaemonConfig(
            kubeconfig=str(kubeconfig),
            leader_elect=False,
            interval_s=1.0,
            debounce_s=0.05,
            listen="127.0.0.1:0",
            # Every cycle of every in-process test also holds the incremental state to a
            # fresh build of the whole cache (live.py).
            check_incremental=True,
        )
        self.cfg = replace(cfg, **changes)
        self.daemon = Daemon(self.cfg, kube_for(kubeconfig), kube_for(kubeconfig), hooks)
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)

    def __enter__(self) -> Daemon:
        self.thread.start()
        wait_for("daemon cache synced", lambda: self.daemon.ready)
        return self.daemon

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop()
        self.thread.join(timeout=10)
        if exc[0] is None:
            assert self.daemon.check_failures == 0, "the incremental state differed from a fresh build"


def daemon_process(kubeconfig: str | Path, identity: str, log: Path, *extra: str) -> subprocess.Popen:
    """`gpufair run` as a separate process, as it runs in a cluster."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "scheduler.cli",
        "run",
        "--kubeconfig",
        str(kubeconfig),
        "--identity",
        identity,
        "--listen",
        f"127.0.0.1:{port}",
        "--interval",
        "1",
        "--log-format",
        "text",
        *extra,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    proc.port = port  # type: ignore[attr-defined]
    return proc


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
