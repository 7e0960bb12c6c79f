"""Plain-words explanations for pending pods, evictions and refusals.

These strings end up in pod conditions, FailedScheduling events and `gpufair explain`,
so each says what is missing and, where the user can act, what to change.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np

from scheduler.core import resources
from scheduler.core.budget import BudgetState
from scheduler.core.cluster import FULL, ClusterState, Shape
from scheduler.core.config import PolicyConfig
from scheduler.core.durations import format_duration
from scheduler.core.model import Gang, Pod, Team, Tier
from scheduler.core.placement import CLUSTER_LEVEL, GangRequest, capacity_of
from scheduler.core.shapecache import ShapeCache

if TYPE_CHECKING:
    from scheduler.core.preemption import Plan, Victim


def gpus(amount: float) -> str:
    value = f"{amount:.1f}".rstrip("0").rstrip(".")
    return f"{value} GPU" if value == "1" else f"{value} GPUs"


def _when(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pods(shapes: tuple[Shape, ...]) -> str:
    counts: dict[Shape, int] = {}
    for s in shapes:
        counts[s] = counts.get(s, 0) + 1
    parts = []
    for s, c in counts.items():
        size = gpus(s.gpus) if s.gpus else (f"{s.milli}m of a GPU" if s.milli else "no GPU")
        parts.append(f"{c} pod{'s' if c > 1 else ''} x {size}")
    return " + ".join(parts)


def no_team(gang: Gang) -> str:
    ns = gang.id.split("/", 1)[0]
    return (
        f"namespace {ns!r} belongs to no GPUTeam, so gpufair does not know whose GPUs to use; "
        f"add {ns!r} to a GPUTeam's spec.namespaces"
    )


def incomplete(gang: Gang, required: int) -> str:
    return (
        f"gang has {len(gang.pods)} of its {required} minimum members; "
        "waiting for the rest of its pods to be created"
    )


def budget_blocked(team: Team, state: BudgetState, level: Team | None = None) -> str:
    """`level`: the group on the team's path whose budget is exhausted, when not its own."""
    resets = f"; it resets {_when(state.resets_s)}" if state.resets_s is not None else ""
    whose = f"team {team.name}"
    if level is not None and level is not team:
        whose = f"group {level.name} of team {team.name}"
    return (
        f"{whose} has used {state.used_gpu_hours:.1f} of its "
        f"{state.limit_gpu_hours:g} GPU-hours this period and its budget says onExhausted: block"
        f"{resets}"
    )


def unknown_level(gang: Gang, label: str, config: PolicyConfig) -> str:
    return (
        f"gang asks for topology level {label!r}, which is not configured; "
        f"use one of {', '.join(config.topology_levels)}"
    )


def too_large(pod: Pod, largest: int) -> str:
    return (
        f"pod {pod.name} asks for {gpus(pod.gpus)} but the largest node has {gpus(largest)}; "
        f"split it into pods of at most {largest} GPUs in one gang"
    )


def behind(blocker: Gang) -> str:
    return f"queued behind gang {blocker.id}, which was submitted earlier and cannot start yet (FIFO)"


def production_not_allowed(team: Team) -> str:
    return (
        f"team {team.name} may not run production work (GPUTeam {team.name} has no "
        "spec.production.allowed: true); use the gpufair-training PriorityClass, or ask the "
        "platform team to grant production"
    )


def over_production_cap(team: Team, held: float, asked: float) -> str:
    return (
        f"team {team.name} holds {gpus(held)} of production and its spec.production.maxGPUs is "
        f"{team.production_max_gpus:g}; this gang needs {gpus(asked)} more"
    )


def over_cap(team: Team, allocated: float, asked: float) -> str:
    return (
        f"team {team.name} holds {gpus(allocated)} and its maxGPUs is {team.max_gpus:g}; "
        f"this gang needs {gpus(asked)} more"
    )


def extras_waiting(gang: Gang, left: int) -> str:
    return f"gang is running with its minimum members; {left} more pod(s) wait for room"


