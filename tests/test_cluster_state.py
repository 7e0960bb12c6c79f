"""ClusterState: free milli-GPUs per slot, running pods, the journal, topology domains, capacity."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core import Node, PolicyConfig
from scheduler.core.cluster import FULL, UNUSABLE, ClusterState, Held, Shape
from tests.builders import CLIQUE, LEAF, SPINE, node

CONFIG = PolicyConfig()
SPINE_L, LEAF_L, CLIQUE_L, HOST_L = range(4)


def state(*nodes_: Node, config: PolicyConfig = CONFIG) -> ClusterState:
    return ClusterState(list(nodes_), config)


def load(
    st: ClusterState,
    rows: list[tuple[int, int, int, int, int]],
    indices: dict[int, tuple[int, ...]] | None = None,
) -> dict[int, Held]:
    """Bound pods as (node, gpus, milli, cpu, mem) rows."""
    cols = np.array(rows, dtype=np.int64).reshape(-1, 5).T
    return st.load_running(cols[0], cols[1], cols[2], cols[3], cols[4], indices or {})


def arrays(st: ClusterState) -> dict[str, np.ndarray]:
    return {
        "free": st.free.copy(),
        "cpu": st.cpu_free.copy(),
        "mem": st.mem_free.copy(),
        "whole": st.whole_free.copy(),
        "total": st.total_free.copy(),
        "anon": st.anon_mask.copy(),
    }


def assert_same(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> None:
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


# ---------------------------------------------------------------- slots and health


def test_slots_of_smaller_and_unhealthy_nodes_are_unusable() -> None:
    st = state(node("a", 8, unhealthy=frozenset({1, 3})), node("b", 4))
    assert st.free.shape == (2, 8)
    assert st.free[0].tolist() == [FULL, UNUSABLE, FULL, UNUSABLE, FULL, FULL, FULL, FULL]
    assert st.free[1].tolist() == [FULL] * 4 + [UNUSABLE] * 4
    assert st.usable.tolist() == [6, 4]
    assert st.whole_free.tolist() == [6, 4]
    assert st.total_free.tolist() == [6000, 4000]
    assert st.healthy_gpus() == 10


def test_unhealthy_slots_are_never_allocated() -> None:
    st = state(node("a", 8, unhealthy=frozenset({1, 3})))
    held = st.allocate(0, Shape(6, 0, 0, 0))
    assert held.slots == (0, 2, 4, 5, 6, 7)
    assert st.free[0].tolist() == [0, UNUSABLE, 0, UNUSABLE, 0, 0, 0, 0]
    assert st.gpu_capacity(Shape(1, 0, 0, 0)).tolist() == [0]
    assert st.gpu_capacity(Shape(0, 100, 0, 0)).tolist() == [0]
    assert st.total_free.tolist() == [0]


def test_shared_pods_never_land_on_unhealthy_slots() -> None:
    st = state(node("a", 2, unhealthy=frozenset({0})))
    held = st.allocate(0, Shape(0, 400, 0, 0))
    assert held.slots == (1,)
    assert st.free[0].tolist() == [UNUSABLE, 600]
    assert st.gpu_capacity(Shape(0, 300, 0, 0)).tolist() == [2]  # 600 // 300, nothing from slot 0


def test_healthy_gpus_leaves_out_unschedulable_nodes() -> None:
    st = state(node("a", 8), replace(node("b", 8), schedulable=False), node("c", 4, unhealthy=frozenset({0})))
    assert st.healthy_gpus() == 8 + 3


# ---------------------------------------------------------------- running pods


def test_anonymous_whole_gpu_pods_take_the_lowest_free_slots() -> None:
    st = state(node("a", 8), node("b", 8, unhealthy=frozenset({0, 2})))
    held = load(st, [(0, 2, 0, 100, 10), (0, 3, 0, 200, 20), (1, 2, 0, 0, 0)])
    assert held == {}  # no slot indices: nothing specific to remember per row
    assert st.free[0].tolist() == [0, 0, 0, 0, 0, FULL, FULL, FULL]
    assert st.free[1].tolist() == [UNUSABLE, 0, UNUSABLE, 0, FULL, FULL, FULL, FULL]
    assert st.anon_mask[0].tolist() == [True] * 5 + [False] * 3
    assert st.anon_mask[1].tolist() == [False, True, False, True, False, False, False, False]
    assert st.whole_free.tolist() == [3, 4]
    assert st.total_free.tolist() == [3000, 4000]
    assert st.cpu_free.tolist() == [128_000 - 300, 128_000]
    assert st.mem_free.tolist() == [1_024_000 - 30, 1_024_000]
    assert not st.overcommitted.any()


def test_whole_gpu_pods_with_indices_take_those_slots() -> None:
    st = state(node("a", 8))
    held = load(st, [(0, 2, 0, 500, 50), (0, 2, 0, 0, 0)], indices={0: (5, 6)})
    assert held == {0: Held(0, (5, 6), FULL, 500, 50)}
    # The indexed pod holds 5 and 6; the anonymous one the lowest slots still free.
    assert st.free[0].tolist() == [0, 0, FULL, FULL, FULL, 0, 0, FULL]
    assert st.anon_mask[0].tolist() == [True, True, False, False, False, False, False, False]
    assert st.whole_free.tolist() == [4]
    assert not st.overcommitted.any()


def test_shared_pods_go_to_the_best_fitting_slot() -> None:
    st = state(node("a", 4))
    rows = [
        (0, 0, 300, 0, 0),  # indexed: slot 0 -> 700 free
        (0, 0, 600, 0, 0),  # indexed: slot 1 -> 400 free
        (0, 0, 400, 0, 0),  # placed last (largest first): slot 1 (400) -> 0
        (0, 0, 500, 0, 0),  # placed second: slot 0 is taken, slot 2 (1000) -> 500
        (0, 0, 700, 0, 0),  # placed first: smallest free >= 700 is slot 0 (700) -> 0
    ]
    held = load(st, rows, indices={0: (0,), 1: (1,)})
    assert st.free[0].tolist() == [0, 0, 500, FULL]
    assert [held[r].slots for r in range(5)] == [(0,), (1,), (1,), (2,), (0,)]
    assert [held[r].milli_per_slot for r in range(5)] == [300, 600, 400, 500, 700]
    assert st.whole_free.tolist() == [1]
    assert st.total_free.tolist() == [1500]
    assert not st.anon_mask.any()
    assert not st.overcommitted.any()


def test_shared_pods_prefer_a_used_slot_over_a_whole_gpu_next_to_anonymous_pods() -> None:
    st = state(node("a", 4))
    load(st, [(0, 2, 0, 0, 0), (0, 0, 250, 0, 0), (0, 0, 250, 0, 0)])
    assert st.free[0].tolist() == [0, 0, 500, FULL]


def test_running_pods_beyond_healthy_gpus_overcommit_the_node() -> None:
    st = state(node("a", 8, unhealthy=frozenset({0})), node("b", 8))
    load(st, [(0, 8, 0, 0, 0), (1, 4, 0, 0, 0)])
    assert st.overcommitted.tolist() == [True, False]
    assert st.free[0].tolist() == [UNUSABLE] + [0] * 7
    cpu_only = Shape(0, 0, 1_000, 0)
    assert st.capacity(cpu_only).tolist() == [0, 128]
    assert st.capacity(Shape(1, 0, 0, 0)).tolist() == [0, 4]


def test_pod_on_a_gpu_that_turned_unhealthy_overcommits_the_node() -> None:
    st = state(node("a", 8, unhealthy=frozenset({7})))
    load(st, [(0, 1, 0, 0, 0)], indices={0: (7,)})
    assert st.overcommitted.tolist() == [True]
    # Seven GPUs look free, but nothing more is placed on an overcommitted node.
    assert st.whole_free.tolist() == [7]
    assert st.capacity(Shape(1, 0, 0, 0)).tolist() == [0]
    assert st.capacity(Shape(0, 500, 0, 0)).tolist() == [0]


def test_shared_pods_that_do_not_fit_overcommit_the_node() -> None:
    st = state(node("a", 1), node("b", 1))
    load(st, [(0, 0, 600, 0, 0), (0, 0, 600, 0, 0), (1, 0, 600, 0, 0)])
    assert st.overcommitted.tolist() == [True, False]
    assert st.capacity(Shape(0, 400, 0, 0)).tolist() == [0, 1]


def test_cpu_or_memory_beyond_allocatable_overcommits_the_node() -> None:
    st = state(node("a", 8, cpu=4_000), node("b", 8, mem=1_000), node("c", 8))
    load(st, [(0, 1, 0, 5_000, 0), (1, 1, 0, 0, 2_000), (2, 1, 0, 4_000, 1_000)])
    assert st.overcommitted.tolist() == [True, True, False]
    assert st.capacity(Shape(1, 0, 0, 0)).tolist() == [0, 0, 7]


# ---------------------------------------------------------------- journal


def test_rollback_restores_every_array_exactly() -> None:
    st = state(node("a", 8), node("b", 4, unhealthy=frozenset({3})), node("c", 8))
    held = load(
        st,
        [(0, 2, 0, 1_000, 100), (0, 1, 0, 2_000, 200), (1, 0, 300, 500, 50), (2, 0, 0, 700, 70)],
        indices={1: (6,)},
    )
    st.commit()
    before = arrays(st)
    mark = st.mark()
    anonymous = Held(0, (), 0, 1_000, 100, anonymous_whole=2)
    st.release(anonymous)
    st.release(held[1])
    a = st.allocate(0, Shape(3, 0, 4_000, 400))
    b = st.allocate(1, Shape(0, 500, 100, 10))
    c = st.allocate(2, Shape(0, 0, 300, 30))
    st.release(a)
    st.retake(a)
    assert (a.slots, b.slots, c.slots) == ((0, 1, 2), (0,), ())
    assert not np.array_equal(st.free, before["free"])
    st.rollback(mark)
    assert_same(before, arrays(st))
    assert st.mark() == mark


def test_rollback_to_an_inner_mark_keeps_earlier_changes() -> None:
    st = state(node("a", 8))
    st.allocate(0, Shape(2, 0, 100, 10))
    kept = arrays(st)
    inner = st.mark()
    st.allocate(0, Shape(0, 250, 100, 10))
    st.allocate(0, Shape(1, 0, 100, 10))
    st.rollback(inner)
    assert_same(kept, arrays(st))
    st.rollback(0)
    assert_same(arrays(state(node("a", 8))), arrays(st))


def test_commit_forgets_the_journal_but_keeps_the_changes() -> None:
    st = state(node("a", 8))
    st.allocate(0, Shape(3, 0, 1_000, 0))
    st.commit()
    after = arrays(st)
    st.rollback(0)
    assert_same(after, arrays(st))
    assert st.whole_free.tolist() == [5]
    assert st.cpu_free.tolist() == [127_000]


def test_every_change_is_logged_by_node() -> None:
    st = state(node("a", 8), node("b", 8), node("c", 8))
    start = len(st.change_log)
    mark = st.mark()
    held = st.allocate(2, Shape(1, 0, 0, 0))
    st.allocate(0, Shape(0, 100, 0, 0))
    st.release(held)
    st.rollback(mark)
    assert st.change_log[start : start + 3] == [2, 0, 2]
    assert set(st.change_log[start + 3 :]) == {0, 2}


# ---------------------------------------------------------------- release


def test_release_of_an_anonymous_pod_frees_exactly_its_gpus() -> None:
    st = state(node("a", 8))
    load(st, [(0, 3, 0, 0, 0), (0, 2, 0, 0, 0)])
    assert st.whole_free.tolist() == [3]
    st.release(Held(0, (), 0, 0, 0, anonymous_whole=2))
    assert st.whole_free.tolist() == [5]
    assert int(st.anon_mask[0].sum()) == 3
    assert int((st.free[0] == 0).sum()) == 3


def test_release_of_an_anonymous_pod_never_frees_a_shared_slot() -> None:
    st = state(node("a", 4))
    # Two 500m pods fill slot 0 (free 0, like a whole-GPU slot); one anonymous GPU; one 300m pod.
    load(
        st,
        [(0, 0, 500, 0, 0), (0, 0, 500, 0, 0), (0, 1, 0, 0, 0), (0, 0, 300, 0, 0)],
        indices={0: (0,), 1: (0,)},
    )
    assert st.free[0].tolist() == [0, 0, 700, FULL]
    st.release(Held(0, (), 0, 0, 0, anonymous_whole=1))
    assert st.free[0].tolist() == [0, FULL, 700, FULL]
    # Asking to free more anonymous GPUs than there are frees none of the shared slots.
    st.release(Held(0, (), 0, 0, 0, anonymous_whole=2))
    assert st.free[0].tolist() == [0, FULL, 700, FULL]
    assert st.whole_free.tolist() == [2]
    assert st.total_free.tolist() == [2700]


def test_release_of_a_known_pod_frees_its_slots_cpu_and_memory() -> None:
    st = state(node("a", 4))
    held = load(st, [(0, 0, 400, 2_000, 300), (0, 2, 0, 1_000, 100)], indices={1: (2, 3)})
    assert st.free[0].tolist() == [600, FULL, 0, 0]
    st.release(held[1])
    assert st.free[0].tolist() == [600, FULL, FULL, FULL]
    st.release(held[0])
    assert st.free[0].tolist() == [FULL] * 4
    assert st.cpu_free.tolist() == [128_000]
    assert st.mem_free.tolist() == [1_024_000]
    assert st.whole_free.tolist() == [4]


def test_releasing_a_pod_on_an_unhealthy_gpu_does_not_make_that_gpu_usable() -> None:
    st = state(node("a", 8, unhealthy=frozenset({7})))
    held = load(st, [(0, 2, 0, 0, 0)], indices={0: (6, 7)})
    st.release(held[0])
    # Slot 6 was really taken and comes back; slot 7 is unhealthy and must stay unusable.
    assert st.free[0].tolist() == [FULL] * 7 + [UNUSABLE]
    assert st.total_free.tolist() == [7000]


def test_releasing_an_overbooked_shared_pod_frees_no_more_than_was_taken() -> None:
    st = state(node("a", 1))
    held = load(st, [(0, 0, 600, 0, 0), (0, 0, 600, 0, 0)], indices={0: (0,), 1: (0,)})
    assert st.free[0].tolist() == [400]
    st.release(held[1])
    # The first pod still holds 600m of the GPU.
    assert st.free[0].tolist() == [400]


# ---------------------------------------------------------------- topology domains


def test_domains_follow_the_label_path() -> None:
    st = state(
        node("a", leaf="leaf-0", clique="c0"),
        node("b", leaf="leaf-1", clique="c0"),
        node("c", leaf="leaf-0", clique="c0"),
        node("d", leaf="leaf-0", clique="c1"),
    )
    spine, leaf, clique, host = (st.domains[level].tolist() for level in range(4))
    assert len(set(spine)) == 1
    assert leaf[0] == leaf[2] == leaf[3] != leaf[1]
    # Same clique label under two leaves: two clique domains.
    assert clique[0] == clique[2]
    assert clique[0] != clique[1]
    assert clique[3] not in (clique[0], clique[1])
    assert len(set(host)) == 4
    assert st.domain_names[LEAF_L][leaf[0]] == "leaf-0"
    assert st.domain_names[LEAF_L][leaf[1]] == "leaf-1"
    assert st.domain_names[CLIQUE_L][clique[0]] == "c0"
    assert st.domain_names[CLIQUE_L][clique[1]] == "c0"
    assert len(st.domain_names[CLIQUE_L]) == 3
    assert st.levels == (SPINE, LEAF, CLIQUE, "kubernetes.io/hostname")


def test_narrow_domains_lie_inside_one_wide_domain() -> None:
    labels = [
        {SPINE: "s0", LEAF: "l0", CLIQUE: "c0"},
        {SPINE: "s1", LEAF: "l0", CLIQUE: "c0"},  # same leaf name under another spine
        {SPINE: "s0", LEAF: "l0", CLIQUE: "c1"},
        {SPINE: "s1", LEAF: "l1", CLIQUE: "c0"},
    ]
    st = state(*(Node(f"n{i}", 8, 1_000, 1_000, "H100", labels=lab) for i, lab in enumerate(labels)))
    for narrow in range(1, 4):
        for wide in range(narrow):
            for d in np.unique(st.domains[narrow]):
                members = st.domains[narrow] == d
                assert len(np.unique(st.domains[wide][members])) == 1
    assert st.domains[LEAF_L][0] != st.domains[LEAF_L][1]
    assert st.domains[CLIQUE_L][1] != st.domains[CLIQUE_L][3]


def test_a_node_without_a_label_is_a_domain_of_its_own() -> None:
    st = state(
        node("a", leaf=None, clique="c0"),
        node("b", leaf=None, clique="c0"),
        node("c", leaf="leaf-0", clique="c0"),
        Node("d", 8, 1_000, 1_000, "H100"),  # no labels at all
        Node("e", 8, 1_000, 1_000, "H100"),
    )
    leaf = st.domains[LEAF_L].tolist()
    assert len(set(leaf)) == 5
    clique = st.domains[CLIQUE_L].tolist()
    assert len(set(clique)) == 5
    spine = st.domains[SPINE_L].tolist()
    assert spine[0] == spine[1] == spine[2]
    assert len({spine[0], spine[3], spine[4]}) == 3
    # Without a hostname label the node name stands in for it.
    host = st.domains[HOST_L].tolist()
    assert st.domain_names[HOST_L][host[3]] == "d"
    assert st.domain_names[HOST_L][host[4]] == "e"


def test_domains_use_the_configured_levels() -> None:
    config = PolicyConfig(topology_levels=("rack", "kubernetes.io/hostname"))
    nodes_ = [
        Node(n, 8, 1_000, 1_000, labels={"rack": r}) for n, r in [("a", "r1"), ("b", "r2"), ("c", "r1")]
    ]
    st = state(*nodes_, config=config)
    assert len(st.domains) == 2
    rack = st.domains[0].tolist()
    assert rack[0] == rack[2] != rack[1]
    assert sorted(st.domain_names[0]) == ["r1", "r2"]


# ---------------------------------------------------------------- capacity


def test_capacity_counts_cpu_and_memory() -> None:
    st = state(node("a", 8, cpu=4_000, mem=10_000), node("b", 8), node("c", 8, cpu=500))
    shape = Shape(1, 0, 1_000, 2_000)
    assert st.capacity(shape).tolist() == [4, 8, 0]
    assert st.capacity(Shape(1, 0, 1_000, 6_000)).tolist() == [1, 8, 0]
    assert st.capacity(Shape(0, 300, 1_000, 0)).tolist() == [4, 24, 0]
    st.allocate(0, Shape(0, 0, 3_500, 0))
    assert st.capacity(shape).tolist() == [0, 8, 0]


def test_capacity_is_zero_on_unschedulable_nodes_and_other_models() -> None:
    st = state(node("a", 8), replace(node("b", 8), schedulable=False), node("c", 8, model="A100"))
    shape = Shape(2, 0, 0, 0)
    assert st.gpu_capacity(shape).tolist() == [4, 4, 4]
    assert st.capacity(shape).tolist() == [4, 0, 4]
    h100 = st.model_mask(frozenset({"H100"}))
    assert h100 is not None
    assert h100.tolist() == [True, True, False]
    assert st.capacity(shape, h100).tolist() == [4, 0, 0]
    assert st.model_mask(frozenset()) is None
    nothing = st.model_mask(frozenset({"B200"}))
    assert nothing is not None
    assert not nothing.any()


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        (Shape(1, 0, 0, 0), [5, 2]),
        (Shape(2, 0, 0, 0), [2, 1]),
        (Shape(3, 0, 0, 0), [1, 0]),
        (Shape(0, 500, 0, 0), [11, 5]),
        (Shape(0, 700, 0, 0), [5, 3]),
    ],
)
def test_gpu_capacity_per_shape(shape: Shape, expected: list[int]) -> None:
    st = state(node("a", 8), node("b", 4))
    load(st, [(0, 2, 0, 0, 0), (0, 0, 400, 0, 0), (1, 1, 0, 0, 0), (1, 0, 100, 0, 0)])
    # a: [0, 0, 600, 1000 x 5]; b: [0, 900, 1000, 1000]
    assert st.free.tolist()[0] == [0, 0, 600] + [FULL] * 5
    assert st.free.tolist()[1] == [0, 900, FULL, FULL, UNUSABLE, UNUSABLE, UNUSABLE, UNUSABLE]
    assert st.gpu_capacity(shape).tolist() == expected
    assert st.gpu_capacity(shape, np.array([1])).tolist() == expected[1:]


def test_whole_gpu_pods_leave_the_derived_columns_as_a_full_recount_would() -> None:
    # Whole-GPU pods only (no known slots, no shares) take the short path in load_running;
    # its free-GPU columns must be those a recount of every slot gives, overbooking included.
    st = state(node("a", 8, unhealthy=frozenset({2})), node("b", 4), node("c", 8))
    load(st, [(0, 3, 0, 0, 0), (0, 2, 0, 0, 0), (1, 6, 0, 0, 0), (2, 8, 0, 0, 0)])
    fast = arrays(st)
    st._refresh(np.arange(st.node_count))
    assert_same(fast, arrays(st))
    assert st.whole_free.tolist() == [2, 0, 0]
    assert st.overcommitted.tolist() == [False, True, False]  # 6 GPUs asked of a 4-GPU node


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 3_000)), max_size=12),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 3_000)), max_size=12),
    st.data(),
)
def test_pods_shifted_onto_a_loaded_cluster_give_what_loading_afresh_gives(before, came, data) -> None:
    # A replay's cycle carries the whole-GPU pods that came and went since the last cycle
    # onto the cluster that cycle loaded, instead of loading every running pod again. It
    # must give the very state a fresh load gives (which GPUs are held included), or say
    # it cannot (a node overcommitted), and then the caller loads afresh.
    nodes_ = (node("a", 8, unhealthy=frozenset({2})), node("b", 4, cpu=4_000), node("c", 8))
    went = data.draw(st.lists(st.sampled_from(range(len(before))), unique=True) if before else st.just([]))
    rows = [(n, g, 0, c, 0) for n, g, c in before]
    shifted = state(*nodes_)
    load(shifted, rows)
    now = [r for k, r in enumerate(rows) if k not in went] + [(n, g, 0, c, 0) for n, g, c in came]
    changes = [(-1, *rows[k][:2], 0, rows[k][3], 0, False) for k in went]
    changes += [(+1, n, g, 0, c, 0, False) for n, g, c in came]
    fresh = state(*nodes_)
    load(fresh, now)
    if shifted.shift_running(changes):
        assert_same(arrays(fresh), arrays(shifted))
        assert not fresh.overcommitted.any()
    else:  # it may refuse only where a load overcommits, before or after
        was = state(*nodes_)
        load(was, rows)
        assert fresh.overcommitted.any() or was.overcommitted.any()


def test_loading_running_pods_into_a_copy_leaves_the_original_as_it_was():
    # Copies share what a cycle never changes (the overcommitted mask among it); loading
    # running pods, which may mark nodes overcommitted, works on the copy's own.
    base = ClusterState([node("a", 2), node("b", 2)], PolicyConfig())
    loaded = base.copy()
    one = np.array([0], dtype=np.int64)
    zero = np.zeros(1, dtype=np.int64)
    loaded.load_running(one * 0, np.array([3]), zero, zero, zero, {})  # 3 GPUs on a 2-GPU node
    assert loaded.overcommitted.tolist() == [True, False]
    assert base.overcommitted.tolist() == [False, False]
    assert base.placeable.tolist() == [True, True] and loaded.placeable.tolist() == [False, True]
