"""GPUTeam manifests (YAML or the CRD objects the daemon reads) into Team values."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import yaml

from scheduler.core.config import API_VERSION
from scheduler.core.constraints import Toleration
from scheduler.core.durations import parse_duration
from scheduler.core.errors import InvalidInput
from scheduler.core.model import Budget, OnExhausted, Team
from scheduler.core.teamtree import tree_problems

_SPEC_KEYS = {
    "weight",
    "guaranteedGPUs",
    "maxGPUs",
    "budget",
    "namespaces",
    "minRuntime",
    "production",
    "nodePool",
    "parent",
}
_PRODUCTION_KEYS = {"allowed", "maxGPUs"}
_POOL_KEYS = {"nodeSelector", "tolerations", "dedicated"}
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")
_BUDGET_KEYS = {"gpuHours", "period", "onExhausted", "anchor"}


def _number(obj: str, path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(obj, path, f"{value!r} is not a number", "write a number")
    return float(value)


def _budget(obj: str, body: Any) -> Budget:
    if not isinstance(body, Mapping):
        raise InvalidInput(obj, "spec.budget", "is not a mapping", "give gpuHours, period, onExhausted")
    unknown = set(body) - _BUDGET_KEYS
    if unknown:
        raise InvalidInput(
            obj,
            f"spec.budget.{sorted(unknown)[0]}",
            "unknown field",
            f"use {', '.join(sorted(_BUDGET_KEYS))}",
        )
    if "gpuHours" not in body:
        raise InvalidInput(obj, "spec.budget.gpuHours", "missing", "give the GPU-hours per period")
    hours = _number(obj, "spec.budget.gpuHours", body["gpuHours"])
    if not math.isfinite(hours):
        raise InvalidInput(
            obj, "spec.budget.gpuHours", f"{hours!r} is not finite", "give a number of GPU-hours"
        )
    if hours < 0:
        raise InvalidInput(obj, "spec.budget.gpuHours", f"{hours:g} is negative", "use 0 or more")
    raw_period = body.get("period", "month")
    period_seconds = None
    if raw_period in ("week", "month"):
        period = raw_period
    else:
        try:
            period_seconds = parse_duration(raw_period, obj, "spec.budget.period")
        except InvalidInput:
            raise InvalidInput(
                obj,
                "spec.budget.period",
                f"unknown period {raw_period!r}",
                "use 'week', 'month' or a duration such as '30d'",
            ) from None
        if period_seconds <= 0:
            raise InvalidInput(obj, "spec.budget.period", "zero length", "use a duration such as '30d'")
        period = "duration"
    raw_mode = body.get("onExhausted", "scavenge")
    try:
        mode = OnExhausted(raw_mode)
    except ValueError:
        raise InvalidInput(
            obj,
            "spec.budget.onExhausted",
            f"unknown value {raw_mode!r}",
            "use 'scavenge' or 'block'",
        ) from None
    anchor_s = _anchor(obj, body.get("anchor", 0))
    return Budget(hours, period, mode, period_seconds, anchor_s)


# RFC 3339 date-time (section 5.6): the offset is required, so an instant never depends on
# the reader's time zone.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_ANCHOR_FIX = "write an RFC 3339 instant such as '2026-01-05T00:00:00Z'"


def _anchor(obj: str, value: Any) -> float:
    """spec.budget.anchor as epoch seconds: an RFC 3339 instant (what the CRD takes), or epoch
    seconds as a number (what team files for `gpufair validate` and the simulator took before)."""
    path = "spec.budget.anchor"
    if isinstance(value, datetime):  # YAML reads an unquoted timestamp into one
        if value.tzinfo is None:
            raise InvalidInput(obj, path, f"{value.isoformat()!r} has no UTC offset", _ANCHOR_FIX)
        return value.timestamp()
    if isinstance(value, date):
        raise InvalidInput(
            obj, path, f"{value.isoformat()!r} is a date without a time", f"write '{value}T00:00:00Z'"
        )
    if isinstance(value, str):
        text = value.strip()
        if not _RFC3339.fullmatch(text):
            raise InvalidInput(obj, path, f"{value!r} is not an RFC 3339 instant", _ANCHOR_FIX)
        try:
            return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).timestamp()
        except ValueError as exc:
            raise InvalidInput(obj, path, f"{value!r} is not a valid instant ({exc})", _ANCHOR_FIX) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(obj, path, f"{value!r} is not an RFC 3339 instant", _ANCHOR_FIX)
    if not math.isfinite(value):
        raise InvalidInput(obj, path, f"{value!r} is not an instant", _ANCHOR_FIX)
    return float(value)


def team_from_manifest(doc: Mapping[str, Any]) -> Team:
    """One GPUTeam object (parsed YAML or a CRD dict from the API) into a Team."""
    if not isinstance(doc, Mapping):
        raise InvalidInput("GPUTeam", "(document)", "is not a mapping", "write a YAML mapping")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InvalidInput("GPUTeam", "metadata", "is not a mapping", "write metadata: {name: TEAM}")
    name = metadata.get("name")
    obj = f"GPUTeam {name!r}" if name else "GPUTeam"
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidInput(
            obj, "apiVersion", f"{doc.get('apiVersion')!r} is not supported", f"use {API_VERSION}"
        )
    if doc.get("kind") != "GPUTeam":
        raise InvalidInput(obj, "kind", f"{doc.get('kind')!r} is not GPUTeam", "set kind: GPUTeam")
    if not name or not isinstance(name, str):
        raise InvalidInput(obj, "metadata.name", "missing", "give the team a name")
    spec = doc.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise InvalidInput(obj, "spec", "is not a mapping", "write the team's fields under spec")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise InvalidInput(
            obj,
            f"spec.{sorted(unknown)[0]}",
            "unknown field",
            f"use {', '.join(sorted(_SPEC_KEYS))}",
        )
    namespaces = spec.get("namespaces", [])
    if not isinstance(namespaces, list) or not all(isinstance(n, str) and n for n in namespaces):
        raise InvalidInput(
            obj, "spec.namespaces", f"{namespaces!r} is not a list of names", "list namespaces"
        )
    max_gpus = spec.get("maxGPUs")
    parent = spec.get("parent")
    if parent is not None and not (isinstance(parent, str) and parent):
        raise InvalidInput(
            obj, "spec.parent", f"{parent!r} is not a GPUTeam name", "name the parent GPUTeam or leave it out"
        )
    return Team(
        parent=parent,
        name=name,
        weight=_number(obj, "spec.weight", spec.get("weight", 1)),
        guaranteed_gpus=_number(obj, "spec.guaranteedGPUs", spec.get("guaranteedGPUs", 0)),
        max_gpus=None if max_gpus is None else _number(obj, "spec.maxGPUs", max_gpus),
        budget=_budget(obj, spec["budget"]) if spec.get("budget") is not None else None,
        namespaces=tuple(namespaces),
        min_runtime_s=parse_duration(spec.get("minRuntime", 0), obj, "spec.minRuntime"),
        **_production(obj, spec.get("production")),
        **_node_pool(obj, spec.get("nodePool")),
    )


def _toleration(obj: str, where: str, t: Any) -> Toleration:
    if not isinstance(t, Mapping) or set(t) - _TOLERATION_KEYS:
        raise InvalidInput(obj, where, f"{t!r} is not a toleration", "write {key, operator, value, effect}")
    op = t.get("operator", "Equal")
    if op not in ("Equal", "Exists") or (op == "Exists" and t.get("value")):
        raise InvalidInput(
            obj,
            f"{where}.operator",
            f"{op!r} with value {t.get('value')!r}",
            "use Equal with a value, or Exists",
        )
    effect = t.get("effect", "")
    if effect not in _EFFECTS:
        raise InvalidInput(
            obj, f"{where}.effect", f"{effect!r} is not a taint effect", "use NoSchedule or NoExecute"
        )
    return Toleration(str(t.get("key") or ""), op, str(t.get("value") or ""), effect)


def _node_pool(obj: str, body: Any) -> dict[str, Any]:
    """spec.nodePool: {nodeSelector, tolerations, dedicated} (see core/pools.py)."""
    if body is None:
        return {}
    path = "spec.nodePool"
    if not isinstance(body, Mapping):
        raise InvalidInput(obj, path, "is not a mapping", "write nodePool: {nodeSelector: {pool: a}}")
    unknown = set(body) - _POOL_KEYS
    if unknown:
        raise InvalidInput(
            obj, f"{path}.{sorted(unknown)[0]}", "unknown field", f"use {', '.join(sorted(_POOL_KEYS))}"
        )
    selector = body.get("nodeSelector") or {}
    if not isinstance(selector, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in selector.items()
    ):
        raise InvalidInput(
            obj, f"{path}.nodeSelector", f"{selector!r} is not a map of labels", "write {pool: a}"
        )
    tolerations = [
        _toleration(obj, f"{path}.tolerations[{i}]", t) for i, t in enumerate(body.get("tolerations") or [])
    ]
    dedicated = body.get("dedicated", False)
    if not isinstance(dedicated, bool):
        raise InvalidInput(
            obj, f"{path}.dedicated", f"{dedicated!r} is not true or false", "write true or false"
        )
    return {
        "node_selector": tuple(sorted(selector.items())),
        "tolerations": tuple(sorted(set(tolerations))),
        "dedicated": dedicated,
    }


def _production(obj: str, body: Any) -> dict[str, Any]:
    """spec.production: {allowed, maxGPUs}. Left out, the team may not run production: the
    tier preempts other teams' work, so it is granted by the platform, never assumed."""
    if body is None:
        return {"production_allowed": False, "production_max_gpus": None}
    if not isinstance(body, Mapping):
        raise InvalidInput(obj, "spec.production", "is not a mapping", "write production: {allowed: true}")
    unknown = set(body) - _PRODUCTION_KEYS
    if unknown:
        raise InvalidInput(
            obj, f"spec.production.{sorted(unknown)[0]}", "unknown field", "use allowed and maxGPUs"
        )
    allowed = body.get("allowed", False)
    if not isinstance(allowed, bool):
        raise InvalidInput(
            obj, "spec.production.allowed", f"{allowed!r} is not true or false", "write true or false"
        )
    cap = body.get("maxGPUs")
    return {
        "production_allowed": allowed,
        "production_max_gpus": None if cap is None else _number(obj, "spec.production.maxGPUs", cap),
    }


