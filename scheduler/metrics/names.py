"""Every gpufair metric, once: name, type, help, labels, buckets.

The live daemon (`scheduler.metrics.live`), the simulator's OpenMetrics export
(`simulator.openmetrics`), the Grafana dashboards and the alert rules all take names
from here, so a replay loads into the same dashboards as the cluster. Base units in
names (`_seconds`, `_gpus`, `_gpu_hours`); teams and tiers are labels, never names.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "gpufair_"
TIERS = ("production", "training", "scavenger")

# Queue waits run from seconds (an idle cluster) to days (a team over budget).
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)
CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family. `name` is the family name (a counter's samples end in `_total`)."""

    name: str
    kind: str  # 'gauge', 'counter' or 'histogram'
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def sample(self) -> str:
        """The name queries use: `<name>_total` for counters, `<name>` otherwise."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


T, TT = ("team",), ("team", "tier")


def _m(name: str, kind: str, labels: tuple[str, ...], help: str, buckets: tuple = ()) -> MetricSpec:
    return MetricSpec(name, kind, help, labels, buckets)


TEAM_ALLOCATED = _m(
    "gpufair_team_allocated_gpus", "gauge", TT, "GPUs the team's running pods hold, by the tier they run in"
)
TEAM_FAIR_SHARE = _m(
    "gpufair_team_fair_share_gpus", "gauge", T, "The team's weighted max-min fair share of training GPUs"
)
TEAM_DEMAND = _m(
    "gpufair_team_demand_gpus", "gauge", T, "GPUs the team's running and waiting gangs ask for, all tiers"
)
TEAM_WEIGHT = _m("gpufair_team_weight", "gauge", T, "The team's fair-share weight")
TEAM_FACTOR = _m(
    "gpufair_team_fairshare_factor", "gauge", T, "The team's usage factor 2^(-U/S) (1: no recent use)"
)
TEAM_PENDING_PODS = _m("gpufair_team_pending_pods", "gauge", T, "Pods of the team waiting for GPUs")
TEAM_GPU_HOURS = _m(
    "gpufair_team_gpu_hours_used", "counter", TT, "GPU-hours charged to the team by the ledger, by tier"
)
TEAM_BUDGET = _m(
    "gpufair_team_budget_gpu_hours", "gauge", T, "The team's GPU-hour budget per period (teams with one)"
)
TEAM_BUDGET_USED = _m(
    "gpufair_team_budget_used_gpu_hours", "gauge", T, "GPU-hours the team used in its budget period"
)
TEAM_BUDGET_LEFT = _m(
    "gpufair_team_budget_left_gpu_hours", "gauge", T, "GPU-hours left in the team's budget period"
)
TEAM_BUDGET_RESET = _m(
    "gpufair_team_budget_reset_timestamp_seconds", "gauge", T, "When the team's budget period ends"
)
TEAM_IDLE = _m(
    "gpufair_team_idle_allocated_gpus", "gauge", T, "GPUs allocated to the team that telemetry reports idle"
)
# The team tree as labels: every team quantity keeps one name (a group's series are its
# subtree's, under its own name); queries join this for `parent` and `path` (a subtree
# is path=~"org/dept.*").
TEAM_INFO = _m(
    "gpufair_team_info", "gauge", ("team", "parent", "path"), "1 per team: its parent and path in the tree"
)
QUEUE_WAIT = _m(
    "gpufair_queue_wait_seconds", "histogram", TT, "Time from a gang's submission to its start", WAIT_BUCKETS
)
PREEMPTIONS = _m(
    "gpufair_preemptions", "counter", ("team", "tier", "kind"), "Gangs preempted: victim team, tier; kind"
)
LOST_GPU_HOURS = _m(
    "gpufair_preemption_lost_gpu_hours", "counter", TT, "GPU-hours of work lost to preemption"
)
CYCLE_DURATION = _m(
    "gpufair_cycle_duration_seconds", "histogram", (), "Wall time of one decision cycle", CYCLE_BUCKETS
)
LAST_CYCLE = _m("gpufair_last_cycle_timestamp_seconds", "gauge", (), "When the last decision cycle ended")
BINDS = _m("gpufair_binds", "counter", ("result",), "Pod binds by result (ok, conflict, error)")
EVICTIONS = _m(
    "gpufair_evictions", "counter", ("result",), "Pod evictions by result (ok, pdb_blocked, conflict, error)"
)
JAIN = _m("gpufair_jain_index", "gauge", (), "Jain's index of allocated over entitled GPUs (1: fair)")
HEALTHY_GPUS = _m("gpufair_cluster_healthy_gpus", "gauge", (), "Healthy GPUs in the cluster")
ALLOCATED_GPUS = _m("gpufair_cluster_allocated_gpus", "gauge", (), "GPUs held by running pods, all teams")
FRAGMENTED_GPUS = _m("gpufair_cluster_fragmented_gpus", "gauge", (), "Free GPUs too small for a waiting pod")
LEADER = _m("gpufair_leader", "gauge", (), "1 while this replica holds the leader lease, else 0")
TELEMETRY_STALE = _m(
    "gpufair_telemetry_stale_nodes",
    "gauge",
    (),
    "Nodes whose agent has not reported within the stale timeout",
)
TELEMETRY_UNHEALTHY = _m(
    "gpufair_telemetry_unhealthy_gpus", "gauge", (), "GPUs the node agents report unhealthy (kept out of use)"
)
TELEMETRY_DROPPED = _m(
    "gpufair_telemetry_dropped_messages", "counter", ("reason",), "Telemetry messages refused, by reason"
)
HOOK_FAILURES = _m(
    "gpufair_hook_failures",
    "counter",
    ("hook",),
    "Failures of a part of the daemon's hooks (metrics, ledger, telemetry), which the others outlive",
)

ALL: tuple[MetricSpec, ...] = (
    TEAM_ALLOCATED, TEAM_FAIR_SHARE, TEAM_DEMAND, TEAM_WEIGHT, TEAM_FACTOR, TEAM_PENDING_PODS, TEAM_GPU_HOURS,
    TEAM_BUDGET, TEAM_BUDGET_USED, TEAM_BUDGET_LEFT, TEAM_BUDGET_RESET, TEAM_IDLE, TEAM_INFO, QUEUE_WAIT,
    PREEMPTIONS,
    LOST_GPU_HOURS, CYCLE_DURATION, LAST_CYCLE, BINDS, EVICTIONS, JAIN, HEALTHY_GPUS, ALLOCATED_GPUS,
    FRAGMENTED_GPUS, LEADER, TELEMETRY_STALE, TELEMETRY_UNHEALTHY, TELEMETRY_DROPPED, HOOK_FAILURES,
)  # fmt: skip
BY_NAME = {m.name: m for m in ALL}
