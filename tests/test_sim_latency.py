"""The replay's latency model (simulator/latency.py): cycle interval, bind and end latency,
on known answers; all 0 is the instant replay every other simulator result comes from."""

from __future__ import annotations

import csv
from dataclasses import asdict, replace

import pytest

from scheduler.cli import main
from scheduler.core import Team
from simulator.cluster_spec import nodes_for_gpus
from simulator.engine import Replay
from simulator.latency import Latency
from simulator.model import Job, Trace
from simulator.teams import teams_for_trace
from simulator.traces import read_trace
from tests.builders import shared_trace

TEAMS = (Team("a", namespaces=("a",)), Team("b", namespaces=("b",)))


def job(jid: str, submit: float, duration: float, gpus: int, team: str = "a", **kw) -> Job:
    return Job(jid, submit, duration, 1, gpus, team, **kw)


def starts(trace: Trace, gpus: int, latency: Latency, teams=TEAMS) -> dict[str, tuple[float, float]]:
    result = Replay(trace, nodes_for_gpus(gpus), teams, "gpufair", latency=latency).run()
    return {r.job_id: (r.start_s, r.end_s) for r in result.jobs}


def test_end_latency_holds_a_finished_runs_gpus_until_the_scheduler_sees_them_free():
    trace = Trace("t", (job("first", 0, 10, 8), job("next", 1, 5, 8)))
    got = starts(trace, 8, Latency(end_s=3))
    assert got["first"] == (0, 10)  # it ended at 10; its GPUs came back at 13
    assert got["next"] == (13, 18)


def test_a_cycle_interval_decides_arrivals_at_the_next_tick():
    trace = Trace("t", (job("x", 1, 10, 4), job("y", 4, 10, 4)))
    got = starts(trace, 8, Latency(cycle_s=5))
    assert got == {"x": (5, 15), "y": (5, 15)}
    # An end between ticks frees room only at the next tick (15 is one; 17 is not).
    trace = Trace("t", (job("a", 0, 17, 8), job("b", 1, 5, 8)))
    assert starts(trace, 8, Latency(cycle_s=5))["b"] == (20, 25)


def test_bind_latency_starts_the_pods_after_the_decision():
    trace = Trace("t", (job("x", 0, 10, 8), job("y", 3, 10, 8)))
    got = starts(trace, 8, Latency(bind_s=2))
    assert got["x"] == (2, 12)
    assert got["y"] == (14, 24)  # decided at 12, when x ends


def test_arrival_latency_shows_a_job_to_the_scheduler_after_its_submission():
    trace = Trace("t", (job("x", 0, 10, 4), job("y", 4, 10, 4)))
    result = Replay(trace, nodes_for_gpus(8), TEAMS, "gpufair", latency=Latency(arrival_s=2)).run()
    r = {j.job_id: j for j in result.jobs}
    assert (r["x"].start_s, r["x"].wait_s, r["y"].start_s) == (2, 2, 6)  # waits count from submission
    assert starts(trace, 8, Latency(arrival_s=2, cycle_s=5))["y"] == (10, 20)  # seen at 6, tick 10


def test_latencies_add_up_in_the_order_the_control_plane_runs_them():
    # x: decided at tick 0, its pods start at 1 and end at 11, seen at 14; y is decided at
    # the tick of 15 and its pods start at 16.
    trace = Trace("t", (job("x", 0, 10, 8), job("y", 1, 10, 8)))
    got = starts(trace, 8, Latency(cycle_s=5, bind_s=1, end_s=3))
    assert got == {"x": (1, 11), "y": (16, 26)}


def test_with_a_cycle_interval_a_min_runtime_running_out_acts_at_the_next_tick():
    """A scavenger job holds all 8 GPUs from 0 with a 600 s min-runtime; b's training job
    arrives at 100 and may evict it once that ran out. Without a cycle interval nothing
    happens at 600 (no event) and b waits for the end at 5,000; with ticks every 50 s the
    eviction comes at the tick of 600 and b binds at the next one."""
    hog = job("hog", 0, 5000, 8, tier="scavenger", min_runtime_s=600.0)
    trace = Trace("t", (hog, job("b1", 100, 50, 8, "b")))
    assert starts(trace, 8, Latency())["b1"][0] == 5000
    assert starts(trace, 8, Latency(cycle_s=50))["b1"][0] == 650


def test_with_a_cycle_interval_a_preemptor_binds_the_tick_after_the_eviction():
    trace = Trace("t", (job("train", 0, 10_000, 8, "a"), job("infer", 1_000, 500, 8, "b", tier="production")))
    got = starts(trace, 8, Latency(cycle_s=10))
    assert got["infer"][0] == 1_010  # evicted at the tick of 1,000, bound at the next one
    assert starts(trace, 8, Latency())["infer"][0] == 1_000


def test_an_evicted_run_that_had_ended_but_was_not_yet_seen_frees_its_gpus_at_once():
    # train ends at 1,000 exactly as infer (production) arrives; seen free only at 1,100,
    # but the eviction's delete frees the GPUs at once, and train is not preempted (it had ended).
    trace = Trace("t", (job("train", 0, 1_000, 8, "a"), job("infer", 1_000, 500, 8, "b", tier="production")))
    result = Replay(trace, nodes_for_gpus(8), TEAMS, "gpufair", latency=Latency(end_s=100)).run()
    r = {j.job_id: j for j in result.jobs}
    assert r["infer"].start_s == 1_000
    assert (r["train"].end_s, r["train"].preemptions) == (1_000, 0)


def test_all_zero_is_the_instant_replay():
    philly = read_trace(shared_trace("philly", "philly.csv"), "philly")
    trace = replace(philly, jobs=philly.jobs[:200])
    teams = teams_for_trace((j.team for j in trace.jobs), None, None)
    nodes = nodes_for_gpus(48)
    plain = Replay(trace, nodes, teams, "gpufair").run()
    zero = Replay(trace, nodes, teams, "gpufair", latency=Latency(0.0, 0.0, 0.0)).run()
    assert [asdict(r) for r in zero.jobs] == [asdict(r) for r in plain.jobs]
    assert sum(r.preemptions for r in plain.jobs) > 0  # the trace exercises evictions too
    delayed = Replay(trace, nodes, teams, "gpufair", latency=Latency(cycle_s=60, end_s=30)).run()
    assert [r.start_s for r in delayed.jobs] != [r.start_s for r in plain.jobs]


@pytest.mark.parametrize("field", ["cycle_s", "bind_s", "end_s", "arrival_s"])
def test_a_negative_latency_is_refused_naming_it(field):
    with pytest.raises(ValueError, match=field):
        Latency(**{field: -1.0})


def test_the_simulate_command_takes_the_latency_flags(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text(
        "job_id,submit_s,duration_s,pods,gpus_per_pod,team,tier\nx,0,10,1,8,a,training\ny,1,5,1,8,a,training\n"
    )
    out = tmp_path / "out"

    def argv(end_latency: str) -> list[str]:
        return [
            "simulate", "--trace", str(trace), "--format", "native", "--gpus", "8", "--policy",
            "gpufair", "--end-latency", end_latency, "--cycle-interval", "2", "--out", str(out),
            "--no-progress",
        ]  # fmt: skip

    assert main(argv("3")) == 0
    with (out / "gpufair" / "jobs.csv").open() as fh:
        rows = {r["job_id"]: r for r in csv.DictReader(fh)}
    # x ends at 10, seen at 13, decided on at the tick of 14.
    assert float(rows["y"]["start_s"]) == 14.0
    capsys.readouterr()
    assert main(argv("-3")) == 2
    assert "--end-latency" in capsys.readouterr().err
