"""The vectorised node filters (labels.py columns) against the per-node rules they replace
(PodConstraints.selects, untolerated, in_excluded_pool), on random nodes and constraints."""

from __future__ import annotations

import random

import numpy as np

from scheduler.core.cluster import ClusterState
from scheduler.core.config import PolicyConfig
from scheduler.core.constraints import PodConstraints, Requirement, Taint, Term, Toleration
from scheduler.core.filters import NodeAffinity, TaintToleration, TeamPool
from scheduler.core.model import Gang, Node, Pod

KEYS = ("pool", "zone", "rank")
VALUES = ("a", "b", "3", "x7")


def _nodes(rng: random.Random) -> tuple[Node, ...]:
    out = []
    for i in range(40):
        labels = {k: rng.choice(VALUES) for k in KEYS if rng.random() < 0.6}
        taints = tuple(
            sorted(
                {
                    Taint(
                        rng.choice(("t1", "t2")),
                        rng.choice(("", "a")),
                        rng.choice(("NoSchedule", "NoExecute")),
                    )
                    for _ in range(rng.choice((0, 0, 1, 2)))
                }
            )
        )
        out.append(Node(f"n{i}", 8, 64_000, 512_000, labels=labels, taints=taints))
    return tuple(out)


def _requirement(rng: random.Random) -> Requirement:
    op = rng.choice(("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"))
    values: tuple[str, ...] = ()
    if op in ("In", "NotIn"):
        values = tuple(rng.sample(VALUES, rng.randint(1, 2)))
    elif op in ("Gt", "Lt"):
        values = (str(rng.randint(0, 6)),)
    return Requirement(rng.choice(KEYS), op, values)


def _constraints(rng: random.Random, names: list[str]) -> PodConstraints:
    selector = tuple(sorted({(rng.choice(KEYS), rng.choice(VALUES)) for _ in range(rng.choice((0, 0, 1)))}))
    required = None
    if rng.random() < 0.7:
        terms = []
        for _ in range(rng.randint(0, 2)):
            fields = (
                (Requirement("metadata.name", rng.choice(("In", "NotIn")), (rng.choice(names),)),)
                if rng.random() < 0.2
                else ()
            )
            terms.append(Term(tuple(_requirement(rng) for _ in range(rng.randint(0, 2))), fields))
        required = tuple(terms)
    tolerations = tuple(
        Toleration(
            rng.choice(("", "t1", "t2")),
            rng.choice(("Equal", "Exists")),
            rng.choice(("", "a")),
            rng.choice(("", "NoSchedule")),
        )
        for _ in range(rng.choice((0, 1, 2)))
    )
    excluded = tuple({((rng.choice(KEYS), rng.choice(VALUES)),) for _ in range(rng.choice((0, 1)))})
    return PodConstraints(selector, required, tolerations, excluded=excluded)


def test_vectorised_filters_agree_with_the_per_node_rules():
    rng = random.Random(7)
    checked = 0
    for _ in range(60):
        nodes = _nodes(rng)
        state = ClusterState(nodes, PolicyConfig())
        names = [n.name for n in nodes]
        for _ in range(10):
            cs = tuple({_constraints(rng, names) for _ in range(rng.choice((1, 1, 2)))})
            g = Gang("a/g", "a", (Pod("a/g-0", gpus=1),), constraints=cs)
            limits = [c for c in cs if c.limits_nodes]
            want = np.array([all(c.selects(n.name, n.labels) for c in limits) for n in nodes])
            got = NodeAffinity().mask(state, g)
            assert np.array_equal(np.ones(len(nodes), bool) if got is None else got, want)
            want = np.array([all(c.untolerated(n.taints) is None for c in cs) for n in nodes])
            got = TaintToleration().mask(state, g)
            assert np.array_equal(np.ones(len(nodes), bool) if got is None else got, want)
            want = np.array([not any(c.in_excluded_pool(n.labels) for c in cs) for n in nodes])
            got = TeamPool().mask(state, g)
            assert np.array_equal(np.ones(len(nodes), bool) if got is None else got, want)
            checked += 1
    assert checked == 600


def test_a_gang_whose_pods_differ_in_required_affinity_is_read_and_pooled():
    from scheduler.core.model import Team
    from scheduler.core.pools import with_team_pool

    plain = PodConstraints(tolerations=(Toleration("t1", "Exists"),))
    pinned = PodConstraints(required=(Term((Requirement("pool", "In", ("a",)),)),))
    g = Gang("a/g", "a", (Pod("a/g-0", gpus=1), Pod("a/g-1", gpus=1)), constraints=(plain, pinned))
    team = Team("a", namespaces=("a",), node_selector=(("pool", "a"),))
    pooled = with_team_pool(g, team, ())
    assert len(pooled.constraints) == 2
    assert all(("pool", "a") in c.node_selector for c in pooled.constraints)
