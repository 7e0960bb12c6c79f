"""The real workload controllers on a dev cluster: JobSet, LeaderWorkerSet, KubeRay's
operator, Kubeflow's training operator (v1: PyTorchJob and its siblings) and Kubeflow Trainer
(v2: TrainJob over JobSet), built by `make control-plane`
(scripts/build-workload-controllers.sh) at the versions below, run as processes against the
cluster's admin kubeconfig.

Each controller runs out of cluster with leader election off and its health and metrics
endpoints on free loopback ports. Its CRDs come from the same Go module as its binary (copied
beside it in the cache at build time) and are applied server-side. JobSet, LWS, the training
operator and Trainer serve their webhooks with a certificate from the dev cluster's CA, and
the module's webhook configurations are applied with `clientConfig.url` on 127.0.0.1 and that
CA. JobSet's, LWS's and Trainer's own certificate rotation is switched off by config. The
training operator has no such switch: its rotator runs, fills a Secret of its own in its own
namespace and only checks that a certificate file exists in a fixed directory; the webhook
server reads the controller's TMPDIR, which holds ours, and the rotator finds no webhook
configuration of its name to rewrite (ours are renamed), so it leaves our CA alone.
KubeRay's webhooks are optional upstream (off unless ENABLE_WEBHOOKS=true) and stay off.

The versions here must match the script's (a test checks that they do).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from scheduler.devcluster.binaries import MissingBinary, cache_dir
from scheduler.devcluster.certs import make_serving_cert
from scheduler.devcluster.kubectl import apply_docs, apply_files, wait_established
from scheduler.devcluster.processes import free_ports, wait_until

if TYPE_CHECKING:
    from scheduler.devcluster.cluster import DevCluster

JOBSET_VERSION = "v0.10.1"
LWS_VERSION = "v0.7.0"
KUBERAY_VERSION = "v1.5.0"
TRAINING_OPERATOR_VERSION = "v1.9.2"
TRAINER_VERSION = "v2.1.0"

WORKLOAD_VERSIONS: dict[str, str] = {
    "jobset": JOBSET_VERSION,
    "lws": LWS_VERSION,
    "kuberay-operator": KUBERAY_VERSION,
    "training-operator": TRAINING_OPERATOR_VERSION,
    "trainer": TRAINER_VERSION,
}
DEFAULT_CONTROLLERS: tuple[str, ...] = tuple(WORKLOAD_VERSIONS)


class WorkloadControllerError(RuntimeError):
    """A workload controller cannot be set up; the message names the controller and the fix."""


@dataclass(frozen=True, slots=True)
class Ports:
    health: int
    metrics: int
    webhook: int


@dataclass(frozen=True, slots=True)
class RunningController:
    """One started controller: where it listens and which CRDs it brought."""

    name: str
    version: str
    pid: int
    ports: Ports
    crds: tuple[str, ...]
    webhook_configurations: tuple[str, ...]

    @property
    def readyz(self) -> str:
        return f"http://127.0.0.1:{self.ports.health}/readyz"


def manifests_dir(name: str) -> Path:
    """`<cache>/bin/<name>-<version>.manifests`: the CRDs and webhook YAMLs of that module."""
    path = cache_dir() / "bin" / f"{name}-{WORKLOAD_VERSIONS[name]}.manifests"
    if not (path / "crds").is_dir():
        raise MissingBinary(
            f"the CRDs of workload controller {name} {WORKLOAD_VERSIONS[name]} are missing: {path / 'crds'} "
            "does not exist; run `make control-plane` (scripts/build-workload-controllers.sh) to build them"
        )
    return path


def controller_binary(name: str) -> Path:
    """The cached controller binary at its pinned version, or MissingBinary naming the fix."""
    if name not in WORKLOAD_VERSIONS:
        raise KeyError(f"{name!r} is not a workload controller (known: {', '.join(WORKLOAD_VERSIONS)})")
    path = cache_dir() / "bin" / f"{name}-{WORKLOAD_VERSIONS[name]}"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingBinary(
            f"workload controller {name} {WORKLOAD_VERSIONS[name]} is missing: {path} does not exist; "
            "run `make control-plane` (scripts/build-workload-controllers.sh) to build it"
        )
    return path


# ---------------------------------------------------------------- per-controller command lines


def _kubebuilder_config(group: str, ports: Ports, cert_dir: Path) -> dict[str, Any]:
    """JobSet's and LWS's Configuration file (the same kubebuilder layout, its own API group):
    no leader election, no internal cert rotation, everything on loopback with our cert."""
    return {
        "apiVersion": f"{group}/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"port": ports.webhook, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "metrics": {"bindAddress": f"127.0.0.1:{ports.metrics}", "certDir": str(cert_dir)},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports.health}"},
    }


def _jobset_argv(exe: Path, ports: Ports, cert_dir: Path, work: Path) -> list[str]:
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(_kubebuilder_config("config.jobset.x-k8s.io", ports, cert_dir)))
    return [str(exe), f"--config={config}", "--zap-log-level=info"]


def _lws_argv(exe: Path, ports: Ports, cert_dir: Path, work: Path) -> list[str]:
    config = work / "config.yaml"
    settings = _kubebuilder_config("config.lws.x-k8s.io", ports, cert_dir)
    del settings["metrics"]["certDir"]  # LWS's Configuration has no such field (it self-signs)
    config.write_text(yaml.safe_dump(settings))
    # --leader-elect defaults to true in LWS's flags and is applied on top of the file.
    return [str(exe), f"--config={config}", "--leader-elect=false", "--zap-log-level=info"]


def _kuberay_argv(exe: Path, ports: Ports, cert_dir: Path, work: Path) -> list[str]:
    return [
        str(exe),
        f"--metrics-addr=127.0.0.1:{ports.metrics}",
        f"--health-probe-bind-address=127.0.0.1:{ports.health}",
        "--enable-leader-election=false",
        "--log-stdout-encoder=console",
    ]


# The training operator's rotator always checks this fixed path (not TMPDIR) for a file.
_TRAINING_OPERATOR_CERT_CHECK = Path("/tmp/k8s-webhook-server/serving-certs/tls.crt")
TRAINING_OPERATOR_NAMESPACE = "gpufair-dev-training-operator"
TRAINER_NAMESPACE = "kubeflow-system"  # fixed upstream when not run in a pod


def _training_operator_argv(exe: Path, ports: Ports, cert_dir: Path, work: Path) -> list[str]:
    return [
        str(exe),
        f"--metrics-bind-address=127.0.0.1:{ports.metrics}",
        f"--health-probe-bind-address=127.0.0.1:{ports.health}",
        f"--webhook-server-port={ports.webhook}",
        "--leader-elect=false",
        "--zap-log-level=info",
    ]


def _trainer_argv(exe: Path, ports: Ports, cert_dir: Path, work: Path) -> list[str]:
    config = work / "config.yaml"
    settings = {
        "apiVersion": "config.trainer.kubeflow.org/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "certManagement": {"enable": False},
        "webhook": {"port": ports.webhook, "host": "127.0.0.1"},
        "metrics": {"bindAddress": f"127.0.0.1:{ports.metrics}", "secureServing": False},
        "health": {
            "healthProbeBindAddress": f"127.0.0.1:{ports.health}",
            "readinessEndpointName": "readyz",
            "livenessEndpointName": "healthz",
        },
    }
    config.write_text(yaml.safe_dump(settings))
    return [str(exe), f"--config={config}", "--zap-log-level=info"]


def _prepare_training_operator(kubeconfig: Path, cert: Path) -> dict[str, str]:
    """The rotator reads and writes a Secret that must exist in its namespace, and waits for
    a file in a fixed directory that a kubelet would mount; its content is never read."""
    _ensure_namespace(kubeconfig, TRAINING_OPERATOR_NAMESPACE)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "training-operator-webhook-cert", "namespace": TRAINING_OPERATOR_NAMESPACE},
    }
    _apply(kubeconfig, [secret])
    if not _TRAINING_OPERATOR_CERT_CHECK.exists():
        _TRAINING_OPERATOR_CERT_CHECK.parent.mkdir(parents=True, exist_ok=True)
        _TRAINING_OPERATOR_CERT_CHECK.write_bytes(cert.read_bytes())
    return {"MY_POD_NAMESPACE": TRAINING_OPERATOR_NAMESPACE}


def _prepare_trainer(kubeconfig: Path, cert: Path) -> dict[str, str]:
    _ensure_namespace(kubeconfig, TRAINER_NAMESPACE)
    return {}


def _no_preparation(kubeconfig: Path, cert: Path) -> dict[str, str]:
    return {}


def trainer_runtimes(
    scheduler_name: str = "gpufair", priority: str = "gpufair-training"
) -> list[dict[str, Any]]:
    """Trainer's upstream `torch-distributed` ClusterTrainingRuntime with the pods given to
    gpufair: a TrainJob cannot set its pods' schedulerName or PriorityClass, its runtime
    does, and the runtime is the platform team's."""
    docs = _yaml_docs(sorted((manifests_dir("trainer") / "extras").glob("*.yaml")))
    for doc in docs:
        for rjob in doc["spec"]["template"]["spec"]["replicatedJobs"]:
            pod = rjob["template"]["spec"]["template"].setdefault("spec", {})
            pod["schedulerName"] = scheduler_name
            pod["priorityClassName"] = priority
    return docs


