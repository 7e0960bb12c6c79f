"""Invariants of the decision core over random clusters and workloads (hypothesis).

Each example builds a cluster, runs one cycle on a first wave of work, applies it, adds
a second wave (production, training, scavenger, over-budget teams) and checks the
second cycle's decisions against the rules of DESIGN.md.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace

from hypothesis import event, given
from hypothesis import strategies as st

from scheduler.core import (
    Budget,
    Decisions,
    Gang,
    OnExhausted,
    Pod,
    PolicyConfig,
    Snapshot,
    Team,
    TeamUsage,
    Tier,
    decide,
)
from scheduler.core.model import MILLI_PER_GPU
from tests.builders import CLIQUE, LEAF, NOW, apply, node

CONFIG = PolicyConfig(max_preemptors_per_cycle=1000)
PRODUCTION, TRAINING, SCAVENGER = 100_000, 0, -10


@st.composite
def clusters(draw):
    count = draw(st.integers(1, 10))
    per_leaf = draw(st.sampled_from([1, 2, 4]))
    out = []
    for i in range(count):
        gpus = draw(st.sampled_from([0, 4, 8, 8, 8]))
        bad = draw(st.sets(st.integers(0, gpus - 1), max_size=2)) if gpus else set()
        out.append(
            node(
                f"n{i}",
                gpus,
                leaf=f"leaf-{i // per_leaf}",
                clique=f"clique-{i // 2}",
                cpu=draw(st.sampled_from([16_000, 64_000, 128_000])),
                mem=draw(st.sampled_from([64_000, 512_000])),
                model=draw(st.sampled_from(["H100", "A100"])),
                unhealthy=frozenset(bad),
            )
        )
    return tuple(out)


@st.composite
def team_set(draw):
    count = draw(st.integers(1, 4))
    out = []
    for t in range(count):
        budget = None
        if draw(st.booleans()):
            budget = Budget(
                gpu_hours=draw(st.sampled_from([0.0, 10.0, 1e6])),
                period="week",
                on_exhausted=draw(st.sampled_from(list(OnExhausted))),
            )
        out.append(
            Team(
                f"t{t}",
                weight=draw(st.sampled_from([1.0, 2.0, 3.0])),
                guaranteed_gpus=draw(st.sampled_from([0.0, 0.0, 4.0])),
                max_gpus=draw(st.sampled_from([None, None, 16.0])),
                budget=budget,
                namespaces=(f"t{t}",),
            )
        )
    return tuple(out)


@st.composite
def gangs(draw, teams: tuple[Team, ...], prefix: str, submit: float, most: int):
    out = []
    for g in range(draw(st.integers(0, most))):
        team = draw(st.sampled_from(teams)).name
        size = draw(st.sampled_from([1, 1, 2, 3, 4]))
        shared = size == 1 and draw(st.integers(0, 4)) == 0
        gpus = 0 if shared else draw(st.sampled_from([1, 2, 4, 8]))
        milli = draw(st.sampled_from([250, 500])) if shared else 0
        cpu = draw(st.sampled_from([1_000, 8_000, 30_000]))
        gid = f"{team}/{prefix}{g}"
        pods = tuple(
            Pod(f"{gid}-{k}", gpus=gpus, gpu_milli=milli, cpu_milli=cpu, memory_mib=8_000)
            for k in range(size)
        )
        out.append(
            Gang(
                gid,
                team,
                pods,
                priority=draw(st.sampled_from([PRODUCTION, TRAINING, TRAINING, SCAVENGER])),
                min_member=draw(st.sampled_from([None, None, max(1, size - 1)])),
                submit_s=submit + g,
                gpu_models=draw(st.sampled_from([frozenset(), frozenset(), frozenset({"H100"})])),
                topology_required=draw(st.sampled_from([None, None, LEAF, CLIQUE])) if size > 1 else None,
                evictable=draw(st.sampled_from([True, True, True, False])),
            )
        )
    return out


@st.composite
def scenarios(draw):
    cluster = draw(clusters())
    teams = draw(team_set())
    usage = {
        t.name: TeamUsage(draw(st.sampled_from([0.0, 1e6])), draw(st.sampled_from([0.0, 20.0])))
        for t in teams
    }
    # The first wave comes from fewer teams, so the second finds teams above their share.
    first = draw(gangs(teams[: max(1, len(teams) // 2)], "a", NOW - 7200, 12))
    snap = Snapshot(NOW - 600, cluster, teams, tuple(first), usage)
    settled = apply(snap, decide(snap, CONFIG), at=NOW)
    second = draw(gangs(teams, "b", NOW - 300, 8))
    return replace(settled, gangs=settled.gangs + tuple(second))


@st.composite
def contended(draw):
    """Homogeneous nodes filled by one team's small training gangs; others arrive later.
    This is where reclaim happens, so these examples exercise it."""
    count = draw(st.integers(2, 8))
    cluster = tuple(node(f"n{i}", 8, leaf=f"leaf-{i // 2}") for i in range(count))
    teams = tuple(
        Team(f"t{t}", weight=draw(st.sampled_from([1.0, 2.0, 3.0])), namespaces=(f"t{t}",))
        for t in range(draw(st.integers(2, 3)))
    )
    first = []
    for g in range(count * draw(st.sampled_from([2, 4, 8]))):
        gpus = draw(st.sampled_from([1, 2, 4]))
        gid = f"t0/a{g}"
        first.append(Gang(gid, "t0", (Pod(f"{gid}-0", gpus=gpus, cpu_milli=1_000),), submit_s=NOW - 7200 + g))
    # The first wave has run its minimum runtime, or is young (then only borrowed work,
    # beyond its team's share, may be reclaimed).
    age = draw(st.sampled_from([600.0, 600.0, 60.0]))
    snap = Snapshot(NOW - age, cluster, teams, tuple(first))
    settled = apply(snap, decide(snap, CONFIG), at=NOW)
    second = draw(gangs(teams[1:], "b", NOW - 300, 6))
    return replace(settled, gangs=settled.gangs + tuple(second))


def _tier(g: Gang, snap: Snapshot) -> Tier:
    team = next(t for t in snap.teams if t.name == g.team)
    usage = snap.usage.get(team.name, TeamUsage())
    exhausted = team.budget is not None and usage.period_gpu_hours >= team.budget.gpu_hours
    scavenging = exhausted and team.budget.on_exhausted is OnExhausted.SCAVENGE
    if g.priority >= CONFIG.production_min_priority:
        return Tier.PRODUCTION
    if g.priority < CONFIG.scavenger_below_priority or scavenging:
        return Tier.SCAVENGER
    return Tier.TRAINING


def _pods_after(snap: Snapshot, d: Decisions) -> dict[str, list[tuple[Pod, str, tuple[int, ...]]]]:
    """Pods on each node once the decisions are carried out (evicted gangs gone)."""
    evicted = {e.gang for e in d.evictions}
    on: dict[str, list] = defaultdict(list)
    binds = {b.pod: b for b in d.binds}
    for g in snap.gangs:
        if g.id in evicted:
            continue
        for p in g.pods:
            if p.node is not None:
                on[p.node].append((p, p.node, p.gpu_indices))
            elif p.name in binds:
                on[binds[p.name].node].append((p, binds[p.name].node, binds[p.name].gpu_indices))
    return on


def check_invariants(snap: Snapshot, d: Decisions) -> None:
    nodes = {n.name: n for n in snap.nodes}
    gang_of = {p.name: g for g in snap.gangs for p in g.pods}

    # Never more than a node has: healthy GPU slots, milli per slot, CPU, memory.
    for name, pods in _pods_after(snap, d).items():
        n = nodes[name]
        slot_use: dict[int, int] = defaultdict(int)
        for p, _, slots in pods:
            if p.gpus:
                assert len(slots) == p.gpus, f"{p.name} holds {slots} for {p.gpus} GPUs"
            for s in slots:
                slot_use[s] += p.gpu_milli or MILLI_PER_GPU
        for s, used in slot_use.items():
            assert 0 <= s < n.gpus and s not in n.unhealthy_gpus, f"{name} slot {s} is not a healthy GPU"
            assert used <= MILLI_PER_GPU, f"{name} slot {s} holds {used} milli"
        assert sum(p.cpu_milli for p, _, _ in pods) <= n.cpu_milli
        assert sum(p.memory_mib for p, _, _ in pods) <= n.memory_mib

    # Gangs whole: at least min members bound after the cycle, or no new bind at all.
    bound_now: dict[str, int] = defaultdict(int)
    for b in d.binds:
        bound_now[b.gang] += 1
        g = gang_of[b.pod]
        assert b.node in nodes and (not g.gpu_models or nodes[b.node].gpu_model in g.gpu_models)
    for gid, count in bound_now.items():
        g = next(x for x in snap.gangs if x.id == gid)
        assert len(g.bound_pods) + count >= g.required_members, f"gang {gid} bound in part"

    # Required topology: every pod of the gang in one domain of that level.
    binds = {b.pod: b.node for b in d.binds}
    for g in snap.gangs:
        if g.topology_required is None or g.id not in bound_now:
            continue
        where = {p.node or binds.get(p.name) for p in g.pods} - {None}
        domains = {nodes[w].labels[g.topology_required] for w in where}
        assert len(domains) == 1, f"gang {g.id} spans {domains}"

    # Who may evict whom; victims go whole.
    evicted_pods = defaultdict(set)
    for e in d.evictions:
        victim, preemptor = gang_of[e.pod], next(x for x in snap.gangs if x.id == e.preemptor)
        assert e.victim_tier is _tier(victim, snap) and e.preemptor_tier is _tier(preemptor, snap)
        assert e.preemptor_tier is not Tier.SCAVENGER, "scavenger evicted something"
        assert e.victim_tier < e.preemptor_tier or (
            e.victim_tier is Tier.TRAINING
            and e.preemptor_tier is Tier.TRAINING
            and victim.team != preemptor.team
        ), f"{e.preemptor_tier.label} evicted {e.victim_tier.label}"
        assert victim.evictable, "a protected gang was evicted"
        evicted_pods[e.gang].add(e.pod)
    for gid, pods in evicted_pods.items():
        g = next(x for x in snap.gangs if x.id == gid)
        assert pods == {p.name for p in g.bound_pods}, f"gang {gid} evicted in part"

    # Reclaim never takes a team below its fair share.
    for e in d.evictions:
        if e.kind == "reclaim" and e.victim_tier is Tier.TRAINING:
            status = d.teams[gang_of[e.pod].team]
            assert status.allocated_gpus >= status.fair_share_gpus - 1e-6

    # Every waiting gang has a reason a person can read.
    reasons = {p.gang: p for p in d.pending}
    for g in snap.gangs:
        if g.pending_pods and not any(b.gang == g.id for b in d.binds):
            assert g.id in reasons, f"gang {g.id} waits without a reason"
    for p in d.pending:
        assert len(p.reason) > 20 and "None" not in p.reason and "nan" not in p.reason, p.reason

    # Budget block: a blocked team binds no training or scavenger work.
    for g in snap.gangs:
        team = next(t for t in snap.teams if t.name == g.team)
        usage = snap.usage.get(team.name, TeamUsage())
        if (
            team.budget
            and team.budget.on_exhausted is OnExhausted.BLOCK
            and usage.period_gpu_hours >= team.budget.gpu_hours
            and g.priority < CONFIG.production_min_priority
        ):
            assert g.id not in bound_now, f"blocked team {team.name} got gang {g.id} bound"


@given(st.one_of(scenarios(), contended()))
def test_decisions_respect_capacity_gangs_topology_tiers_and_reasons(snap: Snapshot) -> None:
    d = decide(snap, CONFIG)
    for kind in sorted({e.kind for e in d.evictions}):
        event(f"evictions by {kind}")  # shows the examples exercise preemption
    if d.binds:
        event("some binds")
    check_invariants(snap, d)


@given(st.one_of(scenarios(), contended()))
def test_same_snapshot_same_decisions(snap: Snapshot) -> None:
    assert decide(snap, CONFIG) == decide(snap, CONFIG)


@given(st.one_of(scenarios(), contended()))
def test_no_ping_pong(snap: Snapshot) -> None:
    """No eviction is immediately reversed: a team that reclaimed in one cycle is not
    reclaimed from by its victims' team in the next. Without reclaimBorrowed, the minimum
    runtime (10 minutes by default) protects fresh work: nothing just placed is reclaimed;
    with it, fresh work beyond its team's share is borrowed and may come back at once
    (test_young_work_is_reclaimed_only_beyond_its_teams_share)."""
    first = decide(snap, CONFIG)
    after = apply(snap, first)
    placed = {b.gang for b in first.binds}
    off = decide(after, replace(CONFIG, reclaim_borrowed=False))
    for e in off.evictions:
        if e.kind == "reclaim":
            assert e.gang not in placed, f"{e.gang} placed then reclaimed for {e.preemptor}"
    second = decide(after, CONFIG)
    check_invariants(after, second)
    then = apply(after, second)
    third = decide(then, CONFIG)
    reclaims = [e for e in second.evictions if e.kind == "reclaim"]
    took = {(gang_team(after, e.preemptor), gang_team(after, e.gang)) for e in reclaims}
    for e in third.evictions:
        if e.kind == "reclaim":
            assert (gang_team(then, e.gang), gang_team(then, e.preemptor)) not in took, e


@given(st.one_of(scenarios(), contended()))
def test_reclaim_is_never_answered_by_a_reclaim_back(snap: Snapshot) -> None:
    """Even with no minimum runtime, a team that reclaimed is never reclaimed from in turn."""
    config = replace(CONFIG, default_min_runtime_s=0.0)
    first = decide(snap, config)
    after = apply(snap, first)
    second = decide(after, config)
    took = {
        (gang_team(snap, e.preemptor), gang_team(snap, e.gang))
        for e in first.evictions
        if e.kind == "reclaim"
    }
    for e in second.evictions:
        if e.kind == "reclaim":
            assert (gang_team(after, e.gang), gang_team(after, e.preemptor)) not in took


@given(st.one_of(scenarios(), contended()))
def test_young_work_is_reclaimed_only_beyond_its_teams_share(snap: Snapshot) -> None:
    """Minimum runtime protects the work within a team's share: a reclaimed gang younger
    than its minimum runtime lies beyond its team's share, its team's training gangs
    counted oldest first (those that started with it included); and without
    reclaimBorrowed no young gang is reclaimed at all."""
    d = decide(snap, CONFIG)
    gangs = {g.id: g for g in snap.gangs}
    teams = {t.name: t for t in snap.teams}

    def start(g: Gang) -> float:
        return min(p.start_s for p in g.pods if p.start_s is not None)

    def young(g: Gang) -> bool:
        floor = g.min_runtime_s if g.min_runtime_s is not None else teams[g.team].min_runtime_s
        return snap.now_s - start(g) < (floor or CONFIG.default_min_runtime_s)

    for e in d.evictions:
        victim = gangs[e.gang]
        if e.kind != "reclaim" or e.victim_tier is not Tier.TRAINING or not young(victim):
            continue
        event("young borrowed work reclaimed")
        mine = [
            g
            for g in snap.gangs
            if g.team == victim.team and any(p.node for p in g.pods) and _tier(g, snap) is Tier.TRAINING
        ]
        before = sum(p.gpu_amount for g in mine if start(g) <= start(victim) for p in g.pods if p.node)
        assert before > d.teams[victim.team].fair_share_gpus + 1e-6, (e.gang, before)
    off = decide(snap, replace(CONFIG, reclaim_borrowed=False))
    assert not [e for e in off.evictions if e.kind == "reclaim" and young(gangs[e.gang])]


def gang_team(snap: Snapshot, gid: str) -> str:
    return next(g.team for g in snap.gangs if g.id == gid)


@given(st.one_of(scenarios(), contended()))
def test_over_budget_team_takes_only_what_in_budget_work_cannot_use(snap: Snapshot) -> None:
    """Decisions for in-budget work are the same with or without the scavenging team's new work."""
    scavenging = {
        t.name
        for t in snap.teams
        if t.budget
        and t.budget.on_exhausted is OnExhausted.SCAVENGE
        and snap.usage.get(t.name, TeamUsage()).period_gpu_hours >= t.budget.gpu_hours
    }
    if not scavenging:
        return
    with_them = decide(snap, CONFIG)
    waiting = {
        g.id
        for g in snap.gangs
        if g.team in scavenging
        and g.priority < CONFIG.production_min_priority
        and g.pending_pods
        and not g.bound_pods
    }
    without = decide(replace(snap, gangs=tuple(g for g in snap.gangs if g.id not in waiting)), CONFIG)
    ours = [b for b in with_them.binds if b.gang not in waiting]
    assert ours == list(without.binds)
    assert [e for e in with_them.evictions if e.preemptor not in waiting] == list(without.evictions)


