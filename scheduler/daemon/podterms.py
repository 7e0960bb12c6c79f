"""A pod's host ports, pod (anti-)affinity and topology spread as the core's PodTerms
(scheduler/core/podterms.py), read the way kube-scheduler reads them.

The API server's work is done here too, so the core sees plain sets: a term's
namespaceSelector is resolved against the namespaces' labels (an empty selector: every
namespace; no namespaces and no selector: the pod's own), and matchLabelKeys /
mismatchLabelKeys are merged into the selector from the pod's own labels. What cannot be
read (an unknown selector operator) is named, so the pod waits saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.core.constraints import Requirement
from scheduler.core.podterms import (
    ANY_IP,
    SELECTOR_OPERATORS,
    AffinityTerm,
    HostPort,
    PodTerms,
    Selector,
    SpreadConstraint,
    WeightedTerm,
)

NamespaceLabels = Mapping[str, Mapping[str, str]]  # namespace -> its labels
_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
_PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def pod_labels(pod: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return tuple(sorted((str(k), str(v)) for k, v in labels.items())) if labels else ()


def selector(raw: Any, where: str, bad: list[str]) -> Selector | None:
    """A LabelSelector; None when the spec gives none (it then matches nothing)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        bad.append(f"{where} (not a label selector)")
        return None
    reqs = [Requirement(str(k), "In", (str(v),)) for k, v in (raw.get("matchLabels") or {}).items()]
    for e in raw.get("matchExpressions") or []:
        op = e.get("operator") if isinstance(e, Mapping) else None
        if op not in SELECTOR_OPERATORS or not e.get("key"):
            bad.append(f"{where}.matchExpressions with operator {op!r}")
            continue
        reqs.append(Requirement(str(e["key"]), str(op), tuple(str(v) for v in e.get("values") or ())))
    return Selector(tuple(sorted(set(reqs))))


def _merge_keys(
    sel: Selector | None, labels: Mapping[str, str], match: Any, mismatch: Any = ()
) -> Selector | None:
    extra = [Requirement(k, "In", (labels[k],)) for k in match or () if k in labels]
    extra += [Requirement(k, "NotIn", (labels[k],)) for k in mismatch or () if k in labels]
    if not extra:
        return sel
    return Selector(tuple(sorted(set((sel.requirements if sel else ()) + tuple(extra)))))


def _namespaces(
    term: Mapping[str, Any], own: str, known: NamespaceLabels, where: str, bad: list[str]
) -> frozenset[str] | None:
    listed = {str(n) for n in term.get("namespaces") or ()}
    raw = term.get("namespaceSelector")
    if raw is None:
        return frozenset(listed or {own})
    sel = selector(raw, f"{where}.namespaceSelector", bad)
    if sel is not None and not sel.requirements:
        return None  # {}: every namespace
    if sel is not None:
        listed |= {ns for ns, labels in known.items() if sel.matches(labels)}
    return frozenset(listed)


def _affinity_term(
    raw: Any, ns: str, labels: Mapping[str, str], known: NamespaceLabels, where: str, bad: list[str]
) -> AffinityTerm | None:
    if not isinstance(raw, Mapping) or not raw.get("topologyKey"):
        bad.append(f"{where} without a topologyKey")
        return None
    sel = selector(raw.get("labelSelector"), f"{where}.labelSelector", bad)
    if sel is not None:
        sel = _merge_keys(sel, labels, raw.get("matchLabelKeys"), raw.get("mismatchLabelKeys"))
    return AffinityTerm(str(raw["topologyKey"]), sel, _namespaces(raw, ns, known, where, bad))


def _spread(raw: Any, labels: Mapping[str, str], bad: list[str]) -> SpreadConstraint | None:
    where = "spec.topologySpreadConstraints[]"
    if not isinstance(raw, Mapping) or not raw.get("topologyKey"):
        bad.append(f"{where} without a topologyKey")
        return None
    sel = selector(raw.get("labelSelector"), f"{where}.labelSelector", bad)
    merged = _merge_keys(sel, labels, raw.get("matchLabelKeys"))
    try:
        skew, min_domains = int(raw.get("maxSkew", 1)), int(raw.get("minDomains") or 1)
    except (TypeError, ValueError):
        bad.append(f"{where}.maxSkew or minDomains (not a whole number)")
        return None
    return SpreadConstraint(
        skew,
        str(raw["topologyKey"]),
        merged,
        min_domains,
        honour_node_affinity=raw.get("nodeAffinityPolicy", "Honor") != "Ignore",
        honour_taints=raw.get("nodeTaintsPolicy", "Ignore") == "Honor",
        filters=raw.get("whenUnsatisfiable", "DoNotSchedule") != "ScheduleAnyway",
    )


def host_ports(spec: Mapping[str, Any]) -> tuple[HostPort, ...]:
    """The host ports of the app containers and of the sidecars (init containers with
    restartPolicy Always, which run beside them); plain init containers have exited."""
    containers = [c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    containers += list(spec.get("containers") or ())
    out = []
    for c in containers:
        for p in c.get("ports") or ():
            port = p.get("hostPort") if isinstance(p, Mapping) else None
            if isinstance(port, int) and port > 0:
                out.append(HostPort(port, str(p.get("protocol") or "TCP"), str(p.get("hostIP") or ANY_IP)))
    return tuple(out)


def pod_terms(
    pod: Mapping[str, Any], known: NamespaceLabels | None = None
) -> tuple[PodTerms | None, list[str]]:
    """The pod's PodTerms (None when it states none, the common case) and the fields that
    could not be read (the pod then waits naming them)."""
    spec = pod.get("spec") or {}
    affinity = spec.get("affinity") or {}
    spread_raw = spec.get("topologySpreadConstraints") or ()
    ports = host_ports(spec)
    pod_aff, pod_anti = affinity.get("podAffinity") or {}, affinity.get("podAntiAffinity") or {}
    if not (ports or spread_raw or pod_aff or pod_anti):
        return None, []
    bad: list[str] = []
    meta = pod.get("metadata") or {}
    ns = str(meta.get("namespace") or "default")
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    known = known or {}

    def required(kind: Mapping[str, Any], name: str) -> tuple[AffinityTerm, ...]:
        where = f"spec.affinity.{name}.{_REQUIRED}[]"
        terms = (_affinity_term(t, ns, labels, known, where, bad) for t in kind.get(_REQUIRED) or ())
        return tuple(t for t in terms if t is not None)

    def preferred(kind: Mapping[str, Any], name: str) -> tuple[WeightedTerm, ...]:
        where = f"spec.affinity.{name}.{_PREFERRED}[].podAffinityTerm"
        out = []
        for w in kind.get(_PREFERRED) or ():
            t = _affinity_term((w or {}).get("podAffinityTerm"), ns, labels, known, where, bad)
            if t is not None:
                out.append(WeightedTerm(int(w.get("weight", 1)), t))
        return tuple(out)

    spread = tuple(c for c in (_spread(r, labels, bad) for r in spread_raw) if c is not None)
    terms = PodTerms(
        ports,
        required(pod_aff, "podAffinity"),
        required(pod_anti, "podAntiAffinity"),
        spread,
        preferred(pod_aff, "podAffinity"),
        preferred(pod_anti, "podAntiAffinity"),
    )
    return terms, bad
