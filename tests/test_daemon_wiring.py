"""The daemon as it runs for real: its endpoints and shutdown, the ledger behind its
budgets, node telemetry on a real Mosquitto, API server restarts, and the agent's own-node
labelling under RBAC. Each test uses the session's shared cluster (8 nodes x 8 GPUs) and
cleans up after itself."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
import urllib.request
from dataclasses import replace

import aiomqtt
import pynvml
import pytest

from scheduler.agent.labels import patch_own_node
from scheduler.agent.nvml_reader import NvmlReader
from scheduler.agent.nvml_replay import ReplayApi
from scheduler.agent.payloads import state_message
from scheduler.core import Budget, OnExhausted, Team, TeamUsage, Tier, decide
from scheduler.core.config import PolicyConfig
from scheduler.core.tiers import tier_by_priority
from scheduler.daemon.hooks import DaemonHooks, TelemetryThread
from scheduler.daemon.kube import KubeError
from scheduler.daemon.translate import Translation
from tests.builders import NOW, apply, gang, nodes, snapshot
from tests.daemon_support import (
    ROOT,
    InProcessDaemon,
    bound,
    condition,
    daemon_process,
    delete_pods,
    install_crds_and_priorities,
    kill,
    kube_for,
    make_namespace,
    make_pod,
    make_team,
    pods_in,
    wait_for,
)
from tests.fixtures_mqtt import SCHEDULER_IDENTITY, Broker, free_port, make_pki, write_broker_config


@pytest.fixture
def kube(kube_cluster):
    k = kube_for(kube_cluster.kubeconfig)
    install_crds_and_priorities(k)
    return k


@pytest.fixture
def team_ns(kube, kube_namespace):
    """The test's namespace, owned by a GPUTeam named after it (removed afterwards)."""
    yield kube_namespace
    delete_pods(kube, kube_namespace)
    try:
        kube.request("DELETE", f"/apis/gpufair.io/v1alpha1/gputeams/{kube_namespace}")
    except KubeError as exc:
        if exc.status != 404:
            raise


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:  # not listening yet
        return 0, ""


def test_the_ledger_charges_a_run_in_the_tier_of_its_bind(tmp_path):
    # A team over budget (onExhausted: scavenge) binds its training gang as scavenger work:
    # the ledger must book it there, not in the training tier its priority alone gives.
    policy = PolicyConfig()
    spent = Team("spent", 1, budget=Budget(100.0, "month", OnExhausted.SCAVENGE), namespaces=("spent",))
    g = gang("spent/train", "spent", gpus=8)
    snap = snapshot(nodes(1), (spent,), [g], usage={"spent": TeamUsage(period_gpu_hours=150.0)})
    decisions = decide(snap, policy)
    [bind] = decisions.binds
    assert bind.tier is Tier.SCAVENGER and tier_by_priority(g.priority, policy) is Tier.TRAINING
    running = apply(snap, decisions)  # bound at NOW

    def accrue_after(hooks: DaemonHooks, hours: float) -> dict[str, float]:
        later = replace(running, now_s=NOW + hours * 3600)
        hooks.accrue(Translation(later, {}, {}), later.now_s)
        assert hooks.ledger is not None
        return hooks.ledger.period_usage(later.now_s, "spent", spent.budget)

    ledger = str(tmp_path / "ledger.sqlite")
    hooks = DaemonHooks(policy, ledger)
    try:
        hooks.cycle_done(Translation(snap, {}, {}), decisions, 0.01)  # the cycle that bound it
        assert accrue_after(hooks, 1) == {"scavenger": 8.0}
    finally:
        hooks.close()
    # A daemon that takes over the running gang saw no bind: it keeps the tier the ledger
    # booked the run in.
    hooks = DaemonHooks(policy, ledger)
    try:
        assert accrue_after(hooks, 2) == {"scavenger": 16.0}
    finally:
        hooks.close()


def test_endpoints_metrics_and_clean_shutdown_on_sigterm(kube_cluster, kube, team_ns, tmp_path):
    make_namespace(kube, "gpufair-system")
    make_team(kube, team_ns, [team_ns])
    make_pod(kube, team_ns, "m0", gpus=2)
    log = tmp_path / "daemon.log"
    proc = daemon_process(kube_cluster.kubeconfig, "metrics-replica", log, "--lease-seconds", "4")
    base = f"http://127.0.0.1:{proc.port}"
    try:
        wait_for("ready", lambda: _get(f"{base}/readyz")[0] == 200, timeout_s=30)
        assert _get(f"{base}/healthz")[0] == 200
        wait_for("bound", lambda: bound(kube, team_ns).get("m0"))
        text = wait_for(
            "team metrics",
            lambda: (t := _get(f"{base}/metrics")[1]) and f'team="{team_ns}"' in t and t,
        )
        assert "gpufair_leader 1.0" in text
        assert f'gpufair_team_allocated_gpus{{team="{team_ns}",tier="training"}} 2.0' in text
        assert 'gpufair_binds_total{result="ok"} 1.0' in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        kill(proc)
    lease = kube.request(
        "GET", "/apis/coordination.k8s.io/v1/namespaces/gpufair-system/leases/gpufair-scheduler"
    )
    assert lease["spec"]["holderIdentity"] == ""  # released on the way out
    assert "shutting down" in log.read_text()


