"""The decision core's extension points (scheduler/core/framework.py): policies are built
from named units, a bad name is refused with the valid ones, the victim rule's exact and
vectorised forms agree, and a new baseline (strict-priority) is one file plus one line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings

from scheduler.core import InvalidInput, decide
from scheduler.core.cycle import Cycle
from scheduler.core.filters import NODE_FILTERS
from scheduler.core.gates import GATES
from scheduler.core.incremental import Core
from scheduler.core.model import Tier
from scheduler.core.ordering import QUEUE_ORDERS
from scheduler.core.passes import TIER_PASSES
from scheduler.core.policies import POLICIES, get_policy
from scheduler.core.policy import Policy
from scheduler.core.preferences import PREFERENCES
from scheduler.core.reclaim import RECLAIM_RULES
from scheduler.core.victims import VICTIM_POLICIES
from tests.builders import gang, names, nodes, refused, running, snapshot, teams
from tests.test_properties import CONFIG, contended, scenarios

CORE = Path(__file__).resolve().parents[1] / "scheduler" / "core"


def _agree(snap, policy: str) -> int:
    core = Core.from_snapshot(snap, CONFIG, policy)
    cyc = Cycle(core, snap.now_s, snap.usage)
    rule = core.policy.victims
    compared = 0
    for v in cyc.views:
        if v.problem is not None or v.tier is Tier.SCAVENGER:
            continue
        w = cyc.member(v, 0)
        for reclaim in (False, True):
            ok = rule.eligible(cyc, w, reclaim)
            if ok is None:
                continue
            exact = rule.accept(cyc, w)
            vector = rule.acceptable(cyc, w)
            for g in ok.nonzero()[0]:
                assert bool(vector[g]) == exact({}, cyc.victim(int(g))), (w.gang.id, int(g))
                compared += 1
    return compared


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_the_victim_rules_exact_and_vectorised_forms_agree(snap):
    _agree(snap, "gpufair")


@settings(max_examples=100, deadline=None)
@given(contended())
def test_the_victim_rules_forms_agree_where_reclaim_happens(snap):
    _agree(snap, "gpufair")


def test_a_bad_unit_name_is_refused_with_the_valid_ones():
    err = refused(Policy.build, "mine", scorer="fragmentaton", order="fair-share", passes=["training"])
    names(err, "policy", "scorer", "fragmentaton", "fragmentation", "best-fit")
    err = refused(Policy.build, "mine", scorer="best-fit", order="fair", passes=["training"])
    names(err, "policy", "order", "fair", "fair-share", "dominant-share", "arrival")
    err = refused(Policy.build, "mine", scorer="best-fit", order="arrival", passes=["trianing"])
    names(err, "policy", "pass", "trianing", "nominated", "production", "training", "scavenger", "fifo")
    err = refused(Policy.build, "mine", "best-fit", "arrival", ["fifo"], victims="cheapest")
    names(err, "policy", "victims", "protect-shares")
    err = refused(Policy.build, "mine", "best-fit", "arrival", ["fifo"], reclaim="always")
    names(err, "policy", "reclaim", "below-share")
    err = refused(Policy.build, "mine", "best-fit", "arrival", ["fifo"], filters=["taints"])
    names(err, "policy", "filter", "gpu-model")
    err = refused(Policy.build, "mine", "best-fit", "arrival", ["fifo"], gates=["quota"])
    names(err, "policy", "gate", "budget", "production-allowance")
    err = refused(get_policy, "gpufiar")
    names(err, "policy", "name", "gpufiar", *POLICIES)
    with pytest.raises(InvalidInput):
        decide(snapshot(nodes(1), teams(("a", 1)), []), CONFIG, "gpufiar")


def test_a_policy_built_from_names_decides_as_the_registered_one():
    built = Policy.build(
        "gpufair-again",
        scorer="fragmentation",
        order="fair-share",
        passes=["nominated", "production", "training", "scavenger"],
    )
    snap = snapshot(
        nodes(2),
        teams(("a", 1), ("b", 3)),
        [running(gang(f"a/r{i}", "a", gpus=2), f"n{i // 4:02d}") for i in range(8)]
        + [gang(f"b/w{i}", "b", gpus=2, submit=i) for i in range(4)],
    )
    mine, theirs = decide(snap, CONFIG, built), decide(snap, CONFIG, "gpufair")
    assert mine.binds == theirs.binds and mine.evictions == theirs.evictions and mine.evictions


def test_every_unit_is_named_and_says_why():
    registries = [QUEUE_ORDERS, TIER_PASSES, VICTIM_POLICIES, RECLAIM_RULES, NODE_FILTERS, GATES, PREFERENCES]
    for registry in registries:
        for name, unit in registry.items():
            assert unit.name == name
            assert (type(unit).__doc__ or "").strip(), f"{type(unit).__name__} says nothing of why"


def test_no_core_module_is_over_500_lines_and_none_imports_a_cycle():
    graph: dict[str, set[str]] = {}
    for path in CORE.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 500, path.name
        tree = ast.parse(path.read_text())
        # Imports under `if TYPE_CHECKING:` are for types only: they run nothing.
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
            for inner in ast.walk(node)
        }
        deps = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or id(node) in typing_only or not node.module:
                continue
            if node.module == "scheduler.core":
                deps.update(a.name for a in node.names)
            elif node.module.startswith("scheduler.core."):
                deps.add(node.module.rsplit(".", 1)[-1])
        graph[path.stem] = deps
    seen: set[str] = set()

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, " -> ".join((*path, mod))
        if mod in seen:
            return
        for dep in graph.get(mod, ()):
            visit(dep, (*path, mod))
        seen.add(mod)

    for mod in graph:
        visit(mod, ())


# ---------------------------------------------------------------- the worked example


def _priority_case():
    # Team a holds 8 of 16 GPUs; b holds none. One 8-GPU node is free. a's next gang has a
    # higher priority than b's.
    gangs = [
        running(gang("a/r", "a", gpus=8), "n00"),
        gang("a/urgent", "a", gpus=8, priority=50, submit=10),
        gang("b/plain", "b", gpus=8, submit=0),
    ]
    return snapshot(nodes(2), teams(("a", 1), ("b", 1)), gangs)


def test_strict_priority_serves_the_highest_priority_whatever_the_team():
    snap = _priority_case()
    assert [b.gang for b in decide(snap, CONFIG, "strict-priority").binds] == ["a/urgent"]
    # gpufair gives the node to b, which is below its share.
    assert [b.gang for b in decide(snap, CONFIG, "gpufair").binds] == ["b/plain"]


def test_strict_priority_orders_equal_priorities_by_age_and_never_reclaims():
    gangs = [running(gang(f"a/r{i}", "a", gpus=8), f"n{i:02d}") for i in range(2)]
    gangs += [gang("b/late", "b", gpus=8, submit=20), gang("c/early", "c", gpus=8, submit=10)]
    snap = snapshot(nodes(3), teams(("a", 1), ("b", 1), ("c", 1)), gangs)
    d = decide(snap, CONFIG, "strict-priority")
    assert [b.gang for b in d.binds] == ["c/early"]
    assert d.evictions == ()  # b is far below its share, yet it waits: no reclaim
    assert "gpufair" in POLICIES and POLICIES["strict-priority"].reclaim is None
