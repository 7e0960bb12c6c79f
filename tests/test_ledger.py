"""The GPU-hour ledger, the same suite on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from scheduler.core import Budget, Eviction, Team, Tier
from scheduler.core.budget import budget_state, period_bounds
from scheduler.core.fairshare import decay
from scheduler.ledger import GangRun, Ledger, LedgerError
from scheduler.ledger import migrate as migrations
from scheduler.ledger.decay import decayed_charge

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000.0  # 2027-01-15, a Friday
H = 7 * 86400.0
WEEKLY = Team("vision", budget=Budget(100.0, "week"))
MONTHLY = Team("search", budget=Budget(50.0, "month"))
TEAMS = (WEEKLY, MONTHLY)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path) -> str:
    """Where a fresh ledger lives: a SQLite file, or a new database on the PostgreSQL fixture."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_url")


def run(gang: str, team: str, gpus: float, start: float, end: float | None = None, tier: str = "training"):
    return GangRun(gang, team, tier, gpus, start, end, namespace=team, nodes=("n1",), submit_s=start - 60)


def test_a_new_ledger_is_migrated_to_the_newest_schema(target):
    with Ledger(target) as ledger:
        assert ledger.revision() == migrations.head_revision()
        names = set(inspect(ledger.engine).get_table_names())
        assert {"ledger_period_usage", "ledger_gang", "ledger_team_usage", "ledger_audit"} <= names
        assert "ledger_checkpoint" in names
        if ledger.url.get_backend_name() == "sqlite":
            with ledger.engine.connect() as conn:
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert ledger.usage(NOW, TEAMS) == {t.name: ledger.usage(NOW, TEAMS)[t.name] for t in TEAMS}
        assert all(
            u.period_gpu_hours == 0 and u.decayed_gpu_seconds == 0 for u in ledger.usage(NOW, TEAMS).values()
        )


def test_upgrading_from_0001_keeps_the_rows_and_the_accrual_checkpoint(target):
    old = Ledger(target, migrate=False)
    migrations.upgrade(old.engine, "0001")
    assert old.revision() == "0001"
    start, charged = NOW - 7200, NOW - 3600
    with old.engine.begin() as conn:  # what a 0001 ledger had written: one hour of 8 GPUs
        p_start, p_end = period_bounds(WEEKLY.budget, charged)
        conn.execute(
            text(
                "INSERT INTO ledger_gang (gang_id, namespace, team, tier, gpus, start_s, run_start_s, "
                "charged_until_s) VALUES ('g1', 'vision', 'vision', 'training', 8, :s, :s, :c)"
            ),
            {"s": start, "c": charged},
        )
        conn.execute(
            text(
                "INSERT INTO ledger_period_usage (team, period_start_s, tier, period_end_s, gpu_seconds) "
                "VALUES ('vision', :ps, 'training', :pe, 28800)"
            ),
            {"ps": p_start, "pe": p_end},
        )
        conn.execute(
            text("INSERT INTO ledger_team_usage VALUES ('vision', :d, :c)"),
            {"d": decayed_charge(8, start, charged, charged, H), "c": charged},
        )
        conn.execute(
            text("INSERT INTO ledger_audit (at_s, action, gang) VALUES (:c, 'bind', 'g1')"), {"c": start}
        )
    old.close()

    with Ledger(target) as ledger:
        assert ledger.revision() == migrations.head_revision()
        assert ledger.checkpoint("last_accrual_s") == charged
        g = ledger.gang("g1")
        assert (g.gpus, g.start_s, g.charged_until_s) == (8, start, charged)
        assert [a.gang for a in ledger.audit()] == ["g1"]
        assert ledger.usage(charged, TEAMS)["vision"].period_gpu_hours == pytest.approx(8.0)
        # The upgraded ledger carries on from the stored checkpoint: one more hour, not two.
        acc = ledger.accrue(NOW, [run("g1", "vision", 8, start)], teams=TEAMS)
        assert acc.gpu_seconds == {("vision", "training"): pytest.approx(8 * 3600)}
        u = ledger.usage(NOW, TEAMS)["vision"]
        assert u.period_gpu_hours == pytest.approx(16.0)
        assert u.decayed_gpu_seconds == pytest.approx(decayed_charge(8, start, NOW, NOW, H), rel=1e-12)