def test_budgets_come_from_the_ledger_and_survive_a_restart(kube_cluster, kube, team_ns, tmp_path):
    # 0.004 GPU-hours is 14.4 GPU-seconds: an 8-GPU pod uses it up in two seconds.
    make_team(kube, team_ns, [team_ns], budget={"gpuHours": 0.004, "period": "week", "onExhausted": "block"})
    ledger = tmp_path / "ledger.sqlite"
    make_pod(kube, team_ns, "burner", gpus=8)

    def hooks() -> DaemonHooks:
        return DaemonHooks(PolicyConfig(), str(ledger), accrue_every_s=0.5)

    with InProcessDaemon(kube_cluster.kubeconfig, hooks=hooks()):
        wait_for("burner bound", lambda: bound(kube, team_ns).get("burner"))
        time.sleep(3)
        make_pod(kube, team_ns, "late", gpus=1)
        msg = wait_for("late pod blocked", lambda: condition(pods_in(kube, team_ns)["late"]).get("message"))
        assert "budget" in msg
        status = wait_for(
            "status with usage",
            lambda: (
                (
                    s := kube.request("GET", f"/apis/gpufair.io/v1alpha1/gputeams/{team_ns}").get(
                        "status", {}
                    )
                ).get("budgetExhausted")
                and s
            ),
        )
    used_before = status["budgetUsedGPUHours"]
    assert used_before >= 0.004
    with sqlite3.connect(ledger) as db:
        charged = db.execute("select sum(gpu_seconds) from ledger_period_usage").fetchone()[0]
    assert charged >= 14.4
    # A new daemon on the same ledger: still exhausted, nothing charged twice.
    with InProcessDaemon(kube_cluster.kubeconfig, hooks=hooks()) as d:
        wait_for("a cycle", lambda: d.stats.cycles >= 2)
        usage = d.hooks.usage(time.time(), d.snapshot(time.time()).snapshot.teams)[team_ns]
        assert usage.period_gpu_hours >= used_before
        assert usage.period_gpu_hours < used_before + 0.01  # only the seconds since, not a double count
        assert "late" not in bound(kube, team_ns)


def _unhealthy_state(node: str) -> bytes:
    api = ReplayApi(ROOT / "tests" / "data" / "nvml" / "h100_sxm_8x.json")
    api.override(
        "nvmlEventSetWait",
        (0,),
        {"value": {"gpu": 3, "type": pynvml.nvmlEventTypeXidCriticalError, "data": 79}},
        {"error": "NVML_ERROR_TIMEOUT"},
    )
    reader = NvmlReader(api)
    reader.open()
    inv = reader.inventory()
    return state_message(node, 1, time.time(), inv, reader.health(inv))


async def _publish(broker: Broker, node: str, payload: bytes) -> None:
    import ssl

    ctx = ssl.create_default_context(cafile=str(broker.ca))
    cert, key = broker.cert(node)
    ctx.load_cert_chain(str(cert), str(key))
    async with aiomqtt.Client("127.0.0.1", broker.port, tls_context=ctx, identifier=f"agent-{node}") as c:
        await c.publish(f"gpufair/nodes/{node}/state", payload, qos=1, retain=True)


def test_gpus_reported_unhealthy_leave_the_schedulable_capacity(kube_cluster, kube, team_ns, tmp_path):
    node = kube_cluster.node_names[0]
    directory = tmp_path / "mqtt"
    certs = make_pki(directory, (node, SCHEDULER_IDENTITY))
    port, password_port = free_port(), free_port()
    write_broker_config(directory, port, password_port)
    broker = Broker(directory, port, password_port, directory / "ca.crt", certs, "/usr/sbin/mosquitto")
    broker.start()
    try:
        asyncio.run(_publish(broker, node, _unhealthy_state(node)))
        cert, key = broker.cert(SCHEDULER_IDENTITY)
        telemetry = TelemetryThread(f"127.0.0.1:{port}", str(broker.ca), str(cert), str(key), stale_s=60)
        wait_for("telemetry received", lambda: telemetry.state.unhealthy_gpus(node) == frozenset({3}))
        make_team(kube, team_ns, [team_ns])
        for i in range(8):
            make_pod(kube, team_ns, f"w{i}", gpus=8)
        hooks = DaemonHooks(PolicyConfig(), telemetry=telemetry)
        with InProcessDaemon(kube_cluster.kubeconfig, hooks=hooks):
            placed = wait_for("7 of 8 bound", lambda: len(bound(kube, team_ns)) == 7 and bound(kube, team_ns))
            time.sleep(2)
            assert len(bound(kube, team_ns)) == 7
        assert node not in placed.values()
    finally:
        broker.stop()


