"""Teams of a replay: from a GPUTeam file or one per tenant, and tenant-to-team mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.core.model import Budget, OnExhausted, Team
from simulator.teams import team_of, teams_for_trace
from tests.builders import names, refused

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_TEAMS = ROOT / "deploy" / "examples" / "teams.yaml"

TEAMS_YAML = """\
apiVersion: gpufair.io/v1alpha1
kind: GPUTeam
metadata: {name: vision}
spec:
  weight: 3
  budget: {gpuHours: 500, period: week, onExhausted: block}
  namespaces: [vc-a, vc-b]
---
apiVersion: gpufair.io/v1alpha1
kind: GPUTeam
metadata: {name: nlp}
spec:
  namespaces: [vision]
"""


def _file(tmp_path: Path, text: str = TEAMS_YAML) -> Path:
    path = tmp_path / "teams.yaml"
    path.write_text(text)
    return path


def test_one_team_per_tenant_without_a_budget() -> None:
    teams = teams_for_trace(["vc2", "vc1", "vc2", "vc3"], None, None, "month", "scavenge")
    assert teams == (
        Team("vc1", 1.0, namespaces=("vc1",)),
        Team("vc2", 1.0, namespaces=("vc2",)),
        Team("vc3", 1.0, namespaces=("vc3",)),
    )


def test_one_team_per_tenant_with_the_same_budget() -> None:
    monthly = teams_for_trace(iter(["b", "a"]), None, 1200, "month", "block")
    assert [t.name for t in monthly] == ["a", "b"]
    assert all(t.budget == Budget(1200.0, "month", OnExhausted.BLOCK) for t in monthly)
    weekly = teams_for_trace(["a"], None, 0, "week", "scavenge")
    assert weekly[0].budget == Budget(0.0, "week", OnExhausted.SCAVENGE)
    fixed = teams_for_trace(["a"], None, 100.5, "30d", "scavenge")
    assert fixed[0].budget == Budget(100.5, "duration", OnExhausted.SCAVENGE, 30 * 86400.0)


@pytest.mark.parametrize(
    ("hours", "period", "mode", "field", "word"),
    [
        (-1.0, "month", "scavenge", "--budget", "0 or more"),
        (float("nan"), "month", "scavenge", "--budget", "nan"),
        (10.0, "fortnight", "scavenge", "--budget-period", "'fortnight'"),
        (10.0, "0d", "scavenge", "--budget-period", "zero length"),
        (10.0, "month", "pause", "--on-exhausted", "'scavenge' or 'block'"),
    ],
)
def test_bad_budget_flags(hours: float, period: str, mode: str, field: str, word: str) -> None:
    names(refused(teams_for_trace, ["a"], None, hours, period, mode), "simulator", field, word)


def test_empty_tenant_is_refused() -> None:
    names(refused(teams_for_trace, ["a", ""], None, None, "month", "scavenge"), "trace", "team", "''")


def test_teams_from_a_file_keep_their_own_settings(tmp_path: Path) -> None:
    teams = teams_for_trace(["vc-a", "vc-b", "nlp"], _file(tmp_path), None, "month", "scavenge")
    assert [t.name for t in teams] == ["vision", "nlp"]
    vision = teams[0]
    assert vision.weight == 3.0
    assert vision.budget == Budget(500.0, "week", OnExhausted.BLOCK)
    assert teams[1].budget is None


def test_team_of_tries_names_before_namespaces(tmp_path: Path) -> None:
    teams = teams_for_trace(["vc-a", "vision", "nlp"], _file(tmp_path), None, "month", "scavenge")
    assert team_of("vc-a", teams) == "vision"
    assert team_of("vc-b", teams) == "vision"
    assert team_of("nlp", teams) == "nlp"
    # 'vision' is both a team's name and a namespace of nlp: the name wins.
    assert team_of("vision", teams) == "vision"
    names(refused(team_of, "vc-z", teams), "tenant 'vc-z'", "team", "spec.namespaces")


def test_team_of_teams_made_per_tenant() -> None:
    teams = teams_for_trace(["x", "y"], None, None, "month", "scavenge")
    assert [team_of(t, teams) for t in ("x", "y")] == ["x", "y"]


def test_unknown_tenants_are_named(tmp_path: Path) -> None:
    path = _file(tmp_path)
    err = refused(teams_for_trace, ["vc-a", "vc-q", "vc-p"], path, None, "month", "scavenge")
    names(
        err,
        f"GPUTeam file {path}",
        "spec.namespaces",
        "'vc-p', 'vc-q'",
        "add them to a team's spec.namespaces or remove --teams",
    )
    assert "vc-a" not in err.problem
    many = [f"t{i:02d}" for i in range(25)]
    err = refused(teams_for_trace, many, path, None, "month", "scavenge")
    assert "'t09'" in err.problem and "'t10'" not in err.problem and "and 15 more" in err.problem


def test_budget_with_a_teams_file_is_refused(tmp_path: Path) -> None:
    err = refused(teams_for_trace, ["vc-a"], _file(tmp_path), 100.0, "month", "scavenge")
    names(err, "simulator", "--budget", "spec.budget")


def test_bad_or_missing_or_empty_teams_file(tmp_path: Path) -> None:
    bad = _file(
        tmp_path, "apiVersion: gpufair.io/v1alpha1\nkind: GPUTeam\nmetadata: {name: x}\nspec: {weight: 0}\n"
    )
    names(refused(teams_for_trace, ["x"], bad, None, "month", "scavenge"), "GPUTeam 'x'", "spec.weight")
    missing = tmp_path / "none.yaml"
    names(
        refused(teams_for_trace, ["x"], missing, None, "month", "scavenge"),
        f"GPUTeam file {missing}",
        "--teams",
        "check the path",
    )
    empty = _file(tmp_path, "")
    names(
        refused(teams_for_trace, ["x"], empty, None, "month", "scavenge"), f"GPUTeam file {empty}", "--teams"
    )


def test_shipped_example_teams_map_their_namespaces() -> None:
    teams = teams_for_trace(["serving", "vision-dev", "research"], EXAMPLE_TEAMS, None, "month", "scavenge")
    assert [team_of(t, teams) for t in ("serving", "serving-canary", "vision-dev", "research")] == [
        "inference",
        "inference",
        "vision",
        "research",
    ]
