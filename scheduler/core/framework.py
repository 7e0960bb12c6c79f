"""The decision cycle's extension points: each rule is one small named unit behind one of these.

A `Policy` (policies.py) is a set of such units; the cycle (cycle.py) only calls them in
order. The points, in the order a cycle meets them:

- `NodeFilter` (as kube-scheduler's Filter): which nodes a gang's pods may use at all. Its
  `signature` joins the gang's scheduling signature, so look-alike gangs share one mask.
- `Gate` (as Kueue's admission checks): whether a team's gangs of a tier may be tried at all
  this cycle (a blocked budget, a tier the platform has not granted the team).
- `TierPass` (as KAI's actions): one pass over the ready gangs, e.g. production first, then
  training in fair-share order, then scavenger work on what is left.
- `QueueOrder` (as kube-scheduler's QueueSort, Kueue's queueing strategies): which team's
  head gang the training pass tries next.
- `ReclaimRule` (as KAI's reclaim plugin callbacks): whether a gang may take GPUs back
  from teams above their share, and if not, the words that say why.
- `VictimPolicy` (as kube-scheduler's PostFilter, Kueue's preemption strategies): which
  running gangs a pending gang may evict, in an exact form (victim by victim, as a plan is
  built) and a vectorised form (all gangs at once, for bounds), kept side by side so a test
  can hold them to the same answers.
- `NodeScorer` (scoring.py, as kube-scheduler's Score): which allowed node a pod goes to.

Each registry below maps a name to its unit; `policies.Policy.build` refuses a name that
is not in it, listing those that are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from enum import IntFlag
from typing import TYPE_CHECKING, ClassVar, TypeVar

import numpy as np

from scheduler.core.errors import InvalidInput
from scheduler.core.preemption import Accept

if TYPE_CHECKING:
    from scheduler.core.cluster import ClusterState
    from scheduler.core.cycle import Cycle
    from scheduler.core.model import Gang, Tier
    from scheduler.core.waiting import Lane, View, Waiting

__all__ = [
    "Accept",
    "Gate",
    "NodeFilter",
    "Note",
    "QueueOrder",
    "Reclaim",
    "ReclaimRule",
    "TierPass",
    "VictimPolicy",
    "resolve",
]

Note = Callable[[str], str]  # adds to a pending gang's reason


class NodeFilter(ABC):
    """Nodes a gang's pods may use, whatever is free on them."""

    name: ClassVar[str]
    # Whether the filter reads only the gang's pod constraints: then a gang without any has
    # the signature None, and the filter is not asked (most gangs state none).
    constraint_only: ClassVar[bool] = False
    # Whether the mask depends on the nodes and the signature alone (not on what runs):
    # then look-alike gangs share it for as long as the node list holds.
    static: ClassVar[bool] = False

    @abstractmethod
    def signature(self, gang: Gang) -> Hashable:
        """What of the gang this filter reads: gangs alike in it get the same mask."""

    @abstractmethod
    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        """Per node of `state`: may the gang's pods go there (None: every node may)."""

    plugin: ClassVar[str] = ""  # kube-scheduler's name for the same filter, for its words

    def prefilter(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        """Nodes left after kube-scheduler's PreFilter narrowing, when the filter has one (a
        subset of `mask`'s nodes, counted apart in reasons). None: it narrows nothing."""
        return None

    @abstractmethod
    def explain(self, state: ClusterState, gang: Gang, ruled_out: np.ndarray) -> list[tuple[int, str]]:
        """(count, words) for the nodes of `ruled_out` (a mask) this filter keeps the gang
        off, in kube-scheduler's words, e.g. (4, "node(s) had untolerated taint {dedicated: x}")."""


class Gate(ABC):
    """Keeps all of a team's gangs of one tier waiting, with one reason, before any is tried."""

    name: ClassVar[str]

    def applies(self, cyc: Cycle) -> bool:
        """Whether the gate may refuse anything this cycle (asked once a cycle, so a gate
        that cannot, the usual case, costs nothing per gang)."""
        return True

    @abstractmethod
    def refuse(self, cyc: Cycle, t: int, tier: Tier, scavenging: bool) -> tuple[str, str] | None:
        """(code, reason) that keeps team `t`'s gangs of `tier` waiting, or None to let them
        be tried. `scavenging`: the team is over budget and its work demoted to scavenger."""


class TierPass(ABC):
    """One pass of the cycle over the gangs that are ready to be tried."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, cyc: Cycle, ready: list[View]) -> None:
        """Try the pass's gangs of `ready` (every view whose gangs may be tried), binding,
        preempting and explaining through `cyc`."""


class QueueOrder(ABC):
    """The order in which the training pass serves teams: the lowest key goes next."""

    name: ClassVar[str]
    # Whether the training pass may pass over a team's gangs that can only fail in one
    # step (see `skip_stops`). An order whose key is the head gang's own cannot: each gang
    # passed over would move the team.
    skips_doomed: ClassVar[bool] = True

    @abstractmethod
    def keys(self, cyc: Cycle) -> Callable[[int, Lane], tuple]:
        """The key of team `t` whose queue is `lane`, for this pass (a function, so that
        figures the whole pass shares are worked out once)."""

    def skip_stops(self, cyc: Cycle, t: int, head: View) -> Callable[[View], bool] | None:
        """When the head of team `t` can only fail, the training pass passes over the gangs
        behind it that can only fail too, in one step, while the team's key stays the same.
        This says at which gang the key would change (None: it depends on no gang)."""
        return None


class Reclaim(IntFlag):
    """Which other teams' training work a gang may take back (none: 0, falsy).

    OWNED: gangs of teams above their share that have run their minimum runtime.
    BORROWED: younger gangs that lie beyond their team's share (see victims.borrowed)."""

    NONE = 0
    OWNED = 1
    BORROWED = 2


class ReclaimRule(ABC):
    """Whether a training gang may evict other teams' training work to reach its share."""

    name: ClassVar[str]

    @abstractmethod
    def may_reclaim(self, cyc: Cycle, t: int, gpus: float, submit_s: float) -> Reclaim:
        """What a gang of team `t` asking `gpus`, submitted at `submit_s`, may reclaim."""

    @abstractmethod
    def held_back(self, cyc: Cycle, t: int, gpus: float, submit_s: float) -> Note | None:
        """Below its share yet not reclaiming: the words to add to its reason (None: none)."""


class VictimPolicy(ABC):
    """Which running gangs a pending gang may evict. `accept` and `acceptable` state one rule
    twice: `acceptable(cyc, w)[g]` must equal `accept(cyc, w)({}, victim g)` for every
    eligible gang g (tests/test_extension_points.py checks it)."""

    name: ClassVar[str]

    @abstractmethod
    def eligible(self, cyc: Cycle, w: Waiting, reclaim: Reclaim) -> np.ndarray | None:
        """Per running gang: whether it is a candidate at all (None: no candidates)."""

    @abstractmethod
    def accept(self, cyc: Cycle, w: Waiting) -> Accept:
        """The exact rule, victim by victim, given what the plan already takes."""

    @abstractmethod
    def acceptable(self, cyc: Cycle, w: Waiting) -> np.ndarray:
        """The vectorised rule for a plan that takes nothing yet, per running gang."""

    @abstractmethod
    def slack(self, cyc: Cycle, w: Waiting) -> np.ndarray | None:
        """Per team: the training GPUs `accept` lets one plan take from it in all (None: no
        such limit)."""


_ASKED: dict[int, tuple[Sequence[NodeFilter], tuple[NodeFilter, ...]]] = {}


def filter_signatures(gang: Gang, filters: Sequence[NodeFilter]) -> tuple[Hashable, ...]:
    """What each filter reads of the gang (see NodeFilter.constraint_only). A gang without
    constraints (most) is asked only by the filters that read more than constraints, found
    once per filter list."""
    if gang.constraints:
        return tuple(f.signature(gang) for f in filters)
    hit = _ASKED.get(id(filters))
    if hit is None or hit[0] is not filters:
        hit = _ASKED[id(filters)] = (filters, tuple(f for f in filters if not f.constraint_only))
    return (None, *(f.signature(gang) for f in hit[1]))


U = TypeVar("U")


def resolve(registry: Mapping[str, U], kind: str, name: str) -> U:
    """The unit registered under `name`, or a clear error listing the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise InvalidInput(
            "policy",
            kind,
            f"unknown {kind} {name!r}",
            f"use one of {', '.join(sorted(registry))}",
        ) from None
