"""`gpufair run`, `status` and `explain` find credentials as kubectl does: the flag, then
$KUBECONFIG, then the in-cluster ServiceAccount, then ~/.kube/config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.daemon.kube import IN_CLUSTER, NoCredentials, find_credentials
from tests.daemon_support import (
    ROOT,
    free_port,
    install_crds_and_priorities,
    kube_for,
    make_pod,
    make_team,
    wait_for,
)
from tests.fixtures_kube import KubeCluster


def test_the_order_is_flag_then_env_then_in_cluster_then_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    pod_env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443", "HOME": str(home)}
    assert find_credentials("/x/flag", {**pod_env, "KUBECONFIG": "/x/env"}) == "/x/flag"
    assert find_credentials(None, {**pod_env, "KUBECONFIG": "/x/env"}) == "/x/env"
    assert find_credentials(None, {**pod_env, "KUBECONFIG": "/x/a:/x/b"}) == "/x/a:/x/b"
    assert find_credentials(None, pod_env) == IN_CLUSTER
    with pytest.raises(NoCredentials, match="--kubeconfig"):
        find_credentials(None, {"HOME": str(home)})
    (home / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    assert find_credentials(None, {"HOME": str(home)}) == str(home / ".kube" / "config")


def _cli(env: dict[str, str], *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _bare_env(home: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    return {**keep, "HOME": str(home), "PYTHONUNBUFFERED": "1"}


def test_status_and_explain_read_kubeconfig_env_and_home(kube_cluster: KubeCluster, tmp_path: Path) -> None:
    install_crds_and_priorities(kube_for(kube_cluster.kubeconfig))
    home = tmp_path / "home"
    home.mkdir()
    env = _bare_env(home)
    bare = _cli(env, "status")
    assert bare.returncode == 2 and "no Kubernetes credentials" in bare.stderr, bare.stderr
    assert "Service host/port" not in bare.stderr
    with_env = _cli({**env, "KUBECONFIG": str(kube_cluster.kubeconfig)}, "status", "-o", "json")
    assert with_env.returncode == 0, with_env.stderr
    assert with_env.stdout.strip().startswith("[")
    (home / ".kube").mkdir()
    shutil.copy(kube_cluster.kubeconfig, home / ".kube" / "config")
    explained = _cli(env, "explain", "default/no-such-pod")
    # It reached the API server (and learnt the pod is not there), so it found ~/.kube/config.
    assert explained.returncode == 0, explained.stderr
    assert "does not exist" in explained.stdout


def test_run_binds_a_pod_with_only_kubeconfig_in_the_environment(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**_bare_env(home), "KUBECONFIG": str(kube_cluster.kubeconfig)}
    log = tmp_path / "run.log"
    argv = [sys.executable, "-m", "scheduler.cli", "run", "--no-leader-elect", "--log-format", "text"]
    argv += ["--listen", f"127.0.0.1:{free_port()}", "--interval", "1"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        kube = kube_for(kube_cluster.kubeconfig)
        install_crds_and_priorities(kube)
        make_team(kube, kube_namespace, [kube_namespace])
        make_pod(kube, kube_namespace, "p", gpus=1)

        def bound() -> bool:
            assert proc.poll() is None, log.read_text()
            pod = kube.request("GET", f"/api/v1/namespaces/{kube_namespace}/pods/p")
            return bool(pod["spec"].get("nodeName"))

        wait_for("the pod bound by `gpufair run` with $KUBECONFIG", bound, timeout_s=60)
    finally:
        kube_for(kube_cluster.kubeconfig).request(
            "DELETE", f"/apis/gpufair.io/v1alpha1/gputeams/{kube_namespace}"
        )
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Service host/port" not in log.read_text()
