"""The filters that depend on the other pods (scheduler/core/podfilters.py): NodePorts,
InterPodAffinity (required) and PodTopologySpread (DoNotSchedule), with kube-scheduler's
documented edge cases, through the whole decision core; tests/test_kube_scheduler_
differential_podterms.py holds the same filters to the real kube-scheduler."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core import Gang, Pod, decide
from scheduler.core.constraints import PodConstraints, Requirement
from scheduler.core.cycle import Cycle
from scheduler.core.incremental import Core
from scheduler.core.model import Node
from scheduler.core.podterms import AffinityTerm, HostPort, PodTerms, Selector, SpreadConstraint
from scheduler.daemon.podterms import pod_terms
from tests.builders import NOW, running, snapshot, teams

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def _nodes(count: int = 4, zones: int = 2, gpus: int = 8) -> tuple[Node, ...]:
    return tuple(
        Node(f"n{i}", gpus, 64_000, 512_000, labels={HOST: f"n{i}", ZONE: f"z{i % zones}"})
        for i in range(count)
    )


def _sel(**labels: str) -> Selector:
    return Selector(tuple(Requirement(k, "In", (v,)) for k, v in sorted(labels.items())))


def _pod(name: str, ns: str = "a", gpus: int = 1, node: str | None = None, **labels: str) -> Pod:
    start = NOW - 3600 if node else None
    return Pod(
        f"{ns}/{name}",
        gpus=gpus,
        cpu_milli=100,
        memory_mib=100,
        node=node,
        start_s=start,
        labels=tuple(sorted(labels.items())),
        namespace=ns,
    )


def _gang(gid: str, pods: list[Pod], terms: PodTerms | None = None, team: str = "a", **kw) -> Gang:
    return Gang(gid, team, tuple(pods), submit_s=NOW - 100, terms=(terms,) * len(pods) if terms else (), **kw)


def _binds(d) -> dict[str, str]:
    return {b.pod: b.node for b in d.binds}


def _decide(nodes, gangs, team_names=("a",)):
    return decide(snapshot(nodes, teams(*[(t, 1) for t in team_names]), gangs))


ANTI_HOST = PodTerms(anti_affinity=(AffinityTerm(HOST, _sel(app="web"), frozenset({"a"})),))


def test_a_gang_with_hostname_anti_affinity_takes_one_node_per_pod():
    pods = [_pod(f"web-{i}", app="web") for i in range(4)]
    d = _decide(_nodes(4), [_gang("a/web", pods, ANTI_HOST)])
    assert sorted(_binds(d).values()) == ["n0", "n1", "n2", "n3"]


def test_a_gang_with_anti_affinity_among_its_pods_waits_whole_when_nodes_are_too_few():
    pods = [_pod(f"web-{i}", app="web") for i in range(5)]
    d = _decide(_nodes(4), [_gang("a/web", pods, ANTI_HOST)])
    assert d.binds == ()
    reason = d.pending_reason("a/web")
    assert reason.code == "Unschedulable" and "hold against each other" in reason.reason


def test_single_replicas_with_anti_affinity_spread_and_the_fifth_says_why():
    gangs = [_gang(f"a/web-{i}", [_pod(f"web-{i}", app="web")], ANTI_HOST) for i in range(5)]
    d = _decide(_nodes(4), gangs)
    assert sorted(_binds(d).values()) == ["n0", "n1", "n2", "n3"]
    waiting = [g.id for g in gangs if g.pods[0].name not in _binds(d)]
    reason = d.pending_reason(waiting[0])
    assert reason.code == "Unschedulable"
    assert "4 node(s) didn't match pod anti-affinity rules" in reason.reason


def test_existing_pods_anti_affinity_keeps_a_matching_pod_out_of_its_domain():
    # A running pod in zone z0 refuses app=db pods in its zone (symmetry): a plain pod with
    # that label, and no terms of its own, goes to zone z1.
    guard_terms = PodTerms(anti_affinity=(AffinityTerm(ZONE, _sel(app="db"), frozenset({"a"})),))
    guard = _gang("a/guard", [_pod("guard", node="n0", app="guard")], guard_terms)
    db = _gang("a/db", [_pod("db", app="db")])
    other = _gang("a/other", [_pod("other", app="other")])
    d = _decide(_nodes(4), [guard, db, other])
    placed = _binds(d)
    assert placed["a/db"] in ("n1", "n3")  # zone z1
    assert "a/other" in placed
    # All of z1 full: the db pod waits, with kube-scheduler's words for it.
    busy = [running(_gang(f"a/busy{i}", [_pod(f"busy{i}", gpus=8)]), f"n{i}") for i in (1, 3)]
    d = _decide(_nodes(4), [guard, db, *busy])
    assert "a/db" not in _binds(d)
    assert "2 node(s) didn't satisfy existing pods anti-affinity rules" in d.pending_reason("a/db").reason


def test_symmetry_holds_within_one_cycle_for_a_pod_placed_earlier_in_it():
    guard_terms = PodTerms(anti_affinity=(AffinityTerm(HOST, _sel(app="db"), None),))
    guard = replace(_gang("a/guard", [_pod("guard", app="guard")], guard_terms), priority=10)
    dbs = [_gang(f"a/db{i}", [_pod(f"db{i}", app="db")]) for i in range(3)]
    d = _decide(_nodes(2), [guard, *dbs])
    placed = _binds(d)
    assert all(placed[f"a/db{i}"] != placed["a/guard"] for i in range(3) if f"a/db{i}" in placed)


def test_required_affinity_follows_a_matching_pod_and_the_first_of_a_group_may_go_anywhere():
    aff = PodTerms(affinity=(AffinityTerm(ZONE, _sel(app="cache"), frozenset({"a"})),))
    # Nothing matches anywhere and the pod matches its own term: it may go anywhere.
    first = _gang("a/c0", [_pod("c0", app="cache")], aff)
    assert _binds(_decide(_nodes(4), [first]))
    # A pod that does not match its own term, with no match anywhere: nowhere.
    lonely = _gang("a/x", [_pod("x", app="other")], aff)
    d = _decide(_nodes(4), [lonely])
    assert d.binds == () and "4 node(s) didn't match pod affinity rules" in d.pending_reason("a/x").reason
    # A running match in z1: only z1's nodes.
    cache = running(_gang("a/cache", [_pod("cache", app="cache")]), "n1")
    d = _decide(_nodes(4), [cache, lonely])
    assert _binds(d)["a/x"] in ("n1", "n3")


def test_affinity_terms_respect_namespaces():
    aff = PodTerms(affinity=(AffinityTerm(HOST, _sel(app="cache"), frozenset({"b"})),))
    cache_a = running(_gang("a/cache", [_pod("cache", ns="a", app="cache")]), "n1")
    cache_b = running(_gang("b/cache", [_pod("cache", ns="b", app="cache")], team="b"), "n2")
    x = _gang("a/x", [_pod("x", app="x")], aff)
    d = _decide(_nodes(4), [cache_a, cache_b, x], ("a", "b"))
    assert _binds(d)["a/x"] == "n2"


@pytest.mark.parametrize(
    ("held", "wanted", "clash"),
    [
        (HostPort(8080), HostPort(8080), True),
        (HostPort(8080, "TCP"), HostPort(8080, "UDP"), False),  # another protocol
        (HostPort(8080, "TCP", "10.0.0.1"), HostPort(8080, "TCP", "10.0.0.2"), False),
        (HostPort(8080, "TCP", "10.0.0.1"), HostPort(8080, "TCP", "0.0.0.0"), True),  # 0.0.0.0: every IP
        (HostPort(8080, "TCP", "0.0.0.0"), HostPort(8080, "TCP", "10.0.0.2"), True),
        (HostPort(8080), HostPort(8081), False),
    ],
)
def test_host_port_conflicts_by_protocol_and_ip(held, wanted, clash):
    assert held.conflicts(wanted) is clash and wanted.conflicts(held) is clash
    old = running(_gang("a/old", [_pod("old")], PodTerms(ports=(held,))), "n0")
    new = _gang("a/new", [_pod("new")], PodTerms(ports=(wanted,)))
    d = _decide(_nodes(1), [old, new])
    assert (d.binds == ()) is clash
    if clash:
        reason = d.pending_reason("a/new").reason
        assert "1 node(s) didn't have free ports for the requested pod ports" in reason


def test_two_pods_on_one_host_port_never_share_a_node_even_in_one_gang():
    port = PodTerms(ports=(HostPort(8080),))
    d = _decide(_nodes(2), [_gang("a/pair", [_pod("p0"), _pod("p1")], port)])
    assert len(set(_binds(d).values())) == 2
    d = _decide(_nodes(1), [_gang("a/pair", [_pod("p0"), _pod("p1")], port)])
    assert d.binds == ()


def _spread(max_skew: int = 1, key: str = ZONE, **kw) -> PodTerms:
    return PodTerms(spread=(SpreadConstraint(max_skew, key, _sel(app="web"), **kw),))


def test_zone_spread_with_max_skew_one_balances_replicas():
    gangs = [_gang(f"a/w{i}", [_pod(f"w{i}", app="web")], _spread()) for i in range(8)]
    d = _decide(_nodes(6, zones=3), gangs)
    placed = _binds(d)
    assert len(placed) == 8
    zones = [int(n[1:]) % 3 for n in placed.values()]
    counts = sorted(zones.count(z) for z in range(3))
    assert counts[-1] - counts[0] <= 1


def test_spread_refuses_the_skewed_domain_and_counts_only_its_namespace():
    on_z0 = [running(_gang(f"a/r{i}", [_pod(f"r{i}", app="web")]), "n0") for i in range(2)]
    other_ns = [
        running(_gang(f"b/r{i}", [_pod(f"r{i}", ns="b", app="web")], team="b"), "n1") for i in range(3)
    ]
    new = _gang("a/new", [_pod("new", app="web")], _spread())
    d = _decide(_nodes(4), [*on_z0, *other_ns, new], ("a", "b"))
    assert _binds(d)["a/new"] in ("n1", "n3")  # z1: b's pods do not count
    # A skew of 2 allowed: z0 is fine too, so nothing is refused.
    assert _binds(_decide(_nodes(2), [*on_z0, replace(new, terms=(_spread(2),))]))


def test_min_domains_treats_the_global_minimum_as_zero_with_too_few_domains():
    on_z0 = running(_gang("a/r0", [_pod("r0", app="web")]), "n0")
    new = _gang("a/new", [_pod("new", app="web")], _spread(1, min_domains=3))
    # Two zones only (fewer than minDomains): min is 0, so a zone with one pod already
    # refuses (1 + 1 - 0 > 1), and the empty zone takes it.
    d = _decide(_nodes(4), [on_z0, new])
    assert _binds(d)["a/new"] in ("n1", "n3")
    held = running(_gang("a/r1", [_pod("r1", app="web")]), "n1")
    d = _decide(_nodes(4), [on_z0, held, new])
    reason = d.pending_reason("a/new").reason
    assert d.binds == () and "4 node(s) didn't match pod topology spread constraints" in reason


def test_spread_nodes_without_the_key_are_refused_with_their_own_words():
    nodes = (*_nodes(2), Node("bare", 8, 64_000, 512_000, labels={HOST: "bare"}))
    new = _gang("a/new", [_pod("new", app="web")], _spread())
    busy = [running(_gang(f"a/b{i}", [_pod(f"b{i}", gpus=8)]), f"n{i}") for i in range(2)]
    d = _decide(nodes, [*busy, new])
    assert "1 node(s) didn't match pod topology spread constraints (missing required label)" in (
        d.pending_reason("a/new").reason
    )


def test_spread_node_affinity_policy_decides_which_nodes_count():
    # The pod selects zone z1 only; with Honor (the default) z0's pods do not count, so z1
    # with one pod is the only domain and takes more; with Ignore z0 (empty) counts, and z1
    # is over the skew.
    select = PodConstraints(node_selector=((ZONE, "z1"),))
    on_z1 = running(_gang("a/r0", [_pod("r0", app="web")]), "n1")
    honour = replace(_gang("a/new", [_pod("new", app="web")], _spread()), constraints=(select,))
    assert _binds(_decide(_nodes(4), [on_z1, honour]))
    ignore = replace(honour, terms=(_spread(honour_node_affinity=False),))
    assert _decide(_nodes(4), [on_z1, ignore]).binds == ()


def test_preemption_evicts_the_pod_that_holds_the_port():
    low = replace(
        running(_gang("a/low", [_pod("low")], PodTerms(ports=(HostPort(80),))), "n0"), priority=-100
    )
    high = replace(_gang("a/high", [_pod("high")], PodTerms(ports=(HostPort(80),))), priority=200_000)
    d = _decide(_nodes(1), [low, high])
    assert [e.pod for e in d.evictions] == ["a/low"]
    assert d.nominations.get("a/high") == "n0"


def test_preemption_takes_the_anti_affinity_match_not_a_bystander():
    # n0 holds the matching pod and a bystander, both low priority; only the match must go.
    match = replace(running(_gang("a/m", [_pod("m", gpus=1, app="web")]), "n0"), priority=-100)
    bystander = replace(running(_gang("a/b", [_pod("b", gpus=1, app="x")]), "n0"), priority=-100)
    high = replace(_gang("a/high", [_pod("high", app="web")], ANTI_HOST), priority=200_000)
    d = _decide(_nodes(1), [match, bystander, high])
    assert [e.pod for e in d.evictions] == ["a/m"]


# ---------------------------------------------------------------- the translation


def _api(labels=None, ns="team", **spec):
    return {
        "metadata": {"name": "p", "namespace": ns, "labels": labels or {}},
        "spec": {"containers": [{"name": "c"}], **spec},
    }


def test_a_plain_pod_states_no_terms():
    assert pod_terms(_api()) == (None, [])


def test_host_ports_of_containers_and_sidecars_with_their_defaults():
    spec = {
        "initContainers": [
            {"name": "side", "restartPolicy": "Always", "ports": [{"containerPort": 1, "hostPort": 9000}]},
            {"name": "init", "ports": [{"containerPort": 1, "hostPort": 9001}]},  # exits before
        ],
        "containers": [
            {
                "name": "c",
                "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "UDP", "hostIP": "10.0.0.1"}],
            },
            {"name": "d", "ports": [{"containerPort": 81}]},  # no host port
        ],
    }
    terms, bad = pod_terms(_api(**spec))
    assert not bad and terms.ports == (HostPort(9000), HostPort(8080, "UDP", "10.0.0.1"))


def test_affinity_namespaces_selectors_and_match_label_keys_are_resolved():
    known = {"team": {"env": "prod"}, "other": {"env": "prod"}, "dev": {"env": "dev"}}
    term = {"topologyKey": HOST, "labelSelector": {"matchLabels": {"app": "web"}}}
    anti = [
        term,  # no namespaces, no selector: the pod's own
        {**term, "namespaces": ["x"]},
        {**term, "namespaceSelector": {"matchLabels": {"env": "prod"}}, "namespaces": ["x"]},
        {**term, "namespaceSelector": {}},  # every namespace
        {**term, "matchLabelKeys": ["rev"], "mismatchLabelKeys": ["tier"]},
    ]
    pod = _api(
        {"rev": "7", "tier": "a"},
        affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": anti}},
    )
    terms, bad = pod_terms(pod, known)
    assert not bad
    got = [t.namespaces for t in terms.anti_affinity]
    assert got == [
        frozenset({"team"}),
        frozenset({"x"}),
        frozenset({"x", "team", "other"}),
        None,
        frozenset({"team"}),
    ]
    merged = terms.anti_affinity[4].selector
    assert merged.matches({"app": "web", "rev": "7", "tier": "b"})
    assert not merged.matches({"app": "web", "rev": "6", "tier": "b"})
    assert not merged.matches({"app": "web", "rev": "7", "tier": "a"})
    # A term without a selector matches no pod; an empty one every pod.
    none = AffinityTerm(HOST, None, None)
    assert not none.matches("team", {}) and AffinityTerm(HOST, Selector(), None).matches("x", {})


def test_spread_defaults_and_policies_are_read():
    spread = [
        {"maxSkew": 2, "topologyKey": ZONE, "labelSelector": {"matchLabels": {"app": "w"}}},
        {
            "maxSkew": 1,
            "topologyKey": HOST,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {},
            "minDomains": 3,
            "nodeAffinityPolicy": "Ignore",
            "nodeTaintsPolicy": "Honor",
            "matchLabelKeys": ["rev"],
        },
    ]
    terms, bad = pod_terms(_api({"rev": "1"}, topologySpreadConstraints=spread))
    first, second = terms.spread
    assert not bad and first.filters and first.honour_node_affinity and not first.honour_taints
    assert first.min_domains == 1 and first.max_skew == 2
    assert not second.filters and second.min_domains == 3
    assert not second.honour_node_affinity and second.honour_taints
    assert second.counts({"rev": "1"}) and not second.counts({"rev": "2"})
    assert terms.filtering_spread == (first,)


def test_an_unreadable_term_makes_the_pod_wait_naming_it():
    bad_sel = {"topologyKey": HOST, "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}
    pod = _api(affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [bad_sel]}})
    _, bad = pod_terms(pod)
    assert bad == [
        "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[].labelSelector"
        ".matchExpressions with operator 'Gt'"
    ]


# ---------------------------------------------------------------- random workloads


@st.composite
def _workloads(draw):
    """Random nodes in zones, running pods (some holding ports or anti-affinity) and waiting
    gangs mixing plain pods with pods stating ports, anti-affinity, affinity and spread."""
    n = draw(st.integers(2, 6))
    nodes = _nodes(n, zones=draw(st.integers(1, 3)), gpus=draw(st.sampled_from((2, 4, 8))))
    apps = st.sampled_from(("web", "db", "x"))
    keys = st.sampled_from((HOST, ZONE))

    def terms() -> PodTerms | None:
        kind = draw(st.sampled_from(("none", "none", "port", "anti", "aff", "spread")))
        app = draw(apps)
        if kind == "port":
            return PodTerms(ports=(HostPort(draw(st.sampled_from((80, 81)))),))
        if kind == "anti":
            return PodTerms(anti_affinity=(AffinityTerm(draw(keys), _sel(app=app), None),))
        if kind == "aff":
            return PodTerms(affinity=(AffinityTerm(draw(keys), _sel(app=app), None),))
        if kind == "spread":
            return PodTerms(spread=(SpreadConstraint(draw(st.integers(1, 2)), draw(keys), _sel(app=app)),))
        return None

    gangs = []
    for i in range(draw(st.integers(0, 6))):
        t = terms()
        pod = _pod(f"run{i}", gpus=1, node=nodes[draw(st.integers(0, n - 1))].name, app=draw(apps))
        g = _gang(f"a/run{i}", [pod], t)
        gangs.append(replace(g, priority=draw(st.sampled_from((-100, 0)))))
    for i in range(draw(st.integers(1, 8))):
        size = draw(st.integers(1, 3))
        t = terms()
        app = draw(apps)
        pods = [_pod(f"w{i}-{k}", gpus=draw(st.integers(1, 2)), app=app) for k in range(size)]
        g = replace(_gang(f"a/w{i}", pods, t), submit_s=NOW - 100 + i)
        gangs.append(replace(g, priority=draw(st.sampled_from((0, 0, 200_000)))))
    return snapshot(nodes, teams(("a", 1)), gangs)


def _placed(snap, d):
    """(pod, node, terms) of every pod running or bound after the decisions."""
    where = {b.pod: b.node for b in d.binds}
    gone = {e.pod for e in d.evictions}
    out = []
    for g in snap.gangs:
        for k, p in enumerate(g.pods):
            node = where.get(p.name, p.node)
            if node is not None and p.name not in gone:
                out.append((p, node, g.terms[k] if g.terms else None))
    return out


@settings(max_examples=200, deadline=None)
@given(_workloads(), st.sampled_from(("gpufair", "fifo")))
def test_random_workloads_decide_the_same_in_both_modes_and_never_break_ports_or_anti_affinity(snap, policy):
    fast, slow = decide(snap, policy=policy), decide(snap, policy=policy, reference=True)
    assert fast.binds == slow.binds and fast.evictions == slow.evictions
    assert tuple(fast.pending) == tuple(slow.pending)
    zone = {n.name: n.labels[ZONE] for n in snap.nodes}
    bound_now = {b.pod for b in fast.binds}
    placed = _placed(snap, fast)
    for p, node, t in placed:
        if t is None or p.name not in bound_now:
            continue  # running pods were placed by someone else; the binds are what is checked
        for q, other, u in placed:
            if q is p:
                continue
            if node == other and t.ports and u is not None and u.ports:
                assert not any(a.conflicts(b) for a in t.ports for b in u.ports), (p.name, q.name)
            for term in t.anti_affinity:
                same_domain = node == other if term.topology_key == HOST else zone[node] == zone[other]
                assert not (same_domain and term.matches(q.namespace, dict(q.labels))), (p.name, q.name)


def test_a_cycle_without_such_terms_builds_no_index_and_groups_stay_groups():
    plain = [_gang(f"a/p{i}", [_pod(f"p{i}", app="web")]) for i in range(6)]
    core = Core.from_snapshot(snapshot(_nodes(4), teams(("a", 1)), plain))
    cyc = Cycle(core, NOW, {})
    assert cyc.pods is None and cyc.anti_terms == () and cyc.groups == 1
    # A running pod whose anti-affinity matches the group's label: the group is looked at
    # gang by gang, each placed pod by pod; a group it does not match stays a group.
    guard = running(_gang("a/guard", [_pod("guard", app="guard")], ANTI_HOST), "n0")
    others = [_gang(f"a/o{i}", [_pod(f"o{i}", gpus=2, app="other")]) for i in range(3)]
    core = Core.from_snapshot(snapshot(_nodes(4), teams(("a", 1)), [guard, *plain, *others]))
    cyc = Cycle(core, NOW, {})
    assert cyc.pods is not None and cyc.groups == 1
    assert sum(1 for v in cyc.views[cyc.groups :] if v.waiting is not None and v.waiting.request.dynamic) == 6
    d = core.decide(NOW)
    assert "n0" not in {b.node for b in d.binds if b.pod.startswith("a/p")}
