"""Room held for preemptors until they bind: the nomination lifecycle, for every shell.

A cycle that evicts for a gang also says where its pods will go (`Decisions.nominations`,
pod -> node). That room was bought with lost work, so it is held: the next cycle that sees
the gang tries it there first (passes.Nominated), before any gang earlier in its order
(often a restarting victim) can take it. A nomination is used up by the first cycle that
sees its pod, whether that cycle bound it there or found the room gone (a node failed) and
let it wait its turn; a pod that is gone takes its nomination with it. A shell says when
victims really leave (`hold`) and what each cycle saw (`spend`); pods carry their
nomination into the core as `Pod.nominated_node` (`nominate`). A pod's own
status.nominatedNodeName is never read: users could write it.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import replace

from scheduler.core.model import Decisions, Gang


class Nominations:
    """Nominations held, pod name -> node name (see the module doc)."""

    __slots__ = ("_gangs", "held")

    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self._gangs: set[str] = set()  # gangs with a nomination (see after_cycle)

    def __bool__(self) -> bool:
        return bool(self.held)

    def spend(self, seen: Iterable[str]) -> None:
        """A cycle saw these pods: their nominations are used up."""
        if self.held:
            for pod in seen:
                self.held.pop(pod, None)

    def forget_gone(self, alive: Container[str]) -> None:
        """Pods that no longer exist lose their nominations."""
        for pod in [p for p in self.held if p not in alive]:
            del self.held[pod]

    def hold(self, decisions: Decisions, pods: Iterable[str]) -> None:
        """Hold what `decisions` nominated for `pods` (a preemptor's pods whose victims
        really leave: a refused eviction holds nothing)."""
        nominated = decisions.nominations
        for pod in pods:
            node = nominated.get(pod)
            if node is not None:
                self.held[pod] = node

    def node_for(self, pod: str) -> str | None:
        return self.held.get(pod)

    def nominate(self, gang: Gang) -> Gang:
        """`gang` with each pending pod's `nominated_node` as held (None where none is):
        the gang itself when nothing changes."""
        held = self.held
        if not held and all(p.nominated_node is None for p in gang.pods):
            return gang
        pods = tuple(
            p
            if p.node is not None or p.nominated_node == held.get(p.name)
            else replace(p, nominated_node=held.get(p.name))
            for p in gang.pods
        )
        if all(a is b for a, b in zip(pods, gang.pods, strict=True)):
            return gang
        return replace(gang, pods=pods)

    def after_cycle(self, decisions: Decisions, pending: Callable[[str], Gang | None]) -> list[Gang]:
        """For a shell whose victims leave at once (the simulator), after each cycle: the
        cycle saw every pod nominated before it (spent), and the room it made for each
        preemptor still pending (`pending(gang id)`, None once not) is held. Returns the
        gangs whose pods' nominations changed, to put again."""
        before = self._gangs
        self.held.clear()
        preemptors = set()
        for e in decisions.evictions:
            gang = pending(e.preemptor)
            if gang is not None and e.preemptor not in preemptors:
                preemptors.add(e.preemptor)
                self.hold(decisions, (p.name for p in gang.pods))
        out = []
        self._gangs = set()
        for gid in sorted(before | preemptors):
            gang = pending(gid)
            if gang is None:
                continue
            again = self.nominate(gang)
            if any(p.nominated_node is not None for p in again.pods):
                self._gangs.add(gid)
            if again is not gang:
                out.append(again)
        return out
