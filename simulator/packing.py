"""The packing experiment of "Beware of Fragmentation" (FGD, USENIX ATC'23), on gpufair's core.

The paper's static protocol, per seed: the trace's pods are shuffled by the seed, then
resampled with replacement (or thinned at random) until their GPU requests add up to
130% of the cluster's GPUs. Pods then arrive one at a time and nothing ever leaves; a pod
that does not fit stays unplaced. The number reported is the share of the cluster's GPUs
left unallocated at the moment the arrived GPU requests reach 100% of capacity (a perfect
packer would leave 0%). The whole curve up to 130% is kept too.

Every placement goes through the decision core's own code (ClusterState, ShapeCache and
place_gang with a one-pod GangRequest and the pod's GPU-model mask), so what is measured
is what the scheduler does. `gpufair` is the core's `fragmentation` scorer with the
trace's pod-type mix; `fgd` is the same scorer with the paper's objective (least growth
of fragmentation instead of least fragmentation left); the other baselines are the
paper's (best-fit, gpu-packing, dot-product, random), plus first-fit.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from scheduler.core.cluster import FULL, ClusterState, Shape
from scheduler.core.config import PolicyConfig
from scheduler.core.model import Node
from scheduler.core.placement import CLUSTER_LEVEL, GangRequest, place_gang
from scheduler.core.scoring import SCORERS, Fragmentation, NodeScorer, Random, WorkloadMix
from scheduler.core.shapecache import ShapeCache

DEFAULT_POLICIES = ("gpufair", "fgd", "best-fit", "gpu-packing", "dot-product", "random")
# The core's scorers plus the experiment's two on the trace's mix, "gpufair" (the registry's
# fragmentation scorer, under the name the tables use) and "fgd"; the paper's set first.
POLICIES = (*DEFAULT_POLICIES, *(n for n in SCORERS if n not in DEFAULT_POLICIES and n != Fragmentation.name))
DEFAULT_SEEDS = tuple(range(42, 52))
INFLATION = 1.3  # the paper's 130% of cluster GPUs
MEASURE_AT = 1.0  # arrived GPU requests at 100% of capacity
# Types of the mix: the commonest pod types covering 95% of the trace's pods, as the
# paper's typical-pod selection does.
MIX_COVERAGE = 0.95
MIX_TOP = 64

# What the paper's simulator reports on openb_pod_list_default.csv (unallocated GPU %
# at 100% arrived, mean of seeds 42-51), for the side-by-side table.
PAPER_DEFAULT_TRACE = "openb_pod_list_default.csv"
PAPER_RESULTS = {
    "gpufair": ("FGD", 4.77),
    "fgd": ("FGD", 4.77),
    "best-fit": ("BestFit", 7.14),
    "gpu-packing": ("GpuPacking", 8.22),
    "dot-product": ("DotProduct", 9.38),
    "random": ("Random", 13.70),
}


class PackingInputError(ValueError):
    """A trace file that cannot be read: names the file, the row and the column."""


# ---------------------------------------------------------------- reading the openb CSVs


@dataclass(frozen=True, slots=True)
class TracePod:
    """One pod of the trace as a placement request."""

    name: str
    shape: Shape
    models: frozenset[str]

    @property
    def gpu_milli(self) -> int:
        """Requested GPU capacity in thousandths of a GPU."""
        return self.shape.gpus * FULL + self.shape.milli


def _int(path: Path, row: int, col: str, text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise PackingInputError(f"{path}, row {row}, column {col}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise PackingInputError(f"{path}, row {row}, column {col}: {text!r} is not a whole number >= 0")
    return int(value)


def _rows(path: Path, columns: Sequence[str]):
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise PackingInputError(f"{path}: missing column(s) {', '.join(missing)}")
        yield from enumerate(reader, start=2)


def read_pods(path: str | Path) -> list[TracePod]:
    """Pods of an openb pod list. `num_gpu` == 1 with `gpu_milli` < 1000 is a share of one
    GPU; otherwise `num_gpu` whole GPUs (0: a CPU-only pod). `gpu_spec` lists allowed
    GPU models separated by '|' (empty or no such column: any)."""
    path = Path(path)
    cols = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
    pods = []
    for n, rec in _rows(path, cols):
        cpu = _int(path, n, "cpu_milli", rec["cpu_milli"])
        mem = _int(path, n, "memory_mib", rec["memory_mib"])
        num = _int(path, n, "num_gpu", rec["num_gpu"])
        milli = _int(path, n, "gpu_milli", rec["gpu_milli"] or "0")
        if num > 0 and milli == 0:
            raise PackingInputError(f"{path}, row {n}, column gpu_milli: a GPU pod asks for 0 of its GPU")
        # A share of one GPU, else whole GPUs (a share of each of several cannot be placed).
        shape = Shape(0, milli, cpu, mem) if num == 1 and milli < FULL else Shape(num, 0, cpu, mem)
        spec = rec.get("gpu_spec") or ""
        models = frozenset(m.strip() for m in spec.split("|") if m.strip())
        pods.append(TracePod(rec["name"], shape, models))
    if not pods:
        raise PackingInputError(f"{path}: no pods")
    return pods


def read_nodes(path: str | Path) -> list[Node]:
    """Nodes of an openb node list (`sn,cpu_milli,memory_mib,gpu,model`)."""
    path = Path(path)
    nodes = []
    for n, rec in _rows(path, ("sn", "cpu_milli", "memory_mib", "gpu", "model")):
        nodes.append(
            Node(
                rec["sn"],
                _int(path, n, "gpu", rec["gpu"]),
                _int(path, n, "cpu_milli", rec["cpu_milli"]),
                _int(path, n, "memory_mib", rec["memory_mib"]),
                gpu_model=rec["model"].strip(),
                labels={"kubernetes.io/hostname": rec["sn"]},
            )
        )
    if not nodes:
        raise PackingInputError(f"{path}: no nodes")
    return nodes


# ---------------------------------------------------------------- the protocol


def workload_mix(
    pods: Sequence[TracePod], top: int | None = None, coverage: float | None = None
) -> WorkloadMix:
    """The trace's pod-type distribution (GPUs, share, CPU, memory, models), the target
    workload FGD measures fragmentation against."""
    counts: Counter[tuple] = Counter()
    for p in pods:
        s = p.shape
        counts[(s.gpus, s.milli, s.cpu, s.mem, tuple(sorted(p.models)))] += 1
    return WorkloadMix.from_counts(
        counts, MIX_TOP if top is None else top, MIX_COVERAGE if coverage is None else coverage
    )


def arrival_sequence(
    pods: Sequence[TracePod], capacity_milli: int, seed: int, ratio: float = INFLATION
) -> np.ndarray:
    """Indices into `pods`, in arrival order: the trace shuffled by `seed`, then topped up
    with pods drawn with replacement (or thinned by dropping pods at random) until the GPU
    requests are as close to `ratio` x capacity as they get without going over."""
    rng = np.random.default_rng(seed)
    demand = np.array([p.gpu_milli for p in pods], dtype=np.int64)
    order = rng.permutation(len(pods))
    target = ratio * capacity_milli
    total = int(demand.sum())
    if total > target:
        keep = np.ones(len(order), dtype=bool)
        for pos in rng.permutation(len(order)):
            if total <= target:
                break
            keep[pos] = False
            total -= int(demand[order[pos]])
        return order[keep]
    extra: list[int] = []
    while True:
        i = int(rng.integers(len(pods)))
        if total + demand[i] > target:
            break
        extra.append(i)
        total += int(demand[i])
    return np.concatenate([order, np.array(extra, dtype=np.int64)])


def make_scorer(policy: str, pods: Sequence[TracePod], seed: int) -> NodeScorer:
    if policy == "gpufair":
        return Fragmentation(workload_mix(pods))
    if policy == "fgd":  # the paper's objective (growth of fragmentation) on the same mix
        return Fragmentation(workload_mix(pods), objective="growth")
    if policy == Random.name:  # drawn from the run's seed, not the registry's fixed default
        return Random(np.random.default_rng([seed, 0x5EED]))
    if policy in POLICIES:
        return SCORERS[policy]()
    raise ValueError(f"unknown packing policy {policy!r}; use one of {', '.join(POLICIES)}")


def run_one(
    pods: Sequence[TracePod],
    nodes: Sequence[Node],
    policy: str,
    seed: int,
    ratio: float = INFLATION,
    measure_at: float = MEASURE_AT,
) -> dict:
    """One seed of one policy: place the arrival sequence, measure at `measure_at`."""
    config = PolicyConfig()
    state = ClusterState(nodes, config)
    capacity = int(state.usable.sum()) * FULL
    cache = ShapeCache(state, make_scorer(policy, pods, seed))
    sequence = arrival_sequence(pods, capacity, seed, ratio)
    masks: dict[frozenset[str], np.ndarray | None] = {}
    arrived = allocated = 0
    placed_pods = failed_pods = 0
    failed_by_size = {"shared": 0, "one": 0, "multi": 0}  # failed GPU requests, milli
    measured: dict | None = None
    # [arrived %, unallocated %] at 0% and when arrivals first reach each whole percent.
    curve: list[list[float]] = [[0, 100.0]]
    next_pct = 1
    started = time.perf_counter()
    for i in sequence.tolist():
        pod = pods[i]
        mask = masks.get(pod.models)
        if pod.models and pod.models not in masks:
            mask = masks[pod.models] = state.model_mask(pod.models)
        req = GangRequest((pod.shape,), mask, CLUSTER_LEVEL, None, config.whole_node_gpus)
        got = place_gang(state, cache, req)
        state.commit()
        arrived += pod.gpu_milli
        if got is None:
            failed_pods += 1
            size = "multi" if pod.shape.gpus > 1 else ("one" if pod.shape.gpus else "shared")
            failed_by_size[size] += pod.gpu_milli
        else:
            placed_pods += 1
            allocated += pod.gpu_milli
        while next_pct <= 100 * arrived / capacity:
            curve.append([next_pct, round(100.0 * (capacity - allocated) / capacity, 4)])
            next_pct += 1
        if measured is None and arrived >= measure_at * capacity:
            measured = {
                "unallocated_gpu_pct": 100.0 * (capacity - allocated) / capacity,
                "arrived_gpu_pct": 100.0 * arrived / capacity,
                "allocated_gpus": allocated / FULL,
                "arrived_pods": placed_pods + failed_pods,
                "failed_pods": failed_pods,
                # What the unallocated GPUs are made of: the requests that failed, by size.
                "failed_gpu_pct": {k: 100.0 * v / capacity for k, v in failed_by_size.items()},
            }
    if measured is None:  # the workload never reached the measuring point
        measured = {
            "unallocated_gpu_pct": math.nan,
            "arrived_gpu_pct": 100.0 * arrived / capacity,
            "allocated_gpus": allocated / FULL,
            "arrived_pods": placed_pods + failed_pods,
            "failed_pods": failed_pods,
            "failed_gpu_pct": {k: 100.0 * v / capacity for k, v in failed_by_size.items()},
        }
    return {
        "policy": policy,
        "seed": seed,
        **measured,
        "cluster_gpus": capacity / FULL,
        "pods_in_sequence": len(sequence),
        "final_arrived_gpu_pct": 100.0 * arrived / capacity,
        "final_unallocated_gpu_pct": 100.0 * (capacity - allocated) / capacity,
        "final_failed_pods": failed_pods,
        "curve": curve,
        "wall_s": time.perf_counter() - started,
    }


_WORKER: dict = {}


def _init_worker(pods_csv: str, nodes_csv: str) -> None:
    _WORKER["pods"] = read_pods(pods_csv)
    _WORKER["nodes"] = read_nodes(nodes_csv)


def _run_task(task: tuple[str, int, float, float]) -> dict:
    policy, seed, ratio, measure_at = task
    return run_one(_WORKER["pods"], _WORKER["nodes"], policy, seed, ratio, measure_at)


def run_packing(
    pods_csv: str | Path,
    nodes_csv: str | Path,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    policies: Sequence[str] = DEFAULT_POLICIES,
    out_dir: str | Path | None = None,
    *,
    ratio: float = INFLATION,
    measure_at: float = MEASURE_AT,
    jobs: int = 1,
    progress: bool = True,
) -> dict:
    """Run every policy on every seed. Returns {policy: document}; with `out_dir`, writes
    each document to `out_dir/<policy>/packing.json`. A document holds the seeds, the mean
    `unallocated_gpu_pct` over them and, under `runs`, one record per seed (its `seed`,
    `unallocated_gpu_pct`, failed pods, the curve up to the inflation ratio, ...)."""
    for p in policies:
        if p not in POLICIES:
            raise ValueError(f"unknown packing policy {p!r}; use one of {', '.join(POLICIES)}")
    if not seeds:
        raise ValueError("no seeds given")
    if not 0 < measure_at <= ratio:
        raise ValueError(f"measure_at {measure_at} must be above 0 and at most the inflation ratio {ratio}")
    pods_csv, nodes_csv = str(pods_csv), str(nodes_csv)
    tasks = [(p, int(s), ratio, measure_at) for p in policies for s in seeds]
    results: list[dict] = []
    bar = tqdm(total=len(tasks), desc="packing", unit="run", disable=not progress, file=sys.stderr)
    if jobs <= 1 or len(tasks) == 1:
        _init_worker(pods_csv, nodes_csv)
        for t in tasks:
            bar.set_postfix_str(f"{t[0]} seed {t[1]}")
            results.append(_run_task(t))
            bar.update()
    else:
        with ProcessPoolExecutor(
            max_workers=min(jobs, len(tasks)), initializer=_init_worker, initargs=(pods_csv, nodes_csv)
        ) as pool:
            for r in pool.map(_run_task, tasks):
                results.append(r)
                bar.set_postfix_str(f"{r['policy']} seed {r['seed']}")
                bar.update()
    bar.close()
    paper = Path(pods_csv).name == PAPER_DEFAULT_TRACE
    summary: dict[str, dict] = {}
    for policy in policies:
        runs = sorted((r for r in results if r["policy"] == policy), key=lambda r: r["seed"])
        values = np.array([r["unallocated_gpu_pct"] for r in runs], dtype=np.float64)
        doc = {
            "experiment": "packing",
            "policy": policy,
            "scorer": _scorer_name(policy),
            "trace": pods_csv,
            "nodes": nodes_csv,
            "inflation_ratio": ratio,
            "measured_at_arrived_pct": 100.0 * measure_at,
            "seeds": [r["seed"] for r in runs],
            "unallocated_gpu_pct": float(np.mean(values)),  # mean over the seeds
            "unallocated_gpu_pct_std": float(np.std(values)),
            "runs": runs,
        }
        if paper and policy in PAPER_RESULTS:
            doc["paper_policy"], doc["paper_unallocated_gpu_pct"] = PAPER_RESULTS[policy]
        summary[policy] = doc
    if out_dir is not None:
        for policy, doc in summary.items():
            target = Path(out_dir) / policy
            target.mkdir(parents=True, exist_ok=True)
            (target / "packing.json").write_text(json.dumps(_no_nan(doc), indent=1) + "\n")
    return summary


def _no_nan(value):
    """NaN (a run that never reached the measuring point) as JSON null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def _scorer_name(policy: str) -> str:
    return {"gpufair": "fragmentation", "fgd": "fragmentation/growth"}.get(policy, policy)


