"""The ledger as a trace (schema 0004): gang history recorded from snapshots, exported as a
native trace and a ClusterSpec; on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect

from scheduler.core import Eviction, Gang, Node, Pod, Snapshot, Team, Tier
from scheduler.ledger import Ledger
from scheduler.ledger import migrate as migrations
from scheduler.ledger.history import History, HistoryGang, read_history
from scheduler.ledger.trace import export, history_trace, job_duration, parse_instant, spec_path_for
from simulator.cluster_spec import load_cluster_spec
from simulator.traces import read_trace

T0 = parse_instant("2026-11-02T00:00:00Z", "test")
TEAMS = (Team("vision", namespaces=("vision",)), Team("search", namespaces=("search",)))
NODES = (
    *(
        Node(f"n{i}", 8, 64_000, 512_000, "H100", labels={"kubernetes.io/hostname": f"n{i}", "pool": "a"})
        for i in range(2)
    ),
    Node("c0", 0, 32_000, 128_000, "", labels={"kubernetes.io/hostname": "c0"}),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_url")


def gang(gid: str, team: str, pods: int, gpus: int, submit: float, priority: int = 0, **kw) -> Gang:
    members = tuple(
        Pod(f"{team}/{gid}-{k}", gpus=gpus, cpu_milli=4000, memory_mib=16_000, namespace=team)
        for k in range(pods)
    )
    return Gang(f"{team}/gang:{gid}", team, members, priority=priority, submit_s=T0 + submit, **kw)


def bound(g: Gang, node: str, start: float) -> Gang:
    return replace(g, pods=tuple(replace(p, node=node, start_s=T0 + start) for p in g.pods))


def snap(at: float, *gangs: Gang) -> Snapshot:
    return Snapshot(T0 + at, NODES, TEAMS, tuple(gangs))


def pod(phase: str, finished: float) -> dict:
    """A terminated pod as the API server holds it."""
    stamp = datetime.fromtimestamp(T0 + finished, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "status": {
            "phase": phase,
            "containerStatuses": [{"state": {"terminated": {"finishedAt": stamp}}}],
        }
    }


def tier_of(g: Gang) -> str:
    return "production" if g.priority >= 1000 else "training"


def play(ledger: Ledger) -> dict[str, dict]:
    """A short history: A is evicted by B and restarts, then succeeds; B runs on; C never
    starts; D fails. Returns the terminated pods the API still holds."""
    api: dict[str, dict] = {}
    h = History(ledger.engine, tier_of)
    a = gang("a", "vision", 2, 4, 0, checkpoint_s=600.0)
    b = gang("b", "search", 2, 8, 900, priority=1000)
    c = gang("c", "vision", 4, 8, 950)
    d = gang("d", "search", 1, 2, 100)
    h.observe(snap(5, a, d))
    h.observe(snap(20, bound(a, "n0", 10), bound(d, "n1", 15)))
    h.observe(snap(950, bound(a, "n0", 10), bound(d, "n1", 15), b, c))
    h.evicted(
        T0 + 1000,
        [
            Eviction(p.name, a.id, "n0", b.id, "production", "room", Tier.TRAINING, Tier.PRODUCTION)
            for p in a.pods
        ],
    )
    # The victims are still leaving in the next snapshot: no new run of the same start.
    h.observe(snap(1001, bound(a, "n0", 10), bound(d, "n1", 15), b, c))
    api.update({p.name: pod("Failed", 1005) for p in d.pods})
    h.observe(snap(1010, a, bound(b, "n0", 1005), c), api.get)
    h2 = History(ledger.engine, tier_of)  # the daemon restarted: it carries on from the database
    h2.observe(snap(1100, bound(a, "n1", 1100), bound(b, "n0", 1005), c), api.get)
    api.update({p.name: pod("Succeeded", 2100) for p in a.pods})
    h2.observe(snap(2130, bound(b, "n0", 1005), c), api.get)
    return api


def test_the_history_records_shapes_runs_and_outcomes(target):
    with Ledger(target) as ledger:
        assert ledger.revision() == migrations.head_revision() == "0004"
        assert {"ledger_history_gang", "ledger_history_run", "ledger_history_node"} <= set(
            inspect(ledger.engine).get_table_names()
        )
        play(ledger)
        gangs, runs, nodes = read_history(ledger.engine)
        by = {g.gang_id: g for g in gangs}
        a, b, c, d = (
            by[f"{t}/gang:{x}"]
            for t, x in (("vision", "a"), ("search", "b"), ("vision", "c"), ("search", "d"))
        )
        assert (a.pods, a.gpus_per_pod, a.cpu_milli, a.memory_mib, a.checkpoint_s) == (
            2,
            4,
            4000,
            16_000,
            600.0,
        )
        assert (a.outcome, a.end_s, a.runs, a.start_s, a.nodes) == (
            "succeeded",
            T0 + 2100,
            2,
            T0 + 10,
            "n0,n1",
        )
        assert (b.tier, b.priority, b.outcome, b.end_s) == ("production", 1000, "", None)
        assert (c.outcome, c.runs, c.start_s) == ("", 0, None)
        assert (d.outcome, d.end_s) == ("failed", T0 + 1005)
        ra = runs[a.gang_id]
        assert [(r.start_s - T0, r.end_s - T0, r.outcome, r.ended_by, r.kind) for r in ra] == [
            (10, 1000, "evicted", b.gang_id, "production"),
            (1100, 2100, "succeeded", "", ""),
        ]
        assert [(r.gpus, r.gpu_model, r.nodes) for r in ra] == [(8, "H100", "n0"), (8, "H100", "n1")]
        assert [(r.start_s - T0, r.end_s, r.tier) for r in runs[b.gang_id]] == [(1005, None, "production")]
        assert sorted(n.name for n in nodes) == ["c0", "n0", "n1"]


def test_an_evicted_gang_that_is_gone_ends_evicted_by_its_preemptor(target):
    with Ledger(target) as ledger:
        h = History(ledger.engine, tier_of)
        a = gang("a", "vision", 1, 8, 0)
        h.observe(snap(5, bound(a, "n0", 1)))
        h.evicted(
            T0 + 50,
            [
                Eviction(
                    a.pods[0].name, a.id, "n0", "search/gang:p", "reclaim", "r", Tier.TRAINING, Tier.TRAINING
                )
            ],
        )
        h.observe(snap(60))  # its pods were deleted, nothing recreated them
        row = read_history(ledger.engine)[0][0]
        assert isinstance(row, HistoryGang)
        assert (row.outcome, row.ended_by, row.end_s) == ("evicted", "search/gang:p", T0 + 50)


def test_export_reconstructs_durations_and_writes_a_replayable_trace_and_cluster(target, tmp_path: Path):
    with Ledger(target) as ledger:
        play(ledger)
        hist = history_trace(ledger, T0, until_s=T0 + 3000)
        jobs = {j.job_id: j for j in hist.trace.jobs}
        # A: its last run (1000 s) plus the one whole checkpoint interval of the evicted run
        # (990 s of work, checkpoints every 600 s); B is cut at 3000; C never ran.
        assert jobs["vision/gang:a"].duration_s == pytest.approx(1600)
        assert jobs["search/gang:b"].duration_s == pytest.approx(3000 - 1005)
        assert jobs["search/gang:d"].duration_s == pytest.approx(990)
        assert "vision/gang:c" not in jobs and any("vision/gang:c" in line for line in hist.left_out)
        assert (jobs["search/gang:b"].submit_s, jobs["search/gang:b"].tier) == (900, "production")
        assert hist.outcomes == {"vision/gang:a": "succeeded", "search/gang:b": "", "search/gang:d": "failed"}
        for name in ("t.csv", "t.parquet"):
            out, spec = export(hist, tmp_path / name)
            assert spec == spec_path_for(out) and spec.name == "t.cluster.yaml"
            back = read_trace(out, "native")
            assert back.jobs == tuple(sorted(hist.trace.jobs, key=lambda j: (j.submit_s, j.job_id)))
            nodes = load_cluster_spec(spec.read_text())
            shapes = sorted(
                (n.gpus, n.gpu_model, n.cpu_milli, n.memory_mib, n.labels.get("pool")) for n in nodes
            )
            assert shapes == [
                (0, "", 32_000, 128_000, None),
                (8, "H100", 64_000, 512_000, "a"),
                (8, "H100", 64_000, 512_000, "a"),
            ]


def test_job_duration_without_checkpoints_is_the_last_run():
    from scheduler.ledger.history import HistoryRun

    runs = [
        HistoryRun(gang_id="g", team="t", tier="training", gpus=1, start_s=0, end_s=500, outcome="evicted"),
        HistoryRun(
            gang_id="g", team="t", tier="training", gpus=1, start_s=600, end_s=900, outcome="succeeded"
        ),
    ]
    assert job_duration(runs, None, 10_000) == 300
    assert job_duration(runs, 200.0, 10_000) == 300 + 400
    assert job_duration(runs, 200.0, 700) == 100 + 400  # the last run is cut at the cut
    assert job_duration(runs, 200.0, 0) is None


def test_a_run_starts_at_the_bind_decision_not_at_the_pods_creation(tmp_path: Path):
    """A pod bound but not started yet reads its creation as its start; the run starts at the
    daemon's bind decision instead, and the API's whole-second start time that follows does
    not open a second run."""
    with Ledger(str(tmp_path / "ledger.db")) as ledger:
        h = History(ledger.engine, tier_of)
        a = gang("a", "vision", 1, 4, 0)
        h.observe(snap(1, a))
        decided = {a.id: T0 + 60.4}
        h.observe(snap(61, bound(a, "n0", 0)), bound_at=decided)  # no startTime: its creation
        h.observe(snap(62, bound(a, "n0", 61)), bound_at=decided)  # startTime, whole seconds
        _, runs, _ = read_history(ledger.engine)
    (run,) = runs[a.id]
    assert run.start_s == pytest.approx(T0 + 60.4) and run.end_s is None


def test_a_start_reported_seconds_after_the_bind_decision_is_the_same_run(target):
    """Under load the kubelet reports the pods' startTime seconds after the daemon bound them:
    the run stays the one that started at the decision, not an eviction and a second run."""
    with Ledger(target) as ledger:
        h = History(ledger.engine, tier_of)
        a = gang("a", "vision", 2, 4, 0)
        decided = {a.id: T0 + 9.7}
        h.observe(snap(10, bound(a, "n0", 0)), bound_at=decided)  # no startTime yet: creation
        h.observe(snap(16, bound(a, "n0", 14)), bound_at=decided)  # started 4.3 s after the bind
        runs = read_history(ledger.engine)[1][a.id]
        assert [(r.start_s - T0, r.end_s, r.outcome) for r in runs] == [(pytest.approx(9.7), None, "")]


def test_pods_bound_one_look_after_the_first_join_its_run(target):
    with Ledger(target) as ledger:
        h = History(ledger.engine, tier_of)
        a = gang("a", "vision", 2, 4, 0)
        half = replace(a, pods=(replace(a.pods[0], node="n0", start_s=T0 + 10), a.pods[1]))
        h.observe(snap(10, half), bound_at={a.id: T0 + 10})
        h.observe(snap(11, bound(a, "n0", 10)), bound_at={a.id: T0 + 10})
        (run,) = read_history(ledger.engine)[1][a.id]
        assert (run.start_s - T0, run.gpus) == (10, 8)


def test_an_evicted_gang_made_anew_reopens_and_runs_again(target):
    with Ledger(target) as ledger:
        h = History(ledger.engine, tier_of)
        a = gang("a", "vision", 1, 8, 0)
        h.observe(snap(5, bound(a, "n0", 1)))
        h.evicted(
            T0 + 50, [Eviction(a.pods[0].name, a.id, "n0", "x", "reclaim", "r", Tier.TRAINING, Tier.TRAINING)]
        )
        h.observe(snap(50.5, bound(a, "n0", 1)))  # its pod terminating, still bound
        h.observe(snap(51))  # gone for a moment
        anew = replace(a, pods=tuple(replace(p, name=p.name + "-1") for p in a.pods))
        h.observe(snap(52, anew))  # its controller made it anew
        h.observe(snap(60, bound(anew, "n1", 58)))
        api = {anew.pods[0].name: pod("Succeeded", 160)}
        h.observe(snap(170), api.get)
        (row,), runs, _ = read_history(ledger.engine)
        assert (row.outcome, row.end_s, row.runs) == ("succeeded", T0 + 160, 2)
        assert [(r.start_s - T0, r.end_s - T0, r.outcome, r.ended_by) for r in runs[a.id]] == [
            (1, 50, "evicted", "x"),
            (58, 160, "succeeded", ""),
        ]


def test_pods_sent_back_to_pending_without_our_eviction_close_the_run(target):
    with Ledger(target) as ledger:
        h = History(ledger.engine, tier_of)
        a = gang("a", "vision", 1, 8, 0)
        h.observe(snap(5, bound(a, "n0", 1)))
        h.observe(snap(9, a))  # unbound again (its node went, say)
        h.observe(snap(20, bound(a, "n1", 19)))
        runs = read_history(ledger.engine)[1][a.id]
        assert [(r.start_s - T0, r.end_s and r.end_s - T0, r.outcome) for r in runs] == [
            (1, 9, "evicted"),
            (19, None, ""),
        ]


def test_a_gang_whose_pods_finish_one_after_the_other_is_one_succeeded_run(target):
    """A finished pod leaves the snapshot while its gang's other pod still runs: the run goes
    on, and ends when the last pod does; a pod deleted instead ends the run as evicted."""
    with Ledger(target) as ledger:
        h = History(ledger.engine, tier_of)
        a, b = gang("a", "vision", 2, 8, 0), gang("b", "search", 2, 4, 0)
        h.observe(snap(5, bound(a, "n0", 1), bound(b, "n1", 1)))
        first_done = replace(bound(a, "n0", 1), pods=bound(a, "n0", 1).pods[1:])
        one_deleted = replace(bound(b, "n1", 1), pods=bound(b, "n1", 1).pods[1:])
        api = {a.pods[0].name: pod("Succeeded", 99)}  # b's first pod: gone from the API too
        h.observe(snap(100, first_done, one_deleted), api.get)
        api[a.pods[1].name] = pod("Succeeded", 101)
        h.observe(snap(103, one_deleted), api.get)
        gangs, runs, _ = read_history(ledger.engine)
        assert [(r.start_s - T0, r.end_s - T0, r.outcome, r.gpus) for r in runs[a.id]] == [
            (1, 101, "succeeded", 16)
        ]
        assert [(r.end_s - T0, r.outcome) for r in runs[b.id]] == [(100, "evicted")]
        assert {g.gang_id: g.outcome for g in gangs}[a.id] == "succeeded"


def test_a_gang_made_anew_beside_its_terminating_pods_runs_on_its_new_ones(target):
    """Evicted, and made anew by its controller before the old pods are gone: the snapshot
    shows both, bound; the new run holds only the new pods' GPUs, and the old pods going
    away does not end it."""
    with Ledger(target) as ledger:
        h = History(ledger.engine, tier_of)
        a = gang("a", "vision", 1, 8, 0)
        h.observe(snap(5, bound(a, "n0", 1)), bound_at={a.id: T0 + 1})
        h.evicted(
            T0 + 50, [Eviction(a.pods[0].name, a.id, "n0", "x", "reclaim", "r", Tier.TRAINING, Tier.TRAINING)]
        )
        anew = bound(replace(a, pods=tuple(replace(p, name=p.name + "-1") for p in a.pods)), "n1", 50)
        both = replace(a, pods=(*bound(a, "n0", 1).pods, *anew.pods))
        h.observe(snap(50.5, both), bound_at={a.id: T0 + 50.2})
        h.observe(snap(51, anew), bound_at={a.id: T0 + 50.2})
        runs = read_history(ledger.engine)[1][a.id]
        assert [(r.start_s - T0, r.end_s and r.end_s - T0, r.outcome, r.gpus) for r in runs] == [
            (1, 50, "evicted", 8),
            (pytest.approx(50.2), None, "", 8),
        ]


def test_a_gang_bound_run_and_finished_between_two_looks_still_has_its_run(target):
    """Seen pending, then gone succeeded (the daemon looked again only after it ended): its
    run comes from the pods' own start and finish, starting at the bind decision."""
    with Ledger(target) as ledger:
        h = History(ledger.engine, tier_of)
        a = gang("a", "vision", 1, 2, 0)
        h.observe(snap(1, a))
        done = pod("Succeeded", 4)
        done["status"]["startTime"] = datetime.fromtimestamp(T0 + 2, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        done["spec"] = {"nodeName": "n1"}
        h.observe(snap(9), {a.pods[0].name: done}.get, bound_at={a.id: T0 + 1.6})
        (row,), runs, _ = read_history(ledger.engine)
        assert (row.outcome, row.start_s - T0, row.runs) == ("succeeded", pytest.approx(1.6), 1)
        assert [(r.start_s - T0, r.end_s - T0, r.outcome, r.gpus, r.nodes) for r in runs[a.id]] == [
            (pytest.approx(1.6), 4, "succeeded", 2, "n1")
        ]


def test_a_gang_bound_and_evicted_before_a_look_saw_it_run_has_its_evicted_run(target):
    """Looks read the snapshot a cycle began with: a gang bound in one cycle and evicted in the
    next is evicted before any look saw it bound. Its run is booked at the eviction, from the
    bind decision, and the look that then shows it bound (terminating) opens no second run."""
    with Ledger(target) as ledger:
        h = History(ledger.engine, tier_of)
        a = gang("a", "vision", 1, 8, 0)
        h.observe(snap(10, a), bound_at={a.id: T0 + 10})  # the cycle that bound it, pending
        h.evicted(
            T0 + 10.5,
            [Eviction(a.pods[0].name, a.id, "n0", "x", "reclaim", "r", Tier.TRAINING, Tier.TRAINING)],
        )
        h.observe(snap(10.5, bound(a, "n0", 0)), bound_at={a.id: T0 + 10})  # the next cycle's snapshot
        h.observe(snap(11))  # gone
        (row,), runs, _ = read_history(ledger.engine)
        assert [(r.start_s - T0, r.end_s - T0, r.outcome, r.ended_by, r.gpus) for r in runs[a.id]] == [
            (10, 10.5, "evicted", "x", 8)
        ]
        assert (row.outcome, row.runs, row.ended_by) == ("evicted", 1, "x")


def test_a_gang_first_seen_half_made_counts_all_its_pods(target):
    """Its controller makes the pods one by one and a look came in between: the row, and so
    the exported job, has the whole gang."""
    with Ledger(target) as ledger:
        h = History(ledger.engine, tier_of)
        a = gang("a", "vision", 2, 8, 0)
        h.observe(snap(1, replace(a, pods=a.pods[:1])))
        h.observe(snap(2, a))
        h.observe(snap(5, bound(a, "n0", 3)))
        (row,), runs, _ = read_history(ledger.engine)
        assert (row.pods, row.gpus_per_pod, runs[a.id][0].gpus) == (2, 8, 16)
