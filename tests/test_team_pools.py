"""Team node pools (GPUTeam spec.nodePool): a team's pods stay in its pool whatever their own
spec says, and a dedicated pool is refused to every other team's pods, even ones that
tolerate its taint and select its labels."""

from __future__ import annotations

from dataclasses import replace

from scheduler.core import Gang, Pod, Team, decide, team_from_manifest
from scheduler.core.constraints import PodConstraints, Taint, Toleration
from scheduler.core.incremental import Core
from tests.builders import NOW, gang, names, pool_nodes, refused, snapshot

SECURE = Taint("dedicated", "secure", "NoSchedule")
SECURE_OK = Toleration("dedicated", "Equal", "secure", "NoSchedule")


def _nodes():
    return pool_nodes(1)


SECURE_TEAM = Team(
    "secure",
    1,
    namespaces=("secure",),
    node_selector=(("pool", "secure"),),
    tolerations=(SECURE_OK,),
    dedicated=True,
)
OTHER = Team("other", 1, namespaces=("other",))


def test_a_teams_pods_stay_in_its_pool_and_get_its_tolerations():
    gangs = [gang(f"secure/p{i}", "secure", gpus=8, submit=i) for i in range(3)]
    d = decide(snapshot(_nodes(), (SECURE_TEAM, OTHER), gangs))
    assert sorted(b.node for b in d.binds) == ["s0", "s1"]  # never g0, though it is free
    # Its own spec cannot take it out: selecting the general pool finds no node.
    escape = Gang(
        "secure/x",
        "secure",
        (Pod("secure/x-0", gpus=1),),
        constraints=(PodConstraints(node_selector=(("pool", "general"),)),),
    )
    d = decide(snapshot(_nodes(), (SECURE_TEAM, OTHER), [escape]))
    assert d.binds == () and d.pending_reason("secure/x").code == "Unschedulable"


def test_a_dedicated_pool_is_refused_to_other_teams_whatever_they_tolerate():
    sneaky = PodConstraints(node_selector=(("pool", "secure"),), tolerations=(SECURE_OK,))
    g = Gang("other/x", "other", (Pod("other/x-0", gpus=1),), constraints=(sneaky,))
    d = decide(snapshot(_nodes(), (SECURE_TEAM, OTHER), [g]))
    assert d.binds == ()
    reason = d.pending_reason("other/x")
    assert (
        reason.code == "Unschedulable"
        and "2 node(s) are dedicated to another team's node pool" in reason.reason
    )
    # A plain pod of the other team goes to the general node only.
    plain = [gang(f"other/p{i}", "other", gpus=8, submit=i) for i in range(2)]
    assert [b.node for b in decide(snapshot(_nodes(), (SECURE_TEAM, OTHER), plain)).binds] == ["g0"]
    # Without dedication, the tolerating pod may use the pool.
    open_pool = replace(SECURE_TEAM, dedicated=False)
    assert decide(snapshot(_nodes(), (open_pool, OTHER), [g])).binds


def test_the_core_applies_pools_to_what_it_is_given_and_decides_as_a_fresh_decide():
    core = Core(_nodes(), (SECURE_TEAM, OTHER))
    core.put(gang("secure/a", "secure", gpus=8))
    core.put(gang("other/b", "other", gpus=8, submit=1))
    first = core.decide(NOW)
    assert {b.gang: b.node for b in first.binds} == {"secure/a": "s0", "other/b": "g0"}
    fresh = decide(core.snapshot(NOW))  # the snapshot's gangs carry the pool: applied once
    assert fresh.binds == first.binds


def _manifest(**pool):
    return {
        "apiVersion": "gpufair.io/v1alpha1",
        "kind": "GPUTeam",
        "metadata": {"name": "secure"},
        "spec": {"namespaces": ["secure"], "nodePool": pool},
    }


def test_a_node_pool_manifest_is_read_and_bad_ones_refused_by_name():
    team = team_from_manifest(
        _manifest(
            nodeSelector={"pool": "secure"},
            tolerations=[
                {"key": "dedicated", "operator": "Equal", "value": "secure", "effect": "NoSchedule"}
            ],
            dedicated=True,
        )
    )
    assert team.node_selector == (("pool", "secure"),) and team.tolerations == (SECURE_OK,) and team.dedicated
    names(
        refused(team_from_manifest, _manifest(dedicated=True)),
        "GPUTeam 'secure'",
        "spec.nodePool.dedicated",
        "nodeSelector",
    )
    names(
        refused(team_from_manifest, _manifest(nodeSelector=["pool"])),
        "GPUTeam 'secure'",
        "spec.nodePool.nodeSelector",
    )
    names(
        refused(
            team_from_manifest, _manifest(tolerations=[{"key": "a", "operator": "Exists", "value": "x"}])
        ),
        "GPUTeam 'secure'",
        "spec.nodePool.tolerations[0].operator",
    )
    names(refused(team_from_manifest, _manifest(pool="x")), "GPUTeam 'secure'", "spec.nodePool.pool")
