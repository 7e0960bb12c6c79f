"""Benchmark: gpufair and kube-scheduler side by side on a loaded live cluster.

One control plane (etcd, kube-apiserver, kube-controller-manager, KWOK) with `--nodes`
fake nodes of 8 GPUs, loaded with running pods created already bound (`--gpu-running`
1-GPU pods of gpufair's teams, `--cpu-running` CPU-only pods of another scheduler), so
both schedulers start on a cluster of that size. Both run at once as separate processes
with the same client rate limit (50 QPS, bursts of 100). Then a trickle: `--trickle` new
1-GPU pods at `--rate` a second, taking turns between the two schedulers. A watch over
all pods notes when each is first seen bound; a pod's latency is from just before its
create call to that moment, the same clock for both. Reports p50 and p99 per scheduler,
and gpufair's cycle time during the trickle (from its /metrics: cycles and the mean).
Prints and writes benchmarks/results/daemon_live.json.

    python benchmarks/daemon_live.py [--nodes 500] [--gpu-running 2500] [--cpu-running 7500]
        [--trickle 300] [--rate 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bind_throughput import start_scheduler  # noqa: E402
from scheduler.daemon.kube import Kube, KubeError, api_client_from  # noqa: E402
from scheduler.devcluster import DevCluster  # noqa: E402
from scheduler.devcluster.processes import free_port  # noqa: E402
from simulator.cluster_spec import nodes_for_gpus  # noqa: E402

TEAMS = 10
SCHEDULERS = {"gpufair": "gpufair", "kube-scheduler": "default-scheduler"}


def _pod(ns: str, name: str, scheduler: str, gpus: int, node: str | None = None) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    spec: dict[str, Any] = {
        "schedulerName": scheduler,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "main",
                "image": "registry.example/job:1",
                "resources": {"limits": limits, "requests": {"cpu": "100m", "memory": "256Mi"}},
            }
        ],
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def load(kube: Kube, nodes: list[str], gpu_running: int, cpu_running: int) -> float:
    """Running pods created already bound: GPU pods node by node (7 a node at most), CPU-only
    pods round the nodes. Returns the seconds it took."""
    t0 = time.perf_counter()
    jobs = []
    per_node = max(1, min(7, -(-gpu_running // len(nodes))))
    for i in range(gpu_running):
        jobs.append(
            (f"ns-{i % TEAMS:02d}", f"run-g{i:06d}", "gpufair", 1, nodes[(i // per_node) % len(nodes)])
        )
    for i in range(cpu_running):
        jobs.append((f"ns-{i % TEAMS:02d}", f"run-c{i:06d}", "default-scheduler", 0, nodes[i % len(nodes)]))

    def one(job: tuple) -> None:
        ns, name, scheduler, gpus, node = job
        kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=_pod(ns, name, scheduler, gpus, node))

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(one, jobs))
    return time.perf_counter() - t0


class Clock:
    """Watches every pod and notes when each is first seen with a node."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.bound_at: dict[str, float] = {}
        _items, self.rv = kube.list("/api/v1/pods")
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self.kube.watch("/api/v1/pods", self.rv, timeout_s=60):
                    obj = event["object"]
                    self.rv = obj["metadata"].get("resourceVersion", self.rv)
                    if event["type"] in ("ADDED", "MODIFIED") and obj.get("spec", {}).get("nodeName"):
                        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
                        self.bound_at.setdefault(key, time.perf_counter())
                    if self._stop.is_set():
                        return
            except KubeError:
                _items, self.rv = self.kube.list("/api/v1/pods")

    def stop(self) -> None:
        self._stop.set()


