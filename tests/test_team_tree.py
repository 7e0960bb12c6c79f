"""Teams in a tree (scheduler/core/teamtree.py): water-filling down the tree, the
hierarchical usage factor, budgets at every level, reclaim that follows the tree, and
the refusals of a tree that cannot be built."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.core import (
    Budget,
    InvalidInput,
    OnExhausted,
    PolicyConfig,
    Snapshot,
    Team,
    TeamUsage,
    decide,
    load_teams,
)
from scheduler.core.fairshare import fairshare_factors, water_fill
from scheduler.core.manifests import resolve_teams
from scheduler.core.teamtree import build_tree, factors, shares
from tests.builders import NOW, apply, gang, nodes, running, snapshot
from tests.test_properties import check_invariants

CONFIG = PolicyConfig(max_preemptors_per_cycle=1000)


# ------------------------------------------------------------------ random trees


@st.composite
def trees(draw, most: int = 9):
    """Teams with random parents (each after its parent), floors that fit their parents'
    and demands on the leaves; returns (teams, demands)."""
    count = draw(st.integers(1, most))
    parents: list[int | None] = []
    for i in range(count):
        parents.append(draw(st.sampled_from([None, *range(i)])))
    floors = [draw(st.sampled_from([0.0, 0.0, 2.0, 5.0])) for _ in range(count)]
    for i in reversed(range(count)):  # a group guarantees at least what its children do
        kids = [c for c in range(count) if parents[c] == i]
        if kids and any(floors[c] for c in kids):
            floors[i] = max(floors[i], sum(floors[c] for c in kids))
    teams = []
    for i in range(count):
        cap = draw(st.sampled_from([None, None, floors[i] + draw(st.sampled_from([0.0, 3.0, 20.0]))]))
        teams.append(
            Team(
                f"t{i}",
                weight=draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])),
                guaranteed_gpus=floors[i],
                max_gpus=cap,
                parent=None if parents[i] is None else f"t{parents[i]}",
            )
        )
    groups = {p for p in parents if p is not None}
    demand = [
        0.0 if i in groups else draw(st.sampled_from([0.0, 1.0, 4.0, 10.0, 40.0])) for i in range(count)
    ]
    return tuple(teams), demand


def _args(teams: tuple[Team, ...], demand: list[float]) -> tuple:
    return (
        [t.weight for t in teams],
        demand,
        [t.guaranteed_gpus for t in teams],
        [t.max_gpus for t in teams],
    )


@given(trees(), st.sampled_from([0.0, 8.0, 24.0, 64.0, 200.0]))
def test_siblings_share_what_their_parent_got(tree_and_demand, capacity: float) -> None:
    teams, demand = tree_and_demand
    tree = build_tree(teams)
    got = shares(tree, capacity, *_args(teams, demand))
    top = sum(got[r] for r in tree.roots)
    assert top <= capacity + 1e-6
    for t in range(len(teams)):
        kids = tree.children[t]
        if kids:
            assert math.isclose(sum(got[c] for c in kids), got[t], rel_tol=1e-9, abs_tol=1e-6), (t, got)
        else:
            assert got[t] <= demand[t] + 1e-6  # nobody gets more than it asks for
        if teams[t].max_gpus is not None:
            assert got[t] <= teams[t].max_gpus + 1e-6
    # Work conserving: the capacity goes out unless every subtree has all it can use.
    def cap(r: int) -> float:  # a cap of 0 is a cap (not "no cap")
        return math.inf if teams[r].max_gpus is None else teams[r].max_gpus

    want = sum(min(demand[r], cap(r)) for r in tree.roots if not tree.children[r])
    if want >= capacity and all(not tree.children[r] for r in tree.roots):
        assert math.isclose(top, capacity, rel_tol=1e-9, abs_tol=1e-6)


@given(trees(), st.sampled_from([8.0, 24.0, 64.0]), st.data())
def test_a_higher_weight_never_lowers_a_share(tree_and_demand, capacity: float, data) -> None:
    teams, demand = tree_and_demand
    t = data.draw(st.integers(0, len(teams) - 1))
    before = shares(build_tree(teams), capacity, *_args(teams, demand))
    heavier = tuple(replace(x, weight=x.weight * 2) if i == t else x for i, x in enumerate(teams))
    after = shares(build_tree(heavier), capacity, *_args(heavier, demand))
    assert after[t] >= before[t] - 1e-6


@given(trees(), st.sampled_from([0.0, 8.0, 24.0, 64.0]))
def test_a_flat_tree_is_the_old_water_fill(tree_and_demand, capacity: float) -> None:
    teams, demand = tree_and_demand
    flat = tuple(replace(t, parent=None) for t in teams)
    args = _args(flat, demand)
    assert shares(build_tree(flat), capacity, *args) == water_fill(capacity, *args)
    decayed = [d * 3600 for d in demand]
    assert factors(build_tree(flat), args[0], decayed) == fairshare_factors(args[0], decayed)


def _org() -> tuple[Team, ...]:
    """org -> deptA (a1, a2), deptB (b1): the README's tree."""
    return (
        Team("org"),
        Team("deptA", parent="org"),
        Team("a1", parent="deptA", namespaces=("a1",)),
        Team("a2", parent="deptA", namespaces=("a2",)),
        Team("deptB", parent="org"),
        Team("b1", parent="deptB", namespaces=("b1",)),
    )


