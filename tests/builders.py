"""Small constructors so tests read like the scenario they describe."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from scheduler.core import Decisions, Gang, InvalidInput, Node, Pod, Snapshot, Team
from scheduler.core.constraints import Taint
from scheduler.core.nominations import Nominations

NOW = 1_800_000_000.0  # 2027-01-15, a Friday
LEAF = "network.gpufair.io/leaf"
CLIQUE = "nvidia.com/gpu.clique"
SPINE = "network.gpufair.io/spine"


def node(
    name: str,
    gpus: int = 8,
    leaf: str | None = "leaf-0",
    clique: str | None = None,
    cpu: int = 128_000,
    mem: int = 1_024_000,
    model: str = "H100",
    unhealthy: frozenset[int] = frozenset(),
) -> Node:
    labels = {"kubernetes.io/hostname": name, SPINE: "spine-0"}
    if leaf:
        labels[LEAF] = leaf
    labels[CLIQUE] = clique or f"clique-{name}"
    return Node(name, gpus, cpu, mem, model, unhealthy, labels)


def nodes(count: int, per_leaf: int = 4, gpus: int = 8, **kw) -> tuple[Node, ...]:
    return tuple(node(f"n{i:02d}", gpus, leaf=f"leaf-{i // per_leaf}", **kw) for i in range(count))


def gang(
    gid: str,
    team: str,
    pods: int = 1,
    gpus: int = 1,
    priority: int = 0,
    submit: float = 0.0,
    milli: int = 0,
    cpu: int = 1_000,
    mem: int = 1_000,
    **kw,
) -> Gang:
    shape = {"gpu_milli": milli} if milli else {"gpus": gpus}
    members = tuple(Pod(f"{gid}-{k}", cpu_milli=cpu, memory_mib=mem, **shape) for k in range(pods))
    return Gang(gid, team, members, priority=priority, submit_s=NOW - 3600 + submit, **kw)


def running(g: Gang, on: list[str] | str, started: float = 3600.0) -> Gang:
    """`g` with every pod bound (to one node, or one node per pod), started `started` s ago."""
    where = [on] * len(g.pods) if isinstance(on, str) else on
    pods = tuple(replace(p, node=n, start_s=NOW - started) for p, n in zip(g.pods, where, strict=True))
    return replace(g, pods=pods)


def teams(*specs: tuple[str, float] | Team) -> tuple[Team, ...]:
    return tuple(s if isinstance(s, Team) else Team(s[0], s[1], namespaces=(s[0],)) for s in specs)


def snapshot(nodes_: tuple[Node, ...], teams_: tuple[Team, ...], gangs: list[Gang], **kw) -> Snapshot:
    return Snapshot(NOW, nodes_, teams_, tuple(gangs), **kw)


def bound_gpus(d: Decisions, snap: Snapshot, team: str) -> float:
    pods = {p.name: p for g in snap.gangs if g.team == team for p in g.pods}
    return sum(pods[b.pod].gpu_amount for b in d.binds if b.pod in pods)


def apply(snap: Snapshot, d: Decisions, at: float | None = None) -> Snapshot:
    """The cluster after `d`, as a shell leaves it: binds run (started now), evicted gangs
    wait again from scratch, and preemptors wait with the nodes held for them."""
    now = snap.now_s if at is None else at
    binds = {b.pod: b for b in d.binds}
    evicted = {e.gang for e in d.evictions}
    held = Nominations()  # victims leave at once: every preemptor's room is held
    held.hold(d, (p.name for g in snap.gangs for p in g.pods if p.node is None))
    gangs = []
    for g in snap.gangs:
        if g.id in evicted:
            gangs.append(
                replace(g, pods=tuple(replace(p, node=None, gpu_indices=(), start_s=None) for p in g.pods))
            )
            continue
        pods = []
        for p in g.pods:
            b = binds.get(p.name)
            if b:
                p = replace(
                    p, node=b.node, gpu_indices=b.gpu_indices, start_s=snap.now_s, nominated_node=None
                )
            pods.append(p)
        gangs.append(held.nominate(replace(g, pods=tuple(pods))))
    return replace(snap, gangs=tuple(gangs), now_s=now)


def refused(func, *args, **kwargs) -> InvalidInput:
    """The InvalidInput that `func(*args)` raises."""
    with pytest.raises(InvalidInput) as info:
        func(*args, **kwargs)
    return info.value


def names(err: InvalidInput, obj: str, field: str, *words: str) -> None:
    """The message stands alone: it names the object, the field and a fix."""
    text = str(err)
    assert err.obj == obj
    assert err.field == field
    assert text.startswith(f"{obj}: {field}: ")
    assert err.fix and err.fix in text
    for word in words:
        assert word in text, f"{word!r} missing from {text!r}"


SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"


def shared_trace(*parts: str) -> Path:
    """A file of ../shared/traces, read in place. Missing is a failure, never a skip: CI has it."""
    path = SHARED_TRACES.joinpath(*parts)
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: the real traces must sit in {SHARED_TRACES} (the repository's "
            "parent folder holds shared/traces); tests read them in place and never skip them"
        )
    return path


SECURE_TAINT = Taint("dedicated", "secure", "NoSchedule")


def pool_nodes(general: int = 2) -> tuple[Node, ...]:
    """Two 8-GPU nodes labelled pool=secure and tainted dedicated=secure:NoSchedule, then
    `general` plain 8-GPU nodes labelled pool=general."""

    def labelled(name: str, pool: str, taints: tuple[Taint, ...] = ()) -> Node:
        n = node(name, 8)
        return replace(n, labels={**n.labels, "pool": pool}, taints=taints)

    secure = tuple(labelled(f"s{i}", "secure", (SECURE_TAINT,)) for i in range(2))
    return secure + tuple(labelled(f"g{i}", "general") for i in range(general))
