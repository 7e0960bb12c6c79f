"""Leader fencing on a real control plane: a replica binds or evicts only while it holds an
unexpired lease, and a new leader acts at once.

The split-brain test runs two `gpufair run` processes (subprocesses, so SIGSTOP/SIGCONT
really freezes one) on the session's 8 KWOK nodes of 8 GPUs, with a Lease of their own.
"""

from __future__ import annotations

import copy
import logging
import re
import secrets
import signal
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from scheduler.daemon.actuator import Actuator
from scheduler.daemon.kube import Kube, KubeError
from scheduler.daemon.leader import LeaderElector, elapsed
from tests.daemon_support import (
    InProcessDaemon,
    bound,
    daemon_process,
    delete_pods,
    install_crds_and_priorities,
    kill,
    kube_for,
    make_namespace,
    make_pod,
    make_team,
    pods_in,
    wait_for,
)

LEASE_NS = "gpufair-system"
GPU = "nvidia.com/gpu"


def _lease(kube: Kube, name: str) -> dict:
    try:
        return kube.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{name}")
    except KubeError as exc:
        if exc.status == 404:
            return {}
        raise


def _holder(kube: Kube, name: str) -> str:
    return (_lease(kube, name).get("spec") or {}).get("holderIdentity") or ""


def _config(tmp_path: Path, lease_name: str) -> Path:
    cfg = tmp_path / "scheduler.yaml"
    cfg.write_text(f"kind: SchedulerConfig\nscheduler:\n  leaseName: {lease_name}\n")
    return cfg


def _binds(proc) -> Counter[str]:
    """This replica's bind results so far, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for m in re.finditer(r'^gpufair_binds_total\{result="(\w+)"\} ([0-9.e+]+)$', text, re.M):
        out[m[1]] = int(float(m[2]))
    return out


def _serving(proc) -> bool:
    try:
        _binds(proc)
    except OSError:
        return False
    return True


def _delta(now: Counter[str], then: Counter[str]) -> dict[str, int]:
    return {k: now[k] - then[k] for k in set(now) | set(then) | {"ok", "conflict", "fenced"}}


_last: dict[int, tuple[int, float]] = {}


def _quiet(procs: dict) -> bool:
    """No replica's bind count has moved for a second (polled often)."""
    now = time.monotonic()
    still = True
    for p in procs.values():
        total = sum(_binds(p).values())
        seen, since = _last.get(p.pid, (-1, now))
        if total != seen:
            _last[p.pid] = (total, now)
            still = False
        elif now - since < 1.0:
            still = False
    return still


def _free_and_pending(kube: Kube, ns: str) -> tuple[int, int]:
    usage = _usage(kube)
    pending = sum(1 for p in pods_in(kube, ns).values() if not p["spec"].get("nodeName"))
    return sum(max(0, has - asked) for asked, has in usage.values()), pending


