"""One decision cycle: a snapshot in, decisions out, nothing else touched.

The cycle reads the Core's input (reading.py), runs the policy's passes in order
(passes.py: by default nominated gangs, production, training, scavenger) and hands back
what they decided. A pass tries one gang at a time through `schedule`: place it, or else
preempt for it under the policy's victim rule (victims.py), or else say why it waits.
Every memo of the cycle is in `memo` and `shortcuts` (shortcuts.py), so the reference
mode can switch them off.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING

import numpy as np

from scheduler.core import podcycle, reasons, teamtree
from scheduler.core.budget import BudgetState, budget_state
from scheduler.core.cluster import Shape
from scheduler.core.framework import Note, Reclaim
from scheduler.core.model import Bind, Decisions, Eviction, Pending, Pod, TeamUsage, Tier
from scheduler.core.placement import CLUSTER_LEVEL, GangRequest, Placement, place_gang
from scheduler.core.preemption import Plan, Victim, plan_preemption
from scheduler.core.reading import read_running, read_waiting, shape_of
from scheduler.core.scoring import SCORERS, PodType, ScoringContext
from scheduler.core.shapecache import ShapeCache
from scheduler.core.shortcuts import CycleMemo, fresh_request
from scheduler.core.teamtable import TeamTable, team_status
from scheduler.core.victims import borrowed, candidates, could_free_enough, make_victim
from scheduler.core.waiting import PendingLog, SilentLog, View, Waiting, merged_run, problems_in_order

if TYPE_CHECKING:
    from scheduler.core.incremental import Core

_EPS = 1e-6


def run_cycle(core: Core, now_s: float, usage: Mapping[str, TeamUsage]) -> Decisions:
    """One cycle on a Core's input (what `decide` and `Core.decide` both run)."""
    return Cycle(core, now_s, usage).run()


@dataclass(slots=True)
class Outcome:
    binds: list[Bind] = field(default_factory=list)
    evictions: list[Eviction] = field(default_factory=list)
    pending: PendingLog = field(default_factory=PendingLog)
    nominations: dict[str, str] = field(default_factory=dict)


def _waiting_mix(views: list[View]) -> Counter[PodType]:
    """Pods waiting per type (GPUs, share, CPU, memory), scavenger work left out."""
    mix: Counter[PodType] = Counter()
    for v in views:
        if v.tier is Tier.SCAVENGER:
            continue
        if v.source is not None:
            for shape in v.source.shapes:
                mix[shape] += v.size
        elif v.waiting is not None:
            for p in v.waiting.pods:
                mix[(p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib)] += 1
    return mix


