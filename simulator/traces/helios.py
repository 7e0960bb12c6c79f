"""SenseTime Helios (SC'21, S-Lab-System-Group/HeliosData): a cluster's `cluster_log.csv`.

Published header: job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,start_time,
end_time,duration,queue (times 'YYYY-MM-DD HH:MM:SS', duration and queue in seconds).
Columns are found by name, so extra columns (e.g. a jobname) are fine. Required: job_id,
vc, gpu_num, node_num, submit_time, and duration or start_time and end_time.

One row is one job: team = vc, tier = `TraceOptions.tier`, job_id as in the log.
- submit_s = submit_time read as UTC, counted from the earliest submit_time of the file
  (the first job has submit_s 0, and `Trace.epoch_s` is that time in UTC Unix seconds);
  duration_s = duration, or end_time - start_time where duration is empty. A job with
  neither (it never started) is skipped with a line.
- gpu_num GPUs over node_num pods of gpu_num / node_num GPUs each when that divides and
  fits one node (`TraceOptions.max_gpus_per_pod`), else the fewest equal pods of at most
  that many GPUs (the Philly rule). gpu_num 0 is a CPU-only job (kept) of node_num pods.
  cpu_num is spread evenly over the pods (cpu_milli per pod, rounded down).
Bad rows (a non-number, a negative duration, a fraction of a GPU, a bad time, a repeated
job_id, a byte that is not UTF-8, a value past the bounds of `simulator.traces.common`:
gpu_num <= 100,000, node_num <= 100,000, 10,000 cores per pod, durations <= 10 years,
dates 1970..2069) raise with `strict`, else are skipped and listed.
"""

from __future__ import annotations

from pathlib import Path

from simulator.model import Job, Trace, TraceError
from simulator.traces.common import (
    MAX_CPU_MILLI,
    MAX_JOB_GPUS,
    MAX_PODS,
    Row,
    Rows,
    TraceOptions,
    check_fields,
    csv_header,
    csv_rows,
    header_index,
    make_trace,
    split_pods,
)

COLUMNS = (
    "job_id",
    "user",
    "vc",
    "gpu_num",
    "cpu_num",
    "node_num",
    "state",
    "submit_time",
    "start_time",
    "end_time",
    "duration",
    "queue",
)
REQUIRED = ("job_id", "vc", "gpu_num", "node_num", "submit_time")


def pods_for(gpus: int, nodes: int, max_per_pod: int) -> tuple[int, int]:
    """(pods, GPUs per pod): one pod per node when the GPUs divide evenly onto the nodes."""
    if gpus == 0:
        return max(1, nodes), 0
    if nodes >= 1 and gpus % nodes == 0 and gpus // nodes <= max_per_pod:
        return nodes, gpus // nodes
    return split_pods(gpus, max_per_pod)


def read(path: str | Path, options: TraceOptions) -> Trace:
    rows = Rows(path, options.strict)
    lines = csv_rows(path)
    header = csv_header(rows.path, lines, f"a Helios cluster_log.csv starts with {','.join(COLUMNS)}")
    index = header_index(rows.path, header, REQUIRED, [c for c in COLUMNS if c not in REQUIRED])
    if "duration" not in index and not ("start_time" in index and "end_time" in index):
        raise TraceError(
            rows.path,
            1,
            "duration",
            "column is missing (and start_time/end_time too)",
            "add duration, or start_time and end_time",
        )
    columns = [name for name, _ in sorted(index.items(), key=lambda item: item[1])]
    pending: list[tuple[float, str, float, int, int, str, int]] = []
    for number, fields in lines:
        row = Row(rows.path, number, fields, index)
        try:
            check_fields(row, columns)
            job_id = row.text("job_id")
            rows.claim(job_id, number, "job_id")
            submit = row.utc_seconds("submit_time")
            duration = _duration(row)
            if duration is None:
                rows.skip(number, "no duration and no start_time/end_time: the job never ran")
                continue
            gpus = row.whole("gpu_num", maximum=MAX_JOB_GPUS)
            nodes = row.whole("node_num", maximum=MAX_PODS, unit="nodes")
            cpus = row.number("cpu_num", unit="CPUs", default=0.0)
            team = row.text("vc")
            pods, per_pod = pods_for(gpus, nodes, options.max_gpus_per_pod)
            cpu_milli = round(cpus * 1000) // pods
            row.at_most("cpu_num", cpu_milli / 1000, MAX_CPU_MILLI / 1000, "CPUs", " per pod")
        except TraceError as error:
            rows.reject(error)
            continue
        pending.append((submit, job_id, duration, pods, per_pod, team, cpu_milli))
    epoch = min((item[0] for item in pending), default=0.0)
    jobs = [
        Job(job_id, submit - epoch, duration, pods, per_pod, team, options.tier, cpu_milli=cpu_milli)
        for submit, job_id, duration, pods, per_pod, team, cpu_milli in pending
    ]
    return make_trace(Path(path).stem, jobs, rows.skipped, epoch_s=epoch)


def _duration(row: Row) -> float | None:
    """The duration column, else end_time - start_time; None when the job never ran."""
    if row.present("duration"):
        return row.duration("duration")
    if not (row.present("start_time") and row.present("end_time")):
        return None
    duration = row.utc_seconds("end_time") - row.utc_seconds("start_time")
    if duration < 0:
        raise row.error(
            "end_time",
            f"{row.text('end_time')} is before start_time {row.text('start_time')}",
            "a job ends after it starts; correct the times or remove the row",
        )
    return row.duration("end_time", duration)
