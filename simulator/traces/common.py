"""What the trace readers share: their options, per-row parsing that names the file, row and
column of anything wrong, and the rule that splits a job's GPUs into equal pods.

Row numbers are line numbers of the file, 1-based: in a file with a header the header is
row 1; in the headerless Alibaba PAI tables the first job is row 1. For JSON lists (the
Philly job log) row N is the N-th job object; for Parquet, row N is the (N-1)-th record,
so that a CSV and a Parquet file of the same jobs give the same row numbers.

Text is UTF-8 (a byte-order mark is allowed). A byte that is not UTF-8 does not stop the
read: its row is a bad row naming the column and the byte, like any other bad value.

Every reader holds each row to the same sane bounds, so that one typo (pods 10^12, a
submit time of 1e308) is a bad row rather than a replay that never ends or a counter that
overflows. Numbers must be finite. The bounds are far above any real trace:

| what | at most | why |
| --- | --- | --- |
| pods of one job (a gang) | 100,000 (`MAX_PODS`) | the largest GPU clusters built have about 100,000 GPUs |
| GPUs of one job, where a trace gives the total | 100,000 (`MAX_JOB_GPUS`) | the same |
| whole GPUs of one pod | 64 (`MAX_GPUS_PER_POD`) | a node has 8, 16 at most today |
| CPU of one pod | 10,000 cores (`MAX_CPU_MILLI`) | nodes have a few hundred |
| memory of one pod | 1 PiB (`MAX_MEMORY_MIB`) | nodes have a few TiB |
| a duration (run time, min_runtime_s, checkpoint_s) | 10 years (`MAX_DURATION_S`) | real jobs run days |
| a time (submission, start, end) | 100 years from the epoch (`MAX_TIME_S`) | Unix seconds fit |

Dated traces (Philly, Helios) take dates from 1970-01-01 to 2069-12-31 UTC: their times are
Unix seconds held to the same `MAX_TIME_S`.
"""

from __future__ import annotations

import csv
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from scheduler.core.errors import InvalidInput
from simulator.model import TIERS, Job, Trace, TraceError

DEFAULT_QOS_TIERS: Mapping[str, str] = {
    "LS": "production",
    "Burstable": "training",
    "Guaranteed": "training",
    "BE": "scavenger",
}
PAI_TEAMS = ("user", "group")

MAX_PODS = 100_000
MAX_JOB_GPUS = 100_000
MAX_GPUS_PER_POD = 64
MAX_CPU_MILLI = 10_000_000
MAX_MEMORY_MIB = 1 << 30
YEAR_S = 365.25 * 86400
MAX_DURATION_S = 10 * YEAR_S
MAX_TIME_S = 100 * YEAR_S  # 2070-01-01 00:00 UTC as Unix seconds


def _default_qos_tiers() -> dict[str, str]:
    return dict(DEFAULT_QOS_TIERS)


