"""GPUTeam manifests into Team values, and the errors a cluster admin reads."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from scheduler.core.config import API_VERSION
from scheduler.core.manifests import (
    load_teams,
    team_from_manifest,
    team_of_namespace,
    teams_from_manifests,
)
from scheduler.core.model import Budget, OnExhausted, Team
from tests.builders import names, refused

TEAMS_YAML = """\
# Teams of the shared training cluster.
apiVersion: gpufair.io/v1alpha1
kind: GPUTeam
metadata:
  name: vision
  labels:
    org: research
spec:
  weight: 3
  guaranteedGPUs: 16
  maxGPUs: 64
  budget:
    gpuHours: 5000
    period: month
    onExhausted: scavenge
  namespaces:
    - vision-train
    - vision-eval
  minRuntime: 15m
---
apiVersion: gpufair.io/v1alpha1
kind: GPUTeam
metadata:
  name: nlp
spec:
  weight: 1.5
  guaranteedGPUs: 8
  budget:
    gpuHours: 1200.5
    period: week
    onExhausted: block
  namespaces: [nlp]
---
apiVersion: gpufair.io/v1alpha1
kind: GPUTeam
metadata:
  name: research
spec:
  budget:
    gpuHours: 300
    period: 14d
    anchor: 1704067200
  namespaces: [research, sandbox]
  minRuntime: 1h30m
---
apiVersion: gpufair.io/v1alpha1
kind: GPUTeam
metadata:
  name: inference
spec:
  weight: 2
  maxGPUs: 0
  namespaces: [serving]
