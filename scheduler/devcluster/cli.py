"""`gpufair dev-cluster up | down | env | status | demo`: a local control plane with fake GPU nodes
(`demo`: the playground of `make demo`, see `scheduler.devcluster.demo`).

`up` starts it detached (pids and logs in the state directory), installs gpufair's CRDs and
PriorityClasses (and with `--workload-controllers` starts the real JobSet, LWS, KubeRay,
Kubeflow training-operator and Trainer controllers, see `scheduler.devcluster.workloads`),
and prints the kubeconfig path on stdout, so `export KUBECONFIG=$(gpufair dev-cluster up)`
works; progress goes to stderr. `down` stops it and removes the state directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.core.errors import InvalidInput

if TYPE_CHECKING:
    from scheduler.core.model import Node


def default_state_dir() -> Path:
    """`$XDG_RUNTIME_DIR/gpufair-dev-<uid>`, or under /tmp when there is no runtime dir."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"gpufair-dev-{os.getuid()}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dev_command", required=True)
    up = sub.add_parser(
        "up", help="start etcd, kube-apiserver, controller manager and KWOK with fake GPU nodes"
    )
    nodes = up.add_mutually_exclusive_group()
    nodes.add_argument(
        "--cluster", metavar="SPEC", help="ClusterSpec YAML (e.g. deploy/examples/cluster.yaml)"
    )
    nodes.add_argument("--gpu-nodes", type=int, metavar="N", help="N identical GPU nodes (default 8)")
    up.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node with --gpu-nodes (default 8)")
    up.add_argument("--gpu-model", default="H100", help="GPU model with --gpu-nodes (default H100)")
    up.add_argument("--with-kube-scheduler", action="store_true", help="also run the default kube-scheduler")
    up.add_argument(
        "--workload-controllers",
        action="store_true",
        help=(
            "also start the real JobSet, LeaderWorkerSet, KubeRay, Kubeflow training-operator "
            "and Trainer controllers (make control-plane)"
        ),
    )
    for name, cmd_help in (
        ("down", "stop the dev cluster and remove its state directory"),
        ("env", "print `export KUBECONFIG=...` for the running dev cluster"),
        ("status", "show which components of the dev cluster run"),
    ):
        sub.add_parser(name, help=cmd_help)
    for p in sub.choices.values():
        p.add_argument(
            "--state-dir",
            type=Path,
            default=default_state_dir(),
            help="where the cluster keeps certificates, data, logs and pids (default %(default)s)",
        )
    demo = sub.add_parser(
        "demo", help="a playground: 16 fake GPU nodes, three teams, the daemon and a mixed workload, live"
    )
    demo.add_argument("--seconds", type=float, default=0, help="stop after this long (default 0: at Ctrl-C)")
    demo.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir().with_name(default_state_dir().name + "-demo"),
        help="the demo cluster's state directory (default %(default)s)",
    )
    demo.add_argument("--metrics-port", type=int, default=10260, help="the daemon's /metrics port, if free")
    demo.add_argument("--keep-state", action="store_true", help="keep logs, ledger and state after the demo")
    demo.add_argument("--summary-json", type=Path, help="also write the summary here as JSON")
    parser.set_defaults(func=run)


def _nodes(args: argparse.Namespace) -> tuple[Node, ...]:
    from simulator.cluster_spec import nodes_for_gpus, nodes_from_spec

    if args.cluster:
        return nodes_from_spec(args.cluster)
    count = 8 if args.gpu_nodes is None else args.gpu_nodes
    if count < 1:
        raise InvalidInput("dev-cluster", "--gpu-nodes", f"{count} is not a node count", "give 1 or more")
    return nodes_for_gpus(count * args.gpus_per_node, args.gpus_per_node, args.gpu_model)


