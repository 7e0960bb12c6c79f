"""Human durations and the policy file: values, defaults and the errors a person reads."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core.config import (
    API_VERSION,
    DEFAULT_TOPOLOGY_LEVELS,
    PolicyConfig,
    load_policy,
    policy_from_mapping,
)
from scheduler.core.durations import format_duration, parse_duration
from tests.builders import names, refused

# ---------------------------------------------------------------- parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("12h", 43_200.0),
        ("30d", 2_592_000.0),
        ("2w", 1_209_600.0),
        ("1h30m", 5_400.0),
        ("1d12h", 129_600.0),
        ("1.5h", 5_400.0),
        ("0.25m", 15.0),
        ("  15m  ", 900.0),
        ("900", 900.0),
        (" 2.5 ", 2.5),
        ("0s", 0.0),
        ("1w2d3h4m5s", 604_800.0 + 2 * 86_400 + 3 * 3_600 + 4 * 60 + 5),
    ],
)
def test_parse_duration_strings(text: str, seconds: float) -> None:
    assert parse_duration(text, "GPUTeam 'a'", "spec.minRuntime") == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "seconds"), [(0, 0.0), (42, 42.0), (2.5, 2.5), (86400, 86400.0)])
def test_parse_duration_bare_number_is_seconds(value: float, seconds: float) -> None:
    result = parse_duration(value, "policy", "preemption.defaultMinRuntime")
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "value",
    ["", "   ", "15M", "nan", "inf", "-5", "15x", "m", "h15", "15m junk", "-5m", "15m-", "1,5h", "soon"],
)
def test_parse_duration_refuses_junk_strings(value: str) -> None:
    err = refused(parse_duration, value, "GPUTeam 'vision'", "spec.minRuntime")
    names(err, "GPUTeam 'vision'", "spec.minRuntime", "'15m'")


@pytest.mark.parametrize("value", [None, True, False, [15], {"m": 15}])
def test_parse_duration_refuses_other_types(value: object) -> None:
    err = refused(parse_duration, value, "policy", "fairShare.usageHalfLife")
    names(err, "policy", "fairShare.usageHalfLife", "not a duration")


@pytest.mark.parametrize("value", [-1, -0.5])
def test_parse_duration_refuses_negative_numbers(value: float) -> None:
    err = refused(parse_duration, value, "policy", "preemption.defaultMinRuntime")
    names(err, "policy", "preemption.defaultMinRuntime", "negative")


def test_parse_duration_refuses_nan() -> None:
    # NaN is no length of time: it would poison every comparison made with it.
    err = refused(parse_duration, math.nan, "GPUTeam 'a'", "spec.minRuntime")
    names(err, "GPUTeam 'a'", "spec.minRuntime")


# ---------------------------------------------------------------- format_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-30, "0s"),
        (0.4, "0s"),
        (42, "42s"),
        (59.6, "1m"),
        (60, "1m"),
        (900, "15m"),
        (3_600, "1h"),
        (5_400, "1h30m"),
        (3 * 86_400 + 4 * 3_600, "3d4h"),
        (86_400, "1d"),
        (86_401, "1d1s"),
        # Short form: the two largest units, the rest dropped.
        (86_400 + 3_600 + 61, "1d1h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=3_599))
def test_format_then_parse_round_trips_under_an_hour(seconds: int) -> None:
    assert parse_duration(format_duration(seconds), "o", "f") == seconds


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10 * 365 * 86_400))
def test_format_duration_never_overstates_and_keeps_the_largest_unit(seconds: int) -> None:
    back = parse_duration(format_duration(seconds), "o", "f")
    assert back <= seconds
    # At most the units below the second one shown are dropped: under an hour for days.
    if seconds >= 86_400:
        assert seconds - back < 3_600
    elif seconds >= 3_600:
        assert seconds - back < 60
    else:
        assert back == seconds


# ---------------------------------------------------------------- PolicyConfig


def test_policy_defaults() -> None:
    cfg = PolicyConfig()
    assert cfg.production_min_priority == 100_000
    assert cfg.scavenger_below_priority == 0
    assert cfg.budget_applies_to_production is False
    assert cfg.usage_half_life_s == 7 * 86_400
    assert cfg.topology_levels == (
        "network.gpufair.io/spine",
        "network.gpufair.io/leaf",
        "nvidia.com/gpu.clique",
        "kubernetes.io/hostname",
    )
    assert cfg.topology_levels == DEFAULT_TOPOLOGY_LEVELS
    assert cfg.preemption_enabled is True
    assert cfg.reclaim_enabled is True
    assert cfg.whole_node_gpus == 8


def test_policy_is_frozen() -> None:
    cfg = PolicyConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.production_min_priority = 5  # type: ignore[misc]


def test_level_index() -> None:
    cfg = PolicyConfig()
    assert cfg.level_index("network.gpufair.io/spine") == 0
    assert cfg.level_index("nvidia.com/gpu.clique") == 2
    assert cfg.level_index("kubernetes.io/hostname") == 3
    assert cfg.level_index("topology.kubernetes.io/zone") is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (
            {"production_min_priority": 10, "scavenger_below_priority": 11},
            "tiers.scavengerBelowPriority",
        ),
        ({"usage_half_life_s": 0.0}, "fairShare.usageHalfLife"),
        ({"usage_half_life_s": -3600.0}, "fairShare.usageHalfLife"),
        ({"topology_levels": ()}, "topology.levels"),
        ({"topology_levels": ("a", "b", "a")}, "topology.levels"),
        ({"max_preemptors_per_cycle": -1}, "preemption"),
        ({"preemption_candidate_domains": 0}, "preemption"),
        ({"reclaim_after_s": -1.0}, "preemption.reclaimAfter"),
        ({"reclaim_threshold": 0.0}, "preemption.reclaimThreshold"),
        ({"reclaim_threshold": 1.5}, "preemption.reclaimThreshold"),
        ({"whole_node_gpus": 0}, "placement"),
        ({"workload_types": 0}, "placement"),
    ],
)
def test_policy_config_refuses_inconsistent_values(kwargs: dict, field: str) -> None:
    err = refused(PolicyConfig, **kwargs)
    names(err, "policy", field)


def test_policy_thresholds_may_be_equal() -> None:
    cfg = PolicyConfig(production_min_priority=0, scavenger_below_priority=0)
    assert cfg.production_min_priority == cfg.scavenger_below_priority == 0


# ---------------------------------------------------------------- the policy file

_FULL_POLICY = f"""\
apiVersion: {API_VERSION}
kind: PolicyConfig
tiers:
  productionMinPriority: 1000000
  scavengerBelowPriority: -10
  budgetAppliesToProduction: true
