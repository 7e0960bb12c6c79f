"""One decision cycle: a snapshot in, decisions out, nothing else touched.

The cycle runs three passes over the pending gangs: production (which may preempt
scavenger, then training), training (in fair-share order; a team below its share may
reclaim from teams above theirs), then scavenger (only what is left). A policy chooses
the strategies used in each; the baselines run through this same code.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from typing import NamedTuple

import numpy as np

from scheduler.core import reasons
from scheduler.core.budget import BudgetState, budget_state
from scheduler.core.cluster import ClusterState, Held, Shape
from scheduler.core.config import PolicyConfig
from scheduler.core.fairshare import fairshare_factors, water_fill
from scheduler.core.incremental import Core
from scheduler.core.intake import RunningTable
from scheduler.core.model import (
    Bind,
    Decisions,
    Eviction,
    Gang,
    OnExhausted,
    Pending,
    Pod,
    Snapshot,
    TeamStatus,
    TeamUsage,
    Tier,
)
from scheduler.core.placement import CLUSTER_LEVEL, GangRequest, Placement, place_gang
from scheduler.core.policies import Policy
from scheduler.core.preemption import Candidates, Plan, Victim, plan_preemption
from scheduler.core.scoring import SCORERS, Fragmentation, NodeScorer, ShapeCache, WorkloadMix
from scheduler.core.tiers import effective_tier, effective_tiers
from scheduler.core.waiting import (
    GangClass,
    Lane,
    PendingLog,
    SilentLog,
    View,
    merged_run,
    problems_in_order,
)

_EPS = 1e-6
_NO_USAGE = TeamUsage()


def decide(
    snapshot: Snapshot, config: PolicyConfig | None = None, policy: str | Policy = "gpufair"
) -> Decisions:
    """Run one decision cycle. Same snapshot, config and policy: same decisions."""
    d = Core.from_snapshot(snapshot, config, policy).decide(snapshot.now_s, snapshot.usage)
    return replace(d, pending=tuple(d.pending))


def run_cycle(core: Core, now_s: float, usage: Mapping[str, TeamUsage]) -> Decisions:
    """One cycle on a Core's input (what `decide` and `Core.decide` both run)."""
    return _Cycle(core, now_s, usage).run()


class _Loaded(NamedTuple):
    """The running set as a cycle reads it, kept by the Core while it is the same (`key`:
    the running store's version and the teams that scavenge). Never changed while it is
    the Core's (the next one may take over its cluster: see _read_running)."""

    key: tuple[int, bytes]
    run: RunningTable
    tiers: np.ndarray  # per running gang
    cluster: ClusterState  # with the running pods loaded
    special: dict[int, Held]  # what pods at known slots or on shared GPUs hold, by row
    gpus: np.ndarray  # per (tier, team)
    cpu: np.ndarray  # per team, training only
    mem: np.ndarray
    scav_held: bool  # whether any scavenger GPUs are held


@dataclass(slots=True)
class _Waiting:
    gang: Gang
    team: int
    tier: Tier
    need: tuple[Pod, ...]  # placed all together or not at all
    extras: tuple[Pod, ...]  # beyond minMember: placed when there is room
    gpus: float
    request: GangRequest | None = None
    problem: Pending | None = None  # set when the gang cannot even be tried
    nominated: GangRequest | None = None  # its request kept to the nodes held for it


@dataclass(slots=True)
class _Outcome:
    binds: list[Bind] = field(default_factory=list)
    evictions: list[Eviction] = field(default_factory=list)
    pending: PendingLog = field(default_factory=PendingLog)
    nominations: dict[str, str] = field(default_factory=dict)


class _TeamTable(Mapping[str, TeamStatus]):
    """A cycle's team status, built on first read: a replay reads it only when it samples,
    and with 50 teams building it was a tenth of a quiet cycle."""

    __slots__ = ("_build", "_items")

    def __init__(self, build: Callable[[], dict[str, TeamStatus]]) -> None:
        self._build: Callable[[], dict[str, TeamStatus]] | None = build
        self._items: dict[str, TeamStatus] | None = None

    def _all(self) -> dict[str, TeamStatus]:
        if self._items is None:
            assert self._build is not None
            self._items, self._build = self._build(), None
        return self._items

    def __getitem__(self, name: str) -> TeamStatus:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


def _by_priority(v: View) -> tuple[int]:
    """A lane's order within one team: priority first (then age, as every lane)."""
    return (-v.gangs[0].priority,)


def _pods_of(w: _Waiting) -> tuple[Pod, ...]:
    return (*w.need, *w.extras)


def _waiting_mix(views: list[View]) -> Counter[tuple[int, int, int, int]]:
    """Pods waiting per type (GPUs, share, CPU, memory), scavenger work left out."""
    mix: Counter[tuple[int, int, int, int]] = Counter()
    for v in views:
        if v.tier is Tier.SCAVENGER:
            continue
        if v.source is not None:
            for shape in v.source.shapes:
                mix[shape] += v.size
        else:
            for p in _pods_of(v.waiting):
                mix[(p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib)] += 1
    return mix


def _make_scorer(
    policy: Policy,
    config: PolicyConfig,
    waiting: Callable[[], Counter[tuple[int, int, int, int]]] | None,
    running: Counter[tuple[int, int, int, int]],
    made: dict[tuple, Fragmentation],
) -> NodeScorer:
    """The policy's scorer. The fragmentation scorer weighs the pod types (GPUs, share,
    CPU, memory) of the waiting and the running pods; `waiting` is None for the others.
    Scavenger work is not among the waiting (see _read_waiting): it must not steer where
    in-budget work goes. `made`: fragmentation scorers by their types (the Core's, kept
    across cycles); the mix's types change far less often than its proportions."""
    if waiting is None:
        return SCORERS[policy.scorer]()
    shapes = waiting()
    shapes.update(running)
    types, p = WorkloadMix.ranked(shapes, config.workload_types)
    scorer = made.get(types)
    if scorer is None:
        if len(made) >= 64:
            made.clear()
        scorer = made[types] = Fragmentation(WorkloadMix.of(types, p), config.fragmentation_objective)
    return scorer.reweighted(p)


