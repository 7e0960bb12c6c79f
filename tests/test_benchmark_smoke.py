"""The benchmark scripts keep working (their figures are read from their own output, not here)."""

from __future__ import annotations

from benchmarks.engine_cycle import measure
from benchmarks.synthetic import make_snapshot


def test_synthetic_snapshot_is_shaped_as_documented():
    snap = make_snapshot(nodes=64, pending_pods=200, running_pods=1_000, teams=5, seed=3)
    assert len(snap.nodes) == 64 and len(snap.teams) == 5
    assert {n.labels["network.gpufair.io/leaf"] for n in snap.nodes} == {"leaf-0", "leaf-1"}
    running = [p for g in snap.gangs for p in g.pods if p.node]
    waiting = [p for g in snap.gangs for p in g.pods if not p.node]
    assert len(running) == 1_000 and len(waiting) == 200
    assert any(p.gpus == 0 and p.gpu_milli == 0 for p in running), "CPU-only pods are part of the mix"


def test_measure_reports_a_cycle():
    r = measure(nodes=32, pending_pods=100, running_pods=0, runs=1)
    assert r["binds"] > 0 and r["median_s"] > 0 and r["peak_mib"] > 0
