"""Node constraints of the pod spec (scheduler/core/constraints.py, filters.py) and their
translation from API objects (scheduler/daemon/podspec.py), with kube-scheduler's
documented edge cases; tests/test_kube_scheduler_differential.py holds the same filters to
the real kube-scheduler."""

from __future__ import annotations

import pytest

from scheduler.core import Gang, Pod, decide
from scheduler.core.constraints import PodConstraints, Requirement, Taint, Term, Toleration
from scheduler.daemon.podspec import node_taints, pod_constraints
from tests.builders import gang, pool_nodes, snapshot, teams

SECURE = Taint("dedicated", "secure", "NoSchedule")


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        (Toleration("dedicated", "Equal", "secure", "NoSchedule"), SECURE, True),
        (Toleration("dedicated", "Equal", "other", "NoSchedule"), SECURE, False),
        (Toleration("dedicated", "Exists", "", ""), SECURE, True),  # any value, any effect
        (Toleration("dedicated", "Exists", "", "NoExecute"), SECURE, False),  # other effect
        (Toleration("", "Exists", "", ""), SECURE, True),  # empty key with Exists: everything
        (Toleration("", "Exists", "", "NoExecute"), SECURE, False),
        (Toleration("dedicated", "", "secure", ""), SECURE, True),  # "" operator reads as Equal
        (Toleration("other", "Exists"), SECURE, False),
    ],
)
def test_toleration_matching(toleration, taint, tolerated):
    assert toleration.tolerates(taint) is tolerated


@pytest.mark.parametrize(
    ("req", "value", "ok"),
    [
        (Requirement("k", "In", ("a", "b")), "a", True),
        (Requirement("k", "In", ("a",)), None, False),
        (Requirement("k", "NotIn", ("a",)), None, True),  # an absent label is not in the list
        (Requirement("k", "NotIn", ("a",)), "a", False),
        (Requirement("k", "Exists"), "", True),
        (Requirement("k", "DoesNotExist"), None, True),
        (Requirement("k", "Gt", ("3",)), "4", True),
        (Requirement("k", "Gt", ("3",)), "3", False),
        (Requirement("k", "Lt", ("3",)), "x", False),  # not a whole number: no match
        (Requirement("k", "Gt", ("3",)), None, False),
    ],
)
def test_requirement_matching(req, value, ok):
    assert req.matches(value) is ok


def test_terms_are_ored_their_expressions_anded_and_an_empty_term_matches_nothing():
    a_in = Requirement("pool", "In", ("a",))
    gpu = Requirement("gpu", "Exists")
    c = PodConstraints(required=(Term((a_in, gpu)), Term((Requirement("pool", "In", ("b",)),))))
    assert c.selects("n1", {"pool": "a", "gpu": "1"})
    assert not c.selects("n1", {"pool": "a"})
    assert c.selects("n1", {"pool": "b"})
    assert not PodConstraints(required=(Term(),)).selects("n1", {"pool": "a"})
    by_name = PodConstraints(required=(Term(fields=(Requirement("metadata.name", "In", ("n2",)),)),))
    assert by_name.selects("n2", {}) and not by_name.selects("n1", {})
    # nodeSelector and affinity must both hold.
    both = PodConstraints(node_selector=(("zone", "x"),), required=(Term((a_in,)),))
    assert not both.selects("n", {"pool": "a"}) and both.selects("n", {"pool": "a", "zone": "x"})


def _pool():
    return pool_nodes(2)


def test_a_pod_never_lands_on_a_pool_it_does_not_tolerate():
    gangs = [gang(f"a/p{i}", "a", gpus=8, submit=i) for i in range(4)]
    d = decide(snapshot(_pool(), teams(("a", 1)), gangs))
    assert sorted(b.node for b in d.binds) == ["g0", "g1"]  # the two secure nodes stay empty
    reason = d.pending_reason("a/p2")
    assert reason is not None and reason.code == "NoRoom"
    # Tolerating the taint and selecting the pool puts it there.
    c = PodConstraints(
        node_selector=(("pool", "secure"),), tolerations=(Toleration("dedicated", "Equal", "secure"),)
    )
    secure = Gang("a/sec", "a", (Pod("a/sec-0", gpus=8),), constraints=(c,))
    d = decide(snapshot(_pool(), teams(("a", 1)), [secure]))
    assert [b.node for b in d.binds] and d.binds[0].node.startswith("s")


