"""Every speed-up of the decision core in one switchable layer.

A cycle asks the same questions many times: the fair shares of the same demand, whether a
request that found no room a moment ago fits now, whether a team's gang can find victims
when an earlier look-alike found none. The answers are remembered here, and only here, so
that `Shortcuts(reference=True)` switches every one of them off at once: then each question
is worked out afresh, the passes try every gang one by one, preemption walks every domain
without its bounds, and the running set is loaded from scratch each cycle. The reference
mode must decide exactly as the fast one (`tests/test_reference_mode.py`); a new shortcut
belongs here, behind `enabled`, so that test guards it too.

Keys are the requests' own keys (`RequestKey`: pod shapes, filter signatures, widest
level), never object identities, so a memo cannot outlive what it describes by accident.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np

from scheduler.core.model import Tier

if TYPE_CHECKING:
    from scheduler.core.cluster import ClusterState, Held
    from scheduler.core.intake import RunningTable
    from scheduler.core.placement import GangRequest, RequestKey
    from scheduler.core.scoring import Fragmentation, TypeKey

K = TypeVar("K")
V = TypeVar("V")

_MEMO_LIMIT = 4096
_SCORER_LIMIT = 64


class LoadedRunning(NamedTuple):
    """The running set as a cycle reads it, kept while it is the same (`key`: the running
    store's version and the teams that scavenge). Never changed while it is kept (the next
    one may take over its cluster: see reading.read_running)."""

    key: tuple[int, bytes]
    run: RunningTable
    tiers: np.ndarray  # per running gang
    cluster: ClusterState  # with the running pods loaded
    special: dict[int, Held]  # what pods at known slots or on shared GPUs hold, by row
    gpus: np.ndarray  # per (tier, team)
    cpu: np.ndarray  # per team, training only
    mem: np.ndarray
    scav_held: bool  # whether any scavenger GPUs are held


@dataclass(frozen=True, slots=True)
class CarriedFailures:
    """Requests of one pod shape that found no room on the cluster a cycle started from,
    valid while pods have only come since (`removals` unchanged): running pods only ever
    take room, so they fail again."""

    removals: int
    keys: tuple[RequestKey, ...]


@dataclass(slots=True)
class Shortcuts:
    """What the Core remembers across cycles to decide faster; `reference=True` keeps nothing."""

    reference: bool = False
    shares: dict[tuple[float, bytes], list[float]] = field(default_factory=dict)
    tiers: dict[tuple[int, bool], Tier] = field(default_factory=dict)
    scorers: dict[tuple[TypeKey, ...], Fragmentation] = field(default_factory=dict)
    loaded: LoadedRunning | None = None
    carried: CarriedFailures | None = None
    # Node masks by (filter, what it reads of a gang): a filter's mask depends on the nodes
    # and that alone, so look-alike gangs of every shape share it while the node list holds.
    masks: dict[tuple[str, Hashable], np.ndarray | None] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return not self.reference

    def forget_nodes(self) -> None:
        """The node list changed: what was worked out on the old one no longer holds."""
        self.loaded = None
        self.carried = None
        self.masks = {}

    def _remember(self, table: dict[K, V], key: K, work: Callable[[], V], limit: int | None = None) -> V:
        """`work()` for `key`, kept in `table` (emptied when it reaches `limit`)."""
        if self.reference:
            return work()
        hit = table.get(key)
        if hit is None:
            if limit is not None and len(table) >= limit:
                table.clear()
            hit = table[key] = work()
        return hit

    def fair_shares(self, key: tuple[float, bytes], work: Callable[[], list[float]]) -> list[float]:
        """Water-filled shares for (capacity, demand): the teams are the Core's for its whole
        life, so equal input gives equal shares (a replay meets the same input again in
        about a quarter of its cycles)."""
        return self._remember(self.shares, key, work, _MEMO_LIMIT)

    def mask(self, key: tuple[str, Hashable], work: Callable[[], np.ndarray | None]) -> np.ndarray | None:
        """A node filter's mask for one signature (see `masks`)."""
        if self.reference:
            return work()
        if key in self.masks:
            return self.masks[key]
        hit = self.masks[key] = work()
        return hit

    def tier(self, key: tuple[int, bool], work: Callable[[], Tier]) -> Tier:
        """A waiting gang's tier by (priority, scavenging): few distinct, asked of every class."""
        return self._remember(self.tiers, key, work)

    def scorer(self, types: tuple[TypeKey, ...], work: Callable[[], Fragmentation]) -> Fragmentation:
        """Fragmentation scorers by pod types: the mix's types change far less often than
        its proportions, and the scorer is reweighted for those."""
        return self._remember(self.scorers, types, work, _SCORER_LIMIT)


class CycleMemo:
    """One cycle's memos. `releases` counts the cycle's evictions: room only shrinks between
    two of them (binds take room), so a failure seen since the last one still holds."""

    __slots__ = (
        "_contexts",
        "_diagnosed",
        "_failed",
        "_no_victims",
        "enabled",
        "start_failures",
    )

    def __init__(self, shortcuts: Shortcuts, removals: int) -> None:
        self.enabled = shortcuts.enabled
        self._failed: dict[RequestKey | None, int] = {}  # request -> releases when it failed
        self._no_victims: dict[Hashable, int] = {}
        self._diagnosed: dict[Hashable, tuple[str, str]] = {}
        self._contexts: dict[Hashable, str] = {}
        # Failures of one-shape requests on the cluster as the cycle found it, for the next.
        self.start_failures: list[RequestKey] = []
        carried = shortcuts.carried
        if self.enabled and carried is not None and carried.removals == removals:
            self._failed = dict.fromkeys(carried.keys, 0)
            self.start_failures.extend(carried.keys)

    # Placement failures.

    def fails(self, key: RequestKey | None, releases: int) -> bool:
        """Whether the shared request `key` found no room since the last eviction. (The
        reference mode records no failure, so it never finds one: no check needed here.)"""
        return self._failed.get(key) == releases

    def failed(self, req: GangRequest, releases: int, at_start: bool) -> None:
        if not self.enabled or req.key is None:
            return
        self._failed[req.key] = releases
        if at_start and len(req.counts) == 1:
            self.start_failures.append(req.key)

    def carry(self, removals: int) -> CarriedFailures:
        return CarriedFailures(removals, tuple(self.start_failures))

    # Victim searches.

    def no_victims(self, key: Hashable, releases: int) -> bool:
        """Gangs of one team and shape fare alike: after one found no victims, the rest of
        the cycle does not search again until something is freed."""
        return self.enabled and self._no_victims.get(key) == releases

    def found_no_victims(self, key: Hashable, releases: int) -> None:
        if self.enabled:
            self._no_victims[key] = releases

    # Words.

    def diagnosis(self, key: Hashable, work: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        return self._remember(self._diagnosed, key, work)

    def context(self, key: Hashable, work: Callable[[], str]) -> str:
        return self._remember(self._contexts, key, work)

    def _remember(self, table: dict[Hashable, V], key: Hashable, work: Callable[[], V]) -> V:
        if not self.enabled:
            return work()
        hit = table.get(key)
        if hit is None:
            hit = table[key] = work()
        return hit


def fresh_request(
    shortcuts: Shortcuts, table: dict[RequestKey, GangRequest]
) -> dict[RequestKey, GangRequest]:
    """The table of shared requests a cycle uses: the Core's, or (reference) a new one each
    cycle, so that no request or node mask worked out in an earlier cycle is reused."""
    return {} if shortcuts.reference else table
