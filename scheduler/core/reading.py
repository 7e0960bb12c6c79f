"""How a cycle reads the Core's input: the running set loaded onto the cluster, and the
waiting gangs as views (their tier, their placement request or the problem that keeps
them from being tried), worked out once per signature group rather than once per gang."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from scheduler.core import filters, podcycle, reasons
from scheduler.core.cluster import Shape
from scheduler.core.framework import filter_signatures
from scheduler.core.model import Gang, Pending, Pod, Tier
from scheduler.core.placement import CLUSTER_LEVEL, GangRequest, RequestKey
from scheduler.core.preferences import Preferred, preference_signature, preferred
from scheduler.core.shortcuts import LoadedRunning
from scheduler.core.tiers import effective_tier, effective_tiers
from scheduler.core.volumes import volume_waits
from scheduler.core.waiting import GroupRequest, Problem, SignatureGroup, View, Waiting

if TYPE_CHECKING:
    from scheduler.core.cycle import Cycle

_EPS = 1e-6


def run_tiers(cyc: Cycle, priorities: np.ndarray, teams: np.ndarray) -> np.ndarray:
    if not cyc.policy.tiers:
        return np.full(priorities.shape, int(Tier.TRAINING))
    return effective_tiers(priorities, cyc.scavenging[teams], cyc.config)


def gang_tier(cyc: Cycle, priority: int, scavenging: bool) -> Tier:
    """One waiting gang's tier (`run_tiers` for one)."""
    if not cyc.policy.tiers:
        return Tier.TRAINING
    return cyc.shortcuts.tier(
        (priority, scavenging), lambda: effective_tier(priority, scavenging, cyc.config)
    )


def read_running(cyc: Cycle) -> LoadedRunning:
    """The running gangs, their tiers, the GPUs each (tier, team) holds, and the cluster
    with them loaded. Kept by the Core while the running set and the teams that scavenge
    stay the same: about half the cycles of a replay see the same as the one before."""
    core, shortcuts = cyc.core, cyc.shortcuts
    key = (core.running.version, cyc.scavenging.tobytes())
    hit = shortcuts.loaded
    if hit is not None and hit.key == key and shortcuts.enabled:
        return hit
    run = core.running.table()
    tiers = run_tiers(cyc, run.priority, run.team)
    changes, core.running.changes = core.running.changes, []
    loaded = None
    if shortcuts.enabled and hit is not None and changes is not None and not hit.special:
        # Whole GPUs at no known slot before: carry the pods that came and went over onto
        # the last loaded cluster, node by node, instead of loading all. That cluster is
        # the Core's alone (each cycle works on a copy) and is replaced here, so it is
        # changed in place; if the shift fails, it is dropped.
        loaded, shortcuts.loaded = hit.cluster, None
        if not loaded.shift_running(changes):
            loaded = None
    if loaded is None:
        loaded = core.base.copy()
        special = loaded.load_running(
            run.pod_node, run.pod_gpus, run.pod_milli, run.pod_cpu, run.pod_mem, run.indices, run.extras
        )
    else:
        special = {}
    # GPUs per (tier, team) in one step; CPU and memory are kept for training only.
    n = len(cyc.teams) + 1
    by = tiers * n + run.team
    gpus = np.bincount(by, weights=run.gpus, minlength=len(Tier) * n).reshape(len(Tier), n)
    train = tiers == Tier.TRAINING
    cpu = np.bincount(run.team[train], weights=run.cpu[train], minlength=n).astype(np.float64)
    mem = np.bincount(run.team[train], weights=run.mem[train], minlength=n).astype(np.float64)
    held = bool(gpus[Tier.SCAVENGER].max() > _EPS)
    out = LoadedRunning(key, run, tiers, loaded, special, gpus, cpu, mem, held)
    if shortcuts.enabled:
        shortcuts.loaded = out
    return out


class WaitingViews(NamedTuple):
    views: list[View]  # the signature groups', then the singles'
    groups: int  # how many of them are groups
    demand_milli: np.ndarray  # training milli-GPUs waiting per team (and the sink)


