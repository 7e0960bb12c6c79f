"""Leader election on a coordination.k8s.io Lease: only the leader binds or evicts.

The client library's elector reads the global default client and exits the process on a
bad setting, and cannot be stopped; this one uses the daemon's own client, stops on
request and exposes `is_leader` for the loop and the metrics. Semantics follow client-go:
a holder renews every `retry_s`; a candidate takes the Lease once `renewTime` is older
than `lease_s`; a leader that fails to renew within `renew_deadline_s` steps down.
Writes carry the Lease's resourceVersion, so two candidates cannot both win a race.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from scheduler.daemon.kube import Kube, KubeError
from scheduler.daemon.translate import timestamp

log = logging.getLogger("gpufair.leader")


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
    ) -> None:
        if not lease_s > renew_deadline_s > retry_s > 0:
            raise ValueError("leader election needs lease > renew deadline > retry period > 0")
        self.kube = kube
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_s, self.renew_deadline_s, self.retry_s = lease_s, renew_deadline_s, retry_s
        self.is_leader = False
        self.leader_changed = threading.Event()
        self._last_renew = 0.0
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
        self._set(False)

    def _set(self, leading: bool) -> None:
        if leading != self.is_leader:
            log.info(
                "%s %s the lease %s/%s",
                self.identity,
                "acquired" if leading else "lost",
                self.namespace,
                self.name,
            )
            self.is_leader = leading
            self.leader_changed.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            try:
                self._set(self._try(now))
                if self.is_leader:
                    self._last_renew = now
            except KubeError as exc:
                log.warning("lease %s: %s", self.name, exc)
                if self.is_leader and time.time() - self._last_renew > self.renew_deadline_s:
                    self._set(False)
            self._stop.wait(self.retry_s)

    def _spec(self, now: float, acquire: float, transitions: int) -> dict:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": round(self.lease_s),
            "acquireTime": _micro(acquire),
            "renewTime": _micro(now),
            "leaseTransitions": transitions,
        }

    def _try(self, now: float) -> bool:
        try:
            lease = self.kube.request("GET", f"{self.path}/{self.name}")
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
                self.kube.request("POST", self.path, body=body)
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
            self.kube.request("PUT", f"{self.path}/{self.name}", body=lease)
        except KubeError as exc:
            if exc.status == 409:  # someone else wrote first
                return False
            raise
        return True

    def _release(self) -> None:
        """Clears the holder so a standby takes over at once rather than after the lease."""
        try:
            lease = self.kube.request("GET", f"{self.path}/{self.name}")
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["renewTime"] = _micro(0)
                self.kube.request("PUT", f"{self.path}/{self.name}", body=lease)
        except KubeError as exc:
            log.warning("could not release lease %s: %s", self.name, exc)
