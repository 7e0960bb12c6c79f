"""The daemon's metrics object on a real registry, fed by the real decision core."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.core import Budget, Snapshot, Team, TeamUsage, decide
from scheduler.ledger import Accrual, Preemption
from scheduler.metrics import SchedulerMetrics, cluster_view, fragmented_gpus, jain_index
from scheduler.metrics import names as n
from scheduler.metrics.dashboards import metric_names
from simulator.model import RunResult, Sample
from simulator.summary import summarize
from tests.builders import NOW, gang, node, running

TEAMS = (
    Team("vision", budget=Budget(10.0, "month"), namespaces=("vision",)),
    Team("search", weight=2.0, namespaces=("search",)),
)


def scenario(teams=TEAMS, usage=None) -> Snapshot:
    gangs = (
        running(gang("v1", "vision", gpus=8), "n00", 60),
        running(gang("v2", "vision", gpus=4), "n01", 60),
        gang("s1", "search", gpus=2),
        gang("s2", "search", pods=2, gpus=8),
    )
    usage = usage if usage is not None else {"vision": TeamUsage(3600.0, 4.0), "search": TeamUsage(0.0, 0.0)}
    return Snapshot(NOW, (node("n00"), node("n01")), teams, gangs, usage)


def samples_of(metrics: SchedulerMetrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_observe_cycle_sets_every_team_gauge_from_the_core():
    snap = scenario()
    d = decide(snap)
    metrics = SchedulerMetrics()
    view = metrics.observe_cycle(d, snap, 0.012, at_s=NOW + 1)
    got = samples_of(metrics)
    for team, st in d.teams.items():
        t = (("team", team),)
        assert got[(n.TEAM_FAIR_SHARE.name, t)] == st.fair_share_gpus
        assert got[(n.TEAM_PENDING_PODS.name, t)] == st.pending_pods
        assert got[(n.TEAM_WEIGHT.name, t)] == st.weight
        assert got[(n.TEAM_ALLOCATED.name, (("team", team), ("tier", "training")))] == st.allocated_gpus
    # s1 (2 GPUs) binds this cycle: the view counts it as held; s2 (16) still waits.
    assert view.allocated == {"vision": 12.0, "search": 2.0}
    assert view.demand == {"vision": 12.0, "search": 18.0}
    assert got[(n.ALLOCATED_GPUS.name, ())] == 14.0
    assert got[(n.HEALTHY_GPUS.name, ())] == 16.0
    assert got[(n.FRAGMENTED_GPUS.name, ())] == 2.0  # 2 free GPUs, the smallest waiting pod needs 8
    assert got[(n.LAST_CYCLE.name, ())] == NOW + 1
    assert got[(f"{n.CYCLE_DURATION.name}_count", ())] == 1
    assert got[(n.TEAM_BUDGET.name, (("team", "vision"),))] == 10.0
    assert got[(n.TEAM_BUDGET_USED.name, (("team", "vision"),))] == 4.0
    assert got[(n.TEAM_BUDGET_LEFT.name, (("team", "vision"),))] == 6.0
    assert (n.TEAM_BUDGET.name, (("team", "search"),)) not in got  # no budget, no series
    # Entitled (water-fill of 16 over demands 12 and 18, weights 1 and 2): vision 5.33, search 10.67.
    x = [12 / (16 / 3), 2 / (32 / 3)]
    assert got[(n.JAIN.name, ())] == pytest.approx(sum(x) ** 2 / (2 * sum(v * v for v in x)))


def test_series_of_a_team_that_disappears_are_removed():
    metrics = SchedulerMetrics()
    snap = scenario()
    metrics.observe_cycle(decide(snap), snap, 0.01)
    assert (n.TEAM_WEIGHT.name, (("team", "search"),)) in samples_of(metrics)
    only_vision = Snapshot(NOW, snap.nodes, TEAMS[:1], snap.gangs[:2], snap.usage)
    metrics.observe_cycle(decide(only_vision), only_vision, 0.01)
    got = samples_of(metrics)
    assert not any(labels == (("team", "search"),) for _, labels in got)
    assert (n.TEAM_WEIGHT.name, (("team", "vision"),)) in got


def test_outcomes_counters_histograms_and_the_exposition_names():
    metrics = SchedulerMetrics()
    snap = scenario()
    metrics.observe_cycle(decide(snap), snap, 0.2)
    metrics.observe_accrual(Accrual(NOW, {("vision", "training"): 7200.0, ("search", "production"): 0.0}))
    metrics.observe_accrual({("vision", "training"): 3600.0})
    metrics.observe_preemptions([Preemption("v2", "vision", "training", "reclaim", 1800.0)])
    metrics.observe_bind("ok", 3)
    metrics.observe_bind("conflict")
    metrics.observe_eviction("pdb_blocked")
    metrics.observe_wait("search", "training", 42.0)
    metrics.set_idle_gpus("vision", 3)
    metrics.set_leader(True)
    got = samples_of(metrics)
    assert got[(n.TEAM_GPU_HOURS.sample, (("team", "vision"), ("tier", "training")))] == pytest.approx(3.0)
    assert (n.TEAM_GPU_HOURS.sample, (("team", "search"), ("tier", "production"))) not in got
    assert got[(n.PREEMPTIONS.sample, (("kind", "reclaim"), ("team", "vision"), ("tier", "training")))] == 1
    assert got[(n.LOST_GPU_HOURS.sample, (("team", "vision"), ("tier", "training")))] == 0.5
    assert got[(n.BINDS.sample, (("result", "ok"),))] == 3
    assert got[(n.EVICTIONS.sample, (("result", "pdb_blocked"),))] == 1
    assert (
        got[(f"{n.QUEUE_WAIT.name}_bucket", (("le", "60.0"), ("team", "search"), ("tier", "training")))] == 1
    )
    assert (
        got[(f"{n.QUEUE_WAIT.name}_bucket", (("le", "30.0"), ("team", "search"), ("tier", "training")))] == 0
    )
    assert got[(n.TEAM_IDLE.name, (("team", "vision"),))] == 3
    assert got[(n.LEADER.name, ())] == 1
    metrics.set_idle_gpus("vision", None)
    assert (n.TEAM_IDLE.name, (("team", "vision"),)) not in samples_of(metrics)
    # Every declared metric is exposed under its declared sample name, and nothing else is.
    exposed = {name for name, _ in got}
    for spec in n.ALL:
        if spec.kind == "histogram":
            assert f"{spec.name}_count" in exposed
        elif spec not in (n.TEAM_IDLE, n.TELEMETRY_DROPPED, n.HOOK_FAILURES):  # no series until one has one
            assert spec.sample in exposed, spec.name
    assert {metric_names(name).pop() for name in exposed if not name.endswith("_created")} <= {
        s.sample for s in n.ALL
    } | {s.name for s in n.ALL}
    assert all(spec.name.startswith(n.PREFIX) for spec in n.ALL)
    assert len({spec.name for spec in n.ALL}) == len(n.ALL)
    assert b"gpufair_jain_index" in metrics.exposition(openmetrics=True)


def test_jain_index_is_the_simulators_definition():
    teams = (Team("a", weight=1.0), Team("b", weight=3.0), Team("c", guaranteed_gpus=10.0, max_gpus=12.0))
    states = [
        ({"a": 8.0, "b": 4.0, "c": 4.0}, {"a": 10.0, "b": 20.0, "c": 12.0}),
        ({"a": 16.0, "b": 0.0}, {"a": 16.0, "b": 8.0, "c": 0.0}),
        ({"a": 2.0, "b": 6.0, "c": 8.0}, {"a": 2.0, "b": 6.0, "c": 8.0}),
    ]
    samples = [
        Sample(t=100.0 * k, allocated=a, fair_share={}, demand=d, busy_gpus=sum(a.values()),
               fragmented_gpus=0.0, budget_used={}, healthy_gpus=16.0)
        for k, (a, d) in enumerate([*states, states[-1]])
    ]  # fmt: skip
    result = RunResult("p", "t", 16, [], samples, {}, teams)
    mine = [jain_index(a, d, 16.0, {t.name: t for t in teams}) for a, d in states]
    assert summarize(result)["jain_index"] == pytest.approx(sum(mine) / len(mine), rel=1e-12)
    assert jain_index({}, {}, 16.0, {}) is None
    assert jain_index({"a": 0.0}, {"a": 4.0}, 16.0, {}) is None


def test_fragmented_gpus_counts_free_gpus_smaller_than_any_waiting_pod():
    assert fragmented_gpus([1.0, 3.0, 0.0, 8.0], [4.0, 8.0]) == 4.0
    assert fragmented_gpus([1.0, 3.0], []) == 0.0
    assert fragmented_gpus([0.5, 1.0], [0.001]) == 0.0
    snap = scenario()
    d = decide(snap)
    assert cluster_view(snap, d).fragmented_gpus == 2.0
    assert math.isclose(cluster_view(snap, d).allocated_gpus, 14.0)
