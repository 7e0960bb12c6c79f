"""The ledger as a trace: what each gang asked for, each run it had, and the nodes it ran on.

`History` watches the daemon's snapshots and writes only what changed: a gang the first
time it is seen (submit, team, tier, priority, pod count and shape, GPU models, topology
asks, min-runtime, checkpoint interval), a run when its pods start and when it ends, the
gang's outcome when its pods are gone, and the node inventory. A run ends `evicted` (with
the preemptor and the kind of preemption) when the daemon evicted it, and otherwise when
its pods leave the snapshot: `succeeded` when every pod the API still holds succeeded,
`failed` when one failed, `deleted` when they were deleted. End instants come from the
pods' own status (the latest container `finishedAt`) where the API still holds them, so
they do not depend on how often the daemon looks. Schema 0004.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from scheduler.core.model import Eviction, Gang, Node, Pod, Snapshot

PodLookup = Callable[[str], Mapping[str, Any] | None]

OUTCOMES = ("succeeded", "failed", "deleted", "evicted")


class HistoryGang(SQLModel, table=True):
    """One gang as it was asked for, and how it ended (`outcome` empty while it is open)."""

    __tablename__ = "ledger_history_gang"

    gang_id: str = Field(primary_key=True)
    namespace: str = ""
    team: str
    tier: str
    priority: int = 0
    submit_s: float
    pods: int
    gpus_per_pod: int = 0
    gpu_milli: int = 0
    cpu_milli: int = 0
    memory_mib: int = 0
    gpu_model: str = ""  # allowed models, '|'-separated; empty: any
    topology_required: str = ""
    topology_preferred: str = ""
    min_runtime_s: float | None = None
    checkpoint_s: float | None = None
    start_s: float | None = None  # first start
    end_s: float | None = None
    outcome: str = ""
    ended_by: str = ""  # the preemptor of an evicted gang
    nodes: str = ""  # every node it ran on, ','-separated
    runs: int = 0


class HistoryRun(SQLModel, table=True):
    """One run of a gang: from its pods' start to the end of that run."""

    __tablename__ = "ledger_history_run"

    id: int | None = Field(default=None, primary_key=True)
    gang_id: str
    team: str
    tier: str
    gpus: float
    gpu_model: str = ""  # the model of the GPUs it held (the first node's, '|' if mixed)
    nodes: str = ""
    start_s: float
    end_s: float | None = None
    outcome: str = ""
    ended_by: str = ""
    kind: str = ""  # the preemption kind of an evicted run


class HistoryNode(SQLModel, table=True):
    """A node of the inventory, from when it was first seen to when it left (`gone_s`)."""

    __tablename__ = "ledger_history_node"

    name: str = Field(primary_key=True)
    gpus: int
    gpu_model: str = ""
    cpu_milli: int
    memory_mib: int
    labels: str = "{}"  # JSON object
    first_seen_s: float
    last_seen_s: float
    gone_s: float | None = None


@dataclass(slots=True)
class _Open:
    """What the recorder knows of an open gang between snapshots."""

    pods: tuple[str, ...]
    size: int = 0  # the most pods seen at once (not counting a closed run's)
    run_id: int | None = None  # the open run's row
    run_start_s: float | None = None
    run_pods: frozenset[str] = frozenset()  # the pods seen bound in the open run
    evicted_by: str = ""  # the preemptor of its last run, until it runs again
    closed_start: float | None = None  # the start of its last closed run (pods may still leave)
    closed_pods: frozenset[str] = frozenset()  # its pods (bound while they terminate)
    run_decided: float | None = None  # the bind decision the open run started from
    closed_decided: float | None = None  # ... and the closed one