@dataclass(frozen=True)
class TraceOptions:
    """How a trace is turned into jobs where the trace itself does not say.

    strict: raise the first bad row's TraceError instead of skipping the row (a skipped
        bad row is listed in `Trace.skipped` with the same message text).
    tier: tier of every job of a trace that has no tiers (Philly, PAI, Helios).
    max_gpus_per_pod: largest pod a job's GPUs are split into (the GPUs of one node),
        1..`MAX_GPUS_PER_POD`.
    qos_tiers: openb QoS class -> tier.
    openb_teams: openb has no tenants; 1 puts every pod in team "openb", N > 1 puts a pod
        in "team-K", K = CRC-32 of its name mod N (stable across runs and machines).
    pai_team: "user" or "group" (the group tag of pai_group_tag_table.csv).
    pai_task_table, pai_group_table: explicit paths; default: next to the job table.
    """

    strict: bool = False
    tier: str = "training"
    max_gpus_per_pod: int = 8
    qos_tiers: Mapping[str, str] = field(default_factory=_default_qos_tiers)
    openb_teams: int = 1
    pai_team: str = "user"
    pai_task_table: str | Path | None = None
    pai_group_table: str | Path | None = None

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise InvalidInput(
                "TraceOptions", "tier", f"{self.tier!r} is not a tier", f"use one of {', '.join(TIERS)}"
            )
        if isinstance(self.max_gpus_per_pod, bool) or not (
            isinstance(self.max_gpus_per_pod, int) and 1 <= self.max_gpus_per_pod <= MAX_GPUS_PER_POD
        ):
            raise InvalidInput(
                "TraceOptions",
                "max_gpus_per_pod",
                f"{self.max_gpus_per_pod!r} is not a whole number of GPUs from 1 to {MAX_GPUS_PER_POD}",
                "use the GPUs of one node, e.g. 8",
            )
        for qos, tier in self.qos_tiers.items():
            if tier not in TIERS:
                raise InvalidInput(
                    "TraceOptions",
                    f"qos_tiers[{qos!r}]",
                    f"{tier!r} is not a tier",
                    f"map each QoS to one of {', '.join(TIERS)}",
                )
        if isinstance(self.openb_teams, bool) or not (
            isinstance(self.openb_teams, int) and self.openb_teams >= 1
        ):
            raise InvalidInput(
                "TraceOptions",
                "openb_teams",
                f"{self.openb_teams!r} is not a whole number above 0",
                "use 1 for one team 'openb', or the number of teams to spread pods over",
            )
        if self.pai_team not in PAI_TEAMS:
            raise InvalidInput(
                "TraceOptions", "pai_team", f"{self.pai_team!r} is not known", "use 'user' or 'group'"
            )


class SkippedRow(str):
    """One line of `Trace.skipped`: the message itself, which also carries its parts (file,
    row, column, problem, fix) so that the whole list can be written as a table.

    `bad` is False for a row left out on purpose (a job that never ran), True for a bad row.
    A str, so code that only prints or compares the lines sees no difference.
    """

    path: str
    row: int
    column: str
    problem: str
    fix: str
    bad: bool

    # Defaults let pickle rebuild it from the text alone (its parts come back with __dict__).
    def __new__(
        cls,
        text: str,
        path: str = "",
        row: int = 0,
        column: str = "",
        problem: str = "",
        fix: str = "",
        bad: bool = True,
    ) -> SkippedRow:
        line = super().__new__(cls, text)
        line.path, line.row, line.column = path, row, column
        line.problem, line.fix, line.bad = problem, fix, bad
        return line

    @classmethod
    def of(cls, error: TraceError) -> SkippedRow:
        return cls(str(error), error.path, error.row, error.column, error.problem, error.fix)


class Rows:
    """Collects what a reader leaves out of one file, and refuses what `strict` forbids.

    Bad rows (unparseable or impossible values) go through `reject`: raised when strict,
    else listed. Rows left out on purpose (a job that never ran) go through `skip` and are
    listed in both modes, since they are not errors.
    """

    def __init__(self, path: str | Path, strict: bool, skipped: list[str] | None = None) -> None:
        self.path = str(path)
        self.strict = strict
        self.skipped: list[str] = [] if skipped is None else skipped
        self.seen: dict[str, int] = {}

    def reject(self, error: TraceError) -> None:
        if self.strict:
            raise error
        self.skipped.append(SkippedRow.of(error))

    def skip(self, row: int, why: str) -> None:
        text = f"{self.path}, row {row}: skipped: {why}"
        self.skipped.append(SkippedRow(text, self.path, row, "", why, "", bad=False))

    def claim(self, job_id: str, row: int, column: str) -> None:
        """Refuses a job id a previous row already used: the engine keys jobs by id."""
        first = self.seen.get(job_id)
        if first is not None:
            raise TraceError(
                self.path,
                row,
                column,
                f"{job_id!r} was already used by row {first}",
                "give every job its own id, or remove the repeated row",
            )
        self.seen[job_id] = row


