"""The replay engine: events, restarts, budgets, failures, determinism, and the command."""

from __future__ import annotations

import json
import math

import pytest

from scheduler.cli import main
from scheduler.core import Budget, OnExhausted, PolicyConfig, Team
from simulator.cluster_spec import nodes_for_gpus
from simulator.engine import FailureModel, Replay
from simulator.model import Job, Trace
from tests.builders import shared_trace


def team(name: str, weight: float = 1.0, budget: Budget | None = None) -> Team:
    return Team(name, weight, budget=budget, namespaces=(name,))


def job(jid: str, submit: float, duration: float, gpus: int, team_: str = "a", pods: int = 1, **kw) -> Job:
    return Job(jid, submit, duration, pods, gpus, team_, **kw)


def records(result):
    return {r.job_id: r for r in result.jobs}


def test_jobs_start_when_room_frees_and_finish_after_their_duration():
    trace = Trace("t", (job("j1", 0, 100, 8), job("j2", 10, 50, 8)))
    r = records(Replay(trace, nodes_for_gpus(8), (team("a"),), "gpufair").run())
    assert (r["j1"].start_s, r["j1"].end_s) == (0, 100)
    assert (r["j2"].start_s, r["j2"].end_s, r["j2"].wait_s) == (100, 150, 90)


def test_a_gang_starts_whole_or_waits():
    trace = Trace("t", (job("small", 0, 100, 4), job("gang", 1, 10, 8, pods=2)))
    r = records(Replay(trace, nodes_for_gpus(16), (team("a"),), "gpufair").run())
    assert r["gang"].start_s == 100  # needs both nodes whole, one is half used until then


def test_production_preemption_restarts_the_victim_from_scratch():
    trace = Trace(
        "t",
        (job("train", 0, 10_000, 8, "a"), job("infer", 1_000, 500, 8, "b", tier="production")),
    )
    r = records(Replay(trace, nodes_for_gpus(8), (team("a"), team("b")), "gpufair").run())
    assert r["infer"].start_s == 1_000
    assert r["train"].preemptions == 1
    assert r["train"].lost_gpu_hours == pytest.approx(8 * 1_000 / 3600)
    # Restarted after the production job, from scratch: 10,000 s more.
    assert r["train"].end_s == pytest.approx(1_500 + 10_000)


def test_checkpointing_jobs_lose_only_work_since_the_last_checkpoint():
    trace = Trace(
        "t",
        (
            job("train", 0, 10_000, 8, "a", checkpoint_s=300.0),
            job("infer", 1_000, 500, 8, "b", tier="production"),
        ),
    )
    r = records(Replay(trace, nodes_for_gpus(8), (team("a"), team("b")), "gpufair").run())
    assert r["train"].lost_gpu_hours == pytest.approx(8 * 100 / 3600)  # 1,000 s ran, 900 kept
    assert r["train"].end_s == pytest.approx(1_500 + 10_000 - 900)


def test_fair_share_reclaim_between_teams():
    # Team a fills the cluster; team b arrives and reclaims half once a's jobs pass 10 minutes.
    jobs = [job(f"a{i}", 0, 100_000, 8, "a") for i in range(4)] + [
        job(f"b{i}", 3_600, 1_000, 8, "b") for i in range(2)
    ]
    result = Replay(Trace("t", tuple(jobs)), nodes_for_gpus(32), (team("a"), team("b")), "gpufair").run()
    r = records(result)
    assert r["b0"].start_s == r["b1"].start_s == 3_600
    assert sum(r[f"a{i}"].preemptions for i in range(4)) == 2
    # The fifo baseline never preempts: b waits for a.
    r_fifo = records(
        Replay(Trace("t", tuple(jobs)), nodes_for_gpus(32), (team("a"), team("b")), "fifo").run()
    )
    assert r_fifo["b0"].start_s == 100_000 and all(x.preemptions == 0 for x in r_fifo.values())


def test_budget_rolls_over_with_the_calendar():
    budget = Budget(8.0, "week", OnExhausted.BLOCK)
    # 2017-09-04 was a Monday. Two 8-GPU jobs of 1 hour: the second is blocked until next Monday.
    epoch = 1_504_483_200.0  # 2017-09-04 00:00 UTC
    trace = Trace("t", (job("j1", 0, 3_600, 8), job("j2", 7_200, 3_600, 8)), epoch_s=epoch)
    result = Replay(trace, nodes_for_gpus(8), (team("a", budget=budget),), "gpufair").run()
    r = records(result)
    assert r["j1"].start_s == 0
    assert r["j2"].start_s == pytest.approx(7 * 86_400)
    assert max(s.budget_used["a"] for s in result.samples) == pytest.approx(8.0)


def test_node_failures_kill_and_requeue_jobs():
    trace = Trace("t", tuple(job(f"j{i}", 0, 50_000, 8) for i in range(4)))
    failures = FailureModel(mtbf_hours=5.0, repair_hours=1.0)
    result = Replay(trace, nodes_for_gpus(32), (team("a"),), "gpufair", seed=7, failures=failures).run()
    assert sum(r.preemptions for r in result.jobs) > 0
    assert all(not math.isnan(r.end_s) for r in result.jobs)
    assert min(s.healthy_gpus for s in result.samples) < 32


