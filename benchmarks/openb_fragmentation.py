"""Benchmark: the FGD packing experiment on every openb workload (issue 22).

Runs `simulator.packing` (the ATC'23 "Beware of Fragmentation" static protocol: the trace
shuffled and resampled to 130% of the cluster's GPUs, unallocated GPU % measured when the
arrived requests reach 100%, mean of seeds 42-51) for each `openb_pod_list_<variant>.csv`
in `--traces`, on `openb_node_list_gpu_node.csv`, for gpufair (the core's `fragmentation`
scorer), `fgd` (the same scorer with the paper's growth objective) and best-fit. Prints one
table beside the FGD authors' published figure where the paper has one, writes JSON (one
entry per variant, kept as each variant finishes so an interrupted run resumes) and a plot.

    python benchmarks/openb_fragmentation.py [--traces DIR] [--variants default,gpuspec33]
        [--policies gpufair,fgd,best-fit] [--seed 42-51] [--jobs N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulator.packing import DEFAULT_SEEDS, parse_policies, parse_seeds, run_packing  # noqa: E402

POLICIES = ("gpufair", "fgd", "best-fit")

# The paper's published unallocated GPU % at 100% arrived (100 minus the allocation ratio
# at 100% arrived, mean of seeds 42-51) for FGD and BestFit on the 17 workloads its
# figures cover, from the artifact's expected results (docs/fragmentation.md, Source).
PAPER: dict[str, tuple[float, float]] = {  # variant: (FGD, BestFit)
    "default": (4.77, 7.14),
    "gpuspec33": (12.16, 19.60),
    "gpuspec25": (6.09, 14.33),
    "gpuspec20": (5.34, 11.54),
    "gpuspec10": (5.34, 6.90),
    "gpushare100": (13.36, 15.38),
    "gpushare80": (10.92, 13.34),
    "gpushare60": (8.75, 10.94),
    "gpushare40": (6.04, 8.56),
    "multigpu50": (2.91, 4.38),
    "multigpu40": (3.09, 4.90),
    "multigpu30": (3.64, 5.43),
    "multigpu20": (4.47, 6.27),
    "cpu250": (6.80, 8.79),
    "cpu200": (5.18, 7.85),
    "cpu100": (4.79, 6.74),
    "cpu050": (5.00, 6.44),
}
PAPER_FGD = {v: fgd for v, (fgd, _) in PAPER.items()}


def variants_in(traces: Path, every: bool) -> list[str]:
    """The paper's 17 workloads (in PAPER's order); with `every`, the other pod lists after."""
    names = sorted(p.name[len("openb_pod_list_") : -len(".csv")] for p in traces.glob("openb_pod_list_*.csv"))
    paper = [v for v in PAPER if v in names]
    return paper + [v for v in names if v not in PAPER] if every else paper


def run_variant(traces: Path, variant: str, policy: str, seeds: list[int], jobs: int) -> dict:
    """One policy on one variant, every seed: the mean, its spread and the per-seed figures."""
    started = time.perf_counter()
    doc = run_packing(
        traces / f"openb_pod_list_{variant}.csv",
        traces / "openb_node_list_gpu_node.csv",
        seeds,
        [policy],
        None,
        jobs=jobs,
        progress=False,
    )[policy]
    runs = doc["runs"]
    return {
        "seeds": seeds,
        "unallocated_gpu_pct": doc["unallocated_gpu_pct"],
        "unallocated_gpu_pct_std": doc["unallocated_gpu_pct_std"],
        "multi_waiting_gpu_pct": sum(r["failed_gpu_pct"]["multi"] for r in runs) / len(runs),
        "per_seed": [r["unallocated_gpu_pct"] for r in runs],
        "wall_s": time.perf_counter() - started,
    }


def format_table(results: dict, policies: list[str]) -> str:
    head = f"{'variant':<12}" + "".join(f"{p:>10}" for p in policies)
    head += f"{'FGD paper':>11}{'BF paper':>10}{'gpufair-FGD':>13}"
    lines = ["unallocated GPU % at 100% arrived, mean of seeds (lower is better)", head]
    for variant, entry in results.items():
        got = entry
        line = f"{variant:<12}" + "".join(
            f"{got[p]['unallocated_gpu_pct']:>10.2f}" if p in got else f"{'-':>10}" for p in policies
        )
        if variant not in PAPER:
            line += f"{'-':>11}{'-':>10}{'-':>13}"
        else:
            fgd, best_fit = PAPER[variant]
            diff = got["gpufair"]["unallocated_gpu_pct"] - fgd if "gpufair" in got else float("nan")
            line += f"{fgd:>11.2f}{best_fit:>10.2f}{diff:>+13.2f}"
        lines.append(line)
    return "\n".join(lines)


def format_markdown(results: dict, policies: list[str]) -> str:
    """The same table for docs/fragmentation.md; a blank cell: not run."""
    head = ["workload", *policies, "FGD (paper)", "BestFit (paper)", "gpufair - FGD"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for variant, got in results.items():
        cells = [f"`{variant}`"]
        cells += [f"{got[p]['unallocated_gpu_pct']:.2f}" if p in got else "" for p in policies]
        if variant in PAPER:
            fgd, best_fit = PAPER[variant]
            diff = f"{got['gpufair']['unallocated_gpu_pct'] - fgd:+.2f}" if "gpufair" in got else ""
            cells += [f"{fgd:.2f}", f"{best_fit:.2f}", diff]
        else:
            cells += ["-", "-", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, policies: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results)
    x = np.arange(len(names))
    width = 0.8 / len(policies)
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(names)), 4.5))
    for i, p in enumerate(policies):
        values = [results[v].get(p, {}).get("unallocated_gpu_pct", np.nan) for v in names]
        ax.bar(x + (i - (len(policies) - 1) / 2) * width, values, width, label=p)
    paper_x = [i for i, v in enumerate(names) if v in PAPER_FGD]
    ax.scatter(paper_x, [PAPER_FGD[names[i]] for i in paper_x], marker="_", s=300, c="k", label="FGD (paper)")
    ax.set_xticks(x, names, rotation=60, ha="right")
    ax.set_ylabel("unallocated GPU % at 100% arrived")
    ax.set_title("openb packing (FGD ATC'23 protocol), mean of seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", default=str(ROOT.parent / "shared" / "traces" / "openb"))
    parser.add_argument("--variants", default="", help="comma-separated (default: the paper's 17)")
    parser.add_argument("--every", action="store_true", help="also the pod lists the paper does not show")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--seed", default="", help="42-51 (default), or a list")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes per variant")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args(argv)
    traces = Path(args.traces)
    if not (traces / "openb_node_list_gpu_node.csv").is_file():
        print(
            f"openb_fragmentation: no openb_node_list_gpu_node.csv in {traces}; pass --traces",
            file=sys.stderr,
        )
        return 2
    policies = parse_policies(args.policies)
    seeds = parse_seeds(args.seed) if args.seed else list(DEFAULT_SEEDS)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] or variants_in(traces, args.every)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "openb_fragmentation.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    # {variant: {policy: entry}}; kept as each (policy, variant) finishes, so a rerun resumes.
    results: dict = doc.get("variants", {})
    # Policy by policy, so an interrupted run has gpufair on every workload first.
    todo = [(p, v) for p in policies for v in variants if results.get(v, {}).get(p, {}).get("seeds") != seeds]
    for n, (policy, variant) in enumerate(todo, 1):
        print(f"[{n}/{len(todo)}] {policy} on {variant} ...", file=sys.stderr, flush=True)
        entry = results.setdefault(variant, {})[policy] = run_variant(
            traces, variant, policy, seeds, args.jobs
        )
        print(
            f"[{n}/{len(todo)}] {policy} on {variant}: {entry['unallocated_gpu_pct']:.2f} %"
            f" in {entry['wall_s']:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        doc = {"experiment": "openb packing, FGD ATC'23 protocol", "variants": results}
        path.write_text(json.dumps(doc, indent=1) + "\n")
    shown = {v: results[v] for v in variants if v in results}
    print(format_table(shown, policies))
    if args.markdown:
        print(format_markdown(shown, policies))
    plot(shown, policies, out / "openb_fragmentation.png")
    print(f"wrote {path} and {out / 'openb_fragmentation.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