fairShare:
  usageHalfLife: 3d12h
topology:
  levels:
    - topology.kubernetes.io/zone
    - nvidia.com/gpu.clique
    - kubernetes.io/hostname
preemption:
  enabled: false
  reclaim: false
  maxPreemptorsPerCycle: 4
  candidateDomains: 2
  productionHonoursMinRuntime: true
  defaultMinRuntime: 15m
  reclaimAfter: 5m
  reclaimThreshold: 0.8
placement:
  wholeNodeGPUs: 4
  workloadTypes: 32
"""


def test_load_policy_reads_every_setting() -> None:
    cfg = load_policy(_FULL_POLICY)
    assert cfg == PolicyConfig(
        production_min_priority=1_000_000,
        scavenger_below_priority=-10,
        budget_applies_to_production=True,
        usage_half_life_s=3.5 * 86_400,
        topology_levels=(
            "topology.kubernetes.io/zone",
            "nvidia.com/gpu.clique",
            "kubernetes.io/hostname",
        ),
        preemption_enabled=False,
        reclaim_enabled=False,
        max_preemptors_per_cycle=4,
        preemption_candidate_domains=2,
        production_honours_min_runtime=True,
        default_min_runtime_s=900.0,
        reclaim_after_s=300.0,
        reclaim_threshold=0.8,
        whole_node_gpus=4,
        workload_types=32,
    )
    assert isinstance(cfg.topology_levels, tuple)


def test_partial_policy_keeps_other_defaults() -> None:
    cfg = load_policy("fairShare:\n  usageHalfLife: 1d\n")
    assert cfg.usage_half_life_s == 86_400
    assert cfg == dataclasses.replace(PolicyConfig(), usage_half_life_s=86_400.0)


def test_bare_number_half_life_is_seconds() -> None:
    assert load_policy("fairShare: {usageHalfLife: 3600}").usage_half_life_s == 3600.0


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_policy_is_the_default(text: str) -> None:
    assert load_policy(text) == PolicyConfig()


def test_policy_from_mapping_none_and_empty() -> None:
    assert policy_from_mapping(None) == PolicyConfig()
    assert policy_from_mapping({}) == PolicyConfig()
    assert policy_from_mapping({"apiVersion": API_VERSION, "kind": "PolicyConfig"}) == (PolicyConfig())


def test_unknown_section_is_named() -> None:
    err = refused(load_policy, "tier:\n  productionMinPriority: 5\n")
    names(err, "policy", "tier", "unknown section", "tiers", "fairShare", "preemption")


def test_unknown_key_is_named_with_its_section() -> None:
    # A typo must not silently leave the default in force.
    err = refused(load_policy, "tiers:\n  productionMinPrio: 5\n")
    names(err, "policy", "tiers.productionMinPrio", "unknown setting", "productionMinPriority")


def test_unknown_key_in_preemption_lists_the_known_ones() -> None:
    err = refused(policy_from_mapping, {"preemption": {"enable": False}})
    names(err, "policy", "preemption.enable", "enabled", "reclaim", "maxPreemptorsPerCycle")


def test_wrong_api_version() -> None:
    err = refused(load_policy, "apiVersion: gpufair.io/v1\nkind: PolicyConfig\n")
    names(err, "policy", "apiVersion", "'gpufair.io/v1'", API_VERSION)


def test_wrong_kind() -> None:
    err = refused(load_policy, f"apiVersion: {API_VERSION}\nkind: GPUTeam\n")
    names(err, "policy", "kind", "'GPUTeam'", "PolicyConfig")


@pytest.mark.parametrize("text", ["- tiers\n- topology\n", "just a string\n", "42\n"])
def test_policy_document_must_be_a_mapping(text: str) -> None:
    err = refused(load_policy, text)
    names(err, "policy", "(document)", "mapping")


def test_section_must_be_a_mapping() -> None:
    err = refused(load_policy, "tiers: 5\n")
    names(err, "policy", "tiers", "not a mapping")


def test_yaml_syntax_error() -> None:
    err = refused(load_policy, "tiers: {productionMinPriority: 5\n")
    names(err, "policy", "(yaml)", "cannot be parsed", "YAML")


@pytest.mark.parametrize(
    ("text", "field", "word"),
    [
        ("tiers: {productionMinPriority: high}", "tiers.productionMinPriority", "whole number"),
        ("tiers: {productionMinPriority: 1.5}", "tiers.productionMinPriority", "whole number"),
        ("tiers: {scavengerBelowPriority: true}", "tiers.scavengerBelowPriority", "whole number"),
        ("tiers: {budgetAppliesToProduction: 'yes'}", "tiers.budgetAppliesToProduction", "true"),
        ("preemption: {enabled: 1}", "preemption.enabled", "true or false"),
        ("preemption: {maxPreemptorsPerCycle: '4'}", "preemption.maxPreemptorsPerCycle", "whole"),
        ("preemption: {defaultMinRuntime: soon}", "preemption.defaultMinRuntime", "'15m'"),
        ("fairShare: {usageHalfLife: 7days}", "fairShare.usageHalfLife", "'7days'"),
        ("topology: {levels: kubernetes.io/hostname}", "topology.levels", "list"),
        ("topology: {levels: [a, '']}", "topology.levels", "list"),
        ("topology: {levels: [a, 3]}", "topology.levels", "list"),
        ("placement: {wholeNodeGPUs: 8.0}", "placement.wholeNodeGPUs", "whole number"),
    ],
)
def test_bad_value_types_name_the_setting(text: str, field: str, word: str) -> None:
    err = refused(load_policy, text)
    names(err, "policy", field, word)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("fairShare: {usageHalfLife: 0s}", "fairShare.usageHalfLife"),
        (
            "tiers: {productionMinPriority: 10, scavengerBelowPriority: 20}",
            "tiers.scavengerBelowPriority",
        ),
        ("tiers: {productionMinPriority: -5}", "tiers.scavengerBelowPriority"),
        ("topology: {levels: []}", "topology.levels"),
        ("topology: {levels: [a, b, a]}", "topology.levels"),
        ("preemption: {candidateDomains: 0}", "preemption"),
        ("preemption: {maxPreemptorsPerCycle: -1}", "preemption"),
        ("placement: {workloadTypes: 0}", "placement"),
    ],
)
def test_inconsistent_policy_file_is_refused(text: str, field: str) -> None:
    err = refused(load_policy, text)
    names(err, "policy", field)


def test_nan_half_life_is_refused() -> None:
    # YAML's .nan is a float; a NaN half-life would turn every decayed usage into NaN.
    err = refused(load_policy, "fairShare:\n  usageHalfLife: .nan\n")
    names(err, "policy", "fairShare.usageHalfLife")


def test_reclaim_threshold_must_be_a_number() -> None:
    err = refused(policy_from_mapping, {"preemption": {"reclaimThreshold": "most"}})
    assert "preemption.reclaimThreshold" in str(err) and "fraction" in str(err)
    assert policy_from_mapping({"preemption": {"reclaimThreshold": 1}}).reclaim_threshold == 1.0


def test_reclaim_borrowed_is_a_switch_on_by_default() -> None:
    assert policy_from_mapping({}).reclaim_borrowed is True
    assert policy_from_mapping({"preemption": {"reclaimBorrowed": False}}).reclaim_borrowed is False
    err = refused(policy_from_mapping, {"preemption": {"reclaimBorrowed": "sometimes"}})
    assert "preemption.reclaimBorrowed" in str(err)
