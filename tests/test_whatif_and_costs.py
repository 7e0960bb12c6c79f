"""The cost report (against the daemon's own metrics) and the what-if replay (known answers),
through the `gpufair` command, on a real SQLite ledger."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from sqlmodel import Session

from scheduler.cli import main
from scheduler.core import Decisions, Gang, Node, Pod, PolicyConfig, Snapshot, Team
from scheduler.costreport import cost_report, load_prices, period_bounds_of
from scheduler.daemon.hooks import DaemonHooks
from scheduler.daemon.translate import Translation
from scheduler.ledger import Ledger
from scheduler.ledger.history import HistoryGang, HistoryNode, HistoryRun
from scheduler.ledger.trace import history_trace, parse_instant
from scheduler.metrics import names as n
from scheduler.whatif import LIVE, PROPOSED, Scenario, compare

NOV, DEC = period_bounds_of("2026-11")
TEAMS = (Team("vision", namespaces=("vision",)), Team("search", namespaces=("search",)))
NODES = (Node("h0", 8, 64_000, 512_000, "H100"), Node("a0", 8, 64_000, 512_000, "A100"))


def test_a_period_is_a_utc_calendar_month_or_a_range():
    assert (parse_instant("2026-11-01", "x"), parse_instant("2026-12-01", "x")) == (NOV, DEC)
    assert period_bounds_of("2026-12")[1] == parse_instant("2027-01-01", "x")
    assert period_bounds_of("2026-11-03..2026-11-04") == (NOV + 2 * 86400, NOV + 3 * 86400)
    with pytest.raises(Exception, match="--period"):
        period_bounds_of("November")


def _gang(gid: str, team: str, gpus: int, node: str, start: float, priority: int = 0) -> Gang:
    pod = Pod(f"{team}/{gid}-0", gpus=gpus, node=node, start_s=start, namespace=team)
    return Gang(f"{team}/gang:{gid}", team, (pod,), priority=priority, submit_s=start - 60)


def _counter(hooks: DaemonHooks, team: str, tier: str) -> float:
    value = hooks.metrics.registry.get_sample_value(n.TEAM_GPU_HOURS.sample, {"team": team, "tier": tier})
    return value or 0.0


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_url")


def test_the_cost_report_matches_the_metrics_for_the_month(tmp_path: Path, capsys, ledger_url: str):
    """The daemon's hooks book a month of use (across both month boundaries); the report for
    November equals the increase of the gpufair_team_gpu_hours_used counters over November,
    on SQLite and on a real PostgreSQL server."""
    db = ledger_url
    hooks = DaemonHooks(PolicyConfig(), db, accrue_every_s=1.0)
    vision = _gang("train", "vision", 8, "h0", NOV - 7200)
    search = _gang("tune", "search", 4, "a0", NOV + 5 * 86400)
    serving = _gang("serve", "search", 2, "h0", NOV, priority=100_000)
    timeline = [
        (NOV - 3600, [vision]),
        (NOV, [vision]),
        (NOV + 10 * 86400, [vision, search, serving]),
        (NOV + 20 * 86400, [vision, serving]),
        (DEC, [vision, serving]),
        (DEC + 3600, [vision]),
    ]
    at: dict[float, dict[tuple[str, str], float]] = {}
    keys = [("vision", "training"), ("search", "training"), ("search", "production")]
    try:
        for now, gangs in timeline:
            snap = Snapshot(now, NODES, TEAMS, tuple(gangs))
            tr = Translation(snap, {}, {})
            hooks.usage(now, TEAMS)
            hooks.cycle_done(tr, Decisions((), (), (), {}), 0.01)
            at[now] = {k: _counter(hooks, *k) for k in keys}
        assert not hooks.failures
    finally:
        hooks.close()
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: EUR\nperGPUHour: {H100: 3.0, A100: 1.5}\n")
    out_json, out_csv = tmp_path / "nov.json", tmp_path / "nov.csv"
    args = ["report", "--ledger", db, "--period", "2026-11", "--prices", str(prices)]
    assert main([*args, "--json", str(out_json), "--csv", str(out_csv)]) == 0
    table = capsys.readouterr().out
    doc = json.loads(out_json.read_text())
    by = {(line["team"], line["tier"], line["gpu_model"]): line for line in doc["lines"]}
    for team, tier in keys:
        metric = at[DEC][(team, tier)] - at[NOV][(team, tier)]
        booked = sum(line["gpu_hours"] for k, line in by.items() if k[:2] == (team, tier))
        assert booked == pytest.approx(metric) and metric > 0
    # 30 days of 8 GPUs; 15 days of 4 (charged from its start on the 5th to the 20th); 30 days of 2.
    assert by[("vision", "training", "H100")]["gpu_hours"] == pytest.approx(30 * 24 * 8)
    assert by[("search", "training", "A100")]["gpu_hours"] == pytest.approx(15 * 24 * 4)
    assert by[("search", "production", "H100")]["gpu_hours"] == pytest.approx(30 * 24 * 2)
    assert by[("search", "training", "A100")]["cost"] == pytest.approx(15 * 24 * 4 * 1.5)
    assert doc["total_cost"] == pytest.approx((30 * 24 * 8 + 30 * 24 * 2) * 3.0 + 15 * 24 * 4 * 1.5)
    assert doc["team_gpu_hours"]["vision"] == pytest.approx(5760)
    assert out_csv.read_text().splitlines()[0] == "team,tier,gpu_model,gpu_hours,price_per_gpu_hour,cost"
    assert "vision" in table and "5760.00" in table
    with Ledger(db, migrate=False) as ledger:
        missing = load_prices("perGPUHour: {H100: 3.0}\n")
        with pytest.raises(Exception, match="A100"):
            cost_report(ledger, NOV, DEC, missing)


def _history(db: str, jobs: list[tuple[str, str, float, float]]) -> None:
    """Gangs of one 8-GPU pod each (id, team, submit, duration) that ran one after another
    on one 8-GPU node, as the daemon's history records them."""
    with Ledger(db) as ledger, Session(ledger.engine) as s:
        s.add(
            HistoryNode(
                name="h0",
                gpus=8,
                gpu_model="H100",
                cpu_milli=64_000,
                memory_mib=512_000,
                first_seen_s=NOV,
                last_seen_s=NOV,
            )
        )
        t = NOV
        for gid, team, submit, duration in jobs:
            s.add(
                HistoryGang(
                    gang_id=gid,
                    team=team,
                    tier="training",
                    submit_s=NOV + submit,
                    pods=1,
                    gpus_per_pod=8,
                    start_s=t,
                    end_s=t + duration,
                    outcome="succeeded",
                    runs=1,
                )
            )
            s.add(
                HistoryRun(
                    gang_id=gid,
                    team=team,
                    tier="training",
                    gpus=8,
                    gpu_model="H100",
                    nodes="h0",
                    start_s=t,
                    end_s=t + duration,
                    outcome="succeeded",
                )
            )
            t += duration
        s.commit()


