"""The daemon's side effects that are not API calls: the GPU-hour ledger, Prometheus
metrics and node telemetry, plugged into the loop through the `Hooks` protocol.

Accrual is derived from what runs, not from decisions: each accrual lists the gangs with
bound pods now and the runs that ended since the last one (completed, failed or evicted),
and the ledger charges each from its last charged instant, in the tier of the decision that
bound it (`Bind.tier`: an over-budget team's training runs as scavenger). Accrual runs every
`accrue_every_s`, not every cycle, since it writes to the database.

Each part of a hook (metrics, ledger, telemetry) runs isolated: one that raises is logged
and counted (`failures`, and the `gpufair_hook_failures_total` metric) and the others run
all the same, so a bug in one never stops the bookkeeping of the rest, nor the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.core.config import PolicyConfig
from scheduler.core.model import Decisions, Eviction, Gang, Team, TeamUsage
from scheduler.core.tiers import tier_by_priority
from scheduler.daemon.actuator import Outcome
from scheduler.daemon.translate import Translation

if TYPE_CHECKING:  # the ledger (SQLAlchemy) and the metrics load only when a daemon uses them
    from scheduler.ledger import GangRun, Ledger
    from scheduler.ledger.history import History, PodLookup
    from scheduler.metrics import SchedulerMetrics
    from scheduler.telemetry import TelemetryState

log = logging.getLogger("gpufair.hooks")


def _gang_runs(tr: Translation, tier_of: Callable[[Gang, float], str]) -> dict[str, GangRun]:
    """Running gangs of known teams as ledger runs, keyed by gang id; the ledger tells runs of
    one id apart by their start, so a gang restarted after eviction is a new run. `tier_of`
    gives the tier a run is charged in, from the gang and the run's start."""
    from scheduler.ledger import GangRun

    runs = {}
    teams = {t.name for t in tr.snapshot.teams}
    for g in tr.snapshot.gangs:
        if g.team not in teams:
            continue
        bound = [p for p in g.pods if p.node is not None]
        if not bound:
            continue
        start = min(p.start_s or tr.snapshot.now_s for p in bound)
        runs[g.id] = GangRun(
            gang_id=g.id,
            team=g.team,
            tier=tier_of(g, start),
            gpus=sum(p.gpu_amount for p in bound),
            start_s=start,
            namespace=g.id.split("/", 1)[0],
            nodes=tuple(sorted({p.node for p in bound if p.node})),
            submit_s=g.submit_s,
        )
    return runs


