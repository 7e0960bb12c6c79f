"""The cycle's passes over the ready gangs, in the order a policy lists them."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from scheduler.core import reasons
from scheduler.core.framework import Note, Reclaim, TierPass
from scheduler.core.model import Pending, Tier
from scheduler.core.placement import place_gang
from scheduler.core.waiting import Lane, View, Waiting

if TYPE_CHECKING:
    from scheduler.core.cycle import Cycle


def _by_priority(v: View) -> tuple[int]:
    """A lane's order within one team: priority first (then age, as every lane)."""
    return (-v.gangs[0].priority,)


class Nominated(TierPass):
    """Gangs an earlier cycle preempted for bind first, on the nodes their victims left.

    The lost work bought that room: were the gang to wait its turn again, a gang earlier
    in this cycle's order (often a victim, restarting) would take the room, and the
    preemptor would evict again. Production first, then priority and age; a training gang
    still stays within its team's maxGPUs, and one whose team has since run out of budget
    (now scavenger work) waits with the other scavenger work."""

    name = "nominated"

    def run(self, cyc: Cycle, ready: list[View]) -> None:
        held = []
        for v in cyc.views[cyc.groups :]:  # a gang with a nomination is a single
            w = v.waiting
            if (
                w is not None
                and v.problem is None
                and w.nominated is not None
                and v.tier is not Tier.SCAVENGER
            ):
                held.append((v, w))
        if not held:
            return
        held.sort(key=lambda vw: (-int(vw[0].tier), -vw[0].gangs[0].priority, vw[0].keys[0]))
        for v, w in held:
            assert w.nominated is not None
            if w.tier is Tier.TRAINING and cyc.over_cap(w.team, w.gpus):
                continue
            if w.tier is Tier.PRODUCTION and cyc.over_production_cap(w.team, w.gpus):
                continue
            placed = place_gang(cyc.state, cyc.cache, w.nominated)
            cyc.state.commit()
            if placed is not None:
                cyc.bind(w, placed)
                v.cursor = v.size  # bound: no pass looks at it again


def simple_pass(
    cyc: Cycle,
    queue: list[View],
    preempt: bool,
    demoted: np.ndarray | None = None,
    capped: Callable[[int, float], bool] | None = None,
    over: Callable[[Waiting], Pending] | None = None,
) -> None:
    """Priority then age; gangs of `demoted` teams (over budget) after all others. A gang
    for which `capped(team, gpus)` holds waits with the reason `over` gives."""
    if not queue:
        return
    last = demoted if demoted is not None else np.zeros(len(cyc.teams) + 1, dtype=bool)

    def order(v: View) -> tuple:
        return (bool(last[v.team]), -v.gangs[0].priority)

    def is_capped(v: View) -> bool:
        return capped is not None and capped(v.team, v.gpus)

    def stops(v: View) -> bool:
        return not cyc.doomed(v, preempt, Reclaim.NONE) or is_capped(v)

    lane = Lane(queue, order)
    while lane:
        head = lane.head()
        if not is_capped(head) and cyc.doomed(head, preempt, Reclaim.NONE):
            runs = lane.skip(stops, head_passes=True)
            cyc.passed_over(runs, cyc.waits_why)
            continue
        v, i = lane.pop()
        w = cyc.member(v, i)
        if over is not None and is_capped(v):  # a view's gangs all ask its GPUs
            if cyc.explain:
                cyc.out.pending.append(over(w))
            continue
        cyc.schedule(w, preempt=preempt, reclaim=Reclaim.NONE)


def _always(reason: tuple[str, str]) -> Callable[[View], tuple[str, str]]:
    return lambda _v: reason


class Production(TierPass):
    """Production inference first, in priority then age order; it may preempt lower tiers.
    A team's production stays within its spec.production.maxGPUs (the platform's grant)."""

    name = "production"

    def run(self, cyc: Cycle, ready: list[View]) -> None:
        def over(w: Waiting) -> Pending:
            team = cyc.teams[w.team]
            text = reasons.over_production_cap(team, float(cyc.prod[w.team]), w.gpus)
            return Pending(w.gang.id, "OverProductionMaxGPUs", text)

        queue = cyc.ready_in(ready, Tier.PRODUCTION)
        simple_pass(cyc, queue, preempt=True, capped=cyc.over_production_cap, over=over)


class Scavenger(TierPass):
    """Scavenger work on what is left, never preempting. Work that chose the scavenger tier
    goes before work demoted there by a budget."""

    name = "scavenger"

    def run(self, cyc: Cycle, ready: list[View]) -> None:
        queue = cyc.ready_in(ready, Tier.SCAVENGER)
        simple_pass(cyc, queue, preempt=False, demoted=cyc.scavenging)