def preempting(plan: Plan) -> str:
    lost = sum(v.lost_gpu_seconds for v in plan.victims) / 3600.0
    names = ", ".join(v.gang for v in plan.victims[:5])
    more = f" and {len(plan.victims) - 5} more" if len(plan.victims) > 5 else ""
    return (
        f"preempting {len(plan.victims)} gang(s) ({names}{more}; "
        f"{lost:.1f} GPU-hours of work lost) to make room; binds once they have stopped"
    )


def evicted(victim: Victim, preemptor: Gang, tier: Tier, kind: str) -> str:
    if kind == "production":
        why = f"production gang {preemptor.id} needed its GPUs"
    elif victim.tier is Tier.SCAVENGER:
        why = f"it ran as scavenger and gang {preemptor.id} needed its GPUs"
    else:
        why = (
            f"team {victim.team} was above its fair share and gang {preemptor.id} "
            "of a team below its share reclaimed the GPUs"
        )
    return f"gang {victim.gang} evicted: {why}"


def with_share(text: str, team: str, allocated: float, share: float, idle: float = 0.0) -> str:
    held = f"{text}; team {team} holds {gpus(allocated)}, its fair share is {gpus(share)}"
    if idle >= 1:  # worth saying: the team could free these itself
        held += f" ({gpus(idle)} of what it holds idle, by node telemetry)"
    return held


def reclaim_held(text: str, threshold: float) -> str:
    return (
        f"{text}; just below its share, it waits for GPUs to free up: it reclaims from teams "
        f"above theirs only below {threshold:.0%} of its share (preemption.reclaimThreshold)"
    )


def reclaim_deferred(text: str, after_s: float) -> str:
    wait = format_duration(after_s)
    return f"{text}; below its share, it may reclaim GPUs from teams above theirs once it has waited {wait}"


def scheduling_gated(gang: Gang, gates: list[str]) -> str:
    return (
        f"gang {gang.id} is not tried while its pods carry schedulingGates ({', '.join(gates)}); "
        "whoever added them removes them when the pods may start"
    )


def unsupported(gang: Gang, fields: list[str]) -> str:
    return (
        f"gpufair does not honour {', '.join(fields)} yet, so it does not bind gang {gang.id} "
        "where the pods may not run; drop the field, or schedule these pods with another scheduler"
    )


def volume_waits(gang: Gang, waits: list[str]) -> str:
    """A pod whose volumes cannot be had on any node yet, in kube-scheduler's PreFilter words."""
    return f"{'; '.join(waits)}; gang {gang.id} is tried again once its claims change"


def no_node_allowed(state: ClusterState, req: GangRequest) -> tuple[str, str]:
    """No node the gang's filters allow: kube-scheduler's per-reason node counts."""
    words = req.ruled_out() if req.ruled_out is not None else []
    if not words or all(f in ("gpu-model", "unschedulable") for f, _, _ in words):
        return "NoModel", "no schedulable node has an allowed GPU model; check the pod's GPU model list"
    counts = ", ".join(sorted(f"{n} {text}" for _, n, text in words))
    return "Unschedulable", f"0/{state.node_count} nodes are available: {counts}"


def _short_everywhere(
    state: ClusterState, cache: ShapeCache, s: Shape, req: GangRequest, unpinned: GangRequest
) -> str | None:
    """When a pod of `s` fits on no allowed node and something besides GPUs is short there,
    kube-scheduler's per-resource node counts (a node under each resource it lacks, after
    the nodes the filters rule out); None when GPUs alone are short, or a pod fits."""
    if capacity_of(state, cache, s, unpinned).any():
        return None
    nodes = state.schedulable if req.model_ok is None else state.schedulable & req.model_ok
    short = resources.shortfalls(state, s, nodes)
    if all(name == resources.GPU_RESOURCE for name, _, _ in short):
        return None
    words = req.ruled_out() if req.ruled_out is not None else []
    counts = ", ".join(sorted(f"{n} {text}" for _, n, text in (*words, *short)))
    return f"0/{state.node_count} nodes are available: {counts}"


