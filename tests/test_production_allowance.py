"""Who may run production, and how much, is the platform's choice (GPUTeam spec.production):
a team without the grant waits with a reason and evicts nobody; a granted team's production
stays within its maxGPUs; a GPUTeam manifest that says nothing grants nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.core import InvalidInput, Team, decide, team_from_manifest
from tests.builders import gang, names, nodes, refused, running, snapshot

PROD = 100_000


def _full_of_training(prod_team: Team):
    other = Team("b", 1, namespaces=("b",))
    gangs = [running(gang(f"b/t{i}", "b", gpus=8), f"n{i:02d}") for i in range(2)]
    gangs.append(gang("a/infer", "a", gpus=8, priority=PROD))
    return snapshot(nodes(2), (prod_team, other), gangs)


def test_a_team_without_the_grant_waits_and_evicts_nobody():
    d = decide(_full_of_training(Team("a", 1, namespaces=("a",), production_allowed=False)))
    assert d.evictions == () and d.binds == ()
    reason = d.pending_reason("a/infer")
    assert reason.code == "ProductionNotAllowed"
    assert "spec.production.allowed" in reason.reason and "gpufair-training" in reason.reason
    # Granted, the same gang preempts training as production does.
    granted = decide(_full_of_training(Team("a", 1, namespaces=("a",))))
    assert {e.gang for e in granted.evictions} == {"b/t0"} or {e.gang for e in granted.evictions} == {"b/t1"}


def test_a_granted_teams_production_stays_within_its_cap():
    team = Team("a", 1, namespaces=("a",), production_max_gpus=8)
    gangs = [gang(f"a/infer{i}", "a", gpus=8, priority=PROD, submit=i) for i in range(2)]
    d = decide(snapshot(nodes(2), (team,), gangs))
    assert [b.gang for b in d.binds] == ["a/infer0"]
    assert d.pending_reason("a/infer1").code == "OverProductionMaxGPUs"
    assert "maxGPUs is 8" in d.pending_reason("a/infer1").reason
    # What it already runs counts: with one running, none more binds.
    running_one = [running(gang("a/old", "a", gpus=8, priority=PROD), "n00"), gangs[1]]
    d = decide(snapshot(nodes(2), (team,), running_one))
    assert d.binds == () and d.pending_reason("a/infer1").code == "OverProductionMaxGPUs"
    # Over its cap it does not preempt either.
    full = [running(gang(f"b/t{i}", "b", gpus=8), f"n{i:02d}") for i in range(2)]
    capped = replace(team, production_max_gpus=0)
    d = decide(snapshot(nodes(2), (capped, Team("b", 1, namespaces=("b",))), [*full, gangs[0]]))
    assert d.evictions == () and d.pending_reason("a/infer0").code == "OverProductionMaxGPUs"


def _manifest(**spec):
    return {
        "apiVersion": "gpufair.io/v1alpha1",
        "kind": "GPUTeam",
        "metadata": {"name": "serving"},
        "spec": {"namespaces": ["serving"], **spec},
    }


def test_a_manifest_grants_production_only_when_it_says_so():
    silent = team_from_manifest(_manifest())
    assert not silent.production_allowed and silent.production_max_gpus is None
    granted = team_from_manifest(_manifest(production={"allowed": True, "maxGPUs": 16}))
    assert granted.production_allowed and granted.production_max_gpus == 16
    assert not team_from_manifest(_manifest(production={})).production_allowed


@pytest.mark.parametrize(
    ("production", "field", "words"),
    [
        ({"allowed": "yes"}, "spec.production.allowed", ("true or false",)),
        ({"allowed": True, "maxGPUs": -1}, "spec.production.maxGPUs", ("0 or more",)),
        ({"allowed": True, "max": 4}, "spec.production.max", ("allowed and maxGPUs",)),
        ("true", "spec.production", ("mapping",)),
    ],
)
def test_a_bad_production_grant_is_refused_by_name(production, field, words):
    err = refused(team_from_manifest, _manifest(production=production))
    names(err, "GPUTeam 'serving'", field, *words)
    assert isinstance(err, InvalidInput)
