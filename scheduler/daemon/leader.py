"""Leader election on a coordination.k8s.io Lease: only the leader binds or evicts.

The client library's elector reads the global default client and exits the process on a
bad setting, and cannot be stopped; this one uses the daemon's own client, stops on
request and exposes `is_leader` for the loop and the metrics. Semantics follow client-go:
a holder renews every `retry_s`; a candidate takes the Lease once `renewTime` is older
than `lease_s`; a leader that fails to renew within `renew_deadline_s` steps down.
Writes carry the Lease's resourceVersion, so two candidates cannot both win a race.

The fence (`holds`): a replica may bind or evict only while it leads, in the same term
(one per acquisition) as the decision was made in, and its last successful renew began
less than `renew_deadline_s` ago on a clock that keeps running while the process is
frozen (SIGSTOP, a long GC pause, a suspended VM), so a pause reads as time passing and
ends the term. The renew's `renewTime` was written at that same instant, so another
replica can take the Lease no sooner than `lease_s` after it: every call the fence lets
through starts at least `lease_s - renew_deadline_s` before another leader can act (less
the wall-clock skew between replicas, which the candidates' check compares). That margin
must cover the time from the check to the request reaching the server, as in client-go.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from scheduler.daemon.kube import Kube, KubeError
from scheduler.daemon.translate import timestamp

log = logging.getLogger("gpufair.leader")

# CLOCK_BOOTTIME is monotonic and, unlike CLOCK_MONOTONIC, also counts a suspended machine.
elapsed: Callable[[], float] = (
    functools.partial(time.clock_gettime, time.CLOCK_BOOTTIME)
    if hasattr(time, "CLOCK_BOOTTIME")
    else time.monotonic
)


def _micro(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        lease_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_s: float = 2.0,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = elapsed,
    ) -> None:
        if not lease_s > renew_deadline_s > retry_s > 0:
            raise ValueError("leader election needs lease > renew deadline > retry period > 0")
        self.kube = kube
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_s, self.renew_deadline_s, self.retry_s = lease_s, renew_deadline_s, retry_s
        self.clock = clock
        self.on_change = on_change
        self.is_leader = False
        self.term = 0  # counts acquisitions: a call decided in one term is never sent in another
        self.acquired_at = -math.inf  # clock() when the current term began
        self.leader_changed = threading.Event()
        self._renewed = -math.inf  # clock() when the last successful write of the Lease began
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if release and self.is_leader:
            self._release()
        with self._lock:
            changed = self._end_locked()
        self._changed(changed, "lost")

    # ------------------------------------------------------------------ the fence

    def holds(self, term: int | None = None) -> bool:
        """True while this replica leads (in `term`, when given) and its last renew is younger
        than the renew deadline; once it is not, the term ends here and now."""
        with self._lock:
            if not self.is_leader or (term is not None and term != self.term):
                return False
            age = self.clock() - self._renewed
            if age < self.renew_deadline_s:
                return True
            self._end_locked()
        log.warning(
            "%s stepped down: the last renew of lease %s/%s was %.1fs ago, past the renew deadline of %.1fs",
            self.identity,
            self.namespace,
            self.name,
            age,
            self.renew_deadline_s,
        )
        self._changed(True, "lost")
        return False

    def current_term(self) -> int | None:
        """The term this replica may act in now, or None."""
        term = self.term
        return term if self.holds(term) else None

    def _end_locked(self) -> bool:
        if not self.is_leader:
            return False
        self.is_leader = False
        return True

    def _changed(self, changed: bool, how: str) -> None:
        if not changed:
            return
        log.info("%s %s the lease %s/%s", self.identity, how, self.namespace, self.name)
        self.leader_changed.set()
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ the election

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.retry_s)

    def step(self, now: float | None = None) -> None:
        """One round: acquire or renew (`now`: the wall-clock time to write, for tests)."""
        self.holds()  # a pause or failed renews past the deadline end the term first
        began = self.clock()
        try:
            won = self._try(time.time() if now is None else now)
        except KubeError as exc:
            log.warning("lease %s: %s", self.name, exc)
        else:
            self._record(won, began)

    def _record(self, won: bool, began: float) -> None:
        with self._lock:
            if not won:
                changed, how = self._end_locked(), "lost"
            elif self.clock() - began >= self.renew_deadline_s:
                # The write landed, but so long after its renewTime that the term it would
                # extend may already be over for the others: the next round starts afresh.
                changed, how = self._end_locked(), "lost"
            else:
                self._renewed = began
                changed, how = not self.is_leader, "acquired"
                if changed:
                    self.is_leader = True
                    self.term += 1
                    self.acquired_at = self.clock()
        self._changed(changed, how)

    def _spec(self, now: float, acquire: float, transitions: int) -> dict:
        return {
            "holderIdentity": self.identity,
            # Rounded up: others must not take the lease before our fence has closed.
            "leaseDurationSeconds": math.ceil(self.lease_s),
            "acquireTime": _micro(acquire),
            "renewTime": _micro(now),
            "leaseTransitions": transitions,
        }

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        # A renew that hangs is of no use once the deadline has passed: try again instead.
        return self.kube.request(method, path, body=body, timeout=self.renew_deadline_s)

    def _try(self, now: float) -> bool:
        try:
            lease = self._request("GET", f"{self.path}/{self.name}")
        except KubeError as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, now, 0),
            }
            try:
                self._request("POST", self.path, body=body)
            except KubeError as exc2:
                if exc2.status == 409:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = timestamp(spec.get("renewTime")) or 0.0
        duration = float(spec.get("leaseDurationSeconds") or self.lease_s)
        mine = holder == self.identity
        if not mine and holder and now - renewed < duration:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        acquire = timestamp(spec.get("acquireTime")) or 0.0 if mine else now
        lease["spec"] = self._spec(now, acquire, transitions)
        try:
            self._request("PUT", f"{self.path}/{self.name}", body=lease)
        except KubeError as exc:
            if exc.status == 409:  # someone else wrote first
                return False
            raise
        return True

    def _release(self) -> None:
        """Clears the holder so a standby takes over at once rather than after the lease."""
        try:
            lease = self._request("GET", f"{self.path}/{self.name}")
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["renewTime"] = _micro(0)
                self._request("PUT", f"{self.path}/{self.name}", body=lease)
        except KubeError as exc:
            log.warning("could not release lease %s: %s", self.name, exc)
