"""Benchmark: the daemon's cycle, from its watch cache to its planned API calls, at scale.

Offline: generated API-shaped objects (nodes of 8 GPUs on leaves and spines, 20 GPUTeams
with a namespace each, PriorityClasses, running 1-GPU pods, running CPU-only pods of
another scheduler, pending 1-GPU pods) are put into the daemon's own watch cache (the
stores' replace and apply, what the watch threads call), and the daemon's own code runs a
cycle: cache -> translation -> core -> planning of binds, evictions and pending reasons.
Only the HTTP calls are left out: the planned calls are counted, not sent.

Each case runs a cold first cycle, then `--reps` steady cycles, each after 100 random
changes (pods created, finished, bound by the previous cycle's decisions coming back
through the watch, node labels changed). Two daemons read the same cache: the incremental
one (the default, scheduler/daemon/live.py) and the full-rebuild one (`incremental:
false`, every cycle translates the whole cache and decides afresh), the peer, in the same
run, on the same changes. Prints a table and writes
benchmarks/results/daemon_cycle.json: {"cases": {"a": {"cold_s", "steady_s",
"translate_s", "decide_s", ...}}}.

The process's garbage collector is tuned as `gpufair run` tunes it (cli.tune_gc).
Cases: a) 1,000 nodes, 5,000 pending; b) 4,000 nodes, 28,000 running 1-GPU pods,
112,000 running CPU-only pods, 5,000 pending; c) 10,000 nodes, 50,000 pending.
Targets (2 cores): case b steady <= 0.5 s and cold <= 3 s.

    python benchmarks/daemon_cycle.py [--cases a,b,c] [--reps 3] [--small] [--out DIR]

`--small` divides every case by 100: a smoke run, no figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import client

from scheduler.core import decide
from scheduler.core.model import Bind, Decisions
from scheduler.daemon.cli import tune_gc
from scheduler.daemon.config import DaemonConfig
from scheduler.daemon.daemon import Daemon
from scheduler.daemon.kube import Kube
from scheduler.daemon.live import LiveState
from scheduler.daemon.translate import Translation

CASES = {
    "a": {"nodes": 1_000, "gpu_running": 0, "cpu_running": 0, "pending": 5_000},
    "b": {"nodes": 4_000, "gpu_running": 28_000, "cpu_running": 112_000, "pending": 5_000},
    "c": {"nodes": 10_000, "gpu_running": 0, "cpu_running": 0, "pending": 50_000},
}
TARGETS = {"b": {"steady_s": 0.5, "cold_s": 3.0}}
TEAMS = 20
CHANGES = 100
SMALL = 100
EPOCH = "2026-01-01T00:00:00Z"


class _Objects:
    """API-shaped objects with resourceVersions, as the API server hands them out."""

    def __init__(self, seed: int) -> None:
        self.rv = 1000
        self.n = 0
        self.rng = random.Random(seed)

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def node(self, i: int, mark: str = "") -> dict[str, Any]:
        labels = {
            "kubernetes.io/hostname": f"node-{i:05d}",
            "network.gpufair.io/spine": f"spine-{i // 256}",
            "network.gpufair.io/leaf": f"leaf-{i // 32}",
            "nvidia.com/gpu.clique": f"clique-{i}",
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        }
        if mark:
            labels["bench.gpufair.io/mark"] = mark
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": f"node-{i:05d}", "labels": labels, "resourceVersion": self.next_rv()},
            "spec": {},
            "status": {
                "allocatable": {"cpu": "96", "memory": "1024Gi", "nvidia.com/gpu": "8", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }

    def pod(self, ns: str, node: str | None, gpus: int, ours: bool = True) -> dict[str, Any]:
        self.n += 1
        name = f"p-{self.n:07d}"
        limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": f"uid-{self.n}",
                "resourceVersion": self.next_rv(),
                "creationTimestamp": EPOCH,
                "labels": {"app": f"job-{self.n % 97}"},
            },
            "spec": {
                "schedulerName": "gpufair" if ours else "default-scheduler",
                "priorityClassName": "gpufair-training",
                "priority": 0,
                **({"nodeName": node} if node else {}),
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.example/job:1",
                        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": limits},
                    }
                ],
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
            "status": {"phase": "Running", "startTime": EPOCH} if node else {"phase": "Pending"},
        }

    def team(self, t: int, weight: int = 1) -> dict[str, Any]:
        return {
            "apiVersion": "gpufair.io/v1alpha1",
            "kind": "GPUTeam",
            "metadata": {"name": f"team-{t:02d}", "resourceVersion": self.next_rv()},
            "spec": {"weight": weight, "namespaces": [f"ns-{t:02d}"]},
        }


def populate(daemon: Daemon, objs: _Objects, spec: dict[str, int]) -> None:
    """The case's objects into the cache, as its first lists put them there."""
    nodes = spec["nodes"]
    names = [f"node-{i:05d}" for i in range(nodes)]
    c = daemon.cache
    c["nodes"].replace([objs.node(i) for i in range(nodes)])
    c["gputeams"].replace([objs.team(t) for t in range(TEAMS)])
    c["namespaces"].replace(
        [{"metadata": {"name": f"ns-{t:02d}", "resourceVersion": objs.next_rv()}} for t in range(TEAMS)]
    )
    c["priorityclasses"].replace(
        [
            {"metadata": {"name": n, "resourceVersion": objs.next_rv()}, "value": v}
            for n, v in (("gpufair-production", 100000), ("gpufair-training", 0), ("gpufair-scavenger", -100))
        ]
    )
    pods = []
    for i in range(spec["gpu_running"]):  # 7 of each node's 8 GPUs, node by node
        pods.append(objs.pod(f"ns-{i % TEAMS:02d}", names[(i // 7) % nodes], 1))
    for i in range(spec["cpu_running"]):
        pods.append(objs.pod(f"ns-{i % TEAMS:02d}", names[i % nodes], 0, ours=False))
    for i in range(spec["pending"]):
        pods.append(objs.pod(f"ns-{i % TEAMS:02d}", None, 1))
    c["pods"].replace(pods)
    for name in ("pdbs", "podgroups", "pvcs", "pvs", "storageclasses", "csinodes"):
        c[name].replace([])


def deliver(daemon: Daemon, objs: _Objects, binds: Iterable[Bind]) -> int:
    """Binds coming back through the watch: each pod MODIFIED with its node, Running."""
    store, n = daemon.cache["pods"], 0
    for b in binds:
        pod = store.get(b.pod)
        if pod is None or pod["spec"].get("nodeName"):
            continue
        meta = {**pod["metadata"], "resourceVersion": objs.next_rv()}
        bound = {**pod, "metadata": meta, "spec": {**pod["spec"], "nodeName": b.node}}
        bound["status"] = {"phase": "Running", "startTime": EPOCH}
        store.apply("MODIFIED", bound)
        n += 1
    return n


def change(daemon: Daemon, objs: _Objects, spec: dict[str, int], last: Decisions | None) -> dict[str, int]:
    """CHANGES random watch events: the last cycle's binds come back first (up to 40),
    then pods created and finished, and a node relabelled now and then."""
    rng, store = objs.rng, daemon.cache["pods"]
    counts = {"bound": deliver(daemon, objs, (last.binds if last else ())[:40]), "created": 0, "finished": 0}
    counts["node"] = 0
    left = CHANGES - counts["bound"]
    keys = store.keys()
    for _ in range(left):
        roll = rng.random()
        if roll < 0.02:
            i = rng.randrange(spec["nodes"])
            daemon.cache["nodes"].apply("MODIFIED", objs.node(i, mark=str(objs.rv)))
            counts["node"] += 1
        elif roll < 0.5:
            store.apply("ADDED", objs.pod(f"ns-{rng.randrange(TEAMS):02d}", None, 1))
            counts["created"] += 1
        else:
            pod = store.get(rng.choice(keys))
            if pod is None or not pod["spec"].get("nodeName"):
                continue
            done = {**pod, "metadata": {**pod["metadata"], "resourceVersion": objs.next_rv()}}
            done["status"] = {**pod.get("status", {}), "phase": "Succeeded"}
            store.apply("MODIFIED", done)
            counts["finished"] += 1
    return counts


class _Planned:
    """Where the daemon's API calls go in this benchmark: counted, not sent."""

    def __init__(self) -> None:
        self.calls = 0
        self.backlog = 0

    def submit(self, *_args: Any, **_kw: Any) -> None:
        self.calls += 1

    def run_all(self, _priority: int, calls: list) -> list:
        self.calls += len(calls)
        return []

    def cancel_pending(self) -> int:
        return 0

    def bind(self, *_args: Any) -> None:
        raise AssertionError("planned only")

    evict = bind

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_daemon(incremental: bool) -> Daemon:
    cfg = DaemonConfig(leader_elect=False, incremental=incremental, full_check_every_s=1e12)
    kube = Kube(client.ApiClient(), qps=0)  # never called: the planner below takes the calls
    daemon = Daemon(cfg, kube, kube)
    daemon.worker.stop()
    daemon.actuator.close()
    daemon.actuator = daemon.worker = _Planned()  # type: ignore[assignment]
    return daemon


def one_cycle(daemon: Daemon, now: float) -> tuple[Decisions, dict[str, float]]:
    """The daemon's cycle (Daemon.cycle) split into its three parts, timed."""
    t0 = time.perf_counter()
    tr: Translation
    tr = daemon.live_snapshot(now) if daemon.cfg.incremental else daemon.snapshot(now)
    t1 = time.perf_counter()
    if daemon.cfg.incremental:
        assert daemon.live.core is not None
        decisions = daemon.live.core.decide(now, tr.snapshot.usage)
    else:
        decisions = decide(tr.snapshot, daemon.cfg.policy, daemon.policy)
    t2 = time.perf_counter()
    daemon._spend_nominations(tr)
    daemon._evict(tr, decisions, now, 0)
    daemon._bind(tr, decisions, now, 0)
    daemon._explain(tr, decisions, now)
    t3 = time.perf_counter()
    return decisions, {"translate_s": t1 - t0, "decide_s": t2 - t1, "plan_s": t3 - t2, "cycle_s": t3 - t0}


def both_cycles(inc: Daemon, full: Daemon, now: float) -> tuple[Decisions, dict, Decisions, dict]:
    """A cycle of each on the same cache. The cluster follows the incremental daemon's
    binds, so the peer starts from its bookkeeping (the binds it has in flight)."""
    in_flight = dict(inc.assumed)
    d_inc, t_inc = one_cycle(inc, now)
    full.assumed = in_flight
    d_full, t_full = one_cycle(full, now)
    return d_inc, t_inc, d_full, t_full


def run_case(name: str, spec: dict[str, int], reps: int, seed: int = 18) -> dict[str, Any]:
    objs = _Objects(seed)
    inc, full = make_daemon(True), make_daemon(False)
    populate(inc, objs, spec)
    full.cache = inc.cache  # one cache, read by both; only the incremental one drains it
    full.live = LiveState(inc.cache, full.cfg.policy, full.policy)
    now = time.time()
    d_inc, cold, d_full, cold_full = both_cycles(inc, full, now)
    cold_binds = len(d_inc.binds)
    same = [cold_binds == len(d_full.binds)]
    # The cold cycle's binds come back through the watch, as the API server would echo
    # them; one cycle (not timed) takes them in before the steady ones.
    deliver(inc, objs, d_inc.binds)
    now += 1.0
    d_inc, _t, _d, _t = both_cycles(inc, full, now)
    steady: list[dict[str, float]] = []
    steady_full: list[dict[str, float]] = []
    changes: dict[str, int] = {}
    for r in range(reps):
        changes = change(inc, objs, spec, d_inc)
        now += 1.0
        d_inc, t, d_full, t_full = both_cycles(inc, full, now)
        steady.append(t)
        steady_full.append(t_full)
        same.append(len(d_inc.binds) == len(d_full.binds))
        if r == 0:
            found = inc.check_incremental(now)
            assert not found, f"case {name}: the incremental state differs from a fresh build: {found}"

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    out: dict[str, Any] = {
        **spec,
        "cold_s": cold["cycle_s"],
        "cold_translate_s": cold["translate_s"],
        "cold_decide_s": cold["decide_s"],
        "steady_s": median(steady, "cycle_s"),
        "translate_s": median(steady, "translate_s"),
        "decide_s": median(steady, "decide_s"),
        "plan_s": median(steady, "plan_s"),
        "cold_binds": cold_binds,
        "last_changes": changes,
        "same_bind_counts_as_full": all(same),
        "full_rebuild": {
            "cold_s": cold_full["cycle_s"],
            "steady_s": median(steady_full, "cycle_s"),
            "translate_s": median(steady_full, "translate_s"),
            "decide_s": median(steady_full, "decide_s"),
            "plan_s": median(steady_full, "plan_s"),
        },
    }
    out["steady_speedup_vs_full"] = out["full_rebuild"]["steady_s"] / out["steady_s"]
    target = TARGETS.get(name)
    if target:
        out["targets"] = target
        out["meets_targets"] = all(out[k] <= v for k, v in target.items())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--reps", type=int, default=3, help="steady cycles per case (median)")
    parser.add_argument("--small", action="store_true", help=f"every case / {SMALL}: a smoke run")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    thresholds = gc.get_threshold()
    tune_gc()  # as `gpufair run` does at its start
    try:
        return _run(parser, args)
    finally:  # the caller's collector as it was (the smoke test runs this in pytest)
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            parser.error(f"--cases: unknown case {c!r}; the cases are {', '.join(CASES)}")
    results: dict[str, Any] = {"cases": {}, "small": args.small, "changes_per_steady_cycle": CHANGES}
    print(
        f"{'case':<5}{'nodes':>7}{'running':>9}{'pending':>9}{'cold s':>8}{'steady s':>10}{'transl.':>9}"
        f"{'decide':>8}{'plan':>7}{'full cold':>10}{'full st.':>10}{'x full':>8}"
    )
    for name in cases:
        spec = CASES[name]
        if args.small:
            spec = {k: max(v // SMALL, 1 if k == "nodes" else 0) for k, v in spec.items()}
            spec["nodes"] = max(spec["nodes"], 10)
        r = run_case(name, spec, max(1, args.reps))
        results["cases"][name] = r
        f = r["full_rebuild"]
        print(
            f"{name:<5}{spec['nodes']:>7}{spec['gpu_running'] + spec['cpu_running']:>9}{spec['pending']:>9}"
            f"{r['cold_s']:>8.2f}{r['steady_s']:>10.3f}{r['translate_s']:>9.3f}{r['decide_s']:>8.3f}"
            f"{r['plan_s']:>7.3f}{f['cold_s']:>10.2f}{f['steady_s']:>10.3f}{r['steady_speedup_vs_full']:>8.1f}"
        )
        if "meets_targets" in r:
            print(f"      targets {r['targets']}: {'met' if r['meets_targets'] else 'MISSED'}")
    results["process_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "daemon_cycle.json").write_text(json.dumps(results, indent=2))
    print(f"peak RSS {results['process_max_rss_mib']:.0f} MiB; wrote {out / 'daemon_cycle.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