def test_accrual_is_idempotent_and_independent_of_how_often_it_runs(target, tmp_path):
    runs = [run("a1", "vision", 8, NOW - 3600), run("b1", "search", 2.5, NOW - 1800, tier="production")]
    with Ledger(target) as ledger:
        first = ledger.accrue(NOW, runs, teams=TEAMS)
        assert first.gpu_seconds == {
            ("vision", "training"): pytest.approx(8 * 3600),
            ("search", "production"): pytest.approx(2.5 * 1800),
        }
        before = ledger.usage(NOW, TEAMS)
        again = ledger.accrue(NOW, runs, teams=TEAMS)
        assert again.gpu_seconds == {} and again.total_gpu_seconds == 0
        assert ledger.usage(NOW, TEAMS) == before
        # An earlier instant (a replica with a slow clock) charges nothing either.
        assert ledger.accrue(NOW - 10, runs, teams=TEAMS).total_gpu_seconds == 0
        for k in range(1, 61):  # a minute of 1 s cycles
            ledger.accrue(NOW + k, runs, teams=TEAMS)
        stepped = ledger.usage(NOW + 60, TEAMS)
    with Ledger(tmp_path / "once.db") as once:
        once.accrue(NOW + 60, runs, teams=TEAMS)
        whole = once.usage(NOW + 60, TEAMS)
    for team in ("vision", "search"):
        assert stepped[team].period_gpu_hours == pytest.approx(whole[team].period_gpu_hours, rel=1e-12)
        assert stepped[team].decayed_gpu_seconds == pytest.approx(whole[team].decayed_gpu_seconds, rel=1e-9)
    assert whole["vision"].period_gpu_hours == pytest.approx(8 * 3660 / 3600)


def test_a_charge_across_a_period_boundary_is_split_into_both_periods(target):
    monday, _ = period_bounds(WEEKLY.budget, NOW)
    month_start, _ = period_bounds(MONTHLY.budget, NOW)
    fixed = Team("infra", budget=Budget(10.0, "duration", period_seconds=86400.0, anchor_s=NOW - 1800))
    with Ledger(target) as ledger:
        ledger.accrue(
            monday + 3600,
            [run("w", "vision", 4, monday - 3600)],
            [run("m", "search", 2, month_start - 7200, month_start + 1800)],
            teams=(*TEAMS, fixed),
        )
        ledger.accrue(NOW, [], [run("d", "infra", 1, NOW - 5400, NOW - 900)], teams=(*TEAMS, fixed))
        assert ledger.period_usage(monday + 3600, "vision", WEEKLY.budget) == {"training": pytest.approx(4.0)}
        assert ledger.period_usage(monday - 1, "vision", WEEKLY.budget) == {"training": pytest.approx(4.0)}
        assert ledger.period_usage(month_start, "search", MONTHLY.budget)["training"] == pytest.approx(1.0)
        assert ledger.period_usage(month_start - 1, "search", MONTHLY.budget)["training"] == pytest.approx(
            4.0
        )
        assert ledger.period_usage(NOW, "infra", fixed.budget)["training"] == pytest.approx(900 / 3600)
        assert ledger.period_usage(NOW - 3600, "infra", fixed.budget)["training"] == pytest.approx(1.0)
        assert ledger.usage(monday + 3600, TEAMS)["vision"].period_gpu_hours == pytest.approx(4.0)
        g = ledger.gang("m")
        assert (g.end_s, g.charged_until_s) == (month_start + 1800, month_start + 1800)


