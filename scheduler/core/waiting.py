"""Waiting gangs grouped into classes of look-alikes, so a cycle costs what changes, not the queue depth.

A contended cluster keeps thousands of gangs waiting, and most of them ask for the same
few things (one team, one priority, one pod shape). Everything a cycle decides about a
gang that it does not place (its tier, its request, whether placement or preemption can
succeed, the reason it waits) is the same for every gang of such a class, so the cycle
looks at a class once and passes over a run of its gangs in one step. Gangs that do not
fit a class (part of the gang running, minMember below the gang size, no team, fewer
pods than minMember, room held for it by a nomination) are kept one by one and always
looked at individually.

A class keeps its gangs sorted by (submit time, id), the order every queue uses inside
one priority, so a queue over several classes is a merge of their sorted lists.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, overload

from scheduler.core.cluster import Shape
from scheduler.core.framework import filter_signatures
from scheduler.core.model import Gang, Pending, Pod, Tier
from scheduler.core.placement import GangRequest, RequestKey

if TYPE_CHECKING:
    from scheduler.core.framework import NodeFilter

MemberKey = tuple[float, str]  # (submit_s, gang id)
Problem = Callable[[Gang], Pending]  # the reason a gang of a view cannot even be tried


@dataclass(slots=True)
class Waiting:
    """One waiting gang as the passes handle it."""

    gang: Gang
    team: int
    tier: Tier
    need: tuple[Pod, ...]  # placed all together or not at all
    extras: tuple[Pod, ...]  # beyond minMember: placed when there is room
    gpus: float
    request: GangRequest | None = None
    problem: Pending | None = None  # set when the gang cannot even be tried
    nominated: GangRequest | None = None  # its request kept to the nodes held for it

    @property
    def pods(self) -> tuple[Pod, ...]:
        return (*self.need, *self.extras)


def scheduling_signature(gang: Gang, filters: Sequence[NodeFilter] = ()) -> tuple | None:
    """The scheduling signature of a waiting gang (as KAI's and kube-scheduler's pod
    signatures): everything a cycle reads of it but its name and age. None when it must be
    looked at on its own."""
    pods = gang.pods
    if gang.min_member is not None and gang.min_member != len(pods):
        return None  # minMember below the size, or pods still to come: looked at on its own
    if gang.terms and any(t is not None and (t.filters or t.scores) for t in gang.terms):
        return None  # its pods depend on the other pods (podplace.py): looked at on its own
    if len(pods) == 1:
        p = pods[0]
        if p.node is not None or p.nominated_node is not None:
            return None
        shapes: tuple = ((p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib),)
        # Other resources and MIG charges, for the few pods that ask for any.
        others: tuple | None = ((p.extras, p.mig_milli),) if p.extras else None
    else:
        if any(p.node is not None or p.nominated_node is not None for p in pods):
            return None
        shapes = tuple((p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib) for p in pods)
        others = tuple((p.extras, p.mig_milli) for p in pods) if any(p.extras for p in pods) else None
    return (
        gang.team,
        gang.priority,
        shapes,
        others,
        gang.topology_required,
        gang.topology_preferred,
        gang.constraints,
        *filter_signatures(gang, filters),
    )


@dataclass(frozen=True, slots=True)
class GroupRequest:
    """A signature group's request, or the problem that keeps its gangs from being tried,
    with the request table it was made for (it holds while that table does)."""

    table: dict[RequestKey, GangRequest]
    request: GangRequest | None
    problem: Problem | None


class SignatureGroup:
    """Waiting gangs alike in everything a cycle looks at, sorted by (submit time, id)."""

    __slots__ = (
        "biggest",
        "borrowed",
        "gangs",
        "gpus",
        "ids",
        "key",
        "keys",
        "milli",
        "pods",
        "priority",
        "request_cache",
        "sample",
        "seqs",
        "shape_objs",
        "shapes",
        "team",
    )

    def __init__(self, key: tuple, sample: Gang) -> None:
        self.key = key
        self.team: str = key[0]
        self.priority: int = key[1]
        self.shapes: tuple[tuple[int, int, int, int], ...] = key[2]
        self.pods = len(self.shapes)
        self.sample = sample  # any member: for the pod shapes and the request
        # What every cycle asks of the class, worked out once.
        others = key[3] or (((), 0),) * self.pods  # other resources and MIG charge per pod
        self.shape_objs = tuple(
            Shape(g, m, c, mem, extras)
            for (g, m, c, mem), (extras, _) in zip(self.shapes, others, strict=True)
        )
        # As waiting_gang sums it: a MIG slice counts as the GPU fraction it is charged.
        self.gpus = sum(p.gpus + p.gpu_milli / 1000.0 + p.mig_milli / 1000.0 for p in sample.pods)
        self.milli = sum(g * 1000 + m for g, m, _, _ in self.shapes) + sum(mig for _, mig in others)
        self.biggest = max(s[0] for s in self.shapes)
        self.keys: list[MemberKey] = []
        self.ids: list[str] = []
        self.gangs: list[Gang] = []
        self.seqs: list[int] = []  # insertion order, for problem reasons in snapshot order
        # Set while a cycle's lazy pending reasons hold these lists: the next change then
        # works on copies (copy on write), so a cycle never copies a long queue it may not read.
        self.borrowed = False
        # The same for every cycle until the nodes change, so not worked out and hashed
        # again each cycle (see reading._group_view).
        self.request_cache: GroupRequest | None = None

    def _own(self) -> None:
        if self.borrowed:
            self.keys, self.ids, self.gangs, self.seqs = (
                list(self.keys),
                list(self.ids),
                list(self.gangs),
                list(self.seqs),
            )
            self.borrowed = False

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, gang: Gang, seq: int) -> None:
        self._own()
        key = (gang.submit_s, gang.id)
        i = bisect.bisect_left(self.keys, key)
        self.keys.insert(i, key)
        self.ids.insert(i, gang.id)
        self.gangs.insert(i, gang)
        self.seqs.insert(i, seq)

    def remove(self, gang: Gang) -> None:
        self._own()
        i = bisect.bisect_left(self.keys, (gang.submit_s, gang.id))
        if i == len(self.keys) or self.ids[i] != gang.id:
            raise KeyError(gang.id)
        del self.keys[i], self.ids[i], self.gangs[i], self.seqs[i]


@dataclass(slots=True)
class WaitingStore:
    """Every waiting gang, as classes and singles, in a form that changes one gang at a time."""

    teams: frozenset[str] = frozenset()  # a gang of another team is a single (it has no team)
    filters: tuple[NodeFilter, ...] = ()  # their signatures join each gang's
    classes: dict[Hashable, SignatureGroup] = field(default_factory=dict)
    singles: dict[str, tuple[Gang, int]] = field(default_factory=dict)  # id -> (gang, seq)

    def _key(self, gang: Gang) -> tuple | None:
        return scheduling_signature(gang, self.filters) if gang.team in self.teams else None

    def add(self, gang: Gang, seq: int) -> None:
        key = self._key(gang)
        if key is None:
            self.singles[gang.id] = (gang, seq)
            return
        cls = self.classes.get(key)
        if cls is None:
            cls = self.classes[key] = SignatureGroup(key, gang)
        cls.add(gang, seq)

    def load(self, gangs: Sequence[tuple[int, Gang]]) -> None:
        """Add many (seq, gang) at once: grouped first, each class sorted once."""
        grouped: dict[tuple, list[tuple[MemberKey, int, Gang]]] = {}
        for seq, gang in gangs:
            key = self._key(gang)
            if key is None:
                self.singles[gang.id] = (gang, seq)
            else:
                grouped.setdefault(key, []).append(((gang.submit_s, gang.id), seq, gang))
        for key, members in grouped.items():
            cls = self.classes.get(key)
            if cls is not None:  # rare: merge one by one
                for _, seq, gang in members:
                    cls.add(gang, seq)
                continue
            members.sort(key=lambda m: m[0])
            cls = self.classes[key] = SignatureGroup(key, members[0][2])
            cls.keys = [m[0] for m in members]
            cls.ids = [m[0][1] for m in members]
            cls.seqs = [m[1] for m in members]
            cls.gangs = [m[2] for m in members]

    def remove(self, gang: Gang) -> None:
        key = self._key(gang)
        if key is None:
            del self.singles[gang.id]
            return
        cls = self.classes[key]
        cls.remove(gang)
        if not cls:
            del self.classes[key]

    def __len__(self) -> int:
        return len(self.singles) + sum(len(c) for c in self.classes.values())


# ---------------------------------------------------------------- the cycle's view of a class


@dataclass(slots=True, eq=False)
class View:
    """One class (or one single gang) as a cycle sees it: tier, request, and how far the
    cycle's queue has got through its gangs (`cursor`)."""

    team: int
    tier: Tier
    gpus: float  # GPUs of one gang's required pods
    keys: Sequence[MemberKey]
    ids: Sequence[str]
    gangs: Sequence[Gang]
    seqs: Sequence[int]
    request: GangRequest | None = None  # shared between look-alike views
    problem: Problem | None = None  # set when its gangs cannot even be tried
    waiting: Waiting | None = None  # a single's own (None for a class)
    prefix: tuple = ()  # the queue's order before (submit time, id), set by the lane
    cursor: int = 0
    source: SignatureGroup | None = None  # the class whose lists these are (None: a single's own)
    size: int = field(init=False)  # gangs in the view (the lists do not change within a cycle)

    def __post_init__(self) -> None:
        self.size = len(self.keys)

    @property
    def single(self) -> bool:
        return self.waiting is not None


