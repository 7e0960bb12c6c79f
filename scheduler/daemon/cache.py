"""A local cache of the API objects the scheduler reads, kept current by list-and-watch.

One thread per resource lists it, then watches from the list's resourceVersion. A 410
Gone (the version fell out of the API server's window) or a broken connection (the API
server restarted) leads to a fresh list after a short backoff, which replaces the store
wholesale, so deletions missed meanwhile disappear too. Every change bumps a shared
generation counter and wakes the scheduling loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scheduler.daemon.kube import Kube, KubeError

log = logging.getLogger("gpufair.cache")


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    path: str
    optional: bool = False  # a CRD that may not be installed: absent means empty


RESOURCES = (
    Resource("pods", "/api/v1/pods"),
    Resource("nodes", "/api/v1/nodes"),
    Resource("namespaces", "/api/v1/namespaces"),
    Resource("priorityclasses", "/apis/scheduling.k8s.io/v1/priorityclasses"),
    Resource("pdbs", "/apis/policy/v1/poddisruptionbudgets"),
    Resource("gputeams", "/apis/gpufair.io/v1alpha1/gputeams"),
    Resource("podgroups", "/apis/scheduling.x-k8s.io/v1alpha1/podgroups", optional=True),
    # Volume binding (scheduler/daemon/volumes.py). Optional: a cluster without CSINodes (or
    # one whose RBAC predates them) still schedules; a pod's claim then reads as missing.
    Resource("pvcs", "/api/v1/persistentvolumeclaims", optional=True),
    Resource("pvs", "/api/v1/persistentvolumes", optional=True),
    Resource("storageclasses", "/apis/storage.k8s.io/v1/storageclasses", optional=True),
    Resource("csinodes", "/apis/storage.k8s.io/v1/csinodes", optional=True),
    # The workloads that own pods (workloads.py): read for a gang's size, level and age. A
    # kind whose CRD is not installed is simply not recognised.
    Resource("jobs", "/apis/batch/v1/jobs", optional=True),
    Resource("jobsets", "/apis/jobset.x-k8s.io/v1alpha2/jobsets", optional=True),
    Resource("leaderworkersets", "/apis/leaderworkerset.x-k8s.io/v1/leaderworkersets", optional=True),
    Resource("rayclusters", "/apis/ray.io/v1/rayclusters", optional=True),
    Resource("rayjobs", "/apis/ray.io/v1/rayjobs", optional=True),
    *(
        Resource(plural, f"/apis/kubeflow.org/v1/{plural}", optional=True)
        for plural in ("pytorchjobs", "tfjobs", "mpijobs", "xgboostjobs", "paddlejobs", "jaxjobs")
    ),
    Resource("trainjobs", "/apis/trainer.kubeflow.org/v1alpha1/trainjobs", optional=True),
)


def object_key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else meta["name"]


class Store:
    """Objects of one resource by namespace/name; readers get a copy of the values.

    It also remembers which keys changed since the last `drain`, and whether it was
    relisted meanwhile, so the daemon's incremental state (live.py) reads only those."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._relisted = False
        self.available = True  # False while its list is refused (an optional kind not served)

    def replace(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._items = {object_key(o): o for o in items}
            self._relisted = True
            self._dirty = set()

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        with self._lock:
            if kind == "DELETED":
                self._items.pop(key, None)
            else:
                self._items[key] = obj
            self._dirty.add(key)

    def drain(self) -> tuple[bool, set[str]]:
        """(relisted since the last drain, the keys changed since); both start afresh."""
        with self._lock:
            out = (self._relisted, self._dirty)
            self._relisted, self._dirty = False, set()
            return out

    @property
    def pending(self) -> bool:
        """Changes not drained yet."""
        return self._relisted or bool(self._dirty)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(key)

    def values(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self._items.items())

    def __len__(self) -> int:
        return len(self._items)


class Cache:
    def __init__(
        self,
        kube: Kube,
        on_change: Callable[[], None],
        resources: tuple[Resource, ...] = RESOURCES,
        backoff_s: float = 1.0,
    ) -> None:
        self.kube = kube
        self.on_change = on_change
        self.resources = resources
        self.stores = {r.name: Store() for r in resources}
        self.synced = {r.name: threading.Event() for r in resources}
        self.backoff_s = backoff_s
        self.relists = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __getitem__(self, name: str) -> Store:
        return self.stores[name]

    def start(self) -> None:
        for r in self.resources:
            t = threading.Thread(target=self._run, args=(r,), name=f"watch-{r.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout_s: float) -> bool:
        return all(e.wait(timeout_s) for e in self.synced.values())

    @property
    def is_synced(self) -> bool:
        return all(e.is_set() for e in self.synced.values())

    def _run(self, r: Resource) -> None:
        store = self.stores[r.name]
        delay = self.backoff_s
        while not self._stop.is_set():
            try:
                items, rv = self.kube.list(r.path)
            except KubeError as exc:
                if exc.status in (403, 404) and r.optional:
                    if exc.status == 403:
                        log.warning("not allowed to list %s: read as empty (grant list/watch)", r.name)
                    # Replaced once, not every retry: a relist rebuilds the daemon's state.
                    if store.available or not self.synced[r.name].is_set():
                        store.available = False
                        store.replace([])
                    self.synced[r.name].set()
                    self._stop.wait(30)
                    continue
                log.warning("list %s failed (%s); retrying in %.1fs", r.name, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            store.available = True
            store.replace(items)
            self.relists += 1
            self.synced[r.name].set()
            self.on_change()
            delay = self.backoff_s
            try:
                while not self._stop.is_set():
                    for event in self.kube.watch(r.path, rv):
                        kind, obj = event["type"], event["object"]
                        rv = obj["metadata"]["resourceVersion"]
                        if kind == "BOOKMARK":
                            continue
                        store.apply(kind, obj)
                        self.on_change()
                        if self._stop.is_set():
                            return
            except KubeError as exc:
                if exc.status == 410:
                    log.info("watch %s: resourceVersion too old; relisting", r.name)
                else:
                    log.warning("watch %s broke (%s); relisting in %.1fs", r.name, exc, delay)
                    self._stop.wait(delay)