def test_unused_entitlement_stays_in_its_department_first() -> None:
    teams = _org()
    tree = build_tree(teams)
    # a2 asks for 2 only: its sibling a1 gets the rest of deptA's half, not b1.
    got = shares(tree, 16.0, *_args(teams, [0, 0, 12, 2, 0, 12]))
    assert got == [16.0, 8.0, 6.0, 2.0, 8.0, 8.0]
    # Only when the whole department cannot use its half does it go to the other.
    got = shares(tree, 16.0, *_args(teams, [0, 0, 1, 2, 0, 20]))
    assert got == [16.0, 3.0, 1.0, 2.0, 13.0, 13.0]


def test_hierarchical_usage_factor_worked_example() -> None:
    """The README's example: decayed GPU-hours a1 60, a2 0, b1 40, all weights 1."""
    teams = _org()
    got = factors(build_tree(teams), [1.0] * 6, [0, 0, 60 * 3600, 0, 0, 40 * 3600])
    dept_a, dept_b = 2 ** (-0.6 / 0.5), 2 ** (-0.4 / 0.5)
    assert got[1] == pytest.approx(dept_a) and got[4] == pytest.approx(dept_b)
    assert got[2] == pytest.approx(dept_a * 2 ** (-1 / 0.5))  # a1: 0.435 * 0.25
    assert got[3] == pytest.approx(dept_a)  # a2 used nothing: only its department counts
    assert got[5] == pytest.approx(dept_b)  # b1 alone in deptB: that level counts 1
    assert got[0] == 1.0  # the only top-level team
    # Flat, a2 (no use) would rank first at 1.0; in the tree it pays for its sibling's use
    # and ranks behind b1, whose department used less than its half.
    assert got[5] > got[3] > got[2]


# ------------------------------------------------------------------ refusals


def _doc(name: str, **spec) -> dict:
    return {"apiVersion": "gpufair.io/v1alpha1", "kind": "GPUTeam", "metadata": {"name": name}, "spec": spec}


def _refused(*docs: dict) -> InvalidInput:
    with pytest.raises(InvalidInput) as err:
        load_teams("\n---\n".join(__import__("json").dumps(d) for d in docs))
    return err.value


def test_a_cycle_is_refused_naming_both_teams() -> None:
    err = _refused(_doc("x", parent="y"), _doc("y", parent="x"))
    assert "spec.parent" in str(err) and "'x'" in str(err) and "y" in str(err) and "cycle" in str(err)
    assert "top-level" in str(err)


def test_a_missing_parent_is_refused() -> None:
    err = _refused(_doc("a1", parent="deptZ", namespaces=["a1"]))
    assert "GPUTeam 'a1'" in str(err) and "GPUTeam 'deptZ'" in str(err) and "is not a GPUTeam" in str(err)


