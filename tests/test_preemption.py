"""The bounds that rule out hopeless preemption plans before victims are tried one by one."""

from __future__ import annotations

from dataclasses import replace
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core import Gang, Pod, PolicyConfig, Snapshot, Team, decide, preemption
from scheduler.core.cluster import ClusterState, Shape
from scheduler.core.model import Tier
from scheduler.core.placement import CLUSTER_LEVEL, GangRequest
from scheduler.core.preemption import (
    Candidates,
    Plan,
    Victim,
    _acceptable_pods,
    _could_fit,
    _freeable,
    _may_beat,
    _room_fits,
    _slack_clears_nodes,
)
from tests.builders import NOW, apply, node
from tests.test_properties import CONFIG, contended

T, S = int(Tier.TRAINING), int(Tier.SCAVENGER)


def _cand(milli: list[int], slack: list[float] | None) -> Candidates:
    """One node; gangs 0 and 1 of team 0 (training), gang 2 of team 1 (scavenger)."""
    return Candidates(
        tier=np.array([T, T, S]),
        cost=np.zeros(3),
        pod_node=np.zeros(3, dtype=np.int64),
        pod_gang=np.arange(3),
        pod_milli=np.array(milli, dtype=np.int64),
        victim=lambda g: None,  # type: ignore[arg-type, return-value]
        acceptable=np.ones(3, dtype=bool),
        team=np.array([0, 0, 1]),
        slack=None if slack is None else np.array(slack),
    )


def test_a_team_gives_no_more_than_its_slack_on_a_node():
    pods = np.arange(3)
    # Two 4-GPU gangs of a team that may give 6 GPUs, one scavenger GPU: at most 7 GPUs
    # (and a milli-GPU of margin, so the bound is never tighter than accept).
    slots, milli = _freeable(1, _cand([4000, 4000, 1000], [6.0, 0.0]), pods)
    assert (slots.tolist(), milli.tolist()) == ([7], [7001])
    # No limit (production preempts): everything.
    slots, milli = _freeable(1, _cand([4000, 4000, 1000], None), pods)
    assert (slots.tolist(), milli.tolist()) == ([9], [9000])
    # A slack just under a whole GPU still frees that GPU's worth only up to the slack.
    slots, _ = _freeable(1, _cand([4000, 4000, 1000], [5.9999999, 0.0]), pods)
    assert slots.tolist() == [7]  # never tighter than accept, which allows 6 within its margin


def test_shared_gpu_victims_keep_their_slots_unlimited():
    # Half-GPU pods may free a whole slot each with half a GPU taken: slots are not
    # capped by a slack of half a GPU, the milli-GPUs are.
    slots, milli = _freeable(1, _cand([500, 500, 1000], [0.5, 0.0]), np.arange(3))
    assert (slots.tolist(), milli.tolist()) == ([3], [1501])


def _filled(gpus: list[int], slack_team_gpus: list[int]) -> tuple[ClusterState, Candidates]:
    """Nodes of 8 GPUs, node i running one gang of `gpus[i]` GPUs of team 0 (training)."""
    st_ = ClusterState([node(f"n{i}") for i in range(len(gpus))], PolicyConfig())
    n = len(gpus)
    st_.load_running(
        np.arange(n),
        np.array(gpus),
        np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        {},
    )
    cand = Candidates(
        tier=np.full(n, T),
        cost=np.zeros(n),
        pod_node=np.arange(n),
        pod_gang=np.arange(n),
        pod_milli=np.array(gpus) * 1000,
        victim=lambda g: None,  # type: ignore[arg-type, return-value]
        acceptable=np.ones(n, dtype=bool),
        team=np.zeros(n, dtype=np.int64),
        slack=np.array(slack_team_gpus, dtype=np.float64),
    )
    return st_, cand