def _stamp(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _finished(pod: Mapping[str, Any]) -> float | None:
    """The latest container `finishedAt` of a terminated pod."""
    ends = [
        _stamp(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        for cs in (pod.get("status") or {}).get("containerStatuses") or ()
    ]
    found = [e for e in ends if e is not None]
    return max(found) if found else None


def ending(pods: Iterable[str], lookup: PodLookup | None, now_s: float) -> tuple[str, float]:
    """(outcome, end) of a gang whose pods left the snapshot, from what the API still holds."""
    raws = [r for r in (lookup(p) for p in pods) if r is not None] if lookup else []
    phases = [(r.get("status") or {}).get("phase") for r in raws]
    ends = [e for e in (_finished(r) for r in raws) if e is not None]
    end = min(now_s, max(ends)) if ends else now_s
    if "Failed" in phases:
        return "failed", end
    if raws and all(p == "Succeeded" for p in phases):
        return "succeeded", end
    return "deleted", now_s


def _terminated(pod: str, lookup: PodLookup | None) -> bool:
    """Whether a pod that left the snapshot finished (succeeded or failed) rather than went
    away; without a lookup it counts as finished (the gang's end tells its outcome)."""
    if lookup is None:
        return True
    raw = lookup(pod)
    return raw is not None and (raw.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class History:
    """Writes gang, run and node history to the ledger's database (schema 0004).

    `tier_of(gang)` is the tier a gang asks for (from its priority). One per daemon; only the
    loop's thread calls it. A restarted daemon picks up the open gangs and runs it left.
    """

    def __init__(self, engine: Engine, tier_of: Callable[[Gang], str]) -> None:
        self.engine = engine
        self.tier_of = tier_of
        self._open: dict[str, _Open] | None = None
        self._nodes: dict[str, tuple] = {}
        self._decided: dict[str, float] = {}  # the last bind decisions observe was told of

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _load(self, s: Session) -> dict[str, _Open]:
        open_: dict[str, _Open] = {}
        for g in s.exec(select(HistoryGang).where(col(HistoryGang.end_s).is_(None))):
            open_[g.gang_id] = _Open(pods=())
        runs = s.exec(select(HistoryRun).where(col(HistoryRun.end_s).is_(None)))
        for r in runs:
            if r.gang_id in open_:
                open_[r.gang_id].run_id, open_[r.gang_id].run_start_s = r.id, r.start_s
        self._nodes = {
            n.name: (n.gpus, n.gpu_model, n.cpu_milli, n.memory_mib, n.labels)
            for n in s.exec(select(HistoryNode).where(col(HistoryNode.gone_s).is_(None)))
        }
        return open_

    def observe(
        self,
        snapshot: Snapshot,
        lookup: PodLookup | None = None,
        run_tiers: Mapping[str, str] | None = None,
        bound_at: Mapping[str, float] | None = None,
    ) -> None:
        """Books what changed since the last snapshot, in one transaction.

        `lookup(pod_key)` gives the API object of a pod the snapshot left out (a terminated
        pod), for outcomes and end times; `run_tiers` the tier each running gang was bound in;
        `bound_at` when the daemon decided each gang's bind (a run that reads as starting
        before it, or within a second after, the API's resolution, starts then).
        """
        now = snapshot.now_s
        run_tiers = run_tiers or {}
        bound_at = bound_at or {}
        self._decided = dict(bound_at)
        teams = {t.name for t in snapshot.teams}
        with self._session() as s, s.begin():
            if self._open is None:
                self._open = self._load(s)
            open_ = self._open
            models = {n.name: n.gpu_model for n in snapshot.nodes}
            seen: set[str] = set()
            for g in snapshot.gangs:
                if g.team not in teams or not g.pods:
                    continue
                seen.add(g.id)
                state = open_.get(g.id)
                if state is None:
                    state = open_[g.id] = _Open(pods=tuple(p.name for p in g.pods), size=len(g.pods))
                    row = s.get(HistoryGang, g.id)
                    if row is None:
                        s.add(self._gang_row(g))
                    elif row.end_s is not None:
                        # Seen again after it left: an evicted gang its controller made anew.
                        row.end_s, row.outcome, row.ended_by = None, "", ""
                else:
                    state.pods = tuple(p.name for p in g.pods)
                    self._grown(s, g, state)
                self._runs(s, g, state, now, models, run_tiers, bound_at, lookup)
            for gid in [gid for gid in open_ if gid not in seen]:
                self._gone(s, gid, open_.pop(gid), lookup, now, bound_at.get(gid))
            self._inventory(s, snapshot.nodes, now)

    def _grown(self, s: Session, g: Gang, state: _Open) -> None:
        """A gang first seen while its controller was still making its pods has more now: its
        row counts them (a closed run's pods, terminating beside a gang made anew, do not)."""
        size = sum(p.name not in state.closed_pods for p in g.pods)
        if size <= state.size:
            return
        state.size = size
        row = s.get(HistoryGang, g.id)
        if row is not None and row.pods < size:
            row.pods = size

    def _gang_row(self, g: Gang) -> HistoryGang:
        first = max(g.pods, key=lambda p: (p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib))
        return HistoryGang(
            gang_id=g.id,
            namespace=g.id.split("/", 1)[0],
            team=g.team,
            tier=self.tier_of(g),
            priority=g.priority,
            submit_s=g.submit_s,
            pods=len(g.pods),
            gpus_per_pod=first.gpus,
            gpu_milli=first.gpu_milli,
            cpu_milli=first.cpu_milli,
            memory_mib=first.memory_mib,
            gpu_model="|".join(sorted(g.gpu_models)),
            topology_required=g.topology_required or "",
            topology_preferred=g.topology_preferred or "",
            min_runtime_s=g.min_runtime_s,
            checkpoint_s=g.checkpoint_s,
        )

    def _runs(
        self,
        s: Session,
        g: Gang,
        state: _Open,
        now: float,
        models: Mapping[str, str],
        run_tiers: Mapping[str, str],
        bound_at: Mapping[str, float],
        lookup: PodLookup | None = None,
    ) -> None:
        bound = [p for p in g.pods if p.node is not None]
        # A gang made anew after an eviction may show its old pods, bound while they
        # terminate, beside its new ones: those belong to the run that was closed.
        fresh = [p for p in bound if p.name not in state.closed_pods or p.name in state.run_pods]
        names = frozenset(p.name for p in fresh)
        if state.run_id is not None:
            missing = state.run_pods - names
            present = {p.name for p in g.pods}
            if names and not missing & present and all(_terminated(k, lookup) for k in missing - present):
                # The same run while the pods seen bound stay bound or finished (a finished
                # pod leaves the snapshot before its gang's others): a start time the API
                # reports later (whole seconds, seconds after the bind under load) is no new
                # run; pods bound since join it.
                if names - state.run_pods:
                    self._grow_run(s, g, state, state.run_pods | names, models)
                return
            # Its pods went back to pending, or were replaced, without an eviction of ours.
            self._close_run(s, state, now, "evicted", "", "")
            fresh = [p for p in bound if p.name not in state.closed_pods]
        if not bound:
            return
        decided = bound_at.get(g.id)
        if not fresh:
            # Only the closed run's pods are bound: still terminating, unless a new bind
            # decision (or a new start) says they were bound again.
            start = self._start(bound, now, decided)
            if start == state.closed_start or (decided is not None and decided == state.closed_decided):
                return
            fresh, names = bound, frozenset(p.name for p in bound)
        start = self._start(fresh, now, decided)
        nodes = sorted({p.node for p in fresh if p.node})
        run = HistoryRun(
            gang_id=g.id,
            team=g.team,
            tier=run_tiers.get(g.id) or self.tier_of(g),
            gpus=sum(p.gpu_amount for p in fresh),
            gpu_model="|".join(sorted({models.get(n, "") for n in nodes})),
            nodes=",".join(nodes),
            start_s=start,
        )
        s.add(run)
        s.flush()
        state.run_id, state.run_start_s, state.evicted_by = run.id, start, ""
        state.run_pods, state.run_decided = names, decided
        row = s.get(HistoryGang, g.id)
        if row is not None:
            row.runs += 1
            if row.start_s is None:
                row.start_s = start
            row.nodes = ",".join(sorted(set(filter(None, row.nodes.split(","))) | set(nodes)))

    @staticmethod
    def _start(pods: Iterable[Pod], now: float, decided: float | None) -> float:
        start = min((p.start_s or now) for p in pods)
        if decided is not None and start <= decided + 1.0:
            # The API's start times are whole seconds, and a pod bound but not started yet
            # reads its creation; it cannot start before the bind decision, which is precise.
            start = decided
        return start

    def _grow_run(
        self, s: Session, g: Gang, state: _Open, names: frozenset[str], models: Mapping[str, str]
    ) -> None:
        """More of the gang's pods bound in the open run: its GPUs and nodes grow."""
        state.run_pods = names
        run = s.get(HistoryRun, state.run_id)
        if run is None:
            return
        nodes = sorted({p.node for p in g.pods if p.name in names and p.node})
        run.gpus = max(run.gpus, sum(p.gpu_amount for p in g.pods if p.name in names and p.node))
        run.nodes = ",".join(nodes)
        run.gpu_model = "|".join(sorted({models.get(n, "") for n in nodes}))
        row = s.get(HistoryGang, g.id)
        if row is not None:
            row.nodes = ",".join(sorted(set(filter(None, row.nodes.split(","))) | set(nodes)))

    def _close_run(self, s: Session, state: _Open, end: float, outcome: str, by: str, kind: str) -> None:
        run = s.get(HistoryRun, state.run_id)
        if run is not None and run.end_s is None:
            run.end_s = max(run.start_s, end)
            run.outcome, run.ended_by, run.kind = outcome, by, kind
        state.closed_start, state.closed_pods = state.run_start_s, state.run_pods
        state.closed_decided = state.run_decided
        state.run_id = state.run_start_s = None
        state.run_pods = frozenset()
        if outcome == "evicted":
            state.evicted_by = by

    def _gone(
        self, s: Session, gid: str, state: _Open, lookup: PodLookup | None, now: float, decided: float | None
    ) -> None:
        outcome, end = ending(state.pods, lookup, now)
        if state.run_id is not None:
            self._close_run(s, state, end, outcome, "", "")
        elif outcome in ("succeeded", "failed") and not set(state.pods) & state.closed_pods:
            # Bound, run and finished between two looks (a daemon busy for seconds): the run
            # from the pods' own record.
            self._unseen_run(s, gid, state.pods, lookup, decided, end, outcome)
        elif state.evicted_by or outcome == "deleted":
            # Its last run was evicted and the gang was not started again.
            run = s.exec(
                select(HistoryRun).where(HistoryRun.gang_id == gid).order_by(col(HistoryRun.start_s).desc())
            ).first()
            if run is not None and run.outcome == "evicted":
                outcome, end = "evicted", run.end_s or now
        row = s.get(HistoryGang, gid)
        if row is not None and row.end_s is None:
            row.end_s, row.outcome, row.ended_by = (
                end,
                outcome,
                state.evicted_by if outcome == "evicted" else "",
            )

    def _unseen_run(
        self,
        s: Session,
        gid: str,
        pods: Iterable[str],
        lookup: PodLookup | None,
        decided: float | None,
        end: float,
        outcome: str,
    ) -> None:
        row = s.get(HistoryGang, gid)
        raws = [r for r in (lookup(p) for p in pods) if r is not None] if lookup else []
        stamps = (_stamp((r.get("status") or {}).get("startTime")) for r in raws)
        starts = [t for t in stamps if t is not None]
        start = min(starts) if starts else decided
        if decided is not None and start is not None and start <= decided + 1.0:
            start = decided  # the API's whole seconds, as for a run seen (`_runs`)
        if row is None or start is None:
            return
        nodes = sorted({n for n in ((r.get("spec") or {}).get("nodeName") for r in raws) if n})
        _book_unseen(s, row, start, max(start, end), outcome, nodes)

    def evicted(self, now_s: float, evictions: Iterable[Eviction]) -> None:
        """Closes the runs the daemon evicted, naming the preemptor and the kind."""
        by_gang: dict[str, Eviction] = {}
        for e in evictions:
            by_gang.setdefault(e.gang, e)
        if not by_gang or self._open is None:
            return
        with self._session() as s, s.begin():
            for gid, e in sorted(by_gang.items()):
                state = self._open.get(gid)
                if state is None:
                    continue
                if state.run_id is not None:
                    self._close_run(s, state, now_s, "evicted", e.preemptor, e.kind)
                    continue
                decided = self._decided.get(gid)
                if decided is not None and decided <= now_s and decided != state.closed_decided:
                    # Bound and evicted before a look saw it run (a look reads the snapshot the
                    # cycle began with): the run from its bind decision to the eviction.
                    self._evicted_unseen(s, gid, state, decided, now_s, e)

    def _evicted_unseen(
        self, s: Session, gid: str, state: _Open, decided: float, now: float, e: Eviction
    ) -> None:
        row = s.get(HistoryGang, gid)
        if row is None:
            return
        _book_unseen(s, row, decided, now, "evicted", [e.node] if e.node else [], e.preemptor, e.kind)
        # Its pods, still bound in the snapshots to come while they terminate, open no run.
        state.closed_start = state.closed_decided = decided
        state.closed_pods = frozenset(state.pods)
        state.evicted_by = e.preemptor

    def _inventory(self, s: Session, nodes: Iterable[Node], now: float) -> None:
        current = {}
        for n in nodes:
            labels = json.dumps(dict(sorted(n.labels.items())))
            current[n.name] = (n.gpus, n.gpu_model, n.cpu_milli, n.memory_mib, labels)
        for name, shape in current.items():
            if self._nodes.get(name) == shape:
                continue
            row = s.get(HistoryNode, name)
            if row is None:
                row = HistoryNode(
                    name=name, gpus=0, cpu_milli=0, memory_mib=0, first_seen_s=now, last_seen_s=now
                )
                s.add(row)
            row.gpus, row.gpu_model, row.cpu_milli, row.memory_mib, row.labels = shape
            row.last_seen_s, row.gone_s = now, None
        for name in set(self._nodes) - set(current):
            row = s.get(HistoryNode, name)
            if row is not None:
                row.last_seen_s = row.gone_s = now
        self._nodes = current


def _book_unseen(
    s: Session,
    row: HistoryGang,
    start: float,
    end: float,
    outcome: str,
    nodes: list[str],
    by: str = "",
    kind: str = "",
) -> None:
    """Books a whole closed run of the gang that no look saw open, with the gang's shape."""
    s.add(
        HistoryRun(
            gang_id=row.gang_id,
            team=row.team,
            tier=row.tier,
            gpus=row.pods * (row.gpus_per_pod + row.gpu_milli / 1000),
            gpu_model=row.gpu_model,
            nodes=",".join(nodes),
            start_s=start,
            end_s=end,
            outcome=outcome,
            ended_by=by,
            kind=kind,
        )
    )
    row.runs += 1
    if row.start_s is None:
        row.start_s = start
    row.nodes = ",".join(sorted(set(filter(None, row.nodes.split(","))) | set(nodes)))


def read_history(
    engine: Engine, since_s: float = -math.inf, until_s: float = math.inf
) -> tuple[list[HistoryGang], dict[str, list[HistoryRun]], list[HistoryNode]]:
    """Gangs submitted in [since_s, until_s), their runs (oldest first), and every node seen
    in that window."""
    with Session(engine, expire_on_commit=False) as s:
        gangs = list(
            s.exec(
                select(HistoryGang)
                .where(col(HistoryGang.submit_s) >= since_s, col(HistoryGang.submit_s) < until_s)
                .order_by(col(HistoryGang.submit_s), col(HistoryGang.gang_id))
            )
        )
        runs: dict[str, list[HistoryRun]] = {}
        ids = [g.gang_id for g in gangs]
        for i in range(0, len(ids), 500):
            stmt = select(HistoryRun).where(col(HistoryRun.gang_id).in_(ids[i : i + 500]))
            for r in s.exec(stmt.order_by(col(HistoryRun.start_s), col(HistoryRun.id))):
                runs.setdefault(r.gang_id, []).append(r)
        nodes = list(
            s.exec(
                select(HistoryNode)
                .where(col(HistoryNode.first_seen_s) < until_s)
                .where((col(HistoryNode.gone_s).is_(None)) | (col(HistoryNode.gone_s) >= since_s))
                .order_by(col(HistoryNode.name))
            )
        )
    return gangs, runs, nodes


def runs_between(engine: Engine, start_s: float, end_s: float) -> list[HistoryRun]:
    """Every run that overlaps [start_s, end_s)."""
    with Session(engine, expire_on_commit=False) as s:
        stmt = select(HistoryRun).where(
            col(HistoryRun.start_s) < end_s,
            (col(HistoryRun.end_s).is_(None)) | (col(HistoryRun.end_s) > start_s),
        )
        return list(s.exec(stmt))
