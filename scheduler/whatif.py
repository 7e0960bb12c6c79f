"""What-if on the cluster's own history: the ledger's gangs replayed under the live policy and
under a proposed one, side by side.

The history comes from the ledger (`scheduler.ledger.trace.history_trace`: gangs submitted
since a date, durations reconstructed from their runs, the node inventory as a cluster). Both
replays use the same trace and cluster; only the policy settings and the teams differ. The
comparison per team: waits p50/p95/p99, GPU-hours against the entitled share, budget burn,
preemptions and the GPU-hours they lost; for the cluster: utilisation and Jain's index. The
largest changes are said in words, biggest first.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scheduler.core import PolicyConfig, Team
from scheduler.ledger.trace import HistoryTrace
from simulator.engine import Replay
from simulator.latency import Latency
from simulator.model import RunResult, Trace
from simulator.summary import write_outputs
from simulator.teams import team_of

LIVE, PROPOSED = "live", "proposed"
# A change is worth a line when it moves a figure by this much, relatively and absolutely.
MIN_RELATIVE = 0.10
MIN_WAIT_S = 60.0
MIN_GPU_HOURS = 1.0


@dataclass(frozen=True, slots=True)
class Scenario:
    """One side of the comparison: policy settings and teams."""

    name: str
    policy: PolicyConfig
    teams: tuple[Team, ...]


@dataclass(frozen=True, slots=True)
class Comparison:
    results: dict[str, RunResult]
    summaries: dict[str, dict[str, Any]]
    teams: dict[str, dict[str, dict[str, Any]]]  # scenario -> team -> figures
    changes: tuple[str, ...]
    report: Path | None = None


def _resolve(trace: Trace, teams: tuple[Team, ...]) -> Trace:
    jobs = tuple(replace(j, team=team_of(j.team, teams)) for j in trace.jobs)
    return replace(trace, jobs=jobs)


def replay(
    history: HistoryTrace, scenario: Scenario, policy: str = "gpufair", latency: Latency | None = None
) -> RunResult:
    """The history's trace replayed on its cluster under one scenario (`latency`: the
    simulator's model of the live delays, the same on both sides)."""
    trace = _resolve(history.trace, scenario.teams)
    result = Replay(
        trace, history.nodes, scenario.teams, policy, scenario.policy, latency=latency or Latency()
    ).run()
    return replace(result, policy=scenario.name)