def test_a_pod_no_node_admits_says_why_in_kube_scheduler_words():
    c = PodConstraints(node_selector=(("pool", "nowhere"),))
    g = Gang("a/x", "a", (Pod("a/x-0", gpus=1),), constraints=(c,))
    reason = decide(snapshot(_pool(), teams(("a", 1)), [g])).pending_reason("a/x")
    assert reason.code == "Unschedulable"
    assert reason.reason.startswith(
        "0/4 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, "
        "2 node(s) had untolerated taint {dedicated: secure}; team a holds 0 GPUs"
    )


def test_gated_and_unsupported_pods_wait_and_say_so():
    gated = Gang(
        "a/g", "a", (Pod("a/g-0", gpus=1),), constraints=(PodConstraints(gates=("example.com/quota",)),)
    )
    spread = PodConstraints(
        unsupported=("spec.topologySpreadConstraints (whenUnsatisfiable: DoNotSchedule)",)
    )
    other = Gang("a/u", "a", (Pod("a/u-0", gpus=1),), constraints=(spread,))
    d = decide(snapshot(_pool(), teams(("a", 1)), [gated, other]))
    assert d.binds == ()
    assert (
        d.pending_reason("a/g").code == "SchedulingGated"
        and "example.com/quota" in d.pending_reason("a/g").reason
    )
    assert (
        d.pending_reason("a/u").code == "Unsupported"
        and "topologySpreadConstraints" in d.pending_reason("a/u").reason
    )


def _api_pod(**spec):
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{"name": "c"}], **spec}}


def test_the_translation_reads_what_is_honoured_and_names_what_is_not():
    assert pod_constraints(_api_pod()) is None
    c = pod_constraints(
        _api_pod(
            nodeSelector={"pool": "a"},
            tolerations=[
                {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
                {"operator": "Exists"},
            ],
            affinity={
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "rank", "operator": "Gt", "values": ["2"]}]}
                        ]
                    }
                }
            },
            schedulingGates=[{"name": "wait"}],
        )
    )
    assert c.node_selector == (("pool", "a"),) and c.gates == ("wait",)
    assert c.required == (Term((Requirement("rank", "Gt", ("2",)),)),)
    assert Toleration("", "Exists") in c.tolerations and not c.unsupported
    odd = pod_constraints(
        _api_pod(
            containers=[
                {
                    "name": "c",
                    "ports": [{"containerPort": 80, "hostPort": 8080}],
                    "resources": {"requests": {"rdma/ib": "1"}},
                }
            ],
            affinity={
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "h"}]}
            },
            volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}],
            topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": "zone"}],
            resourceClaims=[{"name": "gpu"}],
        )
    )
    # Host ports, pod anti-affinity and spread are honoured (scheduler/daemon/podterms.py).
    assert odd.unsupported == (
        "spec.resourceClaims (dynamic resource allocation)",
        "spec.volumes[].persistentVolumeClaim",
    )
    # Scoring-only parts of the spec limit nothing: not named.
    soft = pod_constraints(_api_pod(topologySpreadConstraints=[{"whenUnsatisfiable": "ScheduleAnyway"}]))
    assert soft is None


def test_node_taints_are_read_with_their_effects():
    raw = {
        "spec": {
            "taints": [
                {"key": "a", "value": "x", "effect": "NoSchedule"},
                {"key": "b", "effect": "NoExecute"},
            ]
        }
    }
    assert node_taints(raw) == (Taint("a", "x", "NoSchedule"), Taint("b", "", "NoExecute"))
