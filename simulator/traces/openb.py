"""Alibaba openb pod lists (`cluster-trace-gpu-v2023`, `openb_pod_list_*.csv`).

Columns: name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,
creation_time,deletion_time,scheduled_time (times in seconds). Each pod is one job of one pod:

- submit_s = creation_time; duration_s = deletion_time - scheduled_time. A pod that was never
  scheduled (empty scheduled_time, e.g. the 897 `Pending` pods of the default list) is kept:
  it asked for its resources from creation to deletion, so duration_s = deletion_time -
  creation_time. A pod without a creation_time or a deletion_time cannot be replayed and is
  skipped with a line in `Trace.skipped`. Any pod_phase is accepted.
- num_gpu == 1 with gpu_milli < 1000 is a shared GPU (gpus_per_pod 0, gpu_milli as given);
  otherwise gpus_per_pod = num_gpu, and num_gpu 0 is a CPU-only job (kept).
- gpu_spec: allowed GPU models separated by '|' (repeats dropped); empty means any model.
- qos -> tier by `TraceOptions.qos_tiers` (default LS -> production, Burstable and
  Guaranteed -> training, BE -> scavenger); an unknown QoS is a bad row.
- Teams: the trace has no tenants. With `TraceOptions.openb_teams` = 1 (default) every pod
  is in team "openb"; with N > 1 a pod is in "team-K", K = CRC-32 of its name (UTF-8) mod N,
  which is stable across runs, machines and Python versions.

The `openb_pod_list_multigpu*.csv` samples hold only name,cpu_milli,memory_mib,num_gpu,
gpu_milli (no times): they are refused at row 1 since there is nothing to replay.
Bad rows (a non-number, a fraction of a GPU count, deletion before scheduling, an unknown
QoS, a repeated name, a byte that is not UTF-8, a value past the bounds of
`simulator.traces.common`: num_gpu <= 64, times <= 100 years, run time <= 10 years) raise
with `strict`, else are skipped and listed.
"""

from __future__ import annotations

from pathlib import Path

from simulator.model import Job, Trace, TraceError
from simulator.traces.common import (
    MAX_CPU_MILLI,
    MAX_GPUS_PER_POD,
    MAX_MEMORY_MIB,
    Row,
    Rows,
    TraceOptions,
    check_fields,
    csv_header,
    csv_rows,
    header_index,
    make_trace,
    split_models,
    stable_bucket,
)

COLUMNS = (
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)
TIMES = ("creation_time", "deletion_time", "scheduled_time")


def read(path: str | Path, options: TraceOptions) -> Trace:
    rows = Rows(path, options.strict)
    jobs: list[Job] = []
    lines = csv_rows(path)
    header = csv_header(rows.path, lines, f"an openb pod list starts with {','.join(COLUMNS)}")
    names = [name.strip().lstrip("\ufeff") for name in header]
    missing_times = [name for name in TIMES if name not in names]
    if missing_times and "name" in names:
        raise TraceError(
            rows.path,
            1,
            missing_times[0],
            "column is missing: this pod list has no times, so there is nothing to replay",
            "use a pod list with creation_time, deletion_time and scheduled_time, e.g. "
            "openb_pod_list_default.csv (the multigpu* samples are pod shapes only)",
        )
    index = header_index(rows.path, header, COLUMNS)
    columns = [name for name, _ in sorted(index.items(), key=lambda item: item[1])]
    for number, fields in lines:
        row = Row(rows.path, number, fields, index)
        try:
            check_fields(row, columns)
            job = _job(row, options)
            if isinstance(job, str):
                rows.skip(number, job)
                continue
            rows.claim(job.job_id, number, "name")
        except TraceError as error:
            rows.reject(error)
            continue
        jobs.append(job)
    return make_trace(Path(path).stem, jobs, rows.skipped)


def _job(row: Row, options: TraceOptions) -> Job | str:
    """The pod's job, or why it is skipped on purpose."""
    name = row.text("name")
    num_gpu = row.whole("num_gpu", maximum=MAX_GPUS_PER_POD)
    gpu_milli = row.whole("gpu_milli", unit="thousandths of a GPU", default=0)
    if gpu_milli > 1000:
        raise row.error(
            "gpu_milli",
            f"{gpu_milli} is above 1000",
            "gpu_milli is the share of one GPU, 1..1000 (1000 = a whole GPU)",
        )
    if num_gpu == 1 and gpu_milli < 1000:
        if gpu_milli == 0:
            raise row.error(
                "gpu_milli",
                "is 0 for a pod with num_gpu 1",
                "write the share of the GPU the pod uses (1..1000), or num_gpu 0 for a CPU-only pod",
            )
        gpus_per_pod, shared = 0, gpu_milli
    else:
        gpus_per_pod, shared = num_gpu, 0
    qos = row.text("qos")
    tier = options.qos_tiers.get(qos)
    if tier is None:
        known = ", ".join(sorted(options.qos_tiers))
        raise row.error(
            "qos", f"{qos!r} has no tier", f"use one of {known}, or map it with TraceOptions.qos_tiers"
        )
    cpu_milli = row.whole("cpu_milli", maximum=MAX_CPU_MILLI, unit="thousandths of a CPU", default=0)
    memory_mib = row.whole("memory_mib", maximum=MAX_MEMORY_MIB, unit="MiB", default=0)
    models = split_models(row.text("gpu_spec", default=""))
    if not row.present("creation_time"):
        return "no creation_time: the pod has no submission time to replay"
    if not row.present("deletion_time"):
        return "no deletion_time: the pod has no end, so its runtime is unknown"
    created = row.time("creation_time")
    deleted = row.time("deletion_time")
    if row.present("scheduled_time"):
        scheduled = row.time("scheduled_time")
        if deleted < scheduled:
            raise row.error(
                "deletion_time",
                f"{deleted:g} is before scheduled_time {scheduled:g}",
                "a pod is deleted after it is scheduled; correct either time or remove the row",
            )
        duration = row.duration("deletion_time", deleted - scheduled)
    else:
        if deleted < created:
            raise row.error(
                "deletion_time",
                f"{deleted:g} is before creation_time {created:g}",
                "a pod is deleted after it is created; correct either time or remove the row",
            )
        duration = row.duration("deletion_time", deleted - created)
    teams = options.openb_teams
    team = "openb" if teams == 1 else f"team-{stable_bucket(name, teams)}"
    return Job(
        job_id=name,
        submit_s=created,
        duration_s=duration,
        pods=1,
        gpus_per_pod=gpus_per_pod,
        team=team,
        tier=tier,
        gpu_milli=shared,
        gpu_models=models,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
    )
