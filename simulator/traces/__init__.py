"""Trace readers: a job trace file in, a `Trace` of `Job`s out, whatever the trace's source.

`read_trace(path, fmt)` with fmt one of `FORMATS`:

| fmt | files | module |
| --- | --- | --- |
| openb | Alibaba `openb_pod_list_*.csv` (cluster-trace-gpu-v2023) | `openb` |
| philly | Microsoft Philly: Pollux's `philly.csv`, or the original JSON `cluster_job_log` | `philly` |
| pai | Alibaba PAI 2020 `pai_job_table.csv` (+ task and group tag tables beside it) | `pai` |
| helios | SenseTime Helios `cluster_log.csv` | `helios` |
| native | gpufair's own CSV or Parquet | `native` |

Each module's docstring says how its trace becomes jobs (teams, tiers, pods) and which rows
it skips. Every reader returns jobs sorted by (submit_s, job_id), and lists each row it left
out in `Trace.skipped` with the reason. A bad row raises `TraceError` (file, row, column,
fix) with `TraceOptions(strict=True)`; by default it is skipped and listed with that same
message. A file that cannot be read as its format at all (a missing column) always raises.
A byte that is not UTF-8, a non-finite number and a value past the sane bounds listed in
`common` (pods, GPUs, durations, times) are bad rows like any other. Each skipped line is
a `common.SkippedRow`: the message, also split into file, row, column, problem and fix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scheduler.core.errors import InvalidInput
from simulator.model import Trace
from simulator.traces import helios, native, openb, pai, philly
from simulator.traces.common import DEFAULT_QOS_TIERS, TraceOptions

_READERS: dict[str, Callable[[str | Path, TraceOptions], Trace]] = {
    "openb": openb.read,
    "philly": philly.read,
    "pai": pai.read,
    "helios": helios.read,
    "native": native.read,
}
FORMATS: tuple[str, ...] = tuple(_READERS)

__all__ = ["DEFAULT_QOS_TIERS", "FORMATS", "TraceOptions", "read_trace", "write_native"]


def read_trace(path: str | Path, fmt: str, *, options: TraceOptions | None = None) -> Trace:
    """Reads the trace at `path` as `fmt`; see the module docstrings for each format's rules."""
    reader = _READERS.get(fmt)
    if reader is None:
        raise InvalidInput(
            "read_trace", "fmt", f"{fmt!r} is not a trace format", f"use one of {', '.join(FORMATS)}"
        )
    return reader(path, options or TraceOptions())


write_native = native.write
