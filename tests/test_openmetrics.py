"""The simulator's OpenMetrics export: loaded by promtool into TSDB blocks and queried by Prometheus."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.core import Budget, Team
from scheduler.metrics import names as n
from scheduler.metrics.dashboards import expressions, metric_names
from simulator.cluster_spec import nodes_for_gpus
from simulator.engine import Replay
from simulator.model import Job, Trace
from simulator.openmetrics import ObservedReplay, grid, openmetrics_text, write_openmetrics
from simulator.summary import summarize
from tests.fixtures_services import promtool

ROOT = Path(__file__).resolve().parents[1]
EPOCH = 1_700_000_000.0  # 2023-11-14: a trace with real dates
TEAMS = (Team("a", budget=Budget(10.0, "week")), Team("b", weight=2.0))
TRACE = Trace(
    "tiny",
    (
        Job("a1", 0, 7200, 1, 8, "a"),
        Job("a2", 0, 7200, 1, 8, "a"),
        Job("b1", 600, 600, 1, 4, "b"),
        Job("p1", 1800, 1800, 1, 8, "b", tier="production"),
    ),
    epoch_s=EPOCH,
)


# A replay has no usage factor and no node telemetry: those series exist only in the daemon.
NOT_IN_REPLAYS = {
    n.TEAM_FACTOR.name, n.TEAM_IDLE.name,
    n.TELEMETRY_STALE.name, n.TELEMETRY_UNHEALTHY.name, n.TELEMETRY_DROPPED.name, n.HOOK_FAILURES.name,
}  # fmt: skip

def observed():
    replay = ObservedReplay(TRACE, nodes_for_gpus(16), TEAMS, "gpufair")
    return replay, replay.run()


def test_the_observer_does_not_change_the_replay():
    _, result = observed()
    plain = Replay(TRACE, nodes_for_gpus(16), TEAMS, "gpufair").run()
    strip = lambda s: {k: v for k, v in s.items() if k != "wall_seconds"}  # noqa: E731
    assert strip(summarize(result)) == strip(summarize(plain))
    assert summarize(result)["preemptions"] >= 1


def test_the_file_uses_the_daemons_names_and_virtual_timestamps():
    replay, result = observed()
    text, step = openmetrics_text(result, replay.observations, EPOCH)
    span = result.samples[-1].t - result.samples[0].t
    assert step == max(60, -(-span // 1999)) and text.endswith("# EOF\n")
    families = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    declared = {s.name: s.kind for s in n.ALL}
    assert all(declared[name] == kind for name, kind in families)
    assert {name for name, _ in families} == declared.keys() - NOT_IN_REPLAYS
    stamps = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if not line.startswith("#")]
    assert min(stamps) == EPOCH and max(stamps) == EPOCH + result.samples[-1].t
    assert grid(0, 10_000, 60, 50)[1] == 205 and len(grid(0, 10_000, 60, 50)) <= 50


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    """The replay's OpenMetrics file turned into TSDB blocks by promtool."""
    tmp = tmp_path_factory.mktemp("om")
    replay, result = observed()
    path, _ = write_openmetrics(result, replay.observations, tmp / "om", EPOCH)
    assert path == tmp / "om" / "gpufair" / "metrics.om"
    out = subprocess.run(
        [promtool(), "tsdb", "create-blocks-from", "openmetrics", str(path), str(tmp / "blocks")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return tmp / "blocks", result


def test_promtool_loads_the_file_and_the_series_are_in_the_blocks(blocks):
    where, result = blocks
    (where / "wal").mkdir(exist_ok=True)  # `tsdb dump` opens the folder as a database
    out = subprocess.run(
        [promtool(), "tsdb", "dump", "--match", f'{{__name__="{n.PREEMPTIONS.sample}"}}', str(where)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert 'kind="production"' in last and 'team="a"' in last and 'tier="training"' in last
    value, stamp_ms = last.rsplit(" ", 2)[1:]
    assert float(value) == summarize(result)["preemptions"]
    assert int(stamp_ms) == int((EPOCH + result.samples[-1].t) * 1000)


def test_prometheus_on_the_blocks_answers_the_dashboards(blocks, prometheus, tmp_path):
    where, result = blocks
    data = tmp_path / "prom-0" / "data"
    data.mkdir(parents=True)
    for block in where.iterdir():
        if block.is_dir() and block.name != "wal":
            shutil.copytree(block, data / block.name)
    prom = prometheus({"global": {"scrape_interval": "15s"}, "scrape_configs": []})
    end = EPOCH + result.samples[-1].t
    summary = summarize(result)

    def one(expr: str) -> float:
        got = prom.query(expr, at=end)
        assert len(got) == 1, (expr, got)
        return float(got[0]["value"][1])

    total = sum(t["gpu_hours"] for t in summary["teams"].values())
    assert one(f"sum({n.TEAM_GPU_HOURS.sample})") == pytest.approx(total, rel=1e-9)
    assert one(f'sum({n.PREEMPTIONS.sample}{{kind="production"}})') == summary["preemptions"]
    assert one(f"sum({n.LOST_GPU_HOURS.sample})") == pytest.approx(summary["preempted_gpu_hours"])
    assert one(n.HEALTHY_GPUS.name) == 16
    assert one(f'{n.TEAM_BUDGET.name}{{team="a"}}') == 10
    assert one(f"sum({n.QUEUE_WAIT.name}_count)") == summary["jobs"] - summary["never_started"]
    # Every dashboard expression over metrics a replay writes returns data while the replay is busy
    # (p1 has preempted one of team a's jobs and runs; b1 waited).
    busy = EPOCH + 2400
    assert one(f"{n.JAIN.name} @ {busy}") < 1
    written = {s.sample for s in n.ALL} - NOT_IN_REPLAYS - {n.TELEMETRY_DROPPED.sample}
    checked = 0
    for _, title, expr in expressions():
        if metric_names(expr) <= written | {s.name for s in n.ALL if s.kind == "histogram"}:
            q = expr.replace('"$team"', '".*"').replace("$__rate_interval", "10m")
            assert prom.query(q, at=busy), (title, q)
            checked += 1
    assert checked >= 20


def test_the_simulate_command_writes_one_file_per_policy(tmp_path, capsys):
    trace = ROOT / "tests" / "data" / "traces" / "philly" / "cluster_job_log"
    args = ["simulate", "--trace", str(trace), "--format", "philly", "--gpus", "16", "--limit", "20"]
    args += [
        "--policy",
        "gpufair,fifo",
        "--out",
        str(tmp_path / "out"),
        "--openmetrics",
        str(tmp_path / "om"),
    ]
    code = main([*args, "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    for policy in ("gpufair", "fifo"):
        path = tmp_path / "om" / policy / "metrics.om"
        assert f"openmetrics: {path}" in printed
        assert path.read_text().endswith("# EOF\n")