def test_the_slack_must_clear_as_many_whole_nodes_as_the_gang_has_pods():
    # Three nodes, each half taken by a 4-GPU gang of a team that may give 6 GPUs: any
    # one node can be cleared, two cannot, so a gang of two 8-GPU pods has no plan. Each
    # node on its own passes the per-node bound.
    st_, cand = _filled([4, 4, 4], [6])
    pods = np.arange(3)
    slots, freed = _freeable(3, cand, pods)
    two = GangRequest((Shape(8, 0, 0, 0),) * 2, None, CLUSTER_LEVEL)
    one = GangRequest((Shape(8, 0, 0, 0),), None, CLUSTER_LEVEL)
    assert _room_fits(st_, two, slots, freed, None)
    assert not _slack_clears_nodes(st_, two, cand, pods, slots)
    assert _slack_clears_nodes(st_, one, cand, pods, slots)
    # With 8 GPUs of slack two nodes can be cleared; a free node costs nothing.
    st_, cand = _filled([4, 4, 4], [8])
    assert _slack_clears_nodes(st_, two, cand, pods, _freeable(3, cand, pods)[0])
    st_, cand = _filled([4, 0, 4], [6])
    assert _slack_clears_nodes(st_, two, cand, pods, _freeable(3, cand, pods)[0])


@st.composite
def _big_gangs_on_a_full_cluster(draw):
    """Two teams fill 8-GPU nodes with small gangs; a third asks for gangs of several
    whole-node pods: reclaim plans that must clear whole nodes out of little slack, the
    case the bound prunes."""
    count = draw(st.integers(6, 12))  # room enough that a gang of a few nodes is within a share
    cluster = tuple(node(f"n{i}", 8, leaf=f"leaf-{i // 2}") for i in range(count))
    # The asking team weighs more, so the holders keep little slack: just what it asks for.
    teams = tuple(Team(f"t{t}", weight=3.0 if t == 2 else 1.0, namespaces=(f"t{t}",)) for t in range(3))
    first = []
    for g in range(count * draw(st.sampled_from([2, 4]))):
        team = draw(st.sampled_from(["t0", "t1"]))
        gpus = draw(st.sampled_from([1, 2, 4]))
        first.append(Gang(f"{team}/a{g}", team, (Pod(f"{team}/a{g}-0", gpus=gpus),), submit_s=NOW - 7200 + g))
    snap = Snapshot(NOW - 600, cluster, teams, tuple(first))
    settled = apply(snap, decide(snap, CONFIG), at=NOW)
    second = [
        Gang(
            f"t2/b{g}",
            "t2",
            tuple(Pod(f"t2/b{g}-{k}", gpus=8) for k in range(size)),
            submit_s=NOW - 300 + g,
        )
        for g, size in enumerate(draw(st.lists(st.integers(2, 4), min_size=1, max_size=2)))
    ]
    return replace(settled, gangs=settled.gangs + tuple(second))


def _same_without_bounds(snap) -> None:
    """The bounds only save victim walks: the decisions are those of walking every domain."""
    with_bounds = decide(snap, CONFIG)
    with (
        mock.patch.object(preemption, "_slack_clears_nodes", lambda *_: True),
        mock.patch.object(preemption, "_may_beat", lambda *_: True),
        mock.patch.object(preemption, "_room_fits", lambda *_: True),
        mock.patch.object(preemption, "_could_fit", lambda *_: True),
    ):
        without = decide(snap, CONFIG)
    assert with_bounds.binds == without.binds
    assert with_bounds.evictions == without.evictions
    assert tuple(with_bounds.pending) == tuple(without.pending)


@settings(max_examples=300, deadline=None)
@given(_big_gangs_on_a_full_cluster())
def test_the_slack_bound_never_rules_out_a_plan_that_exists(snap):
    _same_without_bounds(snap)


@settings(max_examples=200, deadline=None)
@given(contended())
def test_a_domain_skipped_for_its_cheapest_victim_held_no_better_plan(snap):
    # Reclaim on nodes full of one team's small gangs: several nodes can be cleared, and
    # a node whose cheapest victim costs more than the best plan so far is not walked.
    _same_without_bounds(snap)


