"""`make demo`: unattended (`DEMO_SECONDS=N`) it runs N seconds, prints a summary and exits 0;
Ctrl-C stops everything it started. Both run the real thing: a control plane with 16 fake GPU
nodes, the daemon as a `gpufair run` process and the demo's workload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.daemon_support import ROOT


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen:
    argv = [
        sys.executable, "-m", "scheduler.cli", "dev-cluster", "demo",
        "--state-dir", str(tmp_path / "state"), "--metrics-port", "0", *args,
    ]  # fmt: skip
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ}
    )


def test_make_demo_runs_the_demo_command_with_demo_seconds() -> None:
    out = subprocess.run(
        ["make", "-n", "demo", "DEMO_SECONDS=40"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "gpufair dev-cluster demo --seconds 40" in out.stdout


def test_unattended_demo_binds_for_every_team_preempts_and_prints_a_summary(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    proc = _demo(tmp_path, "--seconds", "40", "--summary-json", str(summary_path))
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert "gpufair demo summary: 40s on 16 nodes x 8 GPUs" in out, out
    assert "metrics were served at http://127.0.0.1:" in out
    assert "TEAM" in out and "FAIR SHARE" in out and "BUDGET USED/LEFT" in out  # the live table
    summary = json.loads(summary_path.read_text())
    assert set(summary["teams"]) == {"serving", "vision", "nlp"}
    for team, row in summary["teams"].items():
        assert row["binds"] > 0, (team, summary)
        assert row["gpu_hours"] > 0, (team, summary)
    assert summary["preemptions"] >= 1, summary
    assert summary["binds"] == sum(t["binds"] for t in summary["teams"].values())
    # The real JobSet and LWS controllers ran and made the pods of the demo's JobSet training
    # run and LWS inference group; the production LWS group is bound (it preempts for room).
    assert "workload controllers ready: jobset v0.10.1, lws v0.7.0" in out, out
    assert "JobSet training run" in out and "LeaderWorkerSet inference group" in out
    assert summary["workloads"]["JobSet"]["pods"] >= 4, summary  # 2 Jobs x 2 pods
    lws = summary["workloads"]["LeaderWorkerSet"]
    assert lws["pods"] >= 2 and lws["bound"] >= 2, summary  # a leader and a worker
    assert "LeaderWorkerSet: its controller made" in out
    # Everything it started is gone with its state directory.
    assert not (tmp_path / "state").exists()


def test_ctrl_c_stops_the_daemon_and_the_control_plane_cleanly(tmp_path: Path) -> None:
    proc = _demo(tmp_path)  # no --seconds: runs until interrupted
    lines: list[str] = []
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "wave 0" in line:
            break
    assert any("wave 0" in line for line in lines), "".join(lines)
    pid_files = {f.name: int(f.read_text()) for f in (tmp_path / "state").glob("*.pid")}
    assert {"gpufair-run.pid", "kube-apiserver.pid", "etcd.pid", "kwok.pid"} <= set(pid_files), pid_files
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "gpufair demo summary" in out and "stopped the daemon and the control plane" in out
    for name, pid in pid_files.items():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"{name} {pid} still runs after Ctrl-C:\n{out}")
    assert not (tmp_path / "state").exists()