def test_usage_is_booked_at_every_level_of_the_tree_in_each_levels_period(target):
    """A department (monthly budget) above a team with a weekly budget and one without:
    the department's period counts its teams' charges this month, whatever their periods."""
    monday, _ = period_bounds(WEEKLY.budget, NOW)
    month_start, _ = period_bounds(MONTHLY.budget, NOW)
    tree = (
        Team("org"),
        Team("dept", parent="org", budget=Budget(500.0, "month")),
        Team("a", parent="dept", namespaces=("a",), budget=Budget(100.0, "week")),
        Team("b", parent="dept", namespaces=("b",)),
    )
    with Ledger(target) as ledger:
        # a ran 2 GPUs from 2 h before Monday; b 1 GPU for 3 h this week.
        ledger.accrue(
            NOW, [run("ga", "a", 2, monday - 7200)], [run("gb", "b", 1, NOW - 4 * 3600, NOW - 3600)], tree
        )
        used = ledger.usage(NOW, tree)
        this_week = 2 * (NOW - monday) / 3600
        assert used["a"].period_gpu_hours == pytest.approx(this_week)
        assert used["dept"].period_gpu_hours == pytest.approx(this_week + 4 + 3)  # all of it is this month
        assert used["org"].period_gpu_hours == pytest.approx(this_week + 4 + 3)  # calendar month too
        assert used["dept"].decayed_gpu_seconds == pytest.approx(
            used["a"].decayed_gpu_seconds + used["b"].decayed_gpu_seconds
        )
        assert monday > month_start  # the case this checks: the week lies inside the month
        # Booked once: accruing again at the same instant adds nothing.
        ledger.accrue(NOW, [run("ga", "a", 2, monday - 7200)], [], tree)
        assert ledger.usage(NOW, tree)["dept"].period_gpu_hours == pytest.approx(this_week + 7)


_CHILD = textwrap.dedent(
    """
    import sys, time
    from scheduler.core import Budget, Team
    from scheduler.ledger import GangRun, Ledger
    target, start = sys.argv[1], float(sys.argv[2])
    teams = (Team("vision", budget=Budget(100.0, "week")), Team("search", budget=Budget(50.0, "month")))
    ledger = Ledger(target)
    k = 0
    while True:
        k += 1
        now = start + 600.0 * k
        ledger.accrue(now, [GangRun("g1", "vision", "training", 8, start),
                            GangRun("g2", "search", "scavenger", 3, start + 900)], teams=teams)
        print(k, flush=True)
        time.sleep(0.01)
    """
)


def test_a_killed_daemon_loses_nothing_and_counts_nothing_twice(target):
    """A real process accrues every (virtual) 10 minutes and is killed with SIGKILL mid-flight."""
    start = NOW - 86400
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, target, repr(start)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        done = 0
        deadline = time.monotonic() + 60
        while done < 15 and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, "the accruing process died on its own"
            done = int(line)
        assert done >= 15
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    with Ledger(target) as ledger:
        last = ledger.checkpoint("last_accrual_s")
        assert last is not None and last >= start + 600.0 * done
        reopened = ledger.usage(last, TEAMS)
        state = budget_state(WEEKLY.budget, reopened["vision"], last)
    # A second restart sees exactly the same budget left.
    with Ledger(target) as again:
        assert again.usage(last, TEAMS) == reopened
        assert budget_state(WEEKLY.budget, again.usage(last, TEAMS)["vision"], last) == state
        # The daemon was down for an hour and a half: the next accrual charges all of it, once.
        end = last + 5400
        again.accrue(
            end,
            [("g1", "vision", "training", 8, start), ("g2", "search", "scavenger", 3, start + 900)],
            teams=TEAMS,
        )
        u = again.usage(end, TEAMS)
    p_start, _ = period_bounds(WEEKLY.budget, end)
    assert u["vision"].period_gpu_hours == pytest.approx(8 * (end - max(start, p_start)) / 3600, rel=1e-12)
    assert u["vision"].decayed_gpu_seconds == pytest.approx(decayed_charge(8, start, end, end, H), rel=1e-9)
    assert u["search"].decayed_gpu_seconds == pytest.approx(
        decayed_charge(3, start + 900, end, end, H), rel=1e-9
    )