def test_children_floors_that_do_not_fit_are_refused() -> None:
    err = _refused(
        _doc("dept", guaranteedGPUs=8),
        _doc("a", parent="dept", guaranteedGPUs=6, namespaces=["a"]),
        _doc("b", parent="dept", guaranteedGPUs=4, namespaces=["b"]),
    )
    text = str(err)
    assert "GPUTeam 'b'" in text and "GPUTeam 'dept'" in text and "at least 10" in text


def test_a_group_lists_no_namespaces() -> None:
    err = _refused(_doc("dept", namespaces=["x"]), _doc("a", parent="dept", namespaces=["a"]))
    assert "GPUTeam 'dept'" in str(err) and "spec.namespaces" in str(err) and "'a'" in str(err)


def test_the_daemon_leaves_out_a_broken_subtree_and_keeps_the_rest() -> None:
    resolved = resolve_teams(
        [
            _doc("dept", guaranteedGPUs=8),
            _doc("a", parent="dept", guaranteedGPUs=6, namespaces=["a"]),
            _doc("b", parent="dept", guaranteedGPUs=4, namespaces=["b"]),
            _doc("bad", weight=-1),
            _doc("under-bad", parent="bad", namespaces=["u"]),
            _doc("loner", namespaces=["l"]),
        ]
    )
    assert {t.name for t in resolved.teams} == {"dept", "a", "loner"}
    assert set(resolved.refused) == {"b", "bad", "under-bad"}
    assert "which is refused" in str(resolved.refused["under-bad"])
    assert "u" not in resolved.owner and resolved.owner["a"] == "a"


# ------------------------------------------------------------------ cycles on a tree


def _status(snap, config=CONFIG):
    return decide(snap, config)


def test_status_shows_groups_with_their_subtree() -> None:
    teams = _org()
    gangs = [running(gang(f"a1-{i}", "a1"), "n00") for i in range(3)]
    gangs += [running(gang(f"b1-{i}", "b1"), "n01") for i in range(5)]
    gangs += [gang(f"a1-w{i}", "a1") for i in range(9)] + [gang(f"b1-w{i}", "b1") for i in range(9)]
    d = decide(snapshot(nodes(2), teams, gangs), CONFIG)
    s = d.teams
    assert s["deptA"].group and s["org"].group and not s["a1"].group
    assert s["a1"].path == "org/deptA/a1" and s["deptB"].path == "org/deptB"
    assert s["org"].fair_share_gpus == pytest.approx(16.0)
    assert s["deptA"].fair_share_gpus == pytest.approx(8.0) == s["a1"].fair_share_gpus
    bound_a1 = sum(1 for b in d.binds if b.gang.startswith("a1"))
    bound_b1 = sum(1 for b in d.binds if b.gang.startswith("b1"))
    assert s["deptA"].allocated_gpus == pytest.approx(3 + bound_a1)
    assert s["org"].allocated_gpus == pytest.approx(8 + bound_a1 + bound_b1)
    assert s["org"].pending_pods == s["a1"].pending_pods + s["b1"].pending_pods


def _with_budget(teams: tuple[Team, ...], name: str, hours: float, on: OnExhausted) -> tuple[Team, ...]:
    budget = Budget(hours, "week", on)
    return tuple(replace(t, budget=budget) if t.name == name else t for t in teams)


@pytest.mark.parametrize("on", list(OnExhausted))
def test_a_department_budget_caps_its_teams_together(on: OnExhausted) -> None:
    """Neither a1 (30) nor a2 (30) is over deptA's 50 GPU-hours; together they are."""
    teams = _with_budget(_org(), "deptA", 50.0, on)
    usage = {"a1": TeamUsage(0, 30.0), "a2": TeamUsage(0, 30.0), "b1": TeamUsage(0, 30.0)}
    gangs = [gang("a1-w", "a1"), gang("a2-w", "a2"), gang("b1-w", "b1")]
    d = decide(snapshot(nodes(1), teams, gangs, usage=usage), CONFIG)
    s = d.teams
    assert s["deptA"].budget_exhausted and s["deptA"].budget_used_gpu_hours == pytest.approx(60.0)
    assert s["a1"].budget_exhausted_at == "deptA" == s["a2"].budget_exhausted_at
    assert s["b1"].budget_exhausted_at == "" and not s["a1"].budget_exhausted
    bound = {b.gang for b in d.binds}
    assert "b1-w" in bound
    if on is OnExhausted.BLOCK:
        assert not bound & {"a1-w", "a2-w"}
        why = d.pending_reason("a1-w")
        assert why is not None and why.code == "BudgetBlocked" and "group deptA of team a1" in why.reason
    else:  # scavenging: they run on what nobody in budget uses
        assert {"a1-w", "a2-w"} <= bound
        assert all(b.tier.label == "scavenger" for b in d.binds if b.gang != "b1-w")


