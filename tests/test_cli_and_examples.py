"""The shipped example files and the `gpufair validate` command."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.core import OnExhausted, PolicyConfig, load_policy, load_teams

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "deploy" / "examples"


def test_example_policy_documents_exactly_the_defaults():
    assert load_policy((EXAMPLES / "policy.yaml").read_text()) == PolicyConfig()


def test_example_teams_parse():
    teams = {t.name: t for t in load_teams((EXAMPLES / "teams.yaml").read_text())}
    assert set(teams) == {"inference", "vision", "research"}
    assert teams["vision"].budget.on_exhausted is OnExhausted.SCAVENGE
    assert teams["research"].budget.period == "week"
    assert teams["vision"].min_runtime_s == 900


def test_validate_accepts_the_examples(capsys):
    assert (
        main(["validate", "--teams", str(EXAMPLES / "teams.yaml"), "--policy", str(EXAMPLES / "policy.yaml")])
        == 0
    )
    out = capsys.readouterr().out
    assert "3 team(s) ok" in out and "20000 GPU-h/month (scavenge)" in out


def test_validate_names_the_bad_field_and_fails(tmp_path, capsys):
    bad = tmp_path / "teams.yaml"
    bad.write_text(
        "apiVersion: gpufair.io/v1alpha1\nkind: GPUTeam\nmetadata: {name: x}\n"
        "spec: {weight: -1, namespaces: [x]}\n"
    )
    assert main(["validate", "--teams", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "GPUTeam 'x'" in err and "spec.weight" in err


def test_validate_needs_a_file():
    with pytest.raises(SystemExit):
        main(["validate"])
