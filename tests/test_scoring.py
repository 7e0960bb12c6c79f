"""Node scorers: fragmentation (FGD, ATC'23), best fit, first fit, and the per-shape cache."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scheduler.core import Node, PolicyConfig
from scheduler.core.cluster import FULL, ClusterState, Shape
from scheduler.core.scoring import (
    SCORERS,
    BestFit,
    DotProduct,
    FirstFit,
    Fragmentation,
    GpuPacking,
    NodeScorer,
    Random,
    WorkloadMix,
)
from scheduler.core.shapecache import ShapeCache
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
    # Empty node: a whole GPU is broken, 500m left stranded for 1-GPU pods.
    # Half-used node: the stranded 500m is used up, nothing is left stranded.
    # (FGD's growth objective scores that -500: see test_growth_objective_is_fgds.)
    assert s[0] == pytest.approx(500 + 7500e-6)
    assert s[1] == pytest.approx(0 + 7000e-6)
    assert choice(frag, st, HALF) == 1
    held = st.allocate(1, HALF)
    assert held.slots == (3,)
    assert st.free[1].tolist() == [FULL, FULL, FULL, 0, FULL, FULL, FULL, FULL]


def test_fragmentation_with_a_shared_mix_avoids_leaving_slivers() -> None:
    st = _half_used()
    frag = Fragmentation(mix((0, 700)))
    s = scores(frag, st, HALF)
    # Empty node: leaves a 500m sliver that a 700m pod cannot use (500 left).
    # Half-used node: the 500m sliver disappears (nothing left; growth: -500).
    assert s[0] == pytest.approx(500 + 7500e-6)
    assert s[1] == pytest.approx(0 + 7000e-6)
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


# ---------------------------------------------------------------- CPU, memory and models in the mix


def cpu_node(name: str, gpus: int = 8, cpu: int = 96_000, mem: int = 1_024_000, model: str = "H100") -> Node:
    return node(name, gpus, cpu=cpu, mem=mem, model=model)


def test_mix_keeps_cpu_memory_and_models_per_type() -> None:
    m = WorkloadMix.from_shapes(
        [(1, 0, 12_000, 48_000)] * 3
        + [(1, 0, 4_000, 16_000)] * 2
        + [(0, 470, 8_000, 0, ("T4",))]
        + [(0, 0, 32_000, 64_000)] * 5,
        top=16,
    )
    # Same GPUs, other CPU: another type. CPU-only pods strand no GPU and are left out.
    assert m.gpus.tolist() == [1, 1, 0]
    assert m.milli.tolist() == [0, 0, 470]
    assert m.cpu.tolist() == [12_000, 4_000, 8_000]
    assert m.mem.tolist() == [48_000, 16_000, 0]
    assert m.models == ((), (), ("T4",))
    assert m.p.tolist() == pytest.approx([0.5, 1 / 3, 1 / 6])
    assert m.whole.tolist() == [1, 1]
    assert m.share.tolist() == [470]
    assert m.uses_resources
    assert not WorkloadMix.from_shapes([(1, 0), (0, 500)], top=16).uses_resources


def test_mix_from_counts_keeps_the_commonest_until_the_coverage() -> None:
    counts = {(1, 0): 6, (8, 0): 3, (0, 500): 1}
    assert WorkloadMix.from_counts(counts, top=16).gpus.tolist() == [1, 8, 0]
    covered = WorkloadMix.from_counts(counts, top=16, coverage=0.85)
    assert covered.gpus.tolist() == [1, 8]  # 9 of 10 pods
    assert covered.p.tolist() == pytest.approx([6 / 9, 3 / 9])
    same = WorkloadMix.from_shapes([(1, 0)] * 6 + [(8, 0)] * 3 + [(0, 500)], top=16)
    np.testing.assert_allclose(same.p, WorkloadMix.from_counts(counts, top=16).p)


def test_fragmentation_counts_every_free_gpu_of_a_node_short_of_cpu() -> None:
    st = cluster(cpu_node("poor", cpu=10_000), cpu_node("rich", cpu=16_000))
    frag = Fragmentation(mix((1, 0, 12_000)))
    # 8 free GPUs but 10 cores: no 12-core pod fits, all 8 GPUs are fragment.
    assert frag.fragmentation(st).tolist() == pytest.approx([8000, 0])
    blind = Fragmentation(mix((1, 0)))
    assert blind.fragmentation(st).tolist() == pytest.approx([0, 0])


def test_fragmentation_counts_memory_and_gpu_models() -> None:
    st = cluster(
        cpu_node("small-mem", mem=16_000),
        cpu_node("h100"),
        cpu_node("a100", model="A100"),
        used=[0, 2, 4],
    )
    frag = Fragmentation(mix((1, 0, 1_000, 32_000, ("H100",))))
    # Too little memory: all 8 free; a model the type may not use: all 4 free.
    assert frag.fragmentation(st).tolist() == pytest.approx([8000, 0, 4000])


def test_fragmentation_for_shared_types_counts_gpus_with_less_free_than_they_need() -> None:
    st = _half_used()  # node 1: seven full GPUs and one with 500m free
    assert Fragmentation(mix((0, 700))).fragmentation(st).tolist() == pytest.approx([0, 500])
    assert Fragmentation(mix((0, 400))).fragmentation(st).tolist() == pytest.approx([0, 0])
    # A whole-GPU type sees the 500m as fragment too; the mix weighs the two types.
    both = Fragmentation(mix((1, 0), (1, 0), (1, 0), (0, 400)))
    assert both.fragmentation(st).tolist() == pytest.approx([0, 0.75 * 500])


def test_fragmentation_keeps_cpu_for_the_expected_pods() -> None:
    # Both nodes have 4 free GPUs; a 40-core pod leaves 8 cores on the first (no 12-core
    # pod fits beside its 3 free GPUs) and 56 on the second.
    st = cluster(cpu_node("lean", gpus=4, cpu=48_000), cpu_node("fat", gpus=4, cpu=96_000))
    pod = Shape(1, 0, 40_000, 1_000)
    frag = Fragmentation(mix((1, 0, 12_000)))
    assert frag.uses_resources
    s = scores(frag, st, pod)
    assert s[0] == pytest.approx(3000 + 3000e-6)
    assert s[1] == pytest.approx(0 + 3000e-6, abs=1e-6)
    assert choice(frag, st, pod) == 1
    # Blind to CPU, both look alike and the first wins.
    assert choice(Fragmentation(mix((1, 0))), st, pod) == 0


def test_fragmentation_sends_cpu_only_pods_where_they_strand_no_gpu() -> None:
    st = cluster(
        cpu_node("gpus-free", gpus=4, cpu=48_000), cpu_node("gpus-busy", gpus=4, cpu=48_000), used=[0, 4]
    )
    cpu_pod = Shape(0, 0, 40_000, 1_000)
    frag = Fragmentation(mix((1, 0, 12_000)))
    s = scores(frag, st, cpu_pod)
    assert s[0] == pytest.approx(4000 + 4000e-6)
    assert s[1] == pytest.approx(0, abs=1e-6)
    assert int(np.argmin(s)) == 1


def test_residual_counts_capacity_a_type_could_not_use_as_gained() -> None:
    # 8-GPU pods are expected; a node of 4 GPUs never hosts one, so whatever a pod takes
    # there is capacity those pods could not have used.
    st = cluster(node("four", 4), node("eight", 8))
    for objective in Fragmentation.OBJECTIVES:
        frag = Fragmentation(mix((8, 0)), objective=objective)
        s = scores(frag, st, ONE)
        assert s[0] == pytest.approx(-1000 + 3000e-6)
        assert s[1] == pytest.approx(7000 + 7000e-6)
        assert choice(frag, st, ONE) == 0


def test_growth_objective_is_fgds() -> None:
    st = _half_used()
    for shapes in ((1, 0), (0, 700)):
        frag = Fragmentation(mix(shapes), objective="growth")
        s = scores(frag, st, HALF)
        # The change of fragmentation: +500 on the empty node, -500 on the half-used one.
        assert s[0] == pytest.approx(500 + 7500e-6)
        assert s[1] == pytest.approx(-500 + 7000e-6)
        assert choice(frag, st, HALF) == 1
    with pytest.raises(ValueError, match="objective"):
        Fragmentation(mix((1, 0)), objective="smallest")


def test_the_two_objectives_differ_on_a_fragment_already_there() -> None:
    # Node 0 already has a 190m sliver no 1-GPU pod can use; node 1 is clean. A 4-GPU
    # pod strands nothing new on either. Growth sees no change on both (best fit picks
    # the fuller node 0); residual sees the sliver left on node 0 and picks node 1.
    st = ClusterState([node("sliver"), node("clean")], PolicyConfig())
    zero = np.zeros(1, dtype=np.int64)
    st.load_running(zero, zero, np.array([810], dtype=np.int64), zero, zero, {0: (7,)})
    one_gpu = mix((1, 0))
    assert choice(Fragmentation(one_gpu, objective="growth"), st, FOUR) == 0
    assert choice(Fragmentation(one_gpu), st, FOUR) == 1


@pytest.mark.parametrize("objective", Fragmentation.OBJECTIVES)
def test_shape_cache_keys_resource_aware_scores_by_cpu_and_memory(objective: str) -> None:
    st = cluster(
        cpu_node("a", cpu=40_000), cpu_node("b", cpu=96_000), cpu_node("c", 4, cpu=30_000), used=[2, 0, 1]
    )
    scorer = Fragmentation(mix((1, 0, 12_000, 8_000), (0, 500, 4_000), (2, 0, 24_000)), objective=objective)
    cache = ShapeCache(st, scorer)
    light, heavy = Shape(1, 0, 1_000, 1_000), Shape(1, 0, 30_000, 1_000)
    assert cache.get(light)[1].tolist() != cache.get(heavy)[1].tolist()
    shapes = [light, heavy, Shape(0, 500, 4_000, 0), Shape(0, 0, 20_000, 0), Shape(2, 0, 24_000, 0)]

    def check() -> None:
        for s in shapes:
            cap, score = cache.get(s)
            np.testing.assert_array_equal(cap, st.gpu_capacity(s))
            np.testing.assert_allclose(score, scorer.scores(st, s, np.arange(st.node_count)))

    check()
    held = st.allocate(1, heavy)
    st.allocate(0, Shape(0, 500, 4_000, 0))
    check()
    mark = st.mark()
    st.allocate(2, Shape(2, 0, 24_000, 0))
    st.release(held)
    check()
    st.rollback(mark)
    check()


# ---------------------------------------------------------------- the packing experiment's baselines


def test_gpu_packing_fills_used_gpus_then_used_nodes_then_the_smallest_idle_node() -> None:
    st = ClusterState([node("idle-8"), node("idle-4", 4), node("used"), node("shared")], PolicyConfig())
    zero = np.zeros(2, dtype=np.int64)
    st.load_running(
        np.array([2, 3], dtype=np.int64),
        np.array([2, 0], dtype=np.int64),
        np.array([0, 300], dtype=np.int64),
        zero,
        zero,
        {1: (0,)},
    )
    packing = GpuPacking()
    assert choice(packing, st, HALF) == 3  # onto the GPU already shared
    assert choice(packing, st, ONE) == 2  # a node in use before an idle one
    st2 = cluster(node("idle-8"), node("idle-4", 4))
    assert choice(packing, st2, ONE) == 1  # of idle nodes, the smallest
    assert choice(packing, st2, Shape(0, 0, 1_000, 0)) == 0


def test_dot_product_prefers_the_node_whose_free_resources_align_least() -> None:
    # Same free GPUs; the pod asks for much CPU: the node with less free CPU scores lower.
    st = cluster(cpu_node("cpu-rich", 4, cpu=128_000), cpu_node("cpu-poor", 4, cpu=40_000))
    dot = DotProduct()
    assert dot.uses_resources
    s = scores(dot, st, Shape(1, 0, 32_000, 0))
    assert s[1] < s[0]
    assert choice(dot, st, Shape(1, 0, 32_000, 0)) == 1


def test_random_is_seeded_and_never_cached() -> None:
    st = cluster(*(node(f"n{i}") for i in range(50)))
    a = Random(np.random.default_rng(7))
    b = Random(np.random.default_rng(7))
    first = scores(a, st, ONE)
    np.testing.assert_array_equal(first, scores(b, st, ONE))
    assert not np.array_equal(first, scores(Random(np.random.default_rng(8)), st, ONE))
    assert ((first >= 0) & (first < 1)).all()
    cache = ShapeCache(st, Random(np.random.default_rng(7)))
    assert not np.array_equal(cache.get(ONE)[1], cache.get(ONE)[1])  # a fresh draw each time


def test_every_named_scorer_places_a_pod() -> None:
    from scheduler.core.placement import CLUSTER_LEVEL, GangRequest, place_gang

    assert set(SCORERS) == {"first-fit", "best-fit", "fragmentation", "gpu-packing", "dot-product", "random"}
    for name, cls in SCORERS.items():
        scorer = cls(mix((1, 0))) if cls is Fragmentation else cls()
        assert scorer.name == name
        st = cluster(node("a"), node("b", 4), used=[7, 0])
        got = place_gang(st, ShapeCache(st, scorer), GangRequest((FOUR,), None, CLUSTER_LEVEL))
        assert got is not None and got.held[0].node == 1


def test_a_whole_gpu_mix_reads_the_states_columns_as_the_slots_say() -> None:
    # When every expected type takes whole GPUs, the per-node figures come from the
    # state's whole and total free columns, not from each GPU slot: the same figures and
    # scores, shared-GPU pods running or not.
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(2, 9))
        st = ClusterState([node(f"n{i}", int(rng.choice([4, 8]))) for i in range(n)], PolicyConfig())
        rows = int(rng.integers(0, 3 * n))
        on = rng.integers(0, n, size=rows)
        gpus = rng.choice([0, 1, 2], size=rows)
        milli = np.where(gpus == 0, rng.choice([250, 500], size=rows), 0)
        zero = np.zeros(rows, dtype=np.int64)
        st.load_running(on, gpus, milli, zero, zero, {})
        frag = Fragmentation(WorkloadMix.from_shapes([(1, 0)] * 3 + [(2, 0), (4, 0)] * 2 + [(8, 0)], top=8))
        assert frag._whole_only
        by_slot = Fragmentation.__new__(Fragmentation)
        by_slot.__dict__.update(frag.__dict__)
        by_slot._whole_only = False  # the general way: every slot against every need
        idx = np.arange(n)
        assert np.array_equal(frag.node_stats(st, idx), by_slot.node_stats(st, idx))
        for shape in (ONE, Shape(2, 0, 0, 0), FOUR, HALF):
            assert np.array_equal(frag.scores(st, shape, idx), by_slot.scores(st, shape, idx))
        assert np.array_equal(frag.fragmentation(st), by_slot.fragmentation(st))


def test_whole_room_follows_placements_and_leaves_out_nodes_that_take_nothing() -> None:
    st = cluster(node("a", 8), node("b", 4), replace(node("c", 8), schedulable=False), used=[3, 0, 0])
    cache = ShapeCache(st, Fragmentation(WorkloadMix.from_shapes([(1, 0)], top=4)))
    assert cache.whole_room() == (9, 5)  # 5 on a, 4 on b; c is cordoned
    st.allocate(1, FOUR)
    assert cache.whole_room() == (5, 5)
    st.allocate(0, Shape(5, 0, 0, 0))
    assert cache.whole_room() == (0, 0)
