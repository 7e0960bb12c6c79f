"""The GPU-hour ledger: what each team used, per budget period and tier, kept in SQL.

Accrual is derived from gang start and end times and checkpointed per gang
(`charged_until_s`), all in one transaction, so it is idempotent and crash-safe: calling
`accrue` twice with the same instant charges nothing the second time, and after a restart
(or a crash between accruals) the next accrual charges everything since the stored
checkpoint, so nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import create_engine, delete, event, func
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlmodel import Session, col, select

from scheduler.core.budget import period_bounds
from scheduler.core.errors import InvalidInput
from scheduler.core.model import Bind, Budget, Eviction, Team, TeamUsage, Tier
from scheduler.ledger import migrate as migrations
from scheduler.ledger.decay import decay, decayed_charge
from scheduler.ledger.tables import AuditEntry, Checkpoint, GangRecord, LevelUsage, PeriodUsage, TeamDecay

DEFAULT_HALF_LIFE_S = 7 * 86400.0
DEFAULT_RETENTION_S = 400 * 86400.0
# Teams without a budget still get their use recorded per calendar month.
DEFAULT_PERIOD = Budget(0.0, "month")
_CHUNK = 500


class LedgerError(InvalidInput):
    """The ledger cannot be opened or used as configured; the message says what to change."""


class GangRun(NamedTuple):
    """One run of a gang as the daemon sees it; a plain tuple in this order works too.

    `end_s` is set for a run that ended (completed, failed, or evicted: an evicted gang
    that starts again later is a new run of the same gang, with a new `start_s`).
    `gpus` counts the whole gang (a shared GPU as its fraction). `tier` is the tier the
    gang runs in ('production', 'training', 'scavenger', or a `Tier`).
    """

    gang_id: str
    team: str
    tier: str | Tier
    gpus: float
    start_s: float
    end_s: float | None = None
    namespace: str = ""
    nodes: tuple[str, ...] = ()
    submit_s: float | None = None


@dataclass(frozen=True, slots=True)
class Accrual:
    """What one `accrue` call charged: GPU-seconds by (team, tier), for the metrics counters."""

    now_s: float
    gpu_seconds: Mapping[tuple[str, str], float] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # runs refused (bad input), one message each; the rest were charged

    @property
    def total_gpu_seconds(self) -> float:
        return float(sum(self.gpu_seconds.values()))


@dataclass(frozen=True, slots=True)
class Preemption:
    """One gang preempted: who, in which tier, why (`kind`), and the GPU-seconds of work lost."""

    gang: str
    team: str
    tier: str
    kind: str
    lost_gpu_seconds: float


def _tier(value: str | Tier) -> str:
    return value.label if isinstance(value, Tier) else str(value)


def _run(value: GangRun | Sequence) -> GangRun:
    """A GangRun from a GangRun or a plain tuple; a run that cannot be charged is refused."""
    run = value if isinstance(value, GangRun) else GangRun(*value)
    obj = f"gang {run.gang_id!r}"
    if not run.gang_id or not run.team:
        raise LedgerError(obj, "gang_id/team", "empty", "give every run a gang id and its team")
    if not (math.isfinite(run.gpus) and run.gpus >= 0):
        raise LedgerError(obj, "gpus", f"{run.gpus!r} is not a GPU count", "give 0 or more GPUs")
    if not math.isfinite(run.start_s):
        raise LedgerError(obj, "start_s", f"{run.start_s!r} is not an instant", "give the run's start time")
    if run.end_s is not None and not run.end_s >= run.start_s:
        raise LedgerError(obj, "end_s", f"{run.end_s!r} is before the start", "give the run's end time")
    return run


def _runs(values: Iterable[GangRun | Sequence], skipped: list[str]) -> list[GangRun]:
    out = []
    for value in values:
        try:
            out.append(_run(value))
        except (LedgerError, TypeError, ValueError) as exc:
            skipped.append(str(exc))
    return out


def database_url(target: str | os.PathLike[str]) -> URL:
    """A SQLAlchemy URL from a file path (SQLite) or a URL (SQLite or PostgreSQL)."""
    text = os.fspath(target)
    if "://" not in text:
        path = Path(text).expanduser()
        if not path.parent.is_dir():
            raise LedgerError(
                "ledger",
                "path",
                f"folder {str(path.parent)!r} does not exist",
                "create the folder, or give a file path in an existing one",
            )
        return URL.create("sqlite", database=str(path))
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as exc:
        raise LedgerError(
            "ledger",
            "url",
            f"{text!r} is not a database URL ({exc})",
            "give a file path for SQLite, or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE",
        ) from exc
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise LedgerError(
            "ledger",
            "url",
            f"backend {url.get_backend_name()!r} is not supported",
            "use a SQLite file path or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE",
        )
    if url.get_backend_name() == "sqlite" and not url.database:
        raise LedgerError(
            "ledger", "url", "an in-memory SQLite ledger forgets everything", "give a file path"
        )
    return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a committed accrual survives power loss too
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _engine(url: URL) -> Engine:
    try:
        if url.get_backend_name() == "sqlite":
            engine = create_engine(url)
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise LedgerError(
            "ledger",
            "url",
            f"no database driver for {url.drivername!r} ({exc})",
            "use postgresql+psycopg:// (psycopg is a gpufair dependency) or a SQLite path",
        ) from exc


# A gang's id once named its PodGroup or gpufair.io/gang label without its kind ("ns/NAME");
# it is now "ns/podgroup:NAME" or "ns/gang:NAME", so two kinds of one name never merge.
_KINDS = ("podgroup:", "gang:")


def legacy_gang_id(gang_id: str) -> str | None:
    """The id a PodGroup or label gang had before ids named their kind (None: no other)."""
    ns, sep, name = gang_id.partition("/")
    for kind in _KINDS:
        if sep and name.startswith(kind):
            return f"{ns}/{name[len(kind) :]}"
    return None


def _take_over(row: GangRecord, old: GangRecord | None, run: GangRun) -> None:
    """A run still open under its gang's old id (booked before an upgrade) goes on under the
    new id from where it was charged, and the old row is closed there: nothing is charged
    twice, and nothing is lost."""
    if old is None or old.end_s is not None or old.run_start_s != run.start_s or old.team != run.team:
        return
    row.start_s, row.run_start_s, row.submit_s = old.start_s, old.run_start_s, old.submit_s
    row.charged_until_s = old.charged_until_s
    old.end_s = old.charged_until_s


def _split(budget: Budget, start_s: float, end_s: float) -> Iterable[tuple[float, float, float]]:
    """(period start, period end, seconds) of [start_s, end_s] cut at budget-period boundaries."""
    t = start_s
    while t < end_s:
        p_start, p_end = period_bounds(budget, t)
        if not p_end > t:  # float rounding at a boundary: step into the next period
            p_start, p_end = period_bounds(budget, math.nextafter(t, math.inf))
        stop = min(end_s, p_end)
        yield p_start, p_end, stop - t
        t = stop


def _groups_above(teams: Sequence[Team]) -> dict[str, tuple[str, ...]]:
    """Per team, the groups above it in the tree (spec.parent), nearest first."""
    parent = {t.name: t.parent for t in teams}
    out: dict[str, tuple[str, ...]] = {}
    for name in parent:
        chain: list[str] = []
        p = parent[name]
        while p is not None and p in parent and p not in chain:
            chain.append(p)
            p = parent[p]
        if chain:
            out[name] = tuple(chain)
    return out


class Ledger:
    """GPU-hours per team, period and tier; gang records; the audit log. One per daemon.

    `target` is a SQLite file path (WAL mode) or a URL (`postgresql+psycopg://...`).
    The schema is migrated to the newest revision when the ledger opens (`migrate=False`
    leaves it alone, for tools that only read). `half_life_s` is the policy's
    `usage_half_life_s`; `retention_s` how long `prune` keeps ended gangs, audit entries
    and past periods.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        half_life_s: float = DEFAULT_HALF_LIFE_S,
        retention_s: float = DEFAULT_RETENTION_S,
        migrate: bool = True,
    ) -> None:
        if not half_life_s > 0:
            raise LedgerError("ledger", "half_life_s", f"{half_life_s!r} is not above 0", "use e.g. 7 days")
        if not retention_s > 0:
            raise LedgerError("ledger", "retention_s", f"{retention_s!r} is not above 0", "use e.g. 400 days")
        self.url = database_url(target)
        self.half_life_s = float(half_life_s)
        self.retention_s = float(retention_s)
        self.engine = _engine(self.url)
        if migrate:
            self.migrate()

    # ------------------------------------------------------------------ lifecycle

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema; a database that cannot be reached is a clear LedgerError."""
        try:
            migrations.upgrade(self.engine, revision)
        except DBAPIError as exc:
            raise self._unreachable(exc) from exc

    def revision(self) -> str | None:
        return migrations.current_revision(self.engine)

    def _unreachable(self, exc: DBAPIError) -> LedgerError:
        reason = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc).strip() else repr(exc)
        return LedgerError(
            "ledger",
            self.url.render_as_string(hide_password=True),
            f"cannot open the database: {reason}",
            "check that the database server runs and that host, port, user, password and database are right",
        )

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------------ accrual

    def accrue(
        self,
        now_s: float,
        running: Iterable[GangRun | Sequence] = (),
        finished: Iterable[GangRun | Sequence] = (),
        teams: Iterable[Team] = (),
    ) -> Accrual:
        """Charge every gang its GPU-seconds from its last charged instant up to `now_s`.

        `running`: gangs running now. `finished`: runs that ended since the last accrual
        (completed, failed or evicted), each with `end_s`; they are charged up to
        `end_s` and closed. `teams` give each team's budget period, so a charge that
        crosses a period boundary is split into the right period rows (teams not given,
        or without a budget, are booked per calendar month). One transaction.
        """
        teams = list(teams)
        budgets = {t.name: (t.budget or DEFAULT_PERIOD) for t in teams}
        above = _groups_above(teams)
        if not math.isfinite(now_s):
            raise LedgerError("ledger", "now_s", f"{now_s!r} is not an instant", "give epoch seconds")
        skipped: list[str] = []
        ended = _runs(finished, skipped)
        live = _runs(running, skipped)
        charged: dict[tuple[str, str], float] = defaultdict(float)
        with self._session() as s, s.begin():
            named = {r.gang_id for r in (*ended, *live)}
            ids = sorted(named | {old for i in named if (old := legacy_gang_id(i)) is not None})
            rows: dict[str, GangRecord] = {}
            for i in range(0, len(ids), _CHUNK):
                stmt = select(GangRecord).where(col(GangRecord.gang_id).in_(ids[i : i + _CHUNK]))
                rows.update((g.gang_id, g) for g in s.exec(stmt))
            decays = {d.team: d for d in s.exec(select(TeamDecay))}
            ref = max([now_s, *(d.decayed_at_s for d in decays.values())])
            contributions: dict[str, float] = defaultdict(float)
            periods: dict[tuple[str, float, str], PeriodUsage] = {}
            levels: dict[tuple[str, float, str], LevelUsage] = {}

            def book(run: GangRun, until: float) -> None:
                row = rows.get(run.gang_id)
                if row is None:
                    row = GangRecord(gang_id=run.gang_id, team=run.team, tier=_tier(run.tier), gpus=run.gpus)
                    rows[run.gang_id] = row
                    s.add(row)
                    _take_over(row, rows.get(legacy_gang_id(run.gang_id) or ""), run)
                if row.run_start_s != run.start_s:  # a new run (first start, or a restart)
                    row.run_start_s = run.start_s
                    row.end_s = None
                    if row.start_s is None:
                        row.start_s = run.start_s
                row.team, row.tier, row.gpus = run.team, _tier(run.tier), float(run.gpus)
                row.namespace = run.namespace or row.namespace
                row.nodes = ",".join(run.nodes) or row.nodes
                if run.submit_s is not None:
                    row.submit_s = run.submit_s
                frm = run.start_s if row.charged_until_s is None else max(row.charged_until_s, run.start_s)
                if until > frm and run.gpus > 0:
                    budget = budgets.get(run.team, DEFAULT_PERIOD)
                    for p_start, p_end, seconds in _split(budget, frm, until):
                        key = (run.team, p_start, row.tier)
                        usage = periods.get(key) or s.get(PeriodUsage, key)
                        if usage is None:
                            usage = PeriodUsage(
                                team=run.team, period_start_s=p_start, tier=row.tier, period_end_s=p_end
                            )
                            s.add(usage)
                        periods[key] = usage
                        usage.gpu_seconds += run.gpus * seconds
                        charged[(run.team, row.tier)] += run.gpus * seconds
                    for group in above.get(run.team, ()):  # every level above, in its own period
                        for p_start, p_end, seconds in _split(budgets[group], frm, until):
                            lkey = (group, p_start, row.tier)
                            level = levels.get(lkey) or s.get(LevelUsage, lkey)
                            if level is None:
                                level = LevelUsage(
                                    level=group, period_start_s=p_start, tier=row.tier, period_end_s=p_end
                                )
                                s.add(level)
                            levels[lkey] = level
                            level.gpu_seconds += run.gpus * seconds
                    contributions[run.team] += decayed_charge(run.gpus, frm, until, ref, self.half_life_s)
                if row.charged_until_s is None or until > row.charged_until_s:
                    row.charged_until_s = until

            for run in ended:
                end = min(now_s, run.end_s if run.end_s is not None else now_s)
                book(run, end)
                rows[run.gang_id].end_s = end
            for run in live:
                book(run, now_s)

            for team in sorted(set(contributions) | set(decays)):
                d = decays.get(team)
                if d is None:
                    d = TeamDecay(team=team, decayed_gpu_seconds=0.0, decayed_at_s=ref)
                    s.add(d)
                d.decayed_gpu_seconds = decay(
                    d.decayed_gpu_seconds, ref - d.decayed_at_s, self.half_life_s
                ) + contributions.get(team, 0.0)
                d.decayed_at_s = ref
            self._checkpoint(s, "last_accrual_s", now_s, keep_max=True)
        return Accrual(now_s, dict(charged), tuple(skipped))

    @staticmethod
    def _checkpoint(s: Session, name: str, value: float, keep_max: bool = False) -> None:
        row = s.get(Checkpoint, name)
        if row is None:
            s.add(Checkpoint(name=name, value_s=value))
        elif not keep_max or value > row.value_s:
            row.value_s = value

    def checkpoint(self, name: str = "last_accrual_s") -> float | None:
        """A stored instant: 'last_accrual_s' or 'last_prune_s' (None before the first)."""
        with self._session() as s:
            row = s.get(Checkpoint, name)
            return None if row is None else row.value_s

    # ------------------------------------------------------------------ reading

    def usage(
        self, now_s: float, teams: Iterable[Team] = (), half_life_s: float | None = None
    ) -> dict[str, TeamUsage]:
        """Each team's `TeamUsage` at `now_s`, as the core's Snapshot wants it.

        `decayed_gpu_seconds`: the stored accumulator decayed from its instant to `now_s`
        with the half-life (the ledger's own unless given; give the same one).
        `period_gpu_hours`: GPU-hours of all tiers charged to the team's budget period
        that holds `now_s`. Usage since the last `accrue` is not in it: accrue first.
        Without `teams`, every team the ledger knows, with calendar-month periods.
        """
        h = self.half_life_s if half_life_s is None else half_life_s
        teams = list(teams)
        with self._session() as s:
            decays = {d.team: d for d in s.exec(select(TeamDecay))}
            if teams:
                budgets = {t.name: (t.budget or DEFAULT_PERIOD) for t in teams}
            else:
                known = set(decays) | set(s.exec(select(PeriodUsage.team).distinct()))
                budgets = dict.fromkeys(sorted(known), DEFAULT_PERIOD)
            out: dict[str, TeamUsage] = {}
            above = _groups_above(teams)
            groups = {g for gs in above.values() for g in gs}
            for name, budget in budgets.items():
                start, end = period_bounds(budget, now_s)
                if name in groups:  # a group: its level's rows, its subtree's decayed usage
                    total = s.exec(
                        select(func.coalesce(func.sum(LevelUsage.gpu_seconds), 0.0)).where(
                            LevelUsage.level == name,
                            col(LevelUsage.period_start_s) >= start,
                            col(LevelUsage.period_start_s) < end,
                        )
                    ).one()
                    below = [t for t, gs in above.items() if name in gs]
                    decayed = sum(
                        decay(d.decayed_gpu_seconds, now_s - d.decayed_at_s, h)
                        for t in below
                        if (d := decays.get(t)) is not None
                    )
                    out[name] = TeamUsage(decayed_gpu_seconds=decayed, period_gpu_hours=float(total) / 3600.0)
                    continue
                total = s.exec(
                    select(func.coalesce(func.sum(PeriodUsage.gpu_seconds), 0.0)).where(
                        PeriodUsage.team == name,
                        col(PeriodUsage.period_start_s) >= start,
                        col(PeriodUsage.period_start_s) < end,
                    )
                ).one()
                d = decays.get(name)
                decayed = 0.0 if d is None else decay(d.decayed_gpu_seconds, now_s - d.decayed_at_s, h)
                out[name] = TeamUsage(decayed_gpu_seconds=decayed, period_gpu_hours=float(total) / 3600.0)
        return out

    def period_usage(self, now_s: float, team: str, budget: Budget | None = None) -> dict[str, float]:
        """GPU-hours by tier that `team` used in the budget period holding `now_s`."""
        start, end = period_bounds(budget or DEFAULT_PERIOD, now_s)
        with self._session() as s:
            rows = s.exec(
                select(PeriodUsage).where(
                    PeriodUsage.team == team,
                    col(PeriodUsage.period_start_s) >= start,
                    col(PeriodUsage.period_start_s) < end,
                )
            )
            out: dict[str, float] = defaultdict(float)
            for r in rows:
                out[r.tier] += r.gpu_seconds / 3600.0
        return dict(out)

    def gang(self, gang_id: str) -> GangRecord | None:
        with self._session() as s:
            return s.get(GangRecord, gang_id)

    def audit(self, since_s: float = -math.inf, action: str | None = None) -> list[AuditEntry]:
        """Audit entries from `since_s` on, oldest first."""
        with self._session() as s:
            stmt = select(AuditEntry).where(col(AuditEntry.at_s) >= since_s)
            if action is not None:
                stmt = stmt.where(AuditEntry.action == action)
            return list(s.exec(stmt.order_by(col(AuditEntry.at_s), col(AuditEntry.id))))

    # ------------------------------------------------------------------ decisions

    def record_evictions(
        self,
        now_s: float,
        evictions: Iterable[Eviction],
        lost_gpu_seconds: Mapping[str, float] | None = None,
    ) -> list[Preemption]:
        """Audit each evicted pod and count one preemption per gang, with the work lost.

        `lost_gpu_seconds` by gang id (the daemon knows checkpoints); a gang missing there
        loses its GPUs times the time since its current run started. A gang already
        recorded as evicted at `now_s` is skipped, so a retried call counts nothing twice.
        Returns one `Preemption` per gang newly counted (feed them to the metrics).
        """
        lost_given = lost_gpu_seconds or {}
        by_gang: dict[str, list[Eviction]] = defaultdict(list)
        for e in evictions:
            by_gang[e.gang].append(e)
        out: list[Preemption] = []
        if not by_gang:
            return out
        with self._session() as s, s.begin():
            done = set(
                s.exec(
                    select(AuditEntry.gang).where(
                        AuditEntry.action == "evict",
                        AuditEntry.at_s == now_s,
                        col(AuditEntry.gang).in_(list(by_gang)),
                    )
                )
            )
            for gang_id in sorted(set(by_gang) - done):
                pods = by_gang[gang_id]
                row = s.get(GangRecord, gang_id)
                tier = pods[0].victim_tier.label
                if gang_id in lost_given:
                    lost = float(lost_given[gang_id])
                elif row is not None and row.run_start_s is not None:
                    lost = row.gpus * max(0.0, now_s - row.run_start_s)
                else:
                    lost = 0.0
                team = row.team if row is not None else ""
                if row is not None:
                    row.preemptions += 1
                    row.lost_gpu_seconds += lost
                for e in pods:
                    s.add(
                        AuditEntry(
                            at_s=now_s,
                            action="evict",
                            gang=gang_id,
                            pod=e.pod,
                            node=e.node,
                            team=team,
                            tier=tier,
                            preemptor=e.preemptor,
                            kind=e.kind,
                            reason=e.reason,
                        )
                    )
                out.append(Preemption(gang_id, team, tier, pods[0].kind, lost))
        return out

    def record_binds(
        self, now_s: float, binds: Iterable[Bind], teams_by_gang: Mapping[str, str] | None = None
    ) -> int:
        """Audit binds (optional: a busy cluster binds a lot). Returns how many were written."""
        teams_by_gang = teams_by_gang or {}
        entries = [
            AuditEntry(
                at_s=now_s,
                action="bind",
                gang=b.gang,
                pod=b.pod,
                node=b.node,
                team=teams_by_gang.get(b.gang, ""),
                tier=_tier(b.tier),
            )
            for b in binds
        ]
        if entries:
            with self._session() as s, s.begin():
                s.add_all(entries)
        return len(entries)

    # ------------------------------------------------------------------ retention

    def prune(self, now_s: float) -> dict[str, int]:
        """Delete ended gangs, audit entries and periods that ended before `now_s - retention`.

        Open gangs and the per-team decayed usage are never pruned. Returns rows deleted per table.
        """
        cutoff = now_s - self.retention_s
        with self._session() as s, s.begin():
            counts = {
                "gangs": s.exec(
                    delete(GangRecord).where(
                        col(GangRecord.end_s).is_not(None), col(GangRecord.end_s) < cutoff
                    )
                ).rowcount,
                "audit": s.exec(delete(AuditEntry).where(col(AuditEntry.at_s) < cutoff)).rowcount,
                "periods": s.exec(delete(PeriodUsage).where(col(PeriodUsage.period_end_s) < cutoff)).rowcount,
                "levels": s.exec(delete(LevelUsage).where(col(LevelUsage.period_end_s) < cutoff)).rowcount,
            }
            self._checkpoint(s, "last_prune_s", now_s)
        return counts
