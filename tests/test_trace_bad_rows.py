"""Bad trace rows that used to escape the per-row rule: bytes that are not UTF-8, values
past sane bounds (a gang of 10^12 pods hung the replay), non-finite numbers, and the
simulate command's account of every row it skipped."""

from __future__ import annotations

import csv
import math
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scheduler.cli import main
from scheduler.core.errors import InvalidInput
from simulator.model import TraceError
from simulator.traces import TraceOptions, read_trace
from simulator.traces.common import MAX_PODS, SkippedRow

STRICT = TraceOptions(strict=True)

NATIVE_HEAD = b"job_id,submit_s,duration_s,pods,gpus_per_pod,team,tier,min_runtime_s,checkpoint_s\n"
NATIVE_OK = b"ok,0,60,1,1,t,training,,\n"
PHILLY_HEAD = b"timestamp,duration,num_gpus,gpu_time,cluster\n"
PHILLY_OK = b"2017-10-01 00:00:00,60.0,1,60.0,vc1\n"
OPENB_HEAD = (
    b"name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    b"creation_time,deletion_time,scheduled_time\n"
)
OPENB_OK = b"pod-ok,1000,1024,1,1000,,LS,Running,0,100,10\n"
HELIOS_HEAD = (
    b"job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,duration,queue\n"
)
HELIOS_OK = b"1,u1,vc1,1,1,1,COMPLETED,2020-07-01 08:00:00,2020-07-01 08:00:00,2020-07-01 08:01:00,60,0\n"
LOG_JOB = (
    '{"jobid": "JOB", "vc": "v", "user": "USER", "submitted_time": "2017-10-01 00:00:00", "attempts": ['
    '{"start_time": "2017-10-01 00:01:00", "end_time": "2017-10-01 00:02:00", '
    '"detail": [{"ip": "IP", "gpus": ["gpu0"]}]}]}'
)


def log(*jobs: str) -> bytes:
    return ("[" + ", ".join(jobs) + "]").encode()


def job(job_id: str, user: str = "u", ip: str = "m1") -> str:
    return LOG_JOB.replace("JOB", job_id).replace("USER", user).replace("IP", ip)


def check_bad_row(path: Path, fmt: str, row: int, column: str, words: str, kept: int) -> TraceError:
    """The row is refused with strict and skipped (same message) without, the rest kept."""
    with pytest.raises(TraceError) as caught:
        read_trace(path, fmt, options=STRICT)
    error = caught.value
    assert (error.path, error.row, error.column) == (str(path), row, column), str(error)
    assert words in str(error)
    assert error.fix
    trace = read_trace(path, fmt)
    assert trace.skipped == (str(error),)
    assert len(trace.jobs) == kept
    return error


# --- bytes that are not UTF-8 ------------------------------------------------------------

NOT_UTF8 = [
    # (format, file name, content, row, column)
    ("native", "n.csv", NATIVE_HEAD + NATIVE_OK + b"x,0,60,1,1,t\xe9am,training,,\n", 3, "team"),
    ("philly", "ph.csv", PHILLY_HEAD + PHILLY_OK + b"2017-10-01 00:00:00,60.0,1,60.0,vc\xe9\n", 3, "cluster"),
    # a column the reader does not use still marks the row as not text it can trust
    ("philly", "ph.csv", PHILLY_HEAD + PHILLY_OK + b"2017-10-01 00:00:00,60.0,1,6\xff,vc1\n", 3, "gpu_time"),
    # JSON log: a bad byte inside a string refuses that job object, naming the key
    ("philly", "log", log(job("j0"), job("j1", user="Jos<E9>")), 2, "user"),
    ("philly", "log", log(job("j0"), job("j1", ip="m<E9>")), 2, "attempts[0].detail[0].ip"),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + b"pod-\xe9,1000,1024,1,1000,,LS,Running,0,100,10\n",
        3,
        "name",
    ),
    ("helios", "h.csv", HELIOS_HEAD + HELIOS_OK + HELIOS_OK.replace(b"1,u1,", b"2,u\xe91,"), 3, "user"),
]


