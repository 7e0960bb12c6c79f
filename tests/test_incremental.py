"""The incremental Core decides exactly as a fresh `decide` on the same snapshot.

The simulator keeps a `Core` and tells it what changed; these tests run a fresh
`decide` beside it on every cycle of real replays (Philly, contended, with preemption,
budgets and node failures) and on random change sequences (hypothesis), and compare the
whole Decisions: binds, evictions, nominations, team status and every pending reason in
order.
"""

from __future__ import annotations

import gc
import math
import weakref
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.core import Decisions, Pending, PolicyConfig, decide
from scheduler.core.cluster import Shape
from scheduler.core.fairshare import water_fill
from scheduler.core.incremental import Core
from scheduler.core.waiting import LazyPending
from simulator.cluster_spec import nodes_for_gpus
from simulator.engine import FailureModel, Replay
from simulator.teams import teams_for_trace
from simulator.traces import read_trace
from tests.builders import NOW, apply, gang, nodes, refused, shared_trace, teams
from tests.test_properties import CONFIG, scenarios


def same(a: Decisions, b: Decisions) -> None:
    assert a.binds == b.binds
    assert a.evictions == b.evictions
    assert dict(a.nominations) == dict(b.nominations)
    assert dict(a.teams) == dict(b.teams)
    assert tuple(a.pending) == tuple(b.pending)


