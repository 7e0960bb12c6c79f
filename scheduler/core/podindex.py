"""The placed pods as the pod-dependent filters read them: labels, host ports and required
anti-affinity, by node, for one cycle.

Built only in a cycle that needs it (a waiting pod states host ports, pod affinity or
anti-affinity or a DoNotSchedule spread, or a running pod states required anti-affinity),
from the running set, and kept current as the cycle binds, evicts and tries placements:
`add` and `remove_gang` are journalled, so `rollback` undoes a trial as the cluster's
journal does. Pods with the same namespace and labels share one label set, so a selector
is matched once per set (a Deployment's replicas are one set), then per pod by indexing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from scheduler.core.labels import columns
from scheduler.core.podterms import AffinityTerm, HostPort, PodTerms

if TYPE_CHECKING:
    from scheduler.core.model import Gang, Node, Pod

LabelSet = tuple[str, tuple[tuple[str, str], ...]]  # (namespace, sorted label items)


class PodIndex:
    """Placed pods by node: a row per pod, with its label set, node and running gang."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = nodes
        self.n = len(nodes)
        self.version = 0
        self._set_id: dict[LabelSet, int] = {}
        self.sets: list[tuple[str, dict[str, str]]] = []
        self._cap = 64
        self.node = np.zeros(self._cap, dtype=np.int64)
        self.set = np.zeros(self._cap, dtype=np.int64)
        self.alive = np.zeros(self._cap, dtype=bool)
        self.rows = 0
        self.gang_rows: dict[int, list[int]] = {}
        self.ports: dict[tuple[str, int], list[tuple[int, str]]] = {}
        self.anti: dict[AffinityTerm, list[int]] = {}  # running pods' required anti-affinity terms
        self.journal: list[tuple[int, int]] = []  # (+1 added, -1 removed, row)
        self._match: dict[Hashable, tuple[np.ndarray, Callable[[str, dict[str, str]], bool]]] = {}
        self.memo: dict[Hashable, np.ndarray] = {}  # per-node facts of one cycle (node affinity, taints)

    # ------------------------------------------------------------ building

    @classmethod
    def of_running(cls, nodes: Sequence[Node], node_index: dict[str, int], gangs: Iterable[Gang]) -> PodIndex:
        """Every bound pod on a known node, as the running table holds them (gang by gang)."""
        idx = cls(nodes)
        for g, gang in enumerate(gangs):
            terms = gang.terms
            for k, pod in enumerate(gang.pods):
                i = node_index.get(pod.node) if pod.node is not None else None
                if i is not None:
                    idx.add(i, pod, terms[k] if terms else None, g)
        idx.journal.clear()
        return idx

    def _label_set(self, namespace: str, labels: tuple[tuple[str, str], ...]) -> int:
        key = (namespace, labels)
        sid = self._set_id.get(key)
        if sid is None:
            sid = self._set_id[key] = len(self.sets)
            self.sets.append((namespace, dict(labels)))
        return sid

    def add(self, node: int, pod: Pod, terms: PodTerms | None, gang: int = -1) -> int:
        """A pod placed on `node` (`gang`: its running gang's index, -1 for one placed now)."""
        r = self.rows
        if r == self._cap:
            self._cap *= 2
            for name in ("node", "set", "alive"):
                old = getattr(self, name)
                grown = np.zeros(self._cap, dtype=old.dtype)
                grown[:r] = old
                setattr(self, name, grown)
        self.node[r] = node
        self.set[r] = self._label_set(pod.namespace, pod.labels)
        self.alive[r] = True
        self.rows = r + 1
        if gang >= 0:
            self.gang_rows.setdefault(gang, []).append(r)
        if terms is not None:
            for p in terms.ports:
                self.ports.setdefault((p.protocol, p.port), []).append((r, p.host_ip))
            for t in terms.anti_affinity:
                self.anti.setdefault(t, []).append(r)
        self.journal.append((+1, r))
        self.version += 1
        return r

    def remove_gang(self, gang: int) -> None:
        """A running gang evicted (or, in a trial, taken out)."""
        for r in self.gang_rows.get(gang, ()):
            if self.alive[r]:
                self.alive[r] = False
                self.journal.append((-1, r))
        self.version += 1

    def mark(self) -> int:
        return len(self.journal)

    def rollback(self, mark: int) -> None:
        """Undo every add and removal since `mark` (adds are undone last first)."""
        while len(self.journal) > mark:
            sign, r = self.journal.pop()
            if sign < 0:
                self.alive[r] = True
                continue
            self.alive[r] = False
            self.rows = r  # the newest row: nothing refers to it any more
            for held in self.ports.values():
                while held and held[-1][0] >= r:
                    held.pop()
            for rows in self.anti.values():
                while rows and rows[-1] >= r:
                    rows.pop()
        self.version += 1

    def commit(self) -> None:
        self.journal.clear()

    # ------------------------------------------------------------ reading

    def domains(self, key: str) -> tuple[np.ndarray, int]:
        """Per node the id of its value of label `key` (-1: the node has no such label),
        and how many values there are: the topology domains of `key`."""
        return columns(tuple(self.nodes)).domains(key)

    def matching(self, key: Hashable, pred: Callable[[str, dict[str, str]], bool]) -> np.ndarray:
        """Per live row: whether its pod's (namespace, labels) satisfy `pred` (remembered
        per label set under `key`)."""
        hit = self._match.get(key)
        have = 0 if hit is None else hit[0].size
        if hit is None or have < len(self.sets):
            more = np.fromiter((pred(ns, lb) for ns, lb in self.sets[have:]), dtype=bool)
            arr = more if hit is None else np.concatenate((hit[0], more))
            self._match[key] = (arr, pred)
        else:
            arr = hit[0]
        r = self.rows
        return arr[self.set[:r]] & self.alive[:r]

    def per_node(self, rows: np.ndarray) -> np.ndarray:
        """Matching pods per node, from a mask over rows."""
        return np.bincount(self.node[: self.rows][rows], minlength=self.n)

    def term_rows(self, term: AffinityTerm) -> np.ndarray:
        return self.matching(("term", term), term.matches)

    def in_domains(self, key: str, per_node: np.ndarray) -> np.ndarray:
        """Per node: the sum of `per_node` over its domain of `key` (0 without the label)."""
        dom, count = self.domains(key)
        has = dom >= 0
        total = np.bincount(dom[has], weights=per_node[has], minlength=count)
        return np.where(has, total[np.maximum(dom, 0)], 0)

    def port_conflicts(self, ports: Iterable[HostPort]) -> np.ndarray | None:
        """Nodes where a placed pod holds a port that conflicts with one of `ports` (None: none)."""
        out: np.ndarray | None = None
        for p in ports:
            for r, ip in self.ports.get((p.protocol, p.port), ()):
                if self.alive[r] and r < self.rows and p.conflicts(HostPort(p.port, p.protocol, ip)):
                    if out is None:
                        out = np.zeros(self.n, dtype=bool)
                    out[self.node[r]] = True
        return out

    def forbidding(self, namespace: str, labels: dict[str, str]) -> np.ndarray | None:
        """Nodes in a domain where a placed pod's required anti-affinity term matches a pod
        of `namespace` with `labels` (None: none), as kube-scheduler's symmetry check."""
        out: np.ndarray | None = None
        for term, rows in self.anti.items():
            if not rows or not term.matches(namespace, labels):
                continue
            live = [r for r in rows if r < self.rows and self.alive[r]]
            if not live:
                continue
            dom, count = self.domains(term.topology_key)
            ids = dom[self.node[live]]
            ids = ids[ids >= 0]
            if ids.size == 0:
                continue
            hit = np.zeros(count, dtype=bool)
            hit[ids] = True
            off = (dom >= 0) & hit[np.maximum(dom, 0)]
            out = off if out is None else out | off
        return out

    def has_anti(self) -> bool:
        return any(self.anti.values())

    def matched_by_anti(self, namespace: str, labels: dict[str, str]) -> bool:
        """Whether some placed pod's required anti-affinity term matches such a pod."""
        return any(rows and t.matches(namespace, labels) for t, rows in self.anti.items())
