"""`gpufair run`, `gpufair status` and `gpufair explain`."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from kubernetes.config import ConfigException

from scheduler.core.errors import InvalidInput
from scheduler.core.teamtree import display_order
from scheduler.daemon.config import DaemonConfig, check, load_daemon_config
from scheduler.daemon.kube import Kube, KubeError, NoCredentials, api_client_from


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(fmt: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _config(args: argparse.Namespace) -> DaemonConfig:
    cfg = DaemonConfig()
    if args.config:
        cfg = load_daemon_config(Path(args.config).read_text(), cfg)
    flags = {
        "kubeconfig": args.kubeconfig,
        "policy_name": args.policy_name,
        "listen": args.listen,
        "identity": args.identity,
        "ledger_url": args.ledger,
        "mqtt_broker": args.mqtt_broker,
        "log_format": args.log_format,
        "qps": args.qps,
        "burst": args.burst,
        "interval_s": args.interval,
    }
    changes = {k: v for k, v in flags.items() if v is not None}
    # A database URL may hold a password: take it from the environment (a Secret), never argv.
    if "ledger_url" not in changes and not cfg.ledger_url and os.environ.get("GPUFAIR_LEDGER_URL"):
        changes["ledger_url"] = os.environ["GPUFAIR_LEDGER_URL"]
    if args.no_leader_elect:
        changes["leader_elect"] = False
    if args.check_incremental:
        changes["check_incremental"] = True
    if args.lease_seconds is not None:
        changes.update(
            lease_s=args.lease_seconds,
            renew_deadline_s=args.lease_seconds * 2 / 3,
            retry_s=max(0.2, args.lease_seconds / 7.5),
        )
    return check(replace(cfg, **changes))


def _run(args: argparse.Namespace) -> int:
    from scheduler.daemon.service import build_daemon

    try:
        cfg = _config(args)
    except (InvalidInput, OSError) as exc:
        print(f"gpufair run: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_format, args.log_level)
    tune_gc()
    try:
        daemon, server = build_daemon(cfg)
    except (NoCredentials, ConfigException) as exc:
        print(f"gpufair run: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("gpufair").info("signal %d: shutting down", signum)
        done.set()
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon.run()
    finally:
        server.shutdown()
        daemon.stop()
    return 0


def tune_gc() -> None:
    """The cache holds hundreds of thousands of small dicts (every field of every pod) and
    they are long-lived; with CPython's default thresholds, parsing a list of 5,000 pods
    runs the collector dozens of times over them and takes twice as long, and each cycle
    pays again. Objects alive at start are frozen out of collection, and the youngest
    generation is collected every 50,000 allocations instead of 700."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _kube(args: argparse.Namespace) -> Kube:
    return Kube(api_client_from(args.kubeconfig), qps=0)


def _status(args: argparse.Namespace) -> int:
    try:
        kube = _kube(args)
    except (NoCredentials, ConfigException) as exc:
        print(f"gpufair status: {exc}", file=sys.stderr)
        return 2
    try:
        teams = kube.request("GET", "/apis/gpufair.io/v1alpha1/gputeams").get("items") or []
    except KubeError as exc:
        print(f"gpufair status: cannot read GPUTeams: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(
            json.dumps(
                [
                    {"name": t["metadata"]["name"], "spec": t.get("spec"), "status": t.get("status")}
                    for t in teams
                ],
                indent=2,
            )
        )
        return 0
    print(status_table(teams))
    return 0


def status_table(teams: list[dict[str, Any]]) -> str:
    """GPUTeams as a tree: each group (its figures are its subtree's, the daemon's subtotals)
    followed by its children, indented."""
    head = (
        f"{'TEAM':<22}{'WEIGHT':>7}{'SHARE':>9}{'ALLOC':>9}{'PROD':>7}{'SCAV':>7}{'PENDING':>9}"
        f"{'BUDGET USED':>14}{'LEFT':>10}  STATE"
    )
    lines = [head]
    by_name = {t["metadata"]["name"]: t for t in teams}
    parents = {name: (t.get("spec") or {}).get("parent") for name, t in by_name.items()}
    for name, depth in display_order(parents):
        t = by_name[name]
        s, spec = t.get("status") or {}, t.get("spec") or {}
        budget = (spec.get("budget") or {}).get("gpuHours")
        used = s.get("budgetUsedGPUHours")
        left = s.get("budgetLeftGPUHours")
        valid: dict[str, Any] = next((c for c in s.get("conditions") or [] if c.get("type") == "Valid"), {})
        at = s.get("budgetExhaustedAt") or ""
        state = (
            "invalid: " + valid.get("message", "")
            if valid.get("status") == "False"
            else (f"budget exhausted ({at})" if at and at != name else "budget exhausted")
            if s.get("budgetExhausted") or at
            else "ok"
        )
        label = "  " * depth + name + ("/" if s.get("group") else "")
        lines.append(
            f"{label:<22}{spec.get('weight', 1):>7g}"
            f"{s.get('fairShareGPUs', 0):>9.1f}{s.get('allocatedGPUs', 0):>9.1f}"
            f"{s.get('productionGPUs', 0):>7.1f}{s.get('scavengerGPUs', 0):>7.1f}{s.get('pendingPods', 0):>9}"
            f"{(f'{used:.1f}/{budget:g} h' if budget is not None and used is not None else '-'):>14}"
            f"{(f'{left:.1f} h' if left is not None else '-'):>10}  {state}"
        )
    return "\n".join(lines)


