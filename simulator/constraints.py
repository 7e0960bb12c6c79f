"""Node labels and taints, and pod node constraints, as the simulator's inputs write them.

A cluster spec group carries `labels` and `taints`; a native trace row carries a job's
`node_selector`, `tolerations` and `node_affinity` (its required nodeSelectorTerms). Each is
written as the Kubernetes object field it stands for, checked here as the API server would
check it (so a typo is a bad row, not a job that silently never runs), and then read by the
daemon's own pod spec reader (`scheduler.daemon.podspec`), so a replay puts the same
`PodConstraints` before the same node filters as the daemon does.

A problem is a `SpecProblem`: where inside the value (`[0].operator`), what is wrong, and
the fix; the trace reader and the cluster spec turn it into their own row- or field-named
error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scheduler.core.constraints import OPERATORS, PodConstraints, Taint, Term
from scheduler.daemon.podspec import node_taints, pod_constraints

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_TAINT_KEYS = ("key", "value", "effect")
_TOLERATION_KEYS = ("key", "operator", "value", "effect")
_TERM_KEYS = ("matchExpressions", "matchFields")
_REQUIREMENT_KEYS = ("key", "operator", "values")

# Kubernetes label syntax: an optional DNS-subdomain prefix and '/', then a name of at most
# 63 characters; a value is empty or such a name.
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class SpecProblem(ValueError):
    """A bad field inside one value: `where` is its path inside the value ('' for the whole)."""

    def __init__(self, where: str, problem: str, fix: str) -> None:
        self.where = where
        self.problem = problem
        self.fix = fix
        super().__init__(f"{where}: {problem}; {fix}")


def _label_key_problem(key: object) -> str | None:
    if not isinstance(key, str) or not key:
        return f"{key!r} is not a label key"
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _PREFIX.fullmatch(prefix)):
        return f"{key!r} has a prefix that is not a DNS subdomain"
    if not _NAME.fullmatch(name):
        return f"{key!r} is not a label key"
    return None


def _label_value_ok(value: object) -> bool:
    return isinstance(value, str) and (value == "" or _NAME.fullmatch(value) is not None)


_KEY_FIX = "write a label key such as pool or example.com/pool (letters, digits, '-', '_', '.'; 63 at most)"
_VALUE_FIX = (
    "write a label value: empty, or letters, digits, '-', '_', '.' (63 at most), alphanumeric at both ends"
)


def _mapping(value: Any, where: str, allowed: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecProblem(where, f"{value!r} is not an object", f"write {what} as {{{', '.join(allowed)}}}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise SpecProblem(f"{where}.{unknown[0]}", "is not a field of " + what, f"use {', '.join(allowed)}")
    return value


def _list(value: Any, where: str, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpecProblem(where, f"{value!r} is not a list", f"write {what} as a list")
    return value


def _text(body: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise SpecProblem(f"{where}.{key}", f"{value!r} is not a string", f'quote it: "{value}"')
    return value


def labels(value: Any) -> dict[str, str]:
    """A map of node labels (or a nodeSelector), checked as label keys and values."""
    if not isinstance(value, Mapping):
        raise SpecProblem("", f"{value!r} is not an object", 'write labels as {"pool": "a"}')
    out: dict[str, str] = {}
    for key, v in value.items():
        problem = _label_key_problem(key)
        if problem:
            raise SpecProblem(f"[{key!r}]", problem, _KEY_FIX)
        if not _label_value_ok(v):
            raise SpecProblem(f"[{key!r}]", f"{v!r} is not a label value", _VALUE_FIX)
        out[key] = v
    return out


def taints(value: Any) -> tuple[Taint, ...]:
    """A node's taints: [{key, value, effect}], effect NoSchedule, PreferNoSchedule or NoExecute."""
    items = _list(value, "", "taints")
    for i, t in enumerate(items):
        at = f"[{i}]"
        body = _mapping(t, at, _TAINT_KEYS, "a taint")
        problem = _label_key_problem(body.get("key"))
        if problem:
            raise SpecProblem(f"{at}.key", problem, _KEY_FIX)
        if not _label_value_ok(body.get("value", "")):
            raise SpecProblem(f"{at}.value", f"{body.get('value')!r} is not a taint value", _VALUE_FIX)
        if body.get("effect") not in TAINT_EFFECTS:
            raise SpecProblem(
                f"{at}.effect",
                f"{body.get('effect')!r} is not a taint effect",
                f"use {', '.join(TAINT_EFFECTS)}",
            )
    return node_taints({"spec": {"taints": items}})


