"""The teams of a replay, and which team each trace tenant's jobs are charged to.

A trace names tenants (Philly's virtual clusters, the spot trace's organizations, or
whatever a reader assigns). A replay either takes its teams from a GPUTeam file, as the
daemon would, or makes one team per tenant.

A tenant belongs to the team of the same name if there is one, else to the team whose
`spec.namespaces` lists it (a tenant plays the part of a pod's namespace). The name is
tried first so that a plain file of teams named after the tenants needs no namespaces;
a tenant that matches neither is refused, never quietly dropped from the replay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from scheduler.core.durations import parse_duration
from scheduler.core.errors import InvalidInput
from scheduler.core.manifests import load_teams
from scheduler.core.model import Budget, OnExhausted, Team

_SHOWN = 10  # tenants named in one message; the rest are counted


def teams_for_trace(
    tenants: Iterable[str],
    teams_file: Path | None,
    budget_gpu_hours: float | None,
    budget_period: str = "month",
    on_exhausted: str = "scavenge",
) -> tuple[Team, ...]:
    """The replay's teams.

    With `teams_file` (multi-document GPUTeam YAML): those teams, in file order, with
    their own weights and budgets; every tenant must resolve to one of them (`team_of`).
    A budget given here as well is refused, since it is unclear which should win.
    Without a file: one team per distinct tenant, sorted by name, weight 1, namespace
    the tenant, each with `budget_gpu_hours` per `budget_period` ('week', 'month' or a
    duration such as '30d'; None means no budget).
    """
    names = sorted(set(tenants))
    if teams_file is not None:
        if budget_gpu_hours is not None:
            raise InvalidInput(
                "simulator",
                "--budget",
                "a budget for every team was given together with a GPUTeam file",
                "set budgets in the file's spec.budget, or remove --teams",
            )
        teams = _read_teams(Path(teams_file))
        missing = [t for t in names if _resolve(t, teams) is None]
        if missing:
            shown = ", ".join(repr(t) for t in missing[:_SHOWN])
            more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
            raise InvalidInput(
                f"GPUTeam file {teams_file}",
                "spec.namespaces",
                f"trace tenants {shown}{more} belong to no team (by team name or namespace)",
                "add them to a team's spec.namespaces or remove --teams",
            )
        groups = {t.parent for t in teams if t.parent is not None}
        grouped = sorted({g for t in names if (g := _resolve(t, teams)) in groups})
        if grouped:
            raise InvalidInput(
                f"GPUTeam file {teams_file}",
                "spec.namespaces",
                f"trace tenants resolve to group(s) {', '.join(map(repr, grouped))}; a group's work is "
                "its children's",
                "give those tenants to a child team (name or spec.namespaces), not to the group",
            )
        return teams
    budget = None if budget_gpu_hours is None else _budget(budget_gpu_hours, budget_period, on_exhausted)
    for tenant in names:
        if not isinstance(tenant, str) or not tenant:
            raise InvalidInput(
                "trace", "team", f"tenant {tenant!r} is not a name", "give every job a tenant name"
            )
    return tuple(Team(t, weight=1.0, budget=budget, namespaces=(t,)) for t in names)


def team_of(job_team: str, teams: Iterable[Team]) -> str:
    """The team a trace tenant's jobs belong to: a team named like the tenant, else the
    team that lists the tenant among its namespaces."""
    team = _resolve(job_team, tuple(teams))
    if team is None:
        raise InvalidInput(
            f"tenant {job_team!r}",
            "team",
            "no team has this name or lists it in spec.namespaces",
            "add it to a team's spec.namespaces or remove --teams",
        )
    return team


def _resolve(tenant: str, teams: tuple[Team, ...]) -> str | None:
    for team in teams:
        if team.name == tenant:
            return team.name
    for team in teams:
        if tenant in team.namespaces:
            return team.name
    return None


def _read_teams(path: Path) -> tuple[Team, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(
            f"GPUTeam file {path}", "--teams", f"cannot be read: {exc.strerror or exc}", "check the path"
        ) from exc
    teams = load_teams(text)
    if not teams:
        raise InvalidInput(
            f"GPUTeam file {path}",
            "--teams",
            "holds no GPUTeam",
            "define at least one team, or remove --teams",
        )
    return teams


def _budget(gpu_hours: float, period: str, on_exhausted: str) -> Budget:
    """The same budget for every team, read like a GPUTeam's spec.budget."""
    if (
        isinstance(gpu_hours, bool)
        or not isinstance(gpu_hours, int | float)
        or not math.isfinite(gpu_hours)
        or gpu_hours < 0
    ):
        raise InvalidInput(
            "simulator", "--budget", f"{gpu_hours!r} is not a usable number of GPU-hours", "give 0 or more"
        )
    try:
        mode = OnExhausted(on_exhausted)
    except ValueError:
        raise InvalidInput(
            "simulator", "--on-exhausted", f"unknown value {on_exhausted!r}", "use 'scavenge' or 'block'"
        ) from None
    if period in ("week", "month"):
        budget = Budget(float(gpu_hours), period, mode)
    else:
        seconds = parse_duration(period, "simulator", "--budget-period")
        if seconds <= 0:
            raise InvalidInput(
                "simulator",
                "--budget-period",
                "zero length",
                "use 'week', 'month' or a duration such as '30d'",
            )
        budget = Budget(float(gpu_hours), "duration", mode, seconds)
    return budget