def test_a_paused_leader_never_binds_after_losing_the_lease(kube_cluster, kube_namespace, tmp_path):
    kube = kube_for(kube_cluster.kubeconfig)
    install_crds_and_priorities(kube)
    make_namespace(kube, LEASE_NS)
    ns = kube_namespace
    team = f"fence-{secrets.token_hex(3)}"
    make_team(kube, team, [ns])
    lease_name = f"fence-{secrets.token_hex(3)}"
    # A 4 s lease: renew deadline 2.7 s, retry 0.53 s. Binds at 10 a second, so a leader has
    # dozens queued when it is frozen (150 one-GPU pods for 64 GPUs).
    cfg = _config(tmp_path, lease_name)
    args = ("--config", str(cfg), "--lease-seconds", "4", "--qps", "10", "--burst", "1")
    logs = {r: tmp_path / f"{r}.log" for r in ("replica-a", "replica-b")}
    procs = {r: daemon_process(kube_cluster.kubeconfig, r, logs[r], *args) for r in logs}
    rounds, per_round = 3, 150
    seen: list[dict] = []
    pool = ThreadPoolExecutor(8)
    try:
        wait_for("a leader", lambda: _holder(kube, lease_name) in procs, timeout_s=30)
        for p in procs.values():
            wait_for("metrics", lambda p=p: _serving(p), timeout_s=30)
        for r in range(rounds):
            # Start from quiet replicas: binds of the last round's pods have all come back.
            wait_for("quiet replicas", lambda: _quiet(procs), timeout_s=30, every_s=0.1)
            at_start = {name: _binds(p) for name, p in procs.items()}
            log_at = {name: path.stat().st_size for name, path in logs.items()}
            list(pool.map(lambda i, r=r: make_pod(kube, ns, f"r{r}-p{i:03d}"), range(per_round)))
            wait_for("binding", lambda: len(bound(kube, ns)) >= 12, timeout_s=30, every_s=0.05)
            leader = _holder(kube, lease_name)
            standby = next(x for x in procs if x != leader)
            procs[leader].send_signal(signal.SIGSTOP)
            try:
                time.sleep(0.5)  # what it sent before it froze lands; no one else may bind yet
                before = set(bound(kube, ns))
                standby_before = _binds(procs[standby])["ok"] - at_start[standby]["ok"]
                wait_for(
                    "the standby took the lease",
                    lambda standby=standby: _holder(kube, lease_name) == standby,
                    timeout_s=20,
                )
                transitions = _lease(kube, lease_name)["spec"]["leaseTransitions"]
                time.sleep(5)
            finally:
                procs[leader].send_signal(signal.SIGCONT)
            time.sleep(4)  # the old leader's chance to misbehave
            wait_for(
                "the new leader filled the nodes",
                lambda: 0 in _free_and_pending(kube, ns),
                timeout_s=30,
                every_s=0.5,
            )
            wait_for("quiet replicas", lambda: _quiet(procs), timeout_s=30, every_s=0.1)
            after = {name: _delta(_binds(p), at_start[name]) for name, p in procs.items()}
            spec = _lease(kube, lease_name)["spec"]
            with logs[leader].open() as f:
                f.seek(log_at[leader])
                answered_late = set(re.findall(r"pods/([\w-]+)/binding was answered [0-9.]+s", f.read()))
            seen.append(
                {
                    "paused": leader,
                    "bound_before_pause": len(before),
                    # its successful binds this round, less those that landed before it froze
                    "late_binds": after[leader]["ok"] - (len(before) - standby_before),
                    "late_conflicts": after[leader]["conflict"],
                    "fenced": after[leader]["fenced"],
                    # calls that passed the check before the freeze and went out after it: the
                    # window no client-side check closes (see actuator.py); rare, and logged
                    # (those bound before the freeze were merely answered late)
                    "in_window": len(answered_late - before),
                    "overcommitted": _overcommitted(kube),
                    # the new leader kept the lease throughout: no bind by the old one was legitimate
                    "kept": spec["holderIdentity"] == standby and spec["leaseTransitions"] == transitions,
                    "counts": after,
                }
            )
            print(f"round {r}: {seen[-1]}")
            delete_pods(kube, ns)
        for name, p in procs.items():
            assert p.poll() is None, f"{name} exited"
    except BaseException:
        for name, path in logs.items():
            print(f"----- {name}\n{path.read_text()[-4000:]}")
        raise
    finally:
        pool.shutdown()
        for p in procs.values():
            kill(p, signal.SIGTERM)
        kube.request("DELETE", f"/apis/gpufair.io/v1alpha1/gputeams/{team}")
    assert all(not s["overcommitted"] for s in seen), seen
    assert all(s["late_binds"] + s["late_conflicts"] <= s["in_window"] for s in seen), seen
    assert all(s["kept"] for s in seen), seen
    text = "".join(p.read_text() for p in logs.values())
    assert "past the renew deadline" in text  # the frozen one saw its lease go stale, stepped down