def is_missing(value: object) -> bool:
    """Empty cells, JSON null and the 'None'/'NaN' some exports write for missing values."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return value.strip() in ("", "None", "none", "null", "NaN", "nan")
    return False


def is_blank(value: object) -> bool:
    """Only an empty cell or a null: for gpufair's own format, where 'nan' is a bad value,
    not a missing one (it would otherwise turn into a default without a word)."""
    return value is None or (isinstance(value, str) and not value.strip())


class Row:
    """One record of a trace file with its position, so every parse error can name both.

    `missing` says which values count as empty (default `is_missing`, which takes the
    'None'/'NaN' of exported traces as empty)."""

    __slots__ = ("index", "line", "missing", "path", "values")

    def __init__(
        self,
        path: str,
        number: int,
        values: Sequence[object],
        index: Mapping[str, int],
        missing: Callable[[object], bool] = is_missing,
    ) -> None:
        self.path = path
        self.line = number
        self.values = values
        self.index = index
        self.missing = missing

    def error(self, column: str, problem: str, fix: str) -> TraceError:
        return TraceError(self.path, self.line, column, problem, fix)

    def raw(self, column: str) -> object:
        i = self.index.get(column)
        if i is None or i >= len(self.values):
            return None
        return self.values[i]

    def present(self, column: str) -> bool:
        return not self.missing(self.raw(column))

    def text(self, column: str, default: str | None = None) -> str:
        value = self.raw(column)
        if value is None or not str(value).strip():
            if default is not None:
                return default
            raise self.error(column, "is empty", f"fill in {column} or remove the row")
        return str(value).strip()

    def number(
        self,
        column: str,
        *,
        minimum: float | None = 0.0,
        maximum: float | None = None,
        unit: str = "seconds",
        default: float | None = None,
    ) -> float:
        value = self.raw(column)
        if self.missing(value):
            if default is not None:
                return default
            problem = "is empty" if value is None or not str(value).strip() else f"{value!r} is missing"
            raise self.error(column, problem, f"write {column} as a number of {unit}, or remove the row")
        if isinstance(value, bool):
            raise self.error(column, f"{value!r} is not a number", f"write {column} as a number of {unit}")
        try:
            result = float(value) if isinstance(value, int | float) else float(str(value).strip())
        except ValueError:
            raise self.error(
                column, f"{value!r} is not a number", f"write {column} as a number of {unit}"
            ) from None
        if not math.isfinite(result):
            raise self.error(column, f"{value!r} is not a finite number", f"write a finite number of {unit}")
        if minimum is not None and result < minimum:
            raise self.error(
                column,
                f"{result:g} is below {minimum:g}",
                f"{column} must be at least {minimum:g} {unit}; correct the value or remove the row",
            )
        if maximum is not None:
            self.at_most(column, result, maximum, unit)
        return result

    def optional_number(
        self, column: str, *, minimum: float | None = 0.0, maximum: float | None = None, unit: str = "seconds"
    ) -> float | None:
        if self.missing(self.raw(column)):
            return None
        return self.number(column, minimum=minimum, maximum=maximum, unit=unit)

    def whole(
        self,
        column: str,
        *,
        minimum: int = 0,
        maximum: int | None = None,
        unit: str = "GPUs",
        default: int | None = None,
    ) -> int:
        value = self.raw(column)
        if self.missing(value) and default is not None:
            return default
        result = self.number(column, minimum=None, maximum=maximum, unit=unit)
        if not result.is_integer():
            raise self.error(
                column, f"{value!r} is not a whole number", f"write {column} as a whole number of {unit}"
            )
        if result < minimum:
            raise self.error(
                column,
                f"{int(result)} is below {minimum}",
                f"{column} must be at least {minimum} {unit}; correct the value or remove the row",
            )
        return int(result)

    def at_most(self, column: str, value: float, maximum: float, unit: str, why: str = "") -> None:
        """Refuses a value above one of the module's sane bounds (see the table above)."""
        if value > maximum:
            raise self.error(
                column,
                f"{_shown(value)} is above {_shown(maximum)}",
                f"{column} is at most {_shown(maximum)} {unit}{why} in any real trace; "
                "correct the value or remove the row",
            )

    def time(self, column: str) -> float:
        """A time in seconds from the trace's epoch, 0..`MAX_TIME_S`."""
        seconds = self.number(column)
        self.at_most(column, seconds, MAX_TIME_S, "seconds", " (100 years from the trace's epoch)")
        return seconds

    def duration(self, column: str, seconds: float | None = None) -> float:
        """The column as a duration (0..`MAX_DURATION_S`), or `seconds` worked out from other
        columns and held to the same bound under this column's name."""
        if seconds is None:
            seconds = self.number(column)
        self.at_most(column, seconds, MAX_DURATION_S, "seconds", " (10 years)")
        return seconds

    def optional_duration(self, column: str) -> float | None:
        return None if self.missing(self.raw(column)) else self.duration(column)

    def utc_seconds(self, column: str) -> float:
        """A 'YYYY-MM-DD HH:MM:SS' time, read as UTC when it names no zone, as Unix seconds."""
        return utc_seconds(self.text(column), self, column)