def format_table(summary: dict, trace: str = "") -> str:
    """Mean and per-seed unallocated GPU % per policy, with the paper's numbers beside."""
    paper = Path(trace).name == PAPER_DEFAULT_TRACE
    policies = list(summary)
    seeds = summary[policies[0]]["seeds"]
    head = f"{'policy':<13}{'scorer':<22}{'mean %':>8}{'multi %':>8}"
    if paper:
        head += f"{'paper %':>9}  {'(as)':<11}"
    head += "".join(f"{s:>7}" for s in seeds)
    lines = ["unallocated GPU % when arrived GPU requests reach 100% of capacity", head]
    for p in policies:
        doc = summary[p]
        multi = float(np.mean([r["failed_gpu_pct"]["multi"] for r in doc["runs"]]))
        line = f"{p:<13}{doc['scorer']:<22}{doc['unallocated_gpu_pct']:>8.2f}{multi:>8.2f}"
        if paper:
            if p in PAPER_RESULTS:
                name, value = PAPER_RESULTS[p]
                line += f"{value:>9.2f}  {name:<11}"
            else:
                line += f"{'-':>9}  {'':<11}"
        line += "".join(f"{r['unallocated_gpu_pct']:>7.2f}" for r in doc["runs"])
        lines.append(line)
    lines.append("multi %: of it, GPUs asked for by multi-GPU pods that were left waiting (mean)")
    if paper:
        lines.append("paper %: the FGD authors' simulator on this trace, mean of seeds 42-51 (ATC'23)")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def parse_seeds(text: str) -> list[int]:
    """'42', '42-51' or '42,45,50' (ranges and lists may be mixed); seeds are >= 0."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise argparse.ArgumentTypeError(f"bad seeds {text!r}: use e.g. 42, 42-51 or 42,43")
        lo = int(m.group(1))
        seeds.extend(range(lo, int(m.group(2) or lo) + 1))
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return seeds


def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown policy {', '.join(bad) or text!r}; use {', '.join(POLICIES)}"
        )
    return names


def _add(parser: argparse.ArgumentParser, *flags: str, **kw) -> None:
    """Add an option unless the parser already has it (shared with other experiments)."""
    if any(f in parser._option_string_actions for f in flags):
        return
    parser.add_argument(*flags, **kw)


def add_packing_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `gpufair simulate --experiment packing` reads."""
    _add(
        parser,
        "--trace",
        help="openb pod list CSV (name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,...)",
    )
    _add(parser, "--nodes", help="openb node list CSV (sn,cpu_milli,memory_mib,gpu,model)")
    _add(
        parser,
        "--seed",
        dest="seed",
        default=None,
        help="seed(s): 42, 42-51 or 42,43 (default: 42-51, the paper's)",
    )
    _add(
        parser,
        "--policies",
        default=",".join(DEFAULT_POLICIES),
        help=f"comma-separated, of {', '.join(POLICIES)} (default: %(default)s)",
    )
    _add(
        parser,
        "--out",
        default="results/packing",
        help="writes OUT/<policy>/packing.json (default: %(default)s)",
    )
    _add(
        parser, "--inflation", type=float, default=INFLATION, help="workload size as a share of cluster GPUs"
    )
    _add(parser, "--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    _add(parser, "--no-progress", action="store_true", help="no progress bar")


def packing_command(args: argparse.Namespace) -> int:
    """Run the experiment from parsed arguments; prints the side-by-side table."""
    trace = getattr(args, "trace", None)
    nodes = getattr(args, "nodes", None)
    if not trace or not nodes:
        print(
            "packing: --trace and --nodes are required (openb pod list and node list CSVs)", file=sys.stderr
        )
        return 2
    try:
        seed_arg = getattr(args, "seed", None)
        seeds = list(DEFAULT_SEEDS) if seed_arg in (None, "") else _seeds_of(seed_arg)
        policies = parse_policies(str(getattr(args, "policies", ",".join(DEFAULT_POLICIES))))
    except argparse.ArgumentTypeError as exc:
        print(f"packing: {exc}", file=sys.stderr)
        return 2
    jobs = getattr(args, "jobs", None) or os.cpu_count() or 1
    out = getattr(args, "out", None) or "results/packing"
    started = time.perf_counter()
    try:
        summary = run_packing(
            trace,
            nodes,
            seeds,
            policies,
            out,
            ratio=float(getattr(args, "inflation", INFLATION) or INFLATION),
            jobs=jobs,
            progress=not getattr(args, "no_progress", False),
        )
    except (OSError, PackingInputError, ValueError) as exc:
        print(f"packing: {exc}", file=sys.stderr)
        return 1
    print(format_table(summary, trace))
    took = time.perf_counter() - started
    print(f"wrote {out}/<policy>/packing.json for {', '.join(policies)} in {took:.1f} s")
    return 0


def _seeds_of(value: object) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    return parse_seeds(str(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.packing", description=__doc__.split("\n")[0])
    add_packing_arguments(parser)
    return packing_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