class Lane:
    """The gangs of several views in one queue order: view prefix, then submit time and id."""

    def __init__(self, views: Sequence[View], prefix: Callable[[View], tuple]) -> None:
        self.views = [v for v in views if v.cursor < v.size]
        heap = []
        for n, v in enumerate(self.views):
            v.prefix = prefix(v)
            heap.append((v.prefix, v.keys[v.cursor], n, v))
        heapq.heapify(heap)
        self.heap = heap

    def _rebuild(self) -> None:
        self.views = [v for v in self.views if v.cursor < v.size]
        self.heap = [(v.prefix, v.keys[v.cursor], n, v) for n, v in enumerate(self.views)]
        heapq.heapify(self.heap)

    def __bool__(self) -> bool:
        return bool(self.heap)

    def head(self) -> View:
        return self.heap[0][3]

    def head_key(self) -> MemberKey:
        """(submit time, id) of the first gang of the queue."""
        return self.heap[0][1]

    def head_gang(self) -> Gang:
        v = self.heap[0][3]
        return v.gangs[v.cursor]

    def pop(self) -> tuple[View, int]:
        """The first gang of the queue, as (its view, its index there)."""
        _, _, n, v = self.heap[0]
        i = v.cursor
        v.cursor += 1
        if v.cursor < v.size:
            heapq.heapreplace(self.heap, (v.prefix, v.keys[v.cursor], n, v))
        else:
            heapq.heappop(self.heap)
        return v, i

    def skip(self, stops: Callable[[View], bool], head_passes: bool = False) -> list[tuple[View, int, int]]:
        """Pass over every gang before the first one of a view for which `stops` holds;
        returns the runs passed over as (view, start, end). Views are asked in the order
        of their first gang, and only up to the first that stops: a view whose first gang
        comes after that has nothing before it to pass over. `head_passes`: the caller
        has just found that `stops` does not hold for the head's view (it is not asked)."""
        stop: tuple | None = None
        passed: list[View] = []
        for prefix, key, _, v in sorted(self.heap) if len(self.heap) > 1 else self.heap:
            if head_passes:
                head_passes = False
            elif stops(v):
                stop = (prefix, key)
                break
            passed.append(v)
        runs = []
        for v in passed:
            if stop is None or v.prefix < stop[0]:
                end = v.size
            else:  # the same prefix: its gangs up to the stopping one
                end = bisect.bisect_left(v.keys, stop[1], v.cursor)
            if end > v.cursor:
                runs.append((v, v.cursor, end))
                v.cursor = end
        if stop is None:  # passed over to the end: the lane is empty (the usual case)
            self.views, self.heap = [], []
        else:
            self._rebuild()
        return runs

    def rest(self) -> list[tuple[View, int, int]]:
        """Every gang still in the queue, as runs; the lane is empty afterwards."""
        runs = [(v, v.cursor, v.size) for v in self.views if v.cursor < v.size]
        for v in self.views:
            v.cursor = v.size
        self.heap = []
        return runs


