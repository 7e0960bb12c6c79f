"""What the decision core sees (a snapshot) and what it answers (decisions).

Everything here is immutable and plain: the daemon builds it from the API server's cache,
the simulator from its virtual cluster. Field checks that need no other object happen at
construction, so a bad object is refused where it is made, with its name in the message.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.core.constraints import PodConstraints, Taint, Toleration
from scheduler.core.errors import InvalidInput
from scheduler.core.podterms import PodTerms

MILLI_PER_GPU = 1000
MIG_PREFIX = "nvidia.com/mig-"  # MIG slices under the device plugin's mixed strategy

# Resources beyond CPU, memory and nvidia.com/gpu (ephemeral-storage, hugepages-*, rdma/ib,
# nvidia.com/mig-*, ...): (name, amount in the resource's base unit), sorted by name.
Extras = tuple[tuple[str, int], ...]
# Kept in their own fields, never among the extras.
CORE_RESOURCES = frozenset({"cpu", "memory", "nvidia.com/gpu", "pods"})

# Bounds of a team's numbers (the GPUTeam CRD declares the same): within them the fair-share
# arithmetic (ratios of weights, squared ratios in Jain's index) stays finite.
MIN_WEIGHT, MAX_WEIGHT = 0.001, 1e6
MAX_TEAM_GPUS = 1e6  # guaranteedGPUs and maxGPUs
MAX_GPU_HOURS = 1e12  # a budget per period


class Tier(enum.IntEnum):
    """Who may preempt whom: a higher tier may evict a lower one, never the reverse."""

    SCAVENGER = 0
    TRAINING = 1
    PRODUCTION = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class OnExhausted(enum.StrEnum):
    SCAVENGE = "scavenge"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class Budget:
    """GPU-hours a team may use per period.

    `period` is 'week' (ISO week, Monday 00:00 UTC), 'month' (calendar month, UTC) or a
    fixed length in seconds (`period_seconds`) counted from `anchor_s` (default: epoch).
    """

    gpu_hours: float
    period: str = "month"
    on_exhausted: OnExhausted = OnExhausted.SCAVENGE
    period_seconds: float | None = None
    anchor_s: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.gpu_hours) or self.gpu_hours < 0:
            raise InvalidInput(
                "budget",
                "gpuHours",
                f"{self.gpu_hours!r} is not a usable amount",
                "give a number of GPU-hours >= 0",
            )
        if self.period not in ("week", "month", "duration"):
            raise InvalidInput(
                "budget",
                "period",
                f"unknown period {self.period!r}",
                "use 'week', 'month' or a duration such as '30d'",
            )
        if self.period == "duration" and not (self.period_seconds and self.period_seconds > 0):
            raise InvalidInput(
                "budget",
                "period",
                "a fixed period needs a length above zero",
                "use a duration such as '30d'",
            )


@dataclass(frozen=True, slots=True)
class Team:
    """A GPUTeam: its weight in fair share, floor, cap, budget and namespaces."""

    name: str
    weight: float = 1.0
    guaranteed_gpus: float = 0.0
    max_gpus: float | None = None
    budget: Budget | None = None
    namespaces: tuple[str, ...] = ()
    min_runtime_s: float = 0.0
    # The production tier is the platform's to grant: whether the team may run it, and at
    # most how many GPUs of it at once (None: no cap). A GPUTeam manifest without
    # spec.production grants nothing; this default is for callers that build teams in code.
    production_allowed: bool = True
    production_max_gpus: float | None = None
    # The team's node pool (spec.nodePool): its pods use only nodes with these labels, with
    # these tolerations added; `dedicated`: those nodes are for this team's pods alone.
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    dedicated: bool = False
    parent: str | None = None  # spec.parent: the group (department) this team belongs to

    def __post_init__(self) -> None:
        obj = f"GPUTeam {self.name!r}"
        if self.dedicated and not self.node_selector:
            raise InvalidInput(
                obj,
                "spec.nodePool.dedicated",
                "a dedicated pool needs the nodeSelector that says which nodes it is",
                "set spec.nodePool.nodeSelector, e.g. {pool: secure}",
            )
        if self.production_max_gpus is not None and not (
            math.isfinite(self.production_max_gpus) and 0 <= self.production_max_gpus <= MAX_TEAM_GPUS
        ):
            raise InvalidInput(
                obj,
                "spec.production.maxGPUs",
                f"{self.production_max_gpus!r} is not 0 or more",
                f"set maxGPUs from 0 to {MAX_TEAM_GPUS:.0f}, or leave it out for no cap",
            )
        if not self.name:
            raise InvalidInput("GPUTeam", "metadata.name", "empty name", "give the team a name")
        if not MIN_WEIGHT <= self.weight <= MAX_WEIGHT:  # also refuses NaN
            problem = "is not a positive weight" if not self.weight > 0 else "is outside the allowed range"
            raise InvalidInput(
                obj,
                "spec.weight",
                f"{self.weight!r} {problem}",
                f"set a weight above 0, from {MIN_WEIGHT:g} to {MAX_WEIGHT:.0f} (1 is the default)",
            )
        if not 0 <= self.guaranteed_gpus <= MAX_TEAM_GPUS:
            raise InvalidInput(
                obj,
                "spec.guaranteedGPUs",
                f"{self.guaranteed_gpus!r} {_gpus_problem(self.guaranteed_gpus)}",
                f"set guaranteedGPUs to 0 or more, at most {MAX_TEAM_GPUS:.0f}",
            )
        if self.max_gpus is not None:
            if not 0 <= self.max_gpus <= MAX_TEAM_GPUS:
                raise InvalidInput(
                    obj,
                    "spec.maxGPUs",
                    f"{self.max_gpus!r} {_gpus_problem(self.max_gpus)}",
                    f"set maxGPUs from 0 to {MAX_TEAM_GPUS:.0f}, or leave it out for no cap",
                )
            if self.max_gpus < self.guaranteed_gpus:
                raise InvalidInput(
                    obj,
                    "spec.maxGPUs",
                    f"maxGPUs {self.max_gpus:g} is below guaranteedGPUs {self.guaranteed_gpus:g}",
                    "raise maxGPUs or lower guaranteedGPUs",
                )
        if self.min_runtime_s < 0:
            raise InvalidInput(obj, "spec.minRuntime", "negative", "use a duration such as '15m'")
        if self.budget is not None and self.budget.gpu_hours > MAX_GPU_HOURS:
            raise InvalidInput(
                obj,
                "spec.budget.gpuHours",
                f"{self.budget.gpu_hours:g} is above the largest budget",
                f"give at most {MAX_GPU_HOURS:g} GPU-hours per period, or leave the budget out",
            )


def _check_extras(obj: str, field: str, extras: Extras, least: int) -> None:
    """Sorted, distinct names outside CORE_RESOURCES, whole amounts of at least `least`."""
    names = [n for n, _ in extras]
    if names != sorted(set(names)):
        raise InvalidInput(
            obj, field, "resource names repeat or are out of order", "list each resource once, by name"
        )
    for name, amount in extras:
        if not name or name in CORE_RESOURCES:
            raise InvalidInput(
                obj,
                field,
                f"{name!r} is not an extra resource",
                "give cpu, memory, GPUs and pods their own fields",
            )
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < least:
            raise InvalidInput(
                obj,
                f"{field}[{name}]",
                f"{amount!r} is not a whole amount of at least {least}",
                "give the amount in the resource's base unit (bytes, devices)",
            )


def _gpus_problem(value: float) -> str:
    return "is negative" if value < 0 else f"is not a number of GPUs up to {MAX_TEAM_GPUS:.0f}"


@dataclass(frozen=True, slots=True)
class TeamUsage:
    """What the shell knows of a team: decayed history and this period's use (the ledger),
    and GPUs its pods hold that node telemetry reports idle (the node agents)."""

    decayed_gpu_seconds: float = 0.0
    period_gpu_hours: float = 0.0
    idle_gpus: float = 0.0


@dataclass(frozen=True, slots=True)
class Node:
    """A node as the scheduler may use it.

    `labels` carry the topology path (see PolicyConfig.topology_levels). GPUs listed in
    `unhealthy_gpus` (by index) are never given out. `extras` is the allocatable amount of
    every other resource it advertises; `max_pods` how many pods it takes (None: no limit);
    `gpu_memory_mib` one GPU's memory, for the size of its MIG slices (0: from the model).
    """

    name: str
    gpus: int
    cpu_milli: int
    memory_mib: int
    gpu_model: str = ""
    unhealthy_gpus: frozenset[int] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)
    schedulable: bool = True
    taints: tuple[Taint, ...] = ()
    # Cordoned (spec.unschedulable) but otherwise ready: only a pod that tolerates the
    # node.kubernetes.io/unschedulable:NoSchedule taint may use it (schedulable is then False).
    cordoned: bool = False
    extras: Extras = ()
    max_pods: int | None = None
    gpu_memory_mib: int = 0

    def __post_init__(self) -> None:
        obj = f"node {self.name!r}"
        if not self.name:
            raise InvalidInput("node", "metadata.name", "empty name", "give the node a name")
        if self.extras:
            _check_extras(obj, "status.allocatable", self.extras, 0)
        if self.max_pods is not None and self.max_pods < 0:
            raise InvalidInput(obj, "status.allocatable[pods]", "negative pod count", "report 0 or more")
        if self.gpus < 0:
            raise InvalidInput(obj, "nvidia.com/gpu", "negative GPU count", "report 0 or more")
        if self.cpu_milli < 0 or self.memory_mib < 0:
            raise InvalidInput(obj, "allocatable", "negative CPU or memory", "report 0 or more")
        bad = [i for i in self.unhealthy_gpus if not 0 <= i < self.gpus]
        if bad:
            raise InvalidInput(
                obj,
                "unhealthy_gpus",
                f"indices {sorted(bad)} are outside 0..{self.gpus - 1}",
                "list GPU indices the node has",
            )

    @property
    def healthy_gpus(self) -> int:
        return self.gpus - len(self.unhealthy_gpus)


@dataclass(frozen=True, slots=True)
class Pod:
    """One pod of a gang.

    A pod asks for `gpus` whole GPUs, or for `gpu_milli` thousandths of one shared GPU
    (then `gpus` is 0). A bound pod has `node`, `start_s` and, when known, the indices of
    the GPUs it holds (needed for shared GPUs; whole GPUs are interchangeable).

    `extras` are its requests of every other resource, as the kubelet counts them. A pod
    that asks for MIG slices (`nvidia.com/mig-*`) is charged `mig_milli` thousandths of a
    GPU for them in fair share and budgets, as the shell works it out with
    `scheduler.core.mig` from the profile and the GPU model (see docs/mig.md).

    A pending pod may carry `nominated_node`: the node a previous cycle evicted victims
    on to make room for it. Only the shell sets it, from the decisions it carried out
    (never from anything a user can write), so a pod cannot use it to jump the queue.
    """

    name: str
    gpus: int = 0
    gpu_milli: int = 0
    cpu_milli: int = 0
    memory_mib: int = 0
    node: str | None = None
    gpu_indices: tuple[int, ...] = ()
    start_s: float | None = None
    nominated_node: str | None = None
    extras: Extras = ()
    mig_milli: int = 0
    # What other pods' affinity, anti-affinity and spread selectors match it by (sorted
    # label items, so a pod stays hashable); read only when some pod states such terms.
    labels: tuple[tuple[str, str], ...] = ()
    namespace: str = ""

    def __post_init__(self) -> None:
        obj = f"pod {self.name!r}"
        if self.extras or self.mig_milli:
            self._check_resources(obj)
        if self.gpus < 0:
            raise InvalidInput(obj, "nvidia.com/gpu", "negative GPU request", "request 0 or more")
        if not 0 <= self.gpu_milli < MILLI_PER_GPU:
            raise InvalidInput(
                obj,
                "gpu_milli",
                f"{self.gpu_milli} is outside 0..999",
                "ask for a share of one GPU in thousandths, or for whole GPUs",
            )
        if self.gpu_milli and self.gpus:
            raise InvalidInput(
                obj,
                "gpu_milli",
                "a pod asks for whole GPUs or a share of one, not both",
                "set gpus to 0 for a shared GPU, or drop gpu_milli",
            )
        if self.cpu_milli < 0 or self.memory_mib < 0:
            raise InvalidInput(obj, "resources.requests", "negative CPU or memory", "request 0 or more")

    def _check_resources(self, obj: str) -> None:
        _check_extras(obj, "resources.requests", self.extras, 1)
        slices = any(name.startswith(MIG_PREFIX) for name, _ in self.extras)
        if slices != (self.mig_milli > 0) or self.mig_milli < 0:
            raise InvalidInput(
                obj,
                "mig_milli",
                f"{self.mig_milli} for {'MIG slices' if slices else 'no MIG slice'}",
                "charge a pod that asks for nvidia.com/mig-* slices what scheduler.core.mig.charge_milli "
                "gives, and any other pod 0",
            )

    @property
    def gpu_amount(self) -> float:
        """GPUs this pod is charged for, a share or a MIG slice counting as a fraction."""
        return self.gpus + (self.gpu_milli + self.mig_milli) / MILLI_PER_GPU

    @property
    def bound(self) -> bool:
        return self.node is not None


@dataclass(frozen=True, slots=True)
class Gang:
    """Pods that start together or not at all (a PodGroup, or a single pod alone).

    `team` is resolved by the shell from the pod's namespace, never from the pod's own
    labels. `min_member` defaults to every pod. Topology levels name node labels.
    """

    id: str
    team: str
    pods: tuple[Pod, ...]
    priority: int = 0
    min_member: int | None = None
    submit_s: float = 0.0
    gpu_models: frozenset[str] = frozenset()
    topology_required: str | None = None
    topology_preferred: str | None = None
    min_runtime_s: float | None = None
    checkpoint_s: float | None = None
    evictable: bool = True
    # The distinct node constraints of its pods (nodeSelector, node affinity, tolerations,
    # and what gpufair does not honour yet); its pods may use a node only if every one allows it.
    constraints: tuple[PodConstraints, ...] = ()
    # Per pod (aligned with `pods`), what of its spec depends on the other pods: host ports,
    # required pod (anti-)affinity, topology spread (podterms.py). Empty when no pod states
    # any (the usual case); a running pod keeps its ports and anti-affinity here.
    terms: tuple[PodTerms | None, ...] = ()

    def __post_init__(self) -> None:
        obj = f"gang {self.id!r}"
        if self.terms and len(self.terms) != len(self.pods):
            raise InvalidInput(
                obj, "terms", f"{len(self.terms)} entries for {len(self.pods)} pods", "give one per pod"
            )
        if not self.pods:
            raise InvalidInput(
                obj, "pods", "a gang with size 0", "give the gang at least one pod (gang-size >= 1)"
            )
        if self.min_member is not None and self.min_member < 1:
            raise InvalidInput(
                obj, "minMember", f"{self.min_member} is below 1", "set minMember to 1 or more"
            )
        if self.min_runtime_s is not None and self.min_runtime_s < 0:
            raise InvalidInput(obj, "gpufair.io/min-runtime", "negative", "use a duration such as '15m'")
        if self.checkpoint_s is not None and self.checkpoint_s <= 0:
            raise InvalidInput(
                obj, "checkpoint", "must be above 0", "leave it out if the job does not checkpoint"
            )
        names = [p.name for p in self.pods]
        if len(set(names)) != len(names):
            raise InvalidInput(obj, "pods", "two pods share a name", "give each pod its own name")

    @property
    def required_members(self) -> int:
        return self.min_member if self.min_member is not None else len(self.pods)

    @property
    def gpu_amount(self) -> float:
        return sum(p.gpu_amount for p in self.pods)

    @property
    def bound_pods(self) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.node is not None)

    @property
    def pending_pods(self) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.node is None)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole input of one decision cycle. `now_s` is seconds since the epoch (UTC)."""

    now_s: float
    nodes: tuple[Node, ...]
    teams: tuple[Team, ...]
    gangs: tuple[Gang, ...]
    usage: Mapping[str, TeamUsage] = field(default_factory=dict)


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Bind:
    pod: str
    gang: str
    node: str
    gpu_indices: tuple[int, ...]
    tier: Tier


