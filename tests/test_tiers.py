"""Tiers from PriorityClass values, and what an exhausted budget does to them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core.config import PolicyConfig, load_policy
from scheduler.core.model import Tier
from scheduler.core.tiers import effective_tier, tier_by_priority

DEFAULT = PolicyConfig()


@pytest.mark.parametrize(
    ("priority", "tier"),
    [
        (2_000_000_000, Tier.PRODUCTION),  # system-cluster-critical
        (1_000_000, Tier.PRODUCTION),
        (100_000, Tier.PRODUCTION),  # the threshold itself is production
        (99_999, Tier.TRAINING),
        (1_000, Tier.TRAINING),
        (0, Tier.TRAINING),  # pods without a PriorityClass
        (-1, Tier.SCAVENGER),
        (-100_000, Tier.SCAVENGER),
    ],
)
def test_default_thresholds(priority: int, tier: Tier) -> None:
    assert tier_by_priority(priority, DEFAULT) is tier


def test_thresholds_are_configuration() -> None:
    cfg = PolicyConfig(production_min_priority=1_000, scavenger_below_priority=10)
    assert tier_by_priority(1_000, cfg) is Tier.PRODUCTION
    assert tier_by_priority(999, cfg) is Tier.TRAINING
    assert tier_by_priority(10, cfg) is Tier.TRAINING
    assert tier_by_priority(9, cfg) is Tier.SCAVENGER
    assert tier_by_priority(0, cfg) is Tier.SCAVENGER


def test_thresholds_from_the_policy_file() -> None:
    cfg = load_policy("tiers:\n  productionMinPriority: 1000000\n  scavengerBelowPriority: -50\n")
    assert tier_by_priority(100_000, cfg) is Tier.TRAINING
    assert tier_by_priority(1_000_000, cfg) is Tier.PRODUCTION
    assert tier_by_priority(-1, cfg) is Tier.TRAINING
    assert tier_by_priority(-50, cfg) is Tier.TRAINING
    assert tier_by_priority(-51, cfg) is Tier.SCAVENGER


def test_equal_thresholds_leave_no_training_tier() -> None:
    cfg = PolicyConfig(production_min_priority=0, scavenger_below_priority=0)
    assert tier_by_priority(0, cfg) is Tier.PRODUCTION
    assert tier_by_priority(-1, cfg) is Tier.SCAVENGER


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=-(10**9), max_value=10**9),
    st.integers(min_value=-(10**9), max_value=10**9),
)
def test_tier_never_falls_as_priority_rises(low: int, high: int) -> None:
    low, high = min(low, high), max(low, high)
    assert tier_by_priority(low, DEFAULT) <= tier_by_priority(high, DEFAULT)


# ---------------------------------------------------------------- budgets


@pytest.mark.parametrize("priority", [200_000, 5_000, 0, -10])
def test_budget_left_keeps_the_priority_tier(priority: int) -> None:
    assert effective_tier(priority, False, DEFAULT) is tier_by_priority(priority, DEFAULT)


@pytest.mark.parametrize("priority", [5_000, 0, 99_999])
def test_exhausted_training_runs_as_scavenger(priority: int) -> None:
    assert effective_tier(priority, True, DEFAULT) is Tier.SCAVENGER


def test_exhausted_scavenger_stays_scavenger() -> None:
    assert effective_tier(-10, True, DEFAULT) is Tier.SCAVENGER


def test_production_is_exempt_from_the_budget_by_default() -> None:
    # An inference service does not go down because experiments used the month's hours.
    assert effective_tier(100_000, True, DEFAULT) is Tier.PRODUCTION
    assert effective_tier(2_000_000_000, True, DEFAULT) is Tier.PRODUCTION


def test_budget_may_apply_to_production() -> None:
    cfg = PolicyConfig(budget_applies_to_production=True)
    assert effective_tier(100_000, True, cfg) is Tier.SCAVENGER
    assert effective_tier(100_000, False, cfg) is Tier.PRODUCTION
    assert effective_tier(5_000, True, cfg) is Tier.SCAVENGER


def test_budget_applies_to_production_from_the_policy_file() -> None:
    cfg = load_policy("tiers: {budgetAppliesToProduction: true}")
    assert effective_tier(150_000, True, cfg) is Tier.SCAVENGER
