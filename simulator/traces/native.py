"""gpufair's own trace format: one job per row, in CSV (with a header) or Parquet.

The same columns in both; names are exact, order is free, an unknown column is refused
(a misspelt optional column would otherwise be dropped without a word).

| column | required | meaning |
| --- | --- | --- |
| job_id | yes | unique id of the job (a gang of pods) |
| submit_s | yes | submission, seconds from the trace's epoch, >= 0 |
| duration_s | yes | run time once started, seconds, >= 0 |
| pods | yes | pods of the gang, >= 1; they start together |
| gpus_per_pod | yes | whole GPUs per pod, >= 0 (0 with gpu_milli 0: CPU-only) |
| team | yes | team the job is charged to |
| tier | yes | production, training or scavenger |
| gpu_milli | no | thousandths of one shared GPU per pod, 1..999 (then gpus_per_pod is 0); default 0 |
| gpu_model | no | allowed GPU models separated by '|', e.g. `A100|H100`; empty: any |
| cpu_milli | no | CPU per pod in thousandths of a core; default 0 |
| memory_mib | no | memory per pod in MiB; default 0 |
| topology_required | no | node label the gang must stay within, e.g. `network.gpufair.io/leaf` |
| topology_preferred | no | node label the gang would rather stay within |
| min_runtime_s | no | seconds the job may not be preempted after it starts; empty: the team's |
| checkpoint_s | no | checkpoint interval in seconds (lost work on preemption is since the last one) |
| node_selector | no | JSON object: every pod's `nodeSelector`, e.g. `{"pool": "a"}` |
| tolerations | no | JSON list: every pod's `tolerations` (see below) |
| node_affinity | no | JSON list: every pod's required node affinity `nodeSelectorTerms` |

The last three are the pod spec fields of the same names (tolerations: `key`, `operator`
Equal or Exists, `value`, `effect`; terms: `matchExpressions` on labels with In, NotIn,
Exists, DoesNotExist, Gt, Lt, and `matchFields` on `metadata.name`), checked as the API
server checks them and read by the daemon's pod spec reader, so a replay applies the same
node filters to them as the scheduler does to a pod (with the node labels and taints of a
cluster spec, `simulator.cluster_spec`). Examples: tolerations
`[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]`, node_affinity
`[{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a", "b"]}]}]`; in a
CSV, quote the cell and double its quotes: `"{""pool"": ""a""}"`. A value that is not
JSON, or a field Kubernetes would refuse (an unknown operator, Exists with a value, an
empty term), is a bad row naming the column and the field inside it, e.g.
`tolerations[0].operator`. `write` adds these columns only when a job has constraints, so
converting a trace without them gives the same file as before.

Empty cells (CSV) and nulls (Parquet) of optional columns take the default; anything else
must be a value: 'nan', 'None' or NaN are bad values here, not empty ones. Numbers must be
finite and within the bounds of `simulator.traces.common` (pods <= 100,000, gpus_per_pod
<= 64, pods x gpus_per_pod <= 100,000 GPUs, durations <= 10 years, submit_s <= 100 years).
Integer columns accept integral floats (`8.0`). Row N is line N of a CSV (header = row 1); in Parquet it is
record N-1 (the first record is row 2), so both name the same job the same way. Parquet is
recognised by its magic bytes, whatever the file name. Bad rows raise with
`TraceOptions.strict`, else are skipped and listed in `Trace.skipped`; a missing required
column, an unknown column or an empty file is always refused.

`write(jobs, path)` writes this format (Parquet for a `.parquet` / `.pq` name, else CSV),
so any trace can be converted once and replayed fast.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from scheduler.core.constraints import PodConstraints
from simulator import constraints
from simulator.model import TIERS, Job, Trace, TraceError
from simulator.traces.common import (
    MAX_CPU_MILLI,
    MAX_GPUS_PER_POD,
    MAX_JOB_GPUS,
    MAX_MEMORY_MIB,
    MAX_PODS,
    Row,
    Rows,
    TraceOptions,
    check_fields,
    check_text,
    csv_header,
    csv_rows,
    header_index,
    is_blank,
    make_trace,
    split_models,
)

REQUIRED = ("job_id", "submit_s", "duration_s", "pods", "gpus_per_pod", "team", "tier")
OPTIONAL = (
    "gpu_milli",
    "gpu_model",
    "cpu_milli",
    "memory_mib",
    "topology_required",
    "topology_preferred",
    "min_runtime_s",
    "checkpoint_s",
    "node_selector",
    "tolerations",
    "node_affinity",
)
COLUMNS = REQUIRED + OPTIONAL
CONSTRAINT_COLUMNS = ("node_selector", "tolerations", "node_affinity")

SCHEMA = pa.schema(
    [
        ("job_id", pa.string()),
        ("submit_s", pa.float64()),
        ("duration_s", pa.float64()),
        ("pods", pa.int64()),
        ("gpus_per_pod", pa.int64()),
        ("team", pa.string()),
        ("tier", pa.string()),
        ("gpu_milli", pa.int64()),
        ("gpu_model", pa.string()),
        ("cpu_milli", pa.int64()),
        ("memory_mib", pa.int64()),
        ("topology_required", pa.string()),
        ("topology_preferred", pa.string()),
        ("min_runtime_s", pa.float64()),
        ("checkpoint_s", pa.float64()),
        ("node_selector", pa.string()),
        ("tolerations", pa.string()),
        ("node_affinity", pa.string()),
    ]
)


def _is_parquet(path: str | Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PAR1"


def _index(path: str, names: list[str]) -> dict[str, int]:
    index = header_index(path, names, REQUIRED, OPTIONAL)
    for name in index:
        if name not in COLUMNS:
            raise TraceError(
                path,
                1,
                name,
                "is not a column of the gpufair trace format",
                f"rename or remove it; the columns are {', '.join(COLUMNS)}",
            )
    return index


def read(path: str | Path, options: TraceOptions) -> Trace:
    rows = Rows(path, options.strict)
    records: Iterable[tuple[int, Sequence[object]]]  # (row number, values): Parquet's or the CSV's
    if _is_parquet(path):
        table = pq.read_table(path)
        index = _index(rows.path, table.column_names)
        columns = [_values(table.column(i)) for i in range(table.num_columns)]
        records = (
            (number, list(values)) for number, values in enumerate(zip(*columns, strict=True), start=2)
        )
        check = check_text  # Parquet rows always have every column
    else:
        lines = csv_rows(path)
        index = _index(rows.path, csv_header(rows.path, lines, f"the header names {', '.join(REQUIRED)}"))
        records = lines
        check = check_fields
    names = [name for name, _ in sorted(index.items(), key=lambda item: item[1])]
    jobs: list[Job] = []
    for number, values in records:
        row = Row(rows.path, number, values, index, missing=is_blank)
        try:
            check(row, names)
            job = _job(row)
            rows.claim(job.job_id, number, "job_id")
        except TraceError as error:
            rows.reject(error)
            continue
        jobs.append(job)
    return make_trace(Path(path).stem, jobs, rows.skipped)


def _values(column: pa.ChunkedArray) -> list[object]:
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        # A writer that did not check UTF-8: decode as the CSV path does, so check_text
        # refuses only the rows that hold a bad byte.
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise
        raw = column.cast(pa.large_binary()).to_pylist()
        return [None if value is None else value.decode("utf-8", "surrogateescape") for value in raw]


def _job(row: Row) -> Job:
    pods = row.whole("pods", minimum=1, maximum=MAX_PODS, unit="pods")
    gpus_per_pod = row.whole("gpus_per_pod", maximum=MAX_GPUS_PER_POD)
    if pods * gpus_per_pod > MAX_JOB_GPUS:
        raise row.error(
            "pods",
            f"{pods:,} pods x {gpus_per_pod} GPUs = {pods * gpus_per_pod:,} GPUs is above {MAX_JOB_GPUS:,}",
            f"a job asks at most {MAX_JOB_GPUS:,} GPUs in any real trace; correct pods or gpus_per_pod",
        )
    gpu_milli = row.whole("gpu_milli", unit="thousandths of a GPU", default=0)
    if gpu_milli > 999:
        raise row.error(
            "gpu_milli",
            f"{gpu_milli} is above 999",
            "gpu_milli is a share of one GPU (1..999); write a whole GPU as gpus_per_pod 1",
        )
    if gpu_milli and gpus_per_pod:
        raise row.error(
            "gpu_milli",
            f"{gpu_milli} is set with gpus_per_pod {gpus_per_pod}",
            "a pod has whole GPUs or a share of one: set gpus_per_pod to 0, or gpu_milli to 0",
        )
    tier = row.text("tier")
    if tier not in TIERS:
        raise row.error("tier", f"{tier!r} is not a tier", f"use one of {', '.join(TIERS)}")
    return Job(
        job_id=row.text("job_id"),
        submit_s=row.time("submit_s"),
        duration_s=row.duration("duration_s"),
        pods=pods,
        gpus_per_pod=gpus_per_pod,
        team=row.text("team"),
        tier=tier,
        gpu_milli=gpu_milli,
        gpu_models=split_models(row.text("gpu_model", default="")),
        cpu_milli=row.whole("cpu_milli", maximum=MAX_CPU_MILLI, unit="thousandths of a CPU", default=0),
        memory_mib=row.whole("memory_mib", maximum=MAX_MEMORY_MIB, unit="MiB", default=0),
        topology_required=row.text("topology_required", default="") or None,
        topology_preferred=row.text("topology_preferred", default="") or None,
        min_runtime_s=row.optional_duration("min_runtime_s"),
        checkpoint_s=row.optional_duration("checkpoint_s"),
        constraints=_constraints(row),
    )


_EXAMPLES = {
    "node_selector": '{"pool": "a"}',
    "tolerations": '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
    "node_affinity": '[{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}]',
}


T = TypeVar("T")


def _json_cell(row: Row, column: str, check: Callable[[Any], T]) -> T | None:
    """The column's JSON value, checked; None when the cell is empty."""
    if not row.present(column):
        return None
    text = row.text(column)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise row.error(
            column,
            f"{text!r} is not JSON ({exc.msg} at character {exc.pos + 1})",
            f"write it as JSON, e.g. {_EXAMPLES[column]} (in a CSV, quote the cell and double its quotes)",
        ) from None
    try:
        return check(value)
    except constraints.SpecProblem as problem:
        raise row.error(column + problem.where, problem.problem, problem.fix) from None