def diagnose(state: ClusterState, cache: ShapeCache, req: GangRequest) -> tuple[str, str]:
    """Why `req` cannot be placed now: the first missing thing a person can act on. When the
    pod's own spec rules nodes out, kube-scheduler's per-reason node counts come first, so
    a person sees both what the spec excludes and what is short on the nodes left."""
    code, text = _diagnose(state, cache, req)
    if code in ("Unschedulable", "NoModel") or req.model_ok is None or req.ruled_out is None:
        return code, text
    words = [(n, t) for f, n, t in req.ruled_out() if f != "gpu-model"]
    if not words:
        return code, text
    allowed = int((req.model_ok & state.open).sum())
    counts = ", ".join(
        sorted([f"{allowed} node(s) had no room for the pod", *(f"{n} {t}" for n, t in words)])
    )
    return code, f"0/{state.node_count} nodes are available: {counts}; {text}"


def _diagnose(state: ClusterState, cache: ShapeCache, req: GangRequest) -> tuple[str, str]:
    ok = state.placeable
    if req.model_ok is not None:
        if not (req.model_ok & state.open).any():
            return no_node_allowed(state, req)
        ok = ok & req.model_ok
    largest = int(state.usable[ok].max()) if ok.any() else 0
    for s in set(req.shapes):
        if s.gpus > largest:
            return "TooLarge", (
                f"a pod asks for {gpus(s.gpus)} but the largest allowed node has {gpus(largest)}; "
                f"split it into pods of at most {largest} GPUs"
            )
    asked = sum(s.gpu_amount for s in req.shapes)
    free = float(np.where(ok, state.total_free, 0).sum()) / FULL
    where = "in the cluster" if req.model_ok is None else "on the nodes it may use"
    anywhere = GangRequest(
        tuple(Shape(s.gpus, s.milli, 0, 0) for s in req.shapes),
        req.model_ok,
        CLUSTER_LEVEL,
        None,
        req.whole_node_gpus,
    )
    unpinned = GangRequest(req.shapes, req.model_ok, CLUSTER_LEVEL, None, req.whole_node_gpus)
    for s, c in req.counts.items():
        short = _short_everywhere(state, cache, s, req, unpinned)
        if short is not None:
            return "NoRoom", short
        if int(capacity_of(state, cache, Shape(s.gpus, s.milli, 0, 0), anywhere).sum()) < c:
            return "NoRoom", (
                f"waiting for {gpus(asked)} ({_pods(req.shapes)}); "
                f"{gpus(free)} free {where}, "
                "not enough on nodes that can take these pods"
            )
        if int(capacity_of(state, cache, s, unpinned).sum()) < c:
            return "NoRoom", (
                f"waiting for {gpus(asked)} ({_pods(req.shapes)}): GPUs are free but not with "
                f"{s.cpu}m CPU and {s.mem}Mi memory beside them on the same nodes"
            )
    # Each shape may fit on its own while all of them together do not.
    if asked > free + 1e-9:
        return "NoRoom", (
            f"waiting for {gpus(asked)} ({_pods(req.shapes)}) to fit at once; {gpus(free)} free {where}"
        )
    if req.widest_level != CLUSTER_LEVEL:
        label = state.levels[req.widest_level]
        if req.pinned is not None:
            room = float(np.where(ok & req.pinned, state.total_free, 0).sum())
            return "TopologyWait", (
                f"waiting for {gpus(asked)} ({_pods(req.shapes)}) in the {label} where the gang's "
                f"running pods are; it has {gpus(room / FULL)} free"
            )
        dom = state.domains[req.widest_level]
        per_domain = np.bincount(
            dom,
            weights=np.where(ok, state.total_free, 0),
            minlength=len(state.domain_names[req.widest_level]),
        )
        return "TopologyWait", (
            f"waiting for {gpus(asked)} ({_pods(req.shapes)}) in one {label}; "
            f"the most free in any one {label} is {gpus(float(per_domain.max()) / FULL)}"
        )
    return "NoRoom", (
        f"waiting for {gpus(asked)} ({_pods(req.shapes)}) to fit at once; {gpus(free)} are free "
        "but spread so that not every pod finds a node"
    )
