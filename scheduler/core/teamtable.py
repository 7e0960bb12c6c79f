"""The cycle's team status, built on first read."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from scheduler.core.model import TeamStatus

if TYPE_CHECKING:
    from scheduler.core.cycle import Cycle


class TeamTable(Mapping[str, TeamStatus]):
    """Built on first read: a replay reads it only when it samples, and with 50 teams
    building it every cycle was a tenth of a quiet cycle."""

    __slots__ = ("_build", "_items")

    def __init__(self, build: Callable[[], dict[str, TeamStatus]]) -> None:
        self._build: Callable[[], dict[str, TeamStatus]] | None = build
        self._items: dict[str, TeamStatus] | None = None

    def _all(self) -> dict[str, TeamStatus]:
        if self._items is None:
            assert self._build is not None
            self._items, self._build = self._build(), None
        return self._items

    def __getitem__(self, name: str) -> TeamStatus:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


def team_status(cyc: Cycle) -> dict[str, TeamStatus]:
    """Each team's figures as the cycle leaves them; a group's are its subtree's."""
    out = {}
    tree = cyc.tree
    # Python floats in one step each (reading numpy arrays item by item is slow).
    share, alloc, prod = cyc.share, cyc.alloc, cyc.prod.tolist()
    scav, demand, pods = cyc.scav.tolist(), cyc.demand.tolist(), cyc.pending_pods
    if tree.nested:
        alloc, prod, scav = tree.subtree_sums(alloc), tree.subtree_sums(prod), tree.subtree_sums(scav)
        demand, pods = tree.subtree_sums(demand), [int(p) for p in tree.subtree_sums(pods)]
    for t, team in enumerate(cyc.teams):
        b = cyc.budgets[t]
        at = cyc.exhausted_at[t]
        out[team.name] = TeamStatus(
            team=team.name,
            weight=team.weight,
            fair_share_gpus=share[t],
            allocated_gpus=alloc[t],
            production_gpus=prod[t],
            scavenger_gpus=scav[t],
            demand_gpus=demand[t],
            pending_pods=pods[t],
            fairshare_factor=float(cyc.factor[t]),
            budget_gpu_hours=b.limit_gpu_hours,
            budget_used_gpu_hours=b.used_gpu_hours,
            budget_left_gpu_hours=b.left_gpu_hours,
            budget_exhausted=b.exhausted,
            budget_resets_s=b.resets_s,
            idle_gpus=cyc.idle[t],
            path=tree.path_names(t),
            budget_exhausted_at=cyc.teams[at].name if at >= 0 else "",
            group=tree.is_group(t),
        )
    return out