@pytest.mark.parametrize(("fmt", "name", "content", "row", "column"), NOT_UTF8)
def test_a_byte_that_is_not_utf8_is_a_bad_row(
    tmp_path: Path, fmt: str, name: str, content: bytes, row: int, column: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content.replace(b"<E9>", b"\xe9"))  # the JSON cases are built as text
    error = check_bad_row(path, fmt, row, column, "which is not UTF-8", kept=1)
    assert "0xE9" in str(error) or "0xFF" in str(error)
    assert "save the file as UTF-8" in error.fix
    str(error).encode("utf-8")  # printable: the byte is shown escaped, never as a lone surrogate


def test_a_byte_that_is_not_utf8_in_each_pai_table_is_a_bad_row(tmp_path: Path) -> None:
    jobs, tasks, groups = (tmp_path / f"pai_{t}.csv" for t in ("job_table", "task_table", "group_tag_table"))
    jobs.write_bytes(b"j1,i1,u1,Terminated,10.0,20.0\nj2,i2,u\xe92,Terminated,10.0,20.0\n")
    tasks.write_bytes(
        b"j1,worker,1.0,Terminated,10.0,20.0,600.0,1.0,100.0,T4\n"
        b"j1,ps,1.0,Terminated,10.0,20.0,600.0,1.0,100.0,T\xe94\n"
    )
    groups.write_bytes(b"x,i1,T4,g\xe9,bert\n")
    trace = read_trace(jobs, "pai")
    assert [j.job_id for j in trace.jobs] == ["j1/worker"]
    assert [(line.path, line.row, line.column) for line in trace.skipped if isinstance(line, SkippedRow)] == [
        (str(jobs), 2, "user"),
        (str(groups), 1, "group"),
        (str(tasks), 2, "gpu_type"),
    ]
    with pytest.raises(TraceError, match="which is not UTF-8") as caught:
        read_trace(jobs, "pai", options=STRICT)
    assert (caught.value.row, caught.value.column) == (2, "user")


def test_a_header_that_is_not_utf8_is_refused_as_row_1(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_bytes(NATIVE_HEAD.replace(b"team", b"t\xe9am") + NATIVE_OK)
    for options in (STRICT, TraceOptions()):
        with pytest.raises(TraceError, match="0xE9") as caught:
            read_trace(path, "native", options=options)
        assert (caught.value.row, caught.value.column) == (1, "header")


def test_a_byte_that_is_not_utf8_between_json_tokens_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"[\n" + job("j0").encode() + b",\n\xe9" + job("j1").encode() + b"]")
    with pytest.raises(TraceError, match="is not valid JSON") as caught:
        read_trace(path, "philly")
    assert caught.value.row == 3