# ---------------------------------------------------------------- pending reasons, built when read


PendingMaker = Callable[[], list[Pending]]


def merged_run(runs: list[tuple[View, int, int]], reason: Callable[[View], tuple[str, str]]) -> PendingMaker:
    """Pending entries for runs passed over in one step, in queue order, built only when
    read. A class's lists are borrowed, not copied: the class copies them before its next
    change (see SignatureGroup.borrowed)."""
    parts = []
    for v, start, end in runs:
        code, text = reason(v)
        if v.source is not None:
            v.source.borrowed = True  # its next change copies the lists first
        parts.append((v.prefix, v.keys, v.ids, start, end, code, text))

    def make() -> list[Pending]:
        if len(parts) == 1:
            _, _, ids, start, end, code, text = parts[0]
            return [Pending(i, code, text) for i in ids[start:end]]
        rows = [
            (prefix, key, gid, code, text)
            for prefix, keys, ids, start, end, code, text in parts
            for key, gid in zip(keys[start:end], ids[start:end], strict=True)
        ]
        rows.sort(key=lambda r: (r[0], r[1]))
        return [Pending(gid, code, text) for _, _, gid, code, text in rows]

    return make


def problems_in_order(views: list[View]) -> PendingMaker:
    """Problem reasons of every gang of `views`, in insertion (snapshot) order, built when read."""
    for v in views:
        if v.source is not None:
            v.source.borrowed = True
    parts: list[tuple[Sequence[int], Sequence[Gang], Problem]] = []
    for v in views:
        assert v.problem is not None  # only views with a problem are passed
        parts.append((v.seqs, v.gangs, v.problem))

    def make() -> list[Pending]:
        rows = [
            (seq, gang, problem)
            for seqs, gangs, problem in parts
            for seq, gang in zip(seqs, gangs, strict=True)
        ]
        rows.sort(key=lambda r: r[0])
        return [problem(gang) for _, gang, problem in rows]

    return make