def _constraints(row: Row) -> PodConstraints | None:
    selector = _json_cell(row, "node_selector", constraints.labels)
    tolerations = _json_cell(row, "tolerations", constraints.tolerations)
    terms = _json_cell(row, "node_affinity", constraints.node_selector_terms)
    if selector is None and tolerations is None and terms is None:
        return None
    return constraints.job_constraints(selector, tolerations, terms)


def _record(job: Job) -> dict[str, object]:
    return {
        "job_id": job.job_id,
        "submit_s": float(job.submit_s),
        "duration_s": float(job.duration_s),
        "pods": job.pods,
        "gpus_per_pod": job.gpus_per_pod,
        "team": job.team,
        "tier": job.tier,
        "gpu_milli": job.gpu_milli,
        "gpu_model": "|".join(job.gpu_models) or None,
        "cpu_milli": job.cpu_milli,
        "memory_mib": job.memory_mib,
        "topology_required": job.topology_required,
        "topology_preferred": job.topology_preferred,
        "min_runtime_s": job.min_runtime_s,
        "checkpoint_s": job.checkpoint_s,
        **dict(zip(CONSTRAINT_COLUMNS, map(_json, constraints.written(job.constraints)), strict=True)),
    }


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value, separators=(", ", ": "))


def write(jobs: Trace | Iterable[Job], path: str | Path) -> None:
    """Writes jobs in the gpufair format: Parquet for a .parquet/.pq name, else CSV. The
    constraint columns are written only when some job has constraints."""
    listed = list(jobs.jobs if isinstance(jobs, Trace) else jobs)
    records = [_record(job) for job in listed]
    columns: tuple[str, ...] = COLUMNS
    if all(job.constraints is None for job in listed):
        columns = tuple(name for name in COLUMNS if name not in CONSTRAINT_COLUMNS)
    if Path(path).suffix.lower() in (".parquet", ".pq"):
        schema = pa.schema([SCHEMA.field(name) for name in columns])
        table = pa.Table.from_pylist([{k: r[k] for k in columns} for r in records], schema=schema)
        pq.write_table(table, path)
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for record in records:
            writer.writerow(["" if record[name] is None else record[name] for name in columns])
