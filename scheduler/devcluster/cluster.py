"""A real, throw-away Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager and KWOK (optionally kube-scheduler), for tests, demos and benchmarks.

Everything lives in one state directory (certificates, etcd data, logs, kubeconfigs,
`state.json` with ports and pids), so `gpufair dev-cluster down` can find and stop a
cluster that `up` started and left running. Authentication is by static bearer tokens
(an admin in `system:masters`, a `nobody` with no rights, and any extra ones asked for)
and by ServiceAccount tokens, which the API server signs with a key made at start;
authorisation is Node,RBAC as in a production cluster.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import secrets
import shutil
import ssl
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client

from scheduler.core.model import Node
from scheduler.devcluster import nodes as fake_nodes
from scheduler.devcluster.binaries import Binaries, MissingBinary, find_binaries
from scheduler.devcluster.certs import Pki, make_pki
from scheduler.devcluster.kubeconfig import api_client, write_kubeconfig
from scheduler.devcluster.processes import Proc, ProcessFailed, free_ports, spawn, stop, wait_until
from scheduler.devcluster.stages import STAGES_YAML

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.64.0.0/12"
FAKE_NODE_IP = "10.250.0.1"
ADMIN_USER = "gpufair-admin"
NOBODY_USER = "gpufair-nobody"

# Controllers that matter with fake nodes; node lifecycle and IPAM are left out since KWOK
# plays the kubelets and there is no pod network.
CONTROLLERS = (
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "disruption-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "pod-garbage-collector-controller",
    "replicaset-controller",
    "deployment-controller",
    "statefulset-controller",
    "job-controller",
    "ttl-after-finished-controller",
    "validatingadmissionpolicy-status-controller",
    # Counts quota use: a namespace's ResourceQuota (e.g. one scoped to gpufair-production)
    # admits nothing until this controller has filled in its status.
    "resourcequota-controller",
    # Volumes: the PV binder finishes the bindings a scheduler starts (a WaitForFirstConsumer
    # claim's PV), the protection controllers keep an in-use claim or volume from going, and
    # the ephemeral controller makes a pod's generic ephemeral volume claims.
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "ephemeral-volume-controller",
)

START_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kwok", "kube-scheduler")


class DevClusterError(RuntimeError):
    """The dev cluster cannot be started, found or used; the message names the fix."""


def _https_get(url: str, ca: Path, token: str | None, timeout: float = 2.0) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status == 200


class DevCluster:
    """One control plane. Use as a context manager, or `start()` and `stop()`.

    `state_dir=None` makes a temporary directory; either way the directory is removed by
    `stop()` unless `keep_state=True` (or `GPUFAIR_KEEP_DEV_CLUSTER=1`, to read the logs).
    `detached=True` lets the processes outlive this Python process (`dev-cluster up`);
    otherwise they are terminated when it exits, even if it is killed (Linux ties this to
    the thread that started them: start and restart from the main thread).
    `tokens` maps extra static-token user names to their groups (tokens are made here and
    listed in `static_tokens`); the token file is read at API server start only.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        with_kube_scheduler: bool = False,
        detached: bool = False,
        tokens: Mapping[str, Sequence[str]] | None = None,
        keep_state: bool | None = None,
    ) -> None:
        self._own_dir = state_dir is None
        self.state_dir = (
            Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="gpufair-kube-"))
        )
        self.with_kube_scheduler = with_kube_scheduler
        self.detached = detached
        self.keep_state = (
            keep_state if keep_state is not None else os.environ.get("GPUFAIR_KEEP_DEV_CLUSTER") == "1"
        )
        self.extra_token_groups = {user: list(groups) for user, groups in (tokens or {}).items()}
        self.ports: dict[str, int] = {}
        self.procs: dict[str, Proc] = {}
        self.static_tokens: dict[str, str] = {}
        self.server = ""
        self._bins: Binaries | None = None
        self._pki: Pki | None = None

    # ------------------------------------------------------------------ paths

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (bearer token of `gpufair-admin`, group system:masters)."""
        return self.state_dir / "admin.kubeconfig"

    @property
    def ca_cert(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def admin_token(self) -> str:
        return self.static_tokens[ADMIN_USER]

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 90.0) -> DevCluster:
        """Start every component and wait until each is ready; on failure stop what started."""
        if self.state_file.exists():
            raise DevClusterError(
                f"{self.state_dir} already holds a dev cluster (state.json); "
                "stop it first (gpufair dev-cluster down) or use another state directory"
            )
        try:
            self._bins = find_binaries()
        except MissingBinary:
            if self._own_dir:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            raise
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        try:
            self._prepare()
            self._start_etcd(timeout_s)
            self._start_apiserver(timeout_s)
            write_kubeconfig(
                self.kubeconfig, self.server, self.ca_cert.read_bytes(), self.admin_token, ADMIN_USER
            )
            self._start_controller_manager()
            self._start_kwok(timeout_s)
            if self.with_kube_scheduler:
                self._start_kube_scheduler()
            self._wait_controllers(timeout_s)
            self.save_state()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process (SIGTERM, SIGKILL after a grace period), newest first, and
        remove the state directory unless it is kept."""
        # Extra processes (workload controllers) first, then the control plane newest first.
        extras = [name for name in self.procs if name not in START_ORDER]
        for name in [*reversed(extras), *reversed(START_ORDER)]:
            proc = self.procs.get(name)
            if proc is not None:
                stop(proc)
        self.procs.clear()
        if not self.keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                self.state_file.unlink()

    def __enter__(self) -> DevCluster:
        return self.start() if not self.procs else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def running(self) -> dict[str, bool]:
        """Which components are alive right now."""
        return {name: proc.running() for name, proc in self.procs.items()}

    # ------------------------------------------------------------------ state file

    def save_state(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "ports": self.ports,
            "with_kube_scheduler": self.with_kube_scheduler,
            "static_tokens": self.static_tokens,
            "procs": [p.to_state() for p in self.procs.values()],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.state_file)
        for proc in self.procs.values():
            (self.state_dir / f"{proc.name}.pid").write_text(f"{proc.pid}\n")

    @classmethod
    def attach(cls, state_dir: Path | str) -> DevCluster:
        """The cluster recorded in `state_dir` (started by another process, e.g. `dev-cluster up`)."""
        state_dir = Path(state_dir)
        path = state_dir / "state.json"
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise DevClusterError(
                f"no dev cluster recorded in {state_dir} ({path.name} is missing); "
                "start one with `gpufair dev-cluster up`"
            ) from exc
        cluster = cls(state_dir, with_kube_scheduler=bool(state.get("with_kube_scheduler")), detached=True)
        cluster.server = state["server"]
        cluster.ports = {k: int(v) for k, v in state["ports"].items()}
        cluster.static_tokens = dict(state["static_tokens"])
        cluster.procs = {p["name"]: Proc.from_state(p) for p in state["procs"]}
        return cluster

    # ------------------------------------------------------------------ components

    def _prepare(self) -> None:
        self._pki = make_pki(self.state_dir / "pki")
        names = ("etcd-client", "etcd-peer", "apiserver", "kwok")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        groups = {ADMIN_USER: ["system:masters"], NOBODY_USER: ["gpufair:nobody"], **self.extra_token_groups}
        self.static_tokens = {user: secrets.token_urlsafe(32) for user in groups}
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for user, token in self.static_tokens.items():
            writer.writerow([token, user, f"uid-{user}", ",".join(groups[user])])
        tokens = self.state_dir / "tokens.csv"
        tokens.write_text(out.getvalue())
        tokens.chmod(0o600)
        (self.state_dir / "kwok-stages.yaml").write_text(STAGES_YAML)

    def _start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Proc:
        proc = spawn(
            name, argv, self.state_dir / "logs" / f"{name}.log", dict(env or {}), detached=self.detached
        )
        self.procs[name] = proc
        return proc

    def start_process(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Proc:
        """Start another process that belongs to this cluster (e.g. a workload controller):
        logged to logs/<name>.log, stopped by `stop()` before the control plane."""
        if name in START_ORDER or (name in self.procs and self.procs[name].running()):
            raise DevClusterError(f"a process named {name!r} already runs in this dev cluster")
        return self._start(name, argv, env)

    def _start_etcd(self, timeout_s: float) -> None:
        assert self._bins is not None
        client_url = f"http://127.0.0.1:{self.ports['etcd-client']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        proc = self._start(
            "etcd",
            [
                str(self._bins.etcd),
                "--name=dev",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=dev={peer_url}",
                "--unsafe-no-fsync",  # throw-away data: no fsync keeps tests fast on shared disks
                "--log-level=warn",
            ],
        )
        wait_until(proc, lambda: _http_ok(f"{client_url}/health"), timeout_s, "etcd /health")

    def _apiserver_argv(self) -> list[str]:
        assert self._bins is not None
        pki = self.state_dir / "pki"
        return [
            str(self._bins.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd-client']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--cert-dir={pki}",
            f"--token-auth-file={self.state_dir / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The `kubernetes` Service cannot point at a loopback address; nothing needs it here.
            "--endpoint-reconciler-type=none",
            # New nodes would get a not-ready taint that only the node lifecycle controller
            # lifts; that controller is left out (KWOK plays the kubelets), so is the taint.
            "--disable-admission-plugins=TaintNodesByCondition",
            "--allow-privileged=true",
            "--profiling=false",
            "--max-mutating-requests-inflight=400",
            "--max-requests-inflight=800",
            # Close open watches on SIGTERM: without it shutdown waits 60s for watch connections.
            "--shutdown-watch-termination-grace-period=2s",
        ]

    def _start_apiserver(self, timeout_s: float) -> None:
        proc = self._start("kube-apiserver", self._apiserver_argv())
        wait_until(proc, self.apiserver_ready, timeout_s, "kube-apiserver /readyz")

    def apiserver_ready(self) -> bool:
        """Whether the API server answers /readyz with 200 to the admin token."""
        try:
            status, _ = _https_get(f"{self.server}/readyz", self.ca_cert, self.admin_token)
        except OSError:
            return False
        return status == 200

    def _start_controller_manager(self) -> None:
        assert self._bins is not None
        pki = self.state_dir / "pki"
        self._start(
            "kube-controller-manager",
            [
                str(self._bins.kube_controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                "--secure-port=0",
                "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                # PDB status and garbage collection react within a second, not a minute.
                "--concurrent-gc-syncs=10",
            ],
        )

    def _start_kwok(self, timeout_s: float) -> None:
        assert self._bins is not None
        proc = self._start(
            "kwok",
            [
                str(self._bins.kwok),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self.state_dir / 'kwok-stages.yaml'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector="
                f"{fake_nodes.KWOK_ANNOTATION}={fake_nodes.KWOK_ANNOTATION_VALUE}",
                f"--server-address=127.0.0.1:{self.ports['kwok']}",
                f"--cidr={POD_CIDR}",
                f"--node-ip={FAKE_NODE_IP}",
                # Leases exist as on real nodes; renewed every 30s, so 1,000 nodes stay cheap.
                "--node-lease-duration-seconds=120",
                "-v=WARN",
            ],
        )
        wait_until(
            proc,
            lambda: _http_ok(f"http://127.0.0.1:{self.ports['kwok']}/healthz"),
            timeout_s,
            "kwok /healthz",
        )

    def _start_kube_scheduler(self) -> None:
        assert self._bins is not None
        self._start(
            "kube-scheduler",
            [
                str(self._bins.kube_scheduler),
                f"--kubeconfig={self.kubeconfig}",
                "--secure-port=0",
                "--leader-elect=false",
            ],
        )

    def _wait_controllers(self, timeout_s: float) -> None:
        """The controller manager is working once the default namespace has its ServiceAccount
        and the root CA ConfigMap (pods need both to be admitted and to mount a token)."""
        proc = self.procs["kube-controller-manager"]
        with self.api_client() as api:
            core = client.CoreV1Api(api)

            def ready() -> bool:
                core.read_namespaced_service_account("default", "default", _preload_content=False)
                core.read_namespaced_config_map("kube-root-ca.crt", "default", _preload_content=False)
                return True

            wait_until(proc, ready, timeout_s, "default ServiceAccount and kube-root-ca.crt created")
        if "kube-scheduler" in self.procs:
            sched = self.procs["kube-scheduler"]
            time.sleep(0.5)
            if not sched.running():
                raise sched.fail("exited at start")

    # ------------------------------------------------------------------ API server restart

    def stop_apiserver(self) -> None:
        """Stop only the API server (etcd and the rest keep running)."""
        proc = self.procs.get("kube-apiserver")
        if proc is not None:
            stop(proc)

    def start_apiserver(self, timeout_s: float = 90.0) -> None:
        """Start the API server again with its previous flags, port and credentials."""
        if self._bins is None:
            self._bins = find_binaries()
        proc = self.procs.get("kube-apiserver")
        if proc is not None and proc.running():
            raise DevClusterError("kube-apiserver is already running; stop_apiserver() first")
        self._start_apiserver(timeout_s)
        self.save_state()

    def restart_apiserver(self, downtime_s: float = 0.0, timeout_s: float = 90.0) -> None:
        """Stop the API server, stay down `downtime_s`, start it again and wait until ready,
        so tests can check that watches and leader election survive an outage."""
        self.stop_apiserver()
        if downtime_s > 0:
            time.sleep(downtime_s)
        self.start_apiserver(timeout_s)

    # ------------------------------------------------------------------ clients and nodes

    def api_client(self, pool_size: int = 16) -> client.ApiClient:
        """A new admin ApiClient (close it, or use it as a context manager)."""
        return api_client(self.kubeconfig, pool_size)

    def token_kubeconfig(
        self, token: str, user: str, path: Path | None = None, namespace: str | None = None
    ) -> Path:
        """Write a kubeconfig for any bearer token (a static one or a ServiceAccount's)."""
        path = path or self.state_dir / "kubeconfigs" / f"{user.replace(':', '_')}.kubeconfig"
        return write_kubeconfig(path, self.server, self.ca_cert.read_bytes(), token, user, namespace)

    def static_kubeconfig(self, user: str) -> Path:
        """A kubeconfig for one of the static-token users (`gpufair-admin`, `gpufair-nobody`, extras)."""
        if user not in self.static_tokens:
            raise DevClusterError(
                f"no static token for user {user!r} (have: {', '.join(self.static_tokens)}); "
                "pass it in DevCluster(tokens={user: [groups]}) before start"
            )
        return self.token_kubeconfig(self.static_tokens[user], user)

    def create_nodes(
        self, nodes: Iterable[Node], *, wait_ready: bool = True, timeout_s: float = 120.0
    ) -> list[str]:
        """Create fake GPU nodes (see `scheduler.devcluster.nodes`); returns their names."""
        with self.api_client(pool_size=32) as api:
            return fake_nodes.create_nodes(api, nodes, workers=32, wait_ready=wait_ready, timeout_s=timeout_s)

    def delete_nodes(self, names: Iterable[str], *, wait: bool = True) -> None:
        with self.api_client(pool_size=32) as api:
            fake_nodes.delete_nodes(api, names, workers=32, wait=wait)

    def fake_node_names(self) -> list[str]:
        """Names of every node KWOK plays, sorted."""
        with self.api_client() as api:
            items = fake_nodes.node_objects(api, f"{fake_nodes.FAKE_NODE_LABEL}={fake_nodes.FAKE_NODE_VALUE}")
            return sorted(item["metadata"]["name"] for item in items)

    def serviceaccount_kubeconfig(
        self,
        namespace: str,
        name: str,
        *,
        create: bool = True,
        expiration_s: int = 3600,
        path: Path | None = None,
    ) -> Path:
        """A kubeconfig that acts as ServiceAccount `namespace/name`, with a token from the
        TokenRequest API (the account is created first when `create` and it is missing)."""
        from scheduler.devcluster.tokens import serviceaccount_token

        with self.api_client() as api:
            token = serviceaccount_token(api, namespace, name, create=create, expiration_s=expiration_s)
        user = f"system:serviceaccount:{namespace}:{name}"
        return self.token_kubeconfig(token, user, path, namespace=namespace)

    def describe(self) -> dict[str, Any]:
        """Ports, pids and paths, for humans and for `dev-cluster up`'s output."""
        return {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "state_dir": str(self.state_dir),
            "ports": self.ports,
            "pids": {name: proc.pid for name, proc in self.procs.items()},
        }


__all__ = ["ADMIN_USER", "NOBODY_USER", "DevCluster", "DevClusterError", "ProcessFailed"]
