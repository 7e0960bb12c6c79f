"""The bounds that rule out hopeless preemption plans before victims are tried one by one."""

from __future__ import annotations

import numpy as np

from scheduler.core.model import Tier
from scheduler.core.preemption import Candidates, _freeable

T, S = int(Tier.TRAINING), int(Tier.SCAVENGER)


def _cand(milli: list[int], slack: list[float] | None) -> Candidates:
    """One node; gangs 0 and 1 of team 0 (training), gang 2 of team 1 (scavenger)."""
    return Candidates(
        tier=np.array([T, T, S]),
        cost=np.zeros(3),
        pod_node=np.zeros(3, dtype=np.int64),
        pod_gang=np.arange(3),
        pod_milli=np.array(milli, dtype=np.int64),
        victim=lambda g: None,  # type: ignore[arg-type, return-value]
        acceptable=np.ones(3, dtype=bool),
        team=np.array([0, 0, 1]),
        slack=None if slack is None else np.array(slack),
    )


def test_a_team_gives_no_more_than_its_slack_on_a_node():
    pods = np.arange(3)
    # Two 4-GPU gangs of a team that may give 6 GPUs, one scavenger GPU: at most 7 GPUs
    # (and a milli-GPU of margin, so the bound is never tighter than accept).
    slots, milli = _freeable(1, _cand([4000, 4000, 1000], [6.0, 0.0]), pods)
    assert (slots.tolist(), milli.tolist()) == ([7], [7001])
    # No limit (production preempts): everything.
    slots, milli = _freeable(1, _cand([4000, 4000, 1000], None), pods)
    assert (slots.tolist(), milli.tolist()) == ([9], [9000])
    # A slack just under a whole GPU still frees that GPU's worth only up to the slack.
    slots, _ = _freeable(1, _cand([4000, 4000, 1000], [5.9999999, 0.0]), pods)
    assert slots.tolist() == [7]  # never tighter than accept, which allows 6 within its margin


def test_shared_gpu_victims_keep_their_slots_unlimited():
    # Half-GPU pods may free a whole slot each with half a GPU taken: slots are not
    # capped by a slack of half a GPU, the milli-GPUs are.
    slots, milli = _freeable(1, _cand([500, 500, 1000], [0.5, 0.0]), np.arange(3))
    assert (slots.tolist(), milli.tolist()) == ([3], [1501])
