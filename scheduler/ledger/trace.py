"""The ledger's gang history as a replayable trace: native trace rows plus a ClusterSpec.

`history_trace` turns the gangs submitted in a window into `simulator.model.Job`s, with
times in seconds from the window's start (the trace's epoch), and the nodes seen in the
window into a ClusterSpec document. How each job's duration is reconstructed (the rules
docs/whatif.md explains):

- the job's work is its last run's length, from its pods' start to its end (succeeded,
  failed, deleted or evicted); a run still going at the cut (the export instant, or
  `until`) is cut there;
- an earlier run that was evicted adds the work its checkpoints saved (whole checkpoint
  intervals of that run, when the gang declares `checkpoint_s`), since a replay restarts
  an evicted job from its last checkpoint, as the job did; without a checkpoint interval
  the earlier runs' work was lost and the last run is the whole job;
- a gang that never started by the cut is left out (its duration is unknown), and listed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from scheduler.core.config import API_VERSION
from scheduler.core.errors import InvalidInput
from scheduler.core.model import Node
from scheduler.ledger.history import HistoryGang, HistoryNode, HistoryRun, read_history
from scheduler.ledger.store import Ledger
from simulator.cluster_spec import TOPOLOGY_LABELS, load_cluster_spec
from simulator.model import Job, Trace
from simulator.traces import write_native


def parse_instant(text: str, what: str) -> float:
    """UTC epoch seconds of an ISO date or date-time (a date is its midnight, UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(
            "trace export", what, f"{text!r} is not a date", "give e.g. 2026-11-01 or 2026-11-01T08:00Z"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class HistoryTrace:
    """The window as a trace, the cluster it ran on, and the gangs left out (one line each)."""

    trace: Trace
    cluster_spec: dict[str, Any]
    left_out: tuple[str, ...] = ()
    outcomes: dict[str, str] = field(default_factory=dict)  # job id -> how it ended ('' open)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return load_cluster_spec(yaml.safe_dump(self.cluster_spec), "exported")


def _saved(run: HistoryRun, checkpoint_s: float | None) -> float:
    if not checkpoint_s or checkpoint_s <= 0 or run.end_s is None:
        return 0.0
    return math.floor((run.end_s - run.start_s) / checkpoint_s) * checkpoint_s


def job_duration(runs: Sequence[HistoryRun], checkpoint_s: float | None, cut_s: float) -> float | None:
    """The work of a job from its runs (oldest first), as the module docstring says; None if
    it had no run before `cut_s`."""
    before = [r for r in runs if r.start_s < cut_s]
    if not before:
        return None
    last = before[-1]
    end = cut_s if last.end_s is None or last.end_s > cut_s else last.end_s
    return max(0.0, end - last.start_s) + sum(_saved(r, checkpoint_s) for r in before[:-1])


def _job(g: HistoryGang, duration: float, epoch_s: float) -> Job:
    return Job(
        job_id=g.gang_id,
        submit_s=max(0.0, g.submit_s - epoch_s),
        duration_s=duration,
        pods=max(1, g.pods),
        gpus_per_pod=g.gpus_per_pod,
        team=g.team,
        tier=g.tier,
        gpu_milli=g.gpu_milli,
        gpu_models=tuple(m for m in g.gpu_model.split("|") if m),
        cpu_milli=g.cpu_milli,
        memory_mib=g.memory_mib,
        topology_required=g.topology_required or None,
        topology_preferred=g.topology_preferred or None,
        min_runtime_s=g.min_runtime_s,
        checkpoint_s=g.checkpoint_s,
    )


def cluster_spec(nodes: Iterable[HistoryNode], name: str = "ledger") -> dict[str, Any]:
    """A ClusterSpec of node groups: nodes of one shape and the same non-topology labels are
    one group (the simulator cables its own leaves and spines; taints are not recorded)."""
    import json

    groups: dict[tuple, int] = {}
    for n in nodes:
        labels = {k: v for k, v in json.loads(n.labels or "{}").items() if k not in TOPOLOGY_LABELS}
        key = (n.gpus, n.gpu_model, n.cpu_milli, n.memory_mib, tuple(sorted(labels.items())))
        groups[key] = groups.get(key, 0) + 1
    body = []
    for i, ((gpus, model, cpu, mem, labels), count) in enumerate(groups.items()):
        group: dict[str, Any] = {
            "name": f"g{i}",
            "count": count,
            "gpusPerNode": gpus,
            "cpuMilli": cpu,
            "memoryMiB": mem,
        }
        if gpus or model:
            group["gpuModel"] = model or "unknown"
        if labels:
            group["labels"] = dict(labels)
        body.append(group)
    return {"apiVersion": API_VERSION, "kind": "ClusterSpec", "metadata": {"name": name}, "groups": body}


def history_trace(
    ledger: Ledger, since_s: float, until_s: float | None = None, now_s: float | None = None
) -> HistoryTrace:
    """Gangs submitted in [since_s, until_s) as a trace whose epoch is `since_s`; runs going
    on at the cut (`until_s`, else `now_s`, else the ledger's last accrual) are cut there."""
    cut = until_s if until_s is not None else now_s
    if cut is None:
        cut = ledger.checkpoint("last_accrual_s") or datetime.now(UTC).timestamp()
    if not cut > since_s:
        raise InvalidInput("trace export", "--until", "is not after --since", "give a later --until")
    gangs, runs, nodes = read_history(ledger.engine, since_s, cut)
    jobs, left_out, outcomes = [], [], {}
    for g in gangs:
        duration = job_duration(runs.get(g.gang_id, []), g.checkpoint_s, cut)
        if duration is None:
            left_out.append(f"gang {g.gang_id}: never started before the cut, its duration is unknown")
            continue
        jobs.append(_job(g, duration, since_s))
        outcomes[g.gang_id] = g.outcome if g.end_s is not None and g.end_s <= cut else ""
    stamp = datetime.fromtimestamp(since_s, UTC).strftime("%Y-%m-%dT%H%M%SZ")
    trace = Trace(name=f"ledger-{stamp}", jobs=tuple(jobs), epoch_s=since_s)
    return HistoryTrace(trace, cluster_spec(nodes), tuple(left_out), outcomes)


def spec_path_for(out: Path) -> Path:
    """Where the cluster spec goes beside a trace file: `NAME.cluster.yaml`."""
    return out.with_name(out.name.split(".", 1)[0] + ".cluster.yaml")


def export(history: HistoryTrace, out: Path) -> tuple[Path, Path]:
    """Writes the trace (Parquet for .parquet/.pq, else CSV) and the cluster spec beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_native(history.trace.jobs, out)
    spec = spec_path_for(out)
    spec.write_text(yaml.safe_dump(history.cluster_spec, sort_keys=False))
    return out, spec
