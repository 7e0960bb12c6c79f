"""The daemon's Prometheus metrics: one object, fed once per cycle and on every outcome.

Per-team gauges are set from the core's `TeamStatus`, so `/metrics` shows exactly what the
GPUTeam status shows; series of teams that disappear are removed, not left stale.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from scheduler.core.model import Decisions, Snapshot
from scheduler.metrics import names as n
from scheduler.metrics.fairness import ClusterView, cluster_view, jain_index

if TYPE_CHECKING:  # the ledger (SQLAlchemy) is not loaded for metrics alone
    from scheduler.ledger import Accrual

# Gauges set in full every cycle: a label set missing from a cycle is removed.
_PER_CYCLE = (
    n.TEAM_ALLOCATED, n.TEAM_FAIR_SHARE, n.TEAM_DEMAND, n.TEAM_WEIGHT, n.TEAM_FACTOR, n.TEAM_PENDING_PODS,
    n.TEAM_BUDGET, n.TEAM_BUDGET_USED, n.TEAM_BUDGET_LEFT, n.TEAM_BUDGET_RESET, n.TEAM_INFO,
)  # fmt: skip


def _make(spec: n.MetricSpec, registry: CollectorRegistry):
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    if spec.kind == "counter":
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)


class SchedulerMetrics:
    """All gpufair metrics in one registry (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._m = {spec.name: _make(spec, self.registry) for spec in n.ALL}
        self._seen: dict[str, set[tuple[str, ...]]] = {spec.name: set() for spec in _PER_CYCLE}
        self._m[n.LEADER.name].set(0)
        self._dropped_seen: dict[str, int] = {}

    def __getitem__(self, spec: n.MetricSpec):
        """The prometheus_client object of a metric, e.g. `metrics[names.JAIN]`."""
        return self._m[spec.name]

    # ------------------------------------------------------------------ per cycle

    def observe_cycle(
        self, decisions: Decisions, snapshot: Snapshot, cycle_seconds: float, at_s: float | None = None
    ) -> ClusterView:
        """Set every per-team and cluster gauge from one cycle; `at_s` is wall time (default now)."""
        view = cluster_view(snapshot, decisions)
        teams = {t.name: t for t in snapshot.teams}
        values: dict[str, dict[tuple[str, ...], float]] = {spec.name: {} for spec in _PER_CYCLE}
        for name, st in decisions.teams.items():
            alloc = values[n.TEAM_ALLOCATED.name]
            alloc[(name, "production")] = st.production_gpus
            alloc[(name, "training")] = st.allocated_gpus
            alloc[(name, "scavenger")] = st.scavenger_gpus
            values[n.TEAM_FAIR_SHARE.name][(name,)] = st.fair_share_gpus
            values[n.TEAM_DEMAND.name][(name,)] = view.demand.get(name, 0.0)
            values[n.TEAM_WEIGHT.name][(name,)] = st.weight
            values[n.TEAM_FACTOR.name][(name,)] = st.fairshare_factor
            values[n.TEAM_PENDING_PODS.name][(name,)] = st.pending_pods
            parent = teams[name].parent if name in teams else None
            values[n.TEAM_INFO.name][(name, parent or "", st.path or name)] = 1.0
            if st.budget_gpu_hours is not None:
                values[n.TEAM_BUDGET.name][(name,)] = st.budget_gpu_hours
                values[n.TEAM_BUDGET_USED.name][(name,)] = st.budget_used_gpu_hours
                values[n.TEAM_BUDGET_LEFT.name][(name,)] = st.budget_left_gpu_hours or 0.0
                if st.budget_resets_s is not None:
                    values[n.TEAM_BUDGET_RESET.name][(name,)] = st.budget_resets_s
        for metric, series in values.items():
            self._replace(metric, series)
        self._m[n.HEALTHY_GPUS.name].set(view.healthy_gpus)
        self._m[n.ALLOCATED_GPUS.name].set(view.allocated_gpus)
        self._m[n.FRAGMENTED_GPUS.name].set(view.fragmented_gpus)
        jain = jain_index(view.allocated, view.demand, view.healthy_gpus, teams)
        self._m[n.JAIN.name].set(float("nan") if jain is None else jain)
        self.observe_cycle_duration(cycle_seconds, at_s)
        return view

    def observe_cycle_duration(self, cycle_seconds: float, at_s: float | None = None) -> None:
        """Only the cycle's duration and end, for a cycle whose gauges are not refreshed."""
        self._m[n.CYCLE_DURATION.name].observe(cycle_seconds)
        self._m[n.LAST_CYCLE.name].set(time.time() if at_s is None else at_s)

    def _replace(self, metric: str, series: Mapping[tuple[str, ...], float]) -> None:
        gauge = self._m[metric]
        for labels, value in series.items():
            gauge.labels(*labels).set(value)
        for gone in self._seen[metric] - set(series):
            gauge.remove(*gone)
        self._seen[metric] = set(series)

    # ------------------------------------------------------------------ outcomes

    def observe_accrual(self, charged: Accrual | Mapping[tuple[str, str], float]) -> None:
        """GPU-seconds charged by the ledger, by (team, tier): a `ledger.Accrual` or a mapping."""
        seconds = charged if isinstance(charged, Mapping) else charged.gpu_seconds
        counter = self._m[n.TEAM_GPU_HOURS.name]
        for (team, tier), s in seconds.items():
            if s > 0:
                counter.labels(team, tier).inc(s / 3600.0)

    def observe_preemptions(self, preemptions: Iterable) -> None:
        """One per preempted gang (`ledger.Preemption`: team, tier, kind, lost_gpu_seconds)."""
        for p in preemptions:
            self._m[n.PREEMPTIONS.name].labels(p.team, p.tier, p.kind).inc()
            if p.lost_gpu_seconds > 0:
                self._m[n.LOST_GPU_HOURS.name].labels(p.team, p.tier).inc(p.lost_gpu_seconds / 3600.0)

    def observe_bind(self, result: str = "ok", count: int = 1) -> None:
        self._m[n.BINDS.name].labels(result).inc(count)

    def observe_eviction(self, result: str = "ok", count: int = 1) -> None:
        self._m[n.EVICTIONS.name].labels(result).inc(count)

    def observe_wait(self, team: str, tier: str, seconds: float) -> None:
        """A gang started `seconds` after it was submitted (observe once per gang, at its first start)."""
        self._m[n.QUEUE_WAIT.name].labels(team, tier).observe(max(0.0, seconds))

    def set_idle_gpus(self, team: str, gpus: float | None) -> None:
        """Allocated GPUs that telemetry sees idle; None removes the team's series."""
        gauge = self._m[n.TEAM_IDLE.name]
        if gpus is None:
            with contextlib.suppress(KeyError):
                gauge.remove(team)
        else:
            gauge.labels(team).set(gpus)

    def observe_telemetry(self, stale_nodes: int, unhealthy_gpus: int, dropped: Mapping[str, int]) -> None:
        """Node telemetry health; `dropped` is the running count of refused messages by reason."""
        self._m[n.TELEMETRY_STALE.name].set(stale_nodes)
        self._m[n.TELEMETRY_UNHEALTHY.name].set(unhealthy_gpus)
        seen = self._dropped_seen
        for reason, total in dropped.items():
            if total > seen.get(reason, 0):
                self._m[n.TELEMETRY_DROPPED.name].labels(reason).inc(total - seen.get(reason, 0))
                seen[reason] = total

    def observe_hook_failure(self, hook: str) -> None:
        self._m[n.HOOK_FAILURES.name].labels(hook).inc()

    def set_leader(self, leader: bool) -> None:
        self._m[n.LEADER.name].set(1 if leader else 0)

    def exposition(self, openmetrics: bool = False) -> bytes:
        return exposition(self.registry, openmetrics)


def exposition(registry: CollectorRegistry, openmetrics: bool = False) -> bytes:
    """The `/metrics` body: Prometheus text format (or OpenMetrics when asked)."""
    return generate_openmetrics(registry) if openmetrics else generate_latest(registry)