def test_whatif_with_the_same_policy_changes_nothing(tmp_path: Path):
    db = str(tmp_path / "ledger.db")
    _history(db, [("a/1", "a", 0, 100), ("b/1", "b", 0, 100), ("a/2", "a", 0, 100), ("b/2", "b", 0, 100)])
    with Ledger(db) as ledger:
        hist = history_trace(ledger, NOV, NOV + 3600)
    teams = (Team("a", namespaces=("a",)), Team("b", namespaces=("b",)))
    same = compare(hist, Scenario(LIVE, PolicyConfig(), teams), Scenario(PROPOSED, PolicyConfig(), teams))
    assert same.changes == ()
    assert same.teams[LIVE] == same.teams[PROPOSED]
    # One node, four 100 s jobs: they run one after another whatever the order.
    waits = sorted(j.wait_s for j in same.results[LIVE].jobs)
    assert waits == pytest.approx([0, 100, 200, 300])


def test_whatif_capping_a_team_shows_its_jobs_never_start_and_the_other_waits_less(tmp_path: Path, capsys):
    db = str(tmp_path / "ledger.db")
    _history(db, [("a/1", "a", 0, 100), ("b/1", "b", 0, 100), ("a/2", "a", 0, 100), ("b/2", "b", 0, 100)])
    teams = tmp_path / "teams.yaml"
    teams.write_text(
        "apiVersion: gpufair.io/v1alpha1\nkind: GPUTeam\nmetadata: {name: a}\n"
        "spec: {maxGPUs: 4, namespaces: [a]}\n---\n"
        "apiVersion: gpufair.io/v1alpha1\nkind: GPUTeam\nmetadata: {name: b}\n"
        "spec: {namespaces: [b]}\n"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text((Path(__file__).resolve().parents[1] / "deploy/examples/policy.yaml").read_text())
    out = tmp_path / "whatif"
    code = main(
        [
            "whatif",
            "--ledger",
            db,
            "--since",
            "2026-11-01",
            "--until",
            "2026-11-01T01:00Z",
            "--policy-file",
            str(policy),
            "--teams",
            str(teams),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "a: 0 -> 2 jobs that never start" in printed
    live = json.loads((out / LIVE / "summary.json").read_text())
    proposed = json.loads((out / PROPOSED / "summary.json").read_text())
    assert live["teams"]["a"]["never_started"] == 0 and proposed["teams"]["a"]["never_started"] == 2
    assert proposed["teams"]["b"]["wait_p50_s"] == pytest.approx(50)  # waits 0 and 100
    assert live["teams"]["b"]["wait_p50_s"] + live["teams"]["a"]["wait_p50_s"] == pytest.approx(300)
    page = (out / "report.html").read_text()
    assert "Largest changes" in page and "never start" in page and f"{PROPOSED}-allocation.png" in page


def test_whatif_replays_both_sides_with_the_latency_flags(tmp_path: Path, capsys):
    # Four 100 s jobs one after another on one node; a 10 s end latency delays each next
    # start by 10 s on both sides: waits 0, 110, 220, 330 (the same policy: no change).
    db = str(tmp_path / "ledger.db")
    _history(db, [("a/1", "a", 0, 100), ("b/1", "b", 0, 100), ("a/2", "a", 0, 100), ("b/2", "b", 0, 100)])
    policy = tmp_path / "policy.yaml"
    policy.write_text("{}\n")
    out = tmp_path / "whatif"
    argv = ["whatif", "--ledger", db, "--since", "2026-11-01", "--until", "2026-11-01T01:00Z"]
    argv += ["--policy-file", str(policy), "--out", str(out), "--end-latency", "10"]
    assert main(argv) == 0
    assert "no change worth a line" in capsys.readouterr().out
    for side in (LIVE, PROPOSED):
        summary = json.loads((out / side / "summary.json").read_text())
        waits = [summary["teams"][t]["wait_p50_s"] for t in ("a", "b")]
        assert sum(waits) == pytest.approx((0 + 220) / 2 + (110 + 330) / 2)
    assert main([*argv[:-1], "-1"]) == 2
    assert "--end-latency" in capsys.readouterr().err


def test_whatif_refuses_a_ledger_without_history(tmp_path: Path, capsys):
    db = str(tmp_path / "old.db")
    with Ledger(db, migrate=False) as ledger:
        ledger.migrate("0002")
    assert (
        main(["trace", "export", "--ledger", db, "--since", "2026-11-01", "--out", str(tmp_path / "t.csv")])
        == 2
    )
    err = capsys.readouterr().err
    assert "revision" in err and "0004" in err


def test_trace_export_command_writes_trace_and_cluster(tmp_path: Path, capsys):
    db = str(tmp_path / "ledger.db")
    _history(db, [("a/1", "a", 0, 100), ("b/1", "b", 10, 50)])
    out = tmp_path / "hist.parquet"
    code = main(
        [
            "trace",
            "export",
            "--ledger",
            db,
            "--since",
            "2026-11-01",
            "--until",
            "2026-11-02",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and "2 gangs" in capsys.readouterr().out
    from simulator.cluster_spec import nodes_from_spec
    from simulator.traces import read_trace

    jobs = read_trace(out, "native").jobs
    assert [(j.job_id, j.submit_s, j.duration_s) for j in jobs] == [("a/1", 0, 100), ("b/1", 10, 50)]
    assert [replace(x, labels={}) for x in nodes_from_spec(tmp_path / "hist.cluster.yaml")] == [
        Node("g0-0000", 8, 64_000, 512_000, "H100", labels={})
    ]