def test_the_nearest_exhausted_budget_on_the_path_decides() -> None:
    """a1's own budget (scavenge) is exhausted, and so is org's (block): a1's decides."""
    teams = _with_budget(
        _with_budget(_org(), "a1", 10.0, OnExhausted.SCAVENGE), "org", 10.0, OnExhausted.BLOCK
    )
    usage = {"a1": TeamUsage(0, 20.0)}
    d = decide(snapshot(nodes(1), teams, [gang("a1-w", "a1"), gang("a2-w", "a2")], usage=usage), CONFIG)
    s = d.teams
    assert s["a1"].budget_exhausted_at == "a1" and s["a2"].budget_exhausted_at == "org"
    assert s["org"].budget_exhausted_at == "org" and s["deptA"].budget_exhausted_at == "org"
    assert {b.gang for b in d.binds} == {"a1-w"}  # a1 scavenges; a2 is blocked by org
    assert d.pending_reason("a2-w").code == "BudgetBlocked"


def _reclaim_case(a2: int, b1: int, a1_waiting: int):
    teams = _org()
    gangs = [running(gang(f"a2-{i}", "a2"), f"n{i // 8:02d}") for i in range(a2)]
    gangs += [running(gang(f"b1-{i}", "b1"), f"n{(a2 + i) // 8:02d}") for i in range(b1)]
    gangs += [gang(f"a1-w{i}", "a1", submit=i) for i in range(a1_waiting)]
    snap = snapshot(nodes(2), teams, gangs)
    d = decide(snap, CONFIG)
    taken: dict[str, int] = {}
    for e in d.evictions:
        assert e.kind == "reclaim"
        team = e.gang.split("-")[0]
        taken[team] = taken.get(team, 0) + 1
    return d, taken


def test_reclaim_takes_from_over_share_siblings_first() -> None:
    # a2 holds 8 of deptA's 8, b1 deptB's 8: a1 (share 4) takes its 4 from a2 only. Flat,
    # b1 (share 16/3) would give too.
    d, taken = _reclaim_case(8, 8, 4)
    assert taken == {"a2": 4}
    assert d.teams["a2"].allocated_gpus == pytest.approx(d.teams["a2"].fair_share_gpus)
    assert d.teams["deptB"].allocated_gpus == pytest.approx(8.0)


def test_reclaim_goes_further_up_when_the_department_has_nothing_over_share() -> None:
    # a2 holds its share (4), b1 12 of deptB's 8: a1 takes from b1.
    _, taken = _reclaim_case(4, 12, 4)
    assert taken == {"b1": 4}


def test_reclaim_takes_from_siblings_until_they_are_at_share_then_goes_up() -> None:
    # a2 is 2 over, b1 2 over: 2 from a2 first, then 2 from b1.
    d, taken = _reclaim_case(6, 10, 4)
    assert taken == {"a2": 2, "b1": 2}
    assert d.teams["a2"].allocated_gpus == pytest.approx(4.0)
    assert d.teams["b1"].allocated_gpus == pytest.approx(8.0)


# ------------------------------------------------------------------ reclaim at every level