def test_the_daemon_carries_on_after_an_api_server_restart(kube_cluster, kube, team_ns):
    make_team(kube, team_ns, [team_ns])
    make_pod(kube, team_ns, "before", gpus=1)
    with InProcessDaemon(kube_cluster.kubeconfig) as d:
        wait_for("bound before", lambda: bound(kube, team_ns).get("before"))
        relists = d.cache.relists
        kube_cluster.restart_apiserver(downtime_s=2)
        wait_for("relisted after the restart", lambda: d.cache.relists > relists, timeout_s=60)
        make_pod(kube, team_ns, "after", gpus=1)
        wait_for("bound after", lambda: bound(kube, team_ns).get("after"), timeout_s=60)


def test_the_agent_may_label_only_its_own_node(kube_cluster, kube, kube_namespace):
    mine, other = kube_cluster.node_names[1], kube_cluster.node_names[2]
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    role = f"agent-{kube_namespace}"
    kube.request(
        "POST",
        f"{rbac}/clusterroles",
        body={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["nodes"],
                    "resourceNames": [mine],
                    "verbs": ["get", "patch"],
                }
            ],
        },
    )
    kube.request(
        "POST",
        f"{rbac}/clusterrolebindings",
        body={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": kube_namespace}],
        },
    )
    original = kube.request("GET", f"/api/v1/nodes/{mine}")["metadata"]["labels"]
    try:
        config = kube_cluster.serviceaccount_kubeconfig(kube_namespace, "agent")
        api = kube_cluster.new_api_client(config)
        labels = {"gpufair.io/nvlink-domain-size": "8", "gpufair.io/gpu-model": "NVIDIA-H100-80GB-HBM3"}
        wait_for("RBAC in force", lambda: _try_patch(mine, labels, api) is None, timeout_s=10)
        got = kube.request("GET", f"/api/v1/nodes/{mine}")["metadata"]["labels"]
        assert got["gpufair.io/nvlink-domain-size"] == "8"
        err = _try_patch(other, labels, api)
        assert err is not None and err.status == 403
        api.close()
    finally:
        kube.request("DELETE", f"{rbac}/clusterrolebindings/{role}")
        kube.request("DELETE", f"{rbac}/clusterroles/{role}")
        kube.request(
            "PATCH",
            f"/api/v1/nodes/{mine}",
            body={"metadata": {"labels": {k: original.get(k) for k in labels}}},  # as it was before
            content_type="application/merge-patch+json",
        )


def _try_patch(node: str, labels: dict, api):
    from kubernetes.client.rest import ApiException

    try:
        patch_own_node(node, labels, api)
    except ApiException as exc:
        return exc
    return None


def test_gpufair_status_and_explain_commands(kube_cluster, kube, team_ns):
    import subprocess
    import sys

    make_team(kube, team_ns, [team_ns], weight=2, budget={"gpuHours": 1000, "period": "month"})
    make_pod(kube, team_ns, "s0", gpus=4)
    make_pod(kube, team_ns, "huge", gpus=16)
    with InProcessDaemon(kube_cluster.kubeconfig):
        wait_for("bound", lambda: bound(kube, team_ns).get("s0"))
        wait_for(
            "status written",
            lambda: (
                kube.request("GET", f"/apis/gpufair.io/v1alpha1/gputeams/{team_ns}")
                .get("status", {})
                .get("allocatedGPUs")
                == 4
            ),
        )
        wait_for("reason on huge", lambda: condition(pods_in(kube, team_ns)["huge"]).get("message"))

    def gpufair(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", *args, "--kubeconfig", str(kube_cluster.kubeconfig)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        return out.stdout

    row = next(line for line in gpufair("status").splitlines() if line.startswith(team_ns))
    assert row.split()[1:4] == ["2", row.split()[2], "4.0"]  # weight, share, allocated
    assert "/1000 h" in row
    explained = gpufair("explain", f"{team_ns}/huge")
    assert "waits" in explained and "16 GPUs" in explained and "8" in explained
