"""Weighted max-min fair share (water-filling), usage decay and the fair-share factor."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scheduler.core.fairshare import decay, fairshare_factors, water_fill

TOL = 1e-6
DAY = 86_400.0


def _fill(capacity, weights, demands, floors=None, caps=None) -> list[float]:
    n = len(weights)
    return water_fill(
        capacity,
        weights,
        demands,
        [0.0] * n if floors is None else floors,
        [None] * n if caps is None else caps,
    )


# ---------------------------------------------------------------- water_fill by hand


def test_weights_split_a_saturated_cluster() -> None:
    assert water_fill(100, [3, 1], [1000, 1000], [0, 0], [None, None]) == pytest.approx([75, 25])


def test_equal_weights_split_evenly() -> None:
    assert _fill(96, [1, 1, 1], [500, 500, 500]) == pytest.approx([32, 32, 32])


def test_small_demand_gets_its_demand_and_the_rest_flows_on() -> None:
    # Fair share would be 33.3 each; the first team asks for only 10.
    assert _fill(100, [1, 1, 1], [10, 1000, 1000]) == pytest.approx([10, 45, 45])


def test_unused_entitlement_is_redistributed_by_weight() -> None:
    # 10 to the small team; the remaining 90 split 2:1.
    assert _fill(100, [2, 1, 1], [1000, 10, 1000]) == pytest.approx([60, 10, 30])


def test_two_levels_of_redistribution() -> None:
    # Level rises past team 0 (demand 5), then team 1 (demand 20), the rest to team 2.
    assert _fill(100, [1, 1, 1], [5, 20, 1000]) == pytest.approx([5, 20, 75])


def test_total_demand_below_capacity_everyone_gets_their_demand() -> None:
    assert _fill(100, [5, 1], [10, 20]) == pytest.approx([10, 20])


def test_zero_demand_gets_nothing_even_with_a_floor() -> None:
    assert _fill(64, [1, 1], [0, 100], floors=[32, 0]) == pytest.approx([0, 64])


def test_guaranteed_floor_is_honoured() -> None:
    # Equal weights alone would give 50/50; team 0 is guaranteed 70.
    assert _fill(100, [1, 1], [100, 100], floors=[70, 0]) == pytest.approx([70, 30])


def test_floor_with_weights() -> None:
    # Team 1 (weight 3) would get 75 alone; team 0's floor of 40 leaves it 60.
    assert _fill(100, [1, 3], [1000, 1000], floors=[40, 0]) == pytest.approx([40, 60])


def test_floor_below_the_fair_share_changes_nothing() -> None:
    assert _fill(100, [1, 1], [1000, 1000], floors=[20, 10]) == pytest.approx([50, 50])


def test_floor_is_limited_by_demand() -> None:
    # A floor is a guarantee for work the team has, not GPUs to sit on.
    assert _fill(100, [1, 1], [10, 100], floors=[50, 0]) == pytest.approx([10, 90])


def test_cap_limits_a_team_and_the_rest_goes_to_others() -> None:
    assert _fill(100, [1, 1], [1000, 1000], caps=[20, None]) == pytest.approx([20, 80])


def test_cap_with_weights() -> None:
    assert _fill(100, [3, 1, 1], [1000, 1000, 1000], caps=[30, None, None]) == pytest.approx([30, 35, 35])


def test_zero_cap() -> None:
    assert _fill(48, [10, 1], [100, 100], caps=[0, None]) == pytest.approx([0, 48])


def test_cap_below_floor_wins() -> None:
    assert _fill(100, [1, 1], [100, 100], floors=[50, 0], caps=[30, None]) == pytest.approx([30, 70])


def test_floors_above_capacity_are_scaled_in_proportion() -> None:
    assert _fill(60, [1, 1], [100, 100], floors=[60, 30]) == pytest.approx([40, 20])


def test_floors_exactly_filling_capacity() -> None:
    assert _fill(90, [5, 1], [100, 100], floors=[60, 30]) == pytest.approx([60, 30])


def test_scaled_floors_are_first_limited_by_demand() -> None:
    # Floors 80+40 but team 0 only asks for 20: bases 20+40 = 60 > 30, scaled by 1/2.
    assert _fill(30, [1, 1], [20, 100], floors=[80, 40]) == pytest.approx([10, 20])


@pytest.mark.parametrize("capacity", [0, -5])
def test_no_capacity(capacity: float) -> None:
    assert _fill(capacity, [1, 2], [10, 10], floors=[5, 0]) == [0.0, 0.0]


def test_fractional_weights_and_demands() -> None:
    shares = _fill(10, [0.5, 1.5], [100, 2.5])
    assert shares == pytest.approx([7.5, 2.5])


def test_single_team_gets_the_smaller_of_capacity_and_demand() -> None:
    assert _fill(64, [1], [100]) == pytest.approx([64])
    assert _fill(64, [1], [8]) == pytest.approx([8])


def test_result_is_a_new_list_of_one_share_per_team() -> None:
    demands = [10.0, 20.0]
    shares = _fill(100, [1, 1], demands)
    assert isinstance(shares, list)
    assert len(shares) == 2
    shares[0] = 99.0
    assert demands == [10.0, 20.0]


def test_no_teams() -> None:
    # A cluster with GPUs but no GPUTeam yet: nothing to share out, and no crash.
    assert water_fill(64, [], [], [], []) == []


def test_unbounded_demand() -> None:
    # A team that would take anything gets what the others leave.
    assert water_fill(10, [1, 1], [math.inf, 3], [0, 0], [None, None]) == pytest.approx([7, 3])
    assert water_fill(10, [1], [math.inf], [0], [None]) == pytest.approx([10])


# ---------------------------------------------------------------- water_fill properties


@st.composite
def problems(draw):
    n = draw(st.integers(min_value=1, max_value=6))
    amount = st.one_of(
        st.integers(min_value=0, max_value=100).map(float),
        st.floats(min_value=0, max_value=100),
    )

    def column(strategy):
        return draw(st.lists(strategy, min_size=n, max_size=n))

    weights = column(st.one_of(st.sampled_from([1.0, 2.0, 3.0]), st.floats(min_value=0.1, max_value=10)))
    demands = column(amount)
    floors = column(st.one_of(st.just(0.0), st.floats(min_value=0, max_value=50)))
    caps = column(st.one_of(st.none(), amount))
    capacity = draw(st.one_of(st.integers(0, 300).map(float), st.floats(0, 300)))
    return capacity, weights, demands, floors, caps


def _limits(demands, caps) -> list[float]:
    return [min(d, math.inf if c is None else c) for d, c in zip(demands, caps, strict=True)]


def _bases(demands, floors, caps) -> list[float]:
    return [min(f, lim) for f, lim in zip(floors, _limits(demands, caps), strict=True)]


@settings(max_examples=200, deadline=None)
@given(problems())
def test_shares_stay_within_limits_and_capacity(problem) -> None:
    capacity, weights, demands, floors, caps = problem
    shares = water_fill(capacity, weights, demands, floors, caps)
    assert len(shares) == len(weights)
    for share, limit in zip(shares, _limits(demands, caps), strict=True):
        assert -TOL <= share <= limit + TOL
    assert sum(shares) <= capacity + TOL
    assert sum(shares) <= sum(_limits(demands, caps)) + TOL


@settings(max_examples=200, deadline=None)
@given(problems())
def test_everything_is_handed_out_when_floors_fit(problem) -> None:
    capacity, weights, demands, floors, caps = problem
    bases = _bases(demands, floors, caps)
    assume(sum(bases) <= capacity)
    shares = water_fill(capacity, weights, demands, floors, caps)
    assert sum(shares) == pytest.approx(min(capacity, sum(_limits(demands, caps))), abs=TOL, rel=TOL)
    for share, base in zip(shares, bases, strict=True):
        assert share >= base - TOL


@settings(max_examples=200, deadline=None)
@given(problems())
def test_max_min_fairness(problem) -> None:
    """No team below its limit could gain from a team that holds more than its floor.

    Such a transfer would only be fair if the taker's share per weight were below the
    giver's; water-filling leaves no such pair.
    """
    capacity, weights, demands, floors, caps = problem
    bases = _bases(demands, floors, caps)
    assume(sum(bases) <= capacity)
    shares = water_fill(capacity, weights, demands, floors, caps)
    limits = _limits(demands, caps)
    for i in range(len(shares)):
        if shares[i] >= limits[i] - TOL:
            continue
        for j in range(len(shares)):
            if j == i or shares[j] <= bases[j] + TOL:
                continue
            assert shares[i] / weights[i] >= shares[j] / weights[j] - TOL


@settings(max_examples=200, deadline=None)
@given(problems(), st.floats(min_value=0, max_value=1, exclude_max=True))
def test_floors_that_do_not_fit_are_scaled(problem, fraction) -> None:
    _, weights, demands, floors, caps = problem
    bases = _bases(demands, floors, caps)
    total = sum(bases)
    assume(total > 0)
    capacity = total * fraction
    shares = water_fill(capacity, weights, demands, floors, caps)
    assert shares == pytest.approx([b * capacity / total for b in bases], abs=TOL)
    assert sum(shares) == pytest.approx(capacity, abs=TOL)


@settings(max_examples=200, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_order_of_teams_does_not_matter(problem, rnd) -> None:
    capacity, weights, demands, floors, caps = problem
    order = list(range(len(weights)))
    rnd.shuffle(order)
    shares = water_fill(capacity, weights, demands, floors, caps)
    permuted = water_fill(
        capacity,
        [weights[i] for i in order],
        [demands[i] for i in order],
        [floors[i] for i in order],
        [caps[i] for i in order],
    )
    assert permuted == pytest.approx([shares[i] for i in order], abs=TOL)


@settings(max_examples=200, deadline=None)
@given(problems(), st.floats(min_value=0.01, max_value=100))
def test_only_relative_weights_matter(problem, factor) -> None:
    capacity, weights, demands, floors, caps = problem
    shares = water_fill(capacity, weights, demands, floors, caps)
    scaled = water_fill(capacity, [w * factor for w in weights], demands, floors, caps)
    assert scaled == pytest.approx(shares, abs=1e-5)


@settings(max_examples=200, deadline=None)
@given(problems(), st.floats(min_value=0, max_value=100))
def test_more_capacity_never_shrinks_a_share(problem, extra) -> None:
    capacity, weights, demands, floors, caps = problem
    before = water_fill(capacity, weights, demands, floors, caps)
    after = water_fill(capacity + extra, weights, demands, floors, caps)
    for b, a in zip(before, after, strict=True):
        assert a >= b - TOL


# ---------------------------------------------------------------- decay


def test_decay_halves_every_half_life() -> None:
    week = 7 * DAY
    assert decay(1000.0, week, week) == pytest.approx(500.0)
    assert decay(1000.0, 2 * week, week) == pytest.approx(250.0)
    assert decay(1000.0, 0.5 * week, week) == pytest.approx(1000.0 / math.sqrt(2))
    assert decay(1000.0, 10 * week, week) == pytest.approx(1000.0 / 1024)


@pytest.mark.parametrize("elapsed", [0.0, -3600.0])
def test_decay_without_elapsed_time_keeps_the_value(elapsed: float) -> None:
    assert decay(1234.5, elapsed, 3600.0) == 1234.5


def test_decay_of_zero_is_zero() -> None:
    assert decay(0.0, 1e6, 3600.0) == 0.0


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=0, max_value=1e9),
    st.floats(min_value=0, max_value=1e7),
    st.floats(min_value=0, max_value=1e7),
    st.floats(min_value=60, max_value=1e7),
)
def test_decay_in_two_steps_equals_one_step(value, a, b, half_life) -> None:
    two_steps = decay(decay(value, a, half_life), b, half_life)
    assert two_steps == pytest.approx(decay(value, a + b, half_life), rel=1e-9, abs=1e-9)
    assert decay(value, a, half_life) <= value


# ---------------------------------------------------------------- fair-share factor


def test_no_history_gives_factor_one() -> None:
    assert fairshare_factors([3, 1, 1], [0, 0, 0]) == [1.0, 1.0, 1.0]


def test_slurm_classic_factor() -> None:
    # Equal shares S = 1/2; usage parts U = 3/4 and 1/4: F = 2^(-U/S).
    f = fairshare_factors([1, 1], [300.0, 100.0])
    assert f == pytest.approx([2**-1.5, 2**-0.5])


def test_usage_in_proportion_to_weight_gives_one_half() -> None:
    assert fairshare_factors([3, 1], [7500.0, 2500.0]) == pytest.approx([0.5, 0.5])


def test_idle_team_keeps_factor_one_while_others_use() -> None:
    f = fairshare_factors([1, 1, 1], [0.0, 1000.0, 0.0])
    assert f[0] == 1.0
    assert f[2] == 1.0
    # Team 1 holds a third of the weight and all of the use: 2^-3.
    assert f[1] == pytest.approx(0.125)
    # With a quarter of the weight the same use costs more: 2^-4.
    assert fairshare_factors([1, 1, 2], [0.0, 1000.0, 0.0])[1] == pytest.approx(0.0625)


def test_only_usage_proportions_matter() -> None:
    small = fairshare_factors([2, 1], [10.0, 30.0])
    large = fairshare_factors([2, 1], [1e6, 3e6])
    assert small == pytest.approx(large)


def test_weight_softens_the_same_usage() -> None:
    # Same usage; the heavier team's factor is higher.
    f = fairshare_factors([4, 1], [500.0, 500.0])
    assert f[0] > f[1]
    assert f == pytest.approx([2 ** (-0.5 / 0.8), 2 ** (-0.5 / 0.2)])


def test_factor_lengths_must_match() -> None:
    with pytest.raises(ValueError):
        fairshare_factors([1, 1], [1.0])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=0.1, max_value=10), st.floats(min_value=0, max_value=1e9)),
        min_size=1,
        max_size=8,
    )
)
def test_factor_is_between_zero_and_one_and_falls_with_use(rows) -> None:
    weights = [w for w, _ in rows]
    usage = [u for _, u in rows]
    factors = fairshare_factors(weights, usage)
    assert all(0.0 <= f <= 1.0 for f in factors)
    # Teams of equal weight: more decayed usage never gives a higher factor.
    for i in range(len(rows)):
        for j in range(len(rows)):
            if weights[i] == weights[j] and usage[i] > usage[j]:
                assert factors[i] <= factors[j]