def tolerations(value: Any) -> list[Mapping[str, Any]]:
    """Pod tolerations: [{key, operator, value, effect}], as Kubernetes validates them."""
    items = _list(value, "", "tolerations")
    for i, t in enumerate(items):
        at = f"[{i}]"
        body = _mapping(t, at, _TOLERATION_KEYS, "a toleration")
        key = _text(body, "key", at)
        operator = _text(body, "operator", at, "Equal")
        val = _text(body, "value", at)
        effect = _text(body, "effect", at)
        if operator not in ("", "Equal", "Exists"):
            raise SpecProblem(
                f"{at}.operator", f"{operator!r} is not a toleration operator", "use Equal or Exists"
            )
        if operator == "Exists" and val:
            raise SpecProblem(
                f"{at}.value", f"{val!r} is set with operator Exists", "drop the value, or use operator Equal"
            )
        if not key and operator != "Exists":
            raise SpecProblem(
                f"{at}.operator",
                "an empty key tolerates every taint only with operator Exists",
                "give the taint's key, or use operator Exists",
            )
        if key and (problem := _label_key_problem(key)):
            raise SpecProblem(f"{at}.key", problem, _KEY_FIX)
        if effect and effect not in TAINT_EFFECTS:
            raise SpecProblem(
                f"{at}.effect",
                f"{effect!r} is not a taint effect",
                f"use {', '.join(TAINT_EFFECTS)}, or leave it empty for every effect",
            )
    return items


def _requirement(r: Any, at: str, field: bool) -> None:
    body = _mapping(r, at, _REQUIREMENT_KEYS, "a node selector requirement")
    key = _text(body, "key", at)
    op = _text(body, "operator", at)
    values = _list(body.get("values", []), f"{at}.values", "values")
    if any(not isinstance(v, str) for v in values):
        raise SpecProblem(
            f"{at}.values", f"{values!r} holds a value that is not a string", "quote every value"
        )
    if field:
        if key != "metadata.name":
            raise SpecProblem(
                f"{at}.key", f"{key!r} is not a node field", "matchFields takes key metadata.name"
            )
        if op not in ("In", "NotIn") or len(values) != 1:
            raise SpecProblem(
                f"{at}.operator",
                f"{op} with {len(values)} values on metadata.name",
                "use In or NotIn with exactly one node name",
            )
        return
    if problem := _label_key_problem(key):
        raise SpecProblem(f"{at}.key", problem, _KEY_FIX)
    if op not in OPERATORS:
        raise SpecProblem(
            f"{at}.operator", f"{op!r} is not an operator", f"use {', '.join(sorted(OPERATORS))}"
        )
    if op in ("In", "NotIn") and not values:
        raise SpecProblem(f"{at}.values", f"{op} needs at least one value", "list the label values")
    if op in ("Exists", "DoesNotExist") and values:
        raise SpecProblem(f"{at}.values", f"{op} takes no values", "drop values, or use In")
    if op in ("Gt", "Lt") and (len(values) != 1 or not values[0].lstrip("-").isdigit()):
        raise SpecProblem(
            f"{at}.values", f"{op} needs exactly one whole number, not {values!r}", 'write e.g. ["4"]'
        )


def node_selector_terms(value: Any) -> list[Mapping[str, Any]]:
    """Required node affinity: a list of nodeSelectorTerms, any of which may hold; each term
    is {matchExpressions, matchFields}, all of whose requirements hold."""
    items = _list(value, "", "nodeSelectorTerms")
    if not items:
        raise SpecProblem(
            "", "no term", "list at least one term, or leave the field empty for no node affinity"
        )
    for i, term in enumerate(items):
        at = f"[{i}]"
        body = _mapping(term, at, _TERM_KEYS, "a node selector term")
        exprs = _list(body.get("matchExpressions", []), f"{at}.matchExpressions", "matchExpressions")
        fields = _list(body.get("matchFields", []), f"{at}.matchFields", "matchFields")
        if not exprs and not fields:
            raise SpecProblem(at, "an empty term matches no node", "give it matchExpressions or matchFields")
        for k, r in enumerate(exprs):
            _requirement(r, f"{at}.matchExpressions[{k}]", field=False)
        for k, r in enumerate(fields):
            _requirement(r, f"{at}.matchFields[{k}]", field=True)
    return items


def job_constraints(
    selector: Mapping[str, str] | None,
    toleration_list: list[Mapping[str, Any]] | None,
    terms: list[Mapping[str, Any]] | None,
) -> PodConstraints | None:
    """The PodConstraints the daemon would read from a pod with these (checked) fields."""
    spec: dict[str, Any] = {}
    if selector:
        spec["nodeSelector"] = dict(selector)
    if toleration_list:
        spec["tolerations"] = list(toleration_list)
    if terms:
        required = {"nodeSelectorTerms": list(terms)}
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    found = pod_constraints({"spec": spec})
    if found is not None and found.unsupported:  # the checks above keep to what it honours
        raise SpecProblem("", f"{', '.join(found.unsupported)} is not honoured", "remove it")
    return found


def written(
    c: PodConstraints | None,
) -> tuple[dict[str, str] | None, list[dict[str, str]] | None, list | None]:
    """(node_selector, tolerations, nodeSelectorTerms) as JSON-ready values; None where empty."""
    if c is None:
        return None, None, None
    selector = dict(c.node_selector) or None
    tols = [
        {
            k: v
            for k, v in (("key", t.key), ("operator", t.operator), ("value", t.value), ("effect", t.effect))
            if v
        }
        for t in c.tolerations
    ] or None
    terms = None if c.required is None else [_term(t) for t in c.required]
    return selector, tols, terms


def _term(t: Term) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, reqs in (("matchExpressions", t.expressions), ("matchFields", t.fields)):
        if reqs:
            out[name] = [
                {"key": r.key, "operator": r.operator, **({"values": list(r.values)} if r.values else {})}
                for r in reqs
            ]
    return out