class DaemonHooks:
    def __init__(
        self,
        policy: PolicyConfig,
        ledger_url: str | None = None,
        metrics: SchedulerMetrics | None = None,
        telemetry: TelemetryThread | None = None,
        accrue_every_s: float = 30.0,
    ) -> None:
        from scheduler.metrics import SchedulerMetrics

        self.policy = policy
        self.metrics = metrics if metrics is not None else SchedulerMetrics()
        self.ledger_url = ledger_url
        self._ledger: Ledger | None = None
        self.telemetry = telemetry
        self.accrue_every_s = accrue_every_s
        self._runs: dict[str, GangRun] = {}
        # Gang id -> the tier its last bind decision (Bind.tier) gave it: what its run is
        # charged in. Only the loop's thread uses it.
        self._tiers: dict[str, str] = {}
        self._last_accrual = 0.0
        self.gauges_every_s = 1.0
        self._gauges_at = -math.inf
        self._usage: dict[str, TeamUsage] = {}
        self._waited: set[str] = set()
        self._teams: tuple[Team, ...] = ()
        self._findings: tuple[str, ...] = ()
        self._idle_by_team: dict[str, float] = {}
        self._lock = threading.Lock()
        # The gang history (the ledger as a trace): `pod_lookup` reads a pod the snapshot left
        # out (a terminated one) from the daemon's cache, for outcomes and end instants.
        self._history: History | None = None
        self.pod_lookup: PodLookup | None = None
        self.history_every_s = 1.0
        self._history_at = -math.inf
        self._bound_at: dict[str, float] = {}  # gang id -> the cycle that decided its last bind
        self.failures: Counter[str] = Counter()  # hook part -> times it raised
        self._failure_logged: dict[str, float] = {}

    @property
    def ledger(self) -> Ledger | None:
        """Opened (and migrated) on first use, which only the leader's cycles reach, so two
        replicas never run the schema migration at once."""
        if self._ledger is None and self.ledger_url:
            from scheduler.ledger import Ledger

            self._ledger = Ledger(self.ledger_url, half_life_s=self.policy.usage_half_life_s)
        return self._ledger

    @property
    def history(self) -> History | None:
        """The gang history, on the ledger once that is open (the cycle's usage opens it)."""
        if self._history is None and self._ledger is not None:
            from scheduler.ledger.history import History

            policy = self.policy
            self._history = History(self._ledger.engine, lambda g: tier_by_priority(g.priority, policy).label)
        return self._history

    # ------------------------------------------------------------------ Hooks

    def usage(self, now_s: float, teams: tuple[Team, ...]) -> dict[str, TeamUsage]:
        """The ledger's budgets and decayed usage, with telemetry's idle GPUs per team."""
        self._teams = teams
        if self.ledger is not None and (not self._usage or now_s - self._last_accrual >= self.accrue_every_s):
            self._usage = self.ledger.usage(now_s, teams)
        if not self._idle_by_team:
            return self._usage
        return {
            t.name: replace(
                self._usage.get(t.name, TeamUsage()), idle_gpus=self._idle_by_team.get(t.name, 0.0)
            )
            for t in teams
        }

    def unhealthy(self) -> dict[str, list[int]]:
        if self.telemetry is None:
            return {}
        state = self.telemetry.state
        return {node: sorted(state.unhealthy_gpus(node)) for node in state.nodes()}

    def _isolated(self, part: str, fn: Callable[..., Any], *args: Any) -> None:
        """Runs one part of a hook; if it raises, logs and counts it and returns, so the
        other parts still run. The traceback is logged at most once a minute per part: a
        part that fails every cycle would otherwise flood the log."""
        try:
            fn(*args)
        except Exception:
            now = time.monotonic()
            with self._lock:
                self.failures[part] += 1
                count = self.failures[part]
                quiet = now - self._failure_logged.get(part, -math.inf) < 60.0
                if not quiet:
                    self._failure_logged[part] = now
            if not quiet:
                log.exception("hook %s failed (%d time(s) so far); the other hooks still run", part, count)
            with contextlib.suppress(Exception):  # the metrics part may be what is broken
                self.metrics.observe_hook_failure(part)

    def cycle_done(self, tr: Translation, decisions: Decisions, seconds: float) -> None:
        now = tr.snapshot.now_s
        # The per-team and cluster gauges read every pod (fairness.cluster_view): refreshed at
        # most every gauges_every_s, and by a cycle that binds or evicts, while the daemon may
        # turn many cycles a second; the cycle's duration is observed every time.
        if decisions.binds or decisions.evictions or now - self._gauges_at >= self.gauges_every_s:
            self._isolated("metrics", self._observe_gauges, decisions, tr, seconds)
        else:
            self._isolated("metrics", self.metrics.observe_cycle_duration, seconds)
        # Taken from the decisions, not the bind callbacks: the next snapshot counts a queued
        # bind as bound already, and the actuator may take seconds to send a burst of them.
        self._tiers.update((b.gang, b.tier.label) for b in decisions.binds)
        self._bound_at.update((b.gang, now) for b in decisions.binds)
        self._isolated("ledger", self._accrue_when_due, tr, now)
        if decisions.binds or decisions.evictions or now - self._history_at >= self.history_every_s:
            self._isolated("ledger_history", self._observe_history, tr)
        if self.telemetry is not None:
            self._isolated("telemetry_idle", self._idle, tr, now, self.telemetry.state)
            self._isolated("telemetry_health", self._telemetry_health, tr, now, self.telemetry.state)

    def _observe_gauges(self, decisions: Decisions, tr: Translation, seconds: float) -> None:
        self.metrics.observe_cycle(decisions, tr.snapshot, seconds)
        self._gauges_at = tr.snapshot.now_s

    def _observe_history(self, tr: Translation) -> None:
        if self.history is not None:
            self.history.observe(tr.snapshot, self.pod_lookup, self._tiers, self._bound_at)
            self._history_at = tr.snapshot.now_s
            present = {g.id for g in tr.snapshot.gangs}
            self._bound_at = {gid: t for gid, t in self._bound_at.items() if gid in present}

    def _accrue_when_due(self, tr: Translation, now: float) -> None:
        if self.ledger is not None and now - self._last_accrual >= self.accrue_every_s:
            self.accrue(tr, now)

    def accrue(self, tr: Translation, now: float) -> None:
        ledger = self.ledger
        if ledger is None:
            return
        try:
            runs = _gang_runs(tr, lambda g, start: self._run_tier(ledger, g, start))
            ended = [
                r._replace(end_s=now)
                for gid, r in self._runs.items()
                if gid not in runs or runs[gid].start_s != r.start_s
            ]
            accrual = ledger.accrue(now, runs.values(), ended, tr.snapshot.teams)
        except Exception:
            log.exception("ledger accrual failed; usage is charged at the next one from the same checkpoint")
            return
        self.metrics.observe_accrual(accrual)
        self._runs = runs
        self._last_accrual = now
        self._usage = ledger.usage(now, tr.snapshot.teams)
        # Gangs with no pods left are done; a gang still in the snapshot may bind again.
        present = {g.id for g in tr.snapshot.gangs}
        self._tiers = {gid: tier for gid, tier in self._tiers.items() if gid in present}

    def _run_tier(self, ledger: Ledger, gang: Gang, start_s: float) -> str:
        """The tier a run is charged in: its bind decision's. A run bound before this daemon
        led keeps the tier the ledger booked it in; only a run neither has seen (bound by
        something else) falls back to its priority's tier."""
        tier = self._tiers.get(gang.id)
        if tier is None:
            record = ledger.gang(gang.id)
            if record is not None and record.run_start_s == start_s:
                tier = record.tier
            else:
                tier = tier_by_priority(gang.priority, self.policy).label
            self._tiers[gang.id] = tier
        return tier

    def _idle(self, tr: Translation, now: float, state: TelemetryState) -> None:
        """Idle allocated GPUs per team. Which GPU a pod holds is the device plugin's choice,
        so a node's idle GPUs are attributed to its teams in proportion to what each holds."""
        by_node: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for g in tr.snapshot.gangs:
            for p in g.pods:
                if p.node is not None and g.team:
                    by_node[p.node][g.team] += p.gpu_amount
        gpus_of = {n.name: n.gpus for n in tr.snapshot.nodes}
        allocations = {(node, i): "*" for node in by_node for i in range(gpus_of.get(node, 0))}
        idle = state.idle_allocated_gpus(now, allocations).get("*", [])
        idle_on: dict[str, int] = defaultdict(int)
        for node, _gpu in idle:
            idle_on[node] += 1
        per_team: dict[str, float] = defaultdict(float)
        for node, teams in by_node.items():
            held = sum(teams.values())
            if held <= 0 or node not in idle_on:
                continue
            idle_held = min(idle_on[node], held)
            for team, gpus in teams.items():
                per_team[team] += idle_held * gpus / held
        for team in {t.name for t in tr.snapshot.teams}:
            self.metrics.set_idle_gpus(team, per_team.get(team, 0.0))
        self._idle_by_team = dict(per_team)

    def _telemetry_health(self, tr: Translation, now: float, state: TelemetryState) -> None:
        """Stale nodes and telemetry that disagrees with the node objects: a metric, and a
        log line when the set of findings changes (not every cycle)."""
        stale = state.stale_nodes(now)
        unhealthy = sum(len(state.unhealthy_gpus(node)) for node in state.nodes())
        self.metrics.observe_telemetry(len(stale), unhealthy, dict(state.dropped))
        findings = tuple(state.disagreements(tr.snapshot.nodes)) + tuple(
            f"node {node}: no telemetry for over {state.stale_after_s:g}s (stale, still schedulable)"
            for node in stale
        )
        if findings != self._findings:
            for line in findings:
                log.warning("telemetry: %s", line)
            self._findings = findings

    def evicted(self, evictions: list[Eviction], now: float) -> None:
        """Evictions the API carried out (a PDB-refused one is not a preemption)."""
        self._isolated("ledger_evictions", self._record_evictions, evictions, now)
        if evictions:
            self._isolated("ledger_history", self._history_evicted, evictions, now)

    def _history_evicted(self, evictions: list[Eviction], now: float) -> None:
        if self.history is not None:
            self.history.evicted(now, evictions)

    def _record_evictions(self, evictions: list[Eviction], now: float) -> None:
        if self.ledger is not None and evictions:
            self.metrics.observe_preemptions(self.ledger.record_evictions(now, evictions))

    def acted(self, kind: str, outcomes: list[Outcome]) -> None:
        observe = self.metrics.observe_bind if kind == "bind" else self.metrics.observe_eviction
        for o in outcomes:
            self._isolated("metrics", observe, o.result)

    def started(self, gang: Gang, tier: str, now: float) -> None:
        """A gang's first pod was bound: its queue wait ends."""
        with self._lock:
            if gang.id in self._waited:
                return
            self._waited.add(gang.id)
        wait = max(0.0, now - gang.submit_s)
        self._isolated("metrics", self.metrics.observe_wait, gang.team or "none", tier, wait)

    def leader(self, leading: bool) -> None:
        self._isolated("metrics", self.metrics.set_leader, leading)

    def close(self) -> None:
        if self.telemetry is not None:
            self.telemetry.stop()
        if self._ledger is not None:
            self._ledger.close()


class TelemetryThread:
    """The asyncio MQTT subscriber in a thread of its own, beside the threaded daemon."""

    def __init__(
        self, broker: str, ca: str | None, cert: str | None, key: str | None, stale_s: float
    ) -> None:
        from scheduler.telemetry import BrokerConfig, TelemetryState, TelemetrySubscriber

        self.state = TelemetryState(stale_after_s=stale_s)
        self._config = BrokerConfig.parse(
            broker,
            ca=Path(ca) if ca else None,
            cert=Path(cert) if cert else None,
            key=Path(key) if key else None,
        )
        self._subscriber_cls = TelemetrySubscriber
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self.subscriber = self._subscriber_cls(
            self.state, self._config, clock=time.time, identifier="gpufair-scheduler"
        )
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._done = asyncio.Event()
        self.subscriber.start()
        await self._done.wait()
        await self.subscriber.stop()

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(timeout=5)
