"""The benchmark scripts keep working (their figures are read from their own output, not here)."""

from __future__ import annotations

import json
from dataclasses import replace

from benchmarks.engine_cycle import main as engine_cycle
from benchmarks.engine_cycle import measure
from benchmarks.synthetic import GPU_TAINT, POOL_SELECTED, constrain, make_snapshot
from scheduler.core import decide


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


def test_the_constrained_snapshot_reserves_gpu_nodes_and_its_selectors_hold():
    snap = constrain(make_snapshot(nodes=128, pending_pods=2_000, running_pods=0, seed=5))
    assert all(n.taints == (GPU_TAINT,) and n.labels["pool"].startswith("pool-") for n in snap.nodes)
    assert {n.labels["pool"] for n in snap.nodes} == {"pool-0", "pool-1", "pool-2", "pool-3"}
    selecting = {
        g.id: dict(g.constraints[0].node_selector)["pool"]
        for g in snap.gangs
        if g.constraints[0].node_selector
    }
    assert 0.5 * POOL_SELECTED < len(selecting) / len(snap.gangs) < 1.5 * POOL_SELECTED
    pool = {n.name: n.labels["pool"] for n in snap.nodes}
    binds = decide(snap).binds
    assert any(b.gang in selecting for b in binds)
    assert all(pool[b.node] == selecting[b.gang] for b in binds if b.gang in selecting)
    # The taint bites: the same gangs without the toleration bind nowhere.
    bare = replace(snap, gangs=tuple(replace(g, constraints=()) for g in snap.gangs))
    assert decide(bare).binds == ()


def test_the_constrained_snapshot_spreads_its_inference_replicas():
    snap = constrain(make_snapshot(nodes=64, pending_pods=1_000, running_pods=0, seed=5))
    replicas = {g.id: dict(g.pods[0].labels)["app"] for g in snap.gangs if g.terms}
    assert len(replicas) > 50 and any(g.terms[0].spread for g in snap.gangs if g.terms)
    placed: dict[str, list[str]] = {}
    for b in decide(snap).binds:
        if b.gang in replicas:
            placed.setdefault(replicas[b.gang], []).append(b.node)
    assert placed and all(len(nodes) == len(set(nodes)) for nodes in placed.values())


def test_engine_benchmark_puts_b_constrained_beside_b_in_its_json(tmp_path, capsys):
    assert engine_cycle(["--small", "--cases", "b-constrained", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "b-constrained / b in this run" in out
    cases = json.loads((tmp_path / "engine_cycle.json").read_text())["scenarios"]
    assert list(cases) == ["b", "b-constrained"], "the peer runs in the same run, first"
    got = cases["b-constrained"]
    assert got["constrained"] and not cases["b"]["constrained"]
    assert got["ratio_to_b"] == got["median_s"] / cases["b"]["median_s"] and got["target_ratio"] == 1.5


def test_simulator_benchmark_reports_progress_in_jobs():
    """A short Philly prefix runs to the end; a cap that cannot be met stops it part way,
    and the report says how many jobs had arrived and finished by then."""
    from benchmarks.simulator_speed import run_case

    whole = run_case("philly-gpufair", 400, cap_s=600)
    assert whole["finished"] and whole["jobs_finished_fraction"] == 1.0 and whole["events"] >= 800
    cut = run_case("philly-gpufair", 400, cap_s=0.0)
    assert not cut["finished"]
    assert cut["jobs_finished_fraction"] <= cut["jobs_arrived_fraction"] < 1.0


def test_bind_benchmark_times_both_schedulers_cold_and_warm(kube_cluster_factory, tmp_path):
    """One tiny case per mode: the watch-based clock sees every bind, and the warm mode
    binds a warm-up pod first (the figures themselves are read from a full run)."""
    from benchmarks.bind_throughput import run_case
    from scheduler.daemon.kube import Kube, api_client_from
    from tests.daemon_support import install_crds_and_priorities

    cluster = kube_cluster_factory(None)  # 8 nodes x 8 GPUs
    kube = Kube(api_client_from(str(cluster.kubeconfig)), qps=0)
    install_crds_and_priorities(kube)
    log = tmp_path / "schedulers.log"
    for mode in ("cold", "warm"):
        for which in ("kube-scheduler", "gpufair"):
            r = run_case(cluster, kube, which, "gangs", mode, (50, 100), 8, 4, log, timeout_s=60)
            assert r["complete"] and r["bound"] == 8, (which, mode, r)
            assert 0 < r["first_bind_seconds"] <= r["seconds"] < 60


def test_daemon_cycle_benchmark_runs_every_case_against_the_full_rebuild(tmp_path, capsys):
    """The small mode of benchmarks/daemon_cycle.py: every case, a cold and a steady cycle
    of the incremental daemon and of the full rebuild in the same run (figures: a full run)."""
    from benchmarks.daemon_cycle import main as daemon_cycle

    assert daemon_cycle(["--small", "--reps", "1", "--out", str(tmp_path)]) == 0
    assert "x full" in capsys.readouterr().out
    cases = json.loads((tmp_path / "daemon_cycle.json").read_text())["cases"]
    assert list(cases) == ["a", "b", "c"]
    for r in cases.values():
        assert all(r[k] > 0 for k in ("cold_s", "steady_s", "translate_s", "decide_s"))
        assert r["full_rebuild"]["steady_s"] > 0 and r["steady_speedup_vs_full"] > 0
        assert r["cold_binds"] > 0 and r["same_bind_counts_as_full"]
        assert sum(r["last_changes"].values()) > 0
    assert "meets_targets" in cases["b"]


def test_openb_fragmentation_benchmark_puts_the_paper_beside_each_workload(tmp_path, capsys):
    """One workload, one seed, gpufair only: the JSON holds the run under the workload and
    the policy, the table puts the paper's FGD figure beside it, the plot is written, and a
    second run with the same seeds resumes instead of running again."""
    from benchmarks.openb_fragmentation import PAPER
    from benchmarks.openb_fragmentation import main as openb_fragmentation
    from tests.builders import shared_trace

    traces = shared_trace("openb", "openb_node_list_gpu_node.csv").parent
    argv = ["--traces", str(traces), "--variants", "gpuspec33", "--seed", "42",
            "--policies", "gpufair", "--out", str(tmp_path)]
    assert openb_fragmentation(argv) == 0
    doc = json.loads((tmp_path / "openb_fragmentation.json").read_text())
    entry = doc["variants"]["gpuspec33"]["gpufair"]
    assert entry["seeds"] == [42] and 0 < entry["unallocated_gpu_pct"] < 100
    out = capsys.readouterr()
    assert "gpuspec33" in out.out and f"{PAPER['gpuspec33'][0]:.2f}" in out.out
    assert (tmp_path / "openb_fragmentation.png").stat().st_size > 0
    assert openb_fragmentation(argv) == 0
    assert "[1/" not in capsys.readouterr().err, "a finished (policy, workload) is not run again"
