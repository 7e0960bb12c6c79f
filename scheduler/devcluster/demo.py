"""`gpufair dev-cluster demo` (`make demo`): a local GPU cluster playground.

A real control plane with 16 fake nodes of 8 GPUs (2 InfiniBand leaves, one NVLink domain per
node), the CRDs and PriorityClasses, three teams with weights and budgets, the scheduler daemon
as a `gpufair run` process (ledger and metrics included), and a mixed workload that keeps
coming: a production inference Deployment that scales up and down, training gangs of two teams
(one with `gpufair.io/gang` labels, one with coscheduling PodGroups, as Kubeflow makes them) and
a scavenger sweep. KWOK finishes pods after their `gpufair.io/fake-runtime`. A table of the
teams refreshes every second; the end (after `--seconds`, or Ctrl-C) prints a summary.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import yaml

from scheduler.daemon.kube import Kube, KubeError, api_client_from
from scheduler.devcluster.gpufair_objects import install_gpufair_objects
from scheduler.devcluster.nodes import gpu_nodes
from scheduler.devcluster.stages import FAKE_RUNTIME_ANNOTATION

ROOT = Path(__file__).resolve().parents[2]
NODES, GPUS_PER_NODE, NODES_PER_LEAF = 16, 8, 8
# The real controllers the demo's JobSet and LeaderWorkerSet need (scheduler.devcluster.workloads).
DEMO_CONTROLLERS = ("jobset", "lws")
LEASE_NAMESPACE = "gpufair-system"
GPU = "nvidia.com/gpu"
TEAMS: tuple[dict[str, Any], ...] = (
    {"name": "serving", "weight": 1, "namespaces": ["serving"], "production": {"allowed": True}},
    {
        "name": "vision",
        "weight": 3,
        "namespaces": ["vision", "vision-sweep"],
        "budget": {"gpuHours": 500, "period": "week"},
    },
    # A small budget: in a few minutes nlp's training runs as scavenger.
    {
        "name": "nlp",
        "weight": 2,
        "namespaces": ["nlp"],
        "budget": {"gpuHours": 1, "period": "week", "onExhausted": "scavenge"},
    },
)
# The daemon's settings for the demo: cycles every second and a short minimum runtime, so
# reclaims and preemptions happen within a minute.
DAEMON_CONFIG = {
    "apiVersion": "gpufair.io/v1alpha1",
    "kind": "SchedulerConfig",
    "scheduler": {"interval": "1s", "lease": "6s", "renewDeadline": "4s", "retry": "1s"},
    "policy": {"preemption": {"defaultMinRuntime": "5s"}},
}
WAVE_EVERY_S = 45.0


class DemoError(RuntimeError):
    """The demo cannot go on; the message names the fix."""


# ---------------------------------------------------------------- manifests


def _pod_spec(gpus: int, priority: str) -> dict[str, Any]:
    return {
        "schedulerName": "gpufair",
        "priorityClassName": priority,
        "containers": [
            {
                "name": "main",
                "image": "registry.example/gpu-workload:1",
                "resources": {"limits": {GPU: str(gpus)}, "requests": {"cpu": "4", "memory": "16Gi"}},
            }
        ],
        "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 0,
    }


def job(
    ns: str,
    name: str,
    *,
    pods: int,
    gpus: int,
    priority: str,
    runtime: str,
    completions: int | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A batch/v1 Job scheduled by gpufair; its pods succeed `runtime` after they start (KWOK).
    The Job controller replaces evicted pods, as a training operator would."""
    spec = _pod_spec(gpus, priority)
    spec["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "parallelism": pods,
            "completions": completions or pods,
            "backoffLimit": 100,
            "ttlSecondsAfterFinished": 30,
            "template": {
                "metadata": {
                    "labels": labels or {},
                    "annotations": {FAKE_RUNTIME_ANNOTATION: runtime, **(annotations or {})},
                },
                "spec": spec,
            },
        },
    }


