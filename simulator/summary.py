"""Summary figures of one replay (`summary.json`) and its per-job table (`jobs.csv`).

Every policy is measured with the same yardstick, whatever its own idea of a share is.
The definitions, exactly as computed:

Time. Samples are sorted by `t` (stable, so of several samples at one instant the
last one counts). Sample k is a step: it holds from `samples[k].t` to
`samples[k+1].t`, so its weight is `dt_k = t_{k+1} - t_k`. The last sample holds for
zero time: the replay span is `[samples[0].t, samples[-1].t]`. (The engine samples
after a decision cycle at most once per `sample_every_s` of virtual time, by default
the span / 20,000, and always after the last event; a sample stands for the state
until the next one.)
"Time-weighted mean of y" is `sum_k dt_k y_k / sum_k dt_k` over the samples where y_k
is defined; it is null when that weight is 0 (no samples, one sample, or y never
defined).

- `utilization`: time-weighted mean of `busy_gpus / healthy_gpus`; samples with no
  healthy GPU are left out.
- `fragmented_gpu_fraction`: time-weighted mean of `fragmented_gpus / healthy_gpus`,
  same samples.
- Entitled share `e_i(t)` of team i: `scheduler.core.fairshare.water_fill` of the
  sample's `healthy_gpus` over the teams' `sample.demand` (all tiers), with the weight,
  `guaranteedGPUs` floor and `maxGPUs` cap of `result.teams`; a team missing there has
  weight 1, no floor and no cap. Teams with no demand are entitled to 0. This is not
  the policy's own `fair_share` (which leaves production out).
- `jain_index`: at each sample take the teams with demand > 0 and entitled > 0, and
  `x_i = allocated_i / entitled_i` (not capped: a borrowing team has x_i > 1);
  `J = (sum x_i)^2 / (n * sum x_i^2)`. Samples with no such team, or where every x_i is
  0, are left out; `jain_index` is the time-weighted mean of J. 1.0 is perfectly fair,
  1/n is one team holding everything.
- `max_share_deviation`: for each team, the time-weighted mean of
  `|allocated_i - entitled_i| / healthy_gpus` over the samples with healthy GPUs (all
  of them, whether the team has demand or not); the largest of these over the teams. A
  fraction of the healthy cluster: 0.05 means the most mistreated (or most favoured)
  team was on average 5 % of the cluster away from its entitled share.
- `teams.<team>.gpu_hours`: `sum_k dt_k allocated_ik / 3600`;
  `entitled_gpu_hours`: `sum_k dt_k e_ik / 3600`.
- Waits: `wait_s = start_s - submit_s` of the jobs that started; `wait_p50_s`,
  `wait_p95_s`, `wait_p99_s` are `numpy.percentile` (linear) over them, null when no job
  started. `jobs` counts every job, `never_started` those that never started. Top
  level, per team and per tier (all of `simulator.model.TIERS` always appear).
- `preemptions`: sum of `JobRecord.preemptions`; `preempted_gpu_hours`: sum of
  `JobRecord.lost_gpu_hours`.
- `teams.<team>.budget_gpu_hours`: `result.budgets[team]` (null: no budget);
  `budget_used_gpu_hours`: the last sample's `budget_used[team]` (GPU-hours of the
  period current at the end), null when absent.

Teams listed are the union of the teams in `result.teams`, `result.budgets`, the jobs
and the samples. Undefined values are JSON null, never NaN.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.core.model import Team
from scheduler.core.teamtree import entitled_shares
from simulator.model import TIERS, JobRecord, RunResult, Sample

JOB_COLUMNS = (
    "job_id",
    "team",
    "tier",
    "gpus",
    "submit_s",
    "start_s",
    "end_s",
    "wait_s",
    "preemptions",
    "lost_gpu_hours",
)
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True, slots=True)
class Series:
    """A replay's samples as arrays: row k is sample k (sorted by time), column j team j.

    Built once per replay because the entitled shares (one water-fill per distinct
    demand) are the costly part and both the summary and the plots need them.
    """

    t: np.ndarray  # (n,) seconds from the trace's epoch
    dt: np.ndarray  # (n,) how long each sample holds; the last holds 0
    teams: tuple[str, ...]
    allocated: np.ndarray  # (n, m) GPUs
    entitled: np.ndarray  # (n, m) GPUs
    demand: np.ndarray  # (n, m) GPUs
    budget_used: np.ndarray  # (n, m) GPU-hours this period, NaN where a sample has none
    busy: np.ndarray  # (n,)
    fragmented: np.ndarray  # (n,)
    healthy: np.ndarray  # (n,)


def team_names(result: RunResult) -> tuple[str, ...]:
    """Every team the replay mentions anywhere, sorted, so no team silently drops out."""
    names: set[str] = {t.name for t in result.teams}
    names.update(result.budgets)
    names.update(j.team for j in result.jobs)
    for s in result.samples:
        names.update(s.allocated)
        names.update(s.demand)
        names.update(s.budget_used)
    return tuple(sorted(names))


def _column(samples: Sequence[Sample], field: str, name: str, missing: float) -> np.ndarray:
    return np.fromiter(
        (getattr(s, field).get(name, missing) for s in samples), dtype=float, count=len(samples)
    )


# Identity cache: summary and report both need a replay's Series; computing the entitled
# shares twice would double the slowest step. Entries check the samples did not change.
_CACHE: dict[int, tuple[RunResult, int, Sample | None, tuple[Team, ...], Series]] = {}
_CACHE_SIZE = 8


def series(result: RunResult) -> Series:
    """The samples of `result` as arrays, with the entitled share of every team."""
    last = result.samples[-1] if result.samples else None
    hit = _CACHE.get(id(result))
    if (
        hit is not None
        and hit[0] is result
        and hit[1] == len(result.samples)
        and hit[2] is last
        and hit[3] is result.teams
    ):
        return hit[4]
    built = _build_series(result)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[id(result)] = (result, len(result.samples), last, result.teams, built)
    return built


def _build_series(result: RunResult) -> Series:
    samples = list(result.samples)
    t = np.fromiter((s.t for s in samples), dtype=float, count=len(samples))
    if np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        samples = [samples[i] for i in order]
        t = t[order]
    n = len(samples)
    dt = np.zeros(n)
    if n > 1:
        dt[:-1] = np.diff(t)
    names = team_names(result)
    m = len(names)
    allocated = np.zeros((n, m))
    demand = np.zeros((n, m))
    budget_used = np.full((n, m), np.nan)
    for j, name in enumerate(names):
        allocated[:, j] = _column(samples, "allocated", name, 0.0)
        demand[:, j] = _column(samples, "demand", name, 0.0)
        budget_used[:, j] = _column(samples, "budget_used", name, math.nan)
    healthy = np.fromiter((s.healthy_gpus for s in samples), dtype=float, count=n)

    by_name = {team.name: team for team in result.teams}
    col = {name: j for j, name in enumerate(names)}
    entitled = np.zeros((n, m))
    memo: dict[tuple, list[tuple[int, float]]] = {}
    for k, s in enumerate(samples):
        key = (s.healthy_gpus, tuple((name, d) for name, d in s.demand.items() if d > 0))
        row = memo.get(key)
        if row is None:
            row = [(col[name], e) for name, e in entitled_shares(s.healthy_gpus, s.demand, by_name).items()]
            memo[key] = row
        for j, e in row:
            entitled[k, j] = e
    return Series(
        t=t,
        dt=dt,
        teams=names,
        allocated=allocated,
        entitled=entitled,
        demand=demand,
        budget_used=budget_used,
        busy=np.fromiter((s.busy_gpus for s in samples), dtype=float, count=n),
        fragmented=np.fromiter((s.fragmented_gpus for s in samples), dtype=float, count=n),
        healthy=healthy,
    )


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float | None:
    total = float(weights.sum())
    if not total > 0:
        return None
    return float((values * weights).sum() / total)


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def wait_stats(jobs: Iterable[JobRecord]) -> dict[str, Any]:
    """jobs, never_started and the wait percentiles (seconds) of those that started."""
    jobs = list(jobs)
    waits = np.array([j.wait_s for j in jobs if math.isfinite(j.start_s)], dtype=float)
    out: dict[str, Any] = {"jobs": len(jobs), "never_started": len(jobs) - len(waits)}
    for p in PERCENTILES:
        out[f"wait_p{p}_s"] = float(np.percentile(waits, p)) if len(waits) else None
    return out


def summarize(result: RunResult) -> dict[str, Any]:
    """The summary.json figures of one replay (see the module docstring)."""
    s = series(result)
    ok = s.healthy > 0
    w = np.where(ok, s.dt, 0.0)
    h = np.where(ok, s.healthy, 1.0)

    deviations = [
        _weighted_mean(np.abs(s.allocated[:, j] - s.entitled[:, j]) / h, w) for j in range(len(s.teams))
    ]
    defined = [d for d in deviations if d is not None]

    eligible = (s.demand > 0) & (s.entitled > 0)
    x = np.where(eligible, s.allocated / np.where(eligible, s.entitled, 1.0), 0.0)
    count = eligible.sum(axis=1)
    sum_x = x.sum(axis=1)
    sum_x2 = (x * x).sum(axis=1)
    jain_ok = (count >= 1) & (sum_x2 > 0)
    jain = np.where(jain_ok, sum_x**2 / np.where(jain_ok, count * sum_x2, 1.0), 0.0)

    overall = wait_stats(result.jobs)
    summary: dict[str, Any] = {
        "policy": result.policy,
        "trace": result.trace,
        "jobs": overall["jobs"],
        "never_started": overall["never_started"],
        "gpus": result.gpus,
        "wall_seconds": _finite(result.wall_seconds),
        "utilization": _weighted_mean(s.busy / h, w),
        "jain_index": _weighted_mean(jain, np.where(jain_ok, s.dt, 0.0)),
        "max_share_deviation": max(defined) if defined else None,
        "preemptions": int(sum(j.preemptions for j in result.jobs)),
        "preempted_gpu_hours": float(sum(j.lost_gpu_hours for j in result.jobs)),
        "fragmented_gpu_fraction": _weighted_mean(s.fragmented / h, w),
        **{f"wait_p{p}_s": overall[f"wait_p{p}_s"] for p in PERCENTILES},
    }

    by_team: dict[str, list[JobRecord]] = {name: [] for name in s.teams}
    by_tier: dict[str, list[JobRecord]] = {tier: [] for tier in TIERS}
    for job in result.jobs:
        by_team[job.team].append(job)
        by_tier.setdefault(job.tier, []).append(job)

    teams: dict[str, Any] = {}
    for j, name in enumerate(s.teams):
        used = s.budget_used[-1, j] if len(s.t) else math.nan
        budget = result.budgets.get(name)
        teams[name] = {
            **wait_stats(by_team[name]),
            "gpu_hours": float((s.dt * s.allocated[:, j]).sum() / 3600.0),
            "entitled_gpu_hours": float((s.dt * s.entitled[:, j]).sum() / 3600.0),
            "budget_gpu_hours": None if budget is None else _finite(float(budget)),
            "budget_used_gpu_hours": _finite(float(used)),
        }
    summary["teams"] = teams
    summary["tiers"] = {tier: wait_stats(jobs) for tier, jobs in by_tier.items()}
    return _json_safe(summary)


def _json_safe(value: Any) -> Any:
    """Non-finite floats become None, numpy scalars plain Python, recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _finite(float(value))
    return value


def _cell(value: float | int | str) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def write_jobs_csv(jobs: Iterable[JobRecord], path: Path) -> None:
    """One row per job; NaN (never started, never finished) is an empty cell."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(JOB_COLUMNS)
        for j in jobs:
            row = (
                j.job_id,
                j.team,
                j.tier,
                float(j.gpus),
                float(j.submit_s),
                float(j.start_s),
                float(j.end_s),
                float(j.wait_s),
                int(j.preemptions),
                float(j.lost_gpu_hours),
            )
            writer.writerow([_cell(v) for v in row])


def write_outputs(result: RunResult, out_dir: Path) -> dict[str, Any]:
    """Write `out_dir/<policy>/summary.json` and `jobs.csv`; return the summary."""
    summary = summarize(result)
    folder = Path(out_dir) / result.policy
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2, allow_nan=False)
    (folder / "summary.json").write_text(text + "\n", encoding="utf-8")
    write_jobs_csv(result.jobs, folder / "jobs.csv")
    return summary