class Checked(Replay):
    """A replay that also runs a fresh `decide` on each cycle's snapshot and compares."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, explain=True, **kw)  # compares the pending reasons too

    def _setup(self) -> None:
        super()._setup()
        self.checked = 0
        self.deepest = 0
        self.codes: set[str] = set()
        self.failed_nodes = 0

    def _cycle(self, now: float) -> bool:
        snap = self.snapshot(now)
        fresh = decide(snap, self.config, self.policy)
        evicted = super()._cycle(now)
        same(self.last_decisions, fresh)
        self.checked += 1
        self.deepest = max(self.deepest, len(fresh.pending))
        self.codes.update(p.code for p in fresh.pending)
        self.failed_nodes = max(self.failed_nodes, sum(1 for n in snap.nodes if n.unhealthy_gpus))
        return evicted


@pytest.fixture(scope="module")
def philly():
    trace = read_trace(shared_trace("philly", "philly.csv"), "philly")
    return replace(trace, jobs=trace.jobs[:700])


@pytest.mark.parametrize("policy", ["gpufair", "drf", "fifo"])
def test_every_cycle_of_a_contended_philly_replay_matches_a_fresh_decide(philly, policy):
    team_set = teams_for_trace((j.team for j in philly.jobs), None, None)
    r = Checked(philly, nodes_for_gpus(48), team_set, policy)
    result = r.run()
    assert r.checked > 500 and r.deepest > 100  # deep queues, many cycles
    if policy != "fifo":
        assert sum(j.preemptions for j in result.jobs) > 0  # reclaim happened


def test_a_replay_that_does_not_explain_binds_and_evicts_the_same(philly):
    class Counted(Replay):
        said = 0

        def _cycle(self, now: float) -> bool:
            evicted = super()._cycle(now)
            self.said += len(self.last_decisions.pending)
            return evicted

    team_set = teams_for_trace((j.team for j in philly.jobs), None, None)
    quiet = Counted(philly, nodes_for_gpus(48), team_set, "gpufair")
    told = Counted(philly, nodes_for_gpus(48), team_set, "gpufair", explain=True)
    a, b = quiet.run(), told.run()
    assert sum(j.preemptions for j in a.jobs) > 0
    assert a.jobs == b.jobs  # every start, end and preemption
    assert a.samples == b.samples
    assert quiet.said == 0 and told.said > 10_000


def test_budgets_and_node_failures_match_a_fresh_decide(philly):
    jobs = philly.jobs[:400]
    team_set = teams_for_trace((j.team for j in jobs), None, 40.0, "7d", "scavenge")
    blocking = tuple(
        replace(t, budget=replace(t.budget, on_exhausted=type(t.budget.on_exhausted)("block")))
        if i % 2 and t.budget
        else t
        for i, t in enumerate(team_set)
    )
    r = Checked(
        replace(philly, jobs=jobs),
        nodes_for_gpus(48),
        blocking,
        "gpufair",
        failures=FailureModel(mtbf_hours=24 * 20, repair_hours=12),
    )
    result = r.run()
    assert r.checked > 300 and r.failed_nodes > 0
    assert {"BudgetBlocked", "NoRoom"} <= r.codes
    assert any(s.healthy_gpus < 48 for s in result.samples)


@given(scenarios(), st.randoms(use_true_random=False))
def test_a_core_fed_change_by_change_decides_as_decide(snap, rnd):
    """Gangs put one by one, some taken out and put back (they move to the end), two
    cycles with the first cycle's decisions carried out in between."""
    core = Core(snap.nodes, snap.teams, CONFIG, "gpufair")
    for g in snap.gangs:
        core.put(g)
    for g in rnd.sample(list(snap.gangs), k=len(snap.gangs) // 3):
        core.remove(g.id)
        core.put(g)
    first = core.snapshot(snap.now_s, snap.usage)
    d = core.decide(snap.now_s, snap.usage)
    same(d, decide(first, CONFIG, "gpufair"))
    later = apply(first, d, at=snap.now_s + 900)
    known = {g.id: g for g in first.gangs}
    for g in later.gangs:
        if g != known[g.id]:
            core.put(g)
    done = [g.id for g in later.gangs if rnd.random() < 0.2]
    for gid in done:
        core.remove(gid)
    second = core.snapshot(later.now_s, later.usage)
    assert {g.id for g in second.gangs} == {g.id for g in later.gangs} - set(done)
    for policy in ("gpufair", "drf", "fifo"):
        fresh = Core.from_snapshot(second, CONFIG, policy)
        same(fresh.decide(second.now_s, second.usage), decide(second, CONFIG, policy))
    # The running pod types, counted as pods came and went, are those of a fresh read.
    assert core.running.gpu_pod_shapes == fresh.running.gpu_pod_shapes
    same(core.decide(second.now_s, second.usage), decide(second, CONFIG, "gpufair"))


def test_set_nodes_follows_a_failed_node():
    cluster = nodes(2)
    core = Core(cluster, teams(("a", 1.0)))
    core.put(gang("a/x", "a", gpus=8))
    core.put(gang("a/y", "a", gpus=8, submit=1))
    assert len(core.decide(NOW).binds) == 2
    core.set_nodes((replace(cluster[0], unhealthy_gpus=frozenset(range(8))), cluster[1]))
    d = core.decide(NOW)
    assert [b.node for b in d.binds] == [cluster[1].name]
    same(d, decide(core.snapshot(NOW)))


def _bound(g, node: str):
    return replace(g, pods=tuple(replace(p, node=node) for p in g.pods))


def test_a_failure_is_carried_while_pods_only_come():
    # A request of one pod shape that failed on the cluster a cycle started from fails
    # again while running pods only come (binds), so later cycles do not try it; a pod
    # that leaves (a completion) may have made room, and then it is tried again. Each
    # cycle is checked against a fresh `decide`.
    core = Core(nodes(2), teams(("a", 1.0), ("b", 1.0), ("c", 1.0)))
    core.put(_bound(gang("a/run", "a", gpus=8, submit=-9), "n00"))
    core.put(gang("b/y", "b", pods=2, gpus=8, submit=1))  # team b comes first, and fails
    core.put(gang("c/z", "c", gpus=8, submit=2))
    first = core.decide(NOW)
    assert [b.gang for b in first.binds] == ["c/z"]
    assert [k.shapes for k in core.shortcuts.carried.keys] == [(Shape(8, 0, 1_000, 1_000),) * 2]
    core.put(_bound(gang("c/z", "c", gpus=8, submit=2), first.binds[0].node))  # the bind lands
    core.put(gang("b/w", "b", pods=2, gpus=8, submit=3))  # and a look-alike arrives
    second = core.decide(NOW + 1)
    assert not second.binds and len(core.shortcuts.carried.keys) == 1  # carried on, not tried
    same(second, decide(core.snapshot(NOW + 1)))
    core.remove("a/run")
    core.remove("c/z")  # two completions: 16 GPUs free
    third = core.decide(NOW + 2)
    assert [b.gang for b in third.binds] == ["b/y", "b/y"]
    same(third, decide(core.snapshot(NOW + 2)))


def test_a_failure_after_a_bind_is_not_carried():
    # It failed on less room than the next cycle may start with: here the bound gang is
    # deleted before its bind lands, so the second gang fits and must be tried.
    core = Core(nodes(1), teams(("a", 1.0), ("b", 1.0)))
    core.put(gang("a/x", "a", gpus=8))
    core.put(gang("b/y", "b", gpus=8, submit=1))
    first = core.decide(NOW)
    assert [b.gang for b in first.binds] == ["a/x"]
    assert core.shortcuts.carried.keys == ()
    core.remove("a/x")
    second = core.decide(NOW + 1)
    assert [b.gang for b in second.binds] == ["b/y"]
    same(second, decide(core.snapshot(NOW + 1)))


def test_a_cycle_is_freed_with_its_decisions_without_the_collector():
    # A replay runs a cycle per event: one caught in a reference loop waits for the
    # collector with its cluster copy and caches, which cost fifo a tenth of its time.
    core = Core(nodes(2), teams(("a", 1.0)))
    core.put(gang("a/x", "a", gpus=8))
    core.put(gang("a/y", "a", gpus=4, submit=1))
    gc.disable()
    try:
        d = core.decide(NOW)
        assert len(d.binds) == 2  # it placed, so it made its scorer
        cycle = weakref.ref(d.teams._build.args[0])  # the team table is built from the cycle
        del d
        assert cycle() is None
    finally:
        gc.enable()


def test_pending_reasons_are_built_when_read_and_compare_as_a_tuple():
    core = Core(nodes(1), teams(("a", 1.0)), policy="fifo")
    for k in range(50):
        core.put(gang(f"a/g{k}", "a", gpus=8, submit=k))
    d = core.decide(NOW)
    assert isinstance(d.pending, LazyPending)
    assert len(d.binds) == 1 and len(d.pending) == 49
    assert d.pending == decide(core.snapshot(NOW), policy="fifo").pending
    assert d.pending[0].code == "NoRoom" and d.pending[-1].code == "QueuedBehind"
    assert (
        d.pending_reason("a/g49") == Pending("a/g49", "QueuedBehind", d.pending[1].reason)
        and "a/g1" in d.pending[1].reason
    )


def test_two_gangs_with_one_id_are_refused():
    g = gang("a/x", "a")
    err = refused(decide, replace(core_snapshot(), gangs=(g, g)))
    assert "a/x" in str(err) and err.fix


def core_snapshot():
    return Core(nodes(1), teams(("a", 1.0))).snapshot(NOW)


def _walk(capacity, weights, demands, floors, caps):
    """water_fill as it was written first: bends walked one by one (the reference)."""
    n = len(weights)
    limits = [max(0.0, min(demands[i], math.inf if caps[i] is None else caps[i])) for i in range(n)]
    base = [min(max(0.0, floors[i]), limits[i]) for i in range(n)]
    capacity = max(0.0, capacity)
    total_base = sum(base)
    if total_base >= capacity:
        scale = capacity / total_base if total_base > 0 else 0.0
        return [b * scale for b in base]
    if all(math.isfinite(lim) for lim in limits) and sum(limits) <= capacity:
        return limits[:]

    def filled(level):
        return sum(min(limits[i], max(base[i], weights[i] * level)) for i in range(n))

    points = sorted(
        {b / w for b, w in zip(base, weights, strict=True)}
        | {lim / w for lim, w in zip(limits, weights, strict=True) if math.isfinite(lim)}
    )
    lo, f_lo, level = 0.0, filled(0.0), None
    for p in points:
        f_p = filled(p)
        if f_p >= capacity:
            level = p if f_p == f_lo else lo + (capacity - f_lo) * (p - lo) / (f_p - f_lo)
            break
        lo, f_lo = p, f_p
    if level is None:
        slope = sum(w for w, lim in zip(weights, limits, strict=True) if not math.isfinite(lim))
        level = lo + (capacity - f_lo) / slope
    return [min(limits[i], max(base[i], weights[i] * level)) for i in range(n)]


amounts = st.floats(0, 500, allow_nan=False).map(lambda x: round(x, 3))


@given(
    st.integers(1, 20).flatmap(
        lambda n: st.tuples(
            amounts,
            st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=n, max_size=n),
            st.lists(amounts, min_size=n, max_size=n),
            st.lists(st.sampled_from([0.0, 0.0, 4.0, 16.0]), min_size=n, max_size=n),
            st.lists(st.sampled_from([None, None, 8.0, 100.0]), min_size=n, max_size=n),
        )
    )
)
def test_water_fill_by_binary_search_is_bit_for_bit_the_walk(args):
    capacity, weights, demands, floors, caps = args
    caps = [None if c is None else max(c, f) for c, f in zip(caps, floors, strict=True)]
    got = water_fill(capacity, weights, demands, floors, caps)
    assert got == _walk(capacity, weights, demands, floors, caps)


def test_policy_config_default_is_unchanged_by_the_core():
    assert Core(nodes(1), teams(("a", 1.0))).config == PolicyConfig()