def read_waiting(cyc: Cycle) -> WaitingViews:
    """Views of the waiting groups and singles: tier, request or problem, once per group."""
    store = cyc.core.waiting
    groups = list(store.classes.values())
    singles = list(store.singles.values())
    if cyc.anti_terms:  # a group a pod of which some anti-affinity term matches: pod by pod
        groups, singles = podcycle.split_groups(cyc, groups, singles)
    n = len(cyc.teams) + 1
    index, sink = cyc.team_index, cyc.sink
    scav = cyc.scavenging.tolist()
    teams = [index.get(c.team, sink) for c in groups]
    tiers = [gang_tier(cyc, c.priority, scav[t]) for c, t in zip(groups, teams, strict=True)]
    s_teams = [index.get(g.team, sink) for g, _ in singles]
    s_tiers = [gang_tier(cyc, g.priority, scav[t]) for (g, _), t in zip(singles, s_teams, strict=True)]
    views: list[View] = []
    # Summed in a Python list (an item update of a numpy array costs far more). What only
    # the team table and the scorer read (pending pods, the waiting mix) waits for them.
    demand_milli = [0] * n
    for c, t, tier in zip(groups, teams, tiers, strict=True):
        v = _group_view(cyc, c, t, tier, scav[t])
        if v.problem is None and v.tier is Tier.TRAINING:
            demand_milli[t] += len(c) * c.milli
        views.append(v)
    for (gang, seq), t, tier in zip(singles, s_teams, s_tiers, strict=True):
        w = waiting_gang(cyc, gang, t, tier, scav[t])
        if w.problem is None and w.tier is Tier.TRAINING:
            demand_milli[t] += sum(p.gpus * 1000 + p.gpu_milli + p.mig_milli for p in w.pods)
        problem = w.problem
        views.append(
            View(
                t,
                w.tier,
                w.gpus,
                [(gang.submit_s, gang.id)],
                [gang.id],
                [gang],
                [seq],
                w.request,
                None if problem is None else _always(problem),
                w,
            )
        )
    return WaitingViews(views, len(groups), np.array(demand_milli, dtype=np.int64))


def _always(p: Pending) -> Problem:
    """A single's problem, as a view's (which is asked per gang)."""
    return lambda _g: p


def spec_problem(gang: Gang) -> Problem | None:
    """A gang whose pods carry schedulingGates is not tried until they are lifted; one whose
    pods use a spec field gpufair does not honour yet waits, naming it, rather than being
    bound where the pod may not run. Both hold for every gang of the same signature."""
    gates = sorted({g for c in gang.constraints for g in c.gates})
    if gates:
        return lambda g: Pending(g.id, "SchedulingGated", reasons.scheduling_gated(g, gates))
    unsupported = sorted({u for c in gang.constraints for u in c.unsupported})
    if unsupported:
        return lambda g: Pending(g.id, "Unsupported", reasons.unsupported(g, unsupported))
    waits = volume_waits(gang)
    if waits:
        return lambda g: Pending(g.id, "Unschedulable", reasons.volume_waits(g, waits))
    return None


def gated(cyc: Cycle, t: int, tier: Tier, scavenging: bool) -> tuple[str, str] | None:
    """The first of the policy's gates that keeps team `t`'s gangs of `tier` waiting."""
    for gate in cyc.gates:
        refused = gate.refuse(cyc, t, tier, scavenging)
        if refused is not None:
            return refused
    return None


def _group_view(cyc: Cycle, c: SignatureGroup, t: int, tier: Tier, scavenging: bool) -> View:
    """What `waiting_gang` finds for each gang of the group, found once for all of them."""
    v = View(t, tier, c.gpus, c.keys, c.ids, c.gangs, c.seqs, source=c)
    if c.sample.constraints:
        v.problem = spec_problem(c.sample)
        if v.problem is not None:
            return v
    refused = gated(cyc, t, tier, scavenging)
    if refused is not None:
        code, text = refused
        v.problem = lambda g: Pending(g.id, code, text)
        return v
    # The rest depends on the group, the config and the nodes only: worked out once for
    # as long as the request table (which lives as long as the Core's node list).
    cached = c.request_cache
    if cached is None or cached.table is not cyc.requests:
        cached = c.request_cache = GroupRequest(cyc.requests, *_group_request(cyc, c))
    v.request, v.problem = cached.request, cached.problem
    return v


