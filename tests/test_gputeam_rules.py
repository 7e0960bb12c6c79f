"""GPUTeam rules a cluster admin relies on: which team keeps a namespace two teams list,
the bounds of a team's numbers (the same in the core and in the CRD), and the budget
anchor's format."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.core import decide
from scheduler.core.config import API_VERSION, PolicyConfig
from scheduler.core.manifests import load_teams, resolve_teams, team_from_manifest, teams_from_manifests
from scheduler.core.model import MAX_GPU_HOURS, MAX_TEAM_GPUS, MAX_WEIGHT, MIN_WEIGHT, Budget, Team
from scheduler.core.policies import get_policy
from scheduler.daemon.translate import SnapshotBuilder
from tests.builders import names, refused
from tests.test_daemon_translate import node, pod

ROOT = Path(__file__).resolve().parent.parent
CRD_COPIES = (
    ROOT / "deploy" / "crds" / "gputeam.yaml",
    ROOT / "deploy" / "helm" / "gpufair" / "crds" / "gputeam.yaml",
)


def _doc(name: str, *namespaces: str, created: str | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if created:
        meta["creationTimestamp"] = created
    return {
        "apiVersion": API_VERSION,
        "kind": "GPUTeam",
        "metadata": meta,
        "spec": {"namespaces": list(namespaces), **spec},
    }


# ---------------------------------------------------------------- namespace claims


def test_an_older_team_keeps_its_namespace_against_a_newer_one_that_sorts_first():
    beta = _doc("beta", "team-b", created="2026-01-10T08:00:00Z")
    steal = _doc("aaa-steal", "team-b", "other", created="2026-03-01T12:00:00Z")
    got = resolve_teams([steal, beta])
    assert [t.name for t in got.teams] == ["beta"]
    assert dict(got.owner) == {"team-b": "beta"}
    err = got.refused["aaa-steal"]
    names(err, "GPUTeam 'aaa-steal'", "spec.namespaces", "'team-b'", "GPUTeam 'beta'", "older claim")
    assert "remove 'team-b'" in err.fix


def test_the_same_creation_second_falls_back_to_the_name():
    at = "2026-01-10T08:00:00Z"
    got = resolve_teams([_doc("zeta", "shared", created=at), _doc("alpha", "shared", created=at)])
    assert [t.name for t in got.teams] == ["alpha"] and set(got.refused) == {"zeta"}


def test_a_broken_older_team_still_holds_its_claim():
    # Fixing the older team later must not move the namespace's pods back and forth.
    old = _doc("old", "ml", created="2026-01-01T00:00:00Z", weight=-1)
    new = _doc("new", "ml", created="2026-02-01T00:00:00Z")
    got = resolve_teams([old, new])
    assert got.teams == () and dict(got.owner) == {}
    assert "spec.weight" in str(got.refused["old"]) and "GPUTeam 'old'" in str(got.refused["new"])


def test_a_file_names_the_newer_claim_whatever_the_file_order():
    docs = [
        _doc("aaa", "ml", created="2026-02-01T00:00:00Z"),
        _doc("zzz", "ml", created="2026-01-01T00:00:00Z"),
    ]
    err = refused(teams_from_manifests, docs)
    names(err, "GPUTeam 'aaa'", "spec.namespaces", "'ml'", "GPUTeam 'zzz'")


def test_a_newer_team_cannot_take_the_pods_of_an_existing_one():
    beta = _doc("beta", "team-b", created="2026-01-10T08:00:00Z")
    steal = _doc("aaa-steal", "team-b", created="2026-03-01T12:00:00Z")
    b = SnapshotBuilder([beta, steal])
    tr = b.build(
        0.0, [node("n1")], [pod("running", ns="team-b", node_name="n1"), pod("waiting", ns="team-b")]
    )
    assert [t.name for t in tr.snapshot.teams] == ["beta"]
    assert {g.id: g.team for g in tr.snapshot.gangs} == {"team-b/running": "beta", "team-b/waiting": "beta"}
    [problem] = [p for p in tr.problems if p.kind == "GPUTeam"]
    assert (
        problem.name == "aaa-steal" and "'team-b'" in problem.message and "GPUTeam 'beta'" in problem.message
    )
    d = decide(tr.snapshot, PolicyConfig(), get_policy("gpufair"))
    assert [x.pod for x in d.binds] == ["team-b/waiting"] and set(d.teams) == {"beta"}


# ---------------------------------------------------------------- bounds


@pytest.mark.parametrize("weight", [1e-300, MIN_WEIGHT / 2, MAX_WEIGHT * 2, 1e300])
def test_a_weight_outside_the_bounds_is_refused(weight: float):
    err = refused(Team, "vision", weight=weight)
    names(err, "GPUTeam 'vision'", "spec.weight", repr(weight), "0.001", "1000000")
    err = refused(team_from_manifest, _doc("vision", weight=weight))
    names(err, "GPUTeam 'vision'", "spec.weight", "0.001")


def test_the_bounds_themselves_are_allowed():
    assert Team("a", weight=MIN_WEIGHT).weight == MIN_WEIGHT
    assert (
        Team("a", weight=MAX_WEIGHT, guaranteed_gpus=MAX_TEAM_GPUS, max_gpus=MAX_TEAM_GPUS).weight
        == MAX_WEIGHT
    )
    assert Team("a", budget=Budget(MAX_GPU_HOURS)).budget is not None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"guaranteed_gpus": MAX_TEAM_GPUS * 10}, "spec.guaranteedGPUs"),
        ({"guaranteed_gpus": math.inf}, "spec.guaranteedGPUs"),
        ({"max_gpus": MAX_TEAM_GPUS * 10}, "spec.maxGPUs"),
        ({"max_gpus": math.nan}, "spec.maxGPUs"),
        ({"budget": Budget(MAX_GPU_HOURS * 10)}, "spec.budget.gpuHours"),
    ],
)
def test_gpus_and_gpu_hours_are_bounded(kwargs: dict, field: str):
    err = refused(Team, "vision", **kwargs)
    names(err, "GPUTeam 'vision'", field)


@pytest.mark.parametrize("path", CRD_COPIES, ids=["deploy", "chart"])
def test_the_crd_declares_the_cores_bounds(path: Path):
    schema = yaml.safe_load(path.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]["properties"]
    assert (spec["weight"]["minimum"], spec["weight"]["maximum"]) == (MIN_WEIGHT, MAX_WEIGHT)
    assert "exclusiveMinimum" not in spec["weight"]
    for key in ("guaranteedGPUs", "maxGPUs"):
        assert (spec[key]["minimum"], spec[key]["maximum"]) == (0, MAX_TEAM_GPUS)
    hours = spec["budget"]["properties"]["gpuHours"]
    assert (hours["minimum"], hours["maximum"]) == (0, MAX_GPU_HOURS)
    anchor = spec["budget"]["properties"]["anchor"]
    assert (anchor["type"], anchor["format"]) == ("string", "date-time")


# ---------------------------------------------------------------- budget anchor

MONDAY = datetime(2026, 1, 5, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "anchor",
    [
        "2026-01-05T00:00:00Z",
        "2026-01-05t00:00:00z",
        "2026-01-05T01:30:00+01:30",
        "2026-01-04T19:00:00.000-05:00",
        "2026-01-05 00:00:00Z",
        MONDAY,
        int(MONDAY),
    ],
)
def test_the_anchor_is_an_rfc3339_instant_or_epoch_seconds(anchor: Any):
    team = team_from_manifest(_doc("t", budget={"gpuHours": 10, "period": "14d", "anchor": anchor}))
    assert team.budget is not None and team.budget.anchor_s == MONDAY


def test_an_unquoted_anchor_in_a_yaml_file_is_read():
    text = (
        f"apiVersion: {API_VERSION}\nkind: GPUTeam\nmetadata: {{name: t}}\n"
        "spec:\n  budget: {gpuHours: 10, period: 14d, anchor: 2026-01-05T00:00:00Z}\n"
    )
    [team] = load_teams(text)
    assert team.budget is not None and team.budget.anchor_s == MONDAY


@pytest.mark.parametrize(
    ("anchor", "words"),
    [
        ("monday", ("'monday'", "RFC 3339")),
        ("2026-01-05T00:00:00", ("RFC 3339",)),  # no offset: which time zone?
        ("2026-01-05", ("RFC 3339",)),
        ("2026-13-05T00:00:00Z", ("not a valid instant",)),
        ("2026-01-05T00:00:00+24:00", ("not a valid instant",)),
        (True, ("RFC 3339",)),
        (math.inf, ("not an instant",)),
        (math.nan, ("not an instant",)),
        ([2026, 1, 5], ("RFC 3339",)),
    ],
)
def test_a_bad_anchor_names_the_team_the_field_and_the_format(anchor: Any, words: tuple[str, ...]):
    err = refused(team_from_manifest, _doc("t", budget={"gpuHours": 10, "period": "14d", "anchor": anchor}))
    names(err, "GPUTeam 't'", "spec.budget.anchor", *words)
    assert "2026-01-05T00:00:00Z" in err.fix


def test_a_yaml_date_or_a_local_time_is_refused_with_the_fix():
    base = f"apiVersion: {API_VERSION}\nkind: GPUTeam\nmetadata: {{name: t}}\n"
    base += "spec:\n  budget: {gpuHours: 10, anchor: "
    err = refused(load_teams, base + "2026-01-05}\n")
    names(err, "GPUTeam 't'", "spec.budget.anchor", "date without a time", "2026-01-05T00:00:00Z")
    err = refused(load_teams, base + "2026-01-05 10:00:00}\n")
    names(err, "GPUTeam 't'", "spec.budget.anchor", "no UTC offset")
