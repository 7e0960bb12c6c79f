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