def _install_trainer_runtimes(kubeconfig: Path) -> None:
    _apply(kubeconfig, trainer_runtimes())


def _nothing_after(kubeconfig: Path) -> None:
    return None


@dataclass(frozen=True, slots=True)
class _Spec:
    argv: Callable[[Path, Ports, Path, Path], list[str]]
    serves_webhooks: bool
    # Before the start: objects the controller expects; returns extra environment.
    prepare: Callable[[Path, Path], dict[str, str]] = _no_preparation
    # Once its webhooks answer: objects that go through them.
    after_start: Callable[[Path], None] = _nothing_after


_SPECS: dict[str, _Spec] = {
    "jobset": _Spec(_jobset_argv, serves_webhooks=True),
    "lws": _Spec(_lws_argv, serves_webhooks=True),
    "kuberay-operator": _Spec(_kuberay_argv, serves_webhooks=False),
    "training-operator": _Spec(
        _training_operator_argv, serves_webhooks=True, prepare=_prepare_training_operator
    ),
    "trainer": _Spec(
        _trainer_argv, serves_webhooks=True, prepare=_prepare_trainer, after_start=_install_trainer_runtimes
    ),
}


# ---------------------------------------------------------------- manifests


def _yaml_docs(paths: Iterable[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict))
    return docs


