"""The scheduling loop: cache -> snapshot -> decide -> bind / evict / explain.

The loop holds no policy. What it keeps between cycles is bookkeeping of its own calls:
pods it has bound whose watch event has not come back yet (`assumed`, so the next cycle
does not bind them again), gangs whose victims are still terminating (`preempting`,
held out of the snapshot so the core does not pick more victims for them while the first
ones leave), and the nodes those victims leave (`nominations`, whose lifecycle is the
core's, scheduler/core/nominations.py: the cycle that sees the gang again binds it there
first, before any gang that comes earlier in its order takes the room). Nominations live
only here, never in anything a user can write, so no pod can claim one. Explanations and
status writes go to a background worker with its own rate limiter, so thousands of
pending pods never delay a bind.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from scheduler.core import decide
from scheduler.core.model import Bind, Decisions, Eviction, Gang, TeamUsage
from scheduler.core.nominations import Nominations
from scheduler.core.policies import get_policy
from scheduler.daemon.actuator import Actuator, Outcome
from scheduler.daemon.cache import Cache
from scheduler.daemon.config import DaemonConfig
from scheduler.daemon.explain import Explainer
from scheduler.daemon.kube import Kube
from scheduler.daemon.leader import LeaderElector
from scheduler.daemon.live import LiveState
from scheduler.daemon.translate import SnapshotBuilder, Translation
from scheduler.daemon.volumebinder import bind_with_volumes
from scheduler.daemon.volumes import Plan, VolumeReader
from scheduler.daemon.workloads import CacheOwners

log = logging.getLogger("gpufair.daemon")

ASSUME_TTL_S = 60.0
PREEMPTION_TTL_S = 300.0
VOLUME_BIND_TIMEOUT_S = 60.0  # how long a pod's bind waits for the PV controller to bind its claims


def _still_there(get: Callable[[str], Mapping[str, Any] | None], victim: tuple[str, str]) -> bool:
    """An evicted pod is gone once its name is free or taken by a pod made anew."""
    pod = get(victim[0])
    return pod is not None and pod["metadata"].get("uid", "") == victim[1]


class Hooks(Protocol):
    """What the ledger, metrics and telemetry plug in (all optional)."""

    def usage(self, now_s: float, snapshot_teams: tuple) -> dict[str, TeamUsage]: ...

    def unhealthy(self) -> dict[str, list[int]]: ...

    def cycle_done(self, tr: Translation, decisions: Decisions, seconds: float) -> None: ...

    def acted(self, kind: str, outcomes: list[Outcome]) -> None: ...

    def leader(self, leading: bool) -> None: ...

    def started(self, gang: Gang, tier: str, now: float) -> None: ...

    def evicted(self, evictions: list[Eviction], now: float) -> None: ...

    def close(self) -> None: ...


class NoHooks:
    def usage(self, now_s: float, snapshot_teams: tuple) -> dict[str, TeamUsage]:
        return {}

    def unhealthy(self) -> dict[str, list[int]]:
        return {}

    def cycle_done(self, tr: Translation, decisions: Decisions, seconds: float) -> None:
        pass

    def acted(self, kind: str, outcomes: list[Outcome]) -> None:
        pass

    def leader(self, leading: bool) -> None:
        pass

    def started(self, gang: Gang, tier: str, now: float) -> None:
        pass

    def evicted(self, evictions: list[Eviction], now: float) -> None:
        pass

    def close(self) -> None:
        pass


class _Worker:
    """Runs the latest queued job per key in the background; a newer job for a key replaces
    an older one that has not run yet."""

    def __init__(self) -> None:
        self._jobs: dict[str, Any] = {}
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="explain", daemon=True)
        self._thread.start()

    def submit(self, key: str, fn, *args) -> None:
        with self._cv:
            self._jobs[key] = (fn, args)
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                key = next(iter(self._jobs))
                fn, args = self._jobs.pop(key)
            try:
                fn(*args)
            except Exception:  # one bad write must not stop the others
                log.exception("background API write %s failed", key)

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=5)


@dataclass
class CycleStats:
    cycles: int = 0
    last_cycle_at: float = 0.0
    last_cycle_s: float = 0.0
    binds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    evictions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    took_lease_to_cycle_s: float | None = None  # from taking the lease to the term's first cycle
    hook_failures: int = 0  # after-cycle hooks that raised


class Daemon:
    def __init__(self, cfg: DaemonConfig, kube: Kube, explain_kube: Kube, hooks: Hooks | None = None) -> None:
        self.cfg = cfg
        self.kube = kube
        self.policy = get_policy(cfg.policy_name)
        self.hooks: Hooks = hooks or NoHooks()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._logged: set[str] = set()  # problems with nodes and pods, logged once each
        self.cache = Cache(kube, self._changed.set)
        self.elector = (
            LeaderElector(
                # Its own rate limiter (the connection pool is shared), as kube-scheduler's
                # leader-election client: a renew never queues behind a backlog of binds.
                Kube(kube.api, qps=0),
                cfg.lease_namespace,
                cfg.lease_name,
                cfg.identity,
                cfg.lease_s,
                cfg.renew_deadline_s,
                cfg.retry_s,
                on_change=self._changed.set,  # a new leader's first cycle starts at once
            )
            if cfg.leader_elect
            else None
        )
        # Every bind and eviction passes the elector's fence (see actuator.py).
        self.actuator = Actuator(kube, cfg.max_in_flight, self.elector, cfg.lease_s - cfg.renew_deadline_s)
        self.explainer = Explainer(explain_kube, identity=cfg.identity)
        self.worker = _Worker()
        # pod -> (node, uid, when the bind succeeded; None while it is queued or in flight)
        self.assumed: dict[str, tuple[str, str | None, float | None]] = {}
        self._assumed_lock = threading.Lock()
        # gang -> ((victim pod key, uid), since); by uid, since a controller may make a
        # victim anew under its old name (a PyTorchJob's, an LWS group's pods) at once.
        self.preempting: dict[str, tuple[set[tuple[str, str]], float]] = {}
        self.nominations = Nominations()  # preemptor pod -> the node held for it
        self.stats = CycleStats()
        self.last: tuple[Translation, Decisions] | None = None
        # The storage objects as this cycle read them, and the PVs being bound to claims by
        # calls still in flight (not offered to any other claim meanwhile).
        self.storage: VolumeReader | None = None
        self.volumes_in_flight: set[str] = set()
        self.volume_bind_timeout_s = VOLUME_BIND_TIMEOUT_S
        # The core's input kept from cycle to cycle (live.py); cfg.incremental False reads the
        # whole cache every cycle instead (the reference it is checked against).
        self.live = LiveState(self.cache, cfg.policy, self.policy)
        self.check_failures = 0  # full checks that found the incremental state wrong
        self._checked_at = time.monotonic()
        self._told: dict[str, tuple[str, str, float]] = {}  # pod -> the reason last queued, when

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader if self.elector else True

    def _term(self) -> int | None:
        """The lease term this replica may act in now (0 without leader election), or None."""
        return self.elector.current_term() if self.elector else 0

    def _forget_term(self) -> None:
        """A term ended: a new leader decides from now on, so what this one queued and assumed
        goes (a call already queued would be refused by the fence anyway)."""
        dropped = self.actuator.cancel_pending()
        with self._assumed_lock:
            self.assumed.clear()
        self.nominations = Nominations()
        log.info("lost the lease; dropped %d queued API calls", dropped)

    @property
    def ready(self) -> bool:
        return self.cache.is_synced

    def healthy(self, now: float | None = None) -> bool:
        """The loop is turning: a cycle, or a wait as standby, within three intervals."""
        now = time.time() if now is None else now
        return now - self.stats.last_cycle_at < 3 * self.cfg.interval_s + 30

    def start(self) -> None:
        self.cache.start()
        if self.elector:
            self.elector.start()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self.elector:
            self.elector.stop(release=True)
        self.cache.stop()
        self.worker.stop()
        self.actuator.close()
        self.hooks.close()

    def run(self) -> None:
        """The loop; returns after `stop()`."""
        started = time.time()
        self.start()
        was_leader = False
        acting: int | None = None  # the lease term the last cycle ran in
        first_of_term = False
        self.stats.last_cycle_at = time.time()
        last_end = -math.inf  # monotonic end of the last cycle
        while not self._stop.is_set():
            self._changed.wait(self.cfg.interval_s)
            if self._stop.is_set():
                break
            # Pace the loop: between the end of one cycle and the start of the next, at least
            # the debounce and at least as long as the last cycle took, so deciding never
            # takes more than half the time from binding and watching. A change after a quiet
            # spell starts a cycle at once (a new pod is placed in milliseconds); the changes
            # of a burst gather while the pause runs.
            pause = max(self.cfg.debounce_s, self.stats.last_cycle_s) - (time.monotonic() - last_end)
            if pause > 0:
                time.sleep(pause)
            self._changed.clear()
            # Checked every cycle: a pause past the renew deadline ends the term here (and the
            # actuator checks again before each call), even before the elector's thread runs.
            term = self._term()
            leading = term is not None
            if leading != was_leader:
                self.hooks.leader(leading)
                was_leader = leading
            if term != acting:
                if acting is not None:  # also when the lease was lost and taken back since
                    self._forget_term()
                acting = term
                first_of_term = self.elector is not None and leading
            if not leading or not self.cache.is_synced:
                self.stats.last_cycle_at = time.time()
                continue
            if first_of_term and self.elector is not None:
                first_of_term = False
                self.stats.took_lease_to_cycle_s = self.elector.clock() - self.elector.acquired_at
                log.info(
                    "leading (term %d): first cycle %.3fs after taking the lease",
                    term,
                    self.stats.took_lease_to_cycle_s,
                )
            try:
                decisions = self.cycle(term)
                if self.stats.cycles == 1:
                    log.info(
                        "first cycle %.2fs after start: %d binds, %d evictions, %d gangs pending",
                        time.time() - started,
                        len(decisions.binds),
                        len(decisions.evictions),
                        len(decisions.pending),
                    )
            except Exception:
                log.exception("decision cycle failed; the next one starts from the cache again")
            self.stats.last_cycle_at = time.time()
            last_end = time.monotonic()

    # ------------------------------------------------------------------ one cycle

    def _assumed(self, now: float) -> dict[str, str]:
        """Pods bound by this daemon whose watch event has not come back: pod -> node. An
        entry goes once the pod shows a node, is replaced (another uid), is gone or expired."""
        out: dict[str, str] = {}
        store = self.cache["pods"]
        with self._assumed_lock:
            for key, (node, uid, when) in list(self.assumed.items()):
                pod = store.get(key)
                if pod is None:
                    if when is not None:
                        del self.assumed[key]
                    continue
                expired = when is not None and now - when > ASSUME_TTL_S
                if pod["spec"].get("nodeName") or uid != pod["metadata"].get("uid") or expired:
                    del self.assumed[key]
                else:
                    out[key] = node
        return out

    def _pods_with_assumed(self, now: float) -> list[dict[str, Any]]:
        overlay = self._assumed(now)
        pods = self.cache["pods"].items()
        if not overlay:
            return [p for _k, p in pods]
        return [{**p, "spec": {**p["spec"], "nodeName": overlay[k]}} if k in overlay else p for k, p in pods]

    def _held_preemptors(self, now: float) -> set[str]:
        live = self.cache["pods"]
        held = set()
        for gang, (victims, since) in list(self.preempting.items()):
            if now - since > PREEMPTION_TTL_S or not any(_still_there(live.get, v) for v in victims):
                del self.preempting[gang]
            else:
                held.add(gang)
        return held

    def snapshot(self, now: float) -> Translation:
        builder = SnapshotBuilder(self.cache["gputeams"].values())
        usage = self.hooks.usage(now, builder.teams)
        pods = self._pods_with_assumed(now)
        self.storage = VolumeReader(
            self.cache["pvcs"].values(),
            self.cache["pvs"].values(),
            self.cache["storageclasses"].values(),
            self.cache["csinodes"].values(),
            pods,
            taken=set(self.volumes_in_flight),
        )
        return builder.build(
            now,
            self.cache["nodes"].values(),
            pods,
            self.cache["podgroups"].values(),
            self.cache["pdbs"].values(),
            usage=usage,
            unhealthy=self.hooks.unhealthy(),
            hold=self._held_preemptors(now),
            nominated=self.nominations.held,
            priority_classes=self.cache["priorityclasses"].values(),
            volumes=self.storage.read,
            namespaces_raw=self.cache["namespaces"].values(),
            owners=CacheOwners(self.cache.stores),
        )

    def live_snapshot(self, now: float) -> Translation:
        """The Translation of the incremental state, brought up to date (live.py)."""
        live = self.live
        tr = live.refresh(
            now,
            unhealthy=self.hooks.unhealthy(),
            hold=self._held_preemptors(now),
            nominated=self.nominations.held,
            overlay=self._assumed(now),
            taken=frozenset(self.volumes_in_flight),
        )
        self.storage = live.storage
        tr.snapshot = replace(tr.snapshot, usage=self.hooks.usage(now, live.teams))
        if self.cfg.check_incremental or time.monotonic() - self._checked_at >= self.cfg.full_check_every_s:
            self.check_incremental(now)
        return tr

    def check_incremental(self, now: float) -> list[str]:
        """Compares the incremental state with a fresh build of the whole cache and logs any
        difference; a wrong state is rebuilt. Skipped (empty) when the watch brought
        changes meanwhile, which the fresh build would see and the state not yet."""
        self._checked_at = time.monotonic()
        fresh = self.live.fresh(now, self.hooks.unhealthy(), frozenset(self.volumes_in_flight))
        if any(store.pending for store in self.cache.stores.values()):
            return []
        found = self.live.differences(fresh)
        if found:
            self.check_failures += 1
            log.error("incremental state differs from a fresh build (%s); rebuilding it", "; ".join(found))
            self.live.core = None
            self.live._built = False
        return found

    def cycle(self, term: int | None = None) -> Decisions:
        """One decision; with leader election its binds and evictions are sent only while
        this replica still leads in `term` (None: in whatever term it leads then)."""
        started = time.perf_counter()
        now = time.time()
        if self.cfg.incremental:
            tr = self.live_snapshot(now)
            assert self.live.core is not None
            decisions = self.live.core.decide(now, tr.snapshot.usage)
        else:
            tr = self.snapshot(now)
            decisions = decide(tr.snapshot, self.cfg.policy, self.policy)
        self._spend_nominations(tr)
        self._evict(tr, decisions, now, term)
        self._bind(tr, decisions, now, term)
        self._explain(tr, decisions, now)
        seconds = time.perf_counter() - started
        self.stats.cycles += 1
        self.stats.last_cycle_s = seconds
        self.last = (tr, decisions)
        try:
            self.hooks.cycle_done(tr, decisions, seconds)
        except Exception:  # bookkeeping only: the cycle's binds and evictions are queued already
            self.stats.hook_failures += 1
            log.exception("after-cycle hook failed (%d times); scheduling goes on", self.stats.hook_failures)
        return decisions

    def _spend_nominations(self, tr: Translation) -> None:
        """The cycle saw these pods: their nominations are used up (see core.nominations);
        those of pods that are gone go too."""
        if self.nominations:
            if self.cfg.incremental:
                self.nominations.spend([k for k in self.nominations.held if self.live.in_core(k)])
            else:
                self.nominations.spend(p.name for g in tr.snapshot.gangs for p in g.pods)
            self.nominations.forget_gone(tr.pods)

    def _evict(self, tr: Translation, decisions: Decisions, now: float, term: int | None) -> None:
        if not decisions.evictions:
            return
        victims: dict[str, set[str]] = defaultdict(set)
        calls = []
        for ev in decisions.evictions:
            pod = tr.pods.get(ev.pod)
            if pod is None:
                continue
            victims[ev.preemptor].add(ev.pod)
            calls.append((self.actuator.evict, (pod, term)))
            log.info("evicting %s (gang %s) for %s: %s", ev.pod, ev.gang, ev.preemptor, ev.reason)
        outcomes = self.actuator.run_all(-10, calls)  # before any queued bind
        refused = set()
        for o in outcomes:
            self.stats.evictions[o.result] += 1
            if o.result in ("pdb_blocked", "error", "fenced"):
                refused.add(o.pod)
        self.hooks.acted("evict", outcomes)
        done = {o.pod for o in outcomes if o.result in ("ok", "gone")}
        for ev in decisions.evictions:
            if ev.pod in done and ev.pod in tr.pods:  # said once it happened, never for a refusal
                self.worker.submit(f"preempted:{ev.pod}", self.explainer.preempted, tr.pods[ev.pod], ev)
        self.hooks.evicted([ev for ev in decisions.evictions if ev.pod in done], now)
        for gang, pods in victims.items():
            # Hold the preemptor only while victims that were really evicted still leave;
            # a refused eviction (a PodDisruptionBudget) sends it back to the next cycle.
            leaving = {(key, tr.pods[key]["metadata"].get("uid", "")) for key in pods - refused}
            if leaving:
                self.preempting[gang] = (leaving, now)
                self.nominations.hold(decisions, tr.gang_pods.get(gang, ()))

    def _bind(self, tr: Translation, decisions: Decisions, now: float, term: int | None) -> None:
        """Queues the binds without waiting: each pod counts as bound (assumed) from now on,
        and a failed bind drops the assumption so the next cycle decides again."""
        gangs: Mapping[str, Gang] = {}
        if decisions.binds:
            core = self.live.core
            gangs = core.gangs if self.cfg.incremental and core else {g.id: g for g in tr.snapshot.gangs}
        chosen: set[str] = set()  # PVs given to claims of this cycle's binds
        plans, refused = self._volume_plans(tr, decisions, chosen, now)
        for b in decisions.binds:
            if b.gang in self.preempting:
                continue
            pod = tr.pods.get(b.pod)
            if pod is None:
                continue
            if b.gang in refused:  # a pod of the gang found no PV: none of its pods binds
                continue
            plan = plans.get(b.pod)
            with self._assumed_lock:
                if b.pod in self.assumed:  # already queued by an earlier cycle
                    continue
                self.assumed[b.pod] = (b.node, pod["metadata"].get("uid"), None)
            if plan is not None:
                self._bind_with_volumes(b, pod, plan, term, gangs.get(b.gang))
                continue
            # Production first, then training, then scavenger.
            self.actuator.submit(
                -int(b.tier),
                self.actuator.bind,
                (pod, b.node, term),
                self._bound_callback(pod, b, gangs.get(b.gang)),
            )

    def _volume_plans(
        self, tr: Translation, decisions: Decisions, chosen: set[str], now: float
    ) -> tuple[dict[str, Plan], set[str]]:
        """The PVs (or selected node) for each bound pod's unbound claims, planned for a
        whole gang before any of its pods binds: when one pod of a gang can have none on its
        node now, the gang's id maps to nothing, none of its pods is bound, and the pod says
        why (the next cycle decides again), so a gang stays all-or-nothing. Returns the
        plans by pod and the gangs refused."""
        storage = self.storage
        out: dict[str, Plan] = {}
        if storage is None or not storage.unbound:
            return out, set()
        nodes = {n.name: n for n in tr.snapshot.nodes}
        failed: set[str] = set()
        for b in decisions.binds:
            pod = tr.pods.get(b.pod)
            if pod is None or b.pod not in storage.unbound or b.gang in failed:
                continue
            node = nodes.get(b.node)
            got: Plan | str = storage.plan(pod, b.node, node.labels if node else {}, chosen)
            if isinstance(got, str):
                failed.add(b.gang)
                self.worker.submit(b.pod, self.explainer.pending, pod, "Unschedulable", got, now)
                continue
            chosen |= {pv["metadata"]["name"] for pv, _pvc in got.bind}
            out[b.pod] = got
        for b in decisions.binds:
            if b.gang in failed and b.pod in out:  # its PVs go back to the others of the cycle
                chosen -= {pv["metadata"]["name"] for pv, _pvc in out.pop(b.pod).bind}
        return out, failed

    def _bind_with_volumes(
        self, b: Bind, pod: dict[str, Any], got: Plan, term: int | None, gang: Gang | None
    ) -> None:
        """The pod's unbound claims first get their PVs (or a selected node), then the pod is
        bound (volumebinder.py)."""
        names = {pv["metadata"]["name"] for pv, _pvc in got.bind}
        self.volumes_in_flight |= names
        bound = self._bound_callback(pod, b, gang)

        def done(outcome: Outcome) -> None:
            self.volumes_in_flight -= names
            bound(outcome)

        args = (self.actuator, self.cache["pvcs"].get, pod, b.node, got, term, self.volume_bind_timeout_s)
        self.actuator.submit(-int(b.tier), bind_with_volumes, args, done)

    def _bound_callback(self, pod: dict[str, Any], bind: Bind, gang: Gang | None):
        node = bind.node

        def done(outcome: Outcome) -> None:
            self.stats.binds[outcome.result] += 1
            with self._assumed_lock:
                if outcome.result == "ok":
                    self.assumed[outcome.pod] = (node, pod["metadata"].get("uid"), time.time())
                else:
                    self.assumed.pop(outcome.pod, None)
            if outcome.result == "ok":
                self.worker.submit(f"bound:{outcome.pod}", self.explainer.bound, pod, node)
                if gang is not None:
                    self.hooks.started(gang, bind.tier.label, time.time())
            else:
                self._changed.set()
            self.hooks.acted("bind", [outcome])

        return done

    def _explain(self, tr: Translation, decisions: Decisions, now: float) -> None:
        live: set[str] = set()

        told = self._told
        again_s = self.explainer.condition_every_s

        def waiting(gang: str, code: str, why: str) -> None:
            """Queues the reason for each of the gang's pods that is not bound; the same words
            for the same pod go again only after condition_every_s, so a deep queue that
            does not move costs a look-up per pod, not a background call."""
            for key in tr.gang_pods.get(gang, ()):
                pod = tr.pods.get(key)
                if pod is not None and not pod["spec"].get("nodeName"):
                    live.add(key)
                    last = told.get(key)
                    if last is not None and last[0] == code and last[1] == why and now - last[2] < again_s:
                        continue
                    told[key] = (code, why, now)
                    self.worker.submit(key, self.explainer.pending, pod, code, why, now)

        for gang, why in tr.invalid.items():
            waiting(gang, "Invalid", why)
        for gang, (victims, _since) in self.preempting.items():
            left = sum(1 for v in victims if _still_there(self.cache["pods"].get, v))
            waiting(
                gang,
                "Preempting",
                f"preempting: waiting for {left} evicted pod(s) to terminate before binding",
            )
        for p in decisions.pending:
            waiting(p.gang, p.code, p.reason)
        team_problems = {p.name: p.message for p in tr.problems if p.kind == "GPUTeam"}
        for problem in tr.problems:  # a node or pod left out for bad input: in the log too, once
            if problem.kind != "GPUTeam" and problem.message not in self._logged:
                self._logged.add(problem.message)
                log.warning("left out: %s", problem.message)
        for obj in self.cache["gputeams"].values():
            name = obj["metadata"]["name"]
            if name in team_problems:
                live.add(f"GPUTeam/{name}")
                self.worker.submit(
                    f"teamproblem:{name}", self.explainer.team_problem, obj, team_problems[name], now
                )
            status = decisions.teams.get(name)
            self.worker.submit(
                f"team:{name}", self.explainer.team_status, name, status, team_problems.get(name), now
            )
        if len(told) > len(live):
            for key in [k for k in told if k not in live]:
                del told[key]
        self.worker.submit("forget", self.explainer.forget, live)
