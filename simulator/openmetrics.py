"""A replay's metrics as an OpenMetrics file, with the live daemon's names and virtual timestamps.

    gpufair simulate ... --openmetrics DIR      # writes DIR/<policy>/metrics.om
    promtool tsdb create-blocks-from openmetrics DIR/gpufair/metrics.om BLOCKS

Loaded into Prometheus, a replay shows on the same Grafana dashboards as the cluster
(names come from `scheduler.metrics.names`). Timestamps are the trace's epoch plus
virtual time (1970 for traces without dates; promtool accepts that).

Gauges are written on a regular grid, each point holding the last sample's value, so a
query at any instant finds a value; the grid step is 60 s, or coarser so no series gets
more than `max_points` points. A step above 5 minutes needs Prometheus started with
`--query.lookback-delta` of at least the step (the writer returns it).

Written: per team allocation by tier, fair share, demand, weight, pending pods, budget
(budget, used, left, reset), GPU-hours used, queue waits, preemptions and lost GPU-hours;
cluster healthy, allocated and fragmented GPUs; Jain's index; cycles (duration measured
in wall time, binds, evictions, last cycle), leader (always 1). Not written: the usage
factor and idle allocated GPUs (no telemetry in a replay). Preemptions caused by node
failures have `kind="node_failure"`.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.utils import floatToGoString

from scheduler.core.budget import period_bounds
from scheduler.metrics import names as n
from scheduler.metrics.fairness import jain_index
from simulator.engine import Replay
from simulator.model import RunResult

DEFAULT_STEP_S = 60.0
DEFAULT_MAX_POINTS = 2000
_Labels = tuple[tuple[str, str], ...]


@dataclass
class Observations:
    """What the metrics need beyond a RunResult's samples, recorded during the replay."""

    # Per sample (same order as RunResult.samples): GPUs by (team, tier) and pending pods by team.
    by_tier: list[dict[tuple[str, str], float]] = field(default_factory=list)
    pending_pods: list[dict[str, int]] = field(default_factory=list)
    # Events: (t, team, tier, kind, lost GPU-hours); (t, wall seconds, binds, evictions).
    preemptions: list[tuple[float, str, str, str, float]] = field(default_factory=list)
    cycles: list[tuple[float, float, int, int]] = field(default_factory=list)
    first_tier: dict[str, str] = field(default_factory=dict)  # gang -> tier of its first bind


class ObservedReplay(Replay):
    """A Replay that also records `observations` (the replay itself is unchanged)."""

    def _setup(self) -> None:
        super()._setup()
        self.observations = Observations()
        self._tier_of: dict[str, str] = {}
        self._kind_of: dict[str, str] = {}

    def _cycle(self, now: float) -> bool:
        started = time.perf_counter()
        evicted = super()._cycle(now)
        d = self.last_decisions
        self.observations.cycles.append((now, time.perf_counter() - started, len(d.binds), len(d.evictions)))
        return evicted

    def _apply(self, d, now: float) -> None:
        self._kind_of.update((e.gang, e.kind) for e in d.evictions)
        for b in d.binds:
            self._tier_of[b.gang] = b.tier.label
            self.observations.first_tier.setdefault(b.gang, b.tier.label)
        super()._apply(d, now)

    def _interrupt(self, state, now: float) -> None:
        gid = state.job.job_id
        before = state.record.lost_gpu_hours
        super()._interrupt(state, now)
        kind = self._kind_of.pop(gid, "node_failure")
        tier = self._tier_of.get(gid, state.job.tier)
        self.observations.preemptions.append(
            (now, state.job.team, tier, kind, state.record.lost_gpu_hours - before)
        )

    def _sample(self, now: float) -> None:
        count = len(self.samples)
        super()._sample(now)
        if len(self.samples) == count:
            return
        by_tier: dict[tuple[str, str], float] = defaultdict(float)
        for s in self.running.values():
            by_tier[(s.job.team, self._tier_of.get(s.job.job_id, s.job.tier))] += s.job.gpus
        pods: dict[str, int] = dict.fromkeys(self.team_names, 0)
        for s in self.pending.values():
            pods[s.job.team] += s.job.pods
        self.observations.by_tier.append(dict(by_tier))
        self.observations.pending_pods.append(pods)


# ---------------------------------------------------------------- writing


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    inner = ",".join(f'{k}="{esc(v)}"' for k, v in pairs)
    return f"{{{inner}}}" if inner else ""


def _num(x: float) -> str:
    return floatToGoString(x)


