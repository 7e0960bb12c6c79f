"""A pod's and a node's spec as the core's node constraints (scheduler/core/constraints.py).

What gpufair honours is read into constraints; a field that would limit where the pod may
run but that gpufair does not check yet is named in `unsupported`, so the pod waits with
that reason instead of being bound where the kubelet (or the pod's author) would refuse it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.core.constraints import OPERATORS, PodConstraints, Requirement, Taint, Term, Toleration

# Resources a node's fit is checked for; any other request is not honoured yet.
HONOURED_RESOURCES = frozenset({"cpu", "memory", "nvidia.com/gpu"})
_EFFECTS = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})


def node_taints(node: Mapping[str, Any]) -> tuple[Taint, ...]:
    out = []
    for t in (node.get("spec") or {}).get("taints") or []:
        if isinstance(t, Mapping) and t.get("key") and t.get("effect") in _EFFECTS:
            out.append(Taint(str(t["key"]), str(t.get("value") or ""), str(t["effect"])))
    return tuple(sorted(out))


def _requirements(items: Any, where: str, unsupported: list[str]) -> tuple[Requirement, ...]:
    out = []
    for r in items or []:
        op = r.get("operator") if isinstance(r, Mapping) else None
        if op not in OPERATORS or not r.get("key"):
            unsupported.append(f"{where} with operator {op!r}")
            continue
        out.append(Requirement(str(r["key"]), str(op), tuple(str(v) for v in r.get("values") or ())))
    return tuple(out)


def _required_terms(affinity: Mapping[str, Any], unsupported: list[str]) -> tuple[Term, ...] | None:
    node_affinity = affinity.get("nodeAffinity") or {}
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return None
    terms = []
    for term in required.get("nodeSelectorTerms") or []:
        where = "spec.affinity.nodeAffinity.required.nodeSelectorTerms[]"
        exprs = _requirements(term.get("matchExpressions"), f"{where}.matchExpressions", unsupported)
        fields = _requirements(term.get("matchFields"), f"{where}.matchFields", unsupported)
        if any(f.key != "metadata.name" for f in fields):
            unsupported.append(f"{where}.matchFields on a field other than metadata.name")
        terms.append(Term(exprs, fields))
    return tuple(terms)


def _containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        c for key in ("initContainers", "containers") for c in spec.get(key) or [] if isinstance(c, Mapping)
    ]


def pod_constraints(pod: Mapping[str, Any]) -> PodConstraints | None:
    """The pod's node constraints, or None when it has none (the common case)."""
    spec = pod.get("spec") or {}
    unsupported: list[str] = []
    selector = tuple(sorted((str(k), str(v)) for k, v in (spec.get("nodeSelector") or {}).items()))
    affinity = spec.get("affinity") or {}
    required = _required_terms(affinity, unsupported)
    # Host ports, pod (anti-)affinity and topology spread are read by podterms.pod_terms.
    for v in spec.get("volumes") or []:
        if isinstance(v, Mapping) and ("persistentVolumeClaim" in v or "ephemeral" in v):
            unsupported.append("spec.volumes[].persistentVolumeClaim")
            break
    if spec.get("resourceClaims"):
        unsupported.append("spec.resourceClaims (dynamic resource allocation)")
    others: set[str] = set()
    for c in _containers(spec):
        res = c.get("resources") or {}
        others.update(
            k
            for k in {**(res.get("limits") or {}), **(res.get("requests") or {})}
            if k not in HONOURED_RESOURCES
        )
    for name in sorted(others):
        unsupported.append(f"resources.requests[{name}]")
    tolerations = tuple(
        sorted(
            Toleration(
                str(t.get("key") or ""),
                str(t.get("operator") or "Equal"),
                str(t.get("value") or ""),
                str(t.get("effect") or ""),
            )
            for t in spec.get("tolerations") or []
            if isinstance(t, Mapping)
        )
    )
    gates = tuple(
        sorted(str(g.get("name")) for g in spec.get("schedulingGates") or [] if isinstance(g, Mapping))
    )
    if not (selector or required is not None or tolerations or unsupported or gates):
        return None
    return PodConstraints(selector, required, tolerations, tuple(sorted(set(unsupported))), gates)
