"""The policy of DESIGN.md item by item, through `decide` on small hand-built clusters."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.core import Budget, OnExhausted, PolicyConfig, Team, TeamUsage, Tier, decide
from tests.builders import NOW, apply, bound_gpus, gang, node, nodes, running, snapshot, teams

PROD = 100_000


# ------------------------------------------------------------------ tiers and production


def test_production_is_placed_before_older_training():
    ns = nodes(1)
    gs = [gang("a/train", "a", gpus=8, submit=0), gang("a/infer", "a", gpus=8, priority=PROD, submit=100)]
    d = decide(snapshot(ns, teams(("a", 1)), gs))
    assert [b.gang for b in d.binds] == ["a/infer"]
    assert d.binds[0].tier is Tier.PRODUCTION
    assert d.pending_reason("a/train").code == "NoRoom"


def test_production_preempts_scavenger_before_training():
    ns = nodes(2)
    gs = [
        running(gang("a/train", "a", gpus=8), "n00", started=60),  # cheaper to lose
        running(gang("b/scav", "b", gpus=8, priority=-5), "n01", started=86_400),
        gang("c/infer", "c", gpus=8, priority=PROD),
    ]
    d = decide(snapshot(ns, teams(("a", 1), ("b", 1), ("c", 1)), gs))
    assert {e.gang for e in d.evictions} == {"b/scav"}
    assert d.evictions[0].kind == "production" and d.evictions[0].victim_tier is Tier.SCAVENGER
    assert d.pending_reason("c/infer").code == "Preempting"
    assert d.nominations == {"c/infer-0": "n01"}


def test_production_takes_the_victim_that_loses_least_gpu_time():
    ns = nodes(2)
    gs = [
        running(gang("a/old", "a", gpus=8), "n00", started=10 * 3600),
        running(gang("b/young", "b", gpus=8), "n01", started=3600),
        gang("c/infer", "c", gpus=8, priority=PROD),
    ]
    d = decide(snapshot(ns, teams(("a", 1), ("b", 1), ("c", 1)), gs))
    assert {e.gang for e in d.evictions} == {"b/young"}


def test_checkpointing_makes_a_long_running_gang_cheap_to_preempt():
    ns = nodes(2)
    old = replace(gang("a/ckpt", "a", gpus=8), checkpoint_s=3600.0)
    gs = [
        running(old, "n00", started=10 * 3600 + 60),  # 60 s since its last checkpoint
        running(gang("b/young", "b", gpus=8), "n01", started=1800),
        gang("c/infer", "c", gpus=8, priority=PROD),
    ]
    d = decide(snapshot(ns, teams(("a", 1), ("b", 1), ("c", 1)), gs))
    assert {e.gang for e in d.evictions} == {"a/ckpt"}


def test_production_never_preempts_production():
    ns = nodes(1)
    gs = [
        running(gang("a/infer", "a", gpus=8, priority=PROD), "n00"),
        gang("b/infer", "b", gpus=8, priority=PROD),
    ]
    d = decide(snapshot(ns, teams(("a", 1), ("b", 1)), gs))
    assert d.evictions == ()
    assert d.pending_reason("b/infer").code == "NoRoom"


def test_victims_are_whole_gangs_and_protected_gangs_are_passed_over():
    ns = nodes(4)
    big = running(gang("a/big", "a", pods=2, gpus=8), ["n00", "n01"], started=600)
    protected = replace(running(gang("b/pdb", "b", gpus=8), "n02", started=60), evictable=False)
    other = running(gang("b/other", "b", gpus=8), "n03", started=7200)
    gs = [big, protected, other, gang("c/infer", "c", pods=2, gpus=8, priority=PROD)]
    d = decide(snapshot(ns, teams(("a", 1), ("b", 1), ("c", 1)), gs))
    evicted = {(e.gang, e.pod) for e in d.evictions}
    assert ("b/pdb", "b/pdb-0") not in evicted
    # Two nodes are needed: a/big frees both at once for less than b/other plus a/big.
    assert evicted == {("a/big", "a/big-0"), ("a/big", "a/big-1")}


def test_production_ignores_minimum_runtime_unless_configured():
    ns = nodes(1)
    young = running(replace(gang("a/train", "a", gpus=8), min_runtime_s=3600.0), "n00", started=60)
    gs = [young, gang("b/infer", "b", gpus=8, priority=PROD)]
    snap = snapshot(ns, teams(("a", 1), ("b", 1)), gs)
    assert [e.gang for e in decide(snap).evictions] == ["a/train"]
    strict = PolicyConfig(production_honours_min_runtime=True)
    assert decide(snap, strict).evictions == ()


# ------------------------------------------------------------------ fair share


def test_weighted_shares_under_saturation():
    ns = nodes(8)  # 64 GPUs
    gs = [gang(f"{t}/g{i}", t, gpus=4, submit=i) for t in ("a", "b") for i in range(20)]
    snap = snapshot(ns, teams(("a", 3), ("b", 1)), gs)
    d = decide(snap)
    assert bound_gpus(d, snap, "a") == 48 and bound_gpus(d, snap, "b") == 16
    assert d.teams["a"].fair_share_gpus == pytest.approx(48) and d.teams[
        "b"
    ].fair_share_gpus == pytest.approx(16)


def test_unused_share_flows_to_teams_with_demand():
    ns = nodes(8)
    gs = [gang(f"a/g{i}", "a", gpus=8, submit=i) for i in range(2)]
    gs += [gang(f"b/g{i}", "b", gpus=8, submit=i) for i in range(10)]
    snap = snapshot(ns, teams(("a", 3), ("b", 1)), gs)
    d = decide(snap)
    assert bound_gpus(d, snap, "a") == 16 and bound_gpus(d, snap, "b") == 48
    assert d.teams["a"].fair_share_gpus == pytest.approx(16)


def test_guaranteed_floor_and_max_cap():
    ns = nodes(8)
    ts = (
        Team("a", 1, guaranteed_gpus=40, namespaces=("a",)),
        Team("b", 10, max_gpus=16, namespaces=("b",)),
        Team("c", 1, namespaces=("c",)),
    )
    gs = [gang(f"{t}/g{i}", t, gpus=8, submit=i) for t in ("a", "b", "c") for i in range(8)]
    d = decide(snapshot(ns, ts, gs))
    assert d.teams["a"].fair_share_gpus == pytest.approx(40)
    assert d.teams["b"].fair_share_gpus == pytest.approx(16)
    assert d.teams["c"].fair_share_gpus == pytest.approx(8)
    assert d.teams["b"].allocated_gpus == 16
    capped = [p for p in d.pending if p.gang.startswith("b/")]
    assert capped and all(p.code == "OverMaxGPUs" and "maxGPUs is 16" in p.reason for p in capped)


def test_history_orders_teams_of_equal_share():
    ns = nodes(1)
    gs = [gang("heavy/g", "heavy", gpus=8, submit=0), gang("light/g", "light", gpus=8, submit=100)]
    usage = {"heavy": TeamUsage(decayed_gpu_seconds=1e7), "light": TeamUsage(decayed_gpu_seconds=1e3)}
    d = decide(snapshot(ns, teams(("heavy", 1), ("light", 1)), gs, usage=usage))
    assert [b.gang for b in d.binds] == ["light/g"]
    assert d.teams["light"].fairshare_factor > d.teams["heavy"].fairshare_factor
    # Without history (the drf baseline) the older gang of either team goes first.
    assert [
        b.gang
        for b in decide(snapshot(ns, teams(("heavy", 1), ("light", 1)), gs, usage=usage), policy="drf").binds
    ] == ["heavy/g"]


# ------------------------------------------------------------------ reclaim


def _reclaim_case(started: float = 3600.0, min_runtime: float | None = None):
    ns = nodes(4)  # 32 GPUs, b holds all of it
    held = [
        running(
            replace(gang(f"b/r{i}", "b", gpus=8, submit=i), min_runtime_s=min_runtime),
            f"n0{i}",
            started=started + i,
        )
        for i in range(4)
    ]
    waiting = [gang(f"a/p{i}", "a", gpus=8, submit=100 + i) for i in range(3)]
    return snapshot(ns, teams(("a", 1), ("b", 1)), held + waiting)


def test_team_below_share_reclaims_but_never_below_the_victims_share():
    d = decide(_reclaim_case())
    victims = {e.gang for e in d.evictions}
    assert all(e.kind == "reclaim" for e in d.evictions)
    assert len(victims) == 2  # b keeps its share of 16 GPUs
    assert victims == {"b/r0", "b/r1"}  # the youngest: least GPU-time lost
    assert d.teams["b"].allocated_gpus == pytest.approx(16) == pytest.approx(d.teams["b"].fair_share_gpus)
    assert d.pending_reason("a/p2").code == "NoRoom"


def test_minimum_runtime_protects_young_gangs_from_reclaim_without_borrowing():
    # drf's below-share rule, or gpufair with reclaimBorrowed off: young work is never taken.
    assert decide(_reclaim_case(started=60), policy="drf").evictions == ()  # default 10 minutes
    off = PolicyConfig(reclaim_borrowed=False)
    assert decide(_reclaim_case(started=60), off).evictions == ()
    assert decide(_reclaim_case(started=60, min_runtime=30.0), off).evictions != ()


def test_young_work_beyond_its_teams_share_is_borrowed_and_comes_back_at_once():
    # b holds all 32 GPUs with four young gangs; its share is 16. The two youngest lie
    # beyond it: borrowed, so a takes them back although they are within minimum runtime.
    d = decide(_reclaim_case(started=60))
    assert {e.gang for e in d.evictions} == {"b/r0", "b/r1"}
    assert all(e.kind == "reclaim" for e in d.evictions)
    assert d.teams["b"].allocated_gpus == pytest.approx(16)


def test_minimum_runtime_still_protects_young_work_within_its_teams_share():
    # 24 GPUs, shares of 12. b's four young 4-GPU gangs, oldest first: y0 (n00), y1 and
    # y3 (n01), y2 (n02); only y3 is beyond b's share. a waits for 8 GPUs on one node:
    # only evicting y0 (within b's share) would make one, so a waits.
    held = [
        running(gang("b/y0", "b", gpus=4), "n00", started=120),
        running(gang("b/y1", "b", gpus=4), "n01", started=110),
        running(gang("b/y3", "b", gpus=4), "n01", started=60),
        running(gang("b/y2", "b", gpus=4), "n02", started=100),
        running(gang("a/r", "a", gpus=4), "n02"),
    ]
    snap = snapshot(nodes(3), teams(("a", 1), ("b", 1)), [*held, gang("a/p", "a", gpus=8, submit=1)])
    d = decide(snap)
    assert d.evictions == ()
    assert d.pending_reason("a/p").code == "NoRoom"
    # Once b's gangs have all run their minimum runtime, y0 is a victim like any other.
    old = decide(snap, PolicyConfig(default_min_runtime_s=30.0))
    assert {e.gang for e in old.evictions} == {"b/y0"}


def test_reclaim_waits_until_the_gang_has_waited_reclaim_after():
    snap = _reclaim_case()  # a's gangs have waited 3,500 s, 3,499 s and 3,498 s
    held_back = decide(snap, PolicyConfig(reclaim_after_s=3600.0))
    assert held_back.evictions == ()
    assert "once it has waited 1h" in held_back.pending_reason("a/p0").reason
    d = decide(snap, PolicyConfig(reclaim_after_s=3499.5))
    assert {e.gang for e in d.evictions} == {"b/r0"}  # only a/p0 has waited long enough
    assert d.pending_reason("a/p0").code == "Preempting"
    assert "once it has waited" in d.pending_reason("a/p1").reason
    # Production never waits to preempt.
    prod = snapshot(
        nodes(4),
        teams(("a", 1), ("b", 1)),
        [*(g for g in snap.gangs if g.team == "b"), gang("a/infer", "a", gpus=8, priority=PROD, submit=3599)],
    )
    assert decide(prod, PolicyConfig(reclaim_after_s=3600.0)).evictions != ()


def _near_share_case(a_holds: int):
    """32 GPUs, shares of 16: team a holds `a_holds` one-GPU gangs and waits for more,
    team b holds the rest of the cluster with gangs old enough to be victims."""
    ns = nodes(4)
    slots = [f"n0{i // 8}" for i in range(32)]
    held = [running(gang(f"a/r{i}", "a", submit=i), slots[i]) for i in range(a_holds)]
    held += [running(gang(f"b/r{i}", "b", submit=i), slots[i]) for i in range(a_holds, 32)]
    waiting = [gang(f"a/p{i}", "a", submit=100 + i) for i in range(8)]
    return snapshot(ns, teams(("a", 1), ("b", 1)), held + waiting)


def test_a_team_just_below_its_share_waits_instead_of_reclaiming():
    # reclaimThreshold 0.9 of a share of 16 is 14.4 GPUs.
    near = decide(_near_share_case(15))
    assert near.evictions == ()
    assert "reclaimThreshold" in near.pending_reason("a/p0").reason
    # Well below it, the team reclaims until it holds the threshold; the rest of its
    # share comes as GPUs free up.
    far = decide(_near_share_case(12))
    assert len({e.gang for e in far.evictions}) == 3
    assert far.teams["a"].allocated_gpus == pytest.approx(15)
    assert "reclaimThreshold" in far.pending_reason("a/p3").reason
    # With the threshold at 1 a team reclaims whenever it is below its share.
    eager = decide(_near_share_case(15), PolicyConfig(reclaim_threshold=1.0))
    assert len({e.gang for e in eager.evictions}) == 1


def test_reclaim_finds_the_one_node_the_victim_teams_slack_can_clear():
    # 48 GPUs in one leaf; a waits for 8 on one node. With shares of 8, 20 and 20, team b
    # may give 6 GPUs and team c 2: only n05 (b 4 + 2, c 2) can be cleared. The other
    # nodes (b's 8; b 4 and c 4; c's 8) look as good until the teams' slack is counted,
    # and their victims are cheaper, so a walk through the leaf spends b's slack on them
    # before it reaches n05.
    held = [running(gang(f"b/d{i}", "b", gpus=4, submit=i), f"n0{i // 2}", started=3600) for i in range(4)]
    held += [running(gang("b/m", "b", gpus=4, submit=5), "n02", started=3600)]
    held += [running(gang("c/m", "c", gpus=4, submit=5), "n02", started=3600)]
    held += [
        running(gang(f"c/d{i}", "c", gpus=4, submit=i), f"n0{3 + i // 2}", started=3600) for i in range(4)
    ]
    held += [
        running(gang("b/g4", "b", gpus=4, submit=9), "n05", started=7200),
        running(gang("b/g2", "b", gpus=2, submit=9), "n05", started=7200),
        running(gang("c/g2", "c", gpus=2, submit=9), "n05", started=7200),
    ]
    waiting = [gang("a/big", "a", gpus=8, submit=100)]
    waiting += [gang(f"c/w{i}", "c", gpus=4, submit=200 + i) for i in range(3)]
    snap = snapshot(nodes(6, per_leaf=6), teams(("a", 1), ("b", 1), ("c", 1)), held + waiting)
    d = decide(snap)
    assert (d.teams["b"].fair_share_gpus, d.teams["c"].fair_share_gpus) == pytest.approx((20, 20))
    assert {e.gang for e in d.evictions} == {"b/g4", "b/g2", "c/g2"}
    assert d.nominations == {"a/big-0": "n05"}


def test_reclaim_settles_after_one_round():
    snap = _reclaim_case()
    first = decide(snap)
    second = decide(apply(snap, first, at=NOW + 5))
    assert second.evictions == ()
    assert {b.gang for b in second.binds} == {"a/p0", "a/p1"}


def _held_room_case():
    """16 GPUs, shares of 8: team b holds all of it in one-GPU gangs, team a reclaims a
    node for an 8-GPU gang; then a more urgent one-GPU gang of a arrives."""
    held = [running(gang(f"b/r{i}", "b", submit=i), f"n0{i // 8}") for i in range(16)]
    snap = snapshot(nodes(2), teams(("a", 1), ("b", 1)), [*held, gang("a/big", "a", gpus=8, submit=100)])
    first = decide(snap)
    after = apply(snap, first, at=NOW + 5)
    urgent = gang("a/urgent", "a", submit=200, priority=10)  # first in a's queue
    return first, replace(after, gangs=(*after.gangs, urgent))


def _without_nominations(snap):
    gangs = tuple(replace(g, pods=tuple(replace(p, nominated_node=None) for p in g.pods)) for g in snap.gangs)
    return replace(snap, gangs=gangs)


def test_a_preemptor_binds_first_on_the_nodes_held_for_it():
    first, nxt = _held_room_case()
    assert len({e.gang for e in first.evictions}) == 8
    held = first.nominations["a/big-0"]
    d = decide(nxt)
    assert {b.gang: b.node for b in d.binds}["a/big"] == held
    assert d.evictions == ()
    # Without the nomination the urgent gang takes a GPU of that room first; the big gang
    # no longer fits, and the victims restart where they were.
    again = decide(_without_nominations(nxt))
    bound = {b.gang: b.node for b in again.binds}
    assert "a/big" not in bound and bound["a/urgent"] == held
    assert any(g.startswith("b/") and n == held for g, n in bound.items())


def test_a_held_node_does_not_lift_a_cap_or_outlive_its_node_or_a_budget():
    first, nxt = _held_room_case()
    held = first.nominations["a/big-0"]
    capped = replace(nxt, teams=(Team("a", 1, max_gpus=4, namespaces=("a",)), nxt.teams[1]))
    d = decide(capped)
    assert "a/big" not in {b.gang for b in d.binds}
    assert d.pending_reason("a/big").code == "OverMaxGPUs"
    # A team that has run out of budget since (its work now scavenger work) waits with the
    # other scavenger work: the in-budget team's gangs take the room first.
    spent = replace(
        nxt,
        teams=(_budget_team("a", OnExhausted.SCAVENGE), nxt.teams[1]),
        usage={"a": TeamUsage(period_gpu_hours=150.0)},
    )
    bound = {b.gang: b.node for b in decide(spent).binds}
    assert "a/big" not in bound
    assert sum(1 for g, n in bound.items() if g.startswith("b/") and n == held) == 8
    # A nomination to a node that has left the cluster is no nomination: the gang waits
    # its turn, and the cycle decides as if it had none.
    gone = replace(nxt, nodes=tuple(n for n in nxt.nodes if n.name != held))
    d, expected = decide(gone), decide(_without_nominations(gone))
    assert "a/big" not in {b.gang for b in d.binds}
    assert (d.binds, d.evictions, d.nominations) == (expected.binds, expected.evictions, expected.nominations)


def test_training_never_evicts_production_and_scavenger_evicts_nothing():
    ns = nodes(2)
    gs = [
        running(gang("b/infer", "b", gpus=8, priority=PROD), "n00"),
        running(gang("b/train", "b", gpus=8), "n01"),
        gang("a/train", "a", gpus=8),
        gang("a/scav", "a", gpus=8, priority=-1),
    ]
    d = decide(snapshot(ns, teams(("a", 1), ("b", 1)), gs))
    assert {e.gang for e in d.evictions} <= {"b/train"}
    assert all(e.preemptor != "a/scav" for e in d.evictions)


# ------------------------------------------------------------------ budgets


def _budget_team(name: str, mode: OnExhausted) -> Team:
    return Team(name, 1, budget=Budget(100.0, "month", mode), namespaces=(name,))


def test_over_budget_team_scavenges_idle_gpus_only_after_in_budget_work():
    ns = nodes(2)
    ts = (_budget_team("spent", OnExhausted.SCAVENGE), Team("ok", 1, namespaces=("ok",)))
    gs = [
        gang("spent/g", "spent", gpus=8, submit=0),
        gang("ok/g", "ok", gpus=8, submit=50),
        gang("spent/h", "spent", gpus=8, submit=60),
    ]
    usage = {"spent": TeamUsage(period_gpu_hours=150.0)}
    d = decide(snapshot(ns, ts, gs, usage=usage))
    tiers = {b.gang: b.tier for b in d.binds}
    assert tiers["ok/g"] is Tier.TRAINING
    assert tiers["spent/g"] is Tier.SCAVENGER  # older, but only gets the idle node
    assert "spent/h" not in tiers
    status = d.teams["spent"]
    assert (
        status.budget_exhausted and status.budget_left_gpu_hours == 0 and status.budget_used_gpu_hours == 150
    )
    assert status.budget_resets_s is not None and status.budget_resets_s > NOW


def test_over_budget_team_is_evicted_first():
    ns = nodes(2)
    ts = (_budget_team("spent", OnExhausted.SCAVENGE), Team("ok", 1, namespaces=("ok",)))
    gs = [
        running(gang("spent/g", "spent", gpus=8), "n00", started=7200),
        running(gang("ok/old", "ok", gpus=8), "n01", started=60),
        gang("ok/new", "ok", gpus=8),
    ]
    d = decide(snapshot(ns, ts, gs, usage={"spent": TeamUsage(period_gpu_hours=101.0)}))
    assert [(e.gang, e.victim_tier) for e in d.evictions] == [("spent/g", Tier.SCAVENGER)]
    assert d.evictions[0].kind == "scavenger"


def test_block_holds_new_work_but_not_production():
    ns = nodes(2)
    ts = (_budget_team("spent", OnExhausted.BLOCK),)
    gs = [gang("spent/train", "spent", gpus=8), gang("spent/infer", "spent", gpus=8, priority=PROD)]
    d = decide(snapshot(ns, ts, gs, usage={"spent": TeamUsage(period_gpu_hours=100.0)}))
    assert [b.gang for b in d.binds] == ["spent/infer"]
    reason = d.pending_reason("spent/train")
    assert reason.code == "BudgetBlocked"
    assert "100.0 of its 100 GPU-hours" in reason.reason and "resets 2027-02-01 00:00 UTC" in reason.reason


def test_budget_can_apply_to_production_too():
    ns = nodes(1)
    ts = (_budget_team("spent", OnExhausted.BLOCK),)
    gs = [gang("spent/infer", "spent", gpus=8, priority=PROD)]
    config = PolicyConfig(budget_applies_to_production=True)
    d = decide(snapshot(ns, ts, gs, usage={"spent": TeamUsage(period_gpu_hours=100.0)}), config)
    assert d.binds == () and d.pending_reason("spent/infer").code == "BudgetBlocked"


def test_baselines_ignore_budgets():
    ns = nodes(1)
    ts = (_budget_team("spent", OnExhausted.BLOCK),)
    snap = snapshot(
        ns, ts, [gang("spent/train", "spent", gpus=8)], usage={"spent": TeamUsage(period_gpu_hours=500.0)}
    )
    assert decide(snap).binds == ()
    assert len(decide(snap, policy="drf").binds) == 1
    assert len(decide(snap, policy="fifo").binds) == 1


# ------------------------------------------------------------------ reasons and bad input


def test_reasons_name_what_is_missing_and_the_fix():
    ns = nodes(2)
    gs = [
        gang("nobody/g", "nobody", gpus=1),
        gang("a/huge", "a", gpus=16),
        replace(gang("a/odd", "a", pods=2, gpus=1), topology_required="example.com/rack"),
        replace(gang("a/short", "a", pods=2, gpus=1), min_member=3),
        replace(gang("a/first", "a", pods=1, gpus=1), min_member=4),  # the other 3 not created yet
        gang("a/wide", "a", pods=3, gpus=8),
    ]
    d = decide(snapshot(ns, teams(("a", 1)), gs))
    by = {p.gang: p for p in d.pending}
    assert by["nobody/g"].code == "NoTeam" and "spec.namespaces" in by["nobody/g"].reason
    assert by["a/huge"].code == "TooLarge" and "at most 8 GPUs" in by["a/huge"].reason
    assert by["a/odd"].code == "Invalid" and "network.gpufair.io/leaf" in by["a/odd"].reason
    assert by["a/short"].code == "GangIncomplete" and "2 of its 3" in by["a/short"].reason
    assert by["a/first"].code == "GangIncomplete" and "1 of its 4" in by["a/first"].reason
    assert by["a/wide"].code == "NoRoom" and "24 GPUs" in by["a/wide"].reason
    assert "team a holds" in by["a/wide"].reason and "fair share" in by["a/wide"].reason
    # The bad gangs did not stop the rest: nothing else was waiting, and the cluster has room.
    assert {b.gang for b in d.binds} == set()


def test_one_bad_gang_does_not_stop_the_others():
    ns = nodes(1)
    gs = [gang("a/huge", "a", gpus=16, submit=0), gang("a/fine", "a", gpus=8, submit=1)]
    d = decide(snapshot(ns, teams(("a", 1)), gs))
    assert [b.gang for b in d.binds] == ["a/fine"]


def test_team_status_reports_every_team():
    ns = nodes(1)
    gs = [
        running(gang("a/r", "a", gpus=4), "n00"),
        gang("a/p", "a", pods=2, gpus=4),
        gang("b/i", "b", gpus=2, priority=PROD),
    ]
    d = decide(snapshot(ns, teams(("a", 1), ("b", 1)), gs))
    a, b = d.teams["a"], d.teams["b"]
    assert a.allocated_gpus == 4 and a.pending_pods == 2 and a.demand_gpus == 12
    assert b.production_gpus == 2 and b.allocated_gpus == 0
    assert a.fair_share_gpus == pytest.approx(6)  # 8 GPUs less production's 2


def test_unhealthy_gpus_shrink_capacity_and_shares():
    ns = (node("n00", unhealthy=frozenset({0, 1, 2, 3})),)
    snap = snapshot(ns, teams(("a", 1)), [gang("a/g", "a", gpus=8), gang("a/h", "a", gpus=4, submit=1)])
    d = decide(snap)
    assert [b.gang for b in d.binds] == ["a/h"]
    assert all(i >= 4 for b in d.binds for i in b.gpu_indices)
    assert d.teams["a"].fair_share_gpus == pytest.approx(4)


def test_idle_gpus_from_telemetry_are_in_the_team_status_and_the_reason():
    """Node telemetry's idle-but-held GPUs reach the policy through TeamUsage: the team's
    status carries them and a waiting gang of that team is told it holds idle GPUs."""
    held = [running(gang(f"r{i}", "vision", gpus=8), f"n{i:02d}") for i in range(2)]
    snap = snapshot(
        nodes(2),
        teams(("vision", 1), ("nlp", 1)),
        [*held, gang("more", "vision", gpus=8)],
        usage={"vision": TeamUsage(idle_gpus=6.0)},
    )
    d = decide(snap, PolicyConfig(), "gpufair")
    assert d.teams["vision"].idle_gpus == 6.0 and d.teams["nlp"].idle_gpus == 0.0
    reason = d.pending_reason("more").reason
    assert "team vision holds 16 GPUs" in reason and "6 GPUs of what it holds idle" in reason
    quiet = decide(replace(snap, usage={}), PolicyConfig(), "gpufair").pending_reason("more").reason
    assert "idle" not in quiet


def test_a_team_at_its_share_still_takes_gpus_from_scavenger_work():
    # Shares of 8 each: "a" holds its whole share (it may not reclaim), yet scavenger work
    # gives way to it. "b" asks for a GPU model no node has, so it takes nothing itself.
    ns = nodes(2)
    gs = [
        running(gang("a/r", "a", gpus=8), "n00"),
        running(gang("b/scav", "b", gpus=8, priority=-1), "n01"),
        gang("a/more", "a", gpus=8),
        gang("b/odd", "b", gpus=8, gpu_models=frozenset({"no-such-model"})),
    ]
    d = decide(snapshot(ns, teams(("a", 1), ("b", 1)), gs))
    assert d.teams["a"].fair_share_gpus == pytest.approx(8)
    assert [(e.gang, e.kind, e.preemptor) for e in d.evictions] == [("b/scav", "scavenger", "a/more")]


def test_a_gang_of_two_shapes_that_each_fit_but_not_together_says_how_much_is_free():
    # A PyTorchJob's Master and Workers are two shapes: 1 x 8 and 8 x 8 GPUs fit on 8 nodes
    # one shape at a time, but 72 GPUs do not fit in 64; the reason says so, not "spread".
    master, workers = gang("a/m", "a", pods=1, gpus=8, cpu=2_000), gang("a/w", "a", pods=8, gpus=8)
    ddp = replace(workers, id="a/ddp", pods=master.pods + workers.pods)
    d = decide(snapshot(nodes(8), teams(("a", 1)), [ddp]))
    reason = d.pending_reason("a/ddp")
    assert reason.code == "NoRoom"
    assert (
        "waiting for 72 GPUs (1 pod x 8 GPUs + 8 pods x 8 GPUs) to fit at once; 64 GPUs free" in reason.reason
    )
    assert "spread" not in reason.reason
