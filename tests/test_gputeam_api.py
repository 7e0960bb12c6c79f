"""GPUTeam rules on a real kube-apiserver with the daemon reading them: the CRD's bounds and
budget anchor, which of two teams keeps a namespace, and a daemon whose after-cycle hook
raises. Uses the session's shared cluster (8 nodes x 8 GPUs); each test removes its teams."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from scheduler.core.budget import period_bounds
from scheduler.daemon.daemon import NoHooks
from scheduler.daemon.kube import KubeError
from tests.daemon_support import (
    InProcessDaemon,
    bound,
    delete_pods,
    install_crds_and_priorities,
    kube_for,
    make_pod,
    make_team,
    wait_for,
)

TEAMS = "/apis/gpufair.io/v1alpha1/gputeams"


@pytest.fixture
def kube(kube_cluster):
    k = kube_for(kube_cluster.kubeconfig)
    install_crds_and_priorities(k)
    return k


@pytest.fixture
def teams(kube, kube_namespace):
    """GPUTeam names the test makes; they and the namespace's pods go afterwards."""
    made: list[str] = []
    yield made
    delete_pods(kube, kube_namespace)
    for name in made:
        try:
            kube.request("DELETE", f"{TEAMS}/{name}")
        except KubeError as exc:
            if exc.status != 404:
                raise


def _valid(kube, name: str) -> dict | None:
    conditions = (kube.request("GET", f"{TEAMS}/{name}").get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Valid"), None)


def test_the_api_server_takes_an_rfc3339_anchor_and_the_daemon_counts_periods_from_it(
    kube_cluster, kube, kube_namespace, teams
):
    name = f"{kube_namespace}-anchor"[:63]
    anchor = "2026-01-05T09:30:00Z"
    budget = {"gpuHours": 100, "period": "14d", "anchor": anchor}
    teams.append(name)
    make_team(kube, name, [kube_namespace], budget=budget)
    make_pod(kube, kube_namespace, "p0", gpus=1)
    with InProcessDaemon(kube_cluster.kubeconfig) as daemon:
        wait_for("bound", lambda: bound(kube, kube_namespace).get("p0"))
        valid = wait_for("team condition", lambda: _valid(kube, name))
        status = wait_for(
            "budget reset in status",
            lambda: (kube.request("GET", f"{TEAMS}/{name}").get("status") or {}).get("budgetResetsAt"),
        )
        assert daemon.last is not None
        [team] = [t for t in daemon.last[0].snapshot.teams if t.name == name]
    assert valid["status"] == "True", valid
    anchor_s = datetime(2026, 1, 5, 9, 30, tzinfo=UTC).timestamp()
    assert team.budget is not None and team.budget.anchor_s == anchor_s
    _start, end = period_bounds(team.budget, time.time())
    assert (end - anchor_s) % (14 * 86400) == 0
    assert datetime.fromisoformat(status.replace("Z", "+00:00")).timestamp() == pytest.approx(end, abs=1)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"weight": 1e-300}, "spec.weight"),
        ({"weight": 2e6}, "spec.weight"),
        ({"maxGPUs": 1e9}, "spec.maxGPUs"),
        ({"guaranteedGPUs": 1e9}, "spec.guaranteedGPUs"),
        ({"budget": {"gpuHours": 1e300}}, "spec.budget.gpuHours"),
        ({"budget": {"gpuHours": 10, "anchor": "monday"}}, "spec.budget.anchor"),
    ],
)
def test_the_api_server_refuses_values_outside_the_crds_bounds(kube, kube_namespace, teams, spec, field):
    name = f"{kube_namespace}-bounds"[:63]
    teams.append(name)
    with pytest.raises(KubeError) as refused:
        make_team(kube, name, [kube_namespace], **spec)
    assert refused.value.status == 422 and field in str(refused.value)


