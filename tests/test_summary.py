"""summary.json and jobs.csv: every figure checked against a hand computation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from scheduler.core.model import Team
from simulator.model import JobRecord, RunResult, Sample
from simulator.summary import JOB_COLUMNS, entitled_shares, summarize, write_outputs

H = 3600.0
NAN = math.nan
EXACT = 1e-9  # water_fill bisects to ~1e-12 relative

TOP_KEYS = {
    "policy",
    "trace",
    "jobs",
    "never_started",
    "gpus",
    "wall_seconds",
    "utilization",
    "jain_index",
    "max_share_deviation",
    "preemptions",
    "preempted_gpu_hours",
    "fragmented_gpu_fraction",
    "wait_p50_s",
    "wait_p95_s",
    "wait_p99_s",
    "teams",
    "tiers",
}
TEAM_KEYS = {
    "jobs",
    "never_started",
    "gpu_hours",
    "entitled_gpu_hours",
    "wait_p50_s",
    "wait_p95_s",
    "wait_p99_s",
    "budget_gpu_hours",
    "budget_used_gpu_hours",
}
TIER_KEYS = {"jobs", "never_started", "wait_p50_s", "wait_p95_s", "wait_p99_s"}


def sample(
    t: float,
    allocated: dict[str, float],
    demand: dict[str, float],
    busy: float,
    fragmented: float = 0.0,
    healthy: float = 8.0,
    budget_used: dict[str, float] | None = None,
) -> Sample:
    return Sample(t, allocated, {}, demand, busy, fragmented, budget_used or {}, healthy)


def job(
    jid: str, team: str, submit: float, start: float, tier: str = "training", pre: int = 0, lost: float = 0.0
) -> JobRecord:
    end = start + 60.0 if math.isfinite(start) else NAN
    return JobRecord(jid, team, tier, 1.0, submit, start, end, pre, lost)


def hand_result() -> RunResult:
    """8 healthy GPUs, teams a and b of weight 1 (not in result.teams: the defaults).

    [0, 1h)  demand 8/8, allocated 6/2, busy 8  -> entitled 4/4, x = 1.5/0.5, J = 0.8
    [1h, 3h) demand 8/8, allocated 4/4, busy 8  -> entitled 4/4, J = 1
    [3h, 4h) demand 2/0, allocated 1/0, busy 1, 4 fragmented -> entitled 2/0, J = 1 (a only)
    4h       everything done (holds for zero time)
    """
    samples = [
        sample(0, {"a": 6, "b": 2}, {"a": 8, "b": 8}, busy=8),
        sample(1 * H, {"a": 4, "b": 4}, {"a": 8, "b": 8}, busy=8),
        sample(3 * H, {"a": 1, "b": 0}, {"a": 2, "b": 0}, busy=1, fragmented=4),
        sample(4 * H, {}, {}, busy=0, budget_used={"a": 15.0, "b": 10.0}),
    ]
    jobs = [
        job("j1", "a", 0, 0),
        job("j2", "a", 0, 3600, pre=1, lost=0.5),
        job("j3", "a", 100, 10_900, tier="production"),
        job("j4", "a", 200, NAN),
        job("j5", "b", 0, 0, pre=2, lost=1.25),
        job("j6", "b", 0, 600, tier="scavenger"),
    ]
    return RunResult("gpufair", "hand", 8, jobs, samples, {"a": 100.0, "b": None}, wall_seconds=1.5)


def test_hand_computed_figures() -> None:
    s = summarize(hand_result())
    # weights 1h, 2h, 1h, 0 out of 4h
    assert s["utilization"] == pytest.approx((1 * 1 + 1 * 2 + 1 / 8 * 1) / 4, abs=EXACT)  # 0.78125
    assert s["jain_index"] == pytest.approx((0.8 * 1 + 1 * 2 + 1 * 1) / 4, abs=EXACT)  # 0.95
    assert s["fragmented_gpu_fraction"] == pytest.approx(4 / 8 * 1 / 4, abs=EXACT)
    # a: |6-4|/8 for 1h + |1-2|/8 for 1h = 0.375 GPU-fraction-hours over 4h; b: 0.25 over 4h
    assert s["max_share_deviation"] == pytest.approx(0.375 / 4, abs=EXACT)
    a, b = s["teams"]["a"], s["teams"]["b"]
    assert a["gpu_hours"] == pytest.approx(6 + 4 * 2 + 1, abs=EXACT)
    assert b["gpu_hours"] == pytest.approx(2 + 4 * 2, abs=EXACT)
    assert a["entitled_gpu_hours"] == pytest.approx(4 + 4 * 2 + 2, abs=EXACT)
    assert b["entitled_gpu_hours"] == pytest.approx(4 + 4 * 2, abs=EXACT)
    assert (a["budget_gpu_hours"], a["budget_used_gpu_hours"]) == (100.0, 15.0)
    assert (b["budget_gpu_hours"], b["budget_used_gpu_hours"]) == (None, 10.0)
    assert (s["preemptions"], s["preempted_gpu_hours"]) == (3, 1.75)
    assert (s["jobs"], s["never_started"], s["gpus"], s["wall_seconds"]) == (6, 1, 8, 1.5)


def test_wait_percentiles_are_linear_over_started_jobs() -> None:
    s = summarize(hand_result())
    # all started: 0, 0, 600, 3600, 10800 -> rank 0.95*4 = 3.8, 0.99*4 = 3.96
    assert s["wait_p50_s"] == pytest.approx(600)
    assert s["wait_p95_s"] == pytest.approx(3600 + 0.8 * 7200)
    assert s["wait_p99_s"] == pytest.approx(3600 + 0.96 * 7200)
    a = s["teams"]["a"]  # 0, 3600, 10800 (j4 never started)
    assert (a["jobs"], a["never_started"]) == (4, 1)
    assert a["wait_p50_s"] == pytest.approx(3600)
    assert a["wait_p95_s"] == pytest.approx(3600 + 0.9 * 7200)
    assert a["wait_p99_s"] == pytest.approx(3600 + 0.98 * 7200)
    training = s["tiers"]["training"]  # j1 0, j2 3600, j5 0, j4 never
    assert (training["jobs"], training["never_started"]) == (4, 1)
    assert training["wait_p50_s"] == pytest.approx(0)
    assert training["wait_p95_s"] == pytest.approx(0.9 * 3600)
    assert s["tiers"]["production"]["wait_p50_s"] == pytest.approx(10_800)
    assert s["tiers"]["scavenger"]["wait_p99_s"] == pytest.approx(600)


def test_entitled_share_uses_weights_floors_and_caps() -> None:
    teams = {"a": Team("a", weight=3), "b": Team("b", weight=1)}
    shares = entitled_shares(8, {"a": 8, "b": 8}, teams)
    assert shares == pytest.approx({"a": 6, "b": 2})
    teams = {"a": Team("a", weight=3), "b": Team("b", guaranteed_gpus=4)}
    assert entitled_shares(8, {"a": 8, "b": 8}, teams) == pytest.approx({"a": 4, "b": 4})
    teams = {"a": Team("a", max_gpus=3)}  # b is missing: weight 1, no floor, no cap
    assert entitled_shares(8, {"a": 8, "b": 8, "c": 0}, teams) == pytest.approx({"a": 3, "b": 5})


def test_weights_change_the_yardstick_not_the_allocation() -> None:
    samples = [
        sample(0, {"a": 6, "b": 2}, {"a": 8, "b": 8}, busy=8),
        sample(2 * H, {}, {}, busy=0),
    ]
    result = RunResult("p", "t", 8, [], samples, {}, teams=(Team("a", weight=3), Team("b")))
    s = summarize(result)
    assert s["jain_index"] == pytest.approx(1.0, abs=EXACT)
    assert s["max_share_deviation"] == pytest.approx(0.0, abs=EXACT)
    assert s["teams"]["a"]["entitled_gpu_hours"] == pytest.approx(12, abs=EXACT)


def test_jain_counts_borrowing_and_skips_samples_without_demand() -> None:
    # [0, 1h): only a has demand, 8 GPUs idle for b's absence -> a alone, J = 1.
    # [1h, 2h): nobody has demand -> skipped.
    # [2h, 3h): a borrows: demand a=8, b=2, entitled 6/2, allocated 6/2 -> J = 1;
    # [3h, 4h): allocated a=4, b=2 on entitled 6/2 -> x = 2/3, 1 -> J = (5/3)^2 / (2 * 13/9) = 25/26.
    samples = [
        sample(0, {"a": 8}, {"a": 8}, busy=8),
        sample(1 * H, {}, {}, busy=0),
        sample(2 * H, {"a": 6, "b": 2}, {"a": 8, "b": 2}, busy=8),
        sample(3 * H, {"a": 4, "b": 2}, {"a": 8, "b": 2}, busy=6),
        sample(4 * H, {}, {}, busy=0),
    ]
    s = summarize(RunResult("p", "t", 8, [], samples, {}))
    assert s["jain_index"] == pytest.approx((1 + 1 + 25 / 26) / 3, abs=EXACT)
    assert s["utilization"] == pytest.approx((1 + 0 + 1 + 0.75) / 4, abs=EXACT)


def test_borrowing_above_entitlement_lowers_jain() -> None:
    # entitled 4/4, a holds 6 and b 2 -> x = 1.5, 0.5 (not capped at 1) -> J = 0.8
    samples = [sample(0, {"a": 6, "b": 2}, {"a": 8, "b": 8}, busy=8), sample(H, {}, {}, busy=0)]
    assert summarize(RunResult("p", "t", 8, [], samples, {}))["jain_index"] == pytest.approx(0.8, abs=EXACT)


def test_samples_are_sorted_and_unhealthy_time_left_out() -> None:
    samples = [
        sample(2 * H, {}, {}, busy=0),
        sample(0, {"a": 4}, {"a": 4}, busy=4),
        sample(H, {"a": 0}, {"a": 4}, busy=0, healthy=0.0),  # no healthy GPU: not in ratios
    ]
    s = summarize(RunResult("p", "t", 8, [], samples, {}))
    assert s["utilization"] == pytest.approx(0.5)
    assert s["fragmented_gpu_fraction"] == pytest.approx(0.0)
    assert s["teams"]["a"]["gpu_hours"] == pytest.approx(4.0)
    assert s["teams"]["a"]["entitled_gpu_hours"] == pytest.approx(4.0)  # 0 while nothing is healthy


def test_empty_and_single_sample_runs_give_nulls() -> None:
    for samples in ([], [sample(0, {"a": 1}, {"a": 1}, busy=1)]):
        s = summarize(RunResult("p", "t", 8, [job("j", "a", 0, NAN)], samples, {"a": 5.0}))
        for key in ("utilization", "jain_index", "max_share_deviation", "fragmented_gpu_fraction"):
            assert s[key] is None, key
        assert s["wait_p50_s"] is None
        assert s["teams"]["a"]["wait_p95_s"] is None
        assert s["teams"]["a"]["never_started"] == 1
        assert s["tiers"]["production"] == {
            "jobs": 0,
            "never_started": 0,
            "wait_p50_s": None,
            "wait_p95_s": None,
            "wait_p99_s": None,
        }
    assert s["teams"]["a"]["budget_used_gpu_hours"] is None  # the last sample has none


def _no_nan(text: str) -> dict:
    def refuse(name: str) -> float:
        raise AssertionError(f"{name} in summary.json")

    return json.loads(text, parse_constant=refuse)


def test_summary_json_has_exactly_the_keys_and_no_nan(tmp_path: Path) -> None:
    result = hand_result()
    result.jobs.append(JobRecord("x", "ghost", "training", 2.0, 0.0, lost_gpu_hours=NAN))
    returned = write_outputs(result, tmp_path)
    data = _no_nan((tmp_path / "gpufair" / "summary.json").read_text())
    assert data == returned
    assert set(data) == TOP_KEYS
    assert set(data["teams"]) == {"a", "b", "ghost"}
    assert all(set(t) == TEAM_KEYS for t in data["teams"].values())
    assert set(data["tiers"]) == {"production", "training", "scavenger"}
    assert all(set(t) == TIER_KEYS for t in data["tiers"].values())
    assert data["preempted_gpu_hours"] is None  # a NaN input is null, not NaN
    assert data["teams"]["ghost"]["wait_p50_s"] is None


def test_jobs_csv_columns_and_empty_cells(tmp_path: Path) -> None:
    write_outputs(hand_result(), tmp_path)
    with (tmp_path / "gpufair" / "jobs.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == JOB_COLUMNS
    body = {r[0]: dict(zip(JOB_COLUMNS, r, strict=True)) for r in rows[1:]}
    assert len(body) == 6
    assert body["j4"]["start_s"] == body["j4"]["end_s"] == body["j4"]["wait_s"] == ""
    assert body["j3"]["wait_s"] == "10800.0"
    assert body["j3"]["tier"] == "production"
    assert (body["j5"]["preemptions"], body["j5"]["lost_gpu_hours"]) == ("2", "1.25")
    assert float(body["j2"]["end_s"]) == 3660.0