class Fifo(TierPass):
    """Strict first come, first served over every tier: the first gang that cannot start
    blocks all behind it (head of line), and nobody preempts."""

    name = "fifo"

    def run(self, cyc: Cycle, ready: list[View]) -> None:
        lane = Lane(ready, lambda v: ())
        while lane:
            v, i = lane.pop()
            w = cyc.member(v, i)
            if not cyc.schedule(w, preempt=False, reclaim=Reclaim.NONE):
                cyc.passed_over(lane.rest(), _always(("QueuedBehind", reasons.behind(w.gang))))


class Training(TierPass):
    """Training work, team by team in the policy's queue order: each team's gangs by
    priority then age; a team below its share may reclaim under the policy's rule."""

    name = "training"

    def run(self, cyc: Cycle, ready: list[View]) -> None:
        cyc.divide_training_capacity()  # what production holds now is settled
        by_team: dict[int, list[View]] = {}
        for v in cyc.ready_in(ready, Tier.TRAINING):
            by_team.setdefault(v.team, []).append(v)
        queues: dict[int, Lane] = {}
        for t, views in by_team.items():
            lane = Lane(views, _by_priority)
            if lane:
                queues[t] = lane
        order = cyc.policy.order
        key = order.keys(cyc)
        rule = cyc.policy.reclaim

        def may_reclaim(t: int, gpus: float, submit_s: float) -> Reclaim:
            return Reclaim.NONE if rule is None else rule.may_reclaim(cyc, t, gpus, submit_s)

        def held_back(t: int, gpus: float, submit_s: float) -> Note | None:
            return None if rule is None else rule.held_back(cyc, t, gpus, submit_s)

        def doomed(t: int, v: View) -> bool:
            if v.waiting is not None:
                return False
            if cyc.over_cap(t, v.gpus):
                return True
            if not cyc.memo.fails(v.request.key if v.request else None, cyc.releases):
                return False  # its request may still fit: worth a try (checked first: cheapest)
            # The view's gangs wait in submit order, so a head too young to reclaim has
            # only younger gangs behind it.
            return cyc.doomed(v, True, may_reclaim(t, v.gpus, v.keys[v.cursor][0]))

        def stops_at(t: int, extra: Callable[[View], bool] | None) -> Callable[[View], bool]:
            def stops(v: View) -> bool:
                return not doomed(t, v) or (extra is not None and extra(v))

            return stops

        def why(v: View) -> tuple[str, str]:
            t = v.team
            if cyc.over_cap(t, v.gpus):
                return "OverMaxGPUs", reasons.over_cap(cyc.teams[t], cyc.alloc[t], v.gpus)
            code, text = cyc.waits_why(v)
            note = held_back(t, v.gpus, v.keys[-1][0])  # the view's youngest gang
            return code, text if note is None else note(text)

        # Teams in a heap by the queue order. Only the team that was served changes its
        # key, except when evictions lower other teams' holdings: then it is rebuilt.
        heap = [(key(t, lane), t) for t, lane in queues.items()]
        heapq.heapify(heap)
        while heap:
            _, t = heapq.heappop(heap)
            lane = queues[t]
            evicted_before = cyc.releases
            head = lane.head()
            if order.skips_doomed and doomed(t, head):
                # Nothing changes while gangs fail, so this team stays first until a gang
                # that may succeed, or one that would change the team's key: pass over all
                # before that in one step (the head is doomed: it passes).
                cyc.passed_over(lane.skip(stops_at(t, order.skip_stops(cyc, t, head)), head_passes=True), why)
            else:
                v, i = lane.pop()
                w = cyc.member(v, i)
                if cyc.over_cap(t, w.gpus):
                    text = reasons.over_cap(cyc.teams[t], cyc.alloc[t], w.gpus)
                    cyc.out.pending.append(Pending(w.gang.id, "OverMaxGPUs", text))
                else:
                    submit = w.gang.submit_s
                    note = held_back(t, w.gpus, submit) if cyc.explain else None  # words only
                    cyc.schedule(w, preempt=True, reclaim=may_reclaim(t, w.gpus, submit), note=note)
            if not lane:
                del queues[t]
            if cyc.releases != evicted_before:
                heap = [(key(u, queues[u]), u) for u in queues]
                heapq.heapify(heap)
            elif t in queues:
                heapq.heappush(heap, (key(t, lane), t))


TIER_PASSES: dict[str, TierPass] = {
    p.name: p for p in (Nominated(), Production(), Training(), Scavenger(), Fifo())
}
