"""Dashboards and alert rules against a real Prometheus scraping the real metrics.

A two-team scenario runs through the real decision core for a few seconds while
Prometheus (Debian's /usr/bin/prometheus, 1 s scrapes) scrapes a small HTTP server
serving the metrics registry; then every PromQL expression of every dashboard panel and
every alert probe must return data. `promtool` checks the rule file and unit-tests each
alert's firing.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client import start_http_server

from scheduler.core import Budget, Snapshot, Team, TeamUsage, decide
from scheduler.ledger import Accrual, Preemption
from scheduler.metrics import SchedulerMetrics
from scheduler.metrics import names as n
from scheduler.metrics.alerts import ALERTS, rules_document
from scheduler.metrics.dashboards import expressions, render
from tests.builders import NOW, gang, node, running
from tests.fixtures_services import free_port, promtool

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "gpufair-rules.yaml"
SCENARIO_SECONDS = 8.0


def promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables filled in as Grafana would."""
    return expr.replace('"$team"', '".*"').replace("$__rate_interval", "1m")


def two_teams(k: int) -> Snapshot:
    """vision holds all 16 GPUs (too young to be reclaimed) and is over its budget;
    search waits below its fair share."""
    teams = (
        Team("vision", budget=Budget(10.0, "month"), namespaces=("vision",)),
        Team("search", budget=Budget(1000.0, "month"), namespaces=("search",)),
    )
    gangs = (
        running(gang("v1", "vision", gpus=8), "n00", 60),
        running(gang("v2", "vision", gpus=8), "n01", 60),
        gang("s1", "search", gpus=4),
    )
    usage = {"vision": TeamUsage(3600.0 * k, 12.0 + 0.05 * k), "search": TeamUsage(0.0, 1.0)}
    return Snapshot(NOW + k, (node("n00"), node("n01")), teams, gangs, usage)


def drive(metrics: SchedulerMetrics, seconds: float) -> int:
    """The daemon's loop in miniature: decide, observe, and the outcomes of carrying it out."""
    metrics.set_leader(True)
    deadline = time.monotonic() + seconds
    k = 0
    while time.monotonic() < deadline:
        k += 1
        snap = two_teams(k)
        started = time.perf_counter()
        d = decide(snap)
        metrics.observe_cycle(d, snap, time.perf_counter() - started)
        metrics.observe_accrual(Accrual(snap.now_s, {("vision", "scavenger"): 16 * 0.25}))
        metrics.observe_bind("ok", 2)
        metrics.observe_bind("error")
        metrics.observe_eviction("ok")
        metrics.observe_eviction("pdb_blocked")
        metrics.observe_wait("search", "training", 30.0 * k)
        metrics.observe_wait("vision", "scavenger", 5.0)
        metrics.observe_preemptions([Preemption(f"g{k}", "vision", "scavenger", "scavenger", 600.0)])
        metrics.set_idle_gpus("vision", 2.0)
        time.sleep(0.25)
    return k


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """Prometheus after scraping the live registry through the scenario."""
    from tests.fixtures_services import _stop, start_prometheus

    metrics = SchedulerMetrics()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    root = tmp_path_factory.mktemp("prom")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "gpufair", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }
    prom = start_prometheus(root, config)
    try:
        cycles = drive(metrics, SCENARIO_SECONDS)
        assert cycles > 10
        assert prom.wait_for("count_over_time(gpufair_leader[1m]) >= 5", timeout=30)
        assert prom.wait_for('ALERTS{alertname="GpufairBudgetExhausted"}', timeout=15)
        yield prom
    finally:
        _stop(prom.proc)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_every_dashboard_expression_returns_data(scraped):
    exprs = expressions()
    assert len(exprs) >= 25
    empty = [(uid, title, e) for uid, title, e in exprs if not scraped.query(promql(e))]
    assert empty == []


def test_the_panels_show_the_scenario(scraped):
    def value(expr: str, **labels: str) -> float:
        for r in scraped.query(expr):
            if all(r["metric"].get(k) == v for k, v in labels.items()):
                return float(r["value"][1])
        raise AssertionError(f"{expr} has no series {labels}")

    assert value(n.TEAM_FAIR_SHARE.name, team="search") == 4.0
    assert value(n.TEAM_PENDING_PODS.name, team="search") == 1.0
    assert value(f'{n.TEAM_ALLOCATED.name}{{tier="scavenger"}}', team="vision") == 16.0
    assert value(n.JAIN.name) == pytest.approx(0.5)
    assert value(f"{n.ALLOCATED_GPUS.name} / {n.HEALTHY_GPUS.name}") == 1.0
    assert value(n.TEAM_BUDGET_LEFT.name, team="vision") == 0.0
    p95_expr = next(e for _, title, e in expressions() if title == "Queue wait p95 by team and tier")
    p95 = value(promql(p95_expr), team="search", tier="training")
    assert 0 < p95 <= 3600


