"""Soft preferences that read the placed pods (podscores.py): preferred pod affinity and
anti-affinity and ScheduleAnyway spread choose among the nodes a pod may use, weighed
against the fragmentation score by placement.scoreWeights."""

from __future__ import annotations

from scheduler.core.config import load_policy
from scheduler.core.podterms import AffinityTerm, PodTerms, SpreadConstraint, WeightedTerm
from tests.test_pod_terms import HOST, _binds, _decide, _gang, _nodes, _pod, _sel


def _db_on(node: str):
    # Running 6 GPUs on n1: fragmentation alone would send a 2-GPU pod to n1 (it fills it).
    return _gang("a/db", [_pod("db", gpus=6, node=node, app="db")])


def test_preferred_pod_affinity_draws_a_pod_to_its_peers():
    near_db = PodTerms(preferred_affinity=(WeightedTerm(100, AffinityTerm(HOST, _sel(app="db"), None)),))
    nodes = _nodes()
    # The db runs on n2, which has the most room left: packing alone would not choose it.
    busy = _gang("a/busy", [_pod("busy", gpus=6, node="n1")])
    d = _decide(nodes, [busy, _db_on("n2"), _gang("a/web", [_pod("web", gpus=2, app="web")], near_db)])
    assert _binds(d)["a/web"] == "n2"


def test_preferred_anti_affinity_keeps_a_pod_off_its_rivals_node():
    away = PodTerms(preferred_anti_affinity=(WeightedTerm(100, AffinityTerm(HOST, _sel(app="db"), None)),))
    plain = _decide(_nodes(), [_db_on("n1"), _gang("a/x", [_pod("x", gpus=2)])])
    assert _binds(plain)["a/x"] == "n1"  # packing fills the db's node
    d = _decide(_nodes(), [_db_on("n1"), _gang("a/x", [_pod("x", gpus=2)], away)])
    assert _binds(d)["a/x"] != "n1"


def test_schedule_anyway_spread_balances_replicas_that_packing_would_stack():
    soft = PodTerms(spread=(SpreadConstraint(1, HOST, _sel(app="r"), filters=False),))
    nodes = _nodes(count=2)
    gangs = [_gang(f"a/r{i}", [_pod(f"r{i}", app="r")], soft) for i in range(4)]
    placed = sorted(_binds(_decide(nodes, gangs)).values())
    assert placed == ["n0", "n0", "n1", "n1"]
    packed = [_gang(f"a/p{i}", [_pod(f"p{i}", app="r")]) for i in range(4)]
    assert len(set(_binds(_decide(nodes, packed)).values())) == 1  # without it: one node


def test_the_weights_switch_pod_scores_off():
    cfg = load_policy("placement:\n  scoreWeights: {podTopologySpread: 0}\n")
    assert cfg.weights["podTopologySpread"] == 0 and cfg.weights["interPodAffinity"] == 2