def claim_order(doc: Mapping[str, Any]) -> tuple[int, float, str]:
    """Which of two GPUTeams claimed a namespace first: the older metadata.creationTimestamp,
    then the name. A document without a timestamp (a file not yet applied) counts as newest."""
    created = _metadata(doc).get("creationTimestamp")
    try:
        at = datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp() if created else None
    except ValueError:
        at = None
    name = str(_metadata(doc).get("name"))
    return (0, at, name) if at is not None else (1, 0.0, name)


def _metadata(doc: Any) -> Mapping[str, Any]:
    metadata = doc.get("metadata") if isinstance(doc, Mapping) else None
    return metadata if isinstance(metadata, Mapping) else {}


def _listed(doc: Mapping[str, Any]) -> list[str]:
    """The namespaces a GPUTeam lists, read even when the rest of it is invalid: a claim
    holds while its team is broken, so fixing the team never moves pods between teams."""
    spec = doc.get("spec") if isinstance(doc, Mapping) else None
    namespaces = spec.get("namespaces") if isinstance(spec, Mapping) else None
    return [n for n in namespaces if isinstance(n, str) and n] if isinstance(namespaces, list) else []


def _owners(docs: list[Mapping[str, Any]]) -> dict[str, str]:
    """Namespace -> the GPUTeam with the oldest claim on it (`docs` in claim order)."""
    owner: dict[str, str] = {}
    for doc in docs:
        name = _metadata(doc).get("name")
        if isinstance(name, str) and name:
            for ns in _listed(doc):
                owner.setdefault(ns, name)
    return owner


