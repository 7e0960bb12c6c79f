"""NodeResourcesFit for every resource: the pods count, ephemeral-storage, hugepages and
extended resources, as kube-scheduler fits them, through placement, undo, eviction and the
running set; requests counted as the kubelet counts them; reasons in kube-scheduler's words."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core import Gang, Node, Pod, PolicyConfig, decide
from scheduler.core.cluster import ClusterState, Shape
from scheduler.core.incremental import Core
from scheduler.core.mig import MigRates
from scheduler.core.policies import POLICIES
from scheduler.core.waiting import scheduling_signature
from scheduler.daemon.translate import SnapshotBuilder, node_from_api, resource_requests, split_requests
from tests.builders import NOW, apply, gang, names, node, refused, running, snapshot, teams
from tests.test_incremental import same

CONFIG = PolicyConfig()
TEAMS = teams(("a", 1.0), ("b", 1.0))
GiB = 2**30


_NAMES = {"rdma_ib": "rdma/ib", "ephemeral_storage": "ephemeral-storage", "x_io": "x.io/y"}


def _name(k: str) -> str:
    """A resource name written as a keyword: rdma_ib, ephemeral_storage, hugepages_2Mi."""
    return _NAMES.get(k, k.replace("_", "-"))


def with_extras(n: Node, max_pods: int | None = None, **extras: int) -> Node:
    return replace(n, extras=tuple(sorted((_name(k), v) for k, v in extras.items())), max_pods=max_pods)


def asking(g: Gang, **extras: int) -> Gang:
    asked = tuple(sorted((_name(k), v) for k, v in extras.items()))
    return replace(g, pods=tuple(replace(p, extras=asked) for p in g.pods))


def where(d) -> list[str]:
    return sorted(b.node for b in d.binds)


# ---------------------------------------------------------------- requests, as the kubelet counts them


def _pod(**spec) -> dict:
    return {"metadata": {"name": "p", "namespace": "a"}, "spec": spec}


def _c(name: str, restart: str | None = None, **requests: str) -> dict:
    c: dict = {"name": name, "resources": {"requests": {_name(k): v for k, v in requests.items()}}}
    if restart:
        c["restartPolicy"] = restart
    return c


def test_init_containers_count_as_their_peak_and_sidecars_add_up():
    # Plain init containers run one at a time before the app: the larger of the two counts.
    plain = _pod(
        initContainers=[_c("i", cpu="4", rdma_ib="2")],
        containers=[_c("a", cpu="1", rdma_ib="1"), _c("b", cpu="1")],
    )
    assert split_requests(resource_requests(plain)) == (0, 4000, 0, (("rdma/ib", 2),))
    # A sidecar (restartPolicy Always) runs beside everything after it: it adds to the app's
    # sum, and to every later init container's own need.
    sidecar = _pod(
        initContainers=[_c("s", "Always", cpu="1", ephemeral_storage="1Gi"), _c("i", cpu="2")],
        containers=[_c("a", cpu="1", ephemeral_storage="1Gi")],
    )
    assert split_requests(resource_requests(sidecar)) == (0, 3000, 0, (("ephemeral-storage", 2 * GiB),))


def test_overhead_and_pod_level_requests_are_counted():
    pod = _pod(
        containers=[_c("a", cpu="1", memory="1Gi", hugepages_2Mi="4Mi")],
        overhead={"cpu": "250m", "memory": "64Mi", "example.com/foo": "1"},
        resources={"requests": {"cpu": "3", "hugepages-2Mi": "8Mi"}},
    )
    # Pod-level requests stand in for the containers' cpu, memory and hugepages; overhead adds.
    gpus, cpu, mem, extras = split_requests(resource_requests(pod))
    assert (gpus, cpu, mem) == (0, 3250, 1024 + 64)
    assert extras == (("example.com/foo", 1), ("hugepages-2Mi", 8 * 2**20))


def test_zero_requests_are_not_asked_for_and_limits_stand_for_missing_requests():
    pod = _pod(
        containers=[{"name": "a", "resources": {"limits": {"rdma/ib": "1"}, "requests": {"x.io/y": "0"}}}]
    )
    assert split_requests(resource_requests(pod))[3] == (("rdma/ib", 1),)


def test_an_unreadable_quantity_names_the_pod_and_the_others_are_still_read():
    good = {
        "metadata": {"name": "ok", "namespace": "a"},
        "spec": {"schedulerName": "gpufair", "containers": [_c("c", rdma_ib="1")]},
    }
    bad = {
        "metadata": {"name": "bad", "namespace": "a"},
        "spec": {"schedulerName": "gpufair", "containers": [_c("c", rdma_ib="lots")]},
    }
    team = {
        "apiVersion": "gpufair.io/v1alpha1",
        "kind": "GPUTeam",
        "metadata": {"name": "a"},
        "spec": {"weight": 1, "namespaces": ["a"]},
    }
    tr = SnapshotBuilder([team]).build(NOW, [], [good, bad])
    assert [g.id for g in tr.snapshot.gangs] == ["a/ok"]
    assert tr.snapshot.gangs[0].pods[0].extras == (("rdma/ib", 1),)
    assert "pod a/bad: spec.containers[].resources: unreadable quantity" in tr.invalid["a/bad"]


def _api_node(name: str, **alloc: str) -> dict:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.memory": "81920"}},
        "status": {
            "allocatable": {_name(k): v for k, v in alloc.items()},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def test_a_node_advertises_its_pods_count_and_every_other_resource():
    n = node_from_api(_api_node("n", cpu="8", memory="32Gi", pods="12", rdma_ib="4", hugepages_1Gi="2Gi"))
    assert n.max_pods == 12 and n.gpu_memory_mib == 81920
    assert n.extras == (("hugepages-1Gi", 2 * GiB), ("rdma/ib", 4))


def test_a_node_with_a_bad_quantity_is_left_out_with_a_problem_and_the_rest_go_on():
    bad = _api_node("bad", cpu="8", rdma_ib="-1")
    names(refused(node_from_api, bad), "node 'bad'", "status.allocatable[rdma/ib]", "below 0", "0 or more")
    tr = SnapshotBuilder([]).build(NOW, [bad, _api_node("good", cpu="8")], [])
    assert [n.name for n in tr.snapshot.nodes] == ["good"]
    assert [(p.kind, p.name) for p in tr.problems] == [("Node", "bad")]


def test_bad_extras_in_the_core_model_are_refused_with_the_field():
    names(refused(Pod, "p", extras=(("rdma/ib", 0),)), "pod 'p'", "resources.requests[rdma/ib]", "at least 1")
    names(refused(Pod, "p", extras=(("cpu", 1),)), "pod 'p'", "resources.requests", "own fields")
    names(refused(Node, "n", 0, 0, 0, extras=(("b", 1), ("a", 1))), "node 'n'", "status.allocatable", "once")
    names(refused(Node, "n", 0, 0, 0, max_pods=-1), "node 'n'", "status.allocatable[pods]", "0 or more")


# ---------------------------------------------------------------- fit in the core


def test_a_pod_goes_only_where_its_extended_resource_is():
    nodes_ = (node("n0"), with_extras(node("n1"), rdma_ib=1), node("n2"))
    d = decide(snapshot(nodes_, TEAMS, [asking(gang("a/g", "a"), rdma_ib=1)]), CONFIG)
    assert where(d) == ["n1"]
    # The node's only one is held: a second such pod waits, and says what it lacks where.
    later = apply(snapshot(nodes_, TEAMS, [asking(gang("a/g", "a"), rdma_ib=1)]), d)
    d2 = decide(replace(later, gangs=(*later.gangs, asking(gang("a/h", "a"), rdma_ib=1))), CONFIG)
    assert d2.binds == ()
    p = d2.pending_reason("a/h")
    assert p is not None and p.code == "NoRoom"
    assert "0/3 nodes are available: 3 Insufficient rdma/ib" in p.reason


def test_a_resource_no_node_has_fails_everywhere_beside_the_filters_counts():
    nodes_ = (node("n0", cpu=500), node("n1"), replace(node("n2"), schedulable=False))
    g = asking(gang("a/g", "a", gpus=0, cpu=1_000), hugepages_2Mi=2**21)
    d = decide(snapshot(nodes_, TEAMS, [g]), CONFIG)
    p = d.pending_reason("a/g")
    assert d.binds == () and p is not None
    # A node short of several is counted under each, as kube-scheduler counts it.
    assert "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) were unschedulable, " in p.reason
    assert p.reason.endswith("2 Insufficient hugepages-2Mi") or "2 Insufficient hugepages-2Mi;" in p.reason


def test_every_bound_pod_takes_one_of_its_nodes_pods_whatever_it_asks():
    nodes_ = (with_extras(node("n0"), max_pods=2), with_extras(node("n1"), max_pods=3))
    other = Gang("x/other#other", "", (Pod("x/other", node="n0", start_s=NOW),), evictable=False)
    mine = running(gang("a/run", "a", gpus=0), "n1")
    d = decide(snapshot(nodes_, TEAMS, [other, mine, gang("a/g", "a", pods=3, gpus=0)]), CONFIG)
    assert Counter(b.node for b in d.binds) == {"n0": 1, "n1": 2}
    d = decide(snapshot(nodes_, TEAMS, [other, mine, gang("a/g", "a", pods=4, gpus=0)]), CONFIG)
    assert d.binds == ()
    d = decide(
        snapshot(
            nodes_,
            TEAMS,
            [
                running(gang("a/f", "a", pods=4, gpus=0), ["n0", "n0", "n1", "n1"]),
                mine,
                gang("a/g", "a", gpus=0),
            ],
        ),
        CONFIG,
    )
    p = d.pending_reason("a/g")
    assert p is not None and "0/2 nodes are available: 2 Too many pods" in p.reason


def test_foreign_pods_hold_their_resources():
    nodes_ = (with_extras(node("n0"), rdma_ib=2), with_extras(node("n1"), rdma_ib=2))
    foreign = Gang(
        "x/o#other", "", (Pod("x/o", node="n0", start_s=NOW, extras=(("rdma/ib", 2),)),), evictable=False
    )
    d = decide(snapshot(nodes_, TEAMS, [foreign, asking(gang("a/g", "a"), rdma_ib=1)]), CONFIG)
    assert where(d) == ["n1"]


def test_eviction_gives_back_the_resources_of_the_victim():
    nodes_ = (with_extras(node("n0"), rdma_ib=1), node("n1"))
    scav = running(asking(gang("a/s", "a", priority=-10), rdma_ib=1), "n0")
    prod = asking(gang("b/p", "b", priority=1_000_000), rdma_ib=1)
    d = decide(snapshot(nodes_, TEAMS, [scav, prod]), CONFIG)
    assert [e.gang for e in d.evictions] == ["a/s"]
    assert d.nominations == {"b/p-0": "n0"}
    # A victim that holds no GPU, only the resource the preemptor needs, is one too.
    scav = running(asking(gang("a/s", "a", gpus=0, priority=-10), rdma_ib=1), "n0")
    prod = asking(gang("b/p", "b", gpus=0, priority=1_000_000), rdma_ib=1)
    d = decide(snapshot(nodes_, TEAMS, [scav, prod]), CONFIG)
    assert [e.gang for e in d.evictions] == ["a/s"] and d.nominations == {"b/p-0": "n0"}


def test_undo_and_release_restore_pods_and_extra_resources():
    st_ = ClusterState([with_extras(node("n0"), max_pods=4, rdma_ib=3)], CONFIG)
    before = (st_.pods_free.copy(), st_.extra_free.copy())
    shape = Shape(1, 0, 1_000, 1_000, (("rdma/ib", 2),))
    assert st_.count_capacity(shape).tolist() == [1]
    mark = st_.mark()
    held = st_.allocate(0, shape)
    assert st_.pods_free.tolist() == [3] and st_.extra_free.tolist() == [[1]]
    assert st_.count_capacity(shape).tolist() == [0]
    st_.rollback(mark)
    assert (st_.pods_free.tolist(), st_.extra_free.tolist()) == (before[0].tolist(), before[1].tolist())
    st_.retake(held)
    st_.release(held)
    assert st_.extra_free.tolist() == [[3]]


def test_running_pods_with_extras_are_loaded_and_a_node_over_them_takes_nothing():
    st_ = ClusterState([with_extras(node("n0"), rdma_ib=1), with_extras(node("n1"), rdma_ib=1)], CONFIG)
    rows = np.array([0, 1], dtype=np.int64)
    zero = np.zeros(2, dtype=np.int64)
    held = st_.load_running(
        rows, np.array([1, 0]), zero, zero, zero, {}, {0: (("rdma/ib", 1),), 1: (("rdma/ib", 2),)}
    )
    assert st_.extra_free.tolist() == [[0], [-1]]
    assert held[0].extras == ((0, 1),) and held[0].anonymous_whole == 1
    assert st_.placeable.tolist() == [True, False]  # n1 holds more than it has


def test_a_cluster_without_other_resources_keeps_empty_columns():
    st_ = ClusterState([node("n0"), node("n1")], CONFIG)
    assert st_.extra_free.shape == (2, 0) and not st_.pods_limited
    shape = Shape(2, 0, 1_000, 1_000)
    assert st_.count_capacity(shape).tolist() == st_.gpu_capacity(shape).tolist() == [4, 4]


# ---------------------------------------------------------------- random clusters: both modes, and never over


EXTRA = ("rdma/ib", "example.com/foo", "nvidia.com/mig-1g.10gb")


@st.composite
def resource_scenarios(draw):
    cluster = []
    for i in range(draw(st.integers(2, 6))):
        extras = {name: draw(st.sampled_from([0, 1, 2, 4])) for name in EXTRA if draw(st.booleans())}
        n = node(
            f"n{i}", draw(st.sampled_from([0, 4, 8])), leaf=f"leaf-{i // 2}", model="NVIDIA-H100-80GB-HBM3"
        )
        cluster.append(
            replace(n, extras=tuple(sorted(extras.items())), max_pods=draw(st.sampled_from([None, 2, 5])))
        )
    rates = MigRates(cluster)

    def pods_for(gid: str, count: int) -> tuple[Pod, ...]:
        asked = tuple(
            sorted({name: draw(st.integers(1, 2)) for name in EXTRA if draw(st.integers(0, 3)) == 0}.items())
        )
        gpus = draw(st.sampled_from([0, 1, 2]))
        return tuple(
            Pod(
                f"{gid}-{k}",
                gpus=gpus,
                cpu_milli=1_000,
                extras=asked,
                mig_milli=rates.charge_milli(asked, None),
            )
            for k in range(count)
        )

    gangs = []
    for wave, at in (("a", NOW - 7200), ("b", NOW - 300)):
        for g in range(draw(st.integers(1, 8))):
            team = draw(st.sampled_from(["a", "b"]))
            gid = f"{team}/{wave}{g}"
            gangs.append(
                Gang(
                    gid,
                    team,
                    pods_for(gid, draw(st.integers(1, 3))),
                    submit_s=at + g,
                    priority=draw(st.sampled_from([0, 0, -10, 1_000_000])),
                )
            )
        if wave == "a":
            snap = snapshot(tuple(cluster), TEAMS, gangs)
            snap = apply(snap, decide(snap, CONFIG), at=NOW)
            gangs = list(snap.gangs)
    return replace(snap, gangs=tuple(gangs))


def _never_over(snap, d) -> None:
    after = apply(snap, d)
    held: Counter = Counter()
    pods: Counter = Counter()
    for g in after.gangs:
        for p in g.pods:
            if p.node is not None:
                pods[p.node] += 1
                for name, amount in p.extras:
                    held[(p.node, name)] += amount
    for n in snap.nodes:
        have = dict(n.extras)
        if n.max_pods is not None:
            assert pods[n.name] <= n.max_pods, n.name
        for (where_, name), amount in held.items():
            if where_ == n.name:
                assert amount <= have.get(name, 0), (n.name, name)


@settings(max_examples=120, deadline=None)
@given(resource_scenarios(), st.sampled_from(sorted(POLICIES)))
def test_random_resource_clusters_decide_the_same_in_both_modes_and_never_overcommit(snap, policy):
    fast = decide(snap, CONFIG, policy)
    same(fast, decide(snap, CONFIG, policy, reference=True))
    _never_over(snap, fast)


@settings(max_examples=60, deadline=None)
@given(resource_scenarios())
def test_a_core_fed_pods_with_resources_change_by_change_decides_as_decide(snap):
    core = Core(snap.nodes, snap.teams, CONFIG, "gpufair")
    for g in snap.gangs:
        core.put(g)
    d = core.decide(snap.now_s, snap.usage)
    same(d, decide(core.snapshot(snap.now_s, snap.usage), CONFIG))
    later = apply(core.snapshot(snap.now_s, snap.usage), d, at=snap.now_s + 900)
    known = {g.id: g for g in core.gangs.values()}
    for g in later.gangs:
        if g != known[g.id]:
            core.put(g)
    for g in list(later.gangs)[::3]:
        core.remove(g.id)
    second = core.snapshot(later.now_s, later.usage)
    same(core.decide(second.now_s, second.usage), decide(second, CONFIG))


def test_pods_without_other_resources_keep_their_signature_group():
    plain = gang("a/g", "a")
    assert scheduling_signature(plain)[3] is None  # no per-pod work for them beyond a check
    assert scheduling_signature(asking(plain, rdma_ib=1))[3] == (((("rdma/ib", 1),), 0),)
