"""What the simulator reads (jobs of a trace) and what one replay produces (a RunResult).

These records are the contracts between the trace readers, the event engine and the
report; each of those lives in its own module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.core.constraints import PodConstraints
from scheduler.core.errors import InvalidInput
from scheduler.core.model import Team

TIERS = ("production", "training", "scavenger")


class TraceError(InvalidInput):
    """A bad trace row: names the file, the row (1-based, header is row 1) and the column."""

    def __init__(self, path: str, row: int, column: str, problem: str, fix: str) -> None:
        self.path = path
        self.row = row
        self.column = column
        super().__init__(f"{path}, row {row}", column, problem, fix)


@dataclass(frozen=True, slots=True)
class Job:
    """One job of a trace: `pods` pods that start together (a gang) and run `duration_s`.

    Per pod: `gpus_per_pod` whole GPUs, or `gpu_milli` thousandths of one shared GPU
    (then `gpus_per_pod` is 0), and `cpu_milli`/`memory_mib`. `gpu_models` lists the
    GPU models the job may run on (empty: any). `constraints`: every pod's nodeSelector,
    tolerations and required node affinity, as the daemon reads them from a pod (None: none).
    """

    job_id: str
    submit_s: float
    duration_s: float
    pods: int
    gpus_per_pod: int
    team: str
    tier: str = "training"
    gpu_milli: int = 0
    gpu_models: tuple[str, ...] = ()
    cpu_milli: int = 0
    memory_mib: int = 0
    topology_required: str | None = None
    topology_preferred: str | None = None
    min_runtime_s: float | None = None
    checkpoint_s: float | None = None
    constraints: PodConstraints | None = None

    @property
    def gpus(self) -> float:
        """GPUs of the whole job, a shared GPU counting as its fraction."""
        return self.pods * (self.gpus_per_pod + self.gpu_milli / 1000.0)


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    jobs: tuple[Job, ...]
    skipped: tuple[str, ...] = ()  # one line per row left out on purpose, with why
    epoch_s: float = 0.0  # UTC epoch seconds of the trace's time 0 (for calendar budget periods)


@dataclass(slots=True)
class JobRecord:
    """What happened to one job in one replay. Times are seconds from the trace's epoch;
    `start_s` and `end_s` are NaN when the job never started or never finished."""

    job_id: str
    team: str
    tier: str
    gpus: float
    submit_s: float
    start_s: float = math.nan  # first start
    end_s: float = math.nan
    preemptions: int = 0
    lost_gpu_hours: float = 0.0
    nodes: tuple[str, ...] = ()  # the node of each pod at its latest start

    @property
    def wait_s(self) -> float:
        """Time from submission to first start (NaN if it never started)."""
        return self.start_s - self.submit_s


@dataclass(frozen=True, slots=True)
class Sample:
    """The cluster at one moment of a replay; samples are taken after every decision
    cycle and hold until the next one (so time-weighting uses the gap to the next)."""

    t: float
    allocated: dict[str, float]  # GPUs each team holds, all tiers
    fair_share: dict[str, float]  # the core's fair share of training capacity
    demand: dict[str, float]  # GPUs each team's running plus waiting jobs ask for
    busy_gpus: float
    fragmented_gpus: float  # free GPUs the waiting work's shapes cannot use (FGD measure)
    budget_used: dict[str, float]  # GPU-hours used in the current period
    healthy_gpus: float


@dataclass(slots=True)
class RunResult:
    """One policy's replay of one trace."""

    policy: str
    trace: str
    gpus: int  # GPUs of the cluster (healthy or not)
    jobs: list[JobRecord]
    samples: list[Sample]
    budgets: dict[str, float | None]  # GPU-hours per period, None for no budget
    teams: tuple[Team, ...] = ()  # weights, floors and caps, for the entitled shares
    wall_seconds: float = 0.0
