"""Reclaim rules: when a training gang below its team's share may evict other teams' work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.core import reasons
from scheduler.core.framework import Note, Reclaim, ReclaimRule

if TYPE_CHECKING:
    from scheduler.core.cycle import Cycle

_EPS = 1e-6


class BelowShare(ReclaimRule):
    """A gang reclaims when placing it keeps its team within its fair share, the team is
    well below that share (`reclaimThreshold`) and the gang has waited `reclaimAfter`.

    The threshold keeps a team that hovers near its share as its jobs end and start waiting
    for the GPUs that free up, rather than evicting work that would restart at once
    elsewhere; the wait lets completions free room first, which costs nobody their work.
    """

    name = "below-share"

    def _on(self, cyc: Cycle) -> bool:
        return cyc.config.reclaim_enabled

    def _well_below(self, cyc: Cycle, t: int) -> bool:
        threshold = cyc.config.reclaim_threshold
        return cyc.alloc[t] < threshold * cyc.share[t] - _EPS or threshold >= 1

    def _waited(self, cyc: Cycle, submit_s: float) -> bool:
        return cyc.now - submit_s >= cyc.config.reclaim_after_s - _EPS

    def may_reclaim(self, cyc: Cycle, t: int, gpus: float, submit_s: float) -> Reclaim:
        if (
            self._on(cyc)
            and cyc.below_share(t, gpus)
            and self._well_below(cyc, t)
            and self._waited(cyc, submit_s)
        ):
            return Reclaim.OWNED
        return Reclaim.NONE

    def held_back(self, cyc: Cycle, t: int, gpus: float, submit_s: float) -> Note | None:
        if not (self._on(cyc) and cyc.below_share(t, gpus)):
            return None
        if not self._well_below(cyc, t):
            threshold = cyc.config.reclaim_threshold
            return lambda text: reasons.reclaim_held(text, threshold)
        if not self._waited(cyc, submit_s):
            after = cyc.config.reclaim_after_s
            return lambda text: reasons.reclaim_deferred(text, after)
        return None


class Borrowing(BelowShare):
    """As `below-share`, and a gang that keeps its team within its share (and has waited
    `reclaimAfter`) may also take back borrowed work (victims.borrowed: young gangs beyond
    their team's share) whatever `reclaimThreshold` says, when `reclaimBorrowed` is on.

    Without it a burst into an empty cluster settles by arrival order, not by share: the
    first pods of every team start, the minimum runtime then shields them and the threshold
    stops the team below its share short of it. Young work loses little when evicted, and
    the victim team keeps its share, so nothing here is reclaimed back.
    """

    name = "borrowing"

    def may_reclaim(self, cyc: Cycle, t: int, gpus: float, submit_s: float) -> Reclaim:
        level = super().may_reclaim(cyc, t, gpus, submit_s)
        if (
            cyc.config.reclaim_borrowed
            and self._on(cyc)
            and cyc.below_share(t, gpus)
            and self._waited(cyc, submit_s)
        ):
            level |= Reclaim.BORROWED
        return level


RECLAIM_RULES: dict[str, ReclaimRule] = {BelowShare.name: BelowShare(), Borrowing.name: Borrowing()}