def _topology_problem(cyc: Cycle, gang: Gang) -> tuple[int, str | None]:
    """The widest level the gang may span, or the unknown topology label it names."""
    cfg = cyc.config
    widest = CLUSTER_LEVEL
    if gang.topology_required is not None or gang.topology_preferred is not None:
        for label in (gang.topology_required, gang.topology_preferred):
            if label is not None and cfg.level_index(label) is None:
                return widest, label
        if gang.topology_required is not None:
            level = cfg.level_index(gang.topology_required)
            assert level is not None  # checked just above
            widest = level
    return widest, None


def _group_request(cyc: Cycle, c: SignatureGroup) -> tuple[GangRequest | None, Problem | None]:
    """A group's shared request, or the problem that keeps its gangs from being tried."""
    cfg = cyc.config
    gang = c.sample
    widest, unknown = _topology_problem(cyc, gang)
    if unknown is not None:
        return None, lambda g: Pending(g.id, "Invalid", reasons.unknown_level(g, unknown, cfg))
    biggest = c.biggest
    if biggest > cyc.max_node_gpus:
        largest = cyc.max_node_gpus

        def too_large(g: Gang) -> Pending:
            too_big = next(p for p in g.pods if p.gpus == biggest)
            return Pending(g.id, "TooLarge", reasons.too_large(too_big, largest))

        return None, too_large
    return shared_request(cyc, c.shape_objs, gang, widest), None


def waiting_gang(cyc: Cycle, gang: Gang, t: int, tier: Tier, scavenging: bool) -> Waiting:
    """A single gang as the passes handle it: its pods still to place, and its request."""
    cfg = cyc.config
    pods = gang.pods
    if len(pods) == 1:  # the common case, without the generic bookkeeping
        bound: tuple[Pod, ...] = ()
        pending: tuple[Pod, ...] = pods
    else:
        bound = gang.bound_pods
        pending = gang.pending_pods
    required = gang.required_members
    short = max(0, required - len(bound))
    need, extras = pending[:short], pending[short:]
    gpus = sum(p.gpus + p.gpu_milli / 1000.0 + p.mig_milli / 1000.0 for p in need)
    w = Waiting(gang, t, tier, need, extras, gpus)
    if gang.constraints:
        problem = spec_problem(gang)
        if problem is not None:
            w.problem = problem(gang)
            return w
    if t == cyc.sink:
        w.problem = Pending(gang.id, "NoTeam", reasons.no_team(gang))
        return w
    if len(gang.pods) < required:
        w.problem = Pending(gang.id, "GangIncomplete", reasons.incomplete(gang, required))
        return w
    refused = gated(cyc, t, tier, scavenging)
    if refused is not None:
        w.problem = Pending(gang.id, *refused)
        return w
    widest, unknown = _topology_problem(cyc, gang)
    if unknown is not None:
        w.problem = Pending(gang.id, "Invalid", reasons.unknown_level(gang, unknown, cfg))
        return w
    biggest = max(p.gpus for p in pods) if len(pods) > 1 else pods[0].gpus
    if biggest > cyc.max_node_gpus:
        too_big = next(p for p in pods if p.gpus == biggest)
        w.problem = Pending(gang.id, "TooLarge", reasons.too_large(too_big, cyc.max_node_gpus))
        return w
    pinned = None
    state = cyc.state
    if bound and widest != CLUSTER_LEVEL:
        first = state.index.get(bound[0].node) if bound[0].node is not None else None
        if first is not None:
            dom = state.domains[widest]
            pinned = dom == dom[first]
    shapes = tuple(shape_of(cyc, p) for p in need)
    if cyc.pods is not None and podcycle.dynamic(cyc, gang):
        return _dynamic_waiting(cyc, w, shapes, widest, pinned)
    if pinned is not None:
        w.request = GangRequest(
            shapes,
            filter_mask(cyc, gang),
            widest,
            pinned,
            cfg.whole_node_gpus,
            ruled_out=ruled_out(cyc, gang),
            prefer=prefer_of(cyc, gang),
        )
    else:
        w.request = shared_request(cyc, shapes, gang, widest)
    held = nominated_nodes(cyc, need)
    if held is not None:
        w.nominated = GangRequest(
            shapes,
            w.request.model_ok,
            widest,
            held if pinned is None else held & pinned,
            cfg.whole_node_gpus,
            prefer=w.request.prefer,
        )
    return w