def crd_names(name: str) -> tuple[str, ...]:
    """The names of the CRDs a controller's module ships."""
    docs = _yaml_docs(sorted((manifests_dir(name) / "crds").glob("*.yaml")))
    return tuple(d["metadata"]["name"] for d in docs if d.get("kind") == "CustomResourceDefinition")


def webhook_configurations(name: str, port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """The module's Mutating/ValidatingWebhookConfigurations, renamed per controller, with
    each webhook's service reference replaced by `https://127.0.0.1:<port><path>` and the dev
    CA, and the pod webhooks' objectSelector taken from the module's kustomize patches (without
    it every pod in the cluster would go through JobSet's and LWS's webhooks)."""
    hooks = manifests_dir(name) / "webhooks"
    base = _yaml_docs([hooks / "manifests.yaml"])
    # The patches are kustomize JSON patches (`op: replace, value: <webhook>`), one file per
    # configuration kind; only the selectors are taken from them.
    selectors: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, file in (("Mutating", "mutating-patch.yaml"), ("Validating", "validating-patch.yaml")):
        if not (hooks / file).is_file():
            continue
        for op in yaml.safe_load((hooks / file).read_text()) or ():
            hook = op.get("value") if isinstance(op, dict) else None
            if isinstance(hook, dict) and "name" in hook:
                extra = {k: hook[k] for k in ("objectSelector", "namespaceSelector") if k in hook}
                selectors[(f"{kind}WebhookConfiguration", hook["name"])] = extra
    ca = base64.b64encode(ca_pem).decode()
    out = []
    for doc in base:
        doc = json.loads(json.dumps(doc))
        doc["metadata"] = {"name": f"gpufair-dev-{name}-{doc['metadata']['name']}"}
        for hook in doc.get("webhooks") or ():
            path = hook["clientConfig"]["service"].get("path", "/")
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca}
            hook.update(selectors.get((doc["kind"], hook["name"]), {}))
        out.append(doc)
    return out


