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
from dataclasses import dataclass, field

import numpy as np

from scheduler.core import reasons
from scheduler.core.budget import BudgetState, budget_state
from scheduler.core.cluster import ClusterState, Held, Shape
from scheduler.core.config import PolicyConfig
from scheduler.core.fairshare import fairshare_factors, water_fill
from scheduler.core.intake import read_running
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
from scheduler.core.policies import Policy, get_policy
from scheduler.core.preemption import Candidates, Plan, Victim, plan_preemption
from scheduler.core.scoring import SCORERS, Fragmentation, ShapeCache, WorkloadMix
from scheduler.core.tiers import effective_tiers

_EPS = 1e-6


def decide(
    snapshot: Snapshot, config: PolicyConfig | None = None, policy: str | Policy = "gpufair"
) -> Decisions:
    """Run one decision cycle. Same snapshot, config and policy: same decisions."""
    return _Cycle(snapshot, config or PolicyConfig(), get_policy(policy)).run()


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


@dataclass(slots=True)
class _Outcome:
    binds: list[Bind] = field(default_factory=list)
    evictions: list[Eviction] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    nominations: dict[str, str] = field(default_factory=dict)


class _Cycle:
    def __init__(self, snap: Snapshot, config: PolicyConfig, policy: Policy) -> None:
        self.snap = snap
        self.config = config
        self.policy = policy
        self.now = snap.now_s
        self.teams = list(snap.teams)
        self.team_index = {t.name: i for i, t in enumerate(self.teams)}
        n_teams = len(self.teams)
        self.sink = n_teams  # per-team arrays have one more slot, for gangs without a team
        usage = [snap.usage.get(t.name, TeamUsage()) for t in self.teams]
        self.budgets: list[BudgetState] = [
            budget_state(t.budget, u, self.now) for t, u in zip(self.teams, usage, strict=True)
        ]
        self.state = ClusterState(snap.nodes, config)
        self.max_node_gpus = int(self.state.usable.max()) if self.state.node_count else 0
        self.out = _Outcome()
        self._read_running()
        self._read_waiting()
        self.demand = self._team_sum(self.run_gpus, self.run_tier == Tier.TRAINING)
        for w in self.waiting:
            if w.problem is None and w.tier is Tier.TRAINING:
                self.demand[w.team] += w.gpus + sum(p.gpu_amount for p in w.extras)
        self.share = np.zeros(n_teams + 1)
        self._divide_training_capacity()
        decayed = [u.decayed_gpu_seconds for u in usage]
        self.factor = (
            fairshare_factors([t.weight for t in self.teams], decayed)
            if policy.history and self.teams
            else [1.0] * n_teams
        )
        scorer_cls = SCORERS[policy.scorer]
        scorer = (
            Fragmentation(self._workload_mix(), config.fragmentation_objective)
            if scorer_cls is Fragmentation
            else scorer_cls()
        )
        self.cache = ShapeCache(self.state, scorer)
        self._failed: dict[tuple, int] = {}
        self._releases = 0
        self._preemptors = 0
        self._no_victims: dict[tuple, int] = {}
        self._diagnosed: dict[tuple, tuple[str, str]] = {}
        self._contexts: dict[tuple, str] = {}
        self._victims: dict[int, Victim] = {}

    def _divide_training_capacity(self) -> None:
        """Fair shares of what production leaves: what it holds now, not what it waits for,
        so a production gang that cannot start takes nothing from the training teams."""
        n = len(self.teams)
        capacity = max(0.0, self.state.healthy_gpus() - float(self.prod.sum()))
        self.share[:n] = water_fill(
            capacity,
            [t.weight for t in self.teams],
            list(self.demand[:n]),
            [t.guaranteed_gpus for t in self.teams],
            [t.max_gpus for t in self.teams],
        )

    # ------------------------------------------------------------------ reading

    def _scavenging(self) -> np.ndarray:
        """Per team (and the sink): over budget with onExhausted: scavenge."""
        out = np.zeros(len(self.teams) + 1, dtype=bool)
        if not self.policy.budgets:
            return out
        for t, (team, b) in enumerate(zip(self.teams, self.budgets, strict=True)):
            out[t] = (
                b.exhausted and team.budget is not None and (team.budget.on_exhausted is OnExhausted.SCAVENGE)
            )
        return out

    def _tiers(self, priorities: np.ndarray, teams: np.ndarray) -> np.ndarray:
        if not self.policy.tiers:
            return np.full(priorities.shape, int(Tier.TRAINING))
        return effective_tiers(priorities, self._scavenging()[teams], self.config)

    def _team_sum(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(self.run_team[mask], weights=values[mask], minlength=len(self.teams) + 1).astype(
            np.float64
        )

    def _read_running(self) -> None:
        run, self.waiting_gangs = read_running(
            self.snap.gangs, self.team_index, self.sink, self.state.index, self.now
        )
        self.rt = run
        self.run_team = run.team
        self.run_tier = self._tiers(run.priority, run.team)
        self.run_gpus = run.gpus
        self.special = self.state.load_running(
            run.pod_node, run.pod_gpus, run.pod_milli, run.pod_cpu, run.pod_mem, run.indices
        )
        train = self.run_tier == Tier.TRAINING
        self.alloc = self._team_sum(run.gpus, train)  # training GPUs held
        self.alloc_cpu = self._team_sum(run.cpu, train)
        self.alloc_mem = self._team_sum(run.mem, train)
        self.prod = self._team_sum(run.gpus, self.run_tier == Tier.PRODUCTION)
        self.scav = self._team_sum(run.gpus, self.run_tier == Tier.SCAVENGER)
        team_floor = np.array(
            [t.min_runtime_s or self.config.default_min_runtime_s for t in self.teams]
            + [self.config.default_min_runtime_s]
        )
        min_rt = np.where(np.isnan(run.min_runtime), team_floor[run.team], run.min_runtime)
        ran = np.maximum(0.0, self.now - run.start)
        progress = np.where(np.isnan(run.checkpoint), ran, np.fmod(ran, run.checkpoint))
        self.run_cost = run.gpus * progress  # GPU-seconds lost if evicted now
        self.run_old = ran >= min_rt
        # A gang that holds no GPU frees nothing a GPU gang can use: never a victim.
        self.run_alive = run.evictable & (run.gpus > 0)
        self.run_pod_gang = np.repeat(np.arange(len(run.gangs)), np.diff(run.offsets))
        self.run_pod_milli = run.pod_gpus * 1000 + run.pod_milli

    def _read_waiting(self) -> None:
        self._requests: dict[tuple, GangRequest] = {}
        self._shapes: dict[tuple[int, int, int, int], Shape] = {}
        gangs = [g for _, g in self.waiting_gangs]
        teams = np.fromiter(
            (self.team_index.get(g.team, self.sink) for g in gangs),
            dtype=np.int64,
            count=len(gangs),
        )
        prios = np.fromiter((g.priority for g in gangs), dtype=np.int64, count=len(gangs))
        tiers = self._tiers(prios, teams)
        scav = self._scavenging()
        self.waiting = []
        self.pending_pods = np.zeros(len(self.teams) + 1, dtype=np.int64)
        for gang, t, tier in zip(gangs, teams.tolist(), tiers.tolist(), strict=True):
            w = self._waiting(gang, t, Tier(tier), bool(scav[t]))
            self.pending_pods[t] += len(w.need) + len(w.extras)
            self.waiting.append(w)

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
        blocked = (
            self.policy.budgets
            and budget.exhausted
            and not scavenging
            and (tier is not Tier.PRODUCTION or cfg.budget_applies_to_production)
        )
        if blocked:
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
            return w
        # Many waiting gangs look alike: share one request (and its mask) between them.
        key = (shapes, gang.gpu_models, widest)
        w.request = self._requests.get(key)
        if w.request is None:
            w.request = GangRequest(
                shapes, self.state.model_mask(gang.gpu_models), widest, None, cfg.whole_node_gpus
            )
            self._requests[key] = w.request
        return w

    def _shape(self, pod: Pod) -> Shape:
        key = (pod.gpus, pod.gpu_milli, pod.cpu_milli, pod.memory_mib)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = Shape(*key)
        return shape

    def _workload_mix(self) -> WorkloadMix:
        """Pod types (GPUs, share, CPU, memory) of the waiting and running pods, counted."""
        shapes: Counter[tuple[int, int, int, int]] = Counter()
        # Scavenger work is left out: it must not steer where in-budget work goes.
        for w in self.waiting:
            if w.tier is Tier.SCAVENGER:
                continue
            for p in (*w.need, *w.extras):
                shapes[(p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib)] += 1
        rt = self.rt
        gpu_rows = np.nonzero((rt.pod_gpus > 0) | (rt.pod_milli > 0))[0]
        if gpu_rows.size:
            # Each column to small codes, then one 1-D unique over the combined code.
            cols = (rt.pod_gpus * 1000 + rt.pod_milli, rt.pod_cpu, rt.pod_mem)
            uniq, codes = zip(*(np.unique(c[gpu_rows], return_inverse=True) for c in cols), strict=True)
            key = (codes[0] * len(uniq[1]) + codes[1]) * len(uniq[2]) + codes[2]
            keys, counts = np.unique(key, return_counts=True)
            for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
                rest, m = divmod(k, len(uniq[2]))
                g, cpu = divmod(rest, len(uniq[1]))
                gpus, milli = divmod(int(uniq[0][g]), 1000)
                shapes[(gpus, milli, int(uniq[1][cpu]), int(uniq[2][m]))] += c
        return WorkloadMix.from_counts(shapes, self.config.workload_types)

    def _account(self, t: int, tier: Tier, gpus: float, sign: int, pods: tuple[Pod, ...]) -> None:
        if tier is Tier.PRODUCTION:
            self.prod[t] += sign * gpus
        elif tier is Tier.SCAVENGER:
            self.scav[t] += sign * gpus
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
                over = self.alloc > self.share + _EPS
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
        )

    def _accept_for(self, w: _Waiting):
        if w.tier is Tier.PRODUCTION:
            return lambda chosen, v: True

        def accept(chosen: list[Victim], v: Victim) -> bool:
            if v.tier is Tier.SCAVENGER:
                return True
            t = int(self.run_team[v.ref])
            taken = sum(c.gpus for c in chosen if c.team == v.team and c.tier is Tier.TRAINING)
            return self.alloc[t] - taken - v.gpus >= self.share[t] - _EPS

        return accept

    # ------------------------------------------------------------------ passes

    def run(self) -> Decisions:
        for w in self.waiting:
            if w.problem is not None:
                self.out.pending.append(w.problem)
        ready = [w for w in self.waiting if w.problem is None]
        if self.policy.ordering == "fifo":
            self._fifo_pass(ready)
        else:
            by_tier = {tier: [w for w in ready if w.tier is tier] for tier in Tier}
            self._simple_pass(by_tier[Tier.PRODUCTION], preempt=True)
            self._divide_training_capacity()
            self._training_pass(by_tier[Tier.TRAINING])
            # Work that chose the scavenger tier goes before work demoted there by a budget.
            scavenging = self._scavenging()
            self._simple_pass(by_tier[Tier.SCAVENGER], preempt=False, demoted=scavenging)
        return Decisions(
            tuple(self.out.binds),
            tuple(self.out.evictions),
            tuple(self.out.pending),
            self._team_status(),
            dict(self.out.nominations),
        )

    @staticmethod
    def _queue_key(w: _Waiting) -> tuple:
        return (-w.gang.priority, w.gang.submit_s, w.gang.id)

    def _simple_pass(self, queue: list[_Waiting], preempt: bool, demoted: np.ndarray | None = None) -> None:
        """Priority then age; gangs of `demoted` teams (over budget) after all others."""
        last = demoted if demoted is not None else np.zeros(len(self.teams) + 1, dtype=bool)
        for w in sorted(queue, key=lambda w: (bool(last[w.team]), *self._queue_key(w))):
            self._schedule(w, preempt=preempt, reclaim=False)

    def _fifo_pass(self, queue: list[_Waiting]) -> None:
        blocker: _Waiting | None = None
        for w in sorted(queue, key=lambda w: (w.gang.submit_s, w.gang.id)):
            if blocker is not None:
                self.out.pending.append(Pending(w.gang.id, "QueuedBehind", reasons.behind(blocker.gang)))
                continue
            if not self._schedule(w, preempt=False, reclaim=False):
                blocker = w

    def _training_pass(self, queue: list[_Waiting]) -> None:
        queues: dict[int, list[_Waiting]] = {}
        for w in sorted(queue, key=self._queue_key, reverse=True):
            queues.setdefault(w.team, []).append(w)  # reversed: pop() takes the head
        dominant = self.policy.ordering == "dominant-share"
        totals = (
            max(self.state.healthy_gpus(), 1),
            max(float(self.state.cpu_free.clip(min=0).sum() + self.alloc_cpu.sum()), 1.0),
            max(float(self.state.mem_free.clip(min=0).sum() + self.alloc_mem.sum()), 1.0),
        )

        def key(t: int) -> tuple:
            if dominant:
                return (self._dominant(t, totals), self.teams[t].name)
            return self._fair_key(t, queues[t][-1])

        # Teams in a heap by how much they deserve the next GPUs. Only the team that was
        # served changes its key, except when evictions lower other teams' holdings:
        # then the heap is rebuilt.
        heap = [(key(t), t) for t in queues]
        heapq.heapify(heap)
        while heap:
            _, t = heapq.heappop(heap)
            w = queues[t].pop()
            evicted_before = self._releases
            cap = self.teams[t].max_gpus
            if cap is not None and self.alloc[t] + w.gpus > cap + _EPS:
                self.out.pending.append(
                    Pending(
                        w.gang.id,
                        "OverMaxGPUs",
                        reasons.over_cap(self.teams[t], self.alloc[t], w.gpus),
                    )
                )
            else:
                under = self.alloc[t] + w.gpus <= self.share[t] + _EPS
                self._schedule(
                    w,
                    preempt=True,
                    reclaim=under and self.policy.reclaim and self.config.reclaim_enabled,
                )
            if not queues[t]:
                del queues[t]
            if self._releases != evicted_before:
                heap = [(key(u), u) for u in queues]
                heapq.heapify(heap)
            elif t in queues:
                heapq.heappush(heap, (key(t), t))

    def _fair_key(self, t: int, head: _Waiting) -> tuple:
        share = self.share[t]
        below = self.alloc[t] + head.gpus <= share + _EPS
        ratio = self.alloc[t] / share if share > _EPS else math.inf
        return (0 if below else 1, -self.factor[t], ratio, self.teams[t].name)

    def _dominant(self, t: int, totals: tuple[float, float, float]) -> float:
        d = max(self.alloc[t] / totals[0], self.alloc_cpu[t] / totals[1], self.alloc_mem[t] / totals[2])
        return d / self.teams[t].weight

    # ------------------------------------------------------------------ one gang

    def _schedule(self, w: _Waiting, preempt: bool, reclaim: bool) -> bool:
        """Try to place `w`; if it cannot, maybe preempt for it. True when it was bound."""
        assert w.request is not None
        if not w.need:  # minMember already running: only extras, each as room allows
            self._bind(w, Placement((), CLUSTER_LEVEL))
            return True
        placed = self._try_place(w.request)
        if placed is not None:
            self._bind(w, placed)
            return True
        may_preempt = preempt and self.policy.preemption and self.config.preemption_enabled
        if may_preempt and self._preempt_for(w, reclaim):
            return False
        code, text = self._diagnose(w.request)
        self.out.pending.append(Pending(w.gang.id, code, self._with_context(w, text)))
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
        if self._preemptors >= self.config.max_preemptors_per_cycle:
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
        self.out.pending.append(
            Pending(w.gang.id, "Preempting", self._with_context(w, reasons.preempting(plan)))
        )
        return True

    def _could_free_enough(self, w: _Waiting, cand: Candidates) -> bool:
        """A cheap upper bound: free GPUs plus all a reclaim may take, against the need."""
        free = float(self.state.total_free[self.state.schedulable].sum()) / 1000.0
        if w.tier is Tier.PRODUCTION:
            takeable = float(cand.pod_milli.sum()) / 1000.0
        else:
            scav = cand.tier[cand.pod_gang] == Tier.SCAVENGER
            takeable = float(cand.pod_milli[scav].sum()) / 1000.0
            slack = np.maximum(self.alloc - self.share, 0.0)
            slack[[w.team, self.sink]] = 0.0
            takeable += float(slack.sum())
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
            hit = reasons.with_share(text, self.teams[w.team].name, key[2], key[3])
            self._contexts[key] = hit
        return hit

    def _team_status(self) -> dict[str, TeamStatus]:
        out = {}
        for t, team in enumerate(self.teams):
            b = self.budgets[t]
            out[team.name] = TeamStatus(
                team=team.name,
                weight=team.weight,
                fair_share_gpus=float(self.share[t]),
                allocated_gpus=float(self.alloc[t]),
                production_gpus=float(self.prod[t]),
                scavenger_gpus=float(self.scav[t]),
                demand_gpus=float(self.demand[t]),
                pending_pods=int(self.pending_pods[t]),
                fairshare_factor=float(self.factor[t]),
                budget_gpu_hours=b.limit_gpu_hours,
                budget_used_gpu_hours=b.used_gpu_hours,
                budget_left_gpu_hours=b.left_gpu_hours,
                budget_exhausted=b.exhausted,
                budget_resets_s=b.resets_s,
            )
        return out
