"""API objects (plain JSON dicts from the cache) into the decision core's Snapshot.

This is the only place that knows Kubernetes field names. It decides nothing: which team
a pod belongs to comes from the GPUTeam that lists its namespace (never from the pod's own
labels), and everything the core decides from is copied, not interpreted. A malformed
object becomes a `Problem` naming the object, the field and the fix; it never stops the
translation of the others.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Protocol

from kubernetes.utils.quantity import parse_quantity as _parse_quantity

from scheduler.core.constraints import PodConstraints
from scheduler.core.durations import parse_duration
from scheduler.core.errors import InvalidInput
from scheduler.core.manifests import resolve_teams
from scheduler.core.mig import MigRates
from scheduler.core.model import Extras, Gang, Node, Pod, Snapshot, Team, TeamUsage
from scheduler.core.podterms import PodTerms
from scheduler.daemon.podspec import VolumeRead, node_taints, pod_constraints
from scheduler.daemon.podterms import pod_labels, pod_terms
from scheduler.daemon.workloads import NoOwners, Owners, Reading, Workload, candidate, recognise

SCHEDULER_NAME = "gpufair"
GPU_RESOURCE = "nvidia.com/gpu"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
GANG_LABEL = "gpufair.io/gang"
GANG_SIZE = "gpufair.io/gang-size"
MIN_RUNTIME = "gpufair.io/min-runtime"
CHECKPOINT = "gpufair.io/checkpoint-interval"
TOPOLOGY_REQUIRED = ("gpufair.io/topology-required", "kueue.x-k8s.io/podset-required-topology")
TOPOLOGY_PREFERRED = ("gpufair.io/topology-preferred", "kueue.x-k8s.io/podset-preferred-topology")
GPU_MODEL_LABEL = "gpufair.io/gpu-model"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU, as GPU feature discovery labels it
TERMINAL_PHASES = ("Succeeded", "Failed")
# Gang ids within a namespace, one form per kind, so a PodGroup, a gpufair.io/gang label and a
# lone pod of the same name stay three gangs (':' is in no pod, PodGroup or label-value name).
PODGROUP_GANG = "podgroup:"
LABEL_GANG = "gang:"


@dataclass(frozen=True, slots=True)
class Problem:
    """Bad input found while translating: shown on the object as an event."""

    kind: str  # 'Pod' or 'GPUTeam' or 'PodGroup'
    namespace: str
    name: str
    message: str


@dataclass(slots=True)
class Translation:
    snapshot: Snapshot
    pods: dict[str, dict[str, Any]]  # core pod name (namespace/name) -> the API object
    gang_pods: Mapping[str, list[str]]  # gang id -> its pod names
    problems: list[Problem] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)  # gang id -> why it cannot be read


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


def timestamp(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# A cluster writes few distinct quantities ('500m', '16Gi', '1'), and parsing one is most of
# a pod's translation: each is parsed once (a Decimal, immutable).
parse_quantity = lru_cache(maxsize=4096)(_parse_quantity)

# Pod-level requests (spec.resources) stand in for the containers' sum of these.
_POD_LEVEL = ("cpu", "memory")
_POD_LEVEL_PREFIX = "hugepages-"


def _requests_of(res: Any) -> dict[str, Decimal]:
    """A container's (or the pod's) requests; a limit stands for a missing request, as the
    API server defaults it."""
    res = res if isinstance(res, Mapping) else {}
    req = {**(res.get("limits") or {}), **(res.get("requests") or {})}
    return {str(k): parse_quantity(str(v)) for k, v in req.items()}


def resource_requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """Every resource the pod needs on its node, as the kubelet and kube-scheduler count
    them: the larger of the app containers' sum and any one init container, plus overhead."""
    spec = pod.get("spec", {})
    # KEP-753: sidecars (init containers with restartPolicy Always) run beside everything
    # after them, so they add up; a plain init container needs its own request on top of the
    # sidecars started before it, then exits.
    total: dict[str, Decimal] = defaultdict(Decimal)
    for c in spec.get("containers") or []:
        for k, v in _requests_of(c.get("resources")).items():
            total[k] += v
    sidecars: dict[str, Decimal] = defaultdict(Decimal)
    init_peak: dict[str, Decimal] = defaultdict(Decimal)
    for c in spec.get("initContainers") or []:
        req = _requests_of(c.get("resources"))
        if c.get("restartPolicy") == "Always":
            for k, v in req.items():
                sidecars[k] += v
                total[k] += v
            during = dict(sidecars)
        else:
            during = {k: v + sidecars.get(k, Decimal(0)) for k, v in req.items()}
            for k, v in sidecars.items():
                during.setdefault(k, v)
        for k, v in during.items():
            init_peak[k] = max(init_peak[k], v)
    for k, v in init_peak.items():
        total[k] = max(total[k], v)
    pod_level = _requests_of(spec.get("resources"))
    for k, v in pod_level.items():
        if k in _POD_LEVEL or k.startswith(_POD_LEVEL_PREFIX):
            total[k] = v
    for k, v in _requests_of({"requests": spec.get("overhead")}).items():
        total[k] += v
    return dict(total)


