"""Microsoft Philly (ATC'19), in its two public shapes; the reader picks by the file's content.

1. The job CSV published with the Pollux artifact (`philly.csv`):
   timestamp,duration,num_gpus,gpu_time,cluster. One row is one job, id "philly-NNNNNN"
   (its row number, header = row 1, so rows that repeat each other stay distinct jobs).
2. The original `cluster_job_log` of msr-fiddle/philly-traces: a JSON list of job objects
   {"jobid", "user", "vc", "submitted_time", "status", "attempts": [{"start_time",
   "end_time", "detail": [{"ip", "gpus": [...]}]}]}. The job's GPUs are those listed in
   its last attempt's details and its duration is that attempt's end - start (the attempt
   that ran to the end; earlier ones were retries). Row N is the N-th job object. A job
   with no attempt, or whose last attempt lacks a start or end time (still running when
   the log was cut, or a logging gap), or lists no GPU, is skipped with a line.

Both: team = the virtual cluster (`cluster` / `vc`); tier = `TraceOptions.tier`. Times
carry no zone and are read as UTC; submit_s counts from the earliest submission of the
file, so the first job has submit_s 0; `Trace.epoch_s` is that earliest submission (UTC
Unix seconds), for calendar budget periods. GPUs are split into the fewest equal pods of at most
`TraceOptions.max_gpus_per_pod` (8) GPUs: 16 -> 2 x 8, 12 -> 2 x 6, 24 -> 3 x 8, 128 -> 16 x 8.
The CSV's gpu_time (num_gpus x duration) is not needed and not read. Bad rows (a non-number,
a negative duration, a fraction of a GPU, a bad time, a byte that is not UTF-8, a value past
the bounds of `simulator.traces.common`: num_gpus <= 100,000, durations <= 10 years, dates
1970..2069) raise with `strict`, else are skipped and listed. In the JSON log a bad byte
inside a string refuses its job object, naming the key; one between the tokens makes the
file unreadable JSON, refused as a whole at its line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from simulator.model import Job, Trace, TraceError
from simulator.traces.common import (
    MAX_JOB_GPUS,
    Row,
    Rows,
    TraceOptions,
    check_fields,
    csv_header,
    csv_rows,
    header_index,
    is_missing,
    make_trace,
    not_utf8,
    open_text,
    split_pods,
    undecoded,
    utc_seconds,
)

CSV_COLUMNS = ("timestamp", "duration", "num_gpus", "cluster")
CSV_OPTIONAL = ("gpu_time",)
JSON_KEYS = ("jobid", "vc", "submitted_time", "attempts")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def read(path: str | Path, options: TraceOptions) -> Trace:
    if _is_json(path):
        return read_job_log(path, options)
    return read_csv(path, options)


def _is_json(path: str | Path) -> bool:
    with open_text(path) as handle:
        start = handle.read(256).lstrip()
    return start.startswith(("[", "{"))


# (submit as Unix seconds, job id, duration, GPUs, team), rebased once all rows are read
_Pending = tuple[float, str, float, int, str]


def _trace(path: str | Path, pending: list[_Pending], options: TraceOptions, skipped: list[str]) -> Trace:
    epoch = min((item[0] for item in pending), default=0.0)
    jobs = []
    for submit, job_id, duration, gpus, team in pending:
        pods, per_pod = split_pods(gpus, options.max_gpus_per_pod)
        jobs.append(Job(job_id, submit - epoch, duration, pods, per_pod, team, options.tier))
    return make_trace(Path(path).stem, jobs, skipped, epoch_s=epoch)


def read_csv(path: str | Path, options: TraceOptions) -> Trace:
    rows = Rows(path, options.strict)
    lines = csv_rows(path)
    header = csv_header(
        rows.path, lines, "a Philly CSV starts with timestamp,duration,num_gpus,gpu_time,cluster"
    )
    index = header_index(rows.path, header, CSV_COLUMNS, CSV_OPTIONAL)
    columns = [name for name, _ in sorted(index.items(), key=lambda item: item[1])]
    pending: list[_Pending] = []
    for number, fields in lines:
        row = Row(rows.path, number, fields, index)
        try:
            check_fields(row, columns)
            submit = row.utc_seconds("timestamp")
            duration = row.duration("duration")
            gpus = row.whole("num_gpus", maximum=MAX_JOB_GPUS)
            team = row.text("cluster")
        except TraceError as error:
            rows.reject(error)
            continue
        pending.append((submit, f"philly-{number:06d}", duration, gpus, team))
    return _trace(path, pending, options, rows.skipped)


def read_job_log(path: str | Path, options: TraceOptions) -> Trace:
    rows = Rows(path, options.strict)
    with open_text(path) as handle:
        text = handle.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise TraceError(
                rows.path,
                error.lineno,
                "(JSON)",
                f"is not valid JSON: {error.msg}",
                "fix the file or export it again",
            ) from None
    if not isinstance(data, list):
        raise TraceError(
            rows.path, 1, "(JSON)", "is not a list of jobs", "a Philly cluster_job_log is a JSON list"
        )
    index = {key: i for i, key in enumerate(JSON_KEYS)}
    pending: list[_Pending] = []
    # Walk the jobs' strings only when one may not be UTF-8: a raw byte, or a \uD8xx escape.
    bad_bytes = undecoded(text) is not None or _SURROGATE_ESCAPE.search(text) is not None
    for number, item in enumerate(data, start=1):
        try:
            if not isinstance(item, dict):
                raise TraceError(
                    rows.path, number, "(job)", "is not a JSON object", "each job is an object {...}"
                )
            if bad_bytes:
                _check_strings(rows.path, number, item, "")
            row = Row(rows.path, number, [item.get(key) for key in JSON_KEYS], index)
            job = _logged_job(row, item)
            if isinstance(job, str):
                rows.skip(number, job)
                continue
            rows.claim(job[1], number, "jobid")
        except TraceError as error:
            rows.reject(error)
            continue
        pending.append(job)
    return _trace(path, pending, options, rows.skipped)


def _check_strings(path: str, number: int, value: object, where: str) -> None:
    """Refuses the job whose keys or strings hold a byte that is not UTF-8, naming the key."""
    if isinstance(value, str):
        if (found := undecoded(value)) is not None:
            raise not_utf8(path, number, where or "(job)", value, found)
    elif isinstance(value, dict):
        for key, inner in value.items():
            name = f"{where}.{key}" if where else str(key)
            if (found := undecoded(key)) is not None:
                raise not_utf8(path, number, f"{where or '(job)'} key", key, found)
            _check_strings(path, number, inner, name)
    elif isinstance(value, list):
        for k, inner in enumerate(value):
            _check_strings(path, number, inner, f"{where}[{k}]")


def _logged_job(row: Row, item: dict) -> _Pending | str:
    """One job object of the log, or why it is skipped on purpose."""
    job_id = row.text("jobid")
    team = row.text("vc")
    submit = row.utc_seconds("submitted_time")
    attempts = item.get("attempts")
    if attempts is None:
        raise row.error("attempts", "is missing", "give the job its list of attempts (may be empty)")
    if not isinstance(attempts, list):
        raise row.error("attempts", "is not a list", "attempts is a list of {start_time, end_time, detail}")
    if not attempts:
        return "no scheduling attempt: the job never ran"
    last = attempts[-1]
    column = f"attempts[{len(attempts) - 1}]"
    if not isinstance(last, dict):
        raise row.error(column, "is not a JSON object", "each attempt is {start_time, end_time, detail}")
    start, end = last.get("start_time"), last.get("end_time")
    if is_missing(start):
        return "the last attempt has no start_time (a logging gap)"
    if is_missing(end):
        return "the last attempt has no end_time: the job was still running when the log was cut"
    started = utc_seconds(str(start), row, f"{column}.start_time")
    ended = utc_seconds(str(end), row, f"{column}.end_time")
    if ended < started:
        raise row.error(
            f"{column}.end_time",
            f"{end} is before start_time {start}",
            "an attempt ends after it starts; correct the times or remove the job",
        )
    duration = row.duration(f"{column}.end_time", ended - started)
    details = last.get("detail") or []
    if not isinstance(details, list):
        raise row.error(f"{column}.detail", "is not a list", "detail is a list of {ip, gpus}")
    gpus = 0
    for k, detail in enumerate(details):
        listed = detail.get("gpus") if isinstance(detail, dict) else None
        if not isinstance(listed, list):
            raise row.error(
                f"{column}.detail[{k}].gpus", "is not a list", 'list the GPUs, e.g. ["gpu0", "gpu1"]'
            )
        gpus += len(listed)
    if gpus == 0:
        return "the last attempt lists no GPU"
    row.at_most(f"{column}.detail", gpus, MAX_JOB_GPUS, "GPUs")
    return submit, job_id, duration, gpus, team
