"""Carrying out the core's decisions through the API: binds and evictions.

Binds go through `pods/binding` with the pod's UID as a precondition, so a pod deleted
and re-created under the same name is never bound by an old decision; a 409 means the
pod is already bound (by us before a restart, or by someone else), which the next watch
event shows. Evictions go through the Eviction API so PodDisruptionBudgets are honoured;
a 429 means a budget protects the pod right now, reported back so the next cycle picks
other victims. Calls run on a bounded pool, at most `max_in_flight` at once, taken from a
priority queue: a production pod's bind does not wait behind a backlog of training binds.

With a fence (the leader elector), a call is sent only if, when its turn comes, this
replica still leads in the term the call was decided in and its lease is fresh: checked
when a worker takes the call (a stale one costs no rate-limit token) and again after the
rate limiter, right before the request is written, since a backlog can wait there for
seconds. What remains between that check and the server is building and writing the
request (in-process work, and a wait for the GIL) and, when no pooled connection is idle,
a connect, bounded per attempt by a quarter of the margin `lease_s - renew_deadline_s`
(urllib3 tries up to four times), so a fenced call starts before any other replica can
take the lease. A process frozen exactly inside that window still sends its call when it
resumes: no client-side check can close it (client-go has the same one). Such a call is
answered more than the margin after its check, and is logged as one that may have landed
after the lease ended.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any, Protocol

from scheduler.daemon.kube import JSON, Kube, KubeError
from scheduler.daemon.leader import elapsed

log = logging.getLogger("gpufair.actuator")


@dataclass(frozen=True, slots=True)
class Outcome:
    pod: str  # namespace/name
    result: str  # 'ok', 'conflict', 'gone', 'pdb_blocked', 'error', 'fenced' (not sent: no fresh lease)
    detail: str = ""


class Fence(Protocol):
    def holds(self, term: int | None = None) -> bool: ...


class _Fenced(Exception):
    pass


def _split(key: str) -> tuple[str, str]:
    ns, name = key.split("/", 1)
    return ns, name


class Actuator:
    def __init__(
        self,
        kube: Kube,
        max_in_flight: int = 16,
        fence: Fence | None = None,
        lease_margin_s: float = 5.0,
    ) -> None:
        self.kube = kube
        self.fence = fence
        self.lease_margin_s = lease_margin_s  # lease_s - renew_deadline_s
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._workers = [
            threading.Thread(target=self._work, name=f"actuator-{i}", daemon=True)
            for i in range(max_in_flight)
        ]
        for t in self._workers:
            t.start()

    def _work(self) -> None:
        while True:
            _prio, _n, job = self._queue.get()
            if job is None:
                return
            fn, args, future, done = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                outcome = fn(*args)
            except Exception as exc:  # a bug in one call must not kill the worker
                outcome = Outcome("?", "error", repr(exc))
            future.set_result(outcome)
            if outcome.result == "error":
                log.warning("API call for %s failed: %s", outcome.pod, outcome.detail)
            if done is not None:
                try:
                    done(outcome)
                except Exception:
                    log.exception("completion of %s failed", outcome.pod)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def submit(
        self,
        priority: int,
        fn: Callable[..., Outcome],
        args: tuple[Any, ...],
        done: Callable[[Outcome], None] | None = None,
    ) -> Future:
        """Queues a call; lower `priority` runs first, then first come first served."""
        future: Future = Future()
        self._queue.put((priority, next(self._order), (fn, args, future, done)))
        return future

    def cancel_pending(self) -> int:
        """Drops every queued call that has not started; returns how many."""
        dropped = 0
        while True:
            try:
                _p, _n, job = self._queue.get_nowait()
            except queue.Empty:
                return dropped
            if job is not None:
                job[2].cancel()
                dropped += 1

    def close(self) -> None:
        self.cancel_pending()  # what has started finishes
        for _ in self._workers:
            self._queue.put((-(10**9), next(self._order), None))
        for t in self._workers:
            t.join(timeout=10)

    def _post(self, path: str, body: dict[str, Any], term: int | None) -> None:
        """POSTs `body`, unless the fence says this replica may no longer act (`_Fenced`)."""
        self._send("POST", path, body, term)

    def write(
        self,
        key: str,
        method: str,
        path: str,
        body: dict[str, Any],
        term: int | None,
        content_type: str = JSON,
    ) -> Outcome | None:
        """A fenced write on behalf of pod `key` (the volume binder's PV and PVC updates): None
        when it landed, else the outcome that stops the pod's bind."""
        try:
            self._send(method, path, body, term, content_type)
        except _Fenced:
            return Outcome(key, "fenced", "not sent: this replica holds no fresh lease")
        except KubeError as exc:
            return Outcome(key, "error", f"{method} {path}: {exc}")
        return None

    def _send(
        self, method: str, path: str, body: dict[str, Any], term: int | None, content_type: str = JSON
    ) -> None:
        fence = self.fence
        if fence is None:
            self.kube.request(method, path, body=body, content_type=content_type)
            return
        if not fence.holds(term):
            raise _Fenced

        checked = math.inf

        def guard() -> None:
            nonlocal checked
            if not fence.holds(term):
                raise _Fenced
            checked = elapsed()

        try:
            self.kube.request(
                method,
                path,
                body=body,
                content_type=content_type,
                guard=guard,
                timeout=(self.lease_margin_s / 4, 30.0),
            )
        finally:
            late = elapsed() - checked
            if late > self.lease_margin_s:
                log.warning(
                    "%s %s was answered %.2fs after its lease check: it may have landed after the "
                    "lease ended (a pause or a slow server between the check and the request)",
                    method,
                    path,
                    late,
                )

    def bind(self, pod: dict[str, Any], node: str, term: int | None = None) -> Outcome:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            self._post(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body, term)
        except _Fenced:
            return Outcome(key, "fenced", "not sent: this replica holds no fresh lease")
        except KubeError as exc:
            if exc.status == 409:
                return Outcome(key, "conflict", str(exc))
            if exc.status == 404:
                return Outcome(key, "gone", str(exc))
            return Outcome(key, "error", str(exc))
        return Outcome(key, "ok")

    def evict(self, pod: dict[str, Any], term: int | None = None) -> Outcome:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "deleteOptions": {"preconditions": {"uid": meta.get("uid")}},
        }
        try:
            self._post(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/eviction", body, term)
        except _Fenced:
            return Outcome(key, "fenced", "not sent: this replica holds no fresh lease")
        except KubeError as exc:
            if exc.status == 429:
                return Outcome(key, "pdb_blocked", str(exc))
            if exc.status in (404, 409):  # gone already, or a new pod under the same name
                return Outcome(key, "gone", str(exc))
            return Outcome(key, "error", str(exc))
        return Outcome(key, "ok")

    def run_all(
        self, priority: int, calls: Iterable[tuple[Callable[..., Outcome], tuple[Any, ...]]]
    ) -> list[Outcome]:
        """Runs the calls on the pool and waits for all of them."""
        futures = [self.submit(priority, fn, args) for fn, args in calls]
        wait(futures)
        return [f.result() if not f.cancelled() else Outcome("?", "error", "cancelled") for f in futures]
