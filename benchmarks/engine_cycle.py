"""Benchmark: one decision cycle of the core on synthetic clusters.

Prints a table and writes JSON: median wall time of 5 cycles, and the peak memory the
cycle allocates (tracemalloc, measured on a separate run so it does not slow the
timed ones). The peer in the same run is the `fifo` baseline (strict FIFO, first-fit,
no preemption) through the same engine: the ratio says what gpufair's policy costs.
Targets on a 2-core machine: (a) <= 0.1 s, (b) <= 0.5 s, (c) <= 2 s, each
under 2 GiB. Then shows how the time grows with nodes and with pending pods.

Case b-constrained is case b on a cluster that reserves its GPU nodes (benchmarks/
synthetic.py `constrain`): GPU nodes labelled with four pools and tainted
nvidia.com/gpu=present:NoSchedule, GPU pods tolerating it, a fifth of the waiting gangs
selecting a pool, and a tenth of the waiting pods as inference Deployments (one gang per
replica) with hostname pod anti-affinity, every fifth spread over leaves
(`with_inference_spread`). Its
second peer is case b in the same run: `ratio_to_b`, target <= 1.5.

    python benchmarks/engine_cycle.py [--quick] [--small] [--cases b,b-constrained] [--out DIR]

`--small` divides every case by 100 (1 run, no scaling series): a smoke run, no figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.synthetic import constrain, make_snapshot
from scheduler.core import decide

SCENARIOS = {
    "a": {"nodes": 1_000, "pending_pods": 5_000, "running_pods": 0, "target_s": 0.1},
    "b": {"nodes": 4_000, "pending_pods": 5_000, "running_pods": 140_000, "target_s": 0.5},
    "c": {"nodes": 10_000, "pending_pods": 50_000, "running_pods": 0, "target_s": 2.0},
    # case b with node pools: measured beside b in the same run, the target is the ratio
    "b-constrained": {
        "nodes": 4_000,
        "pending_pods": 5_000,
        "running_pods": 140_000,
        "target_s": 0.75,
        "constrained": True,
        "versus": "b",
        "target_ratio": 1.5,
    },
}
MEMORY_TARGET_MIB = 2048
SMALL = 100  # --small divides every case by this


def measure(
    nodes: int,
    pending_pods: int,
    running_pods: int,
    runs: int,
    policy: str = "gpufair",
    constrained: bool = False,
) -> dict:
    snap = make_snapshot(nodes, pending_pods, running_pods)
    if constrained:
        snap = constrain(snap)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        decisions = decide(snap, policy=policy)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    decide(snap, policy=policy)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "policy": policy,
        "nodes": nodes,
        "gpus": nodes * 8,
        "pending_pods": pending_pods,
        "running_pods": running_pods,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "peak_mib": peak / 2**20,
        "binds": len(decisions.binds),
        "evictions": len(decisions.evictions),
        "pending_gangs": len(decisions.pending),
        "constrained": constrained,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run each, no scaling series")
    parser.add_argument("--small", action="store_true", help=f"every case / {SMALL}, 1 run: a smoke run")
    parser.add_argument("--cases", default=",".join(SCENARIOS), help="comma-separated cases to run")
    parser.add_argument("--out", default="benchmarks/results", help="folder for engine_cycle.json")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in SCENARIOS:
            parser.error(f"--cases: unknown case {c!r}; the cases are {', '.join(SCENARIOS)}")
    for c in cases:  # a ratio's peer runs in the same run, before the case that needs it
        versus = SCENARIOS[c].get("versus")
        if versus and versus not in cases:
            cases.insert(cases.index(c), versus)
    quick = args.quick or args.small
    runs = 1 if quick else 5
    scale = SMALL if args.small else 1
    results: dict = {"scenarios": {}, "scaling_nodes": [], "scaling_pending": [], "small": args.small}
    print(
        f"{'case':<14}{'nodes':>7}{'running':>9}{'pending':>9}{'median s':>10}{'target s':>10}"
        f"{'peak MiB':>10}{'binds':>8}{'evicts':>8}{'fifo s':>8}{'x fifo':>8}  verdict"
    )
    for name in cases:
        spec = SCENARIOS[name]
        size = (spec["nodes"] // scale, spec["pending_pods"] // scale, spec["running_pods"] // scale)
        constrained = bool(spec.get("constrained"))
        r = measure(*size, runs, constrained=constrained)
        # The peer in the same run: the strict-FIFO first-fit baseline through the same engine.
        peer = measure(*size, runs, policy="fifo", constrained=constrained)
        r["target_s"] = spec["target_s"]
        r["meets_target"] = r["median_s"] <= spec["target_s"] and r["peak_mib"] <= MEMORY_TARGET_MIB
        r["fifo"] = peer
        r["ratio_to_fifo"] = r["median_s"] / peer["median_s"]
        versus = spec.get("versus")
        if versus:
            base = results["scenarios"][versus]
            r["versus"] = versus
            r["ratio_to_" + versus] = r["median_s"] / base["median_s"]
            r["target_ratio"] = spec["target_ratio"]
            r["meets_target"] = (
                r["ratio_to_" + versus] <= spec["target_ratio"] and r["peak_mib"] <= MEMORY_TARGET_MIB
            )
        results["scenarios"][name] = r
        print(
            f"{name:<14}{r['nodes']:>7}{r['running_pods']:>9}{r['pending_pods']:>9}"
            f"{r['median_s']:>10.3f}{spec['target_s']:>10.2f}{r['peak_mib']:>10.0f}"
            f"{r['binds']:>8}{r['evictions']:>8}{peer['median_s']:>8.3f}{r['ratio_to_fifo']:>8.1f}"
            f"  {'ok' if r['meets_target'] else 'MISSED'}",
            flush=True,
        )
        if versus:
            print(
                f"{'':<14}{name} / {versus} in this run: {r['ratio_to_' + versus]:.2f}x "
                f"(target <= {spec['target_ratio']:g}x)",
                flush=True,
            )
    if not quick:
        print("\ngrowth with nodes (5,000 pending pods):")
        for nodes in (500, 1_000, 2_000, 4_000, 8_000):
            r = measure(nodes, 5_000, 0, 3)
            results["scaling_nodes"].append(r)
            print(f"  {nodes:>6} nodes  {r['median_s']:.3f} s", flush=True)
        print("growth with pending pods (2,000 nodes):")
        for pending in (2_500, 5_000, 10_000, 20_000, 40_000):
            r = measure(2_000, pending, 0, 3)
            results["scaling_pending"].append(r)
            print(f"  {pending:>6} pending  {r['median_s']:.3f} s", flush=True)
    results["process_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess peak RSS (snapshots included): {results['process_max_rss_mib']:.0f} MiB")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine_cycle.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'engine_cycle.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
