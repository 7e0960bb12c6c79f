"""What of a pod's spec depends on the other pods, in kube-scheduler's terms.

Host ports (NodePorts), required pod affinity and anti-affinity (InterPodAffinity) and
`DoNotSchedule` topology spread (PodTopologySpread) are read by the shell into these frozen
records; the filters in podfilters.py turn them into node masks against the placed pods
(podindex.py). Semantics follow kube-scheduler's plugins of the same names:

- a label selector is an AND of requirements (In, NotIn, Exists, DoesNotExist); `None`
  (no selector in the spec) matches no pod, an empty one every pod;
- a pod affinity term matches a pod in one of its namespaces (`None`: every namespace, what
  an empty namespaceSelector says) whose labels its selector matches; the shell resolves
  namespaceSelector into the namespace set and merges matchLabelKeys / mismatchLabelKeys
  into the selector from the pod's own labels, as the API server does;
- a host port is (host IP, protocol, port); an empty IP reads 0.0.0.0, which overlaps every
  IP, and an empty protocol reads TCP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.core.constraints import Requirement

ANY_IP = "0.0.0.0"
SELECTOR_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})


@dataclass(frozen=True, slots=True, order=True)
class Selector:
    """A label selector (matchLabels read as In with one value, plus matchExpressions)."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels.get(r.key)) for r in self.requirements)


@dataclass(frozen=True, slots=True, order=True)
class AffinityTerm:
    """One required pod (anti-)affinity term: pods its selector matches, in its namespaces,
    within one domain of `topology_key` (the node label whose value makes the domain)."""

    topology_key: str
    selector: Selector | None  # None: matches no pod
    namespaces: frozenset[str] | None  # None: every namespace

    def matches(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if self.selector is None:
            return False
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        return self.selector.matches(labels)


@dataclass(frozen=True, slots=True, order=True)
class WeightedTerm:
    """A preferred pod (anti-)affinity term: a score, carried for the scorer, never a filter."""

    weight: int
    term: AffinityTerm


@dataclass(frozen=True, slots=True, order=True)
class SpreadConstraint:
    """One topology spread constraint. Only `DoNotSchedule` ones filter (ScheduleAnyway
    scores); pods are counted in the incoming pod's own namespace."""

    max_skew: int
    topology_key: str
    selector: Selector | None  # None: matches no pod
    min_domains: int = 1
    honour_node_affinity: bool = True  # nodeAffinityPolicy (Honor is the default)
    honour_taints: bool = False  # nodeTaintsPolicy (Ignore is the default)
    filters: bool = True  # whenUnsatisfiable: DoNotSchedule (False: ScheduleAnyway)

    def counts(self, labels: Mapping[str, str]) -> bool:
        return self.selector is not None and self.selector.matches(labels)


@dataclass(frozen=True, slots=True, order=True)
class HostPort:
    port: int
    protocol: str = "TCP"
    host_ip: str = ANY_IP

    def conflicts(self, other: HostPort) -> bool:
        """Two pods cannot hold the same (protocol, port) on one node unless both name
        different, specific host IPs."""
        if self.port != other.port or self.protocol != other.protocol:
            return False
        return ANY_IP in (self.host_ip, other.host_ip) or self.host_ip == other.host_ip


@dataclass(frozen=True, slots=True, order=True)
class PodTerms:
    """The parts of one pod's spec that depend on the other pods. A running pod keeps its
    host ports and its required anti-affinity (both bind the pods that come after it)."""

    ports: tuple[HostPort, ...] = ()
    affinity: tuple[AffinityTerm, ...] = ()
    anti_affinity: tuple[AffinityTerm, ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()
    # Scores, not filters: carried for the scorer.
    preferred_affinity: tuple[WeightedTerm, ...] = ()
    preferred_anti_affinity: tuple[WeightedTerm, ...] = ()

    @property
    def filtering_spread(self) -> tuple[SpreadConstraint, ...]:
        return tuple(c for c in self.spread if c.filters)

    @property
    def scores(self) -> bool:
        """Whether any part only scores (preferred pod (anti-)affinity, ScheduleAnyway)."""
        return bool(
            self.preferred_affinity or self.preferred_anti_affinity or any(not c.filters for c in self.spread)
        )

    @property
    def filters(self) -> bool:
        """Whether any part limits the pod's nodes (preferred terms and ScheduleAnyway only score)."""
        return bool(self.ports or self.affinity or self.anti_affinity or self.filtering_spread)


def self_matches_all(terms: tuple[AffinityTerm, ...], namespace: str, labels: Mapping[str, str]) -> bool:
    """Whether the pod matches every one of its own affinity terms (kube-scheduler lets the
    first pod of a group with affinity to itself go where it could find itself)."""
    return bool(terms) and all(t.matches(namespace, labels) for t in terms)
