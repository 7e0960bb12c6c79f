"""The discrete-event replay: a virtual clock, events, and the decision core after each batch.

Events are arrivals, completions, budget-period rollovers, and node failures and
repairs. After every batch of events at one timestamp the engine asks the decision
core for decisions (or, with a cycle interval, at the next tick: `simulator.latency`),
then carries them out: binds start jobs, evictions send jobs back to
the queue (restarting from scratch, or from their last checkpoint when the job says how
often it checkpoints). No policy lives here; the engine only keeps time and books.

The core's input is kept as a `scheduler.core.incremental.Core`, told of each change
(a job arrives, starts, stops, is evicted; a node fails or is repaired), so a cycle does
not read the whole cluster and queue again; `Core.decide` runs the same cycle as
`scheduler.core.decide` and gives the same decisions on the same snapshot
(`Replay.snapshot` builds it). The per-sample figures (allocation, demand, fragmented
GPUs) are kept current the same way rather than summed over every job at each sample.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from scheduler.core import Decisions, Gang, Node, Pod, PolicyConfig, Snapshot, Team, TeamUsage
from scheduler.core.budget import period_bounds
from scheduler.core.fairshare import decay
from scheduler.core.incremental import Core
from scheduler.core.nominations import Nominations
from scheduler.core.teamtree import build_tree
from simulator.latency import Latency
from simulator.model import Job, JobRecord, RunResult, Sample, Trace

ARRIVAL, COMPLETION, ROLLOVER, FAILURE, REPAIR, TICK, RELEASE = range(7)
# What an event carries: an arrival its Job, a completion or release (job id, attempt), a
# rollover its team's name, a failure or repair its node's name, a tick nothing ("").
Payload = Job | tuple[str, int] | str


@dataclass(frozen=True, slots=True)
class FailureModel:
    """Whole-node failures: exponential times between failures per node, fixed repair time."""

    mtbf_hours: float
    repair_hours: float = 4.0

    def events(self, nodes: tuple[Node, ...], span_s: float, seed: int) -> list[tuple[float, int, str]]:
        rng = random.Random(seed)
        out = []
        for node in nodes:
            t = 0.0
            while True:
                t += rng.expovariate(1.0 / (self.mtbf_hours * 3600.0))
                if t >= span_s:
                    break
                out.append((t, FAILURE, node.name))
                out.append((t + self.repair_hours * 3600.0, REPAIR, node.name))
                t += self.repair_hours * 3600.0
        return out


@dataclass(slots=True)
class _JobState:
    job: Job
    record: JobRecord
    gang: Gang  # as the core sees it now (pending, or bound with start times)
    remaining_s: float  # work left if it (re)started now from its last checkpoint
    started_s: float = math.nan  # start of the current run
    attempt: int = 0  # bumps on every start, so a stale completion event is ignored


@dataclass
class Replay:
    """One policy's replay of one trace on one cluster."""

    trace: Trace
    nodes: tuple[Node, ...]
    teams: tuple[Team, ...]
    policy: str
    config: PolicyConfig = field(default_factory=PolicyConfig)
    seed: int = 0
    failures: FailureModel | None = None
    sample_every_s: float | None = None  # None: about 20,000 samples over the span
    progress: Callable[[int], None] | None = None  # called with the number of events done
    # Whether cycles say why gangs wait. The replay never reads it, and it costs a good
    # part of a cycle; binds and evictions are the same either way.
    explain: bool = False
    # The live control plane's delays (cycle interval, bind and end latency); none by default.
    latency: Latency = field(default_factory=Latency)

    def run(self) -> RunResult:
        wall = time.perf_counter()
        self._setup()
        while self._more():
            now = self._next_time()
            self._accrue(now)
            # Arrivals first (trace order), then the queued events in the order they were
            # pushed: the order a single heap would give with every arrival pushed first.
            batch = 0
            changed = False
            while self.next_arrival < len(self.arrival_order) and self._arrival_at(self.next_arrival) == now:
                self._handle(ARRIVAL, self.trace.jobs[self.arrival_order[self.next_arrival]], now)
                self.next_arrival += 1
                batch += 1
                changed = True
            while self.events and self.events[0][0] == now:
                _, _, kind, payload = heapq.heappop(self.events)
                changed |= self._handle(kind, payload, now)
                batch += 1
            if self.progress:
                self.progress(batch)
            if changed and not self.latency.on_tick(now):
                self._tick_at(self.latency.next_tick(now))  # decided at the next tick
                changed = False
            # Evicted victims are gone at once in a replay, so the preemptors can bind
            # in a second cycle at the same instant (the daemon's next cycle; with a cycle
            # interval, that is the next tick). A batch of cancelled events only (the
            # completion of a run that was evicted) is no event.
            evicted = False
            for _ in range((3 if self.latency.cycle_s == 0 else 1) if changed else 0):
                evicted = bool(self.pending) and self._cycle(now)
                if not evicted:
                    break
            busy = evicted or self.running or self.finishing
            if self.latency.cycle_s and changed and self.pending and busy:
                # The daemon cycles every interval while gangs wait: its evictions' preemptors
                # bind then, and time alone can change a decision (a min-runtime running out).
                self._tick_at(self.latency.next_tick(now + self.latency.cycle_s))
            self._sample(now)
        result = RunResult(
            policy=self.policy,
            trace=self.trace.name,
            gpus=sum(n.gpus for n in self.nodes),
            jobs=self.records,
            samples=self.samples,
            budgets={t.name: (t.budget.gpu_hours if t.budget else None) for t in self.teams},
            teams=self.teams,
        )
        result.wall_seconds = time.perf_counter() - wall
        return result

    # ------------------------------------------------------------------ setup

    def _setup(self) -> None:
        self.team_names = {t.name for t in self.teams}
        self.node_by_name = {n.name: n for n in self.nodes}
        self.node_pos = {name: i for i, name in enumerate(self.node_by_name)}
        self.healthy = dict(self.node_by_name)
        self.core = Core(tuple(self.healthy.values()), self.teams, self.config, self.policy, self.explain)
        self._nodes_changed = False
        self.records: list[JobRecord] = []
        self.by_id: dict[str, _JobState] = {}  # jobs that arrived and have not finished
        self.pending: dict[str, _JobState] = {}
        self.nominations = Nominations()  # room held for preemptors by the last cycle
        self.running: dict[str, _JobState] = {}
        self.finishing: dict[str, _JobState] = {}  # ended, GPUs not back yet (end latency)
        self.ticks: set[float] = set()  # ticks pushed and not reached yet
        # Per team, in team order (numpy, so accrual is one step, not a loop over teams):
        # GPUs running, decayed GPU-seconds, and GPU-hours used in the budget period.
        self.team_pos = {t.name: i for i, t in enumerate(self.teams)}
        self.running_gpus = np.zeros(len(self.teams))
        # A team's GPUs count for each group above it too (teams in a tree): every level's
        # decayed use and budget period accrue from them.
        tree = build_tree(self.teams)
        self.lift = {name: np.array(tree.path(i)) for i, name in enumerate(tree.names)}
        self.decayed = np.zeros(len(self.teams))
        self.period_hours = np.zeros(len(self.teams))
        self._usage_cache: dict[str, TeamUsage] | None = None
        # Per-sample figures kept current (milli-GPUs, exact): what each team holds and
        # waits for, what each node's running pods hold, and the pod sizes that wait.
        self.running_milli = dict.fromkeys(self.team_names, 0)
        self.pending_milli = dict.fromkeys(self.team_names, 0)
        self.node_used_milli = np.zeros(len(self.node_by_name), dtype=np.int64)
        self.pending_pod_sizes: dict[int, int] = {}  # smallest usable free amount -> jobs
        self._healthy_changed()
        self.last_accrual = 0.0
        self.samples: list[Sample] = []
        self.last_sample = -math.inf
        self.seq = 0
        self.events: list[tuple[float, int, int, Payload]] = []
        jobs = self.trace.jobs
        submits = np.fromiter((j.submit_s for j in jobs), dtype=np.float64, count=len(jobs))
        self.arrival_order = np.argsort(submits, kind="stable")
        self.arrival_times = submits[self.arrival_order] + self.latency.arrival_s
        self.next_arrival = 0
        span = max((j.submit_s + j.duration_s for j in jobs), default=0.0)
        self.sample_every = (
            self.sample_every_s if self.sample_every_s is not None else max(1.0, span / 20_000)
        )
        self.arrivals_left = len(jobs)
        self.starts = 0
        self.starts_at_rollover: dict[str, int] = {}
        for job in jobs:
            if job.team not in self.team_names:
                raise ValueError(f"job {job.job_id}: team {job.team!r} has no GPUTeam in this replay")
        for team in self.teams:
            if team.budget is not None:
                self._next_rollover(team, 0.0)
        if self.failures is not None:
            for t, kind, name in self.failures.events(self.nodes, span, self.seed):
                self._push(t, kind, name)
        self.total_events = len(self.events) + len(jobs)

    def _arrival_at(self, k: int) -> float:
        return float(self.arrival_times[k])

    def _more(self) -> bool:
        return bool(self.events) or self.next_arrival < len(self.arrival_order)

    def _next_time(self) -> float:
        t = self.events[0][0] if self.events else math.inf
        if self.next_arrival < len(self.arrival_order):
            t = min(t, self._arrival_at(self.next_arrival))
        return t

    def _tick_at(self, t: float) -> None:
        if t not in self.ticks:
            self.ticks.add(t)
            self._push(t, TICK, "")

    def _push(self, t: float, kind: int, payload: Payload) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, payload))

    def _next_rollover(self, team: Team, t: float) -> None:
        assert team.budget is not None
        _, end = period_bounds(team.budget, self.trace.epoch_s + t)
        self._push(end - self.trace.epoch_s, ROLLOVER, team.name)

    def _priority(self, tier: str) -> int:
        if tier == "production":
            return self.config.production_min_priority
        if tier == "scavenger":
            return self.config.scavenger_below_priority - 1
        return 0

    def _pending_gang(self, job: Job) -> Gang:
        pods = tuple(
            Pod(
                f"{job.job_id}-{k}",
                gpus=job.gpus_per_pod,
                gpu_milli=job.gpu_milli,
                cpu_milli=job.cpu_milli,
                memory_mib=job.memory_mib,
            )
            for k in range(job.pods)
        )
        return Gang(
            job.job_id,
            job.team,
            pods,
            priority=self._priority(job.tier),
            submit_s=self.trace.epoch_s + job.submit_s,
            gpu_models=frozenset(job.gpu_models),
            topology_required=job.topology_required,
            topology_preferred=job.topology_preferred,
            min_runtime_s=job.min_runtime_s,
            checkpoint_s=job.checkpoint_s,
            constraints=() if job.constraints is None else (job.constraints,),
        )

    # ------------------------------------------------------------------ events

    def _handle(self, kind: int, payload: Payload, now: float) -> bool:
        """Carry out one event; False when it was cancelled (changes nothing)."""
        if kind == ARRIVAL:
            self.arrivals_left -= 1
            assert isinstance(payload, Job)
            job = payload
            record = JobRecord(job.job_id, job.team, job.tier, job.gpus, job.submit_s)
            state = _JobState(job, record, self._pending_gang(job), job.duration_s)
            self.records.append(record)
            self.by_id[job.job_id] = state
            self._enqueue(state)
        elif kind == COMPLETION:
            assert isinstance(payload, tuple)
            job_id, attempt = payload
            ending = self.running.get(job_id)
            if ending is None or ending.attempt != attempt:
                return False  # evicted or killed since: a stale completion
            self._stop(ending, now)
            ending.record.end_s = now
            if self.latency.end_s:
                # The pods are done; the scheduler sees their GPUs free only later.
                self.finishing[job_id] = ending
                self._push(now + self.latency.end_s, RELEASE, (job_id, attempt))
                return False
            self._release(ending)
        elif kind == RELEASE:
            assert isinstance(payload, tuple)
            done = self.finishing.get(payload[0])
            if done is None or done.attempt != payload[1]:
                return False  # evicted in the meantime: released then
            self._release(done)
        elif kind == TICK:
            self.ticks.discard(now)
        elif kind == ROLLOVER:
            team = next(t for t in self.teams if t.name == payload)
            self.period_hours[self.team_pos[team.name]] = 0.0
            self._usage_cache = None
            # Keep the calendar going while anything can still happen: work runs or is to
            # come, or the last period started something (a budget may be what held it).
            progressed = self.starts != self.starts_at_rollover.get(team.name)
            self.starts_at_rollover[team.name] = self.starts
            if self.running or self.arrivals_left or (self.pending and progressed):
                self._next_rollover(team, now + 1e-6)
        elif kind == FAILURE:
            name = str(payload)
            node = self.node_by_name[name]
            self.healthy[name] = replace(node, unhealthy_gpus=frozenset(range(node.gpus)))
            self._healthy_changed()
            for state in [s for s in self.running.values() if any(p.node == name for p in s.gang.pods)]:
                self._interrupt(state, now)
        elif kind == REPAIR:
            self.healthy[str(payload)] = self.node_by_name[str(payload)]
            self._healthy_changed()
        return True

    def _release(self, state: _JobState) -> None:
        """A finished job leaves the core's snapshot: its GPUs are free to decide on."""
        job_id = state.job.job_id
        self.finishing.pop(job_id, None)
        self.core.remove(job_id)
        del self.by_id[job_id]

    def _healthy_changed(self) -> None:
        self._nodes_changed = True
        self.healthy_gpus = float(sum(n.healthy_gpus for n in self.healthy.values()))
        self.node_healthy_milli = np.array(
            [n.healthy_gpus * 1000 for n in self.healthy.values()], dtype=np.int64
        )

    def _enqueue(self, state: _JobState) -> None:
        """The job waits (arrived, or back in the queue)."""
        job = state.job
        self.pending[job.job_id] = state
        self.core.put(state.gang)
        self.pending_milli[job.team] += _milli(job)
        size = job.gpus_per_pod * 1000 if job.gpus_per_pod else 1
        self.pending_pod_sizes[size] = self.pending_pod_sizes.get(size, 0) + 1

    def _dequeue(self, state: _JobState) -> None:
        job = state.job
        del self.pending[job.job_id]
        self.pending_milli[job.team] -= _milli(job)
        size = job.gpus_per_pod * 1000 if job.gpus_per_pod else 1
        left = self.pending_pod_sizes[size] - 1
        if left:
            self.pending_pod_sizes[size] = left
        else:
            del self.pending_pod_sizes[size]

    def _hold(self, state: _JobState, sign: int) -> None:
        """Count (sign +1) or uncount (-1) what a running job holds, per team and node."""
        job = state.job
        self.running_milli[job.team] += sign * _milli(job)
        each = job.gpus_per_pod * 1000 + job.gpu_milli
        for p in state.gang.pods:
            assert p.node is not None  # a running job's pods are all bound
            self.node_used_milli[self.node_pos[p.node]] += sign * each

    def _stop(self, state: _JobState, now: float) -> None:
        del self.running[state.job.job_id]
        self.running_gpus[self.lift[state.job.team]] -= state.job.gpus
        self._hold(state, -1)

    def _interrupt(self, state: _JobState, now: float) -> None:
        """Evicted or lost to a failure: back to the queue, losing work since the last checkpoint."""
        ran = max(0.0, now - state.started_s)  # evicted before its pods started: none
        ckpt = state.job.checkpoint_s
        kept = (ran // ckpt) * ckpt if ckpt else 0.0
        state.record.preemptions += 1
        state.record.lost_gpu_hours += state.job.gpus * (ran - kept) / 3600.0
        state.remaining_s = max(0.0, state.remaining_s - kept)
        self._stop(state, now)
        state.gang = self._pending_gang(state.job)
        self._enqueue(state)

    # ------------------------------------------------------------------ cycle

    def _accrue(self, now: float) -> None:
        dt = now - self.last_accrual
        if dt <= 0:
            return
        self.decayed = decay(1.0, dt, self.config.usage_half_life_s) * self.decayed + self.running_gpus * dt
        self.period_hours += self.running_gpus * dt / 3600.0
        self.last_accrual = now
        self._usage_cache = None

    def _usage_now(self) -> dict[str, TeamUsage]:
        if self._usage_cache is None:  # the same until time passes or a period rolls over
            self._usage_cache = {
                t.name: TeamUsage(d, h)
                for t, d, h in zip(self.teams, self.decayed.tolist(), self.period_hours.tolist(), strict=True)
            }
        return self._usage_cache

    def snapshot(self, now: float) -> Snapshot:
        """The snapshot the next cycle decides on (`decide` on it gives the cycle's decisions)."""
        self._sync_nodes()
        return self.core.snapshot(self.trace.epoch_s + now, self._usage_now())

    def _sync_nodes(self) -> None:
        if self._nodes_changed:
            self.core.set_nodes(tuple(self.healthy.values()))
            self._nodes_changed = False

    def _cycle(self, now: float) -> bool:
        """One decision cycle; True when it evicted something (so another may bind)."""
        self._sync_nodes()
        d = self.core.decide(self.trace.epoch_s + now, self._usage_now())
        self.last_decisions = d
        self._apply(d, now)
        return bool(d.evictions)

    def _apply(self, d: Decisions, now: float) -> None:
        for gid in {e.gang for e in d.evictions}:
            state = self.running.get(gid)
            if state is not None:
                self._interrupt(state, now)
            elif gid in self.finishing:  # done but not yet noticed: deleting it frees the GPUs
                self._release(self.finishing[gid])
        placed: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
        for b in d.binds:
            placed.setdefault(b.gang, {})[b.pod] = (b.node, b.gpu_indices)
        begin = now + self.latency.bind_s  # the pods start; the GPUs are held from now
        start = self.trace.epoch_s + begin
        for gid, pods in placed.items():
            state = self.pending[gid]
            self._dequeue(state)
            # Whole GPUs are interchangeable (the device plugin picks them, not the
            # scheduler): only a shared GPU's slot is worth remembering.
            shared = state.job.gpu_milli > 0
            state.gang = replace(
                state.gang,
                pods=tuple(
                    replace(
                        p,
                        node=pods[p.name][0],
                        gpu_indices=pods[p.name][1] if shared else (),
                        start_s=start,
                        nominated_node=None,
                    )
                    for p in state.gang.pods
                ),
            )
            state.started_s = begin
            state.attempt += 1
            self.starts += 1
            if math.isnan(state.record.start_s):
                state.record.start_s = begin
            state.record.nodes = tuple(p.node for p in state.gang.pods if p.node is not None)
            self.running[gid] = state
            self.running_gpus[self.lift[state.job.team]] += state.job.gpus
            self.core.put(state.gang)
            self._hold(state, +1)
            self._push(begin + state.remaining_s, COMPLETION, (gid, state.attempt))
        self._nominate(d)

    def _nominate(self, d: Decisions) -> None:
        """Hold the room the cycle's evictions made for each preemptor, as the daemon does
        (the lifecycle is the core's: scheduler/core/nominations.py)."""

        def pending(gid: str) -> Gang | None:
            state = self.pending.get(gid)
            return None if state is None else state.gang

        for gang in self.nominations.after_cycle(d, pending):
            self.pending[gang.id].gang = gang
            self.core.put(gang)

    # ------------------------------------------------------------------ samples

    def _sample(self, now: float) -> None:
        if now - self.last_sample < self.sample_every and self._more():
            return
        self.last_sample = now
        allocated = {t: self.running_milli[t] / 1000.0 for t in self.team_names}
        demand = {t: (self.running_milli[t] + self.pending_milli[t]) / 1000.0 for t in self.team_names}
        d = getattr(self, "last_decisions", None)
        share = {t: (d.teams[t].fair_share_gpus if d else 0.0) for t in self.team_names}
        busy = sum(allocated.values())
        self.samples.append(
            Sample(
                t=now,
                allocated=allocated,
                fair_share=share,
                demand=demand,
                busy_gpus=busy,
                fragmented_gpus=self._fragmented(),
                budget_used=dict(zip(self.team_pos, self.period_hours.tolist(), strict=True)),
                healthy_gpus=self.healthy_gpus,
            )
        )

    def _fragmented(self) -> float:
        """Free GPUs that no waiting job's pod could use (free but too scattered)."""
        if not self.pending:
            return 0.0
        smallest = min(self.pending_pod_sizes)
        free = self.node_healthy_milli - self.node_used_milli
        return float(free[(free > 0) & (free < smallest)].sum()) / 1000.0


def _milli(job: Job) -> int:
    """Milli-GPUs of the whole job (exact, so running sums never drift)."""
    return job.pods * (job.gpus_per_pod * 1000 + job.gpu_milli)


def replay(
    trace: Trace,
    nodes: tuple[Node, ...],
    teams: tuple[Team, ...],
    policies: Iterable[str],
    **kw,
) -> list[RunResult]:
    """The same input under each policy, one after the other."""
    return [Replay(trace, nodes, teams, policy, **kw).run() for policy in policies]
