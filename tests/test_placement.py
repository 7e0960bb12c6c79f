"""Gang placement: all or nothing, narrowest topology domain, whole nodes, filters; baselines."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scheduler.core import Decisions, Gang, Node, Pod, PolicyConfig, decide
from scheduler.core.cluster import ClusterState, Shape
from scheduler.core.placement import CLUSTER_LEVEL, GangRequest, place_gang
from scheduler.core.scoring import BestFit, FirstFit, Fragmentation, NodeScorer, WorkloadMix
from scheduler.core.shapecache import ShapeCache
from tests.builders import CLIQUE, LEAF, NOW, gang, node, running, snapshot, teams

CONFIG = PolicyConfig()
SPINE_L, LEAF_L, CLIQUE_L, HOST_L = 0, 1, 2, 3
TEAMS = teams(("a", 1.0))


# ---------------------------------------------------------------- helpers


def cluster(nodes_: list[Node], used: list[int] | None = None) -> ClusterState:
    st = ClusterState(nodes_, CONFIG)
    if used:
        rows = [(i, g) for i, g in enumerate(used) if g]
        zero = np.zeros(len(rows), dtype=np.int64)
        st.load_running(
            np.array([i for i, _ in rows], dtype=np.int64),
            np.array([g for _, g in rows], dtype=np.int64),
            zero,
            zero,
            zero,
            {},
        )
        st.commit()
    return st


def request(
    st: ClusterState,
    *shapes: Shape,
    level: int = CLUSTER_LEVEL,
    models: frozenset[str] = frozenset(),
    pinned: np.ndarray | None = None,
    whole_node_gpus: int = 8,
) -> GangRequest:
    return GangRequest(tuple(shapes), st.model_mask(models), level, pinned, whole_node_gpus)


def pods(n: int, gpus: int) -> tuple[Shape, ...]:
    return (Shape(gpus, 0, 0, 0),) * n


def default_scorer() -> NodeScorer:
    return Fragmentation(WorkloadMix.from_shapes([], top=16))


def place(st: ClusterState, req: GangRequest, scorer: NodeScorer | None = None):
    return place_gang(st, ShapeCache(st, scorer or default_scorer()), req)


def snapshot_of(st: ClusterState) -> tuple[np.ndarray, ...]:
    return st.free.copy(), st.cpu_free.copy(), st.mem_free.copy(), st.whole_free.copy(), st.total_free.copy()


def where(d: Decisions, gang_id: str | None = None) -> list[str]:
    """Nodes of the binds (of one gang), in bind order."""
    return [b.node for b in d.binds if gang_id is None or b.gang == gang_id]


def filler(gid: str, gpus: int, on: str, team: str = "a") -> Gang:
    """A running single-pod gang that holds `gpus` GPUs on node `on`."""
    return running(gang(gid, team, gpus=gpus), on)


# ---------------------------------------------------------------- place_gang


def test_a_gang_larger_than_the_free_nodes_places_nothing() -> None:
    st = cluster([node(f"n{i}") for i in range(3)])
    before = snapshot_of(st)
    assert place(st, request(st, *pods(4, 8))) is None
    for a, b in zip(before, snapshot_of(st), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_failed_fill_is_rolled_back() -> None:
    # One 8-GPU node: an 8-GPU pod and a 1-GPU pod each fit alone, never together.
    st = cluster([node("n0")])
    before = snapshot_of(st)
    assert place(st, request(st, Shape(8, 0, 0, 0), Shape(1, 0, 0, 0))) is None
    for a, b in zip(before, snapshot_of(st), strict=True):
        np.testing.assert_array_equal(a, b)
    assert st.journal == []


def test_two_four_gpu_pods_share_the_one_node_with_room() -> None:
    st = cluster([node("n0"), node("n1"), node("n2")], used=[4, 4, 0])
    placed = place(st, request(st, *pods(2, 4)))
    assert placed is not None
    assert [h.node for h in placed.held] == [2, 2]
    assert sorted(s for h in placed.held for s in h.slots) == list(range(8))
    assert placed.level == HOST_L
    assert st.whole_free.tolist() == [4, 4, 0]


def test_placement_returns_one_held_per_pod_in_request_order() -> None:
    st = cluster([node("n0"), node("n1")])
    placed = place(st, request(st, Shape(1, 0, 0, 0), Shape(4, 0, 0, 0), Shape(1, 0, 0, 0)))
    assert placed is not None
    assert [len(h.slots) for h in placed.held] == [1, 4, 1]
    assert len({h.node for h in placed.held}) == 1
    assert len({s for h in placed.held for s in h.slots}) == 6


def test_required_level_keeps_the_gang_in_one_leaf() -> None:
    # leaf-0: n0, n1 with 4 free each; leaf-1: n2 (4 free), n3 (8 free).
    nodes_ = [
        node("n0", leaf="leaf-0"),
        node("n1", leaf="leaf-0"),
        node("n2", leaf="leaf-1"),
        node("n3", leaf="leaf-1"),
    ]
    st = cluster(nodes_, used=[4, 4, 4, 0])
    placed = place(st, request(st, *pods(3, 4), level=LEAF_L))
    assert placed is not None
    assert sorted(h.node for h in placed.held) == [2, 3, 3]
    assert placed.level == LEAF_L


def test_required_level_with_no_domain_big_enough_places_nothing() -> None:
    nodes_ = [
        node("n0", leaf="leaf-0"),
        node("n1", leaf="leaf-0"),
        node("n2", leaf="leaf-1"),
        node("n3", leaf="leaf-1"),
    ]
    st = cluster(nodes_, used=[4, 4, 4, 4])
    before = snapshot_of(st)
    assert place(st, request(st, *pods(3, 4), level=LEAF_L)) is None
    np.testing.assert_array_equal(before[0], st.free)
    # Anywhere in the cluster it fits.
    placed = place(st, request(st, *pods(3, 4)))
    assert placed is not None
    assert placed.level == SPINE_L  # the one spine holds every node


def test_pinned_nodes_are_the_only_ones_used() -> None:
    st = cluster([node("n0"), node("n1"), node("n2")])
    pinned = np.array([False, False, True])
    placed = place(st, request(st, *pods(2, 2), pinned=pinned))
    assert placed is not None
    assert [h.node for h in placed.held] == [2, 2]
    assert place(st, request(st, *pods(4, 2), pinned=pinned)) is None


def test_model_mask_limits_the_nodes() -> None:
    st = cluster([node("n0", model="H100"), node("n1", model="A100"), node("n2", model="H100")])
    placed = place(st, request(st, *pods(1, 8), models=frozenset({"A100"})))
    assert placed is not None
    assert placed.held[0].node == 1
    assert place(st, request(st, *pods(1, 8), models=frozenset({"A100"}))) is None
    assert place(st, request(st, *pods(1, 1), models=frozenset({"B200"}))) is None


def test_pods_of_a_whole_node_prefer_a_fully_free_node() -> None:
    # 16-GPU nodes: best fit alone would put an 8-GPU pod next to the 8 already used.
    nodes_ = [node("n0", 16), node("n1", 16)]
    st = cluster(nodes_, used=[8, 0])
    placed = place(st, request(st, *pods(1, 8)), BestFit())
    assert placed is not None
    assert placed.held[0].node == 1
    # With whole nodes meaning 16 GPUs, an 8-GPU pod is an ordinary pod: best fit.
    st = cluster(nodes_, used=[8, 0])
    placed = place(st, request(st, *pods(1, 8), whole_node_gpus=16), BestFit())
    assert placed is not None
    assert placed.held[0].node == 0


def test_pods_of_a_whole_node_use_a_partly_used_node_when_no_free_node_is_left() -> None:
    st = cluster([node("n0", 16), node("n1", 16)], used=[8, 4])
    placed = place(st, request(st, *pods(1, 8)), BestFit())
    assert placed is not None
    assert placed.held[0].node == 0


def test_first_fit_scorer_takes_the_lowest_node_with_room() -> None:
    st = cluster([node("n0"), node("n1"), node("n2")], used=[6, 2, 7])
    placed = place(st, request(st, *pods(1, 4)), FirstFit())
    assert placed is not None
    assert placed.held[0].node == 1


# ---------------------------------------------------------------- decide(): gangs and topology


def test_gang_that_cannot_fit_binds_nothing_and_says_why() -> None:
    snap = snapshot(tuple(node(f"n{i}") for i in range(3)), TEAMS, [gang("a/g", "a", pods=4, gpus=8)])
    d = decide(snap)
    assert d.binds == ()
    assert d.evictions == ()
    p = d.pending_reason("a/g")
    assert p is not None
    assert p.code == "NoRoom"
    assert "32 GPUs" in p.reason
    assert "4 pods x 8 GPUs" in p.reason


def test_gang_binds_all_its_pods_at_once_when_it_fits() -> None:
    snap = snapshot(tuple(node(f"n{i}") for i in range(4)), TEAMS, [gang("a/g", "a", pods=4, gpus=8)])
    d = decide(snap)
    assert sorted(where(d)) == ["n0", "n1", "n2", "n3"]
    assert all(len(b.gpu_indices) == 8 for b in d.binds)
    assert d.pending == ()


def test_two_four_gpu_pods_land_on_one_node() -> None:
    nodes_ = (node("n0"), node("n1"), node("n2"))
    gangs = [filler("a/f0", 4, "n0"), filler("a/f1", 4, "n1"), gang("a/g", "a", pods=2, gpus=4)]
    d = decide(snapshot(nodes_, TEAMS, gangs))
    assert where(d, "a/g") == ["n2", "n2"]
    idx = [set(b.gpu_indices) for b in d.binds]
    assert idx[0].isdisjoint(idx[1])


def _leaf_cluster() -> tuple[Node, ...]:
    # leaf-0: n00, n01; leaf-1: n02, n03; leaf-2: n04, n05 (one clique per node).
    return tuple(node(f"n{i:02d}", leaf=f"leaf-{i // 2}") for i in range(6))


def test_required_leaf_is_honoured_over_fuller_nodes_elsewhere() -> None:
    # leaf-0 and leaf-1 have 4 + 4 free; leaf-2 has 4 + 8. 3 x 4 GPUs fit only in leaf-2,
    # though the half-used nodes in leaf-0/1 fit the pods more tightly.
    fill = [filler(f"a/f{i}", 4, f"n{i:02d}") for i in range(5)]
    g = gang("a/g", "a", pods=3, gpus=4, topology_required=LEAF)
    d = decide(snapshot(_leaf_cluster(), TEAMS, [*fill, g]))
    assert sorted(where(d, "a/g")) == ["n04", "n05", "n05"]


def test_required_leaf_without_room_waits_for_topology() -> None:
    fill = [filler(f"a/f{i}", 4, f"n{i:02d}") for i in range(6)]
    g = gang("a/g", "a", pods=3, gpus=4, topology_required=LEAF)
    d = decide(snapshot(_leaf_cluster(), TEAMS, [*fill, g]))
    assert d.binds == ()
    assert d.evictions == ()
    p = d.pending_reason("a/g")
    assert p is not None
    assert p.code == "TopologyWait"
    assert LEAF in p.reason
    assert "12 GPUs" in p.reason
    # The same gang without the requirement spreads over leaves and starts.
    free = replace(g, topology_required=None)
    d = decide(snapshot(_leaf_cluster(), TEAMS, [*fill, free]))
    assert len(where(d, "a/g")) == 3
    assert d.pending_reason("a/g") is None


def test_required_clique_lands_in_one_clique() -> None:
    # One leaf; clique c0: n0, n1 (n1 half used); clique c1: n2, n3.
    nodes_ = (
        node("n0", clique="c0"),
        node("n1", clique="c0"),
        node("n2", clique="c1"),
        node("n3", clique="c1"),
    )
    g = gang("a/g", "a", pods=2, gpus=8, topology_required=CLIQUE)
    d = decide(snapshot(nodes_, TEAMS, [filler("a/f", 4, "n1"), g]))
    assert sorted(where(d, "a/g")) == ["n2", "n3"]


def test_required_clique_names_the_clique_when_it_waits() -> None:
    nodes_ = (
        node("n0", clique="c0"),
        node("n1", clique="c0"),
        node("n2", clique="c1"),
        node("n3", clique="c1"),
    )
    g = gang("a/g", "a", pods=2, gpus=8, topology_required=CLIQUE)
    d = decide(snapshot(nodes_, TEAMS, [filler("a/f0", 1, "n1"), filler("a/f1", 1, "n2"), g]))
    assert where(d, "a/g") == []
    p = d.pending_reason("a/g")
    assert p is not None
    assert p.code == "TopologyWait"
    assert CLIQUE in p.reason


def test_same_clique_label_under_two_leaves_is_two_cliques() -> None:
    nodes_ = (node("n0", leaf="leaf-0", clique="c0"), node("n1", leaf="leaf-1", clique="c0"))
    g = gang("a/g", "a", pods=2, gpus=8, topology_required=CLIQUE)
    d = decide(snapshot(nodes_, TEAMS, [g]))
    assert d.binds == ()
    p = d.pending_reason("a/g")
    assert p is not None
    assert p.code == "TopologyWait"


def test_unconstrained_gang_stays_on_one_node_when_one_fits() -> None:
    # Four half-used nodes and one empty node: 2 x 4 GPUs go to the empty node.
    nodes_ = tuple(node(f"n{i}", leaf=f"leaf-{i}") for i in range(5))
    fill = [filler(f"a/f{i}", 4, f"n{i}") for i in range(4)]
    d = decide(snapshot(nodes_, TEAMS, [*fill, gang("a/g", "a", pods=2, gpus=4)]))
    assert where(d, "a/g") == ["n4", "n4"]


def test_unconstrained_gang_stays_in_one_leaf_when_no_node_fits() -> None:
    # leaf-0: n0 (4 free); leaf-1: n1, n2 (4 free each); leaf-2: n3 (4 free).
    # Taken in node order the gang would span n0 and n1; one leaf (leaf-1) can hold it.
    nodes_ = (
        node("n0", leaf="leaf-0"),
        node("n1", leaf="leaf-1"),
        node("n2", leaf="leaf-1"),
        node("n3", leaf="leaf-2"),
    )
    fill = [filler(f"a/f{i}", 4, f"n{i}") for i in range(4)]
    d = decide(snapshot(nodes_, TEAMS, [*fill, gang("a/g", "a", pods=2, gpus=4)]))
    assert sorted(where(d, "a/g")) == ["n1", "n2"]


@pytest.mark.parametrize("required", [LEAF, None], ids=["leaf-required", "unconstrained"])
def test_mixed_pod_sizes_find_the_one_leaf_that_fits(required: str | None) -> None:
    # Each of leaf-0..2 has one free 8-GPU node: an 8-GPU pod and a 1-GPU pod each fit
    # there, but not both. leaf-3 has two free nodes and holds the whole gang; it is the
    # only leaf that can (required), and the narrowest domain that fits (unconstrained).
    nodes_ = (
        node("n0", leaf="leaf-0"),
        node("n1", leaf="leaf-1"),
        node("n2", leaf="leaf-2"),
        node("n3", leaf="leaf-3"),
        node("n4", leaf="leaf-3"),
    )
    members = (Pod("a/g-0", gpus=8, cpu_milli=1_000, memory_mib=1_000), Pod("a/g-1", gpus=1, cpu_milli=1_000))
    g = Gang("a/g", "a", members, submit_s=NOW - 60, topology_required=required)
    d = decide(snapshot(nodes_, TEAMS, [g]))
    assert sorted(where(d, "a/g")) == ["n3", "n4"]
    assert d.pending_reason("a/g") is None


def test_eight_gpu_pod_takes_a_fully_free_sixteen_gpu_node() -> None:
    nodes_ = (node("n0", 16), node("n1", 16))
    gangs = [filler("a/f", 8, "n0"), gang("a/g", "a", gpus=8)]
    for policy in ("gpufair", "drf"):
        d = decide(snapshot(nodes_, TEAMS, gangs), policy=policy)
        assert where(d, "a/g") == ["n1"], policy


def test_gpu_model_list_is_honoured() -> None:
    nodes_ = (node("n0", model="H100"), node("n1", model="A100"), node("n2", model="H100"))
    g = gang("a/g", "a", gpus=8, gpu_models=frozenset({"A100"}))
    d = decide(snapshot(nodes_, TEAMS, [g]))
    assert where(d, "a/g") == ["n1"]
    g2 = gang("a/g2", "a", pods=2, gpus=8, gpu_models=frozenset({"A100"}))
    d = decide(snapshot(nodes_, TEAMS, [g2]))
    assert d.binds == ()
    assert d.pending_reason("a/g2") is not None
    g3 = gang("a/g3", "a", gpus=1, gpu_models=frozenset({"B200"}))
    d = decide(snapshot(nodes_, TEAMS, [g3]))
    p = d.pending_reason("a/g3")
    assert p is not None
    assert p.code == "NoModel"


def test_node_without_cpu_or_memory_is_skipped() -> None:
    nodes_ = (node("n0", cpu=500), node("n1", mem=500), node("n2"))
    d = decide(snapshot(nodes_, TEAMS, [gang("a/g", "a", gpus=1, cpu=1_000, mem=1_000)]))
    assert where(d) == ["n2"]
    # Nowhere with both: waits, and says CPU and memory are what is missing.
    nodes_ = (node("n0", cpu=500), node("n1", mem=500))
    d = decide(snapshot(nodes_, TEAMS, [gang("a/g", "a", gpus=1, cpu=1_000, mem=1_000)]))
    assert d.binds == ()
    p = d.pending_reason("a/g")
    assert p is not None
    # kube-scheduler's words: each node under the resource it lacks.
    assert "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory" in p.reason


def test_cpu_of_running_pods_is_counted() -> None:
    nodes_ = (node("n0", cpu=8_000), node("n1", cpu=8_000))
    busy = running(gang("a/busy", "a", gpus=1, cpu=7_500), "n0")
    d = decide(snapshot(nodes_, TEAMS, [busy, gang("a/g", "a", pods=2, gpus=1, cpu=1_000)]))
    assert where(d, "a/g") == ["n1", "n1"]


def test_unhealthy_gpus_are_not_given_out() -> None:
    nodes_ = (node("n0", unhealthy=frozenset({0, 2, 4})),)
    d = decide(snapshot(nodes_, TEAMS, [gang("a/g", "a", gpus=5)]))
    assert len(d.binds) == 1
    assert d.binds[0].gpu_indices == (1, 3, 5, 6, 7)
    d = decide(snapshot(nodes_, TEAMS, [gang("a/g", "a", gpus=6)]))
    assert d.binds == ()
    assert d.pending_reason("a/g") is not None


def test_unhealthy_gpus_push_a_pod_to_a_healthy_node() -> None:
    nodes_ = (node("n0", unhealthy=frozenset({7})), node("n1"))
    d = decide(snapshot(nodes_, TEAMS, [gang("a/g", "a", pods=2, gpus=4)]))
    assert where(d) == ["n1", "n1"]


def test_min_member_binds_what_fits_beyond_the_minimum() -> None:
    nodes_ = (node("n0"), node("n1"))
    g = gang("a/g", "a", pods=4, gpus=8, min_member=2)
    d = decide(snapshot(nodes_, TEAMS, [g]))
    assert sorted(where(d, "a/g")) == ["n0", "n1"]
    p = d.pending_reason("a/g")
    assert p is not None
    assert p.code == "ExtrasWaiting"
    # Fewer than minMember fit: nothing at all.
    d = decide(snapshot(nodes_[:1], TEAMS, [g]))
    assert d.binds == ()


def test_min_member_extras_are_placed_when_there_is_room() -> None:
    nodes_ = tuple(node(f"n{i}") for i in range(3))
    g = gang("a/g", "a", pods=4, gpus=8, min_member=2)
    d = decide(snapshot(nodes_, TEAMS, [g]))
    assert len(where(d, "a/g")) == 3
    assert len(set(where(d, "a/g"))) == 3


def test_remaining_members_join_the_leaf_of_the_running_ones() -> None:
    # leaf-0: n0 (held by the gang's running pods), n1, n2 (4 free each); leaf-1: n3 (empty).
    nodes_ = (
        node("n0", leaf="leaf-0"),
        node("n1", leaf="leaf-0"),
        node("n2", leaf="leaf-0"),
        node("n3", leaf="leaf-1"),
    )
    g = gang("a/g", "a", pods=4, gpus=4, topology_required=LEAF)
    started = tuple(replace(p, node="n0", start_s=NOW - 600) for p in g.pods[:2])
    g = replace(g, pods=started + g.pods[2:])
    fill = [filler("a/f1", 4, "n1"), filler("a/f2", 4, "n2")]
    d = decide(snapshot(nodes_, TEAMS, [*fill, g]))
    assert sorted(where(d, "a/g")) == ["n1", "n2"]
    # Without the requirement the two pods would take the empty node together.
    g2 = replace(g, topology_required=None)
    d = decide(snapshot(nodes_, TEAMS, [*fill, g2]))
    assert where(d, "a/g") == ["n3", "n3"]


def test_remaining_members_wait_when_their_leaf_is_full() -> None:
    nodes_ = (node("n0", leaf="leaf-0"), node("n1", leaf="leaf-0"), node("n2", leaf="leaf-1"))
    g = gang("a/g", "a", pods=3, gpus=8, topology_required=LEAF)
    g = replace(g, pods=(replace(g.pods[0], node="n0", start_s=NOW - 600), *g.pods[1:]))
    d = decide(snapshot(nodes_, TEAMS, [g]))
    assert d.binds == ()
    p = d.pending_reason("a/g")
    assert p is not None
    # 16 GPUs are free in the cluster, but only 8 in the leaf of the running member:
    # the reason must point at the leaf, as for a gang that has not started.
    assert p.code == "TopologyWait"
    assert LEAF in p.reason


# ---------------------------------------------------------------- baselines


def test_fifo_takes_gangs_in_submission_order() -> None:
    nodes_ = (node("n0"),)
    late = gang("a/late", "a", gpus=8, submit=100)
    early = gang("a/early", "a", gpus=4, submit=0)
    d = decide(snapshot(nodes_, TEAMS, [late, early]), policy="fifo")
    assert where(d) == ["n0"]
    assert d.binds[0].gang == "a/early"
    p = d.pending_reason("a/late")
    assert p is not None
    assert p.code == "NoRoom"


def test_fifo_head_of_line_blocks_later_gangs() -> None:
    nodes_ = (node("n0"), node("n1"))
    gangs = [
        gang("a/first", "a", gpus=2, submit=0),
        gang("a/big", "a", pods=2, gpus=8, submit=10),
        gang("a/small", "a", gpus=1, submit=20),
        gang("a/tiny", "a", milli=250, submit=30),
    ]
    d = decide(snapshot(nodes_, TEAMS, gangs), policy="fifo")
    assert [b.gang for b in d.binds] == ["a/first"]
    assert d.pending_reason("a/big").code == "NoRoom"  # type: ignore[union-attr]
    for gid in ("a/small", "a/tiny"):
        p = d.pending_reason(gid)
        assert p is not None
        assert p.code == "QueuedBehind"
        assert "a/big" in p.reason
    # The default policy does not block: the small gangs start.
    d = decide(snapshot(nodes_, TEAMS, gangs))
    assert {b.gang for b in d.binds} == {"a/first", "a/small", "a/tiny"}


def test_fifo_places_first_fit() -> None:
    nodes_ = (node("n0"), node("n1"), node("n2"))
    fill = [filler("a/f1", 5, "n1"), filler("a/f2", 7, "n2")]
    d = decide(snapshot(nodes_, TEAMS, [*fill, gang("a/g", "a", gpus=1)]), policy="fifo")
    assert where(d, "a/g") == ["n0"]
    d = decide(snapshot(nodes_, TEAMS, [*fill, gang("a/g", "a", gpus=2)]), policy="fifo")
    assert where(d, "a/g") == ["n0"]


def test_fifo_never_preempts() -> None:
    nodes_ = (node("n0"),)
    scav = running(gang("a/scav", "a", gpus=8, priority=-10), "n0", started=7200)
    urgent = gang("a/urgent", "a", gpus=8, priority=200_000)
    d = decide(snapshot(nodes_, TEAMS, [scav, urgent]), policy="fifo")
    assert d.evictions == ()
    assert d.binds == ()
    # gpufair's own policy evicts the scavenger for the production gang.
    d = decide(snapshot(nodes_, TEAMS, [scav, urgent]))
    assert {e.gang for e in d.evictions} == {"a/scav"}


def test_drf_places_best_fit() -> None:
    nodes_ = (node("n0"), node("n1"), node("n2"))
    fill = [filler("a/f1", 5, "n1"), filler("a/f2", 7, "n2")]
    d = decide(snapshot(nodes_, TEAMS, [*fill, gang("a/g", "a", gpus=1)]), policy="drf")
    assert where(d, "a/g") == ["n2"]
    d = decide(snapshot(nodes_, TEAMS, [*fill, gang("a/g", "a", gpus=2)]), policy="drf")
    assert where(d, "a/g") == ["n1"]


def test_drf_serves_the_team_with_the_smaller_dominant_share_first() -> None:
    nodes_ = (node("n0"),)
    two = teams(("a", 1.0), ("b", 1.0))
    gangs = [
        filler("a/run", 4, "n0"),
        gang("a/g", "a", gpus=4, submit=0),
        gang("b/g", "b", gpus=4, submit=100),
    ]
    d = decide(snapshot(nodes_, two, gangs), policy="drf")
    assert [b.gang for b in d.binds] == ["b/g"]
    assert d.pending_reason("a/g") is not None
    # FIFO goes by submission instead.
    d = decide(snapshot(nodes_, two, gangs), policy="fifo")
    assert [b.gang for b in d.binds] == ["a/g"]


def test_drf_dominant_share_counts_cpu() -> None:
    # Team a holds 1 GPU but almost all CPU; team b holds 2 GPUs. a's dominant share is higher.
    nodes_ = (node("n0", cpu=10_000), node("n1", cpu=10_000))
    two = teams(("a", 1.0), ("b", 1.0))
    gangs = [
        running(gang("a/run", "a", gpus=1, cpu=9_000), "n0"),
        running(gang("b/run", "b", gpus=2, cpu=1_000), "n1"),
        gang("a/g", "a", gpus=7, cpu=1_000, submit=0),
        gang("b/g", "b", gpus=7, cpu=1_000, submit=100),
    ]
    # Only n0 has 7 GPUs free: whoever goes first gets it. By GPUs alone a (1/16) would
    # go before b (2/16); by CPU a holds 9/20 of the cluster.
    d = decide(snapshot(nodes_, two, gangs), policy="drf")
    assert where(d, "b/g") == ["n0"]
    assert where(d, "a/g") == []


@pytest.mark.parametrize("policy", ["gpufair", "drf", "fifo"])
def test_every_policy_keeps_gangs_all_or_nothing(policy: str) -> None:
    nodes_ = tuple(node(f"n{i}") for i in range(3))
    gangs = [gang("a/g", "a", pods=4, gpus=8), gang("a/h", "a", pods=2, gpus=8, submit=10)]
    d = decide(snapshot(nodes_, TEAMS, gangs), policy=policy)
    assert where(d, "a/g") == []
    if policy == "fifo":
        assert where(d, "a/h") == []
        assert d.pending_reason("a/h").code == "QueuedBehind"  # type: ignore[union-attr]
    else:
        assert len(where(d, "a/h")) == 2