def _whole(value: Decimal, name: str) -> int:
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name} {value} is not an amount of 0 or more")
    return math.ceil(value)  # as Quantity.Value() rounds


def split_requests(total: Mapping[str, Decimal]) -> tuple[int, int, int, Extras]:
    """(GPUs, CPU millicores, memory MiB, every other resource in its base unit)."""
    gpus = _whole(total.get(GPU_RESOURCE, Decimal(0)), GPU_RESOURCE)
    cpu = _whole(total.get("cpu", Decimal(0)) * 1000, "cpu")
    mem = _whole(total.get("memory", Decimal(0)) / 2**20, "memory")
    extras = tuple(
        sorted((k, amount) for k, v in total.items() if k not in _CORE and (amount := _whole(v, k)) > 0)
    )
    return gpus, cpu, mem, extras


_CORE = frozenset({"cpu", "memory", GPU_RESOURCE})
_NODE_CORE = _CORE | {"pods"}


def _pair(res: Any) -> tuple | None:
    if not isinstance(res, Mapping):
        return None
    lim, req = res.get("limits"), res.get("requests")
    return (tuple(lim.items()) if lim else (), tuple(req.items()) if req else ())


_SPLIT: dict[tuple, tuple[int, int, int, Extras]] = {}


def pod_resources(pod: Mapping[str, Any]) -> tuple[int, int, int, Extras]:
    """split_requests(resource_requests(pod)), remembered by what it reads (each
    container's and the pod's requests and limits, sidecars, overhead): most pods of a
    cluster come from a few templates, and working it out is most of a pod's translation."""
    spec = pod.get("spec", {})
    try:
        key = (
            tuple(_pair(c.get("resources")) for c in spec.get("containers") or ()),
            tuple(
                (_pair(c.get("resources")), c.get("restartPolicy")) for c in spec.get("initContainers") or ()
            ),
            _pair(spec.get("resources")),
            tuple((spec.get("overhead") or {}).items()),
        )
        hit = _SPLIT.get(key)
    except (TypeError, AttributeError):  # an odd shape: worked out (and refused) as it stands
        return split_requests(resource_requests(pod))
    if hit is None:
        hit = split_requests(resource_requests(pod))
        if len(_SPLIT) >= 4096:
            _SPLIT.clear()
        _SPLIT[key] = hit
    return hit


def pod_requests(pod: Mapping[str, Any]) -> tuple[int, int, int]:
    """(GPUs, CPU millicores, memory MiB) the pod needs on its node (resource_requests)."""
    return split_requests(resource_requests(pod))[:3]


