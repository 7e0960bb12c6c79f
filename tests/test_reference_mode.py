"""The fast mode decides exactly as the reference mode, which has every speed-up switched off.

Every memo, failure cache, doomed predicate and bound of the core lives in
scheduler/core/shortcuts.py behind one switch (plus the shape cache's incremental vectors
and preemption's bounds, switched by it). These tests hold the fast mode to the reference
mode on random clusters and workloads (hypothesis, every policy) and on every cycle of a
contended Philly replay, where the fast mode is also the incremental Core carrying its
memos from cycle to cycle: binds, evictions, nominations, team status and every pending
reason in order must be the same. A new speed-up belongs behind the switch, so this test
guards it too.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core import Snapshot, decide
from scheduler.core.incremental import Core
from scheduler.core.policies import POLICIES
from simulator.cluster_spec import nodes_for_gpus
from simulator.engine import Replay
from simulator.teams import teams_for_trace
from simulator.traces import read_trace
from tests.builders import gang, nodes, running, shared_trace, snapshot, teams
from tests.test_incremental import same
from tests.test_properties import CONFIG, contended, scenarios

POLICY_NAMES = sorted(POLICIES)


@settings(max_examples=250, deadline=None)
@given(scenarios(), st.sampled_from(POLICY_NAMES))
def test_random_snapshots_decide_the_same_in_both_modes(snap, policy):
    same(decide(snap, CONFIG, policy), decide(snap, CONFIG, policy, reference=True))


@settings(max_examples=150, deadline=None)
@given(contended(), st.sampled_from(POLICY_NAMES))
def test_contended_snapshots_decide_the_same_in_both_modes(snap, policy):
    same(decide(snap, CONFIG, policy), decide(snap, CONFIG, policy, reference=True))


def test_the_reference_mode_keeps_no_memo():
    snap = _small_contended()
    core = Core.from_snapshot(snap, CONFIG, "gpufair", reference=True)
    core.decide(snap.now_s, snap.usage)
    core.decide(snap.now_s, snap.usage)
    memo = core.shortcuts
    assert memo.reference and not memo.shares and not memo.tiers and not memo.scorers
    assert memo.loaded is None and memo.carried is None and not core.requests
    fast = Core.from_snapshot(snap, CONFIG, "gpufair")
    fast.decide(snap.now_s, snap.usage)
    assert fast.shortcuts.shares and fast.shortcuts.loaded is not None and fast.requests


def _small_contended() -> Snapshot:
    gangs = [running(gang(f"a/r{i}", "a", gpus=4), f"n{i // 2:02d}") for i in range(8)]
    gangs += [gang(f"b/w{i}", "b", gpus=4, submit=i) for i in range(6)]
    return snapshot(nodes(4), teams(("a", 1.0), ("b", 1.0)), gangs)


class AgainstReference(Replay):
    """A replay (fast, incremental Core) that runs the reference mode on each cycle's
    snapshot beside it and compares."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, explain=True, **kw)

    def _setup(self) -> None:
        super()._setup()
        self.checked = 0
        self.evictions = 0

    def _cycle(self, now: float) -> bool:
        snap = self.snapshot(now)
        ref = decide(snap, self.config, self.policy, reference=True)
        evicted = super()._cycle(now)
        same(self.last_decisions, ref)
        self.checked += 1
        self.evictions += len(ref.evictions)
        return evicted


@pytest.fixture(scope="module")
def philly():
    trace = read_trace(shared_trace("philly", "philly.csv"), "philly")
    return replace(trace, jobs=trace.jobs[:400])


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_cycle_of_a_philly_prefix_decides_the_same_in_both_modes(philly, policy):
    team_set = teams_for_trace((j.team for j in philly.jobs), None, None)
    r = AgainstReference(philly, nodes_for_gpus(48), team_set, policy)
    r.run()
    assert r.checked > 300
    if POLICIES[policy].preemption and POLICIES[policy].reclaim is not None:
        assert r.evictions > 0  # reclaim happened, so the victim search was compared too
