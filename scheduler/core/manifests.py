"""GPUTeam manifests (YAML or the CRD objects the daemon reads) into Team values."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from scheduler.core.config import API_VERSION
from scheduler.core.durations import parse_duration
from scheduler.core.errors import InvalidInput
from scheduler.core.model import Budget, OnExhausted, Team

_SPEC_KEYS = {"weight", "guaranteedGPUs", "maxGPUs", "budget", "namespaces", "minRuntime"}
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
    anchor = body.get("anchor", 0)
    anchor_s = _number(obj, "spec.budget.anchor", anchor)
    return Budget(hours, period, mode, period_seconds, anchor_s)


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
    return Team(
        name=name,
        weight=_number(obj, "spec.weight", spec.get("weight", 1)),
        guaranteed_gpus=_number(obj, "spec.guaranteedGPUs", spec.get("guaranteedGPUs", 0)),
        max_gpus=None if max_gpus is None else _number(obj, "spec.maxGPUs", max_gpus),
        budget=_budget(obj, spec["budget"]) if spec.get("budget") is not None else None,
        namespaces=tuple(namespaces),
        min_runtime_s=parse_duration(spec.get("minRuntime", 0), obj, "spec.minRuntime"),
    )


def teams_from_manifests(docs: Iterable[Mapping[str, Any]]) -> tuple[Team, ...]:
    """Several GPUTeams; refuses a repeated team name or a namespace claimed twice."""
    teams: list[Team] = []
    owner: dict[str, str] = {}
    for doc in docs:
        if doc is None:
            continue
        team = team_from_manifest(doc)
        if any(t.name == team.name for t in teams):
            raise InvalidInput(f"GPUTeam {team.name!r}", "metadata.name", "defined twice", "keep one")
        for ns in team.namespaces:
            if ns in owner:
                raise InvalidInput(
                    f"GPUTeam {team.name!r}",
                    "spec.namespaces",
                    f"namespace {ns!r} already belongs to team {owner[ns]!r}",
                    "list each namespace under one team only",
                )
            owner[ns] = team.name
        teams.append(team)
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
