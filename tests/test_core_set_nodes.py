"""Core.set_nodes with the same node names keeps its running store (incremental.py): the
decisions stay those of a fresh `decide` on the same snapshot, and of the reference mode."""

from __future__ import annotations

import random
from dataclasses import replace

from benchmarks.synthetic import make_snapshot
from scheduler.core import decide
from scheduler.core.incremental import Core
from scheduler.core.model import Decisions


def _same(a: Decisions, b: Decisions) -> None:
    assert a.binds == b.binds
    assert a.evictions == b.evictions
    assert a.nominations == b.nominations
    assert tuple(a.pending) == tuple(b.pending)
    assert a.teams == b.teams


def test_relabelled_cordoned_and_resized_nodes_decide_as_a_fresh_snapshot() -> None:
    rng = random.Random(7)
    snap = make_snapshot(nodes=64, pending_pods=300, running_pods=1_500, teams=5, seed=11)
    fast = Core.from_snapshot(snap)
    slow = Core.from_snapshot(snap, reference=True)
    now = snap.now_s
    _same(fast.decide(now), slow.decide(now))
    running = fast.running
    for step in range(6):
        nodes = list(fast.nodes)
        for i in rng.sample(range(len(nodes)), 6):
            n = nodes[i]
            what = (step + i) % 3
            if what == 0:
                nodes[i] = replace(n, labels={**n.labels, "step": str(step)})
            elif what == 1:
                nodes[i] = replace(n, schedulable=not n.schedulable)
            else:
                nodes[i] = replace(n, gpus=max(1, n.gpus - 2))  # below what may run there
        fast.set_nodes(nodes)
        slow.set_nodes(nodes)
        assert fast.running is running, "same names: the running store is kept"
        # Some gangs come and go between cycles, as in the daemon.
        gid = rng.choice(list(fast.gangs))
        fast.remove(gid)
        slow.remove(gid)
        now += 60
        mine = fast.decide(now)
        _same(mine, slow.decide(now))
        _same(mine, decide(fast.snapshot(now)))
        assert mine.binds or mine.pending


def test_a_node_that_leaves_reloads_the_running_store() -> None:
    snap = make_snapshot(nodes=32, pending_pods=50, running_pods=400, teams=3, seed=2)
    core = Core.from_snapshot(snap)
    running = core.running
    core.set_nodes(core.nodes[1:])
    assert core.running is not running
    _same(core.decide(snap.now_s), decide(core.snapshot(snap.now_s)))