def test_decayed_usage_follows_the_cores_half_life(target):
    with Ledger(target, half_life_s=H) as ledger:
        ledger.accrue(NOW + 3600, [], [run("g", "vision", 8, NOW, NOW + 3600)], teams=TEAMS)
        at_end = ledger.usage(NOW + 3600, TEAMS)["vision"].decayed_gpu_seconds
        # The exact integral of a one-hour charge is just below 8 GPU-hours undecayed.
        assert at_end == pytest.approx(8 * H / math.log(2) * (1 - 2 ** (-3600 / H)), rel=1e-12)
        assert at_end == pytest.approx(8 * 3600 * (1 - math.log(2) * 3600 / H / 2), rel=1e-5)
        for later in (3600.0, H, 3 * H):
            got = ledger.usage(NOW + 3600 + later, TEAMS)["vision"].decayed_gpu_seconds
            assert got == pytest.approx(decay(at_end, later, H), rel=1e-12)
        assert ledger.usage(NOW + 3600 + H, TEAMS)["vision"].decayed_gpu_seconds == pytest.approx(at_end / 2)
        # A shorter half-life given on read decays faster.
        assert ledger.usage(NOW + 3600 + H, TEAMS, half_life_s=H / 2)["vision"].decayed_gpu_seconds == (
            pytest.approx(at_end / 4)
        )
    # The simulator's rectangle rule (decay(D, dt) + g dt per event) converges to the same number.
    d = 0.0
    for _ in range(3600):
        d = decay(d, 1.0, H) + 8 * 1.0
    assert d == pytest.approx(at_end, rel=1e-6)


def test_evictions_are_audited_and_counted_once_per_gang(target):
    with Ledger(target) as ledger:
        ledger.accrue(
            NOW, [run("victim", "vision", 16, NOW - 1000), run("other", "vision", 8, NOW - 500)], teams=TEAMS
        )
        evictions = [
            Eviction(
                f"victim-{k}",
                "victim",
                f"n{k}",
                "prod-1",
                "production",
                "production needs room",
                Tier.TRAINING,
                Tier.PRODUCTION,
            )
            for k in range(2)
        ] + [
            Eviction(
                "other-0", "other", "n3", "prod-1", "production", "again", Tier.TRAINING, Tier.PRODUCTION
            )
        ]
        out = ledger.record_evictions(NOW, evictions, lost_gpu_seconds={"other": 1234.0})
        assert [(p.gang, p.team, p.tier, p.kind) for p in out] == [
            ("other", "vision", "training", "production"),
            ("victim", "vision", "training", "production"),
        ]
        assert {p.gang: p.lost_gpu_seconds for p in out} == {"victim": 16 * 1000.0, "other": 1234.0}
        assert ledger.record_evictions(NOW, evictions) == []  # a retried call counts nothing twice
        assert ledger.gang("victim").preemptions == 1
        assert ledger.gang("victim").lost_gpu_seconds == 16000.0
        audit = ledger.audit(action="evict")
        assert [(a.pod, a.preemptor, a.kind) for a in audit][:2] == [
            ("other-0", "prod-1", "production"),
            ("victim-0", "prod-1", "production"),
        ]
        assert len(audit) == 3
        # The evicted run ends; the gang restarts later as a new run and is charged from there.
        ledger.accrue(
            NOW + 600,
            [run("victim", "vision", 16, NOW + 300)],
            [run("victim", "vision", 16, NOW - 1000, NOW)],
            teams=TEAMS,
        )
        g = ledger.gang("victim")
        assert (g.start_s, g.run_start_s, g.end_s, g.charged_until_s) == (
            NOW - 1000,
            NOW + 300,
            None,
            NOW + 600,
        )
        assert ledger.usage(NOW + 600, TEAMS)["vision"].period_gpu_hours == pytest.approx(
            (16 * 1000 + 8 * 500 + 16 * 300) / 3600
        )