def test_a_newer_team_does_not_take_an_existing_teams_namespace(kube_cluster, kube, kube_namespace, teams):
    ns = kube_namespace
    beta, steal = f"beta-{ns}"[:63], f"aaa-steal-{ns}"[:63]  # the newcomer sorts first by name
    teams.extend([beta, steal])
    make_team(kube, beta, [ns])
    make_pod(kube, ns, "running", gpus=2)
    with InProcessDaemon(kube_cluster.kubeconfig) as daemon:
        wait_for("bound", lambda: bound(kube, ns).get("running"))
        time.sleep(1.1)  # creationTimestamp has whole seconds: the newcomer is a second younger
        make_team(kube, steal, [ns, f"{ns}-other"])
        valid = wait_for(
            "the newcomer's condition",
            lambda: (c := _valid(kube, steal)) and c["status"] == "False" and c,
        )
        make_pod(kube, ns, "later", gpus=1)
        wait_for("the later pod bound", lambda: bound(kube, ns).get("later"))
        status = wait_for(
            "the owner's status shows both pods",
            lambda: (
                (s := kube.request("GET", f"{TEAMS}/{beta}").get("status") or {})
                and s.get("allocatedGPUs") == 3
                and s
            ),
        )
        assert daemon.last is not None
        gangs = {g.id: g.team for g in daemon.last[0].snapshot.gangs if g.id.startswith(f"{ns}/")}
    assert f"'{ns}'" in valid["message"] and f"GPUTeam '{beta}'" in valid["message"]
    assert gangs == {f"{ns}/running": beta, f"{ns}/later": beta}
    assert _valid(kube, beta)["status"] == "True" and status["allocatedGPUs"] == 3


class _RaisingAfterCycle(NoHooks):
    def cycle_done(self, tr, decisions, seconds) -> None:
        raise OverflowError("numerical result out of range")


def test_a_raising_after_cycle_hook_is_counted_and_scheduling_goes_on(
    kube_cluster, kube, kube_namespace, teams
):
    name = f"{kube_namespace}-hooks"[:63]
    teams.append(name)
    make_team(kube, name, [kube_namespace])
    make_pod(kube, kube_namespace, "first", gpus=1)
    with InProcessDaemon(kube_cluster.kubeconfig, hooks=_RaisingAfterCycle()) as daemon:
        wait_for("first bound", lambda: bound(kube, kube_namespace).get("first"))
        make_pod(kube, kube_namespace, "second", gpus=1)
        wait_for("second bound", lambda: bound(kube, kube_namespace).get("second"))
        assert daemon.stats.hook_failures >= 2
        assert daemon.stats.hook_failures <= daemon.stats.cycles


def test_a_three_level_tree_on_the_api_server(kube_cluster, kube, kube_namespace, teams):
    """org -> dept -> team: the team's pod binds, the groups' status shows their subtree
    (allocated, share, path), and a team whose parent does not exist is refused by name."""
    ns = kube_namespace
    org, dept, team, lost = (f"{p}-{ns}"[:63] for p in ("org", "dept", "team", "lost"))
    teams.extend([team, lost, dept, org])
    make_team(kube, org, [])
    make_team(kube, dept, [], parent=org, weight=2)
    make_team(kube, team, [ns], parent=dept)
    make_team(kube, lost, [f"{ns}-lost"], parent=f"nowhere-{ns}"[:63])
    make_pod(kube, ns, "p0", gpus=2)
    with InProcessDaemon(kube_cluster.kubeconfig):
        wait_for("bound", lambda: bound(kube, ns).get("p0"))

        def status(name: str) -> dict:
            return kube.request("GET", f"{TEAMS}/{name}").get("status") or {}

        org_status = wait_for(
            "org's subtotal", lambda: (s := status(org)) and s.get("allocatedGPUs") == 2 and s
        )
        dept_status = wait_for(
            "dept's subtotal", lambda: (s := status(dept)) and s.get("allocatedGPUs") == 2 and s
        )
        team_status = wait_for(
            "team's status", lambda: (s := status(team)) and s.get("allocatedGPUs") == 2 and s
        )
        refused = wait_for(
            "the lost team refused", lambda: (c := _valid(kube, lost)) and c["status"] == "False" and c
        )
    assert org_status["group"] and dept_status["group"] and not team_status["group"]
    assert team_status["path"] == f"{org}/{dept}/{team}" and dept_status["path"] == f"{org}/{dept}"
    assert dept_status["fairShareGPUs"] == team_status["fairShareGPUs"] > 0
    assert f"GPUTeam '{lost}'" in refused["message"] and "nowhere" in refused["message"]
    crd = kube.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gputeams.gpufair.io")
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert {"name": "Parent", "type": "string", "jsonPath": ".spec.parent"}.items() <= columns[0].items()
