"""Node scorers: fragmentation (FGD, ATC'23), best fit, first fit, and the per-shape cache."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.core import Node, PolicyConfig
from scheduler.core.cluster import FULL, ClusterState, Shape
from scheduler.core.scoring import BestFit, FirstFit, Fragmentation, NodeScorer, ShapeCache, WorkloadMix
from tests.builders import node

ONE = Shape(1, 0, 0, 0)
FOUR = Shape(4, 0, 0, 0)
HALF = Shape(0, 500, 0, 0)


def cluster(*nodes_: Node, used: list[int] | None = None) -> ClusterState:
    """Nodes with `used[i]` whole GPUs already taken by anonymous running pods."""
    st = ClusterState(list(nodes_), PolicyConfig())
    if used:
        rows = [(i, g) for i, g in enumerate(used) if g]
        n = len(rows)
        st.load_running(
            np.array([i for i, _ in rows], dtype=np.int64),
            np.array([g for _, g in rows], dtype=np.int64),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
            {},
        )
    return st


def mix(*shapes: tuple[int, int]) -> WorkloadMix:
    return WorkloadMix.from_shapes(shapes, top=16)


def scores(scorer: NodeScorer, st: ClusterState, shape: Shape) -> np.ndarray:
    return scorer.scores(st, shape, np.arange(st.node_count))


def choice(scorer: NodeScorer, st: ClusterState, shape: Shape) -> int:
    """The best-scored node among those with room for `shape`."""
    cap = st.gpu_capacity(shape)
    s = np.where(cap > 0, scores(scorer, st, shape), np.inf)
    return int(np.argmin(s))


# ---------------------------------------------------------------- workload mix


def test_mix_counts_shapes_and_keeps_the_commonest() -> None:
    m = WorkloadMix.from_shapes(
        [(1, 0)] * 6 + [(8, 0)] * 3 + [(0, 500)] * 1 + [(2, 0)] * 1 + [(0, 0)] * 9, top=3
    )
    # (0, 0) asks for no GPU and is ignored; ties at count 1 go to the smaller key, (0, 500).
    assert m.whole.tolist() == [1, 8]
    assert m.whole_p.tolist() == pytest.approx([0.6, 0.3])
    assert m.share.tolist() == [500]
    assert m.share_p.tolist() == pytest.approx([0.1])


def test_mix_defaults_to_common_whole_gpu_sizes() -> None:
    m = WorkloadMix.from_shapes([], top=16)
    assert m.whole.tolist() == [1, 2, 4, 8]
    assert m.whole_p.tolist() == pytest.approx([0.25] * 4)
    assert m.share.size == 0


# ---------------------------------------------------------------- fragmentation


def test_fragmentation_with_one_gpu_pods_fills_the_last_free_gpu_first() -> None:
    st = cluster(node("empty"), node("one-left"), used=[0, 7])
    frag = Fragmentation(mix((1, 0)))
    s = scores(frag, st, ONE)
    # Neither node strands anything for 1-GPU pods; the tie goes to the fuller node.
    assert s[0] == pytest.approx(7000e-6)
    assert s[1] == pytest.approx(0.0, abs=1e-9)
    assert choice(frag, st, ONE) == 1


def test_fragmentation_with_eight_gpu_pods_puts_a_four_gpu_pod_where_nothing_is_stranded() -> None:
    st = cluster(node("six-free"), node("four-free"), used=[2, 4])
    frag = Fragmentation(mix((8, 0)))
    assert choice(frag, st, FOUR) == 1


def test_fragmentation_keeps_room_for_the_expected_size_where_best_fit_would_not() -> None:
    # 16-GPU nodes, the mix is 8-GPU pods. A 4-GPU pod on the node with 8 free strands
    # 4 GPUs no 8-GPU pod can use; on the node with 12 free it leaves exactly 8.
    st = cluster(node("eight-free", 16), node("twelve-free", 16), used=[8, 4])
    frag = Fragmentation(mix((8, 0)))
    s = scores(frag, st, FOUR)
    assert s[0] == pytest.approx(4000 + 4000e-6)
    assert s[1] == pytest.approx(0 + 8000e-6, abs=1e-6)
    assert choice(frag, st, FOUR) == 1
    assert choice(BestFit(), st, FOUR) == 0


def test_fragmentation_with_four_gpu_pods_keeps_a_node_able_to_take_one() -> None:
    # 8-GPU nodes with 5 and 4 free; the mix is 4-GPU pods. A 1-GPU pod on the node with
    # 4 free leaves 3 that no 4-GPU pod can use; on the node with 5 free it leaves 4.
    st = cluster(node("five-free"), node("four-free"), used=[3, 4])
    frag = Fragmentation(mix((4, 0)))
    s = scores(frag, st, ONE)
    assert s[1] - s[0] == pytest.approx(3000, abs=1e-3)
    assert choice(frag, st, ONE) == 0
    assert choice(BestFit(), st, ONE) == 1


def _half_used() -> ClusterState:
    st = ClusterState([node("empty"), node("half-used")], PolicyConfig())
    one = np.array([1], dtype=np.int64)
    zero = np.zeros(1, dtype=np.int64)
    st.load_running(one, zero, np.array([500], dtype=np.int64), zero, zero, {0: (3,)})
    return st


def test_fragmentation_puts_a_shared_pod_on_a_half_used_gpu() -> None:
    st = _half_used()
    assert st.free[1].tolist() == [FULL, FULL, FULL, 500, FULL, FULL, FULL, FULL]
    frag = Fragmentation(mix((1, 0)))
    s = scores(frag, st, HALF)
    # Empty node: a whole GPU is broken, 500m more stranded for 1-GPU pods.
    # Half-used node: the stranded 500m is used up.
    assert s[0] == pytest.approx(500 + 7500e-6)
    assert s[1] == pytest.approx(-500 + 7000e-6)
    assert choice(frag, st, HALF) == 1
    held = st.allocate(1, HALF)
    assert held.slots == (3,)
    assert st.free[1].tolist() == [FULL, FULL, FULL, 0, FULL, FULL, FULL, FULL]


def test_fragmentation_with_a_shared_mix_avoids_leaving_slivers() -> None:
    st = _half_used()
    frag = Fragmentation(mix((0, 700)))
    s = scores(frag, st, HALF)
    # Empty node: leaves a 500m sliver that a 700m pod cannot use (+500).
    # Half-used node: the 500m sliver disappears (-500).
    assert s[0] == pytest.approx(500 + 7500e-6)
    assert s[1] == pytest.approx(-500 + 7000e-6)
    assert choice(frag, st, HALF) == 1


def test_fragmentation_ties_go_to_the_lower_index() -> None:
    st = cluster(node("a"), node("b"), node("c"))
    frag = Fragmentation(mix((1, 0), (8, 0)))
    s = scores(frag, st, ONE)
    assert s[0] <= s[1] <= s[2]
    assert choice(frag, st, ONE) == 0


# ---------------------------------------------------------------- baselines


def test_best_fit_picks_the_node_left_with_the_least_free() -> None:
    st = cluster(node("a"), node("b"), node("c"), used=[0, 5, 3])
    s = scores(BestFit(), st, ONE)
    assert s.tolist() == pytest.approx([7000, 2000, 4000])
    assert choice(BestFit(), st, ONE) == 1
    # Four GPUs fit on a and c only: c is left with less.
    assert choice(BestFit(), st, FOUR) == 2


def test_best_fit_counts_shared_gpus_and_breaks_ties_by_index() -> None:
    st = _half_used()
    s = scores(BestFit(), st, HALF)
    assert s.tolist() == pytest.approx([7500, 7000])
    st2 = cluster(node("a"), node("b"), node("c"), used=[2, 2, 2])
    assert choice(BestFit(), st2, ONE) == 0


def test_first_fit_picks_the_lowest_index_with_room() -> None:
    st = cluster(node("a"), node("b"), node("c"), used=[6, 2, 7])
    assert scores(FirstFit(), st, ONE).tolist() == [0, 1, 2]
    assert choice(FirstFit(), st, ONE) == 0
    assert choice(FirstFit(), st, FOUR) == 1
    idx = np.array([2, 0])
    assert FirstFit().scores(st, ONE, idx).tolist() == [2, 0]


# ---------------------------------------------------------------- shape cache


@pytest.mark.parametrize(
    "scorer",
    [Fragmentation(mix((1, 0), (4, 0), (8, 0), (0, 500))), BestFit(), FirstFit()],
    ids=lambda s: s.name,
)
def test_shape_cache_matches_a_fresh_computation_after_changes(scorer: NodeScorer) -> None:
    st = cluster(node("a"), node("b"), node("c", 16), node("d", 4), used=[2, 0, 8, 1])
    cache = ShapeCache(st, scorer)
    shapes = [ONE, FOUR, HALF, Shape(8, 0, 0, 0)]
    first = {s: tuple(a.copy() for a in cache.get(s)) for s in shapes}

    def check() -> None:
        for s in shapes:
            cap, score = cache.get(s)
            fresh_cap = st.gpu_capacity(s)
            np.testing.assert_array_equal(cap, fresh_cap)
            np.testing.assert_allclose(score, scorer.scores(st, s, np.arange(st.node_count)))
            other_cap, other_score = ShapeCache(st, scorer).get(s)
            np.testing.assert_array_equal(cap, other_cap)
            np.testing.assert_allclose(score, other_score)

    held = st.allocate(1, Shape(3, 0, 0, 0))
    st.allocate(3, HALF)
    check()
    assert cache.get(FOUR)[0].tolist() != first[FOUR][0].tolist()
    mark = st.mark()
    st.allocate(2, Shape(4, 0, 0, 0))
    st.release(held)
    check()
    st.rollback(mark)
    check()
    st.commit()
    st.release(held)
    check()
    np.testing.assert_array_equal(cache.get(FOUR)[0], first[FOUR][0])


def test_shape_cache_is_per_gpu_size_and_ignores_cpu_and_memory() -> None:
    st = cluster(node("a", cpu=1_000), node("b"), used=[0, 6])
    cache = ShapeCache(st, BestFit())
    cap, _ = cache.get(Shape(1, 0, 64_000, 64_000))
    assert cap.tolist() == [8, 2]
    cap2, _ = cache.get(ONE)
    assert cap2.tolist() == [8, 2]
