"""Who may be evicted for whom: gpufair's victim policy, and the candidate set built from it.

`ProtectShares` is DESIGN.md's rule 2 and 4: production may evict scavenger and training
work (never production); a training gang may evict scavenger work, and when it may
reclaim, training gangs of other teams above their fair share, but never so far that the
victim team falls below its own share (no ping-pong); no gang is a victim before its
minimum runtime (for production, when `productionHonoursMinRuntime`), except borrowed
work (`borrowed`) for a gang whose reclaim rule grants `Reclaim.BORROWED`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from scheduler.core.cluster import Held
from scheduler.core.framework import Accept, Reclaim, VictimPolicy
from scheduler.core.model import Tier
from scheduler.core.preemption import Candidates, Victim

if TYPE_CHECKING:
    from scheduler.core.cycle import Cycle
    from scheduler.core.waiting import Waiting

_EPS = 1e-6


class ProtectShares(VictimPolicy):
    """Lower tiers only, and never a team below its fair share (see the module doc)."""

    name = "protect-shares"

    def eligible(self, cyc: Cycle, w: Waiting, reclaim: Reclaim) -> np.ndarray | None:
        alive, tier = cyc.run_alive, cyc.run_tier
        if w.tier is Tier.PRODUCTION:
            ok = alive & (tier < Tier.PRODUCTION)
            if cyc.config.production_honours_min_runtime:
                ok &= cyc.run_old
            return ok
        if w.tier is not Tier.TRAINING:
            return None
        ok = alive & cyc.run_old & (tier == Tier.SCAVENGER)
        if reclaim:
            over = np.array(cyc.alloc) > np.array(cyc.share) + _EPS
            over[cyc.sink] = False
            if cyc.tree.nested:
                over = _nearest_first(cyc, w, over)
            others = alive & (tier == Tier.TRAINING) & (cyc.run_team != w.team) & over[cyc.run_team]
            if reclaim & Reclaim.OWNED:
                ok |= others & cyc.run_old
            if reclaim & Reclaim.BORROWED:
                young = others & ~cyc.run_old
                if young.any():  # the usual case on a settled cluster: no young work to take
                    ok |= young & cyc.run_borrowed
        return ok

    def accept(self, cyc: Cycle, w: Waiting) -> Accept:
        if w.tier is Tier.PRODUCTION:
            return lambda taken, v: True
        alloc, share, run_team = cyc.alloc, cyc.share, cyc.run_team
        if cyc.tree.nested:
            return _subtree_accept(cyc, w)

        def accept(taken: Mapping[str, float], v: Victim) -> bool:
            if v.tier is Tier.SCAVENGER:
                return True
            t = int(run_team[v.ref])
            return alloc[t] - taken.get(v.team, 0) - v.gpus >= share[t] - _EPS

        return accept

    def acceptable(self, cyc: Cycle, w: Waiting) -> np.ndarray:
        if w.tier is Tier.PRODUCTION:
            return np.ones(len(cyc.run_team), dtype=bool)
        if cyc.tree.nested:
            return (cyc.run_tier == Tier.SCAVENGER) | (cyc.run_gpus <= _room(cyc, w)[cyc.run_team] + _EPS)
        alloc, share = np.array(cyc.alloc)[cyc.run_team], np.array(cyc.share)[cyc.run_team]
        return (cyc.run_tier == Tier.SCAVENGER) | (alloc - cyc.run_gpus >= share - _EPS)

    def slack(self, cyc: Cycle, w: Waiting) -> np.ndarray | None:
        if w.tier is not Tier.TRAINING:
            return None
        if cyc.tree.nested:
            return np.maximum(_room(cyc, w), 0.0)
        return np.maximum(np.array(cyc.alloc) - np.array(cyc.share), 0.0)


# Teams in a tree (teamtree.py): a victim team's subtrees on its side of the common
# ancestor with the reclaiming team, the team itself and each group up to that ancestor,
# all stay at or above their shares; and the nearest over-share teams are asked first.


def _room(cyc: Cycle, w: Waiting) -> np.ndarray:
    """Per team (and the sink, 0): what it can give `w`'s team (TeamTree.room)."""
    return np.array([*cyc.tree.room(cyc.alloc, cyc.share, w.team), 0.0])


def _nearest_first(cyc: Cycle, w: Waiting, over: np.ndarray) -> np.ndarray:
    """The over-share teams of the nearest subtree around `w`'s team whose room could
    cover the gang (its siblings, then its department's siblings, ...); all of them when
    no nearer subtree could."""
    room = _room(cyc, w)
    over = over & (room > _EPS)
    n = len(cyc.teams)
    near = np.array([cyc.tree.common(t, w.team) for t in range(n)] + [-1])
    for level in sorted({int(c) for c in near[over]}, reverse=True):
        pick = over & (near >= level)
        if float(room[pick].sum()) >= w.gpus - _EPS:
            return pick
    return over


