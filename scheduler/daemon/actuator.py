"""Carrying out the core's decisions through the API: binds and evictions.

Binds go through `pods/binding` with the pod's UID as a precondition, so a pod deleted
and re-created under the same name is never bound by an old decision; a 409 means the
pod is already bound (by us before a restart, or by someone else), which the next watch
event shows. Evictions go through the Eviction API so PodDisruptionBudgets are honoured;
a 429 means a budget protects the pod right now, reported back so the next cycle picks
other victims. Calls run on a bounded pool, at most `max_in_flight` at once, taken from a
priority queue: a production pod's bind does not wait behind a backlog of training binds.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

from scheduler.daemon.kube import Kube, KubeError

log = logging.getLogger("gpufair.actuator")


@dataclass(frozen=True, slots=True)
class Outcome:
    pod: str  # namespace/name
    result: str  # 'ok', 'conflict', 'gone', 'pdb_blocked', 'error'
    detail: str = ""


def _split(key: str) -> tuple[str, str]:
    ns, name = key.split("/", 1)
    return ns, name


class Actuator:
    def __init__(self, kube: Kube, max_in_flight: int = 16) -> None:
        self.kube = kube
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

    def bind(self, pod: dict[str, Any], node: str) -> Outcome:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            self.kube.request(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body=body
            )
        except KubeError as exc:
            if exc.status == 409:
                return Outcome(key, "conflict", str(exc))
            if exc.status == 404:
                return Outcome(key, "gone", str(exc))
            return Outcome(key, "error", str(exc))
        return Outcome(key, "ok")

    def evict(self, pod: dict[str, Any]) -> Outcome:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "deleteOptions": {"preconditions": {"uid": meta.get("uid")}},
        }
        try:
            self.kube.request(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/eviction", body=body
            )
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