@dataclass
class _Family:
    spec: n.MetricSpec
    lines: list[str] = field(default_factory=list)

    def add(self, sample: str, labels: Iterable[tuple[str, str]], value: float, ts: float) -> None:
        self.lines.append(f"{sample}{_labels(labels)} {_num(value)} {ts:.3f}")


def grid(
    t0: float, t1: float, step_s: float = DEFAULT_STEP_S, max_points: int = DEFAULT_MAX_POINTS
) -> list[float]:
    """Grid points from t0 to t1 (both included), `step_s` apart or coarser (at most `max_points`)."""
    if t1 <= t0:
        return [t0]
    step = max(step_s, math.ceil((t1 - t0) / max(1, max_points - 1)))
    points = [t0 + k * step for k in range(int((t1 - t0) // step) + 1)]
    if points[-1] < t1:
        points.append(t1)
    return points


def _cumulative(events: list[tuple[float, float]], points: list[float]) -> list[float]:
    """Sum of event values with time <= each point (events sorted by time)."""
    out, total, i = [], 0.0, 0
    for p in points:
        while i < len(events) and events[i][0] <= p:
            total += events[i][1]
            i += 1
        out.append(total)
    return out


def openmetrics_text(
    result: RunResult,
    obs: Observations,
    epoch_s: float = 0.0,
    step_s: float = DEFAULT_STEP_S,
    max_points: int = DEFAULT_MAX_POINTS,
) -> tuple[str, float]:
    """The OpenMetrics text of one replay, and the grid step used (seconds)."""
    samples = result.samples
    if len(obs.by_tier) != len(samples):
        raise ValueError("observations do not match the samples: record them with ObservedReplay")
    if not samples:
        return "# EOF\n", step_s
    times = [s.t for s in samples]
    points = grid(times[0], times[-1], step_s, max_points)
    step = points[1] - points[0] if len(points) > 1 else step_s
    idx = [bisect.bisect_right(times, p) - 1 for p in points]  # the sample holding at each point
    ts = [epoch_s + p for p in points]
    teams_cfg = {t.name: t for t in result.teams}
    team_names = sorted(
        {*teams_cfg, *(j.team for j in result.jobs), *(t for s in samples for t in s.allocated)}
    )
    fam = {spec.name: _Family(spec) for spec in n.ALL}

    def _used(i: int, team: str) -> float:
        return samples[i].budget_used.get(team, 0.0)

    def gauge(spec: n.MetricSpec, labels: _Labels, value_at) -> None:
        for k, i in enumerate(idx):
            v = value_at(i)
            if v is not None and math.isfinite(v):
                fam[spec.name].add(spec.sample, labels, v, ts[k])

    tier_keys = sorted({key for row in obs.by_tier for key in row})
    for team, tier in tier_keys:
        key = (team, tier)
        gauge(n.TEAM_ALLOCATED, (("team", team), ("tier", tier)), lambda i, k=key: obs.by_tier[i].get(k, 0.0))
    for team in team_names:
        lab = (("team", team),)
        gauge(n.TEAM_FAIR_SHARE, lab, lambda i, t=team: samples[i].fair_share.get(t, 0.0))
        gauge(n.TEAM_DEMAND, lab, lambda i, t=team: samples[i].demand.get(t, 0.0))
        gauge(n.TEAM_PENDING_PODS, lab, lambda i, t=team: float(obs.pending_pods[i].get(t, 0)))
        cfg = teams_cfg.get(team)
        gauge(n.TEAM_WEIGHT, lab, lambda i, w=(cfg.weight if cfg else 1.0): w)
        path, up = [team], cfg.parent if cfg else None
        while up is not None and up not in path:
            path.append(up)
            up = teams_cfg[up].parent if up in teams_cfg else None
        info = (*lab, ("parent", (cfg.parent if cfg else None) or ""), ("path", "/".join(reversed(path))))
        gauge(n.TEAM_INFO, info, lambda i: 1.0)
        budget = result.budgets.get(team)
        if budget is not None:
            gauge(n.TEAM_BUDGET, lab, lambda i, b=budget: b)
            gauge(n.TEAM_BUDGET_USED, lab, lambda i, t=team: samples[i].budget_used.get(t))
            gauge(n.TEAM_BUDGET_LEFT, lab, lambda i, t=team, b=budget: max(0.0, b - _used(i, t)))
            if cfg is not None and cfg.budget is not None:
                gauge(
                    n.TEAM_BUDGET_RESET, lab, lambda i, b=cfg.budget: period_bounds(b, epoch_s + times[i])[1]
                )
    gauge(n.HEALTHY_GPUS, (), lambda i: samples[i].healthy_gpus)
    gauge(n.ALLOCATED_GPUS, (), lambda i: samples[i].busy_gpus)
    gauge(n.FRAGMENTED_GPUS, (), lambda i: samples[i].fragmented_gpus)
    gauge(
        n.JAIN,
        (),
        lambda i: jain_index(samples[i].allocated, samples[i].demand, samples[i].healthy_gpus, teams_cfg),
    )
    gauge(n.LEADER, (), lambda i: 1.0)

    # Counters: cumulative at each grid point, every label set from the first point on.
    def counter(spec: n.MetricSpec, labels: _Labels, events: list[tuple[float, float]]) -> None:
        for k, v in enumerate(_cumulative(sorted(events), points)):
            fam[spec.name].add(spec.sample, labels, v, ts[k])

    used: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for i in range(len(samples) - 1):
        dt = times[i + 1] - times[i]
        for key, gpus in obs.by_tier[i].items():
            if gpus and dt > 0:
                used[key].append((times[i + 1], gpus * dt / 3600.0))
    for key in sorted(used):
        counter(n.TEAM_GPU_HOURS, (("team", key[0]), ("tier", key[1])), used[key])
    pre: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    lost: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for t, team, tier, kind, hours in obs.preemptions:
        pre[(team, tier, kind)].append((t, 1.0))
        lost[(team, tier)].append((t, hours))
    for (team, tier, kind), ev in sorted(pre.items()):
        counter(n.PREEMPTIONS, (("team", team), ("tier", tier), ("kind", kind)), ev)
    for (team, tier), ev in sorted(lost.items()):
        counter(n.LOST_GPU_HOURS, (("team", team), ("tier", tier)), ev)
    counter(n.BINDS, (("result", "ok"),), [(t, float(b)) for t, _, b, _ in obs.cycles])
    counter(n.EVICTIONS, (("result", "ok"),), [(t, float(e)) for t, _, _, e in obs.cycles])
    cycle_times = [t for t, *_ in obs.cycles]
    for k, p in enumerate(points):
        j = bisect.bisect_right(cycle_times, p) - 1
        if j >= 0:
            fam[n.LAST_CYCLE.name].add(n.LAST_CYCLE.sample, (), epoch_s + cycle_times[j], ts[k])

    # Histograms.
    def histogram(spec: n.MetricSpec, labels: _Labels, events: list[tuple[float, float]]) -> None:
        events = sorted(events)
        for le in (*spec.buckets, math.inf):
            cum = _cumulative([(t, 1.0 if v <= le else 0.0) for t, v in events], points)
            for k, v in enumerate(cum):
                fam[spec.name].add(f"{spec.name}_bucket", (*labels, ("le", _num(le))), v, ts[k])
        for suffix, vals in (("_count", [(t, 1.0) for t, _ in events]), ("_sum", events)):
            for k, v in enumerate(_cumulative(vals, points)):
                fam[spec.name].add(f"{spec.name}{suffix}", labels, v, ts[k])

    waits: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for rec in result.jobs:
        if math.isfinite(rec.start_s):
            waits[(rec.team, obs.first_tier.get(rec.job_id, rec.tier))].append(
                (rec.start_s, rec.start_s - rec.submit_s)
            )
    for (team, tier), ev in sorted(waits.items()):
        histogram(n.QUEUE_WAIT, (("team", team), ("tier", tier)), ev)
    histogram(n.CYCLE_DURATION, (), [(t, wall) for t, wall, _, _ in obs.cycles])

    out: list[str] = []
    for spec in n.ALL:
        lines = fam[spec.name].lines
        if not lines:
            continue
        out.append(f"# TYPE {spec.name} {spec.kind}")
        out.append(f"# HELP {spec.name} {spec.help}")
        out.extend(lines)
    out.append("# EOF")
    return "\n".join(out) + "\n", step


def write_openmetrics(
    result: RunResult,
    obs: Observations,
    out_dir: Path,
    epoch_s: float = 0.0,
    step_s: float = DEFAULT_STEP_S,
    max_points: int = DEFAULT_MAX_POINTS,
) -> tuple[Path, float]:
    """Write `out_dir/<policy>/metrics.om`; returns the path and the grid step."""
    text, step = openmetrics_text(result, obs, epoch_s, step_s, max_points)
    folder = Path(out_dir) / result.policy
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metrics.om"
    path.write_text(text, encoding="utf-8")
    return path, step


def lookback_note(step: float) -> str:
    """What to tell Prometheus when the grid is coarser than its default 5-minute lookback."""
    if step <= 300:
        return ""
    return f"; grid step {step:g} s: start Prometheus with --query.lookback-delta={math.ceil(step)}s or more"