@st.composite
def saturated(draw):
    """An empty cluster of 8-GPU nodes and teams that each want far more than it has."""
    cluster = tuple(node(f"n{i}", 8, leaf=f"leaf-{i // 4}") for i in range(draw(st.integers(1, 12))))
    count = draw(st.integers(2, 5))
    teams = tuple(
        Team(
            f"t{t}",
            weight=draw(st.sampled_from([1.0, 2.0, 3.0, 4.0])),
            guaranteed_gpus=draw(st.sampled_from([0.0, 0.0, 8.0])),
            max_gpus=draw(st.sampled_from([None, None, 24.0])),
            namespaces=(f"t{t}",),
        )
        for t in range(count)
    )
    gangs = []
    capacity = 8 * len(cluster)
    for team in teams:
        gpus = draw(st.sampled_from([1, 2, 4, 8]))
        for g in range(capacity // gpus + 1):
            gid = f"{team.name}/g{g}"
            gangs.append(
                Gang(gid, team.name, (Pod(f"{gid}-0", gpus=gpus, cpu_milli=100),), submit_s=NOW - 1000 + g)
            )
    return Snapshot(NOW, cluster, teams, tuple(gangs))


@given(saturated())
def test_saturated_demand_without_history_matches_weighted_max_min_within_one_gang(snap: Snapshot) -> None:
    d = decide(snap, CONFIG)
    # Whole gangs make shares lumpy: a team can miss its share by the largest gang size
    # (another team's share it could not use flows to whoever fits), never by more.
    lump = max(g.pods[0].gpus for g in snap.gangs)
    for team in snap.teams:
        status = d.teams[team.name]
        got = sum(b_pod_gpus(snap, b.pod) for b in d.binds if b.gang.startswith(f"{team.name}/"))
        assert abs(got - status.fair_share_gpus) <= lump + 1e-6, (team.name, got, status)
    wanted = sum(math.inf if t.max_gpus is None else t.max_gpus for t in snap.teams)
    used = sum(b_pod_gpus(snap, b.pod) for b in d.binds)
    assert used == min(8 * len(snap.nodes), wanted), "work-conserving: no GPU idles while a team wants it"


def b_pod_gpus(snap: Snapshot, pod: str) -> int:
    return next(p.gpus for g in snap.gangs for p in g.pods if p.name == pod)
