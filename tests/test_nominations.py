"""The nomination lifecycle (scheduler/core/nominations.py): held after a preemption,
carried into the next cycle on the preemptor's pods, spent by the first cycle that sees
them, and never made from anything but the core's own decisions."""

from __future__ import annotations

from dataclasses import replace

from scheduler.core import Decisions, Eviction, Tier, decide
from scheduler.core.nominations import Nominations
from tests.builders import apply, gang
from tests.test_engine_policy import _held_room_case


def _decisions(nominations: dict[str, str], preemptor: str = "a/big") -> Decisions:
    ev = Eviction("b/x-0", "b/x", "n00", preemptor, "reclaim", "why", Tier.TRAINING, Tier.TRAINING)
    return Decisions((), (ev,), (), {}, nominations)


def test_a_held_nomination_is_carried_on_the_pending_pods_and_spent_once_seen():
    book = Nominations()
    big = gang("a/big", "a", pods=2, gpus=4)
    book.hold(_decisions({"a/big-0": "n00", "a/big-1": "n01"}), ["a/big-0", "a/big-1"])
    carried = book.nominate(big)
    assert [p.nominated_node for p in carried.pods] == ["n00", "n01"]
    assert book.nominate(carried) is carried  # nothing changes: the same gang
    book.spend(p.name for p in carried.pods)
    assert not book
    assert [p.nominated_node for p in book.nominate(carried).pods] == [None, None]


def test_only_the_pods_whose_victims_really_leave_are_held():
    # A refused eviction (a PodDisruptionBudget) holds nothing: the shell passes only the
    # pods whose victims leave.
    book = Nominations()
    book.hold(_decisions({"a/big-0": "n00", "a/big-1": "n01"}), ["a/big-1"])
    assert book.held == {"a/big-1": "n01"}
    book.forget_gone({"someone-else"})
    assert not book


def test_a_bound_pod_keeps_no_nomination():
    book = Nominations()
    g = gang("a/big", "a", pods=2, gpus=4)
    g = replace(g, pods=(replace(g.pods[0], node="n03"), g.pods[1]))
    book.hold(_decisions({"a/big-0": "n00", "a/big-1": "n01"}), ["a/big-0", "a/big-1"])
    again = book.nominate(g)
    assert again.pods[0].nominated_node is None and again.pods[1].nominated_node == "n01"


def test_after_a_cycle_a_preemptor_still_pending_is_held_and_the_old_ones_spent():
    book = Nominations()
    pending = {"a/big": gang("a/big", "a", gpus=8), "a/old": gang("a/old", "a", gpus=8)}
    book.hold(_decisions({"a/old-0": "n05"}, "a/old"), ["a/old-0"])
    book._gangs = {"a/old"}  # as an earlier after_cycle leaves it
    pending["a/old"] = book.nominate(pending["a/old"])
    changed = book.after_cycle(_decisions({"a/big-0": "n02"}), pending.get)
    assert {g.id: g.pods[0].nominated_node for g in changed} == {"a/big": "n02", "a/old": None}
    assert book.held == {"a/big-0": "n02"}
    # A preemptor that left the queue (bound, deleted) is no longer looked up.
    assert book.after_cycle(_decisions({}), {}.get) == []
    assert not book


def test_the_core_lifecycle_reproduces_the_held_room_case():
    # The shells' translation: preemptors carry their room into the next cycle, which binds
    # them there before the gang that comes first in its order.
    first, nxt = _held_room_case()
    held = first.nominations["a/big-0"]
    d = decide(nxt)
    assert {b.gang: b.node for b in d.binds}["a/big"] == held
    # Spent by that cycle: applied once more, the bound gang carries no nomination.
    after = apply(nxt, d)
    assert all(p.nominated_node is None for g in after.gangs for p in g.pods)
