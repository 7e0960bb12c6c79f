"""Constructor checks of the snapshot values: a bad object is refused where it is made."""

from __future__ import annotations

import dataclasses
import math

import pytest

from scheduler.core.errors import InvalidInput
from scheduler.core.model import (
    MILLI_PER_GPU,
    Budget,
    Gang,
    Node,
    OnExhausted,
    Pod,
    Team,
    Tier,
)
from tests.builders import names, refused

# ---------------------------------------------------------------- the error type


def test_invalid_input_carries_the_three_facts() -> None:
    err = InvalidInput("GPUTeam 'a'", "spec.weight", "-1 is not positive", "set it above 0")
    assert isinstance(err, ValueError)
    assert (err.obj, err.field, err.problem, err.fix) == (
        "GPUTeam 'a'",
        "spec.weight",
        "-1 is not positive",
        "set it above 0",
    )
    assert str(err) == "GPUTeam 'a': spec.weight: -1 is not positive; set it above 0"


# ---------------------------------------------------------------- Budget


def test_budget_defaults() -> None:
    b = Budget(100.0)
    assert (b.gpu_hours, b.period, b.on_exhausted, b.period_seconds, b.anchor_s) == (
        100.0,
        "month",
        OnExhausted.SCAVENGE,
        None,
        0.0,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gpu_hours": 0.0, "period": "week"},
        {"gpu_hours": 10.0, "period": "month", "on_exhausted": OnExhausted.BLOCK},
        {"gpu_hours": 10.0, "period": "duration", "period_seconds": 3600.0, "anchor_s": -5.0},
    ],
)
def test_valid_budgets(kwargs: dict) -> None:
    assert Budget(**kwargs).gpu_hours == kwargs["gpu_hours"]


@pytest.mark.parametrize("hours", [-1.0, -0.001, math.nan, math.inf])
def test_budget_hours_must_be_finite_and_non_negative(hours: float) -> None:
    err = refused(Budget, hours)
    names(err, "budget", "gpuHours", ">= 0")


@pytest.mark.parametrize("period", ["year", "Week", "weekly", "", "30d"])
def test_budget_unknown_period(period: str) -> None:
    err = refused(Budget, 10.0, period)
    names(err, "budget", "period", repr(period), "'week'", "'month'", "'30d'")


@pytest.mark.parametrize("seconds", [None, 0.0, -3600.0])
def test_fixed_period_needs_a_positive_length(seconds: float | None) -> None:
    err = refused(Budget, 10.0, "duration", OnExhausted.SCAVENGE, seconds)
    names(err, "budget", "period", "above zero")


def test_budget_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Budget(1.0).gpu_hours = 2.0  # type: ignore[misc]


def test_on_exhausted_values() -> None:
    assert OnExhausted("scavenge") is OnExhausted.SCAVENGE
    assert OnExhausted("block") is OnExhausted.BLOCK
    with pytest.raises(ValueError):
        OnExhausted("drop")


# ---------------------------------------------------------------- Team


def test_team_defaults() -> None:
    t = Team("vision")
    assert (t.weight, t.guaranteed_gpus, t.max_gpus, t.budget, t.namespaces, t.min_runtime_s) == (
        1.0,
        0.0,
        None,
        None,
        (),
        0.0,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weight": 0.01},
        {"guaranteed_gpus": 8.0, "max_gpus": 8.0},
        {"max_gpus": 0.0},
        {"guaranteed_gpus": 0.0, "max_gpus": 64.0, "min_runtime_s": 900.0},
    ],
)
def test_valid_teams(kwargs: dict) -> None:
    team = Team("vision", **kwargs)
    for key, value in kwargs.items():
        assert getattr(team, key) == value


def test_team_empty_name() -> None:
    err = refused(Team, "")
    names(err, "GPUTeam", "metadata.name", "empty", "name")