def explain_pod(kube: Kube, namespace: str, name: str) -> str:
    """Why a pod waits, where it runs, or why it was evicted, in words."""
    lines = []
    try:
        pod = kube.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    except KubeError as exc:
        if exc.status != 404:
            raise
        pod = None
    events = (
        kube.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/events",
            {"fieldSelector": f"involvedObject.kind=Pod,involvedObject.name={name}"},
        ).get("items")
        or []
    )
    events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    ours = [
        e
        for e in events
        if (e.get("source") or {}).get("component") == "gpufair" or e.get("reportingComponent") == "gpufair"
    ]
    preempted = [e for e in ours if e.get("reason") == "Preempted"]
    if pod is None:
        if preempted:
            return f"{namespace}/{name} was evicted by gpufair: {preempted[-1]['message']}"
        return f"{namespace}/{name} does not exist (and gpufair recorded no eviction of it)"
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if spec.get("schedulerName") != "gpufair":
        return f"{namespace}/{name} is scheduled by {spec.get('schedulerName')!r}, not gpufair"
    if preempted:
        lines.append(f"being evicted: {preempted[-1]['message']}")
    if spec.get("nodeName"):
        requests = ", ".join(
            f"{k}={v}"
            for c in spec.get("containers") or []
            for k, v in ((c.get("resources") or {}).get("requests") or {}).items()
        )
        lines.insert(
            0,
            f"{namespace}/{name} runs on {spec['nodeName']} ({requests or 'no requests'}); "
            f"phase {status.get('phase')}",
        )
        return "\n".join(lines)
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
    if cond and cond.get("status") == "False":
        lines.insert(0, f"{namespace}/{name} waits: {cond.get('message')}")
    else:
        lines.insert(
            0, f"{namespace}/{name} waits; gpufair has not looked at it yet (is the scheduler running?)"
        )
    return "\n".join(lines)


def _explain(args: argparse.Namespace) -> int:
    ns, _, name = args.pod.rpartition("/")
    try:
        kube = _kube(args)
    except (NoCredentials, ConfigException) as exc:
        print(f"gpufair explain: {exc}", file=sys.stderr)
        return 2
    try:
        print(explain_pod(kube, ns or "default", name))
    except KubeError as exc:
        print(f"gpufair explain: {exc}", file=sys.stderr)
        return 1
    return 0


def add_daemon_commands(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the scheduler daemon")
    run.add_argument("--config", help="SchedulerConfig YAML (scheduler: and policy: sections)")
    run.add_argument(
        "--kubeconfig", help="default: $KUBECONFIG, else the in-cluster ServiceAccount, else ~/.kube/config"
    )
    run.add_argument("--policy-name", help="gpufair (default), drf or fifo")
    run.add_argument("--listen", help="host:port of /healthz, /readyz, /metrics (default 0.0.0.0:10260)")
    run.add_argument("--identity", help="leader-election identity (default: POD_NAME or host-pid)")
    run.add_argument(
        "--ledger", help="ledger database: a SQLite path or a PostgreSQL URL (default: $GPUFAIR_LEDGER_URL)"
    )
    run.add_argument("--mqtt-broker", help="telemetry broker host:port")
    run.add_argument("--qps", type=float, help="API calls per second (default 50)")
    run.add_argument("--burst", type=int, help="API call burst (default 100)")
    run.add_argument("--interval", type=float, help="seconds between cycles when nothing changes")
    run.add_argument("--lease-seconds", type=float, help="leader lease duration (default 15)")
    run.add_argument("--no-leader-elect", action="store_true", help="act without a lease (one replica only)")
    run.add_argument(
        "--check-incremental",
        action="store_true",
        help="compare the incremental state with a fresh build every cycle and log any difference (debug)",
    )
    run.add_argument("--log-format", choices=["json", "text"])
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=_run)
    for name, fn, helptext in (
        ("status", _status, "teams: weight, fair share, allocated, pending, budget"),
        ("explain", _explain, "why a pod waits, or why it was evicted"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--kubeconfig", help="default: $KUBECONFIG, else in-cluster, else ~/.kube/config")
        if name == "explain":
            p.add_argument("pod", help="NAMESPACE/POD")
        else:
            p.add_argument("-o", "--output", choices=["table", "json"], default="table")
        p.set_defaults(func=fn)