def bound_since(pod: Mapping[str, Any]) -> float | None:
    """When a bound pod started: the kubelet's startTime, else the bind (PodScheduled's
    transition), else None, which the core reads as now: a pod just bound by this daemon and
    not yet seen bound is young, never as old as its creation (a gang that queued an hour
    is not past its minimum runtime the moment it binds)."""
    status = pod.get("status") or {}
    started = timestamp(status.get("startTime"))
    if started is not None:
        return started
    for c in status.get("conditions") or ():
        if c.get("type") == "PodScheduled" and c.get("status") == "True":
            return timestamp(c.get("lastTransitionTime"))
    return None


def _node_ready(node: Mapping[str, Any]) -> bool:
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _allocatable(name: str, alloc: Mapping[str, Any]) -> dict[str, Decimal]:
    out = {}
    for k, v in alloc.items():
        try:
            q = parse_quantity(str(v))
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                f"node {name!r}",
                f"status.allocatable[{k}]",
                f"unreadable quantity {v!r} ({exc})",
                "report quantities such as '8', '500m' or '16Gi'",
            ) from exc
        if not q.is_finite() or q < 0:
            raise InvalidInput(
                f"node {name!r}", f"status.allocatable[{k}]", f"{v!r} is below 0", "report 0 or more"
            )
        out[str(k)] = q
    return out


def node_from_api(obj: Mapping[str, Any], unhealthy: Iterable[int] = ()) -> Node:
    """The node as the core sees it; InvalidInput (naming the node and the field) for an
    allocatable quantity that cannot be read."""
    meta, status = obj["metadata"], obj.get("status", {})
    alloc = _allocatable(meta["name"], status.get("allocatable") or status.get("capacity") or {})
    labels = dict(meta.get("labels") or {})
    gpus = int(alloc.get(GPU_RESOURCE, 0))
    extras = tuple(sorted((k, math.ceil(v)) for k, v in alloc.items() if k not in _NODE_CORE))
    pods = alloc.get("pods")
    memory = labels.get(GPU_MEMORY_LABEL, "")
    cordoned, ready = bool(obj.get("spec", {}).get("unschedulable", False)), _node_ready(obj)
    return Node(
        name=meta["name"],
        gpus=gpus,
        cpu_milli=int(alloc.get("cpu", 0) * 1000),
        memory_mib=int(alloc.get("memory", 0) / 2**20),
        gpu_model=labels.get(GPU_MODEL_LABEL) or labels.get(GPU_PRODUCT_LABEL, ""),
        unhealthy_gpus=frozenset(i for i in unhealthy if 0 <= i < gpus),
        labels=labels,
        schedulable=not cordoned and ready,
        taints=node_taints(obj),
        cordoned=cordoned and ready,
        extras=extras,
        max_pods=None if pods is None else int(pods),
        gpu_memory_mib=int(memory) if memory.isdigit() else 0,
    )


def _selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions), as the API server evaluates it."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        has = key in labels
        if op == "In" and not (has and labels[key] in values):
            return False
        if op == "NotIn" and has and labels[key] in values:
            return False
        if op == "Exists" and not has:
            return False
        if op == "DoesNotExist" and has:
            return False
    return True


def protected_by_pdb(pod: Mapping[str, Any], pdbs: Iterable[Mapping[str, Any]]) -> bool:
    """True when a PodDisruptionBudget covering the pod allows no disruption now, so the
    Eviction API would refuse it: the core must choose other victims."""
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    for pdb in pdbs:
        if pdb["metadata"].get("namespace") != meta.get("namespace"):
            continue
        if not _selector_matches(pdb.get("spec", {}).get("selector"), labels):
            continue
        if int((pdb.get("status") or {}).get("disruptionsAllowed", 0)) <= 0:
            return True
    return False