@pytest.mark.parametrize("weight", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_team_weight_must_be_positive_and_finite(weight: float) -> None:
    err = refused(Team, "vision", weight=weight)
    names(err, "GPUTeam 'vision'", "spec.weight", repr(weight), "above 0")


@pytest.mark.parametrize("floor", [-1.0, math.nan, math.inf])
def test_team_guaranteed_gpus(floor: float) -> None:
    err = refused(Team, "vision", guaranteed_gpus=floor)
    names(err, "GPUTeam 'vision'", "spec.guaranteedGPUs", "0 or more")


@pytest.mark.parametrize("cap", [-1.0, math.nan, math.inf])
def test_team_max_gpus(cap: float) -> None:
    # An absent cap is spelled None, not infinity.
    err = refused(Team, "vision", max_gpus=cap)
    names(err, "GPUTeam 'vision'", "spec.maxGPUs", "leave it out")


def test_team_cap_below_floor() -> None:
    err = refused(Team, "vision", guaranteed_gpus=16.0, max_gpus=8.0)
    names(err, "GPUTeam 'vision'", "spec.maxGPUs", "8", "16", "guaranteedGPUs")


def test_team_negative_min_runtime() -> None:
    err = refused(Team, "vision", min_runtime_s=-1.0)
    names(err, "GPUTeam 'vision'", "spec.minRuntime", "negative", "'15m'")


# ---------------------------------------------------------------- Node


def test_node_healthy_gpus() -> None:
    node = Node("gpu-01", 8, 96_000, 1_024_000, unhealthy_gpus=frozenset({0, 7}))
    assert node.healthy_gpus == 6
    assert Node("cpu-01", 0, 32_000, 128_000).healthy_gpus == 0
    assert node.schedulable is True


def test_node_empty_name() -> None:
    err = refused(Node, "", 8, 1000, 1000)
    names(err, "node", "metadata.name", "name")


def test_node_negative_gpus() -> None:
    err = refused(Node, "gpu-01", -1, 1000, 1000)
    names(err, "node 'gpu-01'", "nvidia.com/gpu", "negative")


@pytest.mark.parametrize(("cpu", "mem"), [(-1, 1000), (1000, -1)])
def test_node_negative_allocatable(cpu: int, mem: int) -> None:
    err = refused(Node, "gpu-01", 8, cpu, mem)
    names(err, "node 'gpu-01'", "allocatable", "negative")


@pytest.mark.parametrize("bad", [{8}, {-1}, {3, 9}])
def test_node_unhealthy_index_out_of_range(bad: set[int]) -> None:
    err = refused(Node, "gpu-01", 8, 1000, 1000, unhealthy_gpus=frozenset(bad))
    outside = sorted(i for i in bad if not 0 <= i < 8)
    names(err, "node 'gpu-01'", "unhealthy_gpus", str(outside), "0..7")


# ---------------------------------------------------------------- Pod


def test_pod_amounts_and_binding() -> None:
    assert Pod("p", gpus=4).gpu_amount == 4.0
    assert Pod("p", gpu_milli=250).gpu_amount == 0.25
    assert Pod("p").gpu_amount == 0.0
    assert Pod("p").bound is False
    assert Pod("p", gpus=1, node="gpu-01", start_s=10.0).bound is True
    assert MILLI_PER_GPU == 1000


def test_pod_negative_gpus() -> None:
    err = refused(Pod, "trainer-0", gpus=-1)
    names(err, "pod 'trainer-0'", "nvidia.com/gpu", "negative")


@pytest.mark.parametrize("milli", [-1, 1000, 1500])
def test_pod_gpu_milli_range(milli: int) -> None:
    err = refused(Pod, "trainer-0", gpu_milli=milli)
    names(err, "pod 'trainer-0'", "gpu_milli", str(milli), "0..999", "whole GPUs")


def test_pod_whole_and_shared_gpus_together() -> None:
    err = refused(Pod, "trainer-0", gpus=1, gpu_milli=500)
    names(err, "pod 'trainer-0'", "gpu_milli", "not both", "gpus to 0")


@pytest.mark.parametrize(("cpu", "mem"), [(-100, 0), (0, -1)])
def test_pod_negative_requests(cpu: int, mem: int) -> None:
    err = refused(Pod, "trainer-0", cpu_milli=cpu, memory_mib=mem)
    names(err, "pod 'trainer-0'", "resources.requests", "negative")


# ---------------------------------------------------------------- Gang


def _pods(n: int, gpus: int = 8) -> tuple[Pod, ...]:
    return tuple(Pod(f"worker-{i}", gpus=gpus) for i in range(n))


def test_gang_properties() -> None:
    pods = (
        Pod("w-0", gpus=8, node="gpu-01", start_s=0.0),
        Pod("w-1", gpus=8),
        Pod("w-2", gpu_milli=500),
    )
    gang = Gang("job-1", "vision", pods)
    assert gang.required_members == 3
    assert gang.gpu_amount == 16.5
    assert [p.name for p in gang.bound_pods] == ["w-0"]
    assert [p.name for p in gang.pending_pods] == ["w-1", "w-2"]
    assert Gang("job-2", "vision", _pods(4), min_member=2).required_members == 2


def test_gang_with_zero_pods() -> None:
    err = refused(Gang, "job-1", "vision", ())
    names(err, "gang 'job-1'", "pods", "size 0", "at least one pod", "gang-size >= 1")


@pytest.mark.parametrize("min_member", [0, -3])
def test_gang_min_member_below_one(min_member: int) -> None:
    err = refused(Gang, "job-1", "vision", _pods(2), min_member=min_member)
    names(err, "gang 'job-1'", "minMember", str(min_member), "1 or more")


def test_gang_negative_min_runtime() -> None:
    err = refused(Gang, "job-1", "vision", _pods(1), min_runtime_s=-1.0)
    names(err, "gang 'job-1'", "gpufair.io/min-runtime", "negative", "'15m'")


def test_gang_zero_min_runtime_is_allowed() -> None:
    assert Gang("job-1", "vision", _pods(1), min_runtime_s=0.0).min_runtime_s == 0.0


@pytest.mark.parametrize("checkpoint", [0.0, -60.0])
def test_gang_checkpoint_interval_must_be_positive(checkpoint: float) -> None:
    err = refused(Gang, "job-1", "vision", _pods(1), checkpoint_s=checkpoint)
    names(err, "gang 'job-1'", "checkpoint", "above 0")


def test_gang_pod_names_must_be_distinct() -> None:
    pods = (Pod("worker-0", gpus=8), Pod("worker-1", gpus=8), Pod("worker-0", gpus=8))
    err = refused(Gang, "job-1", "vision", pods)
    names(err, "gang 'job-1'", "pods", "share a name")


# ---------------------------------------------------------------- Tier


def test_tier_order_and_labels() -> None:
    assert Tier.SCAVENGER < Tier.TRAINING < Tier.PRODUCTION
    assert [t.label for t in Tier] == ["scavenger", "training", "production"]
