"""Node preferences (preferred node affinity, PreferNoSchedule taints) weighed against the
fragmentation score: a pod goes where it prefers among the nodes it may use, never
outside them, and the weights of placement.scoreWeights set how much each counts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.core import Gang, Pod, Team, decide
from scheduler.core.config import load_policy
from scheduler.core.constraints import PodConstraints, Requirement, Taint, Term, Toleration
from scheduler.core.errors import InvalidInput
from scheduler.daemon.podspec import pod_constraints
from tests.builders import node, snapshot

TEAM = Team("a", 1, namespaces=("a",))
SOFT = Taint("spot", "yes", "PreferNoSchedule")


def _nodes():
    # "busy" has 2 GPUs left, so fragmentation alone sends a 2-GPU pod there (it fills it).
    return (
        replace(node("busy", 8), labels={"zone": "x"}),
        replace(node("idle", 8), labels={"zone": "y"}),
    )


def _running():
    return Gang("a/r", "a", (Pod("a/r-0", gpus=6, node="busy", start_s=0.0),), evictable=False)


def _pod(name: str, constraints: PodConstraints | None = None) -> Gang:
    return Gang(
        f"a/{name}", "a", (Pod(f"a/{name}-0", gpus=2),), constraints=(constraints,) if constraints else ()
    )


def _where(g: Gang, nodes=None, config=None) -> str:
    d = decide(snapshot(nodes or _nodes(), (TEAM,), [_running(), g]), config)
    (bind,) = d.binds
    return bind.node


def test_fragmentation_alone_packs_onto_the_busy_node():
    assert _where(_pod("p")) == "busy"


def test_preferred_node_affinity_outweighs_packing():
    prefers_y = PodConstraints(preferred=((50, Term((Requirement("zone", "In", ("y",)),))),))
    assert _where(_pod("p", prefers_y)) == "idle"
    # A weight of 0 in the policy switches that score off.
    off = load_policy("placement:\n  scoreWeights: {nodeAffinity: 0}\n")
    assert _where(_pod("p", prefers_y), config=off) == "busy"


def test_an_untolerated_prefer_no_schedule_taint_sends_pods_elsewhere_but_keeps_the_node_usable():
    nodes = (replace(_nodes()[0], taints=(SOFT,)), _nodes()[1])
    assert _where(_pod("p"), nodes) == "idle"
    tolerant = PodConstraints(tolerations=(Toleration("spot", "Exists"),))
    assert _where(_pod("q", tolerant), nodes) == "busy"
    # Only the soft-tainted node has room: it is used, not refused.
    full = Gang("a/f", "a", (Pod("a/f-0", gpus=8, node="idle", start_s=0.0),), evictable=False)
    d = decide(snapshot(nodes, (TEAM,), [_running(), full, _pod("p")]))
    assert [b.node for b in d.binds] == ["busy"]


def test_score_weights_are_checked():
    with pytest.raises(InvalidInput, match=r"placement.scoreWeights.podAffinity.*unknown score"):
        load_policy("placement:\n  scoreWeights: {podAffinity: 1}\n")
    with pytest.raises(InvalidInput, match=r"whole number from 0 to 100"):
        load_policy("placement:\n  scoreWeights: {nodeAffinity: 300}\n")


def test_the_daemon_reads_preferred_node_affinity():
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 7,
                            "preference": {
                                "matchExpressions": [{"key": "zone", "operator": "In", "values": ["y"]}]
                            },
                        }
                    ]
                }
            }
        },
    }
    c = pod_constraints(pod)
    assert c is not None and c.preferred == ((7, Term((Requirement("zone", "In", ("y",)),))),)
    assert not c.limits_nodes and not c.unsupported