def _usage(kube: Kube) -> dict[str, tuple[int, int]]:
    """node -> (GPUs that the unfinished pods bound to it ask for, GPUs it has)."""
    has = {
        n["metadata"]["name"]: int((n.get("status") or {}).get("allocatable", {}).get(GPU, 0))
        for n in kube.request("GET", "/api/v1/nodes")["items"]
    }
    asked: Counter[str] = Counter()
    for p in kube.request("GET", "/api/v1/pods")["items"]:
        node = p["spec"].get("nodeName")
        if not node or (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for c in p["spec"]["containers"]:
            asked[node] += int(((c.get("resources") or {}).get("limits") or {}).get(GPU, 0))
    return {n: (asked[n], has.get(n, 0)) for n in set(has) | set(asked)}


def _overcommitted(kube: Kube) -> dict[str, tuple[int, int]]:
    return {n: (asked, has) for n, (asked, has) in _usage(kube).items() if asked > has}


# ---------------------------------------------------------------- the fence's clock, no cluster


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class _LeaseStore:
    """The Lease API as far as the elector uses it: resourceVersion preconditions included."""

    def __init__(self) -> None:
        self.lease: dict | None = None

    def request(self, method: str, path: str, query=None, body=None, timeout=None, **_: object) -> dict:
        if method == "GET":
            if self.lease is None:
                raise KubeError(404, "NotFound")
            return copy.deepcopy(self.lease)
        if method == "POST":
            if self.lease is not None:
                raise KubeError(409, "AlreadyExists")
            self.lease = {**copy.deepcopy(body), "metadata": {**body["metadata"], "resourceVersion": "1"}}
            return copy.deepcopy(self.lease)
        assert method == "PUT" and self.lease is not None
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict")
        version = str(int(self.lease["metadata"]["resourceVersion"]) + 1)
        self.lease = {**copy.deepcopy(body), "metadata": {**body["metadata"], "resourceVersion": version}}
        return copy.deepcopy(self.lease)


def _elector(store: _LeaseStore, identity: str, clock: _Clock, **kw) -> LeaderElector:
    # The daemon's --lease-seconds 4: renew deadline 2.67 s, retry 0.53 s.
    return LeaderElector(store, "ns", "lease", identity, 4.0, 4 * 2 / 3, 4 / 7.5, clock=clock, **kw)  # type: ignore[arg-type]


def test_the_fence_holds_only_within_the_renew_deadline_of_the_last_renew(caplog):
    store, clock, changes = _LeaseStore(), _Clock(), []
    a = _elector(store, "a", clock, on_change=lambda: changes.append(a.is_leader))
    assert not a.holds() and a.current_term() is None
    a.step(now=0.0)
    assert a.is_leader and a.term == 1 and a.holds(1) and changes == [True]
    assert not a.holds(2)  # a call decided in another term is never sent
    clock.t += 2.6  # just inside the deadline
    assert a.holds(1)
    a.step(now=2.6)  # a renew starts the deadline again
    clock.t += 2.6
    assert a.holds(1)
    clock.t += 0.1  # 2.7 s after the last renew began: past 2.67 s
    with caplog.at_level(logging.WARNING, "gpufair.leader"):
        assert not a.holds(1)
    assert not a.is_leader and changes == [True, False]
    assert "past the renew deadline" in caplog.text
    # The lease is still ours on the server (no one took it): the next round takes it back,
    # in a new term, so calls queued in the old one stay fenced.
    a.step(now=5.5)
    assert a.is_leader and a.term == 2 and a.holds(2) and not a.holds(1)


def test_a_frozen_leader_is_fenced_when_it_resumes_and_the_standby_leads():
    store = _LeaseStore()
    clock_a, clock_b = _Clock(), _Clock()
    a, b = _elector(store, "a", clock_a), _elector(store, "b", clock_b)
    a.step(now=0.0)
    b.step(now=0.5)
    assert a.holds(1) and not b.holds()
    # a is frozen for 10 s: its clock runs on (CLOCK_BOOTTIME does under SIGSTOP), it
    # renews nothing, and b takes the lease once the lease duration has passed.
    clock_b.t += 4.5
    b.step(now=4.5)
    assert b.holds(1)
    for now in (5.0, 6.0, 7.0, 8.0, 9.0, 9.5):  # b renews as usual
        clock_b.t = 1000.0 + now
        b.step(now=now)
    clock_a.t += 10.0
    assert not a.holds(1)  # resumed: before its own thread runs, the first check says no
    a.step(now=10.0)
    assert not a.is_leader and b.holds(1)


def test_a_renew_answered_after_the_deadline_starts_no_term():
    store, clock = _LeaseStore(), _Clock()
    a = _elector(store, "a", clock)

    def slow(method: str, path: str, **kw: object) -> dict:
        clock.t += 3.0  # frozen between writing renewTime and hearing back
        return _LeaseStore.request(store, method, path, **kw)

    a.kube = SimpleNamespace(request=slow)  # type: ignore[assignment]
    a.step(now=0.0)
    assert not a.is_leader and not a.holds()


class _FakeApi:
    """Just enough of ApiClient for Kube: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.rest_client = SimpleNamespace(pool_manager=SimpleNamespace(connection_pool_kw={}))

    def param_serialize(self, method: str, path: str, **_: object) -> tuple[str, str]:
        return method, path

    def call_api(self, method: str, path: str, _request_timeout=None) -> object:
        self.sent.append((method, path))
        return SimpleNamespace(status=201, reason="Created", read=lambda: b"{}")


def _pod(name: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "uid": "u-" + name}}


def test_a_call_queued_before_a_pause_is_checked_again_after_the_rate_limiter():
    store, clock = _LeaseStore(), _Clock()
    fence = _elector(store, "a", clock)
    fence.step(now=0.0)
    api = _FakeApi()
    kube = Kube(api, qps=0)  # type: ignore[arg-type]
    actuator = Actuator(kube, 1, fence)
    try:
        assert actuator.bind(_pod("fresh"), "n1", term=1).result == "ok"
        # The call waits in the rate limiter while the process is frozen past the deadline.
        kube.limiter = SimpleNamespace(acquire=lambda: setattr(clock, "t", clock.t + 3.0))  # type: ignore[assignment]
        assert actuator.bind(_pod("queued"), "n1", term=1).result == "fenced"
        assert actuator.evict(_pod("victim"), term=1).result == "fenced"  # stale: no token spent
        assert [p for _, p in api.sent] == ["/api/v1/namespaces/ns/pods/fresh/binding"]
        # Taken back in a new term: a call decided in the old term stays unsent.
        fence.step(now=4.0)
        kube.limiter = SimpleNamespace(acquire=lambda: None)  # type: ignore[assignment]
        assert fence.term == 2
        assert actuator.bind(_pod("old"), "n1", term=1).result == "fenced"
        assert actuator.bind(_pod("new"), "n1", term=2).result == "ok"
        assert len(api.sent) == 2
    finally:
        actuator.close()


def test_the_default_clock_is_monotonic_and_keeps_time():
    t0 = elapsed()
    time.sleep(0.05)
    assert 0.04 < elapsed() - t0 < 5


# ---------------------------------------------------------------- a new leader acts at once


def test_a_new_leader_runs_its_first_cycle_as_soon_as_it_takes_the_lease(kube_cluster, kube_namespace):
    kube = kube_for(kube_cluster.kubeconfig)
    install_crds_and_priorities(kube)
    make_namespace(kube, LEASE_NS)
    ns = kube_namespace
    team = f"first-{secrets.token_hex(3)}"
    make_team(kube, team, [ns])
    make_pod(kube, ns, "waiting", gpus=1)
    # Someone else holds the lease for 3 more seconds; the newcomer waits as a standby (its
    # cache synced), then takes the lease. Nothing changes meanwhile that would wake its loop,
    # and its interval is 10 s: only the lease itself can start the cycle at once.
    lease_name = f"first-{secrets.token_hex(3)}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kube.request(
        "POST",
        f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases",
        body={
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease_name, "namespace": LEASE_NS},
            "spec": {
                "holderIdentity": "someone-else",
                "leaseDurationSeconds": 3,
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        },
    )
    settings = dict(lease_s=4.0, renew_deadline_s=2.5, retry_s=0.2, interval_s=10.0)
    try:
        with InProcessDaemon(
            kube_cluster.kubeconfig, leader_elect=True, lease_name=lease_name, identity="newcomer", **settings
        ) as daemon:
            assert not bound(kube, ns)
            wait_for("the lease taken", lambda: _holder(kube, lease_name) == "newcomer", 15, every_s=0.02)
            took = time.monotonic()
            wait_for("the pod bound", lambda: bound(kube, ns).get("waiting"), 15, every_s=0.02)
            lag = time.monotonic() - took
            first = getattr(daemon.stats, "took_lease_to_cycle_s", None)
            print(f"lease taken -> pod bound: {lag:.3f}s; first cycle {first}s after taking it")
            assert lag < 3.0  # generous: the interval is 10 s
            assert first is not None and first < 1.0
    finally:
        kube.request("DELETE", f"/apis/gpufair.io/v1alpha1/gputeams/{team}")
