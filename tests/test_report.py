"""report.html, its PNGs, the downsampling behind them and the terminal table."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from simulator.model import JobRecord, RunResult, Sample
from simulator.report import MAX_POINTS, bin_steps, side_by_side_table, write_report
from simulator.summary import summarize

H = 3600.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(
    policy: str, samples: int = 50, teams: int = 3, budgets: bool = True, trace: str = "toy"
) -> RunResult:
    """A small replay: `teams` teams on 4 GPUs each, one sample a minute, random walks."""
    names = [f"team-{i}" for i in range(teams)]
    rng = np.random.default_rng(len(policy) + samples)
    steps = rng.integers(-1, 2, size=(samples, teams)).cumsum(axis=0)
    allocs = np.clip(steps + 2, 0, 5).astype(float)
    used = np.cumsum(allocs, axis=0) / 60.0
    out = []
    for k in range(samples):
        alloc = dict(zip(names, allocs[k].tolist(), strict=True))
        demand = {n: alloc[n] + float(k % 3) for n in names}
        budget_used = dict(zip(names, used[k].tolist(), strict=True))
        busy = min(sum(alloc.values()), 4.0 * teams)
        out.append(Sample(k * 60.0, alloc, {}, demand, busy, 1.0, budget_used, 4.0 * teams))
    jobs = [
        JobRecord(f"j{i}", names[i % teams], ("training", "production", "scavenger")[i % 3], 2.0, i * 30.0)
        for i in range(40)
    ]
    for i, j in enumerate(jobs):
        if i % 7:
            j.start_s = j.submit_s + (i % 5) * 400.0
            j.end_s = j.start_s + 600.0
    budget = {n: (200.0 if i % 2 == 0 and budgets else None) for i, n in enumerate(names)}
    return RunResult(policy, trace, 16, jobs, out, budget, wall_seconds=0.25)


def referenced_pngs(page: str) -> set[str]:
    return set(re.findall(r'<img src="([^"]+\.png)"', page))


def check_pngs(folder: Path, page: str) -> set[str]:
    written = {p.name for p in folder.glob("*.png")}
    assert written, "no plots written"
    assert referenced_pngs(page) == written
    for name in written:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 1000, name
    return written


def test_report_links_every_plot_it_writes(tmp_path: Path) -> None:
    results = [run("gpufair"), run("drf", budgets=False), run("fifo", teams=10)]
    summaries = [summarize(r) for r in results]
    path = write_report(results, summaries, tmp_path / "out")
    assert path == tmp_path / "out" / "report.html"
    page = path.read_text()
    written = check_pngs(path.parent, page)
    assert {"gpufair-budget.png", "fifo-budget.png"} <= written
    assert "drf-budget.png" not in written  # no team of drf's replay has a budget
    for policy in ("gpufair", "drf", "fifo"):
        for kind in ("allocation", "wait-cdf", "utilization"):
            assert f"{policy}-{kind}.png" in written
        assert f'id="{policy}"' in page
    assert "http" not in page  # self-contained: nothing fetched from elsewhere
    assert "jain index" in page and "team-9" in page


def test_names_are_escaped_and_duplicates_kept_apart(tmp_path: Path) -> None:
    results = [run("a<b>&c", trace="t1"), run("a<b>&c", trace="t2")]
    page = write_report(results, [summarize(r) for r in results], tmp_path).read_text()
    assert "<b>" not in page and "a&lt;b&gt;&amp;c (t1)" in page
    written = check_pngs(tmp_path, page)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+\.png", n) for n in written)
    assert any(n.startswith("a-b-c-t1") for n in written) and any(n.startswith("a-b-c-t2") for n in written)


def test_report_needs_one_summary_per_result(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one summary each"):
        write_report([run("x")], [], tmp_path)


def test_side_by_side_table() -> None:
    summaries = [summarize(run("gpufair")), summarize(run("fifo"))]
    summaries[1]["jain_index"] = None
    table = side_by_side_table(summaries)
    lines = table.splitlines()
    assert lines[0].split() == ["gpufair", "fifo"]
    labels = [
        "utilization",
        "jain index",
        "max share deviation",
        "wait p50 (s)",
        "wait p95 (s)",
        "wait p99 (s)",
        "jobs never started",
        "preemptions",
        "preempted GPU-hours",
        "fragmented fraction",
    ]
    assert [line[: len(label)] for line, label in zip(lines[1:], labels, strict=True)] == labels
    jain = next(line for line in lines if line.startswith("jain index"))
    assert jain.split()[-1] == "-"
    util = next(line for line in lines if line.startswith("utilization"))
    assert util.split()[-2] == f"{summaries[0]['utilization']:.3f}"


def test_bin_steps_are_exact_time_weighted_means() -> None:
    t = np.array([0.0, 1.0, 3.0, 4.0])
    dt = np.array([1.0, 2.0, 1.0, 0.0])
    v = np.array([2.0, 4.0, 0.0, 7.0])
    x, y = bin_steps(t, dt, v, max_points=2)
    assert x.tolist() == [1.0, 3.0]
    assert y.tolist() == pytest.approx([(2 + 4) / 2, (4 + 0) / 2])
    _, y2 = bin_steps(t, dt, np.column_stack([v, 2 * v]), max_points=2)
    assert y2.ravel().tolist() == pytest.approx([3.0, 6.0, 2.0, 4.0])
    x, y = bin_steps(t, dt, v, max_points=10)  # few samples: drawn as they are
    assert x is t and y is v


def test_bin_steps_preserve_the_integral() -> None:
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.exponential(10.0, 50_000))
    t[1000:1010] = t[1000]  # several samples at one instant
    dt = np.append(np.diff(t), 0.0)
    v = rng.uniform(0, 100, len(t))
    x, y = bin_steps(t, dt, v)
    assert len(x) == MAX_POINTS
    width = (t[-1] - t[0]) / MAX_POINTS
    assert (y * width).sum() == pytest.approx((v * dt).sum(), rel=1e-9)


def test_plots_200k_samples(tmp_path: Path) -> None:
    """A long replay: summary and every plot finish (downsampled), no timing asserted."""
    n = 200_000
    names = ("vision", "nlp", "speech")
    rng = np.random.default_rng(7)
    allocs = rng.integers(0, 40, size=(64, 3)).astype(float)
    samples = []
    for k in range(n):
        row = allocs[k % 64]
        alloc = dict(zip(names, row.tolist(), strict=True))
        demand = {name: a + 8.0 for name, a in alloc.items()}
        used = {"vision": (k % 50_000) / 500.0}
        samples.append(Sample(k * 30.0, alloc, {}, demand, float(row.sum()), 2.0, used, 128.0))
    jobs = [
        JobRecord(f"j{i}", names[i % 3], "training", 8.0, i * 60.0, i * 60.0 + i % 900) for i in range(20_000)
    ]
    jobs.append(JobRecord("late", "nlp", "scavenger", 8.0, 0.0))
    result = RunResult("gpufair", "long", 128, jobs, samples, {"vision": 1000.0, "nlp": None})
    summary = summarize(result)
    assert 0 < summary["utilization"] < 1
    page = write_report([result], [summary], tmp_path).read_text()
    assert len(check_pngs(tmp_path, page)) == 4
    assert math.isfinite(summary["jain_index"])