---
"""


def _doc(name: str = "vision", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "GPUTeam",
        "metadata": {"name": name},
        "spec": spec,
    }


# ---------------------------------------------------------------- a realistic file


def test_load_teams_reads_a_multi_document_file() -> None:
    teams = load_teams(TEAMS_YAML)
    # The trailing empty document is skipped; order follows the file.
    assert [t.name for t in teams] == ["vision", "nlp", "research", "inference"]
    vision, nlp, research, inference = teams

    assert vision == Team(
        name="vision",
        weight=3.0,
        guaranteed_gpus=16.0,
        max_gpus=64.0,
        budget=Budget(5000.0, "month", OnExhausted.SCAVENGE, None, 0.0),
        namespaces=("vision-train", "vision-eval"),
        min_runtime_s=900.0,
        production_allowed=False,  # a manifest that says nothing grants no production
    )
    assert nlp.weight == 1.5
    assert nlp.guaranteed_gpus == 8.0
    assert nlp.max_gpus is None
    assert nlp.budget == Budget(1200.5, "week", OnExhausted.BLOCK)
    assert nlp.budget.on_exhausted is OnExhausted.BLOCK
    assert nlp.namespaces == ("nlp",)
    assert nlp.min_runtime_s == 0.0

    assert research.weight == 1.0
    assert research.guaranteed_gpus == 0.0
    assert research.budget is not None
    assert research.budget.period == "duration"
    assert research.budget.period_seconds == 14 * 86_400
    assert research.budget.anchor_s == 1_704_067_200.0
    assert research.budget.gpu_hours == 300.0
    assert research.budget.on_exhausted is OnExhausted.SCAVENGE
    assert research.min_runtime_s == 5_400.0

    assert inference.max_gpus == 0.0
    assert inference.budget is None


def test_numbers_become_floats() -> None:
    vision = load_teams(TEAMS_YAML)[0]
    for value in (vision.weight, vision.guaranteed_gpus, vision.max_gpus):
        assert type(value) is float


def test_defaults_of_a_bare_team() -> None:
    team = team_from_manifest({"apiVersion": API_VERSION, "kind": "GPUTeam", "metadata": {"name": "solo"}})
    assert team == Team(name="solo", production_allowed=False)
    assert team.weight == 1.0
    assert team.guaranteed_gpus == 0.0
    assert team.max_gpus is None
    assert team.budget is None
    assert team.namespaces == ()
    assert team.min_runtime_s == 0.0


def test_budget_defaults_month_and_scavenge() -> None:
    team = team_from_manifest(_doc(budget={"gpuHours": 10}))
    assert team.budget == Budget(10.0, "month", OnExhausted.SCAVENGE, None, 0.0)


def test_null_budget_means_no_budget() -> None:
    assert team_from_manifest(_doc(budget=None)).budget is None


def test_zero_hour_budget_is_allowed() -> None:
    team = team_from_manifest(_doc(budget={"gpuHours": 0, "period": "week"}))
    assert team.budget is not None
    assert team.budget.gpu_hours == 0.0


def test_crd_object_from_the_api_server() -> None:
    # What the daemon reads back: server-set metadata and a status block.
    doc = _doc(
        "speech",
        weight=2,
        namespaces=["speech"],
        budget={"gpuHours": 100, "period": "7d"},
    )
    doc["metadata"].update(
        {"uid": "5b1c9f", "resourceVersion": "4711", "generation": 3, "labels": {"a": "b"}}
    )
    doc["status"] = {"allocatedGPUs": 12, "fairShareGPUs": 10.5, "conditions": []}
    team = team_from_manifest(doc)
    assert team.name == "speech"
    assert team.weight == 2.0
    assert team.budget == Budget(100.0, "duration", OnExhausted.SCAVENGE, 604_800.0, 0.0)


def test_period_given_as_bare_seconds() -> None:
    team = team_from_manifest(_doc(budget={"gpuHours": 1, "period": 86_400}))
    assert team.budget is not None
    assert team.budget.period == "duration"
    assert team.budget.period_seconds == 86_400.0


def test_manifest_is_not_modified() -> None:
    doc = _doc(weight=2, namespaces=["a"], budget={"gpuHours": 5})
    before = copy.deepcopy(doc)
    team_from_manifest(doc)
    assert doc == before


# ---------------------------------------------------------------- team_of_namespace


def test_team_of_namespace() -> None:
    teams = load_teams(TEAMS_YAML)
    assert team_of_namespace(teams, "vision-train") == "vision"
    assert team_of_namespace(teams, "vision-eval") == "vision"
    assert team_of_namespace(teams, "nlp") == "nlp"
    assert team_of_namespace(teams, "sandbox") == "research"
    assert team_of_namespace(teams, "serving") == "inference"
    assert team_of_namespace(teams, "kube-system") is None
    # Namespace names are matched exactly, never by prefix or team name.
    assert team_of_namespace(teams, "vision") is None
    assert team_of_namespace(teams, "VISION-TRAIN") is None
    assert team_of_namespace((), "nlp") is None


# ---------------------------------------------------------------- several teams


def test_teams_from_manifests_skips_empty_documents() -> None:
    teams = teams_from_manifests([None, _doc("a", namespaces=["a"]), None, _doc("b")])
    assert [t.name for t in teams] == ["a", "b"]
    assert isinstance(teams, tuple)


def test_team_defined_twice() -> None:
    err = refused(teams_from_manifests, [_doc("vision"), _doc("nlp"), _doc("vision")])
    names(err, "GPUTeam 'vision'", "metadata.name", "defined twice")


def test_namespace_claimed_by_two_teams() -> None:
    docs = [
        _doc("vision", namespaces=["vision", "shared"]),
        _doc("nlp", namespaces=["nlp", "shared"]),
    ]
    err = refused(teams_from_manifests, docs)
    # Neither has a creationTimestamp (a file): the name breaks the tie, as in the cluster.
    names(err, "GPUTeam 'vision'", "spec.namespaces", "'shared'", "GPUTeam 'nlp'", "one team only")


def test_namespace_claimed_twice_in_a_yaml_file() -> None:
    text = TEAMS_YAML + (
        f"apiVersion: {API_VERSION}\nkind: GPUTeam\nmetadata: {{name: thief}}\nspec:\n  namespaces: [nlp]\n"
    )
    err = refused(load_teams, text)
    names(err, "GPUTeam 'thief'", "spec.namespaces", "'nlp'", "GPUTeam 'nlp'")


def test_load_teams_of_an_empty_file() -> None:
    assert load_teams("") == ()
    assert load_teams("---\n---\n") == ()


def test_load_teams_yaml_syntax_error() -> None:
    err = refused(load_teams, "apiVersion: [gpufair.io/v1alpha1\nkind: GPUTeam\n")
    names(err, "GPUTeam", "(yaml)", "cannot be parsed", "YAML")


def test_one_bad_team_in_a_file_is_named() -> None:
    text = TEAMS_YAML.replace("weight: 1.5", "weight: -1.5")
    err = refused(load_teams, text)
    names(err, "GPUTeam 'nlp'", "spec.weight", "-1.5", "above 0")


# ---------------------------------------------------------------- refused documents


@pytest.mark.parametrize("doc", [["a", "b"], "GPUTeam", 42])
def test_document_must_be_a_mapping(doc: Any) -> None:
    err = refused(team_from_manifest, doc)
    names(err, "GPUTeam", "(document)", "mapping")


def test_list_document_in_a_file() -> None:
    err = refused(load_teams, "- a\n- b\n")
    names(err, "GPUTeam", "(document)")


def test_wrong_api_version() -> None:
    doc = _doc("vision")
    doc["apiVersion"] = "gpufair.io/v1beta1"
    err = refused(team_from_manifest, doc)
    names(err, "GPUTeam 'vision'", "apiVersion", "'gpufair.io/v1beta1'", API_VERSION)


def test_missing_api_version() -> None:
    doc = _doc("vision")
    del doc["apiVersion"]
    err = refused(team_from_manifest, doc)
    names(err, "GPUTeam 'vision'", "apiVersion", API_VERSION)


def test_wrong_kind() -> None:
    doc = _doc("vision")
    doc["kind"] = "PolicyConfig"
    err = refused(team_from_manifest, doc)
    names(err, "GPUTeam 'vision'", "kind", "'PolicyConfig'", "kind: GPUTeam")


@pytest.mark.parametrize("metadata", [None, {}, {"name": ""}, {"namespace": "default"}])
def test_missing_name(metadata: Any) -> None:
    doc = _doc()
    doc["metadata"] = metadata
    err = refused(team_from_manifest, doc)
    names(err, "GPUTeam", "metadata.name", "name")


def test_name_that_is_not_a_string() -> None:
    doc = _doc()
    doc["metadata"] = {"name": 42}
    err = refused(team_from_manifest, doc)
    assert err.field == "metadata.name"
    assert "42" in err.obj


@pytest.mark.parametrize("metadata", [["vision"], "vision"])
def test_metadata_that_is_not_a_mapping(metadata: Any) -> None:
    # A malformed object must come back as InvalidInput (which shells catch per
    # object), not as an AttributeError that stops the whole sync loop.
    doc = _doc()
    doc["metadata"] = metadata
    err = refused(team_from_manifest, doc)
    assert err.field.startswith("metadata")
    assert err.fix


def test_spec_must_be_a_mapping() -> None:
    doc = _doc()
    doc["spec"] = ["weight", 3]
    err = refused(team_from_manifest, doc)
    names(err, "GPUTeam 'vision'", "spec", "not a mapping")


def test_unknown_spec_field_names_the_field_and_the_known_ones() -> None:
    err = refused(team_from_manifest, _doc(maxGpus=8))
    names(err, "GPUTeam 'vision'", "spec.maxGpus", "unknown field", "maxGPUs", "guaranteedGPUs")


def test_pods_cannot_choose_a_team_by_labels() -> None:
    # Only spec.namespaces binds pods to a team; a selector field is refused, not ignored.
    err = refused(team_from_manifest, _doc(podSelector={"matchLabels": {"team": "vision"}}))
    names(err, "GPUTeam 'vision'", "spec.podSelector", "unknown field")


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"weight": -1}, "spec.weight", ("-1", "above 0")),
        ({"weight": 0}, "spec.weight", ("above 0",)),
        ({"weight": "heavy"}, "spec.weight", ("'heavy'", "number")),
        ({"weight": True}, "spec.weight", ("number",)),
        ({"weight": float("inf")}, "spec.weight", ("above 0",)),
        ({"guaranteedGPUs": -4}, "spec.guaranteedGPUs", ("negative", "0 or more")),
        ({"guaranteedGPUs": "16"}, "spec.guaranteedGPUs", ("number",)),
        ({"maxGPUs": -1}, "spec.maxGPUs", ("negative",)),
        ({"maxGPUs": "lots"}, "spec.maxGPUs", ("number",)),
        (
            {"guaranteedGPUs": 16, "maxGPUs": 8},
            "spec.maxGPUs",
            ("8", "16", "guaranteedGPUs", "raise maxGPUs"),
        ),
        ({"namespaces": "vision"}, "spec.namespaces", ("list",)),
        ({"namespaces": ["vision", ""]}, "spec.namespaces", ("list",)),
        ({"namespaces": ["vision", 7]}, "spec.namespaces", ("list",)),
        ({"minRuntime": "soon"}, "spec.minRuntime", ("'soon'", "'15m'")),
        ({"minRuntime": -60}, "spec.minRuntime", ("negative",)),
    ],
)
def test_bad_spec_values(spec: dict[str, Any], field: str, words: tuple[str, ...]) -> None:
    err = refused(team_from_manifest, _doc("vision", **spec))
    names(err, "GPUTeam 'vision'", field, *words)


@pytest.mark.parametrize(
    ("budget", "field", "words"),
    [
        (500, "spec.budget", ("mapping", "gpuHours")),
        ({"period": "week"}, "spec.budget.gpuHours", ("missing",)),
        ({"gpuHours": -5}, "spec.budget.gpuHours", ("negative", "0 or more")),
        ({"gpuHours": "5000"}, "spec.budget.gpuHours", ("number",)),
        ({"gpuHours": 5, "hours": 5}, "spec.budget.hours", ("unknown field", "gpuHours")),
        (
            {"gpuHours": 5, "period": "fortnight"},
            "spec.budget.period",
            ("'fortnight'", "'week'", "'month'", "'30d'"),
        ),
        ({"gpuHours": 5, "period": "Week"}, "spec.budget.period", ("week", "month")),
        ({"gpuHours": 5, "period": "monthly"}, "spec.budget.period", ("week", "month")),
        ({"gpuHours": 5, "period": "0d"}, "spec.budget.period", ("zero",)),
        ({"gpuHours": 5, "period": 0}, "spec.budget.period", ("zero",)),
        ({"gpuHours": 5, "period": -86400}, "spec.budget.period", ("week", "month")),
        (
            {"gpuHours": 5, "onExhausted": "drop"},
            "spec.budget.onExhausted",
            ("'drop'", "'scavenge'", "'block'"),
        ),
        ({"gpuHours": 5, "onExhausted": "Block"}, "spec.budget.onExhausted", ("'block'",)),
        ({"gpuHours": 5, "anchor": "monday"}, "spec.budget.anchor", ("'monday'", "RFC 3339")),
    ],
)
def test_bad_budgets(budget: Any, field: str, words: tuple[str, ...]) -> None:
    err = refused(team_from_manifest, _doc("vision", budget=budget))
    names(err, "GPUTeam 'vision'", field, *words)


@pytest.mark.parametrize("hours", [float("inf"), float("nan")])
def test_non_finite_budget_names_the_team_and_the_field(hours: float) -> None:
    # Same contract as every other field: the error must name the team and the YAML path.
    err = refused(team_from_manifest, _doc("vision", budget={"gpuHours": hours}))
    names(err, "GPUTeam 'vision'", "spec.budget.gpuHours")
