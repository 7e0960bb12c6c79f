"""The sim-vs-live fidelity benchmark's machinery (benchmarks/sim_vs_live.py): its measures on
known answers, and a handful of Philly jobs played live, exported from the ledger and
replayed (the full run's figures are in docs/whatif.md)."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from benchmarks.sim_vs_live import Measured, Timeline, fairness, kendall_tau, main, philly_slice
from simulator.latency import Latency


def test_kendall_tau_counts_agreeing_and_disagreeing_pairs():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # One swapped pair of six: (5 - 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)


def test_fairness_is_jain_over_the_entitled_share_and_utilisation():
    """Two teams ask for 8 GPUs each on 8 GPUs from t=0; a holds 8 for the first half, then
    each holds 4. Entitled: 4 each. First half Jain = (2 + 0)^2 / (2 * 4) = 0.5, then 1."""
    tl = Timeline(defaultdict(list), defaultdict(list))
    tl.asked["a"] = [(0.0, 8.0)]
    tl.asked["b"] = [(0.0, 8.0)]
    tl.held["a"] = [(0.0, 8.0), (50.0, -4.0)]
    tl.held["b"] = [(50.0, 4.0)]
    jain, util = fairness(tl, ["a", "b"], 8.0, 100.0)
    assert jain == pytest.approx(0.75, abs=1e-3)
    assert util == pytest.approx(1.0)


def test_the_slice_takes_jobs_in_turn_from_each_team_and_respaces_them():
    jobs = philly_slice(30, 3, 8, 100.0, 900.0, 40.0)
    assert len(jobs) == 30 and len({j.team for j in jobs}) == 3
    assert [j.submit_s for j in jobs] == [40.0 * i for i in range(30)]
    assert all(j.gpus <= 8 and 100.0 <= j.duration_s <= 900.0 for j in jobs)


def test_a_handful_of_jobs_live_then_replayed(tmp_path, capsys):
    """Six jobs of two teams on 8 GPUs under the live daemon; every one finishes, the ledger's
    history replays them all, twice: with the delays the run measured (cycle interval, end
    latency) and with none; both sides agree on the start order."""
    argv = [
        "--jobs", "6", "--teams", "2", "--gpus", "8", "--max-gpus", "8", "--compress", "60",
        "--gap", "60", "--min-duration", "300", "--max-duration", "600", "--timeout", "120",
        "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    got = json.loads((tmp_path / "sim_vs_live.json").read_text())
    assert got["jobs_live_finished"] == 6 and got["jobs"] == 6, got
    for side in (got, got["zero_latency"]):
        assert side["jobs"] == 6
        assert side["kendall_tau_start_order"] >= 0.6, got
        assert 0 < side["utilization_live"] <= 1 and 0 < side["utilization_sim"] <= 1
        assert abs(side["utilization_live"] - side["utilization_sim"]) < 0.1, got
    # The delays were measured from the run and modelled in trace seconds (x60).
    wall, options = got["latency"]["wall_s"], got["sim_options"]
    assert wall["samples"]["cycles"] > 0 and 0 < wall["cycle_s"] <= 5.0, got
    assert options["cycle_s"] == pytest.approx(60 * wall["cycle_s"]) and options["bind_s"] == 0
    assert options["end_s"] >= 0 and options["arrival_s"] >= 0 and wall["arrival_to_bind_s"] is not None
    assert wall["bind_to_running_s"] is not None and wall["bind_to_running_s"] >= 0
    # Whole gangs counted once each, on both sides; the job controller made each evicted one anew.
    detail = got["preemptions_live_detail"]
    assert (
        got["preemptions_live"] == detail["gang_evictions_by_daemon"] == detail["daemon_preemptions_metric"]
    )
    assert (
        detail["recreated_by_job_controller"]
        >= detail["gang_evictions_by_daemon"] - detail["recreated_part_evicted"]
    )
    out = capsys.readouterr().out
    assert "kendall_tau_start_order" in out and "0 latency" in out


def test_measured_delays_become_the_replays_options():
    """Ticks at the loop's pace; end and arrival latency are the measured delays less the
    half cycle a tick adds on average; bind latency stays 0 (the exported runs hold it)."""
    m = Measured(0.5, 0.1, 0.3, end_to_bind_s=1.25, arrival_to_bind_s=0.75, bind_to_running_s=0.8)
    assert m.latency() == Latency(cycle_s=0.5, bind_s=0.0, end_s=1.0, arrival_s=0.5)
    assert Measured(0.5, 0.1, 0.3, 0.1, None, None).latency() == Latency(cycle_s=0.5)