def label_gang_job(ns: str, name: str, pods: int, gpus: int, runtime: str) -> list[dict[str, Any]]:
    """A training gang in gpufair's CRD-free form: label `gpufair.io/gang`, annotation gang-size."""
    return [
        job(
            ns,
            name,
            pods=pods,
            gpus=gpus,
            priority="gpufair-training",
            runtime=runtime,
            labels={"gpufair.io/gang": name},
            annotations={"gpufair.io/gang-size": str(pods)},
        )
    ]


def podgroup_gang_job(ns: str, name: str, pods: int, gpus: int, runtime: str) -> list[dict[str, Any]]:
    """A training gang in the coscheduling form Kubeflow's operators use: a PodGroup with
    `minMember` and the `scheduling.x-k8s.io/pod-group` label on every pod."""
    group = {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"minMember": pods},
    }
    labels = {"scheduling.x-k8s.io/pod-group": name}
    return [
        group,
        job(ns, name, pods=pods, gpus=gpus, priority="gpufair-training", runtime=runtime, labels=labels),
    ]


def inference_deployment(ns: str, name: str, replicas: int, gpus: int) -> dict[str, Any]:
    """Production inference: runs until scaled down, preempts scavenger then training pods."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": _pod_spec(gpus, "gpufair-production"),
            },
        },
    }


def jobset(ns: str, name: str, *, jobs: int, pods: int, gpus: int, runtime: str) -> dict[str, Any]:
    """A JobSet training run (sigs.k8s.io/jobset) as its docs write one: `jobs` replicated
    Jobs of `pods` pods each; the real JobSet controller makes the Jobs."""
    spec = _pod_spec(gpus, "gpufair-training")
    template = {"metadata": {"annotations": {FAKE_RUNTIME_ANNOTATION: runtime}}, "spec": spec}
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicatedJobs": [
                {
                    "name": "workers",
                    "replicas": jobs,
                    "template": {"spec": {"parallelism": pods, "completions": pods, "template": template}},
                }
            ],
        },
    }


def leaderworkerset(ns: str, name: str, *, groups: int, size: int, gpus: int) -> dict[str, Any]:
    """Multi-node production inference as a LeaderWorkerSet (sigs.k8s.io/lws): `groups` groups
    of a leader and `size - 1` workers; the real LWS controller makes their StatefulSets."""
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": groups,
            "leaderWorkerTemplate": {
                "size": size,
                "workerTemplate": {"spec": _pod_spec(gpus, "gpufair-production")},
            },
        },
    }


# Pod labels the controllers set, by workload kind: how the summary finds each kind's pods.
KIND_LABELS = {
    "JobSet": "jobset.sigs.k8s.io/jobset-name",
    "LeaderWorkerSet": "leaderworkerset.sigs.k8s.io/name",
}

PATHS = {
    "JobSet": "/apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets",
    "LeaderWorkerSet": "/apis/leaderworkerset.x-k8s.io/v1/namespaces/{ns}/leaderworkersets",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
    "PodGroup": "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/{ns}/podgroups",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
}


@dataclass
class Step:
    """One thing the workload does at `at_s` seconds after the daemon is ready."""

    at_s: float
    what: str
    objects: list[dict[str, Any]] = field(default_factory=list)
    scale: tuple[str, str, int] | None = None  # (namespace, deployment, replicas)


def wave(n: int, at_s: float) -> list[Step]:
    """Training wave `n`: three vision gangs (4 pods x 8 GPUs) and two nlp gangs (2 x 8)."""
    vision = [o for i in range(3) for o in label_gang_job("vision", f"train-w{n}-{i}", 4, 8, "40s")]
    nlp = [o for i in range(2) for o in podgroup_gang_job("nlp", f"bert-w{n}-{i}", 2, 8, "30s")]
    return [
        Step(at_s, f"wave {n}: 3 vision gangs of 4x8 GPUs (gpufair.io/gang)", vision),
        Step(at_s, f"wave {n}: 2 nlp gangs of 2x8 GPUs (PodGroup)", nlp),
    ]


def timeline(seconds: float) -> list[Step]:
    """The workload: a scavenger sweep first, then training waves; production inference arrives
    into a full cluster and scales between 3 and 5 replicas."""
    steps = [
        Step(
            0,
            "scavenger sweep: 16 pods x 2 GPUs (vision-sweep)",
            [
                job(
                    "vision-sweep",
                    "sweep",
                    pods=16,
                    gpus=2,
                    priority="gpufair-scavenger",
                    runtime="25s",
                    completions=400,
                )
            ],
        ),
        Step(
            1,
            "vision: JobSet training run, 2 Jobs x 2 pods x 8 GPUs",
            [jobset("vision", "jobset-train", jobs=2, pods=2, gpus=8, runtime="30s")],
        ),
        Step(
            8,
            "production: LeaderWorkerSet inference group, leader + 1 worker x 8 GPUs",
            [leaderworkerset("serving", "lws-infer", groups=1, size=2, gpus=8)],
        ),
        Step(
            12,
            "production: llm-inference, 3 replicas x 8 GPUs",
            [inference_deployment("serving", "llm-inference", 3, 8)],
        ),
    ]
    horizon = seconds if seconds > 0 else 24 * 3600
    n, at = 0, 4.0
    while at < horizon:
        steps += wave(n, at)
        n, at = n + 1, at + WAVE_EVERY_S
    replicas, at = 5, 25.0
    while at < horizon:
        steps.append(
            Step(
                at,
                f"production: scale llm-inference to {replicas}",
                scale=("serving", "llm-inference", replicas),
            )
        )
        replicas, at = (3 if replicas == 5 else 5), at + 30.0
    return sorted(steps, key=lambda s: s.at_s)


# ---------------------------------------------------------------- setup


def _create(kube: Kube, path: str, body: dict[str, Any]) -> None:
    try:
        kube.request("POST", path, body=body)
    except KubeError as exc:
        if exc.status != 409:
            raise


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise DemoError(f"timed out after {timeout_s:g}s waiting for {what}")


def install_basics(kube: Kube, kubeconfig: Path) -> None:
    """CRDs (deploy/crds) and the chart's PriorityClasses, as `dev-cluster up` installs them;
    then namespaces and teams."""
    install_gpufair_objects(kubeconfig)
    namespaces = [LEASE_NAMESPACE] + [ns for t in TEAMS for ns in t["namespaces"]]
    for ns in namespaces:
        _create(
            kube, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        )
    for ns in namespaces:
        _wait(
            f"ServiceAccount {ns}/default",
            partial(_exists, kube, f"/api/v1/namespaces/{ns}/serviceaccounts/default"),
        )
    for team in TEAMS:
        spec = {k: v for k, v in team.items() if k != "name"}
        body = {
            "apiVersion": "gpufair.io/v1alpha1",
            "kind": "GPUTeam",
            "metadata": {"name": team["name"]},
            "spec": spec,
        }
        _create(kube, "/apis/gpufair.io/v1alpha1/gputeams", body)


def _established(kube: Kube, name: str) -> bool:
    """Whether the API server serves the CustomResourceDefinition `name` yet."""
    crd = kube.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    return any(
        c["type"] == "Established" and c["status"] == "True"
        for c in (crd.get("status") or {}).get("conditions") or []
    )


def _exists(kube: Kube, path: str) -> bool:
    try:
        kube.request("GET", path)
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def apply_step(kube: Kube, step: Step) -> None:
    for obj in step.objects:
        ns = obj["metadata"]["namespace"]
        _create(kube, PATHS[obj["kind"]].format(ns=ns), obj)
    if step.scale:
        ns, name, replicas = step.scale
        kube.request(
            "PATCH",
            f"{PATHS['Deployment'].format(ns=ns)}/{name}/scale",
            body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )


# ---------------------------------------------------------------- the daemon


def free_port(preferred: int) -> int:
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise DemoError("no free local port for the daemon's metrics")


def start_daemon(kubeconfig: Path, work: Path, port: int) -> subprocess.Popen:
    """`gpufair run` as it runs in a cluster, in its own session so Ctrl-C reaches only the demo,
    which then stops it with SIGTERM (a clean hand-back of its lease)."""
    config = work / "scheduler-config.yaml"
    config.write_text(yaml.safe_dump(DAEMON_CONFIG))
    argv = [
        sys.executable, "-m", "scheduler.cli", "run",
        "--config", str(config),
        "--kubeconfig", str(kubeconfig),
        "--ledger", str(work / "ledger.db"),
        "--listen", f"127.0.0.1:{port}",
        "--identity", "gpufair-demo",
        "--log-format", "text",
    ]  # fmt: skip
    log = (work / "daemon.log").open("ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
    )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def stop_daemon(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- watching


def _gpus(pod: dict[str, Any]) -> int:
    total = 0
    for c in pod["spec"].get("containers") or []:
        res = c.get("resources") or {}
        total += int((res.get("limits") or res.get("requests") or {}).get(GPU, 0))
    return total


@dataclass
class Tally:
    """What the demo saw: binds and preemptions (gpufair's events) and GPU-seconds per team."""

    team_of_ns: dict[str, str]
    binds: Counter = field(default_factory=Counter)
    preempted: Counter = field(default_factory=Counter)
    gpu_seconds: defaultdict = field(default_factory=lambda: defaultdict(float))
    seen_events: set = field(default_factory=set)
    recent: list = field(default_factory=list)
    busy_gpus: int = 0
    last_sample: float | None = None

    def sample(self, kube: Kube, now: float) -> None:
        pods = kube.request("GET", "/api/v1/pods").get("items") or []
        held: Counter = Counter()
        for p in pods:
            if p["spec"].get("schedulerName") != "gpufair" or not p["spec"].get("nodeName"):
                continue
            if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            held[self.team_of_ns.get(p["metadata"]["namespace"], "?")] += _gpus(p)
        if self.last_sample is not None:
            dt = now - self.last_sample
            for team, gpus in held.items():
                self.gpu_seconds[team] += gpus * dt
        self.last_sample = now
        self.busy_gpus = sum(held.values())
        for reason, counter in (("Scheduled", self.binds), ("Preempted", self.preempted)):
            events = (
                kube.request("GET", "/api/v1/events", {"fieldSelector": f"reason={reason}"}).get("items")
                or []
            )
            for e in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
                ours = (e.get("source") or {}).get("component") == "gpufair" or e.get(
                    "reportingComponent"
                ) == "gpufair"
                uid = e["metadata"]["uid"]
                if not ours or uid in self.seen_events:
                    continue
                self.seen_events.add(uid)
                counter[self.team_of_ns.get(e["involvedObject"].get("namespace", ""), "?")] += 1
                if reason == "Preempted":
                    obj = e["involvedObject"]
                    self.recent.append(
                        f"{obj.get('namespace')}/{obj.get('name')} preempted: {e.get('message', '')}"
                    )
        del self.recent[:-4]


def team_rows(kube: Kube) -> list[dict[str, Any]]:
    items = kube.request("GET", "/apis/gpufair.io/v1alpha1/gputeams").get("items") or []
    rows = []
    for t in sorted(items, key=lambda t: t["metadata"]["name"]):
        s, spec = t.get("status") or {}, t.get("spec") or {}
        rows.append(
            {
                "team": t["metadata"]["name"],
                "weight": spec.get("weight", 1),
                "fair_share": s.get("fairShareGPUs"),
                "allocated": s.get("allocatedGPUs"),
                "production": s.get("productionGPUs"),
                "scavenger": s.get("scavengerGPUs"),
                "pending": s.get("pendingPods"),
                "budget": (spec.get("budget") or {}).get("gpuHours"),
                "used": s.get("budgetUsedGPUHours"),
                "left": s.get("budgetLeftGPUHours"),
                "exhausted": s.get("budgetExhausted"),
            }
        )
    return rows


def _num(value: Any, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def render_table(
    rows: list[dict[str, Any]], tally: Tally, elapsed: float, seconds: float, metrics: str
) -> str:
    until = f"/{seconds:.0f}s" if seconds > 0 else "s (Ctrl-C stops)"
    lines = [
        f"gpufair demo  t={elapsed:.0f}{until}  GPUs busy {tally.busy_gpus}/{NODES * GPUS_PER_NODE}  "
        f"binds {sum(tally.binds.values())}  preempted {sum(tally.preempted.values())}  metrics {metrics}",
        f"{'TEAM':<10}{'WEIGHT':>7}{'FAIR SHARE':>12}{'ALLOCATED':>11}{'PROD':>6}{'SCAV':>6}{'PENDING':>9}"
        f"{'BUDGET USED/LEFT':>22}  STATE",
    ]
    for r in rows:
        budget = (
            f"{_num(r['used'], '{:.2f}')} / {_num(r['left'], '{:.2f}')} h"
            if r["budget"] is not None
            else "no budget"
        )
        state = "budget exhausted: scavenger" if r["exhausted"] else "ok"
        lines.append(
            f"{r['team']:<10}{r['weight']:>7g}{_num(r['fair_share'], '{:.1f}'):>12}"
            f"{_num(r['allocated'], '{:.1f}'):>11}"
            f"{_num(r['production']):>6}{_num(r['scavenger']):>6}{_num(r['pending']):>9}{budget:>22}  {state}"
        )
    width = shutil.get_terminal_size((120, 20)).columns
    lines += [f"  {line}"[:width] for line in tally.recent]
    return "\n".join(lines)


def summary(tally: Tally, elapsed: float, metrics: str) -> dict[str, Any]:
    teams = sorted({t["name"] for t in TEAMS})
    return {
        "seconds": round(elapsed, 1),
        "nodes": NODES,
        "gpus": NODES * GPUS_PER_NODE,
        "binds": sum(tally.binds.values()),
        "preemptions": sum(tally.preempted.values()),
        "teams": {
            t: {
                "binds": tally.binds.get(t, 0),
                "preempted": tally.preempted.get(t, 0),
                "gpu_hours": round(tally.gpu_seconds.get(t, 0.0) / 3600, 3),
            }
            for t in teams
        },
        "metrics_url": metrics,
    }


def watch_workload_pods(kube: Kube, seen: dict[str, dict[str, set[str]]]) -> None:
    """Add to `seen`, per workload kind (JobSet, LeaderWorkerSet), the pods its controller
    made and those of them bound to a node (pods of finished or failed runs go away, so the
    demo samples as it goes)."""
    for kind, label in KIND_LABELS.items():
        pods = kube.request("GET", "/api/v1/pods", query={"labelSelector": label}).get("items") or []
        mine = seen.setdefault(kind, {"pods": set(), "bound": set()})
        for pod in pods:
            name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            mine["pods"].add(name)
            if (pod.get("spec") or {}).get("nodeName"):
                mine["bound"].add(name)


def workload_counts(seen: dict[str, dict[str, set[str]]]) -> dict[str, dict[str, int]]:
    return {kind: {k: len(v) for k, v in sets.items()} for kind, sets in seen.items()}


def render_summary(s: dict[str, Any]) -> str:
    lines = [
        f"gpufair demo summary: {int(s['seconds'])}s on {s['nodes']} nodes x {GPUS_PER_NODE} GPUs",
        f"{'TEAM':<10}{'BINDS':>7}{'PREEMPTED':>11}{'GPU-HOURS':>11}",
    ]
    for team, t in s["teams"].items():
        lines.append(f"{team:<10}{t['binds']:>7}{t['preempted']:>11}{t['gpu_hours']:>11.3f}")
    lines.append(f"{'total':<10}{s['binds']:>7}{s['preemptions']:>11}")
    for kind, n in (s.get("workloads") or {}).items():
        lines.append(f"{kind}: its controller made {n['pods']} pods, {n['bound']} of them bound")
    lines.append(
        f"binds {s['binds']}, preemptions {s['preemptions']} (pods evicted through the Eviction API); "
        f"metrics were served at {s['metrics_url']} while the demo ran"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def _live_pids(state_dir: Path) -> list[int]:
    """Processes an earlier demo in `state_dir` started that still run."""
    live = []
    for pid_file in sorted(state_dir.glob("*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, PermissionError, OSError):
            continue
        live.append(pid)
    return live


def run_demo(
    seconds: float,
    state_dir: Path,
    *,
    metrics_port: int = 10260,
    keep_state: bool = False,
    summary_json: Path | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Start everything, play the workload for `seconds` (0: until Ctrl-C), stop everything."""
    from scheduler.devcluster.cluster import DevCluster
    from scheduler.devcluster.workloads import start_workload_controllers

    live = out.isatty()
    stop = {"now": False}

    def on_signal(_sig: int, _frame: object) -> None:
        stop["now"] = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    say = lambda text: print(text, file=out, flush=True)  # noqa: E731
    running = _live_pids(state_dir)
    if running:
        say(
            f"gpufair demo: a demo already runs in {state_dir} (pids {', '.join(map(str, running))}); "
            "stop it with Ctrl-C, or pass another --state-dir"
        )
        return 1
    shutil.rmtree(state_dir, ignore_errors=True)  # remains of a demo that was killed
    t0 = time.monotonic()
    cluster = DevCluster(state_dir, keep_state=keep_state)
    daemon: subprocess.Popen | None = None
    tally = Tally({ns: t["name"] for t in TEAMS for ns in t["namespaces"]})
    elapsed = 0.0
    port = free_port(metrics_port)
    metrics = f"http://127.0.0.1:{port}/metrics"
    work = state_dir / "demo"
    try:
        say(f"starting a control plane in {state_dir} ...")
        cluster.start()
        nodes = gpu_nodes(NODES, gpus_per_node=GPUS_PER_NODE, nodes_per_leaf=NODES_PER_LEAF)
        cluster.create_nodes(nodes)
        say(
            f"{NODES} fake nodes x {GPUS_PER_NODE} GPUs on 2 leaves ready after "
            f"{time.monotonic() - t0:.0f}s; "
            f"KUBECONFIG={cluster.kubeconfig}"
        )
        kube = Kube(api_client_from(str(cluster.kubeconfig)), qps=0)
        install_basics(kube, cluster.kubeconfig)
        controllers = start_workload_controllers(cluster, DEMO_CONTROLLERS)
        say("workload controllers ready: " + ", ".join(f"{c.name} {c.version}" for c in controllers.values()))
        work.mkdir(parents=True, exist_ok=True)
        daemon = start_daemon(cluster.kubeconfig, work, port)
        (state_dir / "gpufair-run.pid").write_text(f"{daemon.pid}\n")
        _wait(
            "the daemon's /readyz",
            lambda: daemon.poll() is not None or _http_ok(metrics.replace("metrics", "readyz")),
            60,
        )
        if daemon.poll() is not None:
            raise DemoError(f"gpufair run exited with {daemon.returncode}; see {work / 'daemon.log'}")
        say(f"gpufair run is up (log {work / 'daemon.log'}); metrics at {metrics}")
        steps = timeline(seconds)
        start = time.monotonic()
        next_draw = next_watch = 0.0
        seen: dict[str, dict[str, set[str]]] = {}
        while not stop["now"]:
            elapsed = time.monotonic() - start
            if seconds > 0 and elapsed >= seconds:
                break
            while steps and steps[0].at_s <= elapsed:
                step = steps.pop(0)
                apply_step(kube, step)
                if not live:
                    say(f"[{elapsed:5.1f}s] {step.what}")
            if daemon.poll() is not None:
                raise DemoError(f"gpufair run exited with {daemon.returncode}; see {work / 'daemon.log'}")
            tally.sample(kube, time.monotonic())
            if elapsed >= next_watch:
                watch_workload_pods(kube, seen)
                next_watch = elapsed + 5.0
            if live:
                out.write(
                    "\x1b[H\x1b[2J" + render_table(team_rows(kube), tally, elapsed, seconds, metrics) + "\n"
                )
                out.flush()
            elif elapsed >= next_draw:
                say(render_table(team_rows(kube), tally, elapsed, seconds, metrics))
                next_draw = elapsed + 10.0
            time.sleep(max(0.0, 1.0 - (time.monotonic() - start - elapsed)))
        result = summary(tally, elapsed, metrics)
        watch_workload_pods(kube, seen)
        result["workloads"] = workload_counts(seen)
    except DemoError as exc:
        say(f"gpufair demo: {exc}")
        log = work / "daemon.log"
        if log.exists():
            say("last lines of the daemon's log:\n" + "\n".join(log.read_text().splitlines()[-20:]))
        return 1
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say(render_summary(result))
    if summary_json:
        summary_json.write_text(json.dumps(result, indent=1))
    say("stopped the daemon and the control plane" + (f"; state kept in {state_dir}" if keep_state else ""))
    return 0
