"""Benchmark: does the simulator tell the truth about the live scheduler? (issue 21)

A slice of the Philly trace is played on a real control plane (etcd, kube-apiserver,
kube-controller-manager, KWOK) with the live daemon (`gpufair run`, a separate process, with
a SQLite ledger), time compressed `--compress` times: a job's pods are created at its
submission and run its duration through KWOK's `gpufair.io/fake-runtime`. The benchmark
plays the job controller too: a gang whose pods were evicted is created again (new pods,
same gang), to run from scratch, as a replay restarts an evicted job. When every job has
succeeded, the ledger's history is exported as a trace with its cluster
(`scheduler.ledger.trace`) and replayed in the simulator with the same policy and teams.

The slice: `--jobs` jobs taken in turn from each of `--teams` virtual clusters (their first
jobs of at most `--max-gpus` GPUs, in trace order), durations clipped to
`[--min-duration, --max-duration]` trace seconds, arrivals re-spaced every `--gap` trace
seconds in trace order (the VCs' own arrival times span months; a few minutes of wall time
cannot hold them). Every team has weight 1.

Compared (trace seconds = wall seconds x compress): each job's first start (Kendall's tau of
the start order; median and p95 of |live - sim|), Jain's index of allocation over the
entitled share and utilisation, both time-weighted over the same span and computed by the
same code from each side's timeline, and the number of preemptions. Writes
benchmarks/results/sim_vs_live.json.

    python benchmarks/sim_vs_live.py [--jobs 300] [--teams 15] [--gpus 64] [--compress 60]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.core import Team, load_policy  # noqa: E402
from scheduler.core.fairshare import water_fill  # noqa: E402
from scheduler.daemon.kube import Kube, KubeError, api_client_from  # noqa: E402
from scheduler.devcluster import DevCluster  # noqa: E402
from scheduler.devcluster.processes import free_port  # noqa: E402
from scheduler.devcluster.stages import FAKE_RUNTIME_ANNOTATION  # noqa: E402
from scheduler.ledger import Ledger  # noqa: E402
from scheduler.ledger.history import HistoryGang, HistoryRun, read_history  # noqa: E402
from scheduler.ledger.tables import AuditEntry  # noqa: E402
from scheduler.ledger.trace import history_trace  # noqa: E402
from simulator.cluster_spec import nodes_for_gpus  # noqa: E402
from simulator.engine import Replay  # noqa: E402
from simulator.latency import Latency  # noqa: E402
from simulator.model import Job, RunResult  # noqa: E402
from simulator.traces import read_trace  # noqa: E402

PHILLY = ROOT.parent / "shared" / "traces" / "philly" / "philly.csv"
GANG_LABEL, GANG_SIZE = "gpufair.io/gang", "gpufair.io/gang-size"
SAMPLES = 2000
DEBOUNCE_S = 0.02  # the daemon's least pause between cycles (its default, set in its config)
ON_ARRIVAL_S = 3.0  # wall s: a gang bound this soon after its submission found room at once


def policy_yaml(min_runtime_s: float) -> str:
    """The policy both sides run: defaults, with the min-runtime in wall seconds."""
    return (
        "apiVersion: gpufair.io/v1alpha1\nkind: PolicyConfig\n"
        f"preemption: {{defaultMinRuntime: {min_runtime_s:g}s}}\n"
    )


def philly_slice(
    jobs: int, teams: int, max_gpus: int, min_d: float, max_d: float, gap: float, path: Path = PHILLY
) -> list[Job]:
    trace = read_trace(path, "philly")
    per: dict[str, list[Job]] = defaultdict(list)
    for j in trace.jobs:
        if j.gpus <= max_gpus and len(per[j.team]) < jobs:
            per[j.team].append(j)
    chosen = sorted(per, key=lambda t: (-len(per[t]), t))[:teams]
    # In turn from each team, so a VC with few small jobs leaves its turns to the others.
    taken: list[Job] = []
    for k in range(jobs):
        taken += [per[t][k] for t in chosen if k < len(per[t])]
    picked = sorted(taken[:jobs], key=lambda j: (j.submit_s, j.job_id))
    names = {t: f"vc-{t}" for t in chosen}
    return [
        replace(
            j,
            job_id=f"j{i:04d}",
            team=names[j.team],
            submit_s=i * gap,
            duration_s=min(max_d, max(min_d, j.duration_s)),
        )
        for i, j in enumerate(picked)
    ]


# ------------------------------------------------------------------ the live side


def _pod(job: Job, k: int, attempt: int, compress: float) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": str(job.gpus_per_pod)} if job.gpus_per_pod else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job.job_id}-{attempt}-{k}",
            "namespace": job.team,
            "labels": {GANG_LABEL: job.job_id},
            "annotations": {
                GANG_SIZE: str(job.pods),
                FAKE_RUNTIME_ANNOTATION: f"{job.duration_s / compress:.3f}s",
            },
        },
        "spec": {
            "schedulerName": "gpufair",
            "priorityClassName": "gpufair-training",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/job:1",
                    "resources": {"limits": limits, "requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
        },
    }


@dataclass
class LiveRun:
    t0: float  # wall instant of trace time 0
    finished: int
    recreated: int  # gangs the job controller made anew after an eviction
    recreated_part: int  # ... of those, gangs it found part evicted (it deleted the rest)
    wall_s: float
    ledger: str
    metrics: dict[str, float]  # the daemon's counters over the run (cycles, binds, preemptions)
    pod_starts: dict[str, list[float]]  # gang id -> the startTime of each pod (wall s)
    made: dict[str, list[float]]  # gang id -> when each attempt's pods were created (wall s)


METRICS = {
    "cycles": "gpufair_cycle_duration_seconds_count",
    "cycle_seconds": "gpufair_cycle_duration_seconds_sum",
    "preemptions": "gpufair_preemptions_total",
    "pod_evictions": "gpufair_evictions_total",
    "pod_binds": "gpufair_binds_total",
}


def _scrape(port: int) -> dict[str, float]:
    """The daemon's counters named in METRICS, summed over their labels."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = dict.fromkeys(METRICS, 0.0)
    names = {v: k for k, v in METRICS.items()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names and sample.labels.get("result", "ok") == "ok":
                found[names[sample.name]] += sample.value
    return found


def _create(kube: Kube, job: Job, attempt: int, compress: float) -> None:
    for k in range(job.pods):
        kube.request("POST", f"/api/v1/namespaces/{job.team}/pods", body=_pod(job, k, attempt, compress))


def play_live(
    jobs: Sequence[Job], gpus: int, compress: float, min_runtime_s: float, work: Path, timeout_s: float
) -> LiveRun:
    """The jobs on a dev cluster of `gpus` GPUs under the live daemon; returns when all succeeded."""
    from tests.daemon_support import install_crds_and_priorities, make_namespace, make_team

    ledger = work / "ledger.db"
    config = work / "scheduler.yaml"
    config.write_text(
        "apiVersion: gpufair.io/v1alpha1\nkind: SchedulerConfig\n"
        f"scheduler: {{ledger: {ledger}, accrueEvery: 1s, interval: 1s, debounce: {DEBOUNCE_S:g}s}}\n"
        "policy: {preemption: {defaultMinRuntime: " + f"{min_runtime_s:g}s" + "}}\n"
    )
    log = (work / "scheduler.log").open("ab")
    with DevCluster(work / "cluster") as cluster:
        cluster.create_nodes(nodes_for_gpus(gpus), timeout_s=600)
        kube = Kube(api_client_from(str(cluster.kubeconfig)), qps=0)
        install_crds_and_priorities(kube)
        for team in sorted({j.team for j in jobs}):
            make_namespace(kube, team)
            make_team(kube, team, [team])
        port = free_port()
        argv = [
            sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig", str(cluster.kubeconfig),
            "--config", str(config), "--no-leader-elect", "--listen", f"127.0.0.1:{port}",
            "--log-format", "text",
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            _wait_ready(port, proc)  # synced and idle before the first job
            before = _scrape(port)
            live = _drive(kube, jobs, compress, timeout_s, str(ledger))
            time.sleep(2.0)  # the daemon books the last ends (its history looks every second)
            after = _scrape(port)
            live.metrics = {k: after[k] - before[k] for k in METRICS}
            live.pod_starts = _pod_starts(kube)
            return live
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _pod_starts(kube: Kube) -> dict[str, list[float]]:
    """Every pod's startTime (the kubelet's, whole seconds) by gang id, as the daemon names it
    (`namespace/gang:label`)."""
    pods, _ = kube.list("/api/v1/pods")
    out: dict[str, list[float]] = defaultdict(list)
    for p in pods:
        gang = (p["metadata"].get("labels") or {}).get(GANG_LABEL)
        started = (p.get("status") or {}).get("startTime")
        if gang and started:
            stamp = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
            out[f"{p['metadata']['namespace']}/gang:{gang}"].append(stamp)
    return dict(out)


def _wait_ready(port: int, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Until the daemon's /readyz answers 200 (it has synced and run a cycle)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited ({proc.returncode}); see its log in the work dir")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the daemon was not ready within {timeout_s:g} s")


def _drive(kube: Kube, jobs: Sequence[Job], compress: float, timeout_s: float, ledger: str) -> LiveRun:
    t0 = time.time() + 0.5
    attempts = dict.fromkeys((j.job_id for j in jobs), 0)
    by_id = {j.job_id: j for j in jobs}
    done: set[str] = set()
    created: set[str] = set()
    recreated = recreated_part = 0
    made: dict[str, list[float]] = defaultdict(list)
    stop = threading.Event()

    def submit() -> None:
        for job in sorted(jobs, key=lambda j: j.submit_s):
            delay = t0 + job.submit_s / compress - time.time()
            if delay > 0 and stop.wait(delay):
                return
            made[job.job_id].append(time.time())
            _create(kube, job, 0, compress)
            created.add(job.job_id)

    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    deadline = time.time() + timeout_s
    try:
        while len(done) < len(jobs) and time.time() < deadline:
            time.sleep(0.25)
            # Taken before the list: a job the submitter creates meanwhile is not read as
            # evicted (its pods not in the list yet) and made a second time.
            ready = set(created)
            pods, _ = kube.list("/api/v1/pods")
            state: dict[str, list[str]] = defaultdict(list)
            for p in pods:
                gang = (p["metadata"].get("labels") or {}).get(GANG_LABEL)
                name = p["metadata"]["name"]
                if gang in attempts and name.startswith(f"{gang}-{attempts[gang]}-"):
                    state[gang].append((p.get("status") or {}).get("phase") or "")
            for gid in sorted(ready - done):
                phases = state.get(gid, [])
                job = by_id[gid]
                if len(phases) == job.pods and all(ph == "Succeeded" for ph in phases):
                    done.add(gid)
                elif len(phases) < job.pods or "Failed" in phases:
                    # Evicted (its pods deleted, or stopped as a kubelet stops a deleted pod;
                    # a gang caught part deleted keeps the rest): the job controller deletes
                    # what is left and starts it again.
                    if phases:
                        recreated_part += 1
                        for k in range(job.pods):
                            with contextlib.suppress(KubeError):
                                kube.request(
                                    "DELETE", f"/api/v1/namespaces/{job.team}/pods/{gid}-{attempts[gid]}-{k}"
                                )
                    attempts[gid] += 1
                    recreated += 1
                    made[gid].append(time.time())
                    try:
                        _create(kube, job, attempts[gid], compress)
                    except KubeError:
                        attempts[gid] -= 1
                        recreated -= 1
                        made[gid].pop()
    finally:
        stop.set()
        thread.join(timeout=5)
    made_by_gang = {f"{by_id[j].team}/gang:{j}": times for j, times in made.items()}
    return LiveRun(t0, len(done), recreated, recreated_part, time.time() - t0, ledger, {}, {}, made_by_gang)


# ------------------------------------------------------------------ comparison


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two rankings (ties in either count as neither agreeing nor not)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), 1)
    s = float((dx * dy)[iu].sum())
    nx, ny = float((dx[iu] != 0).sum()), float((dy[iu] != 0).sum())
    return s / math.sqrt(nx * ny) if nx and ny else 1.0


@dataclass
class Timeline:
    """Per team, GPUs held and GPUs asked for (held + waiting), as step functions."""

    held: dict[str, list[tuple[float, float]]]  # team -> (time, +/- GPUs)
    asked: dict[str, list[tuple[float, float]]]


def _at(steps: list[tuple[float, float]], times: np.ndarray) -> np.ndarray:
    if not steps:
        return np.zeros(len(times))
    steps = sorted(steps)
    t = np.array([s[0] for s in steps])
    v = np.cumsum([s[1] for s in steps])
    idx = np.searchsorted(t, times, side="right") - 1
    return np.where(idx >= 0, v[np.maximum(idx, 0)], 0.0)


def fairness(tl: Timeline, teams: Sequence[str], gpus: float, span: float) -> tuple[float, float]:
    """(Jain's index of held / entitled over teams that ask, utilisation), time-averaged over
    [0, span] on `SAMPLES` instants; the entitled share is the weighted water-fill (weights 1)."""
    times = np.linspace(0, span, SAMPLES, endpoint=False)
    held = np.array([_at(tl.held.get(t, []), times) for t in teams])
    asked = np.array([_at(tl.asked.get(t, []), times) for t in teams])
    jains, utils = [], []
    for k in range(len(times)):
        share = water_fill(
            gpus, [1.0] * len(teams), list(asked[:, k]), [0.0] * len(teams), [None] * len(teams)
        )
        x = [h / s for h, s, a in zip(held[:, k], share, asked[:, k], strict=True) if a > 0 and s > 0]
        if x and sum(v * v for v in x) > 0:
            jains.append(sum(x) ** 2 / (len(x) * sum(v * v for v in x)))
        utils.append(held[:, k].sum() / gpus)
    return (float(np.mean(jains)) if jains else 1.0), float(np.mean(utils))


@dataclass
class LivePreemptions:
    """The live side's preemptions, each counted once per gang eviction."""

    by_daemon: int  # gang evictions the daemon carried out (its audit; gpufair_preemptions)
    runs_evicted: int  # runs the history closed as evicted by the daemon (with a preemptor)
    runs_lost: int  # runs closed as evicted with no preemptor (pods gone, not by the daemon)
    young: int  # daemon evictions of a run younger than the min-runtime since its bind
    old_by_creation: int  # ... of those, runs whose pods were older than it since their creation


def live_timeline(
    ledger: str,
    since: float,
    compress: float,
    min_runtime_s: float,
    made: dict[str, list[float]] | None = None,
) -> tuple[Timeline, dict[str, float], LivePreemptions]:
    """From the ledger's history: the timeline, first start per job and preemptions, in trace s."""
    with Ledger(ledger, migrate=False) as led:
        gangs, runs, _ = read_history(led.engine)
        evicts = _gang_evictions(led)
    tl = Timeline(defaultdict(list), defaultdict(list))
    starts: dict[str, float] = {}
    by_daemon = young = by_creation = evicted = lost = 0
    made = made or {}
    for g in gangs:
        job = g.gang_id.split(":", 1)[-1]
        gpus = g.pods * (g.gpus_per_pod + g.gpu_milli / 1000)
        end = None
        gang_runs = runs.get(g.gang_id, [])
        for r in gang_runs:
            a, b = (r.start_s - since) * compress, ((r.end_s or r.start_s) - since) * compress
            tl.held[g.team] += [(a, r.gpus), (b, -r.gpus)]
            evicted += r.outcome == "evicted" and bool(r.ended_by)
            lost += r.outcome == "evicted" and not r.ended_by
            end = b
        for at in evicts.get(g.gang_id, []):
            by_daemon += 1
            began = [r.start_s for r in gang_runs if r.start_s <= at]
            if began and at - max(began) < min_runtime_s:
                young += 1
                # Its pods' creation: a bound pod that has not reported its start reads it.
                born = [c for c in made.get(g.gang_id, []) if c <= max(began)]
                by_creation += bool(born) and at - max(born) >= min_runtime_s
        if g.start_s is not None:
            starts[job] = (g.start_s - since) * compress
        submit = (g.submit_s - since) * compress
        tl.asked[g.team] += [(submit, gpus), (end if end is not None else submit, -gpus)]
    return tl, starts, LivePreemptions(by_daemon, evicted, lost, young, by_creation)


def _gang_evictions(led: Ledger) -> dict[str, list[float]]:
    """Per gang, the instants the daemon evicted it: its pods' evictions from the audit, one
    per gang and instant (the ledger's own count, `gpufair_preemptions`; a gang can be evicted,
    made anew, bound and evicted again within a second)."""
    from sqlmodel import Session, select

    with Session(led.engine) as s:
        rows = s.exec(select(AuditEntry.gang, AuditEntry.at_s).where(AuditEntry.action == "evict")).all()
    out: dict[str, list[float]] = defaultdict(list)
    for gang, at in sorted(rows, key=lambda r: (r[0], r[1])):
        if not out[gang] or at != out[gang][-1]:
            out[gang].append(at)
    return dict(out)


def sim_timeline(result: RunResult) -> tuple[Timeline, dict[str, float], int]:
    """The replay's timeline from its samples (held and asked per team, as the engine kept them)."""
    tl = Timeline(defaultdict(list), defaultdict(list))
    last_h: dict[str, float] = defaultdict(float)
    last_a: dict[str, float] = defaultdict(float)
    for s in result.samples:
        for team in set(s.allocated) | set(last_h):
            v = s.allocated.get(team, 0.0)
            if v != last_h[team]:
                tl.held[team].append((s.t, v - last_h[team]))
                last_h[team] = v
        for team in set(s.demand) | set(last_a):
            v = s.demand.get(team, 0.0)
            if v != last_a[team]:
                tl.asked[team].append((s.t, v - last_a[team]))
                last_a[team] = v
    starts = {j.job_id.split(":", 1)[-1]: j.start_s for j in result.jobs if math.isfinite(j.start_s)}
    return tl, starts, sum(j.preemptions for j in result.jobs)


@dataclass
class Measured:
    """The live control plane's delays as the benchmark measured them, in wall seconds."""

    cycle_s: float  # the loop's pace while things change: max(debounce, a cycle) + a cycle
    cycle_busy_s: float  # mean duration of one cycle
    wall_per_cycle_s: float  # the run's wall over its cycles (idle ones every interval too)
    end_to_bind_s: float | None  # median: a run's end (finishedAt) -> the next gang bound in its room
    arrival_to_bind_s: float | None  # median: submission -> bind, of gangs bound on arrival
    bind_to_running_s: float | None  # median: the bind decision -> the pods' startTime
    samples: dict[str, int] = field(default_factory=dict)

    def latency(self) -> Latency:
        """The replay's options: ticks at the loop's pace, and the rest of end -> bind and of
        arrival -> bind as end and arrival latency (a tick comes half a cycle after an event on
        average). Bind latency stays 0: the history starts a run at its bind decision and ends
        it at finishedAt, so the exported durations already hold the pods' time to start."""
        end = max(0.0, (self.end_to_bind_s or 0.0) - self.cycle_s / 2)
        arrival = max(0.0, (self.arrival_to_bind_s or 0.0) - self.cycle_s / 2)
        return Latency(cycle_s=self.cycle_s, bind_s=0.0, end_s=end, arrival_s=arrival)


def measure(live: LiveRun, gangs: Sequence[HistoryGang], runs: dict[str, list[HistoryRun]]) -> Measured:
    """Measures the delays from the run's own record (see `Measured`)."""
    cycles = live.metrics.get("cycles", 0.0)
    per_cycle = (live.wall_s + 2.0) / cycles if cycles else 0.0
    busy = live.metrics.get("cycle_seconds", 0.0) / cycles if cycles else 0.0
    # The daemon starts a cycle as soon as something changes, after a pause of at least the
    # debounce and the last cycle's duration (scheduler/daemon/daemon.py, `run`).
    cycle = max(DEBOUNCE_S, busy) + busy
    submit = {g.gang_id: g.submit_s for g in gangs}
    every = sorted((r for rs in runs.values() for r in rs), key=lambda r: r.start_s)
    begins = np.array([r.start_s for r in every])
    gaps = []
    for r in every:
        if r.outcome != "succeeded" or r.end_s is None:
            continue
        # The first gang that was waiting at the end and fits in the GPUs it left.
        k = int(np.searchsorted(begins, r.end_s))
        for nxt in every[k:]:
            if nxt.start_s > r.end_s + 30.0:
                break
            if submit.get(nxt.gang_id, math.inf) < r.end_s and nxt.gpus <= r.gpus:
                gaps.append(nxt.start_s - r.end_s)
                break
    at_once = []
    for g in gangs:
        first = runs.get(g.gang_id)
        if first and first[0].start_s - g.submit_s < ON_ARRIVAL_S:
            at_once.append(max(0.0, first[0].start_s - g.submit_s))
    starting = []
    for gid, rs in runs.items():
        stamps = live.pod_starts.get(gid)
        if stamps and rs:
            # The last run's pods are the ones the API still holds.
            starting.append(max(0.0, min(stamps) - rs[-1].start_s))

    def median(xs: list[float]) -> float | None:
        return float(np.median(xs)) if xs else None

    return Measured(
        cycle_s=cycle,
        cycle_busy_s=busy,
        wall_per_cycle_s=per_cycle,
        end_to_bind_s=median(gaps),
        arrival_to_bind_s=median(at_once),
        bind_to_running_s=median(starting),
        samples={
            "cycles": int(cycles),
            "end_to_bind": len(gaps),
            "arrival_to_bind": len(at_once),
            "bind_to_running": len(starting),
        },
    )


class _Replay(Replay):
    """The replay, also keeping how long each evicted run had run (young evictions)."""

    def _setup(self) -> None:
        super()._setup()
        self.evicted_after: list[float] = []

    def _interrupt(self, state: Any, now: float) -> None:
        self.evicted_after.append(now - state.started_s)
        super()._interrupt(state, now)


def _replay_figures(
    hist: Any, team_objs: tuple[Team, ...], policy: Any, latency: Latency, compress: float,
    min_runtime_s: float,
) -> tuple[Timeline, dict[str, float], int, int]:  # fmt: skip
    replay = _Replay(
        hist.trace, hist.nodes, team_objs, "gpufair", policy, sample_every_s=0.0, latency=latency
    )
    result = replay.run()
    # The replay runs in wall seconds like the live side; everything is compared in trace s.
    result = replace(
        result,
        samples=[replace(s, t=s.t * compress) for s in result.samples],
        jobs=[replace(j, start_s=j.start_s * compress, end_s=j.end_s * compress) for j in result.jobs],
    )
    tl, starts, pre = sim_timeline(result)
    return tl, starts, pre, sum(ran < min_runtime_s for ran in replay.evicted_after)


def _figures(
    ltl: Timeline, lstart: dict[str, float], stl: Timeline, sstart: dict[str, float], teams: Sequence[str],
    gpus: int, span: float,
) -> dict[str, Any]:  # fmt: skip
    common = sorted(set(lstart) & set(sstart))
    errors = np.array([abs(lstart[j] - sstart[j]) for j in common])
    jain_live, util_live = fairness(ltl, teams, gpus, span)
    jain_sim, util_sim = fairness(stl, teams, gpus, span)
    return {
        "jobs": len(common),
        "kendall_tau_start_order": kendall_tau([lstart[j] for j in common], [sstart[j] for j in common]),
        "median_abs_start_error_s": float(np.median(errors)) if len(errors) else None,
        "p95_abs_start_error_s": float(np.percentile(errors, 95)) if len(errors) else None,
        "jain_live": jain_live,
        "jain_sim": jain_sim,
        "utilization_live": util_live,
        "utilization_sim": util_sim,
    }


def compare_runs(
    live: LiveRun, gpus: int, compress: float, min_runtime_s: float, teams: Sequence[str]
) -> dict[str, Any]:
    """The figures of the latency-modelled replay at the top level, those of the instant
    replay (every latency 0) under `zero_latency`, the measured delays under `latency`."""
    since = live.t0 - 1.0
    with Ledger(live.ledger, migrate=False) as led:
        hist = history_trace(led, since, now_s=time.time())
        gangs, runs, _ = read_history(led.engine, since)
    measured = measure(live, gangs, runs)
    team_objs = tuple(Team(t, namespaces=(t,)) for t in teams)
    policy = load_policy(policy_yaml(min_runtime_s))
    ltl, lstart, lpre = live_timeline(live.ledger, since, compress, min_runtime_s, live.made)
    sides = {}
    for name, latency in (("modelled", measured.latency()), ("zero", Latency())):
        stl, sstart, spre, syoung = _replay_figures(hist, team_objs, policy, latency, compress, min_runtime_s)
        sides[name] = (stl, sstart, spre, syoung, latency)
    live_end = [e for steps in ltl.held.values() for e, _ in steps]
    sim_end = [e for (stl, *_rest) in sides.values() for steps in stl.held.values() for e, _ in steps]
    span = max(live_end + sim_end + [1.0])
    out: dict[str, Any] = {}
    for name, (stl, sstart, spre, syoung, latency) in sides.items():
        figures = _figures(ltl, lstart, stl, sstart, teams, gpus, span)
        figures.update(preemptions_live=lpre.by_daemon, preemptions_sim=spre, young_evictions_sim=syoung)
        if name == "modelled":
            out.update(figures)
            out["sim_options"] = {k: v * compress for k, v in asdict(latency).items()}
        else:
            out["zero_latency"] = figures
    wall = asdict(measured)
    trace_s = {k: (v * compress if isinstance(v, float) else v) for k, v in wall.items() if k != "samples"}
    out["latency"] = {"wall_s": wall, "trace_s": trace_s}
    out.update(
        jobs_live_finished=live.finished,
        preemptions_live_detail={
            "gang_evictions_by_daemon": lpre.by_daemon,
            "daemon_preemptions_metric": live.metrics.get("preemptions"),
            "history_runs_evicted_by_daemon": lpre.runs_evicted,
            "history_runs_ended_without_our_eviction": lpre.runs_lost,
            "young_evictions_live": lpre.young,
            "young_since_bind_old_since_creation": lpre.old_by_creation,
            "recreated_by_job_controller": live.recreated,
            "recreated_part_evicted": live.recreated_part,
        },
        daemon_counters=live.metrics,
        span_trace_s=span,
        live_wall_s=live.wall_s,
    )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    jobs = philly_slice(args.jobs, args.teams, args.max_gpus, args.min_duration, args.max_duration, args.gap)
    teams = sorted({j.team for j in jobs})
    min_runtime_wall = args.min_runtime / args.compress
    work = Path(tempfile.mkdtemp(prefix="gpufair-simlive-"))
    print(
        f"{len(jobs)} Philly jobs of {len(teams)} teams on {args.gpus} GPUs, compressed {args.compress:g}x; "
        f"work dir {work}",
        flush=True,
    )
    live = play_live(jobs, args.gpus, args.compress, min_runtime_wall, work, args.timeout)
    print(f"live: {live.finished}/{len(jobs)} jobs done in {live.wall_s:.0f} s wall", flush=True)
    out = compare_runs(live, args.gpus, args.compress, min_runtime_wall, teams)
    out.update(
        gpus=args.gpus,
        teams=len(teams),
        compress=args.compress,
        gap_s=args.gap,
        duration_clip_s=[args.min_duration, args.max_duration],
        min_runtime_trace_s=args.min_runtime,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--teams", type=int, default=15)
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--max-gpus", type=int, default=16, help="largest job taken from the trace")
    ap.add_argument("--compress", type=float, default=60.0, help="trace seconds per wall second")
    ap.add_argument("--gap", type=float, default=40.0, help="trace seconds between arrivals")
    ap.add_argument("--min-duration", type=float, default=120.0, help="trace seconds")
    ap.add_argument("--max-duration", type=float, default=1800.0, help="trace seconds")
    ap.add_argument("--min-runtime", type=float, default=600.0, help="policy min-runtime, trace seconds")
    ap.add_argument("--timeout", type=float, default=900.0, help="wall seconds for the live run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    result = run(args)
    keys = (
        "jobs", "kendall_tau_start_order", "median_abs_start_error_s", "p95_abs_start_error_s",
        "jain_live", "jain_sim", "utilization_live", "utilization_sim", "preemptions_live", "preemptions_sim",
    )  # fmt: skip
    options = ", ".join(f"{k} {v:.4g}" for k, v in result["sim_options"].items())
    print(f"  {'figure':<26} {'modelled':>10} {'0 latency':>10}   (sim options, trace s: {options})")
    for key in keys:
        cells = [result[key], result["zero_latency"][key]]
        print(
            f"  {key:<26} " + " ".join(f"{v:>10.4g}" if isinstance(v, float) else f"{v!s:>10}" for v in cells)
        )
    print(f"  live preemptions: {result['preemptions_live_detail']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sim_vs_live.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