def _subtree_accept(cyc: Cycle, w: Waiting) -> Accept:
    tree, share, run_team = cyc.tree, cyc.share, cyc.run_team
    sub = tree.subtree_sums(cyc.alloc)
    names = [t.name for t in cyc.teams]

    def accept(taken: Mapping[str, float], v: Victim) -> bool:
        if v.tier is Tier.SCAVENGER:
            return True
        for i in tree.below(int(run_team[v.ref]), w.team):
            given = sum(taken.get(names[j], 0) for j in tree.subtree(i))
            if sub[i] - given - v.gpus < share[i] - _EPS:
                return False
        return True

    return accept


VICTIM_POLICIES: dict[str, VictimPolicy] = {ProtectShares.name: ProtectShares()}


def borrowed(cyc: Cycle) -> np.ndarray:
    """Per running gang: whether it is borrowed, a training gang younger than its minimum
    runtime that lies beyond its team's fair share when the team's training gangs are
    counted oldest first (gangs that started at the same instant count as one, so no
    order among them is made up). The minimum runtime protects a team's work within its
    share; what a team took above it while young comes back at once when a team below its
    share wants it, losing little work."""
    share = np.array(cyc.share)
    over = np.array(cyc.alloc) > share + _EPS
    over[cyc.sink] = False
    training = (cyc.run_tier == Tier.TRAINING) & over[cyc.run_team]
    out = np.zeros(len(cyc.run_team), dtype=bool)
    if not (training & ~cyc.run_old).any():
        return out
    rows = np.flatnonzero(training)
    team, start, gpus = cyc.run_team[rows], cyc.rt.start[rows], cyc.run_gpus[rows]
    # One sort key, team then start: equal starts give equal keys, so an instant is one run.
    offset = start - start.min()
    key = team * (float(offset.max()) + 1.0) + offset
    order = np.argsort(key, kind="stable")
    key, team, gpus = key[order], team[order], gpus[order]
    total = np.cumsum(gpus)
    base = (total - gpus)[np.searchsorted(team, team, "left")]  # GPUs of the team's older gangs
    upto = total[np.searchsorted(key, key, "right") - 1]  # ... up to the end of this instant
    out[rows[order]] = upto - base > share[team] + _EPS
    return out & ~cyc.run_old


def held_by(cyc: Cycle, row: int) -> Held:
    """What the running pod at `row` holds."""
    special = cyc.special.get(row)
    if special is not None:
        return special
    run = cyc.rt
    return Held(
        int(run.pod_node[row]),
        (),
        0,
        int(run.pod_cpu[row]),
        int(run.pod_mem[row]),
        int(run.pod_gpus[row]),
    )


def make_victim(cyc: Cycle, g: int) -> Victim:
    t = int(cyc.run_team[g])
    rows = cyc.rt.rows(g)
    return Victim(
        g,
        cyc.rt.gangs[g].id,
        cyc.teams[t].name if t != cyc.sink else "",
        Tier(int(cyc.run_tier[g])),
        float(cyc.run_gpus[g]),
        float(cyc.run_cost[g]),
        tuple(held_by(cyc, row) for row in rows),
        tuple(cyc.rt.pod_names[row] for row in rows),
        cyc.rt.pod_node[rows.start : rows.stop],
    )


def candidates(cyc: Cycle, w: Waiting, reclaim: Reclaim) -> Candidates | None:
    """The running gangs `w` may evict under the policy's victim rule, as pod arrays."""
    rule = cyc.policy.victims
    ok = rule.eligible(cyc, w, reclaim)
    if ok is None or not ok.any():
        return None
    pods = ok[cyc.run_pod_gang]
    return Candidates(
        cyc.run_tier,
        cyc.run_cost,
        cyc.rt.pod_node[pods],
        cyc.run_pod_gang[pods],
        cyc.run_pod_milli[pods],
        cyc.victim,
        rule.acceptable(cyc, w),
        cyc.run_team,
        rule.slack(cyc, w),
    )


def could_free_enough(cyc: Cycle, w: Waiting, cand: Candidates) -> bool:
    """A cheap upper bound: free GPUs plus all a plan may take, against the need."""
    state = cyc.state
    free = float(state.total_free[state.schedulable].sum()) / 1000.0
    if w.tier is Tier.PRODUCTION or cand.slack is None:
        takeable = float(cand.pod_milli.sum()) / 1000.0
        return free + takeable >= w.gpus - _EPS
    scav = cand.tier[cand.pod_gang] == Tier.SCAVENGER
    takeable = float(cand.pod_milli[scav].sum()) / 1000.0
    slack = cand.slack.copy()
    slack[[w.team, cyc.sink]] = 0.0
    if free + takeable + float(slack.sum()) < w.gpus - _EPS:
        return False
    # Tighter: a training victim is accepted only while its team stays at or above its
    # share, so one larger than its team's slack is never taken, and no team gives more
    # than its slack (see ProtectShares.accept).
    gangs = np.flatnonzero(np.bincount(cand.pod_gang[~scav]))  # as np.unique, counted not sorted
    if gangs.size:
        team, gpus = cyc.run_team[gangs], cyc.run_gpus[gangs]
        alone = gpus <= slack[team] + _EPS
        most = np.bincount(team[alone], weights=gpus[alone], minlength=len(cyc.teams) + 1)
        takeable += float(np.minimum(slack + _EPS, most).sum())
    return free + takeable >= w.gpus - _EPS