def _shown(value: float) -> str:
    """1000000000000 as 1,000,000,000,000 (not 1e+12), 1e308 as 1e+308."""
    if float(value).is_integer() and abs(value) < 1e21:
        return f"{int(value):,}"
    return f"{value:,.6g}"


def utc_seconds(text: str, row: Row, column: str | None = None) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise row.error(
            column or "time",
            f"{text!r} is not a date and time",
            "write it as YYYY-MM-DD HH:MM:SS (UTC)",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = moment.timestamp()
    if not 0 <= seconds < MAX_TIME_S:
        raise row.error(
            column or "time",
            f"{text!r} is outside 1970-01-01 .. 2069-12-31",
            "write a date between 1970 and 2069 (UTC), or remove the row",
        )
    return seconds


def header_index(
    path: str, header: Sequence[str], required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, int]:
    """Column name -> position; refuses (row 1) a missing required column or a repeated name."""
    names = [name.strip().lstrip("\ufeff") for name in header]
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in index:
            raise TraceError(path, 1, name, "is named twice in the header", "keep one column of that name")
        index[name] = i
    for name in required:
        if name not in index:
            raise TraceError(
                path,
                1,
                name,
                "column is missing from the header",
                f"the header must name {', '.join(required)}"
                + (f" (optional: {', '.join(optional)})" if optional else ""),
            )
    return index


def open_text(path: str | Path, newline: str | None = None) -> TextIO:
    """A UTF-8 text file whose bytes that are not UTF-8 come through as U+DC80..U+DCFF
    (surrogateescape), so `check_text` can refuse their rows instead of the whole read dying."""
    return open(path, newline=newline, encoding="utf-8-sig", errors="surrogateescape")


def undecoded(text: str) -> tuple[int, int] | None:
    """(position, byte) of the first byte of `text` that was not UTF-8, else None."""
    if text.isascii():  # the usual case, at C speed
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start, ord(text[error.start]) - 0xDC00
    return None


def not_utf8(path: str, row: int, column: str, text: str, found: tuple[int, int]) -> TraceError:
    position, byte = found
    if 0x80 <= byte <= 0xFF:  # a raw byte, kept by surrogateescape
        return TraceError(
            path,
            row,
            column,
            f"{text.encode('utf-8', 'surrogateescape')!r} holds the byte 0x{byte:02X} "
            f"(character {position + 1}), which is not UTF-8",
            "save the file as UTF-8 (e.g. iconv -f <its encoding> -t utf-8), or correct the value",
        )
    return TraceError(  # a JSON \uD8xx escape without its pair
        path,
        row,
        column,
        f"'{text.encode('utf-8', 'backslashreplace').decode('utf-8')}' holds an unpaired "
        f"surrogate (character {position + 1}), which is no character",
        "write the character itself, or both halves of its \\u escape",
    )


def check_text(row: Row, columns: Sequence[str]) -> None:
    """Refuses a row with a byte that is not UTF-8, naming the first such field and byte."""
    for i, value in enumerate(row.values):
        if isinstance(value, str) and (found := undecoded(value)) is not None:
            column = columns[i] if i < len(columns) else f"field {i + 1}"
            raise not_utf8(row.path, row.line, column, value, found)


def csv_rows(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(row number, fields) of each non-blank line of a CSV file; blank lines are not rows.
    Fields may hold undecoded bytes (see `open_text`): check each row with `check_fields`."""
    with open_text(path, newline="") as handle:
        reader = csv.reader(handle)
        number = 0
        while True:
            number += 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a quote never closed swallows the rest of the file
                raise TraceError(
                    str(path),
                    number,
                    "(CSV)",
                    f"is not valid CSV: {error}",
                    "close the quoted field that starts here, or remove its stray quote",
                ) from None
            if fields and any(cell.strip() for cell in fields):
                yield number, fields


def csv_header(path: str, lines: Iterator[tuple[int, list[str]]], expected: str) -> list[str]:
    """The header fields of a CSV read with `csv_rows`; an empty file, or a header with a byte
    that is not UTF-8, is refused as row 1, with `expected` saying what the header should be."""
    first = next(lines, None)
    if first is None:
        raise TraceError(path, 1, "header", "the file is empty", expected)
    for name in first[1]:
        if (found := undecoded(name)) is not None:
            raise not_utf8(path, 1, "header", name, found)
    return first[1]


def check_fields(row: Row, columns: Sequence[str]) -> None:
    """The checks of a CSV row before its values are read: UTF-8 first (a bad byte is the
    cause worth naming), then the number of fields."""
    check_text(row, columns)
    check_width(row, columns)


def check_width(row: Row, columns: Sequence[str]) -> None:
    """Refuses a row with fewer or more fields than the header, naming the first odd column."""
    width = len(row.values)
    if width < len(columns):
        raise row.error(
            columns[width],
            f"the row has {width} fields, the file has {len(columns)} columns",
            "fill in every column (an empty field still needs its comma)",
        )
    if width > len(columns):
        raise row.error(
            f"field {len(columns) + 1}",
            f"the row has {width} fields, the file has {len(columns)} columns",
            "remove the extra fields, or quote a value that holds a comma",
        )


def split_pods(gpus: int, max_per_pod: int) -> tuple[int, int]:
    """(pods, GPUs per pod): the fewest equal pods of at most `max_per_pod` GPUs.

    The smallest p with gpus % p == 0 and gpus / p <= max_per_pod, so 16 -> 2 x 8,
    12 -> 2 x 6, 24 -> 3 x 8, 10 -> 2 x 5, and a prime above the limit (11) -> 11 x 1.
    Zero GPUs is one CPU-only pod.
    """
    if gpus <= max_per_pod:
        return 1, gpus
    for pods in range(-(-gpus // max_per_pod), gpus + 1):
        if gpus % pods == 0:
            return pods, gpus // pods
    raise AssertionError("unreachable: pods == gpus always divides")


def split_models(text: str) -> tuple[str, ...]:
    """'A10|T4|T4' -> ('A10', 'T4'): allowed GPU models, first mention order, no repeats."""
    models: list[str] = []
    for part in text.split("|"):
        model = part.strip()
        if model and model not in models:
            models.append(model)
    return tuple(models)


def stable_bucket(name: str, buckets: int) -> int:
    """A bucket for `name` that is the same on every run and machine (unlike hash())."""
    return zlib.crc32(name.encode("utf-8")) % buckets


def make_trace(name: str, jobs: list[Job], skipped: list[str], epoch_s: float = 0.0) -> Trace:
    """Jobs sorted by (submit_s, job_id), so every reader returns them in one fixed order.

    `epoch_s` is the UTC Unix time of the trace's time 0 where the trace has real dates
    (Philly, Helios), else 0.0 (openb, PAI and native times are offsets from an unknown date).
    """
    jobs.sort(key=lambda job: (job.submit_s, job.job_id))
    return Trace(name, tuple(jobs), tuple(skipped), epoch_s=epoch_s)
