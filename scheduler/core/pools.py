"""Team node pools: a GPUTeam's spec.nodePool confines its pods to the pool's nodes (its
nodeSelector, with the tolerations the pool's taints need), and a dedicated pool is for the
team's pods alone. The platform sets these on the GPUTeam; a pod cannot leave its team's
pool or enter another team's dedicated one by its own spec. Applied by the Core to every
gang it is given, so the filters see the pool as part of the gang's constraints."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from scheduler.core.constraints import PodConstraints
from scheduler.core.model import Gang, Team

Pool = tuple[tuple[str, str], ...]  # a node selector


def reserved_pools(teams: Iterable[Team]) -> dict[str, tuple[Pool, ...]]:
    """Per team: the dedicated pools of the other teams (the nodes it may not use)."""
    dedicated = [(t.name, t.node_selector) for t in teams if t.dedicated and t.node_selector]
    names = {t.name for t in teams}
    return {name: tuple(sel for owner, sel in dedicated if owner != name) for name in names}


def with_team_pool(gang: Gang, team: Team | None, reserved: tuple[Pool, ...]) -> Gang:
    """`gang` with its team's pool merged into each pod's constraints (idempotent: applying
    it again changes nothing). The gang itself when the team has no pool and none is
    reserved by others (the usual case)."""
    if team is None or not (team.node_selector or team.tolerations or reserved):
        return gang
    out = set()
    for c in gang.constraints or (PodConstraints(),):
        out.add(
            replace(
                c,
                node_selector=tuple(sorted(set(c.node_selector) | set(team.node_selector))),
                tolerations=tuple(sorted(set(c.tolerations) | set(team.tolerations))),
                excluded=tuple(sorted(set(c.excluded) | set(reserved))),
            )
        )
    constraints = tuple(sorted(out, key=repr))  # None and terms (required) do not compare
    return gang if constraints == gang.constraints else replace(gang, constraints=constraints)
