"""Replays on a team tree with answers worked out by hand (the note's scenarios)."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.core import Budget, OnExhausted, Team
from simulator.cluster_spec import nodes_for_gpus
from simulator.engine import Replay
from simulator.model import Job, Trace

MONDAY = 1_504_483_200.0  # 2017-09-04 00:00 UTC


def _tree(dept_budget: Budget | None = None) -> tuple[Team, ...]:
    """org -> A (a1, a2), B (b1)."""
    return (
        Team("org"),
        Team("A", parent="org", budget=dept_budget),
        Team("a1", parent="A", namespaces=("a1",)),
        Team("a2", parent="A", namespaces=("a2",)),
        Team("B", parent="org"),
        Team("b1", parent="B", namespaces=("b1",)),
    )


def _flat() -> tuple[Team, ...]:
    return tuple(Team(n, namespaces=(n,)) for n in ("a1", "a2", "b1"))


def _jobs() -> tuple[Job, ...]:
    # a2 fills 32 GPUs at 0; at 1 h a1 and b1 each ask for two 8-GPU jobs.
    hog = [Job(f"a2-{i}", 0, 100_000, 1, 8, "a2") for i in range(4)]
    late = [Job(f"{t}-{i}", 3_600, 10_000, 1, 8, t) for t in ("a1", "b1") for i in range(2)]
    return (*hog, *late)


def _run(teams: tuple[Team, ...], jobs: tuple[Job, ...], gpus: int = 32, epoch: float = 0.0):
    result = Replay(Trace("t", jobs, epoch_s=epoch), nodes_for_gpus(gpus), teams, "gpufair").run()
    return {r.job_id: r for r in result.jobs}, result


def test_departments_split_first_then_their_teams() -> None:
    """Tree: A and B get 16 each; a1 gets 8 of A's 16, b1 all of B's 16. So a1 starts one
    job at 1 h, b1 both, and a2 loses three of its four jobs. Flat, each team's share is
    32/3: a1 and b1 start one job each and a2 loses two."""
    r, _ = _run(_tree(), _jobs())
    started = {j for j, x in r.items() if x.start_s == 3_600}
    assert started == {"a1-0", "b1-0", "b1-1"}
    assert sum(r[f"a2-{i}"].preemptions for i in range(4)) == 3
    flat, _ = _run(_flat(), _jobs())
    assert {j for j, x in flat.items() if x.start_s == 3_600} == {"a1-0", "b1-0"}
    assert sum(flat[f"a2-{i}"].preemptions for i in range(4)) == 2


def test_a_department_budget_blocks_all_its_teams() -> None:
    """A has 8 GPU-hours a week (block): a1's hour on 8 GPUs uses it up, so a2's job waits
    for next Monday while b1's, outside A, starts at once."""
    jobs = (
        Job("a1-0", 0, 3_600, 1, 8, "a1"),
        Job("a2-0", 7_200, 3_600, 1, 8, "a2"),
        Job("b1-0", 7_200, 3_600, 1, 8, "b1"),
    )
    r, result = _run(_tree(Budget(8.0, "week", OnExhausted.BLOCK)), jobs, gpus=16, epoch=MONDAY)
    assert r["a1-0"].start_s == 0 and r["b1-0"].start_s == 7_200
    assert r["a2-0"].start_s == pytest.approx(7 * 86_400)
    assert max(s.budget_used["A"] for s in result.samples) == pytest.approx(8.0)


def test_the_report_plots_shares_per_level(tmp_path) -> None:
    from simulator.report import write_report
    from simulator.summary import series, summarize

    _, result = _run(_tree(), _jobs())
    write_report([result], [summarize(result)], tmp_path)
    assert (tmp_path / "gpufair-levels.png").stat().st_size > 10_000
    assert "shares per level" in (tmp_path / "report.html").read_text()
    # What the level panels sum: a group's subtree entitled share is its share from the core.
    s = series(result)
    col = {name: j for j, name in enumerate(s.teams)}
    busy = (s.t >= 3_600) & (s.t < 13_000)  # every team asks for more than its share
    dept_a = s.entitled[busy][:, [col["a1"], col["a2"]]].sum(axis=1)
    assert busy.any() and dept_a == pytest.approx(np.full(dept_a.shape, 16.0))