def _claim_clash(team: Team, owner: Mapping[str, str]) -> InvalidInput | None:
    taken = [ns for ns in team.namespaces if owner.get(ns, team.name) != team.name]
    if not taken:
        return None
    ns, first = taken[0], owner[taken[0]]
    return InvalidInput(
        f"GPUTeam {team.name!r}",
        "spec.namespaces",
        f"namespace {ns!r} already belongs to GPUTeam {first!r}, the older claim (by "
        "creationTimestamp, then name); a namespace belongs to one team only, so this team is "
        "ignored until the overlap is removed",
        f"remove {ns!r} from this team's spec.namespaces (to move the namespace here, remove it "
        f"from GPUTeam {first!r} first)",
    )


@dataclass(frozen=True, slots=True)
class ResolvedTeams:
    """GPUTeam objects as the daemon uses them."""

    teams: tuple[Team, ...]  # the usable teams, in claim order
    owner: Mapping[str, str]  # namespace -> the usable team it belongs to
    refused: Mapping[str, InvalidInput]  # GPUTeam name -> why it is left out


def resolve_teams(docs: Iterable[Mapping[str, Any]]) -> ResolvedTeams:
    """Every GPUTeam that can be read, each bad one left out with its reason. A namespace
    listed by two teams stays with the older claim (`claim_order`), so a newer GPUTeam can
    never take a namespace, and the pods already charged in it, from an existing team."""
    ordered = sorted((d for d in docs if d is not None), key=claim_order)
    owner = _owners(ordered)
    teams: list[Team] = []
    refused: dict[str, InvalidInput] = {}
    for doc in ordered:
        name = str(_metadata(doc).get("name"))
        try:
            team = team_from_manifest(doc)
        except InvalidInput as exc:
            refused[name] = exc
            continue
        clash = _claim_clash(team, owner)
        if clash is not None:
            refused[name] = clash
            continue
        teams.append(team)
    # The tree (teamtree.py): a team it cannot place is left out, the others stay.
    # A team under a refused parent is refused too: its department's budget and cap would
    # not hold it, and it would take a top-level share it was never given.
    while problems := tree_problems(teams, left_out=refused):
        refused.update(problems)
        teams = [t for t in teams if t.name not in problems]
    usable = {t.name for t in teams}
    return ResolvedTeams(tuple(teams), {ns: t for ns, t in owner.items() if t in usable}, refused)