@dataclass(frozen=True, slots=True)
class Eviction:
    """Evict `pod` (its whole gang goes) so that `preemptor` can run."""

    pod: str
    gang: str
    node: str
    preemptor: str
    kind: str  # 'production', 'reclaim' or 'scavenger'
    reason: str
    victim_tier: Tier
    preemptor_tier: Tier


@dataclass(frozen=True, slots=True)
class Pending:
    """Why a gang still waits. `code` is stable for machines; `reason` is for people."""

    gang: str
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class TeamStatus:
    team: str
    weight: float
    fair_share_gpus: float
    allocated_gpus: float  # training GPUs held, the amount compared with the fair share
    production_gpus: float
    scavenger_gpus: float
    demand_gpus: float
    pending_pods: int
    fairshare_factor: float
    budget_gpu_hours: float | None
    budget_used_gpu_hours: float
    budget_left_gpu_hours: float | None
    budget_exhausted: bool
    budget_resets_s: float | None
    idle_gpus: float = 0.0  # held but idle, as telemetry reports it
    # The tree (teamtree.py): 'org/dept/team', and the team whose budget, on the path
    # from this one up, is exhausted first ("" for none). A group's figures are its subtree's.
    path: str = ""
    budget_exhausted_at: str = ""
    group: bool = False


@dataclass(frozen=True, slots=True)
class Decisions:
    binds: tuple[Bind, ...]
    evictions: tuple[Eviction, ...]
    pending: Sequence[Pending]  # a tuple, or a LazyPending that reads the same
    teams: Mapping[str, TeamStatus]
    nominations: Mapping[str, str] = field(default_factory=dict)

    def pending_reason(self, gang_id: str) -> Pending | None:
        for p in self.pending:
            if p.gang == gang_id:
                return p
        return None
