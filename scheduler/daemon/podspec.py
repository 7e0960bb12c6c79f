"""A pod's and a node's spec as the core's node constraints (scheduler/core/constraints.py).

What gpufair honours is read into constraints; a field that would limit where the pod may
run but that gpufair does not check yet is named in `unsupported`, so the pod waits with
that reason instead of being bound where the kubelet (or the pod's author) would refuse it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from scheduler.core.constraints import OPERATORS, PodConstraints, Requirement, Taint, Term, Toleration
from scheduler.core.volumes import VolumeConstraints, with_volumes

# Reads a pod's claims into node constraints (scheduler/daemon/volumes.py VolumeReader.read).
VolumeRead = Callable[[Mapping[str, Any]], VolumeConstraints | None]

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


def _preferred_terms(affinity: Mapping[str, Any], unsupported: list[str]) -> tuple[tuple[int, Term], ...]:
    """Preferred node affinity as (weight, term); a weight outside 1..100 is refused by the
    API server, so one seen here is read as it stands."""
    node_affinity = affinity.get("nodeAffinity") or {}
    out = []
    where = "spec.affinity.nodeAffinity.preferred[].preference"
    for item in node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        if not isinstance(item, Mapping):
            continue
        term = item.get("preference") or {}
        exprs = _requirements(term.get("matchExpressions"), f"{where}.matchExpressions", unsupported)
        fields = _requirements(term.get("matchFields"), f"{where}.matchFields", unsupported)
        out.append((int(item.get("weight") or 0), Term(exprs, fields)))
    return tuple(sorted(out))


def _containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        c for key in ("initContainers", "containers") for c in spec.get(key) or [] if isinstance(c, Mapping)
    ]


def pod_constraints(pod: Mapping[str, Any], volumes: VolumeRead | None = None) -> PodConstraints | None:
    """The pod's node constraints, or None when it has none (the common case). Without
    `volumes` (no storage objects to read them from), claims are not honoured."""
    spec = pod.get("spec") or {}
    unsupported: list[str] = []
    selector = tuple(sorted((str(k), str(v)) for k, v in (spec.get("nodeSelector") or {}).items()))
    affinity = spec.get("affinity") or {}
    required = _required_terms(affinity, unsupported)
    preferred = _preferred_terms(affinity, unsupported)
    # Host ports, pod (anti-)affinity and topology spread are read by podterms.pod_terms.
    claims = None
    for v in spec.get("volumes") or []:
        if isinstance(v, Mapping) and ("persistentVolumeClaim" in v or "ephemeral" in v):
            if volumes is None:
                unsupported.append("spec.volumes[].persistentVolumeClaim")
            else:
                claims = volumes(pod)
            break
    if spec.get("resourceClaims"):
        unsupported.append("spec.resourceClaims (dynamic resource allocation)")
    # Every resource request is honoured: the core fits each one a node advertises
    # (resources.py), so none is named here.
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
    if not (selector or required is not None or tolerations or unsupported or gates or preferred):
        return with_volumes(None, claims)
    out = PodConstraints(
        selector, required, tolerations, tuple(sorted(set(unsupported))), gates, preferred=preferred
    )
    return with_volumes(out, claims)
