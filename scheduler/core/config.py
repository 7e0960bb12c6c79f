"""Policy settings: defaults that work, and one YAML document to change them.

Unknown keys are refused rather than ignored: a typo in a policy file must not silently
leave a default in force on a production cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml

from scheduler.core.durations import parse_duration
from scheduler.core.errors import InvalidInput

DEFAULT_TOPOLOGY_LEVELS = (
    "network.gpufair.io/spine",
    "network.gpufair.io/leaf",
    "nvidia.com/gpu.clique",
    "kubernetes.io/hostname",
)

API_VERSION = "gpufair.io/v1alpha1"

# How much each score counts when a placement orders nodes (placement.scoreWeights; see
# preferences.py): kube-scheduler's default plugin weights, fragmentation as its
# NodeResourcesFit. A weight of 0 switches that score off.
SCORE_NAMES = ("fragmentation", "nodeAffinity", "taintToleration", "interPodAffinity", "podTopologySpread")
DEFAULT_SCORE_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("fragmentation", 1),
    ("nodeAffinity", 2),
    ("taintToleration", 3),
    ("interPodAffinity", 2),
    ("podTopologySpread", 2),
)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Knobs of the gpufair policy. Field docs are in the README's configuration table."""

    production_min_priority: int = 100_000
    scavenger_below_priority: int = 0
    budget_applies_to_production: bool = False
    usage_half_life_s: float = 7 * 86400.0
    topology_levels: tuple[str, ...] = DEFAULT_TOPOLOGY_LEVELS
    preemption_enabled: bool = True
    reclaim_enabled: bool = True
    max_preemptors_per_cycle: int = 32
    preemption_candidate_domains: int = 4
    production_honours_min_runtime: bool = False
    default_min_runtime_s: float = 600.0
    reclaim_after_s: float = 0.0
    reclaim_threshold: float = 0.9
    reclaim_borrowed: bool = True
    whole_node_gpus: int = 8
    workload_types: int = 16
    fragmentation_objective: str = "residual"
    score_weights: tuple[tuple[str, int], ...] = DEFAULT_SCORE_WEIGHTS

    def __post_init__(self) -> None:
        obj = "policy"
        if self.scavenger_below_priority > self.production_min_priority:
            raise InvalidInput(
                obj,
                "tiers.scavengerBelowPriority",
                "is above tiers.productionMinPriority",
                "keep scavengerBelowPriority <= productionMinPriority",
            )
        if self.usage_half_life_s <= 0:
            raise InvalidInput(obj, "fairShare.usageHalfLife", "must be above 0", "use e.g. '7d'")
        if not self.topology_levels or len(set(self.topology_levels)) != len(self.topology_levels):
            raise InvalidInput(
                obj,
                "topology.levels",
                "empty or repeated labels",
                "list distinct node labels from wide to narrow",
            )
        if self.max_preemptors_per_cycle < 0 or self.preemption_candidate_domains < 1:
            raise InvalidInput(
                obj,
                "preemption",
                "maxPreemptorsPerCycle < 0 or candidateDomains < 1",
                "use maxPreemptorsPerCycle >= 0 and candidateDomains >= 1",
            )
        if self.reclaim_after_s < 0:
            raise InvalidInput(obj, "preemption.reclaimAfter", "must not be negative", "use e.g. '5m' or 0")
        if not 0 < self.reclaim_threshold <= 1:
            raise InvalidInput(
                obj,
                "preemption.reclaimThreshold",
                f"{self.reclaim_threshold!r} is not in (0, 1]",
                "use a fraction of the fair share such as 0.9 (1: reclaim whenever below the share)",
            )
        if self.fragmentation_objective not in ("residual", "growth"):
            raise InvalidInput(
                obj,
                "placement.fragmentationObjective",
                f"unknown objective {self.fragmentation_objective!r}",
                "use 'residual' or 'growth'",
            )
        if self.whole_node_gpus < 1 or self.workload_types < 1:
            raise InvalidInput(
                obj,
                "placement",
                "wholeNodeGPUs and workloadTypes must be >= 1",
                "use e.g. 8 and 16",
            )

    @property
    def weights(self) -> dict[str, int]:
        return dict(self.score_weights)

    def level_index(self, label: str) -> int | None:
        try:
            return self.topology_levels.index(label)
        except ValueError:
            return None