def _annotation(annotations: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in annotations:
            return annotations[name]
    return None


@dataclass(slots=True)
class _GangParts:
    namespace: str
    pods: list[dict[str, Any]] = field(default_factory=list)
    min_member: int | None = None  # a PodGroup's minMember
    label: str | None = None  # a gpufair.io/gang gang's label value
    sizes: dict[str, str | None] = field(default_factory=dict)  # its pods' gang-size annotations
    workload: Workload | None = None  # the owning workload (workloads.py), if it names the gang


@dataclass(frozen=True, slots=True)
class PodPart:
    """One of gpufair's pods as its gang is assembled from it: the pod, and what the gang
    takes from each of its pods (the highest priority, the first creation, ...)."""

    key: str
    name: str
    annotations: Mapping[str, str]
    priority: int
    created: float | None
    model: str | None
    pod: Pod
    blocks_eviction: bool  # bound, and being deleted or under a PodDisruptionBudget at 0
    constraint: PodConstraints | None  # read for a pending pod only
    pending: bool
    terms: PodTerms | None


class PodGroups(Protocol):
    def get(self, key: str, /) -> Mapping[str, Any] | None: ...


class SnapshotBuilder:
    """Turns one consistent read of the cache into a Translation. Its per-object steps
    (`read_context`, `pod_part`, `assemble`, `foreign`, `gang_of`) are also what the
    daemon's incremental state (live.py) calls, object by object."""

    def __init__(self, teams_raw: Iterable[Mapping[str, Any]]) -> None:
        self.problems: list[Problem] = []
        self.priority_of: dict[str, int] = {}
        self.nominated: Mapping[str, str] = {}
        self.default_priority = 0
        self.volumes: VolumeRead | None = None
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.teams = self._teams(teams_raw)
        self.mig = MigRates(())  # made from each build's nodes
        self.owners: Owners = NoOwners()
        # What the last gang_of read: its owning workload, and the owners it looked up.
        self.last_workload: Workload | None = None
        self.last_reads: Collection[tuple[str, str]] = ()

    def _teams(self, raw: Iterable[Mapping[str, Any]]) -> tuple[Team, ...]:
        # A namespace two GPUTeams list stays with the older claim (resolve_teams), so a new
        # GPUTeam never takes the namespace, or the pods charged in it, from an existing one.
        resolved = resolve_teams(raw)
        for name, exc in resolved.refused.items():
            self.problems.append(Problem("GPUTeam", "", name, str(exc)))
        self.team_of_ns = dict(resolved.owner)
        return tuple(sorted(resolved.teams, key=lambda t: t.name))  # the core sees them by name

    def build(
        self,
        now_s: float,
        nodes_raw: Iterable[Mapping[str, Any]],
        pods_raw: Iterable[dict[str, Any]],
        podgroups_raw: Iterable[Mapping[str, Any]] = (),
        pdbs_raw: Iterable[Mapping[str, Any]] = (),
        usage: Mapping[str, TeamUsage] | None = None,
        unhealthy: Mapping[str, Iterable[int]] | None = None,
        hold: Iterable[str] = (),
        priority_classes: Iterable[Mapping[str, Any]] = (),
        nominated: Mapping[str, str] | None = None,
        volumes: VolumeRead | None = None,
        namespaces_raw: Iterable[Mapping[str, Any]] = (),
        owners: Owners | None = None,
    ) -> Translation:
        """`owners` gives the workloads that own pods (workloads.py); `hold` names gangs to
        leave out of this cycle (their preemption is in progress);
        `nominated` gives pending pods the node the daemon's own preemption made room on
        (a pod's status.nominatedNodeName is not read: users could write it); `volumes` reads
        a pod's claims (None: claims are not honoured, and such pods wait saying so)."""
        self.read_context(priority_classes, nominated, volumes, namespaces_raw)
        if owners is not None:
            self.owners = owners
        unhealthy = unhealthy or {}
        read: list[Node] = []
        for n in sorted(nodes_raw, key=lambda n: n["metadata"]["name"]):
            try:
                read.append(node_from_api(n, unhealthy.get(n["metadata"]["name"], ())))
            except InvalidInput as exc:  # left out (nothing is placed there); the rest go on
                self.problems.append(Problem("Node", "", n["metadata"]["name"], str(exc)))
        nodes = tuple(read)
        node_names = {n.name for n in nodes}
        self.mig = MigRates(nodes)
        groups = {f"{g['metadata'].get('namespace')}/{g['metadata']['name']}": g for g in podgroups_raw}
        pdbs = list(pdbs_raw)
        held = set(hold)
        gangs: list[Gang] = []
        pods_by_key: dict[str, dict[str, Any]] = {}
        gang_pods: dict[str, list[str]] = {}
        invalid: dict[str, str] = {}
        parts: dict[str, _GangParts] = defaultdict(lambda: _GangParts(""))
        for obj in pods_raw:
            phase = obj.get("status", {}).get("phase")
            if phase in TERMINAL_PHASES:
                continue
            spec, meta = obj.get("spec", {}), obj["metadata"]
            key = pod_key(obj)
            node = spec.get("nodeName")
            if spec.get("schedulerName") != SCHEDULER_NAME:
                if node in node_names:  # someone else's pod: it holds room, it is not ours to move
                    try:
                        gangs.append(self.foreign(obj, key, node))
                    except InvalidInput as exc:
                        self.problems.append(
                            Problem("Pod", meta.get("namespace", ""), meta["name"], str(exc))
                        )
                continue
            pods_by_key[key] = obj
            labels = meta.get("labels") or {}
            annotations = meta.get("annotations") or {}
            ns = meta.get("namespace", "default")
            try:
                gid, min_member = self.gang_of(obj, ns, labels, groups)
            except InvalidInput as exc:
                gid = f"{ns}/{meta['name']}"
                invalid[gid] = str(exc)
                gang_pods[gid] = [key]
                self.problems.append(Problem("Pod", ns, meta["name"], str(exc)))
                continue
            p = parts[gid]
            p.namespace = ns
            p.pods.append(obj)
            if self.last_workload is not None:
                p.workload = self.last_workload
            if min_member is not None:
                p.min_member = min_member
            elif gid.startswith(f"{ns}/{LABEL_GANG}"):  # its size is checked across all its pods
                p.label = labels[GANG_LABEL]
                p.sizes[key] = annotations.get(GANG_SIZE)
        for gid, p in sorted(parts.items()):
            gang_pods[gid] = sorted(pod_key(o) for o in p.pods)
            if gid in held:
                continue
            try:
                gangs.append(self._gang(gid, p, node_names, pdbs))
            except InvalidInput as exc:
                invalid[gid] = str(exc)
                first = min(o["metadata"]["name"] for o in p.pods)
                self.problems.append(Problem("Pod", p.namespace, first, str(exc)))
        snapshot = Snapshot(
            now_s=now_s, nodes=nodes, teams=self.teams, gangs=tuple(gangs), usage=dict(usage or {})
        )
        return Translation(snapshot, pods_by_key, gang_pods, list(self.problems), invalid)

    def read_context(
        self,
        priority_classes: Iterable[Mapping[str, Any]] = (),
        nominated: Mapping[str, str] | None = None,
        volumes: VolumeRead | None = None,
        namespaces_raw: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """What a pod's translation reads beside the pod: PriorityClasses, the daemon's
        nominations, the storage objects and the namespaces' labels."""
        self.volumes = volumes
        self.nominated = nominated or {}
        # Namespace labels, for the namespaceSelector of pod (anti-)affinity terms.
        self.namespace_labels = namespace_labels(namespaces_raw)
        classes = list(priority_classes)
        self.priority_of = {c["metadata"]["name"]: int(c.get("value", 0)) for c in classes}
        self.default_priority = max(
            (int(c.get("value", 0)) for c in classes if c.get("globalDefault")), default=0
        )

    def gang_of(
        self,
        pod: Mapping[str, Any],
        ns: str,
        labels: Mapping[str, str],
        groups: PodGroups,
    ) -> tuple[str, int | None]:
        """The pod's gang id, and a PodGroup's or owning workload's minimum (a label gang's
        size is read later, from all its pods at once). A PodGroup and the gpufair.io/gang
        label win over the owner chain; `last_workload` and `last_reads` say what it found."""
        obj = f"pod {pod_key(pod)}"
        self.last_workload = None
        self.last_reads = ()
        group = labels.get(POD_GROUP_LABEL)
        if group:
            pg = groups.get(f"{ns}/{group}")
            if pg is None:
                raise InvalidInput(
                    obj,
                    f"labels.{POD_GROUP_LABEL}",
                    f"PodGroup {ns}/{group} does not exist",
                    "create the PodGroup (its minMember says how many pods start together)",
                )
            raw = (pg.get("spec") or {}).get("minMember", 1)
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                raise InvalidInput(
                    f"PodGroup {ns}/{group}", "spec.minMember", f"{raw!r} is not a count", "set 1 or more"
                )
            return f"{ns}/{PODGROUP_GANG}{group}", raw
        gang = labels.get(GANG_LABEL)
        if gang:
            return f"{ns}/{LABEL_GANG}{gang}", None
        if not candidate(pod):
            return f"{ns}/{pod['metadata']['name']}", None
        reading = Reading(self.owners, timestamp)
        self.last_reads = reading.reads  # filled as it reads, so a refusal still names them
        found = recognise(pod, ns, pod_key(pod), reading)
        if found is not None:
            self.last_workload = found
            return found.gid, found.min_member
        return f"{ns}/{pod['metadata']['name']}", None

    @staticmethod
    def _label_gang_size(gid: str, p: _GangParts) -> int:
        """The gang-size every pod of a gpufair.io/gang gang gives; a missing, unreadable or
        disagreeing one makes the whole gang wait with the reason (never a guess)."""
        obj, path = f"gang {gid}", f"annotations.{GANG_SIZE}"
        missing = sorted(k for k, raw in p.sizes.items() if raw is None)
        if missing:
            raise InvalidInput(
                obj,
                path,
                f"missing on pod {_few(missing)} labelled {GANG_LABEL}={p.label}",
                f"add the annotation {GANG_SIZE}: '<number of pods that start together>' to every "
                "pod of the gang",
            )
        on: dict[int, list[str]] = defaultdict(list)
        for key, raw in sorted(p.sizes.items()):
            assert raw is not None
            try:
                size = int(raw)
            except ValueError:
                size = 0
            if size < 1 or str(size) != raw.strip():
                raise InvalidInput(
                    obj, path, f"{raw!r} on pod {key} is not a whole number >= 1", "write e.g. '4'"
                )
            on[size].append(key)
        if len(on) > 1:
            said = "; ".join(f"{size} on {_few(keys)}" for size, keys in sorted(on.items()))
            raise InvalidInput(
                obj,
                path,
                f"the gang's pods disagree on its size ({said})",
                f"give every pod labelled {GANG_LABEL}={p.label} the same {GANG_SIZE}",
            )
        return next(iter(on))

    def _priority(self, spec: Mapping[str, Any]) -> int:
        """The admission plugin copies the PriorityClass value into spec.priority; a pod
        created before its class existed falls back to the class, then the global default."""
        if spec.get("priority") is not None:
            return int(spec["priority"])
        name = spec.get("priorityClassName")
        if name in self.priority_of:
            return self.priority_of[name]
        return self.default_priority

    def _requests(self, obj: Mapping[str, Any], key: str) -> tuple[int, int, int, Extras]:
        try:
            return pod_resources(obj)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise InvalidInput(
                f"pod {key}",
                "spec.containers[].resources",
                f"unreadable quantity ({exc})",
                "write quantities such as '4', '500m' or '16Gi'",
            ) from exc

    def foreign(self, obj: Mapping[str, Any], key: str, node: str) -> Gang:
        gpus, cpu, mem, extras = self._requests(obj, key)
        start = timestamp(obj.get("status", {}).get("startTime")) or 0.0
        ns = obj["metadata"].get("namespace", "default")
        pod = Pod(
            key,
            gpus=gpus,
            cpu_milli=cpu,
            memory_mib=mem,
            node=node,
            start_s=start,
            extras=extras,
            mig_milli=self.mig.charge_milli(extras, node),
            labels=pod_labels(obj),
            namespace=ns,
        )
        terms, _ = pod_terms(obj, self.namespace_labels)  # its ports and anti-affinity bind others
        return Gang(f"{key}#other", "", (pod,), evictable=False, terms=(terms,) if terms else ())

    def _gang(self, gid: str, p: _GangParts, node_names: set[str], pdbs: list[Mapping[str, Any]]) -> Gang:
        min_member = self._label_gang_size(gid, p) if p.label is not None else p.min_member
        parts = []
        for obj in sorted(p.pods, key=lambda o: o["metadata"]["name"]):
            bound = obj.get("spec", {}).get("nodeName") is not None
            parts.append(self.pod_part(obj, p.namespace, node_names, bound and protected_by_pdb(obj, pdbs)))
        return self.assemble(gid, p.namespace, min_member, parts, p.workload)

    def pod_part(
        self, obj: Mapping[str, Any], ns: str, node_names: Container[str], protected: bool
    ) -> PodPart:
        """One of our pods translated (`protected`: a PodDisruptionBudget at 0 covers it)."""
        meta, spec = obj["metadata"], obj.get("spec", {})
        key = pod_key(obj)
        selector = spec.get("nodeSelector") or {}
        gpus, cpu, mem, extras = self._requests(obj, key)
        node = spec.get("nodeName")
        bound = node is not None
        start = None
        if bound:
            start = bound_since(obj)
        held = None if bound else self.nominated.get(key)
        own_terms, unread = pod_terms(obj, self.namespace_labels)
        c = None
        if not bound:
            c = pod_constraints(obj, self.volumes)
            if unread:  # a term it states but gpufair cannot read: it waits, naming it
                c = c or PodConstraints()
                c = replace(c, unsupported=tuple(sorted({*c.unsupported, *unread})))
        pod = Pod(
            key,
            gpus=gpus,
            cpu_milli=cpu,
            memory_mib=mem,
            node=node,
            start_s=start,
            nominated_node=held,
            extras=extras,
            # A bound pod's slices by its node's GPU model; a pending one's by the
            # dearest node that offers them (mig.py).
            mig_milli=self.mig.charge_milli(extras, node if node in node_names else None),
            labels=pod_labels(obj),
            namespace=ns,
        )
        return PodPart(
            key=key,
            name=meta["name"],
            annotations=meta.get("annotations") or {},
            priority=self._priority(spec),
            created=timestamp(meta.get("creationTimestamp")),
            model=selector.get(GPU_MODEL_LABEL) or selector.get(GPU_PRODUCT_LABEL),
            pod=pod,
            blocks_eviction=bound and bool(meta.get("deletionTimestamp") or protected),
            constraint=c,
            pending=not bound,
            terms=own_terms,
        )

    def assemble(
        self,
        gid: str,
        ns: str,
        min_member: int | None,
        parts: Iterable[PodPart],
        workload: Workload | None = None,
    ) -> Gang:
        """The gang from its pods' parts, in pod-name order; InvalidInput for a bad
        annotation. An owning workload gives the gang's age and, unless a pod annotation
        says otherwise, its required topology level."""
        parts = list(parts)
        if workload is not None and workload.exclusive_jobs:
            to_come = followers_to_come(parts, workload.exclusive_jobs)
            parts.extend(to_come)
            if min_member is not None:
                min_member += len(to_come)
        pods: list[Pod] = []
        constraints: set[PodConstraints | None] = set()
        priority: int | None = None
        submit = math.inf
        evictable = True
        annotations: dict[str, str] = {}
        models: set[str] = set()
        terms: list[PodTerms | None] = []
        for part in parts:
            for k, v in part.annotations.items():
                annotations.setdefault(k, v)
            priority = part.priority if priority is None else max(priority, part.priority)
            submit = min(submit, part.created or 0.0)
            if part.model:
                models.add(part.model)
            if part.blocks_eviction:
                evictable = False
            terms.append(part.terms)
            if part.pending:
                constraints.add(part.constraint)
            pods.append(part.pod)
        obj_name = f"gang {gid}"
        min_runtime = checkpoint = None
        if MIN_RUNTIME in annotations:
            min_runtime = parse_duration(annotations[MIN_RUNTIME], obj_name, f"annotations.{MIN_RUNTIME}")
        if CHECKPOINT in annotations:
            checkpoint = parse_duration(annotations[CHECKPOINT], obj_name, f"annotations.{CHECKPOINT}")
        required = _annotation(annotations, TOPOLOGY_REQUIRED)
        if workload is not None:
            required = required or workload.topology_required
            if workload.submit_s is not None:
                submit = workload.submit_s
        return Gang(
            id=gid,
            team=self.team_of_ns.get(ns, ""),
            pods=tuple(pods),
            priority=priority or 0,
            min_member=min_member,
            submit_s=submit if math.isfinite(submit) else 0.0,
            gpu_models=frozenset(models),
            topology_required=required,
            topology_preferred=_annotation(annotations, TOPOLOGY_PREFERRED),
            min_runtime_s=min_runtime,
            checkpoint_s=checkpoint,
            evictable=evictable,
            # By repr: a pod without required affinity (None) and one with it do not compare.
            constraints=tuple(sorted((c for c in constraints if c is not None), key=repr)),
            terms=tuple(terms) if any(t is not None for t in terms) else (),
        )


JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
JOB_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
FOLLOWER_TO_COME = "~follower-to-come-"  # in a stand-in's name; no pod name has "~"


def followers_to_come(parts: list[PodPart], exclusive_jobs: tuple[tuple[str, int], ...]) -> list[PodPart]:
    """Stand-ins for the followers of each pending exclusive Job leader, as many as its Job
    has pods still to be made: JobSet makes them only once the leader is bound, and binding
    a leader where its followers do not fit would hold its GPUs for a gang that cannot run.
    A stand-in is the leader's pod (same shape, labels, affinity and constraints) under a
    name no pod has, so it counts in the placement and its bind goes nowhere."""
    per_job = dict(exclusive_jobs)
    made: dict[str, int] = defaultdict(int)
    leaders: dict[str, PodPart] = {}
    for part in parts:
        labels = dict(part.pod.labels)
        job = labels.get(JOB_NAME_LABEL)
        if job is None or labels.get(REPLICATED_JOB_LABEL) not in per_job:
            continue
        made[job] += 1
        if labels.get(JOB_INDEX_LABEL) == "0" and part.pending:
            leaders[job] = part
    out = []
    for job, leader in sorted(leaders.items()):
        want = per_job[dict(leader.pod.labels)[REPLICATED_JOB_LABEL]]
        for i in range(1, want - made[job] + 1):
            key = f"{leader.key}{FOLLOWER_TO_COME}{i}"
            name = key.split("/", 1)[-1]
            out.append(replace(leader, key=key, name=name, pod=replace(leader.pod, name=key)))
    return out


def namespace_labels(namespaces_raw: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    return {n["metadata"]["name"]: dict(n["metadata"].get("labels") or {}) for n in namespaces_raw}


def _few(keys: list[str], shown: int = 3) -> str:
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more