class _Cycle:
    def __init__(self, core: Core, now_s: float, usage_of: Mapping[str, TeamUsage]) -> None:
        self.core = core
        self.config = core.config
        self.policy = policy = core.policy
        self.now = now_s
        self.teams = list(core.teams)
        self.team_index = core.team_index
        n_teams = len(self.teams)
        self.sink = n_teams  # per-team arrays have one more slot, for gangs without a team
        self.usage = usage = [usage_of.get(t.name, _NO_USAGE) for t in self.teams]
        # Only a team with a budget can run out of it: the others' budget state waits for
        # the team table (see `budgets`), which a replay reads only when it samples.
        self.exhausted = [False] * (n_teams + 1)
        self._scavenging = np.zeros(n_teams + 1, dtype=bool)  # over budget, scavenging
        if policy.budgets:
            for t, team in enumerate(self.teams):
                if team.budget is not None and budget_state(team.budget, usage[t], now_s).exhausted:
                    self.exhausted[t] = True
                    self._scavenging[t] = team.budget.on_exhausted is OnExhausted.SCAVENGE
        self.max_node_gpus = core.max_node_gpus
        self.explain = core.explain
        self.out = _Outcome(pending=PendingLog() if self.explain else SilentLog())
        self._read_running()
        # Only the fragmentation scorer weighs the pod types (of waiting and running pods).
        self.weighs_mix = SCORERS[policy.scorer] is Fragmentation
        self._read_waiting()
        self.demand = np.array(self.alloc) + self.waiting_demand_milli / 1000.0
        self.share = [0.0] * (n_teams + 1)
        self._divide_training_capacity()
        decayed = [u.decayed_gpu_seconds for u in usage]
        self.idle = [u.idle_gpus for u in usage]
        self.factor = (
            fairshare_factors([t.weight for t in self.teams], decayed)
            if policy.history and self.teams
            else [1.0] * n_teams
        )
        # The scorer is made when a placement first scores nodes: a cycle that places
        # nothing never needs it. (A function of the cycle's inputs, not a method: a
        # method would tie the cycle into a reference loop, kept until the collector runs.)
        self.cache = ShapeCache(
            self.state,
            partial(
                _make_scorer,
                policy,
                self.config,
                partial(_waiting_mix, self.views) if self.weighs_mix else None,
                self.core.running.gpu_pod_shapes,
                self.core.scorers,
            ),
        )
        self._failed: dict[int, int] = {}  # id(shared request) -> releases when it failed
        # A request of one pod shape fails by room alone, whatever the scorer, and running
        # pods only ever take room: one that failed on the cluster an earlier cycle started
        # from fails again while pods have only come since (binds, no completion, eviction
        # or node change). Such failures are carried from cycle to cycle (see run).
        self._start_failures: list[GangRequest] = []
        carried = core.carried_failures
        if carried is not None and carried[0] == core.running.removals:
            self._failed = dict.fromkeys(map(id, carried[1]), 0)
            self._start_failures.extend(carried[1])
        self._releases = 0
        self._preemptors = 0
        self._may_preempt = policy.preemption and self.config.preemption_enabled
        self._max_preemptors = self.config.max_preemptors_per_cycle
        self._caps = [team.max_gpus for team in self.teams]  # maxGPUs per team
        self._no_victims: dict[tuple, int] = {}
        self._diagnosed: dict[tuple, tuple[str, str]] = {}
        self._contexts: dict[tuple, str] = {}
        self._victims: dict[int, Victim] = {}

    def _divide_training_capacity(self) -> None:
        """Fair shares of what production leaves: what it holds now, not what it waits for,
        so a production gang that cannot start takes nothing from the training teams."""
        n = len(self.teams)
        capacity = max(0.0, self.state.healthy_gpus() - float(self.prod.sum()))
        key = (capacity, self.demand[:n].tobytes())
        if key == getattr(self, "_divided", None):
            return  # the same input as last time: the same shares
        self._divided = key
        # The teams are the Core's for its whole life, so equal input gives equal shares:
        # a replay meets the same (capacity, demand) again in about a quarter of its cycles.
        memo = self.core.shares
        shares = memo.get(key)
        if shares is None:
            shares = water_fill(
                capacity,
                [t.weight for t in self.teams],
                self.demand[:n].tolist(),
                [t.guaranteed_gpus for t in self.teams],
                [t.max_gpus for t in self.teams],
            )
            if len(memo) >= 4096:
                memo.clear()
            memo[key] = shares
        self.share[:n] = shares

    # ------------------------------------------------------------------ reading

    @cached_property
    def budgets(self) -> list[BudgetState]:
        return [budget_state(t.budget, u, self.now) for t, u in zip(self.teams, self.usage, strict=True)]

    def _tiers(self, priorities: np.ndarray, teams: np.ndarray) -> np.ndarray:
        if not self.policy.tiers:
            return np.full(priorities.shape, int(Tier.TRAINING))
        return effective_tiers(priorities, self._scavenging[teams], self.config)

    def _tier(self, priority: int, scavenging: bool) -> Tier:
        """One waiting gang's tier: `_tiers` for one, remembered by the Core per (priority,
        scavenging), since a cycle asks it of every class and there are few of each."""
        if not self.policy.tiers:
            return Tier.TRAINING
        memo = self.core.tier_memo
        tier = memo.get((priority, scavenging))
        if tier is None:
            tier = memo[(priority, scavenging)] = effective_tier(priority, scavenging, self.config)
        return tier

    def _read_running(self) -> None:
        """The running gangs, their tiers, the GPUs each (tier, team) holds, and the cluster
        with them loaded. Worked out again only when the running set or the teams that
        scavenge change: about half the cycles of a replay see the same as the one before."""
        core = self.core
        key = (core.running.version, self._scavenging.tobytes())
        hit: _Loaded | None = core.loaded  # type: ignore[assignment]
        if hit is None or hit.key != key:
            run = core.running.table()
            tiers = self._tiers(run.priority, run.team)
            changes, core.running.changes = core.running.changes, []
            loaded = None
            if hit is not None and changes is not None and not hit.special:
                # Whole GPUs at no known slot before: carry the pods that came and went
                # over onto the last loaded cluster, node by node, instead of loading all.
                # That cluster is the Core's alone (each cycle works on a copy) and is
                # replaced here, so it is changed in place; if the shift fails, it is dropped.
                loaded, core.loaded = hit.cluster, None
                if not loaded.shift_running(changes):
                    loaded = None
            if loaded is None:
                loaded = core.base.copy()
                special = loaded.load_running(
                    run.pod_node, run.pod_gpus, run.pod_milli, run.pod_cpu, run.pod_mem, run.indices
                )
            else:
                special = {}
            # GPUs per (tier, team) in one step; CPU and memory are kept for training only.
            n = len(self.teams) + 1
            by = tiers * n + run.team
            gpus = np.bincount(by, weights=run.gpus, minlength=len(Tier) * n).reshape(len(Tier), n)
            train = tiers == Tier.TRAINING
            cpu = np.bincount(run.team[train], weights=run.cpu[train], minlength=n).astype(np.float64)
            mem = np.bincount(run.team[train], weights=run.mem[train], minlength=n).astype(np.float64)
            held = bool(gpus[Tier.SCAVENGER].max() > _EPS)
            hit = core.loaded = _Loaded(key, run, tiers, loaded, special, gpus, cpu, mem, held)
        run = self.rt = hit.run
        self.run_tier, self.special = hit.tiers, hit.special
        self.run_team = run.team
        self.run_gpus = run.gpus
        self.state = hit.cluster.copy()  # the cycle's own: the Core's stays as loaded
        # Training GPUs held per team, and (see _divide_training_capacity) the fair shares:
        # Python floats, as the passes read them one team at a time, far more often than whole.
        self.alloc: list[float] = hit.gpus[Tier.TRAINING].tolist()
        self.prod = hit.gpus[Tier.PRODUCTION].copy()
        self.scav = hit.gpus[Tier.SCAVENGER].copy()
        self._scav_held = hit.scav_held  # kept current where `scav` changes
        self.alloc_cpu = hit.cpu.copy()
        self.alloc_mem = hit.mem.copy()

    # What only preemption reads is worked out when it first does: most cycles never ask.

    @cached_property
    def _lost_and_old(self) -> tuple[np.ndarray, np.ndarray]:
        run = self.rt
        team_floor = np.array(
            [t.min_runtime_s or self.config.default_min_runtime_s for t in self.teams]
            + [self.config.default_min_runtime_s]
        )
        min_rt = np.where(np.isnan(run.min_runtime), team_floor[run.team], run.min_runtime)
        ran = np.maximum(0.0, self.now - np.minimum(run.start, self.now))
        progress = np.where(np.isnan(run.checkpoint), ran, np.fmod(ran, run.checkpoint))
        return run.gpus * progress, ran >= min_rt

    @property
    def run_cost(self) -> np.ndarray:
        """GPU-seconds each running gang loses if evicted now."""
        return self._lost_and_old[0]

    @property
    def run_old(self) -> np.ndarray:
        """Whether each running gang has run its minimum runtime."""
        return self._lost_and_old[1]

    @cached_property
    def run_alive(self) -> np.ndarray:
        """Whether each running gang may still be a victim. A gang that holds no GPU frees
        nothing a GPU gang can use: never a victim. Evictions clear it."""
        return self.rt.evictable & (self.rt.gpus > 0)

    @cached_property
    def run_pod_gang(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.rt.gangs)), np.diff(self.rt.offsets))

    @cached_property
    def run_pod_milli(self) -> np.ndarray:
        return self.rt.pod_gpus * 1000 + self.rt.pod_milli

    def _read_waiting(self) -> None:
        """Views of the waiting classes and singles: tier, request or problem, once per class."""
        self._requests: dict[tuple, GangRequest] = self.core.requests  # type: ignore[assignment]
        self._shapes: dict[tuple[int, int, int, int], Shape] = {}
        store = self.core.waiting
        classes = list(store.classes.values())
        singles = list(store.singles.values())
        n = len(self.teams) + 1
        index, sink, tier_of = self.team_index, self.sink, self._tier
        scav = self._scavenging.tolist()
        teams = [index.get(c.team, sink) for c in classes]
        tiers = [tier_of(c.priority, scav[t]) for c, t in zip(classes, teams, strict=True)]
        s_teams = [index.get(g.team, sink) for g, _ in singles]
        s_tiers = [tier_of(g.priority, scav[t]) for (g, _), t in zip(singles, s_teams, strict=True)]
        self.views: list[View] = []  # the classes', then the singles'
        self._classes = len(classes)
        # Summed in a Python list (an item update of a numpy array costs far more). What only
        # the team table and the scorer read (pending pods, the waiting mix) waits for them.
        demand_milli = [0] * n
        for c, t, tier in zip(classes, teams, tiers, strict=True):
            v = self._class_view(c, t, tier, scav[t])
            if v.problem is None and v.tier is Tier.TRAINING:
                demand_milli[t] += len(c) * c.milli
            self.views.append(v)
        for (gang, seq), t, tier in zip(singles, s_teams, s_tiers, strict=True):
            w = self._waiting(gang, t, tier, scav[t])
            if w.problem is None and w.tier is Tier.TRAINING:
                demand_milli[t] += sum(p.gpus * 1000 + p.gpu_milli for p in _pods_of(w))
            key = [(gang.submit_s, gang.id)]
            problem = w.problem
            self.views.append(
                View(
                    t,
                    w.tier,
                    w.gpus,
                    key,
                    [gang.id],
                    [gang],
                    [seq],
                    w.request,
                    None if problem is None else (lambda _g, p=problem: p),
                    w,
                )
            )
        self.waiting_demand_milli = np.array(demand_milli, dtype=np.int64)

    @cached_property
    def pending_pods(self) -> list[int]:
        """Pods waiting per team (and the sink)."""
        out = [0] * (len(self.teams) + 1)
        for v in self.views:
            out[v.team] += v.size * v.source.pods if v.source is not None else len(_pods_of(v.waiting))
        return out

    def _budget_blocked(self, t: int, tier: Tier, scavenging: bool) -> bool:
        """Over budget with `block` (or scavenging not possible): the team's work waits."""
        return bool(
            self.exhausted[t]
            and not scavenging
            and (tier is not Tier.PRODUCTION or self.config.budget_applies_to_production)
        )

    def _class_view(self, c: GangClass, t: int, tier: Tier, scavenging: bool) -> View:
        """What `_waiting` finds for each gang of the class, found once for all of them."""
        v = View(t, tier, c.gpus, c.keys, c.ids, c.gangs, c.seqs, source=c)
        if self._budget_blocked(t, tier, scavenging):
            text = reasons.budget_blocked(self.teams[t], self.budgets[t])
            v.problem = lambda g: Pending(g.id, "BudgetBlocked", text)
            return v
        # The rest depends on the class, the config and the nodes only: worked out once for
        # as long as the Core's request table (which lives as long as its node list).
        cached = c.request_cache
        if cached is None or cached[0] is not self._requests:
            cached = c.request_cache = (self._requests, *self._class_request(c))
        v.request, v.problem = cached[1], cached[2]
        return v

    def _class_request(self, c: GangClass) -> tuple[GangRequest | None, Callable[[Gang], Pending] | None]:
        """A class's shared request, or the problem that keeps its gangs from being tried."""
        cfg = self.config
        gang = c.sample
        widest = CLUSTER_LEVEL
        if gang.topology_required is not None or gang.topology_preferred is not None:
            for label in (gang.topology_required, gang.topology_preferred):
                if label is not None and cfg.level_index(label) is None:
                    return None, lambda g, label=label: Pending(
                        g.id, "Invalid", reasons.unknown_level(g, label, cfg)
                    )
            if gang.topology_required is not None:
                widest = cfg.level_index(gang.topology_required)  # type: ignore[assignment]
        biggest = c.biggest
        if biggest > self.max_node_gpus:
            largest = self.max_node_gpus

            def too_large(g: Gang) -> Pending:
                too_big = next(p for p in g.pods if p.gpus == biggest)
                return Pending(g.id, "TooLarge", reasons.too_large(too_big, largest))

            return None, too_large
        return self._shared_request(c.shape_objs, gang.gpu_models, widest), None

    def _waiting(self, gang: Gang, t: int, tier: Tier, scavenging: bool) -> _Waiting:
        cfg = self.config
        pods = gang.pods
        if len(pods) == 1:  # the common case, without the generic bookkeeping
            bound: tuple[Pod, ...] = ()
            pending = pods
        else:
            bound = gang.bound_pods
            pending = gang.pending_pods
        required = gang.required_members
        short = max(0, required - len(bound))
        need, extras = pending[:short], pending[short:]
        w = _Waiting(gang, t, tier, need, extras, sum(p.gpus + p.gpu_milli / 1000.0 for p in need))
        if t == self.sink:
            w.problem = Pending(gang.id, "NoTeam", reasons.no_team(gang))
            return w
        if len(gang.pods) < required:
            w.problem = Pending(gang.id, "GangIncomplete", reasons.incomplete(gang, required))
            return w
        team, budget = self.teams[t], self.budgets[t]
        if self._budget_blocked(t, tier, scavenging):
            w.problem = Pending(gang.id, "BudgetBlocked", reasons.budget_blocked(team, budget))
            return w
        widest = CLUSTER_LEVEL
        if gang.topology_required is not None or gang.topology_preferred is not None:
            for label in (gang.topology_required, gang.topology_preferred):
                if label is not None and cfg.level_index(label) is None:
                    w.problem = Pending(gang.id, "Invalid", reasons.unknown_level(gang, label, cfg))
                    return w
            if gang.topology_required is not None:
                widest = cfg.level_index(gang.topology_required)  # type: ignore[assignment]
        biggest = max(p.gpus for p in pods) if len(pods) > 1 else pods[0].gpus
        if biggest > self.max_node_gpus:
            too_big = next(p for p in pods if p.gpus == biggest)
            w.problem = Pending(gang.id, "TooLarge", reasons.too_large(too_big, self.max_node_gpus))
            return w
        pinned = None
        if bound and widest != CLUSTER_LEVEL:
            first = self.state.index.get(bound[0].node)  # type: ignore[arg-type]
            if first is not None:
                dom = self.state.domains[widest]
                pinned = dom == dom[first]
        shapes = tuple(self._shape(p) for p in need)
        if pinned is not None:
            w.request = GangRequest(
                shapes, self.state.model_mask(gang.gpu_models), widest, pinned, cfg.whole_node_gpus
            )
        else:
            w.request = self._shared_request(shapes, gang.gpu_models, widest)
        held = self._nominated_nodes(need)
        if held is not None:
            w.nominated = GangRequest(
                shapes,
                w.request.model_ok,
                widest,
                held if pinned is None else held & pinned,
                cfg.whole_node_gpus,
            )
        return w

    def _nominated_nodes(self, need: tuple[Pod, ...]) -> np.ndarray | None:
        """The nodes held for these pods, as a mask: None unless every one has a nomination
        to a node that is still in the cluster."""
        if not need or any(p.nominated_node is None for p in need):
            return None
        index = self.state.index
        nodes = [index.get(p.nominated_node) for p in need]  # type: ignore[arg-type]
        if None in nodes:
            return None
        mask = np.zeros(self.state.node_count, dtype=bool)
        mask[nodes] = True
        return mask

    def _shared_request(self, shapes: tuple[Shape, ...], models: frozenset[str], widest: int) -> GangRequest:
        """Many waiting gangs look alike: they share one request (and its node mask)."""
        key = (shapes, models, widest)
        request = self._requests.get(key)
        if request is None:
            request = GangRequest(
                shapes, self.state.model_mask(models), widest, None, self.config.whole_node_gpus
            )
            self._requests[key] = request
        return request

    def _shape(self, pod: Pod) -> Shape:
        key = (pod.gpus, pod.gpu_milli, pod.cpu_milli, pod.memory_mib)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = Shape(*key)
        return shape

    def _account(self, t: int, tier: Tier, gpus: float, sign: int, pods: tuple[Pod, ...]) -> None:
        if tier is Tier.PRODUCTION:
            self.prod[t] += sign * gpus
        elif tier is Tier.SCAVENGER:
            self.scav[t] += sign * gpus
            self._scav_held = bool(self.scav.max() > _EPS)
        else:
            self.alloc[t] += sign * gpus
            self.alloc_cpu[t] += sign * sum(p.cpu_milli for p in pods)
            self.alloc_mem[t] += sign * sum(p.memory_mib for p in pods)

    # ------------------------------------------------------------------ victims

    def _held(self, row: int) -> Held:
        special = self.special.get(row)
        if special is not None:
            return special
        run = self.rt
        return Held(
            int(run.pod_node[row]),
            (),
            0,
            int(run.pod_cpu[row]),
            int(run.pod_mem[row]),
            int(run.pod_gpus[row]),
        )

    def _victim(self, g: int) -> Victim:
        hit = self._victims.get(g)
        if hit is None:
            hit = self._victims[g] = self._make_victim(g)
        return hit

    def _make_victim(self, g: int) -> Victim:
        t = int(self.run_team[g])
        rows = self.rt.rows(g)
        return Victim(
            g,
            self.rt.gangs[g].id,
            self.teams[t].name if t != self.sink else "",
            Tier(int(self.run_tier[g])),
            float(self.run_gpus[g]),
            float(self.run_cost[g]),
            tuple(self._held(row) for row in rows),
            tuple(self.rt.pod_names[row] for row in rows),
            self.rt.pod_node[rows.start : rows.stop],
        )

    def _candidates(self, w: _Waiting, reclaim: bool) -> Candidates | None:
        alive, tier = self.run_alive, self.run_tier
        if w.tier is Tier.PRODUCTION:
            ok = alive & (tier < Tier.PRODUCTION)
            if self.config.production_honours_min_runtime:
                ok &= self.run_old
        elif w.tier is Tier.TRAINING:
            ok = alive & self.run_old & (tier == Tier.SCAVENGER)
            if reclaim:
                over = np.array(self.alloc) > np.array(self.share) + _EPS
                over[self.sink] = False
                ok |= (
                    alive
                    & self.run_old
                    & (tier == Tier.TRAINING)
                    & (self.run_team != w.team)
                    & over[self.run_team]
                )
        else:
            return None
        if not ok.any():
            return None
        pods = ok[self.run_pod_gang]
        return Candidates(
            tier,
            self.run_cost,
            self.rt.pod_node[pods],
            self.run_pod_gang[pods],
            self.run_pod_milli[pods],
            self._victim,
            self._acceptable(w),
            self.run_team,
            # What `_accept_for` lets a training gang take from each team: down to its share.
            np.maximum(np.array(self.alloc) - np.array(self.share), 0.0) if w.tier is Tier.TRAINING else None,
        )

    def _accept_for(self, w: _Waiting):
        if w.tier is Tier.PRODUCTION:
            return lambda taken, v: True

        def accept(taken: Mapping[str, float], v: Victim) -> bool:
            if v.tier is Tier.SCAVENGER:
                return True
            t = int(self.run_team[v.ref])
            return self.alloc[t] - taken.get(v.team, 0) - v.gpus >= self.share[t] - _EPS

        return accept

    def _acceptable(self, w: _Waiting) -> np.ndarray:
        """Per running gang: whether `_accept_for(w)` takes it when nothing else is chosen yet."""
        if w.tier is Tier.PRODUCTION:
            return np.ones(len(self.run_team), dtype=bool)
        alloc, share = np.array(self.alloc)[self.run_team], np.array(self.share)[self.run_team]
        return (self.run_tier == Tier.SCAVENGER) | (alloc - self.run_gpus >= share - _EPS)

    # ------------------------------------------------------------------ passes

    def run(self) -> Decisions:
        problems = [v for v in self.views if v.problem is not None]
        if problems and self.explain:
            self.out.pending.extend_lazy(problems_in_order(problems))
        ready = [v for v in self.views if v.problem is None]
        self._nominated_pass(self.views[self._classes :])  # a gang with a nomination is a single
        if self.policy.ordering == "fifo":
            self._fifo_pass(ready)
        else:
            by_tier: list[list[View]] = [[], [], []]  # indexed by Tier
            for v in ready:
                by_tier[v.tier].append(v)
            self._simple_pass(by_tier[Tier.PRODUCTION], preempt=True)
            self._divide_training_capacity()
            self._training_pass(by_tier[Tier.TRAINING])
            # Work that chose the scavenger tier goes before work demoted there by a budget.
            scavenging = self._scavenging
            self._simple_pass(by_tier[Tier.SCAVENGER], preempt=False, demoted=scavenging)
        self.core.carried_failures = (self.core.running.removals, tuple(self._start_failures))
        return Decisions(
            tuple(self.out.binds),
            tuple(self.out.evictions),
            self.out.pending.freeze(),  # type: ignore[arg-type]
            _TeamTable(self._team_status),
            dict(self.out.nominations),
        )

    @staticmethod
    def _member(v: View, i: int) -> _Waiting:
        """The i-th gang of a view, as the passes handle it."""
        if v.waiting is not None:
            return v.waiting
        gang = v.gangs[i]
        return _Waiting(gang, v.team, v.tier, gang.pods, (), v.gpus, v.request)

    def _doomed(self, v: View, preempt: bool, reclaim: bool) -> bool:
        """Whether trying a gang of `v` now can only fail, changing nothing: its request
        found no room since the last eviction, and it may not, or already failed to,
        preempt. Binds only take room away, so this holds until the next eviction."""
        if v.waiting is not None or self._failed.get(id(v.request)) != self._releases:
            return False
        if not (preempt and self._may_preempt) or self._preemptors >= self._max_preemptors:
            return True
        if self._nothing_to_take(v.tier, reclaim):
            return True
        key = (v.tier, v.team if v.tier is Tier.TRAINING else -1, reclaim, id(v.request))
        return self._no_victims.get(key) == self._releases

    def _nothing_to_take(self, tier: Tier, reclaim: bool) -> bool:
        """A training gang that may not reclaim can take only scavenger work: with none
        running (the usual case on a busy cluster without it), a search finds nothing."""
        return tier is Tier.TRAINING and not reclaim and not self._scav_held

    def _waits_why(self, v: View) -> tuple[str, str]:
        """The reason a doomed gang of `v` gets (what `_schedule` would say)."""
        code, text = self._diagnose(v.request)
        return code, self._with_context(_Waiting(v.gangs[0], v.team, v.tier, (), (), v.gpus), text)

    def _nominated_pass(self, singles: list[View]) -> None:
        """Gangs an earlier cycle preempted for bind first, on the nodes their victims left.
        The lost work bought that room: were the gang to wait its turn again, a gang earlier
        in this cycle's order (often a victim, restarting) would take the room, and the
        preemptor would evict again. Production first, then priority and age; a training
        gang still stays within its team's maxGPUs, and one whose team has since run out of
        budget (now scavenger work) waits with the other scavenger work."""
        held = [
            v
            for v in singles
            if v.problem is None and v.waiting.nominated is not None and v.tier is not Tier.SCAVENGER
        ]
        if not held:
            return
        held.sort(key=lambda v: (-int(v.tier), -v.gangs[0].priority, v.keys[0]))
        for v in held:
            w = v.waiting
            if w.tier is Tier.TRAINING and self._over_cap(w.team, w.gpus):
                continue
            placed = place_gang(self.state, self.cache, w.nominated)
            self.state.commit()
            if placed is not None:
                self._bind(w, placed)
                v.cursor = v.size  # bound: no pass looks at it again

    def _over_cap(self, t: int, gpus: float) -> bool:
        """Whether `gpus` more training GPUs would take team `t` over its maxGPUs."""
        cap = self._caps[t]
        return cap is not None and self.alloc[t] + gpus > cap + _EPS

    def _simple_pass(self, queue: list[View], preempt: bool, demoted: np.ndarray | None = None) -> None:
        """Priority then age; gangs of `demoted` teams (over budget) after all others."""
        if not queue:
            return
        last = demoted if demoted is not None else np.zeros(len(self.teams) + 1, dtype=bool)
        lane = Lane(queue, lambda v: (bool(last[v.team]), -v.gangs[0].priority))
        while lane:
            if self._doomed(lane.head(), preempt, False):
                runs = lane.skip(lambda v: not self._doomed(v, preempt, False), head_passes=True)
                self._passed_over(runs, self._waits_why)
                continue
            v, i = lane.pop()
            self._schedule(self._member(v, i), preempt=preempt, reclaim=False)

    def _fifo_pass(self, queue: list[View]) -> None:
        lane = Lane(queue, lambda v: ())
        while lane:
            v, i = lane.pop()
            w = self._member(v, i)
            if not self._schedule(w, preempt=False, reclaim=False):
                behind = ("QueuedBehind", reasons.behind(w.gang))
                self._passed_over(lane.rest(), lambda _v, b=behind: b)

    def _training_pass(self, queue: list[View]) -> None:
        by_team: dict[int, list[View]] = {}
        for v in queue:
            by_team.setdefault(v.team, []).append(v)
        queues = {}
        for t, views in by_team.items():
            lane = Lane(views, _by_priority)
            if lane:
                queues[t] = lane
        dominant = self.policy.ordering == "dominant-share"
        totals = (
            (
                max(self.state.healthy_gpus(), 1),
                max(float(self.state.cpu_free.clip(min=0).sum() + self.alloc_cpu.sum()), 1.0),
                max(float(self.state.mem_free.clip(min=0).sum() + self.alloc_mem.sum()), 1.0),
            )
            if dominant
            else (1, 1.0, 1.0)
        )
        reclaim_on = self.policy.reclaim and self.config.reclaim_enabled
        reclaim_after = self.config.reclaim_after_s
        reclaim_threshold = self.config.reclaim_threshold

        def key(t: int) -> tuple:
            if dominant:
                return (self._dominant(t, totals), self.teams[t].name)
            return self._fair_key(t, queues[t].head().gpus)

        def below(t: int, gpus: float) -> bool:
            return self.alloc[t] + gpus <= self.share[t] + _EPS

        def waited(submit_s: float) -> bool:
            # A gang below its share reclaims only once it has waited `reclaimAfter`: room
            # that completions free meanwhile costs nobody their work.
            return self.now - submit_s >= reclaim_after - _EPS

        def well_below(t: int) -> bool:
            # Reclaim only while well below the share (`reclaimThreshold`): a team that
            # hovers near its share as its jobs end and start waits for the GPUs that free
            # up, rather than evicting work that would restart at once elsewhere.
            return self.alloc[t] < reclaim_threshold * self.share[t] - _EPS or reclaim_threshold >= 1

        def may_reclaim(t: int, gpus: float, submit_s: float) -> bool:
            return reclaim_on and below(t, gpus) and well_below(t) and waited(submit_s)

        def doomed(t: int, v: View) -> bool:
            if v.waiting is not None:
                return False
            if self._over_cap(t, v.gpus):
                return True
            if self._failed.get(id(v.request)) != self._releases:
                return False  # its request may still fit: worth a try (checked first: cheapest)
            # The view's gangs wait in submit order, so a head too young to reclaim has
            # only younger gangs behind it.
            return self._doomed(v, True, may_reclaim(t, v.gpus, v.keys[v.cursor][0]))

        def held_back(t: int, gpus: float, submit_s: float) -> Callable[[str], str] | None:
            """Below its share, yet not reclaiming (too close to the share, or too young):
            worth saying, as the words to add to the reason."""
            if not (reclaim_on and below(t, gpus)):
                return None
            if not well_below(t):
                return lambda text: reasons.reclaim_held(text, reclaim_threshold)
            if not waited(submit_s):
                return lambda text: reasons.reclaim_deferred(text, reclaim_after)
            return None

        def why(v: View) -> tuple[str, str]:
            t = v.team
            if self._over_cap(t, v.gpus):
                return "OverMaxGPUs", reasons.over_cap(self.teams[t], self.alloc[t], v.gpus)
            code, text = self._waits_why(v)
            note = held_back(t, v.gpus, v.keys[-1][0])  # the view's youngest gang
            return code, text if note is None else note(text)

        # Teams in a heap by how much they deserve the next GPUs. Only the team that was
        # served changes its key, except when evictions lower other teams' holdings:
        # then the heap is rebuilt.
        heap = [(key(t), t) for t in queues]
        heapq.heapify(heap)
        while heap:
            _, t = heapq.heappop(heap)
            lane = queues[t]
            evicted_before = self._releases
            head = lane.head()
            if doomed(t, head):
                # Nothing changes while gangs fail, so this team stays first until a gang
                # that may succeed, or (when it came first by being below its share) a
                # gang that would take it above: pass over all before that in one step.
                # (The head is doomed, and below its share where that is asked: it passes.)
                if not dominant and below(t, head.gpus):
                    stops = lambda v, t=t: not doomed(t, v) or not below(t, v.gpus)  # noqa: E731
                else:
                    stops = lambda v, t=t: not doomed(t, v)  # noqa: E731
                runs = lane.skip(stops, head_passes=True)
                self._passed_over(runs, why)
            else:
                v, i = lane.pop()
                w = self._member(v, i)
                if self._over_cap(t, w.gpus):
                    text = reasons.over_cap(self.teams[t], self.alloc[t], w.gpus)
                    self.out.pending.append(Pending(w.gang.id, "OverMaxGPUs", text))
                else:
                    submit = w.gang.submit_s
                    note = held_back(t, w.gpus, submit) if self.explain else None  # words only
                    self._schedule(w, preempt=True, reclaim=may_reclaim(t, w.gpus, submit), note=note)
            if not lane:
                del queues[t]
            if self._releases != evicted_before:
                heap = [(key(u), u) for u in queues]
                heapq.heapify(heap)
            elif t in queues:
                heapq.heappush(heap, (key(t), t))

    def _fair_key(self, t: int, head_gpus: float) -> tuple:
        share = self.share[t]
        below = self.alloc[t] + head_gpus <= share + _EPS
        ratio = self.alloc[t] / share if share > _EPS else math.inf
        return (0 if below else 1, -self.factor[t], ratio, self.teams[t].name)

    def _dominant(self, t: int, totals: tuple[float, float, float]) -> float:
        d = max(self.alloc[t] / totals[0], self.alloc_cpu[t] / totals[1], self.alloc_mem[t] / totals[2])
        return d / self.teams[t].weight

    # ------------------------------------------------------------------ one gang

    def _schedule(
        self, w: _Waiting, preempt: bool, reclaim: bool, note: Callable[[str], str] | None = None
    ) -> bool:
        """Try to place `w`; if it cannot, maybe preempt for it. True when it was bound.
        `note`: adds to the reason why the gang does not reclaim (see `_training_pass`)."""
        assert w.request is not None
        if not w.need:  # minMember already running: only extras, each as room allows
            self._bind(w, Placement((), CLUSTER_LEVEL))
            return True
        placed = self._try_place(w.request)
        if placed is not None:
            self._bind(w, placed)
            return True
        if preempt and self._may_preempt and self._preempt_for(w, reclaim):
            return False
        if not self.explain:
            return False
        code, text = self._diagnose(w.request)
        text = self._with_context(w, text)
        if note is not None:
            text = note(text)
        self.out.pending.append(Pending(w.gang.id, code, text))
        return False

    def _try_place(self, req: GangRequest) -> Placement | None:
        key = None
        if req.pinned is None:
            key = id(req)  # unpinned requests are shared by every look-alike gang
            if self._failed.get(key) == self._releases:
                return None
        placed = place_gang(self.state, self.cache, req)
        self.state.commit()
        if placed is None and key is not None:
            self._failed[key] = self._releases
            if self._releases == 0 and not self.out.binds and len(req.counts) == 1:
                self._start_failures.append(req)
        return placed

    def _bind(self, w: _Waiting, placed: Placement) -> None:
        names = self.state.names
        for pod, held in zip(w.need, placed.held, strict=True):
            self.out.binds.append(Bind(pod.name, w.gang.id, names[held.node], held.slots, w.tier))
        self._account(w.team, w.tier, w.gpus, +1, w.need)
        if not w.extras:
            return
        assert w.request is not None
        pinned = w.request.pinned
        if w.request.widest_level != CLUSTER_LEVEL and placed.held:
            dom = self.state.domains[w.request.widest_level]
            pinned = dom == dom[placed.held[0].node]
        left = 0
        for pod in w.extras:
            one = GangRequest(
                (self._shape(pod),),
                w.request.model_ok,
                w.request.widest_level,
                pinned,
                w.request.whole_node_gpus,
            )
            got = place_gang(self.state, self.cache, one)
            self.state.commit()
            if got is None:
                left += 1
                continue
            self.out.binds.append(
                Bind(pod.name, w.gang.id, names[got.held[0].node], got.held[0].slots, w.tier)
            )
            self._account(w.team, w.tier, pod.gpu_amount, +1, (pod,))
        if left:
            self.out.pending.append(Pending(w.gang.id, "ExtrasWaiting", reasons.extras_waiting(w.gang, left)))

    def _preempt_for(self, w: _Waiting, reclaim: bool) -> bool:
        if self._preemptors >= self._max_preemptors:
            return False
        if self._nothing_to_take(w.tier, reclaim):
            return False
        assert w.request is not None
        # Gangs of one team and shape fare alike: after one found no victims, the rest
        # of the cycle does not search again until something is freed.
        key = (w.tier, w.team if w.tier is Tier.TRAINING else -1, reclaim, id(w.request))
        if self._no_victims.get(key) == self._releases:
            return False
        cand = self._candidates(w, reclaim)
        if cand is None or not self._could_free_enough(w, cand):
            self._no_victims[key] = self._releases
            return False
        plan = plan_preemption(
            self.state,
            self.cache,
            w.request,
            cand,
            self._accept_for(w),
            self.config.preemption_candidate_domains,
        )
        self.state.commit()
        if plan is None:
            self._no_victims[key] = self._releases
            return False
        self._preemptors += 1
        self._evict(w, plan)
        # Hold the freed room for this gang; it binds once the victims are gone.
        placed = place_gang(self.state, self.cache, w.request)
        self.state.commit()
        if placed is not None:
            names = self.state.names
            for pod, held in zip(w.need, placed.held, strict=True):
                self.out.nominations[pod.name] = names[held.node]
            self._account(w.team, w.tier, w.gpus, +1, w.need)
        if self.explain:
            text = self._with_context(w, reasons.preempting(plan))
            self.out.pending.append(Pending(w.gang.id, "Preempting", text))
        return True

    def _could_free_enough(self, w: _Waiting, cand: Candidates) -> bool:
        """A cheap upper bound: free GPUs plus all a reclaim may take, against the need."""
        free = float(self.state.total_free[self.state.schedulable].sum()) / 1000.0
        if w.tier is Tier.PRODUCTION:
            takeable = float(cand.pod_milli.sum()) / 1000.0
        else:
            scav = cand.tier[cand.pod_gang] == Tier.SCAVENGER
            takeable = float(cand.pod_milli[scav].sum()) / 1000.0
            assert cand.slack is not None  # a training gang's candidates carry the teams' slack
            slack = cand.slack.copy()
            slack[[w.team, self.sink]] = 0.0
            if free + takeable + float(slack.sum()) < w.gpus - _EPS:
                return False
            # Tighter: a training victim is accepted only while its team stays at or above
            # its share, so one larger than its team's slack is never taken, and no team
            # gives more than its slack (see _accept_for).
            gangs = np.flatnonzero(np.bincount(cand.pod_gang[~scav]))  # as np.unique, counted not sorted
            if gangs.size:
                team, gpus = self.run_team[gangs], self.run_gpus[gangs]
                alone = gpus <= slack[team] + _EPS
                most = np.bincount(team[alone], weights=gpus[alone], minlength=len(self.teams) + 1)
                takeable += float(np.minimum(slack + _EPS, most).sum())
        return free + takeable >= w.gpus - _EPS

    def _evict(self, w: _Waiting, plan: Plan) -> None:
        if w.tier is Tier.PRODUCTION:
            kind = "production"
        elif all(v.tier is Tier.SCAVENGER for v in plan.victims):
            kind = "scavenger"
        else:
            kind = "reclaim"
        for v in plan.victims:
            g = v.ref
            self.run_alive[g] = False
            for h in v.held:
                self.state.release(h)
            t = int(self.run_team[g])
            if v.tier is Tier.PRODUCTION:
                self.prod[t] -= v.gpus
            elif v.tier is Tier.SCAVENGER:
                self.scav[t] -= v.gpus
                self._scav_held = bool(self.scav.max() > _EPS)
            else:
                self.alloc[t] -= v.gpus
                self.alloc_cpu[t] -= self.rt.cpu[g]
                self.alloc_mem[t] -= self.rt.mem[g]
            why = reasons.evicted(v, w.gang, w.tier, kind)
            for pod, h in zip(v.pods, v.held, strict=True):
                self.out.evictions.append(
                    Eviction(pod, v.gang, self.state.names[h.node], w.gang.id, kind, why, v.tier, w.tier)
                )
        self.state.commit()
        self._releases += 1

    # ------------------------------------------------------------------ explaining

    def _passed_over(self, runs: list[tuple[View, int, int]], why: Callable[[View], tuple[str, str]]) -> None:
        """Runs of gangs the pass went over in one step: each with its reason, when explaining."""
        if self.explain:
            self.out.pending.extend_lazy(merged_run(runs, why))

    def _diagnose(self, req: GangRequest) -> tuple[str, str]:
        key = (id(req), self._releases, len(self.out.binds))
        hit = self._diagnosed.get(key)
        if hit is None:
            hit = reasons.diagnose(self.state, self.cache, req)
            self._diagnosed[key] = hit
        return hit

    def _with_context(self, w: _Waiting, text: str) -> str:
        if w.tier is not Tier.TRAINING or w.team == self.sink:
            return text
        key = (text, w.team, float(self.alloc[w.team]), float(self.share[w.team]))
        hit = self._contexts.get(key)
        if hit is None:
            hit = reasons.with_share(text, self.teams[w.team].name, key[2], key[3], self.idle[w.team])
            self._contexts[key] = hit
        return hit

    def _team_status(self) -> dict[str, TeamStatus]:
        out = {}
        # Python floats in one step each (reading numpy arrays item by item is slow).
        share, alloc, prod = self.share, self.alloc, self.prod.tolist()
        scav, demand, pods = self.scav.tolist(), self.demand.tolist(), self.pending_pods
        for t, team in enumerate(self.teams):
            b = self.budgets[t]
            out[team.name] = TeamStatus(
                team=team.name,
                weight=team.weight,
                fair_share_gpus=share[t],
                allocated_gpus=alloc[t],
                production_gpus=prod[t],
                scavenger_gpus=scav[t],
                demand_gpus=demand[t],
                pending_pods=pods[t],
                fairshare_factor=float(self.factor[t]),
                budget_gpu_hours=b.limit_gpu_hours,
                budget_used_gpu_hours=b.used_gpu_hours,
                budget_left_gpu_hours=b.left_gpu_hours,
                budget_exhausted=b.exhausted,
                budget_resets_s=b.resets_s,
                idle_gpus=self.idle[t],
            )
        return out