def test_every_alert_probe_returns_data_and_the_scenario_fires_the_expected_alerts(scraped):
    for alert in ALERTS:
        assert scraped.query(alert.probe), alert.name
    # The scenario makes these four true; their `for` keeps some pending, which is enough here.
    active = {a["labels"]["alertname"]: a for a in scraped.api("alerts")["alerts"]}
    assert {
        "GpufairBudgetAt80Percent",
        "GpufairBudgetExhausted",
        "GpufairTeamBelowFairShare",
        "GpufairBindErrors",
    } <= set(active)
    assert active["GpufairBudgetExhausted"]["labels"]["team"] == "vision"
    assert active["GpufairTeamBelowFairShare"]["labels"]["team"] == "search"
    assert "GpufairNoLeader" not in active and "GpufairNoDecisionCycle" not in active
    groups = scraped.api("rules")["groups"]
    assert [r["health"] for g in groups for r in g["rules"]] == ["ok"] * len(ALERTS)


def test_promtool_accepts_the_rule_file():
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


def test_each_alert_fires_when_it_should_and_not_before(tmp_path):
    """promtool's rule unit tests on synthetic series (annotations left out: they are prose)."""
    doc = rules_document()
    for rule in doc["groups"][0]["rules"]:
        rule.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(doc))

    def alert(at: str, name: str, *labels: dict) -> dict:
        return {"eval_time": at, "alertname": name, "exp_alerts": [{"exp_labels": lab} for lab in labels]}

    warn, crit = {"severity": "warning"}, {"severity": "critical"}
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'gpufair_team_budget_gpu_hours{team="vision"}', "values": "100x40"},
                    {"series": 'gpufair_team_budget_used_gpu_hours{team="vision"}', "values": "50+5x40"},
                    {"series": 'gpufair_team_fair_share_gpus{team="search"}', "values": "8x40"},
                    {
                        "series": 'gpufair_team_allocated_gpus{team="search",tier="training"}',
                        "values": "2x40",
                    },
                    {
                        "series": 'gpufair_team_allocated_gpus{team="search",tier="scavenger"}',
                        "values": "6x40",
                    },
                    {"series": 'gpufair_team_pending_pods{team="search"}', "values": "3x40"},
                    {"series": "gpufair_last_cycle_timestamp_seconds", "values": "0+60x3 180x40"},
                    {"series": "gpufair_leader", "values": "1x5 0x40"},
                    {"series": 'gpufair_binds_total{result="error"}', "values": "0x5 1+1x40"},
                    {"series": 'gpufair_binds_total{result="ok"}', "values": "0+10x40"},
                ],
                "alert_rule_test": [
                    alert("5m", "GpufairBudgetAt80Percent"),  # 75 % used
                    alert("15m", "GpufairBudgetAt80Percent", {**warn, "team": "vision"}),
                    alert("9m", "GpufairBudgetExhausted"),
                    alert("15m", "GpufairBudgetExhausted", {**crit, "team": "vision"}),
                    alert("20m", "GpufairTeamBelowFairShare"),  # below its share, but not yet for 30 minutes
                    alert("35m", "GpufairTeamBelowFairShare", {**warn, "team": "search"}),
                    alert("4m", "GpufairNoDecisionCycle"),
                    alert("8m", "GpufairNoDecisionCycle", crit),
                    alert("4m", "GpufairNoLeader"),
                    alert("8m", "GpufairNoLeader", crit),
                    alert("5m", "GpufairBindErrors"),
                    alert("20m", "GpufairBindErrors", warn),
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    out = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert {a.name for a in ALERTS} == {t["alertname"] for t in tests["tests"][0]["alert_rule_test"]}


def test_generated_files_are_committed_and_up_to_date():
    files = render()
    assert set(files) == {
        "grafana/gpufair-fairness.json",
        "grafana/gpufair-budgets.json",
        "grafana/gpufair-cluster.json",
        "prometheus/gpufair-rules.yaml",
    }
    stale = [
        rel for rel, content in files.items() if (ROOT / "deploy" / rel).read_bytes() != content.encode()
    ]
    assert stale == [], "run: python -m scheduler.metrics.dashboards --out deploy"


def test_the_command_writes_the_same_files(tmp_path):
    from scheduler.metrics.dashboards import main

    assert main(["--out", str(tmp_path)]) == 0
    for rel, content in render().items():
        assert (tmp_path / rel).read_text() == content