def teams_from_manifests(docs: Iterable[Mapping[str, Any]]) -> tuple[Team, ...]:
    """Several GPUTeams (a file, in its order); refuses a repeated team name or a namespace
    claimed twice, naming the team the daemon would leave out (the newer claim)."""
    teams: list[Team] = []
    kept: list[Mapping[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        team = team_from_manifest(doc)
        if any(t.name == team.name for t in teams):
            raise InvalidInput(f"GPUTeam {team.name!r}", "metadata.name", "defined twice", "keep one")
        teams.append(team)
        kept.append(doc)
    order = sorted(range(len(kept)), key=lambda i: claim_order(kept[i]))
    owner = _owners([kept[i] for i in order])
    for i in order:
        clash = _claim_clash(teams[i], owner)
        if clash is not None:
            raise clash
    problems = tree_problems(teams)
    if problems:
        raise next(iter(problems.values()))
    return tuple(teams)


def load_teams(text: str) -> tuple[Team, ...]:
    """Teams from a multi-document YAML file of GPUTeam objects."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise InvalidInput("GPUTeam", "(yaml)", f"cannot be parsed: {exc}", "fix the YAML syntax") from exc
    return teams_from_manifests(docs)


def team_of_namespace(teams: Iterable[Team], namespace: str) -> str | None:
    """The team that lists `namespace`; a pod's own labels never decide this."""
    for team in teams:
        if namespace in team.namespaces:
            return team.name
    return None