# YAML path -> (field name, converter). Converters raise InvalidInput naming the path.
def _int(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("policy", path, f"{value!r} is not a whole number", "write an integer")
    return value


def _fraction(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput("policy", path, f"{value!r} is not a number", "write a fraction such as 0.9")
    return float(value)


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput("policy", path, f"{value!r} is not true/false", "write true or false")
    return value


def _duration(path: str, value: Any) -> float:
    return parse_duration(value, "policy", path)


def _word(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("policy", path, f"{value!r} is not a word", "write one of the documented values")
    return value


def _labels(path: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(
            "policy",
            path,
            f"{value!r} is not a list of labels",
            "list node label keys from wide to narrow",
        )
    return tuple(value)


def _weights(path: str, value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, Mapping):
        raise InvalidInput("policy", path, f"{value!r} is not a mapping", "write e.g. {nodeAffinity: 2}")
    out = dict(DEFAULT_SCORE_WEIGHTS)
    for key, weight in value.items():
        if key not in SCORE_NAMES:
            raise InvalidInput(
                "policy", f"{path}.{key}", "unknown score", f"use one of {', '.join(SCORE_NAMES)}"
            )
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise InvalidInput(
                "policy", f"{path}.{key}", f"{weight!r} is not a weight", "write a whole number from 0 to 100"
            )
        out[key] = weight
    return tuple(sorted(out.items(), key=lambda kv: SCORE_NAMES.index(kv[0])))


_SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    "tiers": {
        "productionMinPriority": ("production_min_priority", _int),
        "scavengerBelowPriority": ("scavenger_below_priority", _int),
        "budgetAppliesToProduction": ("budget_applies_to_production", _bool),
    },
    "fairShare": {"usageHalfLife": ("usage_half_life_s", _duration)},
    "topology": {"levels": ("topology_levels", _labels)},
    "preemption": {
        "enabled": ("preemption_enabled", _bool),
        "reclaim": ("reclaim_enabled", _bool),
        "maxPreemptorsPerCycle": ("max_preemptors_per_cycle", _int),
        "candidateDomains": ("preemption_candidate_domains", _int),
        "productionHonoursMinRuntime": ("production_honours_min_runtime", _bool),
        "defaultMinRuntime": ("default_min_runtime_s", _duration),
        "reclaimAfter": ("reclaim_after_s", _duration),
        "reclaimThreshold": ("reclaim_threshold", _fraction),
        "reclaimBorrowed": ("reclaim_borrowed", _bool),
    },
    "placement": {
        "wholeNodeGPUs": ("whole_node_gpus", _int),
        "workloadTypes": ("workload_types", _int),
        "fragmentationObjective": ("fragmentation_objective", _word),
        "scoreWeights": ("score_weights", _weights),
    },
}


def policy_from_mapping(doc: Mapping[str, Any] | None) -> PolicyConfig:
    """Build a PolicyConfig from a parsed document; missing keys keep their defaults."""
    if doc is None:
        return PolicyConfig()
    if not isinstance(doc, Mapping):
        raise InvalidInput("policy", "(document)", "is not a mapping", "write a YAML mapping")
    api = doc.get("apiVersion", API_VERSION)
    if api != API_VERSION:
        raise InvalidInput("policy", "apiVersion", f"{api!r} is not supported", f"use {API_VERSION}")
    kind = doc.get("kind", "PolicyConfig")
    if kind != "PolicyConfig":
        raise InvalidInput("policy", "kind", f"{kind!r} is not PolicyConfig", "set kind: PolicyConfig")
    values: dict[str, Any] = {}
    for section, body in doc.items():
        if section in ("apiVersion", "kind"):
            continue
        known = _SCHEMA.get(section)
        if known is None:
            raise InvalidInput(
                "policy", section, "unknown section", f"use one of {', '.join(sorted(_SCHEMA))}"
            )
        if not isinstance(body, Mapping):
            raise InvalidInput("policy", section, "is not a mapping", "write keys under it")
        for key, value in body.items():
            if key not in known:
                raise InvalidInput(
                    "policy",
                    f"{section}.{key}",
                    "unknown setting",
                    f"use one of {', '.join(sorted(known))}",
                )
            name, convert = known[key]
            values[name] = convert(f"{section}.{key}", value)
    return replace(PolicyConfig(), **values)


def load_policy(text: str) -> PolicyConfig:
    """Parse one YAML policy document."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput("policy", "(yaml)", f"cannot be parsed: {exc}", "fix the YAML syntax") from exc
    return policy_from_mapping(doc)