def cycle_metrics(port: int) -> tuple[float, float]:
    """(cycles, seconds spent in them) from gpufair's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    count = re.search(r"^gpufair_cycle_duration_seconds_count(?:\{\})? ([0-9.e+]+)$", text, re.M)
    total = re.search(r"^gpufair_cycle_duration_seconds_sum(?:\{\})? ([0-9.e+]+)$", text, re.M)
    return (float(count.group(1)) if count else 0.0, float(total.group(1)) if total else 0.0)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--gpu-running", type=int, default=2500)
    ap.add_argument("--cpu-running", type=int, default=7500)
    ap.add_argument("--trickle", type=int, default=300, help="new pods, half for each scheduler")
    ap.add_argument("--rate", type=float, default=5.0, help="new pods a second")
    ap.add_argument("--debounce", help="gpufair's scheduler.debounce in seconds (default: its own)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    log = Path(tempfile.mkdtemp(prefix="gpufair-live-")) / "schedulers.log"
    config: list[str] = []
    if args.debounce:
        path = log.parent / "scheduler.yaml"
        path.write_text(f"kind: SchedulerConfig\nscheduler:\n  debounce: {args.debounce}\n")
        config = ["--config", str(path)]
    result: dict[str, Any] = {"args": vars(args)}
    with DevCluster() as cluster:
        t0 = time.perf_counter()
        made = cluster.create_nodes(nodes_for_gpus(args.nodes * 8), timeout_s=600)
        kube = Kube(api_client_from(str(cluster.kubeconfig)), qps=0)
        from tests.daemon_support import install_crds_and_priorities, make_namespace, make_team

        install_crds_and_priorities(kube)
        for t in range(TEAMS):
            make_namespace(kube, f"ns-{t:02d}")
            make_team(kube, f"team-{t:02d}", [f"ns-{t:02d}"])
        print(f"{len(made)} nodes in {time.perf_counter() - t0:.0f}s; loading ...", flush=True)
        result["load_s"] = load(kube, sorted(made), args.gpu_running, args.cpu_running)
        print(f"{args.gpu_running + args.cpu_running} running pods in {result['load_s']:.0f}s", flush=True)
        port = free_port()
        argv = [sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig", str(cluster.kubeconfig)]
        argv += ["--no-leader-elect", "--listen", f"127.0.0.1:{port}", "--log-format", "text", *config]
        procs = {
            "gpufair": subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT),
            "kube-scheduler": start_scheduler("kube-scheduler", cluster, log),
        }
        clock = Clock(kube)
        try:
            t_start = time.perf_counter()
            for which, name in SCHEDULERS.items():  # each has synced and binds
                kube.request(
                    "POST", "/api/v1/namespaces/ns-00/pods", body=_pod("ns-00", f"warm-{which}", name, 1)
                )
            deadline = time.perf_counter() + 600
            while not all(f"ns-00/warm-{w}" in clock.bound_at for w in SCHEDULERS):
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"a scheduler did not bind its warm-up pod; see {log}")
                time.sleep(0.2)
            result["first_bind_after_start_s"] = {
                w: clock.bound_at[f"ns-00/warm-{w}"] - t_start for w in SCHEDULERS
            }
            print(f"both schedulers bind ({result['first_bind_after_start_s']}); trickle ...", flush=True)
            time.sleep(5.0)  # past the start's first cycles
            before = cycle_metrics(port)
            created: dict[str, tuple[str, float]] = {}
            gap = 1.0 / args.rate
            next_at = time.perf_counter()
            for i in range(args.trickle):
                which = list(SCHEDULERS)[i % 2]
                ns, name = f"ns-{i % TEAMS:02d}", f"trickle-{i:05d}"
                wait = next_at - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                next_at += gap
                created[f"{ns}/{name}"] = (which, time.perf_counter())
                kube.request(
                    "POST", f"/api/v1/namespaces/{ns}/pods", body=_pod(ns, name, SCHEDULERS[which], 1)
                )
            deadline = time.perf_counter() + 120
            while not all(k in clock.bound_at for k in created) and time.perf_counter() < deadline:
                time.sleep(0.2)
            after = cycle_metrics(port)
        finally:
            clock.stop()
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        for which in SCHEDULERS:
            lat = [
                clock.bound_at[k] - t for k, (w, t) in created.items() if w == which and k in clock.bound_at
            ]
            sent = sum(1 for w, _t in created.values() if w == which)
            result[which] = {
                "pods": sent,
                "bound": len(lat),
                "p50_s": statistics.median(lat) if lat else None,
                "p99_s": _quantile(lat, 0.99) if lat else None,
                "max_s": max(lat) if lat else None,
            }
        cycles, spent = after[0] - before[0], after[1] - before[1]
        result["gpufair_cycles_during_trickle"] = cycles
        result["gpufair_mean_cycle_s"] = spent / cycles if cycles else None
    g, k = result["gpufair"], result["kube-scheduler"]
    print(f"{'scheduler':<16}{'pods':>6}{'bound':>7}{'p50 s':>9}{'p99 s':>9}{'max s':>9}")
    for which in SCHEDULERS:
        r = result[which]
        fmt = [f"{r[x]:>9.3f}" if r[x] is not None else f"{'-':>9}" for x in ("p50_s", "p99_s", "max_s")]
        print(f"{which:<16}{r['pods']:>6}{r['bound']:>7}{''.join(fmt)}")
    if g["p99_s"] and k["p99_s"]:
        result["p99_ratio_gpufair_to_kube_scheduler"] = g["p99_s"] / k["p99_s"]
        print(f"p99 gpufair / kube-scheduler: {result['p99_ratio_gpufair_to_kube_scheduler']:.2f}")
    if result["gpufair_mean_cycle_s"] is not None:
        print(f"gpufair: {cycles:.0f} cycles during the trickle, mean {result['gpufair_mean_cycle_s']:.3f}s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "daemon_live.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'daemon_live.json'}; scheduler logs in {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