@st.composite
def contended_trees(draw):
    """Departments (some with a sub-department) of teams; the first wave fills the cluster
    from a few teams, the second comes from all of them, so reclaim happens at each level."""
    teams = [Team("org")]
    leaves = []
    for d in range(draw(st.integers(1, 3))):
        dept = f"d{d}"
        teams.append(Team(dept, weight=draw(st.sampled_from([1.0, 2.0])), parent="org"))
        parents = [dept]
        if draw(st.booleans()):
            teams.append(Team(f"{dept}s", weight=draw(st.sampled_from([1.0, 3.0])), parent=dept))
            parents.append(f"{dept}s")
        for p in parents:
            for k in range(draw(st.integers(1, 2))):
                name = f"{p}t{k}"
                teams.append(
                    Team(name, weight=draw(st.sampled_from([1.0, 2.0])), parent=p, namespaces=(name,))
                )
                leaves.append(name)
    count = draw(st.integers(2, 6))
    cluster = nodes(count)
    fillers = draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=2, unique=True))
    first = [gang(f"{draw(st.sampled_from(fillers))}-a{g}", "", submit=g) for g in range(count * 8)]
    first = [replace(g, team=g.id.split("-")[0]) for g in first]
    early = Snapshot(NOW - 3600, cluster, tuple(teams), tuple(first))
    settled = apply(early, decide(early, CONFIG), at=NOW)
    second = [
        gang(f"{t}-b{g}", t, gpus=draw(st.sampled_from([1, 2])), submit=3000 + g)
        for g, t in enumerate(draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=12)))
    ]
    return replace(settled, gangs=settled.gangs + tuple(second))


def _team_of(snap, gid: str) -> str:
    return next(g.team for g in snap.gangs if g.id == gid)


def _sides(snap, victim: str, taker: str) -> tuple[str, str]:
    """The two subtrees under the common ancestor of two teams: (taker's, victim's)."""
    tree = build_tree(snap.teams)
    index = {t.name: i for i, t in enumerate(snap.teams)}
    v, t = tree.below(index[victim], index[taker]), tree.below(index[taker], index[victim])
    return tree.names[t[-1]], tree.names[v[-1]]


@given(contended_trees())
def test_reclaim_takes_no_subtree_below_its_share(snap) -> None:
    d = decide(snap, CONFIG)
    check_invariants(snap, d)
    tree = build_tree(snap.teams)
    index = {t.name: i for i, t in enumerate(snap.teams)}
    for e in d.evictions:
        victim, taker = _team_of(snap, e.gang), _team_of(snap, e.preemptor)
        for i in tree.below(index[victim], index[taker]):  # the team and its groups up to the common one
            s = d.teams[tree.names[i]]
            assert s.allocated_gpus >= s.fair_share_gpus - 1e-6, (e, s)


@given(contended_trees())
def test_no_ping_pong_at_any_level(snap) -> None:
    """A subtree that reclaimed from a sibling subtree is not reclaimed from by it next."""
    first = decide(snap, CONFIG)
    after = apply(snap, first)
    second = decide(after, CONFIG)
    took = {_sides(snap, _team_of(snap, e.gang), _team_of(snap, e.preemptor)) for e in first.evictions}
    for e in second.evictions:
        taker_side, victim_side = _sides(after, _team_of(after, e.gang), _team_of(after, e.preemptor))
        assert (victim_side, taker_side) not in took, e


def test_gpufair_status_prints_the_tree_with_subtotals() -> None:
    from scheduler.daemon.cli import status_table

    def item(name: str, parent: str | None, alloc: float, **status) -> dict:
        spec = {"weight": 1, **({"parent": parent} if parent else {})}
        return {"metadata": {"name": name}, "spec": spec, "status": {"allocatedGPUs": alloc, **status}}

    text = status_table(
        [
            item("b1", "deptB", 3),
            item("deptA", "org", 5, group=True, budgetExhausted=True, budgetExhaustedAt="deptA"),
            item("a1", "deptA", 5, budgetExhaustedAt="deptA"),
            item("org", None, 8, group=True),
            item("deptB", "org", 3, group=True),
        ]
    ).splitlines()
    names = [line.split()[0] for line in text[1:]]
    assert names == ["org/", "deptA/", "a1", "deptB/", "b1"]
    assert text[2].startswith("  deptA/") and text[3].startswith("    a1")
    assert text[3].endswith("budget exhausted (deptA)") and text[2].endswith("budget exhausted")
    assert text[1].split()[3] == "8.0"  # org's subtotal