def team_figures(result: RunResult, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per team: the summary's waits, GPU-hours and budget use, with share vs entitlement,
    preemptions and lost GPU-hours from the job records."""
    preempted: dict[str, int] = defaultdict(int)
    lost: dict[str, float] = defaultdict(float)
    for j in result.jobs:
        preempted[j.team] += j.preemptions
        lost[j.team] += j.lost_gpu_hours
    out = {}
    for name, t in summary["teams"].items():
        entitled = t.get("entitled_gpu_hours") or 0.0
        out[name] = {
            "jobs": t["jobs"],
            "never_started": t["never_started"],
            "wait_p50_s": t["wait_p50_s"],
            "wait_p95_s": t["wait_p95_s"],
            "wait_p99_s": t["wait_p99_s"],
            "gpu_hours": t["gpu_hours"],
            "entitled_gpu_hours": entitled,
            "share_vs_entitlement": t["gpu_hours"] / entitled if entitled > 0 else None,
            "budget_gpu_hours": t["budget_gpu_hours"],
            "budget_used_gpu_hours": t["budget_used_gpu_hours"],
            "preemptions": preempted[name],
            "lost_gpu_hours": lost[name],
        }
    return out


def _hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _moved(before: float | None, after: float | None, floor: float) -> float | None:
    """The relative change, when it is big enough to say (None otherwise)."""
    if before is None or after is None:
        return None
    delta = after - before
    if abs(delta) < floor:
        return None
    rel = delta / before if before else math.inf
    return rel if abs(rel) >= MIN_RELATIVE else None


def largest_changes(
    live: dict[str, dict[str, Any]], proposed: dict[str, dict[str, Any]], limit: int = 8
) -> tuple[str, ...]:
    """The biggest per-team changes from live to proposed, in words, biggest first."""
    found: list[tuple[float, str]] = []
    for team in sorted(set(live) & set(proposed)):
        a, b = live[team], proposed[team]
        for key, label in (("wait_p95_s", "p95 wait"), ("wait_p50_s", "median wait")):
            rel = _moved(a[key], b[key], MIN_WAIT_S)
            if rel is not None:
                word = "longer" if rel > 0 else "shorter"
                pct = "new" if math.isinf(rel) else f"{abs(rel):.0%} {word}"
                found.append((abs(rel), f"{team}: {label} {_hours(a[key])} -> {_hours(b[key])} ({pct})"))
        rel = _moved(a["gpu_hours"], b["gpu_hours"], MIN_GPU_HOURS)
        if rel is not None:
            found.append(
                (abs(rel), f"{team}: {a['gpu_hours']:.1f} -> {b['gpu_hours']:.1f} GPU-hours ({rel:+.0%})")
            )
        if a["preemptions"] != b["preemptions"]:
            base = max(1, a["preemptions"])
            found.append(
                (
                    abs(b["preemptions"] - a["preemptions"]) / base,
                    f"{team}: {a['preemptions']} -> {b['preemptions']} preemptions "
                    f"({a['lost_gpu_hours']:.1f} -> {b['lost_gpu_hours']:.1f} GPU-hours lost)",
                )
            )
        if a["never_started"] != b["never_started"]:
            found.append(
                (
                    math.inf,
                    f"{team}: {a['never_started']} -> {b['never_started']} jobs that never start",
                )
            )
    found.sort(key=lambda x: -x[0])
    return tuple(line for _, line in found[:limit])


def _team_table(teams: dict[str, dict[str, dict[str, Any]]]) -> str:
    cols = (
        ("wait p50", "wait_p50_s", _hours),
        ("wait p95", "wait_p95_s", _hours),
        ("wait p99", "wait_p99_s", _hours),
        ("GPU-h", "gpu_hours", lambda v: f"{v:.1f}"),
        ("share / entitled", "share_vs_entitlement", lambda v: f"{v:.2f}"),
        ("budget used GPU-h", "budget_used_gpu_hours", lambda v: f"{v:.1f}"),
        ("preemptions", "preemptions", str),
        ("lost GPU-h", "lost_gpu_hours", lambda v: f"{v:.1f}"),
    )
    head = "".join(f"<th>{html.escape(c)} {s}</th>" for c, _, _ in cols for s in (LIVE, PROPOSED))
    rows = []
    for team in sorted(teams[LIVE]):
        cells = []
        for _, key, fmt in cols:
            for side in (LIVE, PROPOSED):
                v = teams[side].get(team, {}).get(key)
                cells.append("-" if v is None else html.escape(fmt(v)))
        rows.append(f"<tr><td>{html.escape(team)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr><th>team</th>{head}</tr>{''.join(rows)}</table>"


def compare(
    history: HistoryTrace,
    live: Scenario,
    proposed: Scenario,
    out: Path | None = None,
    latency: Latency | None = None,
) -> Comparison:
    """Both replays; with `out`, their summaries and one HTML report (`out/report.html`)."""
    results = {s.name: replay(history, s, latency=latency) for s in (live, proposed)}
    summaries = {}
    for name, result in results.items():
        if out is not None:
            summaries[name] = write_outputs(result, out)
        else:
            from simulator.summary import summarize

            summaries[name] = summarize(result)
    teams = {name: team_figures(results[name], summaries[name]) for name in results}
    changes = largest_changes(teams[LIVE], teams[PROPOSED])
    report = None
    if out is not None:
        from simulator.report import write_report

        intro = (
            f"<h2>What-if: live vs proposed</h2><p>{len(history.trace.jobs):,} gangs from the ledger"
            f" ({len(history.left_out):,} left out: they never started)</p><h3>Largest changes</h3><ul>"
            + "".join(f"<li>{html.escape(c)}</li>" for c in changes or ("no change worth a line",))
            + "</ul><h3>Per team</h3>"
            + _team_table(teams)
        )
        report = write_report(
            [results[LIVE], results[PROPOSED]], [summaries[LIVE], summaries[PROPOSED]], out, intro_html=intro
        )
    return Comparison(results, summaries, teams, changes, report)