def _up(args: argparse.Namespace) -> int:
    from scheduler.devcluster.cluster import DevCluster
    from scheduler.devcluster.gpufair_objects import install_gpufair_objects
    from scheduler.devcluster.workloads import start_workload_controllers

    state_dir: Path = args.state_dir
    if (state_dir / "state.json").exists():
        cluster = DevCluster.attach(state_dir)
        if all(cluster.running().values()):
            print(f"dev cluster already up in {state_dir}", file=sys.stderr)
            print(cluster.kubeconfig)
            return 0
        print(f"stopping the remains of a dev cluster in {state_dir}", file=sys.stderr)
        cluster.stop()
    nodes = _nodes(args)  # a bad spec fails before anything starts
    t0 = time.monotonic()
    cluster = DevCluster(
        state_dir, with_kube_scheduler=args.with_kube_scheduler, detached=True, keep_state=False
    )
    cluster.start()
    print(f"control plane ready in {time.monotonic() - t0:.1f}s at {cluster.server}", file=sys.stderr)
    try:
        installed = install_gpufair_objects(cluster.kubeconfig)
        print(f"installed {', '.join(installed)}", file=sys.stderr)
        if args.workload_controllers:
            started = start_workload_controllers(cluster)
            versions = ", ".join(f"{c.name} {c.version}" for c in started.values())
            print(f"workload controllers ready: {versions}", file=sys.stderr)
        cluster.create_nodes(nodes)
    except BaseException:
        cluster.stop()
        raise
    gpus = sum(n.gpus for n in nodes)
    print(
        f"{len(nodes)} fake GPU nodes ({gpus} GPUs) Ready after {time.monotonic() - t0:.1f}s; "
        f"logs in {state_dir / 'logs'}; stop with `gpufair dev-cluster down`",
        file=sys.stderr,
    )
    print(cluster.kubeconfig)
    return 0


def _down(args: argparse.Namespace) -> int:
    from scheduler.devcluster.cluster import DevCluster

    cluster = DevCluster.attach(args.state_dir)
    cluster.stop()
    print(f"dev cluster in {args.state_dir} stopped", file=sys.stderr)
    return 0


def _env(args: argparse.Namespace) -> int:
    from scheduler.devcluster.cluster import DevCluster

    cluster = DevCluster.attach(args.state_dir)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from scheduler.devcluster.cluster import DevCluster

    cluster = DevCluster.attach(args.state_dir)
    alive = cluster.running()
    for name, ok in alive.items():
        print(f"{name:<24} {'running' if ok else 'stopped'} (pid {cluster.procs[name].pid})")
    print(f"{'kube-apiserver ready':<24} {cluster.apiserver_ready()} ({cluster.server})")
    return 0 if all(alive.values()) else 1


def _demo(args: argparse.Namespace) -> int:
    from scheduler.devcluster.demo import run_demo

    return run_demo(
        args.seconds,
        args.state_dir,
        metrics_port=args.metrics_port,
        keep_state=args.keep_state,
        summary_json=args.summary_json,
    )


def run(args: argparse.Namespace) -> int:
    """Run one dev-cluster subcommand; known failures print their fix and return 1."""
    # Imported here so `gpufair validate` does not pay for the Kubernetes client's import.
    from scheduler.devcluster.binaries import MissingBinary
    from scheduler.devcluster.cluster import DevClusterError
    from scheduler.devcluster.gpufair_objects import GpufairObjectsError
    from scheduler.devcluster.processes import ProcessFailed
    from scheduler.devcluster.workloads import WorkloadControllerError

    commands = {"up": _up, "down": _down, "env": _env, "status": _status, "demo": _demo}
    try:
        return commands[args.dev_command](args)
    except (
        MissingBinary,
        DevClusterError,
        ProcessFailed,
        InvalidInput,
        TimeoutError,
        GpufairObjectsError,
        WorkloadControllerError,
    ) as exc:
        print(f"gpufair dev-cluster {args.dev_command}: {exc}", file=sys.stderr)
        return 1
