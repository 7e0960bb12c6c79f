"""Trace readers against the real traces in ../shared/traces and small hand-made files.

The real traces are read in place: Path(__file__).resolve().parents[2] / "shared" / "traces".
CI always has that folder, so its absence is a failure, not a skip.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scheduler.core.errors import InvalidInput
from simulator.model import Job, Trace, TraceError
from simulator.traces import FORMATS, TraceOptions, read_trace, write_native
from simulator.traces.common import split_pods
from simulator.traces.helios import pods_for
from tests.builders import SHARED_TRACES as SHARED
from tests.builders import shared_trace

DATA = Path(__file__).resolve().parent / "data" / "traces"
OPENB = SHARED / "openb" / "openb_pod_list_default.csv"
PHILLY = SHARED / "philly" / "philly.csv"


@pytest.fixture(scope="module")
def openb() -> Trace:
    return read_trace(shared_trace("openb", OPENB.name), "openb")


@pytest.fixture(scope="module")
def philly() -> tuple[Trace, float]:
    start = time.perf_counter()
    trace = read_trace(shared_trace("philly", PHILLY.name), "philly")
    return trace, time.perf_counter() - start


def by_id(trace: Trace) -> dict[str, Job]:
    return {job.job_id: job for job in trace.jobs}


def assert_sorted(trace: Trace) -> None:
    keys = [(job.submit_s, job.job_id) for job in trace.jobs]
    assert keys == sorted(keys)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- openb ---------------------------------------------------------------------------


def test_openb_default_counts(openb: Trace) -> None:
    assert openb.name == "openb_pod_list_default"
    assert len(openb.jobs) == 8152
    assert openb.skipped == ()
    assert openb.epoch_s == 0.0  # openb times are offsets from an unknown date
    # LS 4,647 pods; Burstable 100 + Guaranteed 7; BE 3,398
    assert Counter(job.tier for job in openb.jobs) == {"production": 4647, "training": 107, "scavenger": 3398}
    shapes = Counter(
        "shared" if job.gpu_milli else ("cpu" if job.gpus_per_pod == 0 else f"{job.gpus_per_pod}gpu")
        for job in openb.jobs
    )
    assert shapes == {"shared": 3078, "cpu": 1088, "1gpu": 3911, "2gpu": 16, "4gpu": 15, "8gpu": 44}
    assert {job.pods for job in openb.jobs} == {1}
    assert {job.team for job in openb.jobs} == {"openb"}
    assert all(job.gpu_models == () for job in openb.jobs)
    assert_sorted(openb)


def test_openb_known_rows(openb: Trace) -> None:
    jobs = by_id(openb)
    # openb-pod-0001,6000,12288,1,460,,LS,Running,427061,12902960,427061
    assert jobs["openb-pod-0001"] == Job(
        job_id="openb-pod-0001",
        submit_s=427061.0,
        duration_s=12902960.0 - 427061.0,
        pods=1,
        gpus_per_pod=0,
        team="openb",
        tier="production",
        gpu_milli=460,
        cpu_milli=6000,
        memory_mib=12288,
    )
    # openb-pod-0017,88000,327680,8,1000,,Burstable,Succeeded,9437497,10769854,9437497
    pod17 = jobs["openb-pod-0017"]
    assert (pod17.gpus_per_pod, pod17.gpu_milli, pod17.tier) == (8, 0, "training")
    assert pod17.duration_s == 10769854 - 9437497
    # never scheduled: openb-pod-0061,11908,47104,1,1000,,BE,Pending,10001278,10001403,
    pod61 = jobs["openb-pod-0061"]
    assert (pod61.submit_s, pod61.duration_s, pod61.tier, pod61.gpus_per_pod) == (
        10001278.0,
        125.0,
        "scavenger",
        1,
    )


def test_openb_gpu_spec_lists_models_once() -> None:
    trace = read_trace(shared_trace("openb", "openb_pod_list_gpuspec33.csv"), "openb")
    # openb-pod-0598,...,V100M16|V100M32|V100M32,LS,Running,10261340,10267864,10261340
    pod = by_id(trace)["openb-pod-0598"]
    assert pod.gpu_models == ("V100M16", "V100M32")
    assert pod.duration_s == 6524.0
    assert sum(1 for job in trace.jobs if job.gpu_models) == 2388


def test_openb_teams_are_a_stable_hash_of_the_name(openb: Trace) -> None:
    trace = read_trace(shared_trace("openb", OPENB.name), "openb", options=TraceOptions(openb_teams=4))
    teams = Counter(job.team for job in trace.jobs)
    assert set(teams) == {"team-0", "team-1", "team-2", "team-3"}
    assert sum(teams.values()) == 8152
    assert min(teams.values()) > 1800  # an even spread
    for job in trace.jobs[:50]:
        assert job.team == f"team-{zlib.crc32(job.job_id.encode()) % 4}"
    again = read_trace(shared_trace("openb", OPENB.name), "openb", options=TraceOptions(openb_teams=4))
    assert again == trace
    assert [replace(job, team="openb") for job in trace.jobs] == list(openb.jobs)


def test_openb_qos_tiers_are_configurable() -> None:
    tiers = {"LS": "production", "Burstable": "production", "Guaranteed": "training", "BE": "training"}
    trace = read_trace(shared_trace("openb", OPENB.name), "openb", options=TraceOptions(qos_tiers=tiers))
    assert Counter(job.tier for job in trace.jobs) == {"production": 4747, "training": 3405}


def test_openb_unmapped_qos_rows_are_listed_or_refused() -> None:
    options = TraceOptions(qos_tiers={"LS": "production", "BE": "scavenger"})
    trace = read_trace(shared_trace("openb", OPENB.name), "openb", options=options)
    assert len(trace.jobs) == 8152 - 107
    assert len(trace.skipped) == 107
    assert all(": qos: 'Burstable' has no tier" in line or "'Guaranteed'" in line for line in trace.skipped)
    with pytest.raises(TraceError) as caught:
        read_trace(shared_trace("openb", OPENB.name), "openb", options=replace(options, strict=True))
    assert caught.value.column == "qos"
    assert str(caught.value) == trace.skipped[0]


def test_openb_samples_without_times_are_refused() -> None:
    with pytest.raises(TraceError) as caught:
        read_trace(shared_trace("openb", "openb_pod_list_multigpu50.csv"), "openb")
    assert (caught.value.row, caught.value.column) == (1, "creation_time")
    assert "openb_pod_list_default.csv" in str(caught.value)


# --- philly --------------------------------------------------------------------------


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_philly_csv(philly: tuple[Trace, float]) -> None:
    trace, seconds = philly
    assert seconds < 10, f"reading philly.csv took {seconds:.1f} s"
    assert len(trace.jobs) == 82247
    assert trace.skipped == ()  # the file's trailing blank line is not a row
    teams = Counter(job.team for job in trace.jobs)
    assert len(teams) == 15
    assert teams["6214e9"] == 41226 and teams["ee9e8c"] == 1511
    # row 31568: 2017-09-04 10:30:41,2240194.0,8,17921552.0,7f04ca (the earliest)
    first = trace.jobs[0]
    assert first == Job("philly-031568", 0.0, 2240194.0, 1, 8, "7f04ca", "training")
    last = trace.jobs[-1]  # row 62255: 2017-12-22 08:02:11,64.0,1,64.0,11cb48
    assert last.job_id == "philly-062255"
    assert last.submit_s == utc("2017-12-22 08:02:11") - utc("2017-09-04 10:30:41") == 9408690.0
    assert trace.epoch_s == utc("2017-09-04 10:30:41")
    # num_gpus x duration equals the gpu_time column in every row: 3,521,082,502 GPU-seconds
    assert sum(job.gpus * job.duration_s for job in trace.jobs) == pytest.approx(3521082502.0, rel=1e-12)
    hours = Counter()
    for job in trace.jobs:
        hours[job.team] += job.gpus * job.duration_s / 3600
    assert hours["ee9e8c"] == pytest.approx(256112.18, abs=0.01)
    assert hours["6214e9"] == pytest.approx(97184.82, abs=0.01)
    shapes = Counter((job.pods, job.gpus_per_pod) for job in trace.jobs)
    assert shapes[(1, 1)] == 76627 and shapes[(2, 6)] == 7 and shapes[(3, 8)] == 7 and shapes[(16, 8)] == 3
    assert all(job.gpus_per_pod <= 8 for job in trace.jobs)
    assert len({job.job_id for job in trace.jobs}) == 82247  # 65 repeated rows stay distinct jobs
    assert_sorted(trace)


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        (0, (1, 0)),
        (1, (1, 1)),
        (8, (1, 8)),
        (10, (2, 5)),
        (11, (11, 1)),
        (12, (2, 6)),
        (16, (2, 8)),
        (24, (3, 8)),
        (128, (16, 8)),
    ],
)
def test_split_pods(gpus: int, expected: tuple[int, int]) -> None:
    assert split_pods(gpus, 8) == expected


def test_philly_job_log() -> None:
    trace = read_trace(DATA / "philly" / "cluster_job_log", "philly")
    assert trace.jobs == (
        # 4 GPUs over two machines, submitted first (epoch), 5 minutes
        Job("application_1506638472019_20005", 0.0, 300.0, 1, 4, "c4e6f1", "training"),
        # 16 GPUs over two machines, 1 hour
        Job("application_1506638472019_20001", 3600.0, 3600.0, 2, 8, "5f1e0d", "training"),
        # retried: the last attempt (2 GPUs, 2 hours) counts
        Job("application_1506638472019_20002", 3900.0, 7200.0, 1, 2, "8b3d4a", "training"),
    )
    path = DATA / "philly" / "cluster_job_log"
    assert trace.epoch_s == utc("2017-09-30 23:00:00")
    assert trace.skipped == (
        f"{path}, row 3: skipped: no scheduling attempt: the job never ran",
        f"{path}, row 4: skipped: the last attempt has no end_time: "
        "the job was still running when the log was cut",
    )


# --- pai, helios, native (hand-made files) --------------------------------------------

PAI = DATA / "pai" / "pai_job_table.csv"


def test_pai_tasks_joined_to_jobs() -> None:
    trace = read_trace(PAI, "pai")
    jobs = by_id(trace)
    assert list(jobs) == [
        "7d1f0a2b3c4d5e6f70819a2b/worker",
        "8e2a1b3c4d5e6f708192a3b4/ps",
        "8e2a1b3c4d5e6f708192a3b4/worker",
        "9f3b2c4d5e6f708192a3b4c5/tensorflow",
    ]
    shared_gpu = jobs["7d1f0a2b3c4d5e6f70819a2b/worker"]  # 2 instances at plan_gpu 50
    assert (shared_gpu.pods, shared_gpu.gpus_per_pod, shared_gpu.gpu_milli) == (2, 0, 500)
    assert (shared_gpu.submit_s, shared_gpu.duration_s) == (1000.0, 4990.0 - 1010.0)
    assert (shared_gpu.cpu_milli, shared_gpu.memory_mib, shared_gpu.team) == (6000, 30000, "a1c3e5f70921")
    assert shared_gpu.gpu_models == ("T4",)  # gpu_type_spec of the group tag table
    ps = jobs["8e2a1b3c4d5e6f708192a3b4/ps"]  # empty plan_gpu: CPU only
    assert (ps.pods, ps.gpus_per_pod, ps.gpu_milli, ps.submit_s, ps.duration_s) == (1, 0, 0, 1200.0, 7600.0)
    worker = jobs["8e2a1b3c4d5e6f708192a3b4/worker"]  # 4 instances at plan_gpu 200
    assert (worker.pods, worker.gpus_per_pod, worker.gpu_models) == (4, 2, ())
    assert jobs["9f3b2c4d5e6f708192a3b4c5/tensorflow"].gpus == 1.0
    assert {job.tier for job in trace.jobs} == {"training"}
    tasks = DATA / "pai" / "pai_task_table.csv"
    assert trace.skipped == (
        f"{tasks}, row 5: skipped: no start_time or end_time: "
        "the task was still running or waiting when the trace was cut",
        f"{tasks}, row 6: skipped: its job 'c26e5f708192a3b4c5d6e7f8' is not in pai_job_table.csv",
        f"{PAI}, row 5: skipped: no task of job 'b15d4e6f708192a3b4c5d6e7' in pai_task_table.csv",
    )


def test_pai_teams_by_group(tmp_path: Path) -> None:
    trace = read_trace(PAI, "pai", options=TraceOptions(pai_team="group"))
    assert [job.team for job in trace.jobs] == [
        "5b0f2c1d9e8a7b6c5d4e3f2a1b0c9d8e",
        "6c1a3d2e0f9b8c7d6e5f4a3b2c1d0e9f",
        "6c1a3d2e0f9b8c7d6e5f4a3b2c1d0e9f",
        "5b0f2c1d9e8a7b6c5d4e3f2a1b0c9d8e",
    ]
    # an explicit task table; without a group table, 'group' is refused up front
    jobs = write(tmp_path, "jobs.csv", PAI.read_text())
    options = TraceOptions(pai_task_table=DATA / "pai" / "pai_task_table.csv")
    alone = read_trace(jobs, "pai", options=options)
    assert len(alone.jobs) == 4 and all(job.gpu_models == () for job in alone.jobs)
    with pytest.raises(FileNotFoundError, match="pai_group_table"):
        read_trace(jobs, "pai", options=replace(options, pai_team="group"))
    with pytest.raises(FileNotFoundError, match="pai_task_table"):
        read_trace(jobs, "pai")


def test_helios_cluster_log() -> None:
    path = DATA / "helios" / "cluster_log.csv"
    trace = read_trace(path, "helios")
    shapes = {
        job.job_id: (job.submit_s, job.duration_s, job.pods, job.gpus_per_pod, job.team) for job in trace.jobs
    }
    assert shapes == {
        "3100001": (0.0, 3600.0, 1, 1, "vcQ7m"),
        "3100002": (600.0, 7200.0, 2, 8, "vcZ4t"),  # 16 GPUs on 2 nodes
        "3100003": (1200.0, 300.0, 3, 4, "vcZ4t"),  # 12 GPUs on 3 nodes
        "3100004": (1800.0, 600.0, 1, 0, "vcQ7m"),  # CPU only
        "3100005": (2400.0, 86400.0, 1, 6, "vcH1n"),  # 6 GPUs do not divide onto 4 nodes
        "3100007": (5400.0, 1800.0, 1, 8, "vcQ7m"),  # no duration: end - start
    }
    assert by_id(trace)["3100002"].cpu_milli == 32000
    assert trace.epoch_s == utc("2020-07-01 08:00:00")
    assert trace.skipped == (
        f"{path}, row 7: skipped: no duration and no start_time/end_time: the job never ran",
    )
    assert pods_for(16, 1, 8) == (2, 8)  # more than a node's GPUs on one node: split anyway


NATIVE = DATA / "native" / "jobs.csv"


def test_native_csv() -> None:
    trace = read_trace(NATIVE, "native")
    assert [job.job_id for job in trace.jobs] == ["train-llm", "serve-bert", "etl-cpu", "sweep-17"]
    assert trace.jobs[0] == Job(
        "train-llm",
        0.0,
        86400.0,
        4,
        8,
        "vision",
        "training",
        gpu_models=("H100", "A100"),
        cpu_milli=96000,
        memory_mib=819200,
        topology_required="network.gpufair.io/leaf",
        min_runtime_s=900.0,
        checkpoint_s=1800.0,
    )
    serve = trace.jobs[1]
    assert (serve.submit_s, serve.gpu_milli, serve.gpus, serve.tier, serve.min_runtime_s) == (
        30.5,
        250,
        0.5,
        "production",
        None,
    )
    assert trace.jobs[3].topology_preferred == "nvidia.com/gpu.clique"
    assert trace.skipped == ()


def test_native_round_trips_through_parquet_and_csv(tmp_path: Path, openb: Trace) -> None:
    hand = read_trace(NATIVE, "native")
    for source in (hand, openb):
        for name in ("jobs.parquet", "jobs.csv"):
            path = tmp_path / name
            write_native(source, path)
            back = read_trace(path, "native")
            assert back.jobs == source.jobs
            assert back.skipped == ()
    # Parquet is recognised by content, whatever the name
    write_native(hand.jobs, tmp_path / "jobs.parquet")
    (tmp_path / "jobs.parquet").rename(tmp_path / "jobs.bin")
    assert read_trace(tmp_path / "jobs.bin", "native").jobs == hand.jobs


def test_native_parquet_bad_row_names_row_and_column(tmp_path: Path) -> None:
    table = pa.table(
        {
            "job_id": ["a", "b"],
            "submit_s": [0.0, 1.0],
            "duration_s": [10.0, 10.0],
            "pods": [1, 1],
            "gpus_per_pod": [1, 1],
            "team": ["t", "t"],
            "tier": ["training", "gold"],
        }
    )
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    trace = read_trace(path, "native")
    assert [job.job_id for job in trace.jobs] == ["a"]
    assert trace.skipped == (
        f"{path}, row 3: tier: 'gold' is not a tier; use one of production, training, scavenger",
    )


# --- bad input -----------------------------------------------------------------------

OPENB_HEAD = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)
OPENB_OK = "pod-ok,1000,1024,1,1000,,LS,Running,0,100,10\n"
PHILLY_HEAD = "timestamp,duration,num_gpus,gpu_time,cluster\n"
PHILLY_OK = "2017-10-01 00:00:00,60.0,1,60.0,vc1\n"
HELIOS_HEAD = "job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,duration,queue\n"
HELIOS_OK = "1,u1,vc1,1,1,1,COMPLETED,2020-07-01 08:00:00,2020-07-01 08:00:00,2020-07-01 08:01:00,60,0\n"
NATIVE_HEAD = "job_id,submit_s,duration_s,pods,gpus_per_pod,team,tier\n"
NATIVE_OK = "ok,0,60,1,1,t,training\n"

BAD = [
    # (format, file name, content, row, column, words of the message)
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + "pod-x,1000,1024,1,1000,,LS,Running,0,abc,10\n",
        3,
        "deletion_time",
        "'abc' is not a number",
    ),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + "pod-x,1000,1024,1.5,1000,,LS,Running,0,100,10\n",
        3,
        "num_gpu",
        "is not a whole number",
    ),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + "pod-x,1000,1024,1,1000,,GOLD,Running,0,100,10\n",
        3,
        "qos",
        "TraceOptions.qos_tiers",
    ),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + "pod-x,1000,1024,1,1000,,LS,Running,0,5,10\n",
        3,
        "deletion_time",
        "before scheduled_time",
    ),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + "pod-x,1000,1024,1,0,,LS,Running,0,100,10\n",
        3,
        "gpu_milli",
        "is 0",
    ),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + "pod-ok,1000,1024,1,1000,,LS,Running,0,100,10\n",
        3,
        "name",
        "already used by row 2",
    ),
    (
        "openb",
        "p.csv",
        OPENB_HEAD + OPENB_OK + "pod-x,1000,1024,1,1000,,LS,Running,0,100\n",
        3,
        "scheduled_time",
        "10 fields",
    ),
    ("openb", "p.csv", OPENB_HEAD.replace(",qos", ",class") + OPENB_OK, 1, "qos", "column is missing"),
    (
        "philly",
        "ph.csv",
        PHILLY_HEAD + PHILLY_OK + "2017-10-01 00:00:00,soon,1,60.0,vc1\n",
        3,
        "duration",
        "'soon' is not a number",
    ),
    (
        "philly",
        "ph.csv",
        PHILLY_HEAD + PHILLY_OK + "2017-10-01 00:00:00,-5.0,1,-5.0,vc1\n",
        3,
        "duration",
        "-5 is below 0",
    ),
    (
        "philly",
        "ph.csv",
        PHILLY_HEAD + PHILLY_OK + "2017-10-01 00:00:00,60.0,2.5,150.0,vc1\n",
        3,
        "num_gpus",
        "not a whole number",
    ),
    (
        "philly",
        "ph.csv",
        PHILLY_HEAD + PHILLY_OK + "2017-13-45 00:00:00,60.0,1,60.0,vc1\n",
        3,
        "timestamp",
        "YYYY-MM-DD HH:MM:SS",
    ),
    (
        "philly",
        "ph.csv",
        PHILLY_HEAD + PHILLY_OK + "2017-10-01 00:00:00,60.0,1,60.0,\n",
        3,
        "cluster",
        "is empty",
    ),
    (
        "philly",
        "ph.csv",
        "timestamp,duration,num_gpus,gpu_time\n2017-10-01 00:00:00,60.0,1,60.0\n",
        1,
        "cluster",
        "column is missing",
    ),
    (
        "helios",
        "h.csv",
        HELIOS_HEAD + HELIOS_OK + HELIOS_OK.replace(",vc1,1,", ",vc1,two,").replace("1,", "2,", 1),
        3,
        "gpu_num",
        "'two'",
    ),
    (
        "helios",
        "h.csv",
        HELIOS_HEAD + HELIOS_OK + HELIOS_OK.replace(",60,0", ",-1,0").replace("1,", "2,", 1),
        3,
        "duration",
        "below 0",
    ),
    ("helios", "h.csv", HELIOS_HEAD.replace(",vc,", ",cluster,") + HELIOS_OK, 1, "vc", "column is missing"),
    (
        "native",
        "n.csv",
        NATIVE_HEAD + NATIVE_OK + "x,0,long,1,1,t,training\n",
        3,
        "duration_s",
        "'long' is not a number",
    ),
    (
        "native",
        "n.csv",
        NATIVE_HEAD + NATIVE_OK + "x,0,-60,1,1,t,training\n",
        3,
        "duration_s",
        "-60 is below 0",
    ),
    ("native", "n.csv", NATIVE_HEAD + NATIVE_OK + "x,0,60,1,1,t,gold\n", 3, "tier", "'gold' is not a tier"),
    ("native", "n.csv", NATIVE_HEAD + NATIVE_OK + "x,0,60,0,1,t,training\n", 3, "pods", "0 is below 1"),
    (
        "native",
        "n.csv",
        NATIVE_HEAD + NATIVE_OK + "ok,0,60,1,1,t,training\n",
        3,
        "job_id",
        "already used by row 2",
    ),
    ("native", "n.csv", NATIVE_HEAD + NATIVE_OK + "x,0,60,1,1,,training\n", 3, "team", "is empty"),
    (
        "native",
        "n.csv",
        NATIVE_HEAD.replace("\n", ",gpu_milli\n") + "ok,0,60,1,1,t,training,500\n",
        2,
        "gpu_milli",
        "set with gpus_per_pod 1",
    ),
    (
        "native",
        "n.csv",
        NATIVE_HEAD.replace("\n", ",gpu_models\n") + "ok,0,60,1,1,t,training,T4\n",
        1,
        "gpu_models",
        "not a column",
    ),
    ("native", "n.csv", NATIVE_HEAD.replace(",tier", "") + "ok,0,60,1,1,t\n", 1, "tier", "column is missing"),
    ("native", "n.csv", "", 1, "header", "the file is empty"),
]


@pytest.mark.parametrize(("fmt", "name", "text", "row", "column", "words"), BAD)
def test_bad_input_names_file_row_and_column(
    tmp_path: Path, fmt: str, name: str, text: str, row: int, column: str, words: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(TraceError) as caught:
        read_trace(path, fmt, options=TraceOptions(strict=True))
    error = caught.value
    assert (error.path, error.row, error.column) == (str(path), row, column)
    assert words in str(error)
    assert str(error).startswith(f"{path}, row {row}: {column}: ")
    assert error.fix  # every message says how to fix it
    if row == 1:  # a file that is not of its format is refused even when not strict
        with pytest.raises(TraceError):
            read_trace(path, fmt)
    else:  # otherwise the row is skipped, listed with the same message, and the rest kept
        trace = read_trace(path, fmt)
        assert trace.skipped == (str(error),)
        assert len(trace.jobs) == row - 2


def test_bad_job_log_entries(tmp_path: Path) -> None:
    good = (
        '{"jobid": "j1", "vc": "v", "submitted_time": "2017-10-01 00:00:00", "attempts": ['
        '{"start_time": "2017-10-01 00:01:00", "end_time": "2017-10-01 00:02:00", '
        '"detail": [{"ip": "m1", "gpus": ["gpu0"]}]}]}'
    )
    cases = [
        (
            good.replace('"end_time": "2017-10-01 00:02:00"', '"end_time": "2017-10-01 00:00:30"'),
            "attempts[0].end_time",
            "before start_time",
        ),
        (good.replace('"gpus": ["gpu0"]', '"gpus": "gpu0"'), "attempts[0].detail[0].gpus", "is not a list"),
        (good.replace('"vc": "v", ', ""), "vc", "is empty"),
        (good.replace("2017-10-01 00:00:00", "yesterday"), "submitted_time", "is not a date"),
    ]
    for entry, column, words in cases:
        path = write(tmp_path, "log", f"[{good.replace('j1', 'j0')}, {entry}]")
        with pytest.raises(TraceError) as caught:
            read_trace(path, "philly", options=TraceOptions(strict=True))
        assert (caught.value.row, caught.value.column) == (2, column)
        assert words in str(caught.value)
        assert read_trace(path, "philly").skipped == (str(caught.value),)
    path = write(tmp_path, "log", '{"jobs": []}')
    with pytest.raises(TraceError, match="is not a list of jobs"):
        read_trace(path, "philly")


def test_bad_pai_rows(tmp_path: Path) -> None:
    (tmp_path / "pai_job_table.csv").write_text("j1,i1,u1,Terminated,10.0,20.0\nj2,i2,u1,Terminated\n")
    (tmp_path / "pai_task_table.csv").write_text(
        "j1,worker,x,Terminated,10.0,20.0,600.0,1.0,100.0,T4\nj1,ps,1.0,Terminated,30.0,20.0,600.0,1.0,,\n"
    )
    trace = read_trace(tmp_path / "pai_job_table.csv", "pai")
    assert trace.jobs == ()
    jobs, tasks = tmp_path / "pai_job_table.csv", tmp_path / "pai_task_table.csv"
    assert trace.skipped == (
        f"{jobs}, row 2: start_time: the row has 4 fields, the file has 6 columns; "
        "fill in every column (an empty field still needs its comma)",
        f"{tasks}, row 1: inst_num: 'x' is not a number; write inst_num as a number of instances",
        f"{tasks}, row 2: end_time: 20 is before start_time 30; "
        "a task ends after it starts; correct the times or remove the row",
    )
    with pytest.raises(TraceError) as caught:
        read_trace(jobs, "pai", options=TraceOptions(strict=True))
    assert (caught.value.row, caught.value.column) == (2, "start_time")


def test_formats_and_options_are_checked() -> None:
    assert FORMATS == ("openb", "philly", "pai", "helios", "native")
    with pytest.raises(InvalidInput, match="'slurm' is not a trace format"):
        read_trace(NATIVE, "slurm")
    with pytest.raises(InvalidInput, match="qos_tiers"):
        TraceOptions(qos_tiers={"LS": "gold"})
    with pytest.raises(InvalidInput, match="openb_teams"):
        TraceOptions(openb_teams=0)
    with pytest.raises(InvalidInput, match="pai_team"):
        TraceOptions(pai_team="org")
    with pytest.raises(InvalidInput, match="tier"):
        TraceOptions(tier="batch")


def test_rows_left_out_on_purpose_are_listed_even_when_strict(tmp_path: Path) -> None:
    text = (
        OPENB_HEAD
        + OPENB_OK
        + "pod-gone,1000,1024,1,1000,,LS,Unknown,50,,\n"
        + "pod-wait,0,0,0,0,,BE,Pending,60,90,\n"
    )
    path = write(tmp_path, "p.csv", text)
    trace = read_trace(path, "openb", options=TraceOptions(strict=True))
    assert [(job.job_id, job.submit_s, job.duration_s) for job in trace.jobs] == [
        ("pod-ok", 0.0, 90.0),
        ("pod-wait", 60.0, 30.0),  # never scheduled: creation to deletion
    ]
    assert trace.skipped == (
        f"{path}, row 3: skipped: no deletion_time: the pod has no end, so its runtime is unknown",
    )
    strict = TraceOptions(strict=True)
    for path, fmt, count in [
        (DATA / "philly" / "cluster_job_log", "philly", 2),
        (DATA / "helios" / "cluster_log.csv", "helios", 1),
        (PAI, "pai", 3),
    ]:
        assert len(read_trace(path, fmt, options=strict).skipped) == count