def test_old_rows_are_pruned_after_the_retention(target):
    day = 86400.0
    with Ledger(target, retention_s=30 * day) as ledger:
        ledger.accrue(
            NOW - 60 * day, [], [run("old", "vision", 1, NOW - 61 * day, NOW - 60 * day)], teams=TEAMS
        )
        ledger.accrue(
            NOW,
            [run("open", "vision", 1, NOW - 90 * day)],
            [run("new", "vision", 1, NOW - 2 * day, NOW - day)],
            teams=TEAMS,
        )
        ledger.record_evictions(
            NOW - 45 * day,
            [Eviction("x-0", "x", "n", "p", "reclaim", "r", Tier.TRAINING, Tier.TRAINING)],
        )
        ledger.record_evictions(
            NOW, [Eviction("y-0", "y", "n", "p", "reclaim", "r", Tier.TRAINING, Tier.TRAINING)]
        )
        before = ledger.usage(NOW, TEAMS)
        counts = ledger.prune(NOW)
        assert counts["gangs"] == 1 and counts["audit"] == 1 and counts["periods"] >= 7
        assert ledger.gang("old") is None
        assert ledger.gang("open") is not None and ledger.gang("new") is not None
        assert [a.gang for a in ledger.audit()] == ["y"]
        assert ledger.usage(NOW, TEAMS) == before  # this period and the decayed history stay
        assert ledger.checkpoint("last_prune_s") == NOW
        assert ledger.prune(NOW) == {"gangs": 0, "audit": 0, "periods": 0, "levels": 0}


def test_a_bad_run_is_reported_and_the_rest_is_charged(target):
    with Ledger(target) as ledger:
        acc = ledger.accrue(
            NOW,
            [
                ("ok", "vision", "training", 2, NOW - 100),
                ("bad", "vision", "training", -1, NOW - 100),
                ("short",),
            ],
            teams=TEAMS,
        )
        assert acc.gpu_seconds == {("vision", "training"): pytest.approx(200.0)}
        assert len(acc.skipped) == 2 and "gang 'bad': gpus: -1 is not a GPU count" in acc.skipped[0]
        with pytest.raises(LedgerError, match="now_s"):
            ledger.accrue(math.nan, [])


def test_bad_configuration_gives_a_clear_error(tmp_path, postgres):
    with pytest.raises(LedgerError, match="not a database URL"):
        Ledger("postgresql+psycopg://[::1")
    with pytest.raises(LedgerError, match="backend 'mysql' is not supported"):
        Ledger("mysql://u@localhost/db")
    with pytest.raises(LedgerError, match="does not exist; create the folder"):
        Ledger(tmp_path / "missing" / "ledger.db")
    with pytest.raises(LedgerError, match="no database driver"):
        Ledger("postgresql+asyncpgx://u@localhost/db")
    with pytest.raises(LedgerError, match=r"cannot open the database: .*check that the database server runs"):
        Ledger(f"postgresql://gpufair@127.0.0.1:{postgres.port}/no_such_database")
    with pytest.raises(LedgerError, match="half_life_s"):
        Ledger(tmp_path / "l.db", half_life_s=0)
    # A plain postgresql:// URL gets the psycopg driver gpufair ships with.
    with Ledger(f"postgresql://gpufair@127.0.0.1:{postgres.port}/postgres", migrate=False) as ledger:
        assert ledger.url.drivername == "postgresql+psycopg"


def test_a_run_booked_under_its_gangs_old_id_goes_on_under_the_new_one(target):
    # Gang ids now name their kind (ns/podgroup:NAME, ns/gang:NAME). A PodGroup gang running
    # when the daemon is upgraded was booked as ns/NAME: the new id takes the run over from
    # where it was charged, the old row closes there, and no GPU-second is charged twice.
    start = NOW - 3600
    with Ledger(target) as ledger:
        ledger.accrue(NOW - 1800, [run("vision/train", "vision", 8, start)], teams=TEAMS)
        after = ledger.accrue(NOW, [run("vision/podgroup:train", "vision", 8, start)], teams=TEAMS)
        assert after.gpu_seconds == {("vision", "training"): pytest.approx(8 * 1800)}
        old, new = ledger.gang("vision/train"), ledger.gang("vision/podgroup:train")
        assert old.end_s == pytest.approx(NOW - 1800)
        assert new.start_s == pytest.approx(start) and new.end_s is None
        assert ledger.usage(NOW, TEAMS)["vision"].period_gpu_hours == pytest.approx(8.0)
        # A different run of the same name (another start) is a new run, charged from its start.
        fresh = ledger.accrue(NOW + 60, [run("vision/gang:train", "vision", 1, NOW)], teams=TEAMS)
        assert fresh.gpu_seconds == {("vision", "training"): pytest.approx(60)}
