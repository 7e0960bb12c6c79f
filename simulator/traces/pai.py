"""Alibaba PAI 2020 (`cluster-trace-gpu-v2020`): pai_job_table.csv joined with pai_task_table.csv.

Both tables are headerless, in the column order of the trace's `.header` files:

- pai_job_table: job_name,inst_id,user,status,start_time,end_time
- pai_task_table: job_name,task_name,inst_num,status,start_time,end_time,plan_cpu,plan_mem,plan_gpu,gpu_type
- pai_group_tag_table (optional): inst_id,user,gpu_type_spec,group,workload

A copy that kept the header line on top is read too (a first row equal to the column names
is passed over). Row N is line N of its file.

The reader takes the job table; the task table is `TraceOptions.pai_task_table`, else
`pai_task_table.csv` next to the job table (or the job table's name with "job_table" replaced
by "task_table"); the group tag table likewise (`pai_group_tag_table.csv`), used when present.

One job per task, because the tasks of a PAI job (ps, worker, evaluator) differ in shape:
job_id "<job_name>/<task_name>", pods = inst_num (instances start together).
- submit_s = the job's start_time (PAI's submission time, seconds, kept as in the trace:
  the trace's own offset keeps its time of day); duration_s = the task's end_time -
  start_time (what it ran; the job's end - start would add its queueing time).
- plan_gpu is GPU percent per instance: 100 = 1 GPU; below 100 is a shared GPU with
  gpu_milli = plan_gpu x 10; above 100 whole GPUs, rounded up (150 -> 2); empty or 0 is a
  CPU-only task. plan_cpu (percent of a core) -> cpu_milli = plan_cpu x 10; plan_mem (GB)
  -> memory_mib = plan_mem x 1024.
- team = the job's user (`TraceOptions.pai_team` "user"), or its group tag ("group",
  which needs the group tag table; a job without a tag keeps its user as team). The group
  table's gpu_type_spec, when set, is the task's one allowed GPU model. tier = `TraceOptions.tier`.
- Skipped with a line: a job without start_time, a task without start or end time (still
  running or waiting when the trace was cut), a task whose job is not in the job table or
  was skipped, a job without any task. Bad rows (a non-number, a task ending before it
  starts, a fraction of an instance, a repeated job or task, a byte that is not UTF-8, a
  value past the bounds of `simulator.traces.common`: inst_num <= 100,000, plan_gpu <= 6400
  (64 GPUs), times <= 100 years, run time <= 10 years) raise with `strict`, else are
  skipped and listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from simulator.model import Job, Trace, TraceError
from simulator.traces.common import (
    MAX_CPU_MILLI,
    MAX_GPUS_PER_POD,
    MAX_MEMORY_MIB,
    MAX_PODS,
    Row,
    Rows,
    TraceOptions,
    check_fields,
    csv_rows,
    make_trace,
)

JOB_COLUMNS = ("job_name", "inst_id", "user", "status", "start_time", "end_time")
TASK_COLUMNS = (
    "job_name",
    "task_name",
    "inst_num",
    "status",
    "start_time",
    "end_time",
    "plan_cpu",
    "plan_mem",
    "plan_gpu",
    "gpu_type",
)
GROUP_COLUMNS = ("inst_id", "user", "gpu_type_spec", "group", "workload")


@dataclass(frozen=True, slots=True)
class _PaiJob:
    row: int
    inst_id: str
    user: str
    submit_s: float


def _beside(path: Path, name: str, table: str) -> Path:
    """`name` in the job table's folder, else the job table's file name with its table swapped."""
    candidate = path.with_name(name)
    if candidate.exists():
        return candidate
    swapped = path.with_name(path.name.replace("job_table", table))
    return swapped if swapped != path and swapped.exists() else candidate


def _table(path: str | Path, columns: tuple[str, ...], rows: Rows):
    """Rows of a headerless table (a leading header line equal to `columns` is passed over)."""
    index = {name: i for i, name in enumerate(columns)}
    for number, fields in csv_rows(path):
        if number == 1 and tuple(cell.strip().lstrip("\ufeff") for cell in fields) == columns:
            continue
        row = Row(rows.path, number, fields, index)
        try:
            check_fields(row, columns)
        except TraceError as error:
            rows.reject(error)
            continue
        yield row


def read(path: str | Path, options: TraceOptions) -> Trace:
    job_path = Path(path)
    task_path = Path(options.pai_task_table or _beside(job_path, "pai_task_table.csv", "task_table"))
    if not task_path.exists():
        raise FileNotFoundError(
            f"{path}: the PAI task table {task_path} does not exist; put pai_task_table.csv next to "
            "the job table or set TraceOptions.pai_task_table"
        )
    group_path = Path(
        options.pai_group_table or _beside(job_path, "pai_group_tag_table.csv", "group_tag_table")
    )
    if options.pai_group_table is not None and not group_path.exists():
        raise FileNotFoundError(f"{path}: TraceOptions.pai_group_table {group_path} does not exist")
    if options.pai_team == "group" and not group_path.exists():
        raise FileNotFoundError(
            f"{path}: pai_team 'group' needs the group tag table {group_path}; put "
            "pai_group_tag_table.csv next to the job table or set TraceOptions.pai_group_table"
        )
    skipped: list[str] = []
    jobs, dropped = _read_jobs(job_path, options, skipped)
    groups = _read_groups(group_path, options, skipped) if group_path.exists() else {}
    used: set[str] = set()
    result: list[Job] = []
    tasks = Rows(task_path, options.strict, skipped)
    for row in _table(task_path, TASK_COLUMNS, tasks):
        try:
            job_name = row.text("job_name")
            parent = jobs.get(job_name)
            if parent is None:
                why = "was skipped" if job_name in dropped else f"is not in {job_path.name}"
                tasks.skip(row.line, f"its job {job_name!r} {why}")
                continue
            used.add(job_name)
            job = _task_job(row, job_name, parent, groups, options)
            if isinstance(job, str):
                tasks.skip(row.line, job)
                continue
            tasks.claim(job.job_id, row.line, "task_name")
        except TraceError as error:
            tasks.reject(error)
            continue
        result.append(job)
    job_rows = Rows(job_path, options.strict, skipped)
    for job_name, parent in jobs.items():
        if job_name not in used:
            job_rows.skip(parent.row, f"no task of job {job_name!r} in {task_path.name}")
    return make_trace(job_path.stem, result, skipped)


def _read_jobs(path: Path, options: TraceOptions, skipped: list[str]) -> tuple[dict[str, _PaiJob], set[str]]:
    rows = Rows(path, options.strict, skipped)
    jobs: dict[str, _PaiJob] = {}
    dropped: set[str] = set()
    for row in _table(path, JOB_COLUMNS, rows):
        try:
            job_name = row.text("job_name")
            rows.claim(job_name, row.line, "job_name")
            if not row.present("start_time"):
                rows.skip(row.line, "no start_time (submission time)")
                dropped.add(job_name)
                continue
            jobs[job_name] = _PaiJob(
                row.line, row.text("inst_id", default=""), row.text("user"), row.time("start_time")
            )
        except TraceError as error:
            rows.reject(error)
            if row.present("job_name"):
                dropped.add(str(row.raw("job_name")).strip())
    return jobs, dropped


def _read_groups(path: Path, options: TraceOptions, skipped: list[str]) -> dict[str, tuple[str, str]]:
    """inst_id -> (group tag, gpu_type_spec); the first non-empty value of each wins."""
    rows = Rows(path, options.strict, skipped)
    groups: dict[str, tuple[str, str]] = {}
    for row in _table(path, GROUP_COLUMNS, rows):
        try:
            inst_id = row.text("inst_id")
        except TraceError as error:
            rows.reject(error)
            continue
        group, spec = row.text("group", default=""), row.text("gpu_type_spec", default="")
        old_group, old_spec = groups.get(inst_id, ("", ""))
        groups[inst_id] = (old_group or group, old_spec or spec)
    return groups


def _task_job(
    row: Row, job_name: str, parent: _PaiJob, groups: dict[str, tuple[str, str]], options: TraceOptions
) -> Job | str:
    """The task's job, or why it is skipped on purpose."""
    task_name = row.text("task_name", default="")
    pods = row.whole("inst_num", minimum=1, maximum=MAX_PODS, unit="instances")
    if not row.present("start_time") or not row.present("end_time"):
        return "no start_time or end_time: the task was still running or waiting when the trace was cut"
    started = row.time("start_time")
    ended = row.time("end_time")
    if ended < started:
        raise row.error(
            "end_time",
            f"{ended:g} is before start_time {started:g}",
            "a task ends after it starts; correct the times or remove the row",
        )
    duration = row.duration("end_time", ended - started)
    plan_gpu = row.number("plan_gpu", maximum=MAX_GPUS_PER_POD * 100, unit="percent of a GPU", default=0.0)
    if plan_gpu == 0:
        gpus, milli = 0, 0
    elif plan_gpu < 100:
        gpus, milli = 0, min(999, max(1, round(plan_gpu * 10)))
    else:
        gpus, milli = math.ceil(plan_gpu / 100 - 1e-9), 0
    cpu_milli = round(
        row.number("plan_cpu", maximum=MAX_CPU_MILLI / 10, unit="percent of a core", default=0.0) * 10
    )
    memory_mib = round(row.number("plan_mem", maximum=MAX_MEMORY_MIB / 1024, unit="GB", default=0.0) * 1024)
    group, spec = groups.get(parent.inst_id, ("", "")) if parent.inst_id else ("", "")
    team = (group or parent.user) if options.pai_team == "group" else parent.user
    return Job(
        job_id=f"{job_name}/{task_name}" if task_name else job_name,
        submit_s=parent.submit_s,
        duration_s=duration,
        pods=pods,
        gpus_per_pod=gpus,
        team=team,
        tier=options.tier,
        gpu_milli=milli,
        gpu_models=(spec,) if spec else (),
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
    )
