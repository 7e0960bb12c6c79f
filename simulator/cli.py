"""`gpufair simulate`: replay a trace under one or more policies and write the report."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from scheduler.core import InvalidInput, PolicyConfig, load_policy
from scheduler.core.policies import POLICIES
from simulator.cluster_spec import nodes_for_gpus, nodes_from_csv, nodes_from_spec
from simulator.engine import FailureModel, Replay
from simulator.latency import Latency
from simulator.model import Trace
from simulator.summary import write_outputs
from simulator.teams import team_of, teams_for_trace
from simulator.traces import FORMATS, TraceOptions, read_trace
from simulator.traces.common import SkippedRow

SHOWN_SKIPPED = 5  # skipped rows printed; all of them go to OUT/skipped.csv
SKIPPED_COLUMNS = ("file", "row", "kind", "column", "problem", "fix")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment",
        choices=("replay", "packing"),
        default="replay",
        help="replay (default) or the FGD static packing experiment",
    )
    parser.add_argument("--trace", required=True, help="trace file")
    parser.add_argument(
        "--format", choices=sorted(FORMATS), default=None, help="trace format (required for replay)"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--nodes", help="node list CSV (openb or alibaba-spot)")
    where.add_argument("--cluster", help="cluster spec YAML")
    where.add_argument("--gpus", type=int, help="N GPUs as N/8 nodes of 8 GPUs")
    parser.add_argument("--teams", help="GPUTeam YAML; default: one team per trace tenant, equal weights")
    parser.add_argument(
        "--policy",
        default=None,
        help=f"comma-separated policies from {', '.join(POLICIES)} (default: all for "
        "replay, gpufair and the baselines for packing)",
    )
    parser.add_argument("--policy-file", help="policy settings YAML (deploy/examples/policy.yaml)")
    parser.add_argument("--seed", default="0", help="seed (packing: 42, 42-51 or 42,43)")
    parser.add_argument(
        "--out",
        default="sim-out",
        help="output folder; OUT/skipped.csv lists every trace row left out (file, row, column, "
        "problem, fix), header only when none was",
    )
    parser.add_argument(
        "--budget", type=float, default=None, help="GPU-hours per period for every team (without --teams)"
    )
    parser.add_argument("--budget-period", default="month", help="week, month or a duration such as 30d")
    parser.add_argument("--on-exhausted", default="scavenge", choices=("scavenge", "block"))
    parser.add_argument(
        "--mtbf-hours",
        type=float,
        default=None,
        help="mean time between whole-node failures, per node (default: no failures)",
    )
    parser.add_argument("--repair-hours", type=float, default=4.0, help="time to repair a failed node")
    add_latency_arguments(parser)
    parser.add_argument(
        "--openb-teams", type=int, default=1, help="openb has no tenants: spread pods over N teams"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad trace row (default: skip bad rows, print how many and the "
        f"first {SHOWN_SKIPPED}, and write them all to OUT/skipped.csv)",
    )
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N jobs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--openmetrics",
        metavar="DIR",
        default=None,
        help="also write DIR/<policy>/metrics.om: the daemon's metrics in virtual time "
        "(load with promtool tsdb create-blocks-from openmetrics)",
    )


def run(args: argparse.Namespace) -> int:
    if args.experiment == "packing":
        from simulator.packing import packing_command

        packing = argparse.Namespace(
            trace=args.trace,
            nodes=args.nodes,
            seed=None if args.seed == "0" else args.seed,
            policies=args.policy or "gpufair,best-fit,gpu-packing,dot-product,random",
            out=args.out,
            no_progress=args.no_progress,
        )
        return packing_command(packing)
    try:
        return _replay(args)
    except InvalidInput as exc:
        print(f"gpufair simulate: {exc}", file=sys.stderr)
        return 2


def _replay(args: argparse.Namespace) -> int:
    if args.format is None:
        raise InvalidInput("simulate", "--format", "missing", f"give one of {', '.join(sorted(FORMATS))}")
    config = load_policy(Path(args.policy_file).read_text()) if args.policy_file else PolicyConfig()
    policies = [p.strip() for p in (args.policy or ",".join(POLICIES)).split(",") if p.strip()]
    for p in policies:
        if p not in POLICIES:
            raise InvalidInput("simulate", "--policy", f"unknown policy {p!r}", f"use {', '.join(POLICIES)}")
    latency = latency_from_args(args)
    options = TraceOptions(strict=args.strict, openb_teams=args.openb_teams)
    started = time.perf_counter()
    trace = read_trace(args.trace, args.format, options=options)
    if args.limit is not None:
        trace = replace(trace, jobs=trace.jobs[: args.limit])
    print(
        f"read {len(trace.jobs):,} jobs from {args.trace} in {time.perf_counter() - started:.1f} s"
        + (f"; {len(trace.skipped):,} rows skipped" if trace.skipped else "")
    )
    _report_skipped(trace.skipped, Path(args.out))
    if args.nodes:
        nodes = nodes_from_csv(args.nodes)
    elif args.cluster:
        nodes = nodes_from_spec(args.cluster)
    elif args.gpus:
        nodes = nodes_for_gpus(args.gpus)
    else:
        raise InvalidInput("simulate", "--gpus", "no cluster given", "give --nodes, --cluster or --gpus")
    teams = teams_for_trace(
        (j.team for j in trace.jobs),
        Path(args.teams) if args.teams else None,
        args.budget,
        args.budget_period,
        args.on_exhausted,
    )
    trace = _resolve_teams(trace, teams)
    failures = FailureModel(args.mtbf_hours, args.repair_hours) if args.mtbf_hours else None
    out = Path(args.out)
    results, summaries = [], []
    for policy in policies:
        replay_class = Replay
        if args.openmetrics:
            from simulator.openmetrics import ObservedReplay as replay_class
        replay = replay_class(
            trace, nodes, teams, policy, config, seed=int(args.seed), failures=failures, latency=latency
        )
        with tqdm(
            total=len(trace.jobs) * 2,
            desc=f"{policy:>8}",
            unit="ev",
            disable=args.no_progress,
            mininterval=1.0,
        ) as bar:

            def advance(n: int, bar: tqdm = bar) -> None:
                # Restarts add completions the total did not count: grow it, never overflow.
                if bar.total is not None and bar.n + n > bar.total:
                    bar.total = bar.n + n
                bar.update(n)

            replay.progress = advance
            result = replay.run()
        results.append(result)
        summaries.append(write_outputs(result, out))
        if args.openmetrics:
            from simulator.openmetrics import ObservedReplay, lookback_note, write_openmetrics

            assert isinstance(replay, ObservedReplay)  # chosen above when --openmetrics is given
            path, step = write_openmetrics(result, replay.observations, Path(args.openmetrics), trace.epoch_s)
            print(f"openmetrics: {path}{lookback_note(step)}")
    from simulator.report import side_by_side_table, write_report  # matplotlib: only when replaying

    print(side_by_side_table(summaries))
    report = write_report(results, summaries, out)
    print(f"report: {report}")
    return 0


def add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    """The replay's latency model (simulator/latency.py), in trace seconds; all 0 by default:
    the instant replay."""
    parser.add_argument(
        "--cycle-interval",
        type=float,
        default=0.0,
        metavar="S",
        help="decide only at ticks every S trace seconds, as the daemon's cycle does (default 0: "
        "at every event)",
    )
    parser.add_argument(
        "--bind-latency",
        type=float,
        default=0.0,
        metavar="S",
        help="a decided gang's pods start S trace seconds after the decision (default 0)",
    )
    parser.add_argument(
        "--end-latency",
        type=float,
        default=0.0,
        metavar="S",
        help="a finished run's GPUs come back to the scheduler S trace seconds after its end (default 0)",
    )
    parser.add_argument(
        "--arrival-latency",
        type=float,
        default=0.0,
        metavar="S",
        help="a job reaches the scheduler S trace seconds after its submission (default 0)",
    )


def latency_from_args(args: argparse.Namespace, command: str = "simulate") -> Latency:
    """The Latency the flags of add_latency_arguments give; InvalidInput naming the flag."""
    flags = {
        "cycle_s": "--cycle-interval",
        "bind_s": "--bind-latency",
        "end_s": "--end-latency",
        "arrival_s": "--arrival-latency",
    }
    values = {key: getattr(args, flag[2:].replace("-", "_")) for key, flag in flags.items()}
    for key, value in values.items():
        if not value >= 0 or value == float("inf"):
            raise InvalidInput(command, flags[key], f"{value!r} is not >= 0", "give trace seconds")
    return Latency(**values)


def _report_skipped(skipped: tuple[str, ...], out: Path) -> None:
    """Prints the first skipped rows and writes all of them to out/skipped.csv, which is
    written even when empty so that one left by an earlier run never misleads."""
    listed = write_skipped(skipped, out / "skipped.csv")
    for line in skipped[:SHOWN_SKIPPED]:
        print(f"  skipped: {line}")
    if len(skipped) > SHOWN_SKIPPED:
        print(f"  ... {len(skipped) - SHOWN_SKIPPED:,} more; all {len(skipped):,} are listed in {listed}")
    elif skipped:
        print(f"  (listed in {listed})")


def write_skipped(skipped: tuple[str, ...], path: Path) -> Path:
    """One CSV row per skipped trace row: kind is "bad" (refused; --strict stops there) or
    "left out" (on purpose, e.g. a job that never ran)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # backslashreplace: a message is never worth a crash here, whatever text it quotes.
    with open(path, "w", newline="", encoding="utf-8", errors="backslashreplace") as handle:
        writer = csv.writer(handle)
        writer.writerow(SKIPPED_COLUMNS)
        for line in skipped:
            if isinstance(line, SkippedRow):
                kind = "bad" if line.bad else "left out"
                writer.writerow((line.path, line.row, kind, line.column, line.problem, line.fix))
            else:  # a plain message, from a reader that does not say its parts
                writer.writerow(("", "", "", "", line, ""))
    return path


def _resolve_teams(trace: Trace, teams: tuple) -> Trace:
    """Jobs name the trace's tenant; the replay needs the GPUTeam that tenant maps to."""
    cache: dict[str, str] = {}
    jobs = []
    for job in trace.jobs:
        team = cache.get(job.team)
        if team is None:
            team = cache[job.team] = team_of(job.team, teams)
        jobs.append(job if team == job.team else replace(job, team=team))
    return replace(trace, jobs=tuple(jobs))