class Cycle:
    """The state one cycle works on, and the steps every pass uses."""

    def __init__(self, core: Core, now_s: float, usage_of: Mapping[str, TeamUsage]) -> None:
        self.core = core
        self.config = core.config
        self.policy = policy = core.policy
        self.shortcuts = core.shortcuts
        self.memo = CycleMemo(core.shortcuts, core.running.removals)
        self.now = now_s
        self.teams = list(core.teams)
        self.team_index = core.team_index
        n_teams = len(self.teams)
        self.sink = n_teams  # per-team arrays have one more slot, for gangs without a team
        self.tree = core.tree  # a group's usage is its subtree's (teamtree.py)
        self.usage = usage = teamtree.subtree_usage(self.tree, usage_of)
        # Only a team with a budget can run out of it: the others' budget state waits for
        # the team table (see `budgets`), which a replay reads only when it samples. The
        # first exhausted budget on a team's path decides (`exhausted_at`: whose it is).
        self.exhausted = [False] * (n_teams + 1)
        self.scavenging = np.zeros(n_teams + 1, dtype=bool)  # over budget, scavenging
        self.exhausted_at = [-1] * (n_teams + 1)
        if policy.budgets:
            ex, sc, at = teamtree.exhaustion(self.tree, self.teams, usage, now_s)
            self.exhausted[:n_teams], self.scavenging[:n_teams], self.exhausted_at[:n_teams] = ex, sc, at
        self.max_node_gpus = core.max_node_gpus
        self.explain = core.explain
        self.out = Outcome(pending=PendingLog() if self.explain else SilentLog())
        hit = read_running(self)
        run = self.rt = hit.run
        self.run_tier, self.special = hit.tiers, hit.special
        self.run_team = run.team
        self.run_gpus = run.gpus
        self.state = hit.cluster.copy()  # the cycle's own: the Core's stays as loaded
        self.pods, self.anti_terms = podcycle.index_for(self)  # None: no pod states such terms
        self.state.pod_index = self.pods
        # Training GPUs held per team, and the fair shares: Python floats, as the passes
        # read them one team at a time, far more often than whole.
        self.alloc: list[float] = hit.gpus[Tier.TRAINING].tolist()
        self.prod = hit.gpus[Tier.PRODUCTION].copy()
        self.scav = hit.gpus[Tier.SCAVENGER].copy()
        self.scav_held = hit.scav_held  # kept current where `scav` changes
        self.alloc_cpu = hit.cpu.copy()
        self.alloc_mem = hit.mem.copy()
        self.requests = fresh_request(self.shortcuts, core.requests)
        self.shapes: dict[tuple, Shape] = {}
        self.gates = [g for g in policy.gates if g.applies(self)]  # those that may refuse now
        self.views, self.groups, self.waiting_demand_milli = read_waiting(self)
        self.demand = np.array(self.alloc) + self.waiting_demand_milli / 1000.0
        self.share = [0.0] * (n_teams + 1)
        self._divided: tuple[float, bytes] | None = None
        self.divide_training_capacity()
        decayed = [u.decayed_gpu_seconds for u in usage]
        self.idle = [u.idle_gpus for u in usage]
        self.factor = (
            teamtree.factors(self.tree, [t.weight for t in self.teams], decayed)
            if policy.history and self.teams
            else [1.0] * n_teams
        )
        # The scorer is made when a placement first scores nodes: a cycle that places
        # nothing never needs it. (A function of the cycle's inputs, not a method: a
        # method would tie the cycle into a reference loop, kept until the collector runs.)
        ctx = ScoringContext(
            self.config, partial(_waiting_mix, self.views), core.running.gpu_pod_shapes, self.shortcuts
        )
        self.cache = ShapeCache(
            self.state, partial(SCORERS[policy.scorer].for_cycle, ctx), fresh=self.shortcuts.reference
        )
        self.releases = 0  # evictions so far: room only shrinks between two of them
        self.preemptors = 0
        self.may_preempt = policy.preemption and self.config.preemption_enabled
        self.max_preemptors = self.config.max_preemptors_per_cycle
        self.caps = [team.max_gpus for team in self.teams]  # maxGPUs per team
        self.victims: dict[int, Victim] = {}
        self._by_tier: tuple[list[View], list[list[View]]] | None = None

    def divide_training_capacity(self) -> None:
        """Fair shares of what production leaves: what it holds now, not what it waits for,
        so a production gang that cannot start takes nothing from the training teams."""
        n = len(self.teams)
        capacity = max(0.0, self.state.healthy_gpus() - float(self.prod.sum()))
        key = (capacity, self.demand[:n].tobytes())
        if key == self._divided and self.shortcuts.enabled:
            return  # the same input as last time: the same shares
        self._divided = key
        teams, demand = self.teams, self.demand
        self.share[:n] = self.shortcuts.fair_shares(
            key,
            lambda: teamtree.shares(
                self.tree,
                capacity,
                [t.weight for t in teams],
                demand[:n].tolist(),
                [t.guaranteed_gpus for t in teams],
                [t.max_gpus for t in teams],
            ),
        )

    # ------------------------------------------------------------------ what passes read

    @cached_property
    def budgets(self) -> list[BudgetState]:
        return [budget_state(t.budget, u, self.now) for t, u in zip(self.teams, self.usage, strict=True)]

    def ready_in(self, ready: list[View], tier: Tier) -> list[View]:
        """The views of `ready` in `tier` (split once per cycle, for every pass)."""
        if self._by_tier is None or self._by_tier[0] is not ready:
            split: list[list[View]] = [[], [], []]  # indexed by Tier
            for v in ready:
                split[v.tier].append(v)
            self._by_tier = (ready, split)
        return self._by_tier[1][tier]

    @cached_property
    def pending_pods(self) -> list[int]:
        """Pods waiting per team (and the sink)."""
        out = [0] * (len(self.teams) + 1)
        for v in self.views:
            if v.source is not None:
                out[v.team] += v.size * v.source.pods
            elif v.waiting is not None:
                out[v.team] += len(v.waiting.pods)
        return out

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
    def run_borrowed(self) -> np.ndarray:
        """Whether each running gang is borrowed (victims.borrowed; shares as first asked)."""
        return borrowed(self)

    @cached_property
    def run_alive(self) -> np.ndarray:
        """Whether each running gang may still be a victim. A gang that holds no GPU and no
        other resource (rdma/ib, ...) frees nothing a GPU gang can use: never a victim.
        Evictions clear it."""
        holds = self.rt.gpus > 0
        if self.rt.extras:
            holds[self.run_pod_gang[list(self.rt.extras)]] = True
        return self.rt.evictable & holds

    @cached_property
    def run_pod_gang(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.rt.gangs)), np.diff(self.rt.offsets))

    @cached_property
    def run_pod_milli(self) -> np.ndarray:
        return self.rt.pod_gpus * 1000 + self.rt.pod_milli

    def victim(self, g: int) -> Victim:
        hit = self.victims.get(g)
        if hit is None:
            hit = self.victims[g] = make_victim(self, g)
        return hit

    def below_share(self, t: int, gpus: float) -> bool:
        """Whether `gpus` more training GPUs keep team `t` within its fair share."""
        return self.alloc[t] + gpus <= self.share[t] + _EPS

    def over_production_cap(self, t: int, gpus: float) -> bool:
        """Whether `gpus` more production GPUs would take team `t` over its production cap."""
        cap = self.teams[t].production_max_gpus if t != self.sink else None
        return cap is not None and float(self.prod[t]) + gpus > cap + _EPS

    def over_cap(self, t: int, gpus: float) -> bool:
        """Whether `gpus` more training GPUs would take team `t` over its maxGPUs."""
        cap = self.caps[t]
        return cap is not None and self.alloc[t] + gpus > cap + _EPS

    # ------------------------------------------------------------------ running the passes

    def run(self) -> Decisions:
        problems = [v for v in self.views if v.problem is not None]
        if problems and self.explain:
            self.out.pending.extend_lazy(problems_in_order(problems))
        ready = [v for v in self.views if v.problem is None]
        for p in self.policy.passes:
            p.run(self, ready)
        self.shortcuts.carried = self.memo.carry(self.core.running.removals) if self.memo.enabled else None
        return Decisions(
            tuple(self.out.binds),
            tuple(self.out.evictions),
            self.out.pending.freeze(),
            TeamTable(partial(team_status, self)),
            dict(self.out.nominations),
        )

    @staticmethod
    def member(v: View, i: int) -> Waiting:
        """The i-th gang of a view, as the passes handle it."""
        if v.waiting is not None:
            return v.waiting
        gang = v.gangs[i]
        return Waiting(gang, v.team, v.tier, gang.pods, (), v.gpus, v.request)

    def doomed(self, v: View, preempt: bool, reclaim: Reclaim) -> bool:
        """Whether trying a gang of `v` now can only fail, changing nothing: its request
        found no room since the last eviction, and it may not, or already failed to,
        preempt. Binds only take room away, so this holds until the next eviction."""
        if v.waiting is not None or v.request is None or not self.memo.fails(v.request.key, self.releases):
            return False
        if not (preempt and self.may_preempt) or self.preemptors >= self.max_preemptors:
            return True
        if self._nothing_to_take(v.tier, reclaim):
            return True
        return self.memo.no_victims(self._search_key(v.tier, v.team, reclaim, v.request), self.releases)

    def _nothing_to_take(self, tier: Tier, reclaim: Reclaim) -> bool:
        """A training gang that may not reclaim can take only scavenger work: with none
        running (the usual case on a busy cluster without it), a search finds nothing."""
        return self.memo.enabled and tier is Tier.TRAINING and not reclaim and not self.scav_held

    @staticmethod
    def _search_key(tier: Tier, team: int, reclaim: Reclaim, req: GangRequest) -> tuple:
        return (tier, team if tier is Tier.TRAINING else -1, reclaim, req.key)

    def waits_why(self, v: View) -> tuple[str, str]:
        """The reason a doomed gang of `v` gets (what `schedule` would say)."""
        assert v.request is not None
        code, text = self.diagnose(v.request)
        return code, self.with_context(Waiting(v.gangs[0], v.team, v.tier, (), (), v.gpus), text)

    def passed_over(self, runs: list[tuple[View, int, int]], why: Callable[[View], tuple[str, str]]) -> None:
        """Runs of gangs a pass went over in one step: each with its reason, when explaining."""
        if self.explain:
            self.out.pending.extend_lazy(merged_run(runs, why))

    # ------------------------------------------------------------------ one gang

    def schedule(self, w: Waiting, preempt: bool, reclaim: Reclaim, note: Note | None = None) -> bool:
        """Try to place `w`; if it cannot, maybe preempt for it. True when it was bound.
        `note`: adds to the reason why the gang does not reclaim (see ReclaimRule)."""
        assert w.request is not None
        if not w.need:  # minMember already running: only extras, each as room allows
            self.bind(w, Placement((), CLUSTER_LEVEL))
            return True
        placed = self._try_place(w.request)
        if placed is not None:
            self.bind(w, placed)
            return True
        if preempt and self.may_preempt and self._preempt_for(w, reclaim):
            return False
        if not self.explain:
            return False
        code, text = self.diagnose(w.request)
        text = self.with_context(w, text)
        if note is not None:
            text = note(text)
        self.out.pending.append(Pending(w.gang.id, code, text))
        return False

    def _try_place(self, req: GangRequest) -> Placement | None:
        if self.memo.fails(req.key, self.releases):
            return None
        placed = place_gang(self.state, self.cache, req)
        self.state.commit()
        if placed is None:
            self.memo.failed(req, self.releases, at_start=self.releases == 0 and not self.out.binds)
        return placed

    def _account(self, t: int, tier: Tier, gpus: float, sign: int, pods: tuple[Pod, ...]) -> None:
        if tier is Tier.PRODUCTION:
            self.prod[t] += sign * gpus
        elif tier is Tier.SCAVENGER:
            self.scav[t] += sign * gpus
            self.scav_held = bool(self.scav.max() > _EPS)
        else:
            self.alloc[t] += sign * gpus
            self.alloc_cpu[t] += sign * sum(p.cpu_milli for p in pods)
            self.alloc_mem[t] += sign * sum(p.memory_mib for p in pods)

    def bind(self, w: Waiting, placed: Placement) -> None:
        names = self.state.names
        for pod, held in zip(w.need, placed.held, strict=True):
            self.out.binds.append(Bind(pod.name, w.gang.id, names[held.node], held.slots, w.tier))
        podcycle.placed(self, w.request, w.need, placed)
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
                (shape_of(self, pod),),
                w.request.model_ok,
                w.request.widest_level,
                pinned,
                w.request.whole_node_gpus,
                prefer=w.request.prefer,
                dynamic=podcycle.extra(self, w, pod),
            )
            got = place_gang(self.state, self.cache, one)
            self.state.commit()
            if got is None:
                left += 1
                continue
            podcycle.placed(self, one, (pod,), got)
            self.out.binds.append(
                Bind(pod.name, w.gang.id, names[got.held[0].node], got.held[0].slots, w.tier)
            )
            self._account(w.team, w.tier, pod.gpu_amount, +1, (pod,))
        if left:
            self.out.pending.append(Pending(w.gang.id, "ExtrasWaiting", reasons.extras_waiting(w.gang, left)))

    def _preempt_for(self, w: Waiting, reclaim: Reclaim) -> bool:
        if self.preemptors >= self.max_preemptors:
            return False
        if self._nothing_to_take(w.tier, reclaim):
            return False
        assert w.request is not None
        key = self._search_key(w.tier, w.team, reclaim, w.request)
        if w.request.key is not None and self.memo.no_victims(key, self.releases):
            return False
        cand = candidates(self, w, reclaim)
        bounds = self.memo.enabled
        if cand is None or (bounds and not could_free_enough(self, w, cand)):
            if w.request.key is not None:
                self.memo.found_no_victims(key, self.releases)
            return False
        plan = (
            podcycle.preemption(self, w, cand)
            if w.request.dynamic is not None
            else plan_preemption(
                self.state,
                self.cache,
                w.request,
                cand,
                self.policy.victims.accept(self, w),
                self.config.preemption_candidate_domains,
                bounds=bounds,
            )
        )
        self.state.commit()
        if plan is None:
            if w.request.key is not None:
                self.memo.found_no_victims(key, self.releases)
            return False
        self.preemptors += 1
        self._evict(w, plan)
        # Hold the freed room for this gang; it binds once the victims are gone.
        placed = place_gang(self.state, self.cache, w.request)
        self.state.commit()
        if placed is not None:
            podcycle.placed(self, w.request, w.need, placed)
            names = self.state.names
            for pod, held in zip(w.need, placed.held, strict=True):
                self.out.nominations[pod.name] = names[held.node]
            self._account(w.team, w.tier, w.gpus, +1, w.need)
        if self.explain:
            text = self.with_context(w, reasons.preempting(plan))
            self.out.pending.append(Pending(w.gang.id, "Preempting", text))
        return True

    def _evict(self, w: Waiting, plan: Plan) -> None:
        if w.tier is Tier.PRODUCTION:
            kind = "production"
        elif all(v.tier is Tier.SCAVENGER for v in plan.victims):
            kind = "scavenger"
        else:
            kind = "reclaim"
        for v in plan.victims:
            g = v.ref
            self.run_alive[g] = False
            if self.pods is not None:
                self.pods.remove_gang(g)
            for h in v.held:
                self.state.release(h)
            t = int(self.run_team[g])
            if v.tier is Tier.PRODUCTION:
                self.prod[t] -= v.gpus
            elif v.tier is Tier.SCAVENGER:
                self.scav[t] -= v.gpus
                self.scav_held = bool(self.scav.max() > _EPS)
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
        self.releases += 1

    # ------------------------------------------------------------------ explaining

    def diagnose(self, req: GangRequest) -> tuple[str, str]:
        """Why `req` finds no room now. A gang's own request (pinned) is asked once a cycle:
        only shared ones are remembered, until the next bind or eviction."""
        if req.key is None:
            if req.dynamic is not None:  # the pod masks of now, for the words
                return podcycle.diagnose(self, req)
            return reasons.diagnose(self.state, self.cache, req)
        key = (req.key, self.releases, len(self.out.binds))
        return self.memo.diagnosis(key, lambda: reasons.diagnose(self.state, self.cache, req))

    def with_context(self, w: Waiting, text: str) -> str:
        if w.tier is not Tier.TRAINING or w.team == self.sink:
            return text
        t = w.team
        key = (text, t, float(self.alloc[t]), float(self.share[t]))
        name, idle = self.teams[t].name, self.idle[t]
        return self.memo.context(key, lambda: reasons.with_share(text, name, key[2], key[3], idle))