def test_an_unpaired_json_surrogate_escape_is_a_bad_job(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("[" + job("j0") + ", " + job("j1").replace('"vc": "v"', '"vc": "v\\ud800"') + "]")
    error = check_bad_row(path, "philly", 2, "vc", "unpaired surrogate", kept=1)
    str(error).encode("utf-8")


def test_a_quote_never_closed_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "ph.csv"
    rest = ("x" * 200 + "\n") * 1000  # past the csv module's field limit inside the open quote
    path.write_bytes(PHILLY_HEAD + PHILLY_OK + b'2017-10-01 00:00:00,60.0,1,"60.0,vc1\n' + rest.encode())
    with pytest.raises(TraceError, match="is not valid CSV") as caught:
        read_trace(path, "philly")
    assert (caught.value.row, caught.value.column) == (3, "(CSV)")


def test_a_parquet_string_that_is_not_utf8_is_a_bad_row(tmp_path: Path) -> None:
    # pyarrow checks UTF-8 when it builds strings; other writers may not, hence the view.
    teams = pa.array([b"t", b"t\xe9"], type=pa.binary()).view(pa.string())
    table = pa.table(
        {
            "job_id": ["a", "b"],
            "submit_s": [0.0, 1.0],
            "duration_s": [10.0, 10.0],
            "pods": [1, 1],
            "gpus_per_pod": [1, 1],
            "team": teams,
            "tier": ["training", "training"],
        }
    )
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    check_bad_row(path, "native", 3, "team", "0xE9", kept=1)


# --- sane bounds and finite numbers --------------------------------------------------------

NATIVE_BAD = [
    # (row after NATIVE_OK, column, words)
    (b"x,0,60,1000000000000,1,t,training,,\n", "pods", "1,000,000,000,000 is above 100,000"),
    (b"x,0,60,100001,0,t,training,,\n", "pods", "100,001 is above 100,000"),
    (b"x,0,60,1,65,t,training,,\n", "gpus_per_pod", "65 is above 64"),
    (b"x,0,60,20000,8,t,training,,\n", "pods", "160,000 GPUs is above 100,000"),
    (b"x,1e308,60,1,1,t,training,,\n", "submit_s", "1e+308 is above"),
    (b"x,0,1e12,1,1,t,training,,\n", "duration_s", "(10 years)"),
    (b"x,0,inf,1,1,t,training,,\n", "duration_s", "is not a finite number"),
    (b"x,0,60,1,1,t,training,nan,\n", "min_runtime_s", "'nan' is not a finite number"),
    (b"x,0,60,1,1,t,training,None,\n", "min_runtime_s", "'None' is not a number"),
    (b"x,0,60,1,1,t,training,,-inf\n", "checkpoint_s", "is not a finite number"),
    (b"x,0,60,1,1,t,training,,1e10\n", "checkpoint_s", "(10 years)"),
    (b"x,nan,60,1,1,t,training,,\n", "submit_s", "'nan' is not a finite number"),
]


@pytest.mark.parametrize(("line", "column", "words"), NATIVE_BAD)
def test_native_values_past_the_bounds_are_bad_rows(
    tmp_path: Path, line: bytes, column: str, words: str
) -> None:
    path = tmp_path / "n.csv"
    path.write_bytes(NATIVE_HEAD + NATIVE_OK + line)
    check_bad_row(path, "native", 3, column, words, kept=1)


def test_native_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_bytes(
        NATIVE_HEAD
        + f"big,3155760000,315576000,{MAX_PODS},1,t,training,315576000,60\n".encode()
        + b"wide,0,60,1,64,t,training,,\n"
    )
    trace = read_trace(path, "native", options=STRICT)
    assert {j.job_id: (j.pods, j.gpus_per_pod) for j in trace.jobs} == {"big": (MAX_PODS, 1), "wide": (1, 64)}


def test_native_parquet_nan_is_a_bad_value_and_null_the_default(tmp_path: Path) -> None:
    table = pa.table(
        {
            "job_id": ["a", "b"],
            "submit_s": [0.0, 1.0],
            "duration_s": [10.0, 10.0],
            "pods": [1, 1],
            "gpus_per_pod": [1, 1],
            "team": ["t", "t"],
            "tier": ["training", "training"],
            "min_runtime_s": pa.array([None, math.nan], type=pa.float64()),
        }
    )
    path = tmp_path / "nan.parquet"
    pq.write_table(table, path)
    check_bad_row(path, "native", 3, "min_runtime_s", "nan is not a finite number", kept=1)
    assert read_trace(path, "native").jobs[0].min_runtime_s is None


OTHER_BAD = [
    # (format, file name, content, row, column, words)
    (
        "philly",
        "ph.csv",
        PHILLY_HEAD + PHILLY_OK + b"2017-10-01 00:00:00,60,1000000000000,0,vc1\n",
        3,
        "num_gpus",
        "is above 100,000",
    ),
    (
        "philly",
        "ph.csv",
        PHILLY_HEAD + PHILLY_OK + b"2017-10-01 00:00:00,1e12,1,0,vc1\n",
        3,
        "duration",
        "10 years",
    ),
    (
        "philly",
        "ph.csv",
        PHILLY_HEAD + PHILLY_OK + b"9999-12-31 00:00:00,60,1,60,vc1\n",
        3,
        "timestamp",
        "outside 1970-01-01 .. 2069-12-31",
    ),
    (
        "philly",
        "ph.csv",
        PHILLY_HEAD + PHILLY_OK + b"0001-01-01 00:00:00,60,1,60,vc1\n",
        3,
        "timestamp",
        "outside 1970-01-01 .. 2069-12-31",
    ),
    (
        "philly",
        "log",
        log(job("j0"), job("j1").replace("2017-10-01 00:02:00", "2069-10-01 00:02:00")),
        2,
        "attempts[0].end_time",
        "10 years",
    ),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + b"pod-x,1000,1024,65,1000,,LS,Running,0,100,10\n",
        3,
        "num_gpu",
        "65 is above 64",
    ),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + b"pod-x,1000,1024,1,1000,,LS,Running,1e308,1e308,10\n",
        3,
        "creation_time",
        "1e+308 is above",
    ),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + b"pod-x,1000,1024,1,1000,,LS,Running,0,2e9,10\n",
        3,
        "deletion_time",
        "10 years",
    ),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + b"pod-x,1e20,1024,1,1000,,LS,Running,0,100,10\n",
        3,
        "cpu_milli",
        "is above 10,000,000",
    ),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + b"pod-x,1000,1e20,1,1000,,LS,Running,0,100,10\n",
        3,
        "memory_mib",
        "is above",
    ),
    (
        "helios",
        "h.csv",
        HELIOS_HEAD + HELIOS_OK + HELIOS_OK.replace(b"1,u1,vc1,1,1,1,", b"2,u1,vc1,0,1,1e12,"),
        3,
        "node_num",
        "is above 100,000",
    ),
    (
        "helios",
        "h.csv",
        HELIOS_HEAD + HELIOS_OK + HELIOS_OK.replace(b"1,u1,vc1,1,", b"2,u1,vc1,1000000000039,"),
        3,
        "gpu_num",
        "is above 100,000",
    ),
    (
        "helios",
        "h.csv",
        HELIOS_HEAD
        + HELIOS_OK
        + HELIOS_OK.replace(b"1,u1,", b"2,u1,")
        .replace(b",60,0", b",,0")
        .replace(b"2020-07-01 08:01:00", b"2060-07-01 08:01:00"),
        3,
        "end_time",
        "10 years",
    ),
    (
        "helios",
        "h.csv",
        HELIOS_HEAD + HELIOS_OK + HELIOS_OK.replace(b"1,u1,vc1,1,1,", b"2,u1,vc1,1,1e12,"),
        3,
        "cpu_num",
        "per pod",
    ),
]


