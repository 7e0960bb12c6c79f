"""Queue orders: which team's head gang the training pass tries next (lowest key first)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from scheduler.core.framework import QueueOrder

if TYPE_CHECKING:
    from scheduler.core.cycle import Cycle
    from scheduler.core.waiting import Lane, View

_EPS = 1e-6


class FairShare(QueueOrder):
    """gpufair's order: teams whose head fits within their fair share first; among them the
    highest fair-share factor (least decayed usage for their weight, as Slurm's
    `2^(-usage/shares)`), then the lowest share of their share in use, then name."""

    name = "fair-share"

    def keys(self, cyc: Cycle) -> Callable[[int, Lane], tuple]:
        alloc, share, factor, teams = cyc.alloc, cyc.share, cyc.factor, cyc.teams

        def key(t: int, lane: Lane) -> tuple:
            s = share[t]
            below = alloc[t] + lane.head().gpus <= s + _EPS
            ratio = alloc[t] / s if s > _EPS else math.inf
            return (0 if below else 1, -factor[t], ratio, teams[t].name)

        return key

    def skip_stops(self, cyc: Cycle, t: int, head: View) -> Callable[[View], bool] | None:
        # The key's first part is whether the head fits within the share: passing over a
        # head that does to one that does not would move the team back.
        if not cyc.below_share(t, head.gpus):
            return None
        return lambda v: not cyc.below_share(t, v.gpus)


class DominantShare(QueueOrder):
    """DRF: the team with the lowest dominant share (GPUs, CPU or memory held over the
    cluster's, whichever is highest), divided by its weight; no usage history. What
    Volcano's proportion plugin and YuniKorn's fair ordering do."""

    name = "dominant-share"

    def keys(self, cyc: Cycle) -> Callable[[int, Lane], tuple]:
        state = cyc.state
        gpus = max(state.healthy_gpus(), 1)
        cpu = max(float(state.cpu_free.clip(min=0).sum() + cyc.alloc_cpu.sum()), 1.0)
        mem = max(float(state.mem_free.clip(min=0).sum() + cyc.alloc_mem.sum()), 1.0)
        alloc, alloc_cpu, alloc_mem, teams = cyc.alloc, cyc.alloc_cpu, cyc.alloc_mem, cyc.teams

        def key(t: int, lane: Lane) -> tuple:
            d = max(alloc[t] / gpus, alloc_cpu[t] / cpu, alloc_mem[t] / mem)
            return (d / teams[t].weight, teams[t].name)

        return key


class Arrival(QueueOrder):
    """First come, first served across teams: the team whose head gang is oldest."""

    name = "arrival"

    skips_doomed = False  # the key is the head's: each gang moves the team

    def keys(self, cyc: Cycle) -> Callable[[int, Lane], tuple]:
        return lambda t, lane: lane.head_key()


QUEUE_ORDERS: dict[str, QueueOrder] = {o.name: o for o in (FairShare(), DominantShare(), Arrival())}