@st.composite
def _victims_across_nodes(draw):
    """Gangs of one to three pods spread over a few 8-GPU nodes (whole GPUs or, with
    `shared`, some half-GPU pods), a request, and a domain of consecutive nodes."""
    n = draw(st.integers(2, 6))
    shared = draw(st.booleans())
    sizes = [1000, 2000, 4000] + ([500] if shared else [])
    rows = []  # (node, gang, milli)
    gangs = draw(st.integers(1, 8))
    for g in range(gangs):
        for _ in range(draw(st.integers(1, 3))):
            rows.append((draw(st.integers(0, n - 1)), g, draw(st.sampled_from(sizes))))
    node_of = np.array([r[0] for r in rows], dtype=np.int64)
    milli = np.array([r[2] for r in rows], dtype=np.int64)
    st_ = ClusterState([node(f"n{i}") for i in range(n)], PolicyConfig())
    whole = milli >= 1000
    st_.load_running(
        node_of, np.where(whole, milli // 1000, 0), np.where(whole, 0, milli), np.zeros_like(milli),
        np.zeros_like(milli), {},
    )
    cand = Candidates(
        tier=np.array([draw(st.sampled_from([T, S])) for _ in range(gangs)]),
        cost=np.zeros(gangs),
        pod_node=node_of,
        pod_gang=np.array([r[1] for r in rows], dtype=np.int64),
        pod_milli=milli,
        victim=lambda g: None,  # type: ignore[arg-type, return-value]
        acceptable=np.array([draw(st.booleans()) for _ in range(gangs)]),
        team=np.array([draw(st.integers(0, 1)) for _ in range(gangs)], dtype=np.int64),
        slack=np.array([draw(st.sampled_from([0.0, 1.0, 3.0, 8.0])) for _ in range(2)]),
    )
    pods = draw(st.sampled_from([1, 2, 4, 8]))
    req = GangRequest((Shape(pods, 0, 0, 0),) * draw(st.integers(1, 2)), None, CLUSTER_LEVEL)
    first = draw(st.integers(0, n - 1))
    within = np.zeros(n, dtype=bool)
    within[first : draw(st.integers(first + 1, n))] = True
    return st_, cand, req, within, shared


@settings(max_examples=300, deadline=None)
@given(_victims_across_nodes())
def test_a_domains_bound_from_the_whole_clusters_figures_is_its_own(case):
    # On a domain's nodes only the pods of its own gangs run, so what every candidate could
    # free there bounds the domain as its own gangs do: the same, and never tighter (with
    # half-GPU victims elsewhere the whole cluster's slots are the looser kind).
    st_, cand, req, within, shared = case
    inside = np.unique(cand.pod_gang[within[cand.pod_node]])
    own = _could_fit(st_, req, cand, inside, within)
    everyone = _room_fits(st_, req, *_freeable(st_.node_count, cand, _acceptable_pods(cand, None)), within)
    assert everyone or not own  # never rules out what the domain's own gangs allow
    if not shared:
        assert everyone == own


def _plan(*lost: float) -> Plan:
    """A plan of scavenger victims (their rank is their lost work alone)."""
    victims = tuple(
        Victim(k, f"g{k}", "t", Tier.SCAVENGER, 1.0, cost, (), (), np.zeros(0, dtype=np.int64))
        for k, cost in enumerate(lost)
    )
    return Plan(victims, sum(lost), 3)


def test_a_domain_may_beat_a_plan_only_with_a_cheaper_victim_or_fewer_of_them():
    _, cand = _filled([4, 4, 4], [8])
    weight = np.array([10.0, 5.0, 20.0])  # what each gang would add to a plan's rank
    node = np.array([False, True, False])  # the domain holds gang 1 only
    assert not _may_beat(_plan(5.0), weight, cand, node)  # equal rank, no fewer victims
    assert _may_beat(_plan(2.0, 3.0), weight, cand, node)  # equal rank with fewer victims
    assert _may_beat(_plan(6.0), weight, cand, node)
    assert not _may_beat(_plan(4.0), weight, cand, node)
    unacceptable = replace(cand, acceptable=np.array([True, False, True]))
    assert not _may_beat(_plan(1e9), weight, unacceptable, node)  # no victim to take there