@pytest.mark.parametrize(("fmt", "name", "content", "row", "column", "words"), OTHER_BAD)
def test_values_past_the_bounds_are_bad_rows(
    tmp_path: Path, fmt: str, name: str, content: bytes, row: int, column: str, words: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    check_bad_row(path, fmt, row, column, words, kept=1)


def test_pai_values_past_the_bounds_are_bad_rows(tmp_path: Path) -> None:
    jobs, tasks = tmp_path / "pai_job_table.csv", tmp_path / "pai_task_table.csv"
    jobs.write_text("j1,i1,u1,Terminated,10.0,20.0\nj2,i2,u1,Terminated,1e308,20.0\n")
    tasks.write_text(
        "j1,a,1.0,Terminated,10.0,20.0,600.0,1.0,100.0,T4\n"
        "j1,b,1000000000000,Terminated,10.0,20.0,600.0,1.0,100.0,T4\n"
        "j1,c,1.0,Terminated,10.0,20.0,600.0,1.0,1e9,T4\n"
        "j1,d,1.0,Terminated,10.0,1e10,600.0,1.0,100.0,T4\n"
        "j1,e,1.0,Terminated,10.0,20.0,1e12,1.0,100.0,T4\n"
        "j1,f,1.0,Terminated,10.0,20.0,600.0,1e12,100.0,T4\n"
    )
    trace = read_trace(jobs, "pai")
    assert [j.job_id for j in trace.jobs] == ["j1/a"]
    bad = [
        (line.path, line.row, line.column)
        for line in trace.skipped
        if isinstance(line, SkippedRow) and line.bad
    ]
    assert bad == [
        (str(jobs), 2, "start_time"),
        (str(tasks), 2, "inst_num"),
        (str(tasks), 3, "plan_gpu"),
        (str(tasks), 4, "end_time"),
        (str(tasks), 5, "plan_cpu"),
        (str(tasks), 6, "plan_mem"),
    ]


def test_max_gpus_per_pod_is_bounded_too() -> None:
    with pytest.raises(InvalidInput, match="from 1 to 64"):
        TraceOptions(max_gpus_per_pod=65)


def test_skipped_lines_are_strings_that_carry_their_parts() -> None:
    line = SkippedRow.of(TraceError("f.csv", 3, "pods", "is odd", "fix it"))
    assert line == "f.csv, row 3: pods: is odd; fix it"
    assert (line.path, line.row, line.column, line.problem, line.fix, line.bad) == (
        "f.csv",
        3,
        "pods",
        "is odd",
        "fix it",
        True,
    )
    copy = pickle.loads(pickle.dumps(line))  # packing runs in worker processes
    assert copy == line and copy.row == 3 and copy.bad


# --- the simulate command -------------------------------------------------------------------


def simulate(trace: Path, fmt: str, out: Path, *extra: str) -> int:
    return main(
        [
            "simulate",
            "--trace",
            str(trace),
            "--format",
            fmt,
            "--gpus",
            "8",
            "--policy",
            "fifo",
            "--no-progress",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_simulate_counts_every_skipped_row_and_writes_them_all(tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.csv"
    bad = b"".join(
        f"pod-{k},1000,1024,1,1000,,LS,Running,0,{value},10\n".encode()
        for k, value in enumerate(["abc", "-1", "1e308", "5", "x", "y", "z"])
    )
    path.write_bytes(
        OPENB_HEAD
        + OPENB_OK
        + bad
        + b"pod-gone,1000,1024,1,1000,,LS,Unknown,50,,\n"
        + b"pod-\xe9,1000,1024,1,1000,,LS,Running,0,100,10\n"
    )
    out = tmp_path / "out"
    assert simulate(path, "openb", out) == 0
    printed = capsys.readouterr().out
    assert "9 rows skipped" in printed
    assert printed.count("  skipped: ") == 5
    listed = out / "skipped.csv"
    assert f"... 4 more; all 9 are listed in {listed}" in printed
    with open(listed, newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["file", "row", "kind", "column", "problem", "fix"]
    assert [(r[0], r[1], r[2], r[3]) for r in table[1:]] == [
        *[(str(path), str(row), "bad", "deletion_time") for row in range(3, 10)],
        (str(path), "10", "left out", ""),
        (str(path), "11", "bad", "name"),
    ]
    assert "not UTF-8" in table[-1][4] and table[-1][5]
    assert table[-2][4] == "no deletion_time: the pod has no end, so its runtime is unknown"

    # a clean trace leaves a header-only list, so the old one cannot be mistaken for its own
    path.write_bytes(OPENB_HEAD + OPENB_OK)
    assert simulate(path, "openb", out) == 0
    assert "skipped" not in capsys.readouterr().out
    assert listed.read_text().splitlines() == ["file,row,kind,column,problem,fix"]


def test_simulate_strict_stops_at_the_first_bad_row(tmp_path: Path, capsys) -> None:
    path = tmp_path / "n.csv"
    path.write_bytes(NATIVE_HEAD + NATIVE_OK + b"x,0,60,1000000000000,1,t,training,,\n")
    assert simulate(path, "native", tmp_path / "out", "--strict") == 2
    err = capsys.readouterr().err
    assert f"{path}, row 3: pods: 1,000,000,000,000 is above 100,000" in err


def test_simulate_help_says_where_all_skipped_rows_go(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "OUT/skipped.csv" in text and "--strict" in text
