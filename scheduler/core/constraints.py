"""What of a pod's spec limits the nodes it may use, in kube-scheduler's terms.

The shell reads these from the pod and node objects; the node filters (filters.py) turn
them into node masks. Semantics follow kube-scheduler's TaintToleration and NodeAffinity
plugins (and component-helpers' toleration and node-selector matching): a taint is
tolerated when the toleration's effect is empty or equal, its key empty or equal, and its
operator Exists or its value equal; required node affinity is an OR of terms, each an AND
of its expressions, and an empty term matches no node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.core.volumes import VolumeConstraints

# Taint effects that keep a pod off a node (PreferNoSchedule only scores).
FILTERING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})


@dataclass(frozen=True, slots=True, order=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"

    def __str__(self) -> str:
        return f"{{{self.key}: {self.value}}}" if self.value else f"{{{self.key}}}"


# The taint a cordoned node is read as having (the node lifecycle controller adds it).
CORDON_TAINT = Taint("node.kubernetes.io/unschedulable", "", "NoSchedule")


@dataclass(frozen=True, slots=True, order=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"  # "" reads as Equal
    value: str = ""
    effect: str = ""  # "": every effect

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return self.operator in ("", "Equal") and self.value == taint.value


@dataclass(frozen=True, slots=True, order=True)
class Requirement:
    """One node selector requirement: a label key (or, for a field, `metadata.name`)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, value: str | None) -> bool:
        op = self.operator
        if op == "In":
            return value is not None and value in self.values
        if op == "NotIn":
            return value is None or value not in self.values
        if op == "Exists":
            return value is not None
        if op == "DoesNotExist":
            return value is None
        if value is None or len(self.values) != 1:
            return False
        try:  # Gt and Lt compare whole numbers; anything else matches nothing
            have, bound = int(value), int(self.values[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound


@dataclass(frozen=True, slots=True, order=True)
class Term:
    """A node selector term: every expression (on labels) and field (metadata.name) holds."""

    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if not self.expressions and not self.fields:
            return False  # an empty term selects nothing
        return all(r.matches(labels.get(r.key)) for r in self.expressions) and all(
            r.matches(name if r.key == "metadata.name" else None) for r in self.fields
        )


@dataclass(frozen=True, slots=True, order=True)
class PodConstraints:
    """The node constraints of one pod, and what of its spec gpufair does not honour yet.

    `unsupported` names spec fields that would limit the pod's nodes in ways gpufair does not
    check (the pod then waits, saying so, rather than being bound where it may not run);
    `gates` are its schedulingGates (the pod is not tried until they are removed)."""

    node_selector: tuple[tuple[str, str], ...] = ()
    required: tuple[Term, ...] | None = None  # None: no required node affinity
    tolerations: tuple[Toleration, ...] = ()
    unsupported: tuple[str, ...] = ()
    gates: tuple[str, ...] = field(default=())
    # Node pools dedicated to other teams (their node selectors): never this pod's.
    excluded: tuple[tuple[tuple[str, str], ...], ...] = ()
    # Preferred node affinity: (weight, term), scored, never filtered on.
    preferred: tuple[tuple[int, Term], ...] = ()
    # What its volumes ask of the node (at most one; empty: none), see volumes.py.
    volumes: tuple[VolumeConstraints, ...] = ()

    @property
    def limits_nodes(self) -> bool:
        return bool(self.node_selector) or self.required is not None

    def selects(self, name: str, labels: Mapping[str, str]) -> bool:
        """nodeSelector and required node affinity (both must hold, as kube-scheduler has it)."""
        if any(labels.get(k) != v for k, v in self.node_selector):
            return False
        return self.required is None or any(t.matches(name, labels) for t in self.required)

    def in_excluded_pool(self, labels: Mapping[str, str]) -> bool:
        return any(all(labels.get(k) == v for k, v in pool) for pool in self.excluded)

    @property
    def tolerates_cordon(self) -> bool:
        return any(t.tolerates(CORDON_TAINT) for t in self.tolerations)

    def untolerated(self, taints: tuple[Taint, ...]) -> Taint | None:
        """The first NoSchedule or NoExecute taint no toleration of the pod tolerates."""
        for taint in taints:
            if taint.effect in FILTERING_EFFECTS and not any(t.tolerates(taint) for t in self.tolerations):
                return taint
        return None