class PendingLog:
    """The cycle's pending entries: single entries, and runs that are built only when read."""

    def __init__(self) -> None:
        self.parts: list[Pending | PendingMaker] = []

    def append(self, p: Pending) -> None:
        self.parts.append(p)

    def extend_lazy(self, make: PendingMaker) -> None:
        self.parts.append(make)

    def freeze(self) -> LazyPending:
        return LazyPending(self.parts)


class SilentLog(PendingLog):
    """The log of a cycle that does not explain (see Core.explain): it keeps nothing."""

    def append(self, p: Pending) -> None:
        pass

    def extend_lazy(self, make: PendingMaker) -> None:
        pass


class LazyPending(Sequence[Pending]):
    """Why each gang waits, in the cycle's order; the entries for long runs of look-alike
    gangs are made on first read, so a cycle over a deep queue that nobody reads in full
    (a replay) does not pay for them. Compares equal to the tuple of the same entries."""

    __slots__ = ("_items", "_parts")

    def __init__(self, parts: list[Pending | PendingMaker]) -> None:
        self._parts: list[Pending | PendingMaker] | None = parts
        self._items: tuple[Pending, ...] | None = None

    def _all(self) -> tuple[Pending, ...]:
        if self._items is None:
            out: list[Pending] = []
            for part in self._parts or ():
                if isinstance(part, Pending):
                    out.append(part)
                else:
                    out.extend(part())
            self._items = tuple(out)
            self._parts = None
        return self._items

    @overload
    def __getitem__(self, i: int) -> Pending: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Pending, ...]: ...
    def __getitem__(self, i: int | slice) -> Pending | tuple[Pending, ...]:
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[Pending]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyPending):
            return self._all() == other._all()
        if isinstance(other, tuple):
            return self._all() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return f"LazyPending({self._all()!r})"