def _apply(kubeconfig: Path, docs: Sequence[Mapping[str, Any]]) -> None:
    apply_docs(kubeconfig, docs, WorkloadControllerError)


def _ensure_namespace(kubeconfig: Path, name: str) -> None:
    _apply(kubeconfig, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])


def apply_crds(kubeconfig: Path, names: Sequence[str], timeout_s: float = 60.0) -> tuple[str, ...]:
    """Server-side apply every CRD of `names` and wait until each is Established."""
    crds: list[str] = []
    for name in names:
        apply_files(kubeconfig, manifests_dir(name) / "crds", WorkloadControllerError)
        crds.extend(crd_names(name))
    wait_established(kubeconfig, crds, timeout_s, WorkloadControllerError)
    return tuple(crds)


# ---------------------------------------------------------------- start


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2.0) as resp:
        return resp.status == 200


def _tls_listening(port: int, ca: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1"),
    ):
        return True


def start_workload_controllers(
    cluster: DevCluster,
    names: Sequence[str] = DEFAULT_CONTROLLERS,
    *,
    timeout_s: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> dict[str, RunningController]:
    """Apply the CRDs of `names`, start each controller against `cluster` and wait until it
    is ready (its /readyz, and its webhook server answering TLS with our cert) before its
    webhook configurations are applied. The processes are the cluster's: `cluster.stop()` (or
    `gpufair dev-cluster down`) stops them; logs are in the cluster's logs/ directory."""
    unknown = [n for n in names if n not in _SPECS]
    if unknown:
        raise WorkloadControllerError(
            f"unknown workload controller(s) {', '.join(unknown)}; known: {', '.join(_SPECS)}"
        )
    exes = {name: controller_binary(name) for name in names}  # fail before anything starts
    kubeconfig = cluster.kubeconfig
    apply_crds(kubeconfig, names, timeout_s=timeout_s)
    ca_pem = cluster.ca_cert.read_bytes()
    started: dict[str, RunningController] = {}
    for name in names:
        spec = _SPECS[name]
        work = cluster.state_dir / "workloads" / name
        work.mkdir(parents=True, exist_ok=True)
        # controller-runtime's default certificate directory, under the TMPDIR given below.
        tmp = work / "tmp"
        cert_dir = tmp / "k8s-webhook-server" / "serving-certs"
        cert, _ = make_serving_cert(cluster.ca_cert.parent, cert_dir, f"gpufair-dev-{name}")
        extra_env = spec.prepare(kubeconfig, cert)
        ports = Ports(*free_ports(3))
        proc = cluster.start_process(
            name,
            spec.argv(exes[name], ports, cert_dir, work),
            env={"KUBECONFIG": str(kubeconfig), "TMPDIR": str(tmp), **extra_env, **(env or {})},
        )
        wait_until(proc, partial(_http_ok, f"http://127.0.0.1:{ports.health}/readyz"), timeout_s, "/readyz")
        applied: tuple[str, ...] = ()
        if spec.serves_webhooks:
            listening = partial(_tls_listening, ports.webhook, cluster.ca_cert)
            wait_until(proc, listening, timeout_s, "webhook TLS")
            docs = webhook_configurations(name, ports.webhook, ca_pem)
            _apply(kubeconfig, docs)
            applied = tuple(d["metadata"]["name"] for d in docs)
        spec.after_start(kubeconfig)
        started[name] = RunningController(
            name, WORKLOAD_VERSIONS[name], proc.pid, ports, crd_names(name), applied
        )
    cluster.save_state()
    return started


__all__ = [
    "DEFAULT_CONTROLLERS",
    "WORKLOAD_VERSIONS",
    "RunningController",
    "WorkloadControllerError",
    "apply_crds",
    "controller_binary",
    "crd_names",
    "manifests_dir",
    "start_workload_controllers",
    "trainer_runtimes",
    "webhook_configurations",
]