def test_replays_are_deterministic_for_a_seed():
    trace = Trace(
        "t", tuple(job(f"j{i}", i * 7.0, 500 + 13 * (i % 9), 1 + i % 8, "ab"[i % 2]) for i in range(120))
    )
    failures = FailureModel(mtbf_hours=2.0)

    def once(seed: int):
        res = Replay(
            trace, nodes_for_gpus(32), (team("a"), team("b", 2.0)), "gpufair", seed=seed, failures=failures
        ).run()
        return [(r.job_id, r.start_s, r.end_s, r.preemptions) for r in res.jobs]

    assert once(3) == once(3)


def test_policy_config_reaches_the_core():
    jobs = [job(f"a{i}", 0, 100_000, 8, "a") for i in range(4)] + [job("b0", 3_600, 1_000, 8, "b")]
    no_reclaim = PolicyConfig(reclaim_enabled=False)
    r = records(
        Replay(
            Trace("t", tuple(jobs)), nodes_for_gpus(32), (team("a"), team("b")), "gpufair", no_reclaim
        ).run()
    )
    assert r["b0"].start_s == 100_000


def test_unknown_team_is_refused():
    with pytest.raises(ValueError, match="no GPUTeam"):
        Replay(Trace("t", (job("j", 0, 1, 1, "ghost"),)), nodes_for_gpus(8), (team("a"),), "gpufair").run()


def test_simulate_command_writes_summaries_jobs_and_report(tmp_path, capsys):
    philly = shared_trace("philly", "philly.csv")
    out = tmp_path / "out"
    code = main(
        [
            "simulate",
            "--trace",
            str(philly),
            "--format",
            "philly",
            "--gpus",
            "256",
            "--limit",
            "400",
            "--policy",
            "gpufair,drf,fifo",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "jain index" in printed and "report:" in printed
    for policy in ("gpufair", "drf", "fifo"):
        summary = json.loads((out / policy / "summary.json").read_text())
        assert summary["policy"] == policy and summary["jobs"] == 400 and summary["gpus"] == 256
        assert 0 < summary["utilization"] <= 1
        lines = (out / policy / "jobs.csv").read_text().splitlines()
        assert lines[0].startswith(
            "job_id,team,tier,gpus,submit_s,start_s,end_s,wait_s,preemptions,lost_gpu_hours"
        )
        assert len(lines) == 401
    html = (out / "report.html").read_text()
    assert html.count(".png") >= 4


def test_simulate_command_explains_bad_input(tmp_path, capsys):
    bad = tmp_path / "jobs.csv"
    bad.write_text("job_id,submit_s,duration_s,pods,gpus_per_pod,team,tier\nj1,0,ten,1,1,a,training\n")
    assert (
        main(
            [
                "simulate",
                "--trace",
                str(bad),
                "--format",
                "native",
                "--gpus",
                "8",
                "--strict",
                "--no-progress",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "row 2" in err and "duration_s" in err


def test_a_job_too_large_for_the_cluster_does_not_keep_the_calendar_running_forever():
    budget = Budget(1_000.0, "week", OnExhausted.SCAVENGE)
    trace = Trace("t", (job("fits", 0, 3_600, 8), job("never", 0, 3_600, 8, pods=4)), epoch_s=1_504_483_200.0)
    result = Replay(trace, nodes_for_gpus(16), (team("a", budget=budget),), "gpufair").run()
    r = records(result)
    assert r["fits"].end_s == 3_600 and math.isnan(r["never"].start_s)
    assert result.samples[-1].t < 30 * 86_400


def test_a_preemptor_gets_the_room_its_victims_left():
    # 48 GPUs, shares of 16. Team a holds 33 GPUs in one-GPU jobs. Team c holds 15 and
    # waits for one more, too close to its share to reclaim. Team b, which ran more than
    # c earlier (so it comes after c among teams below their share), reclaims 8 GPUs on
    # one node at 3,600 s for an 8-GPU job. Were that room not held, c would take a GPU
    # of it in the next cycle, b would evict a second node, and a's victims would restart
    # where they had been. (Borrowing off: with it, c would take its 16th GPU back from a's
    # young work at 2,500 s, and never wait for the room.)
    jobs = [job(f"a{i}", 0, 100_000, 1, "a") for i in range(25)]
    jobs += [job(f"a{i}", 2_100, 100_000, 1, "a") for i in range(25, 33)]
    jobs += [job("b-early", 0, 2_400, 8, "b"), job("b-big", 3_600, 1_000, 8, "b")]
    jobs += [job(f"c{i}", 2_500, 100_000, 1, "c") for i in range(16)]
    result = Replay(
        Trace("t", tuple(jobs)),
        nodes_for_gpus(48),
        (team("a"), team("b"), team("c")),
        "gpufair",
        PolicyConfig(reclaim_borrowed=False),
    ).run()
    r = records(result)
    assert r["b-big"].start_s == 3_600
    assert sum(r[f"a{i}"].preemptions for i in range(33)) == 8  # one node's worth, once
    assert sum(r[f"c{i}"].start_s == 2_500 for i in range(16)) == 15