def _dynamic_waiting(
    cyc: Cycle, w: Waiting, shapes: tuple[Shape, ...], widest: int, pinned: np.ndarray | None
) -> Waiting:
    """A gang whose pods depend on the other pods: its own request, placed pod by pod."""
    gang, cfg = w.gang, cyc.config
    dyn = podcycle.placer(cyc, gang, w.need)
    static = podcycle.static_mask(cyc, gang)
    w.request = GangRequest(
        shapes, static, widest, pinned, cfg.whole_node_gpus, ruled_out=ruled_out(cyc, gang), dynamic=dyn
    )
    held = nominated_nodes(cyc, w.need)
    if held is not None:
        held = held if pinned is None else held & pinned
        w.nominated = GangRequest(shapes, static, widest, held, cfg.whole_node_gpus, dynamic=dyn)
    return w


def nominated_nodes(cyc: Cycle, need: tuple[Pod, ...]) -> np.ndarray | None:
    """The nodes held for these pods, as a mask: None unless every one has a nomination
    to a node that is still in the cluster."""
    if not need:
        return None
    index = cyc.state.index
    nodes: list[int] = []
    for p in need:
        i = index.get(p.nominated_node) if p.nominated_node is not None else None
        if i is None:
            return None
        nodes.append(i)
    mask = np.zeros(cyc.state.node_count, dtype=bool)
    mask[nodes] = True
    return mask


def filter_mask(cyc: Cycle, gang: Gang) -> np.ndarray | None:
    """Nodes every one of the policy's node filters lets the gang use (None: all)."""
    return filters.allowed(cyc.state, gang, cyc.policy.filters, cyc.shortcuts.mask)


def ruled_out(cyc: Cycle, gang: Gang) -> Callable[[], list[tuple[str, int, str]]]:
    """What rules nodes out for the gang (filters.ruled_out), worked out only when a reason
    is wanted."""
    state, policy_filters = cyc.state, cyc.policy.filters
    return lambda: filters.ruled_out(state, gang, policy_filters)


def prefer_of(cyc: Cycle, gang: Gang) -> Preferred | None:
    """The gang's node preferences under the policy's score weights (None: none)."""
    return preferred(cyc.state, gang, cyc.policy.preferences, cyc.config.weights)


def shared_request(cyc: Cycle, shapes: tuple[Shape, ...], gang: Gang, widest: int) -> GangRequest:
    """Many waiting gangs look alike: they share one request (and its node mask)."""
    signature = filter_signatures(gang, cyc.policy.filters)
    if gang.constraints:
        signature = (signature, preference_signature(gang, cyc.policy.preferences))
    key = RequestKey(shapes, signature, widest)
    request = cyc.requests.get(key)
    if request is None:
        request = GangRequest(
            shapes,
            filter_mask(cyc, gang),
            widest,
            None,
            cyc.config.whole_node_gpus,
            key=key,
            ruled_out=ruled_out(cyc, gang),
            prefer=prefer_of(cyc, gang),
        )
        cyc.requests[key] = request
    return request


def shape_of(cyc: Cycle, pod: Pod) -> Shape:
    key = (pod.gpus, pod.gpu_milli, pod.cpu_milli, pod.memory_mib, pod.extras)
    shape = cyc.shapes.get(key)
    if shape is None:
        shape = cyc.shapes[key] = Shape(*key)
    return shape
