"""Node labels and taints as columns, so a selector or a toleration is judged for every node
in a few numpy steps rather than one Python call per node.

Columns are made once per node tuple (by identity: a Core keeps one tuple until a node
changes) and per label key; the node filters read them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scheduler.core.constraints import PodConstraints, Requirement, Taint, Term
from scheduler.core.model import Node

_NAME = "metadata.name"


class NodeColumns:
    """Per label key, every node's value (None where the node has no such label)."""

    def __init__(self, nodes: tuple[Node, ...]) -> None:
        self.nodes = nodes
        self.n = len(nodes)
        self._columns: dict[str, np.ndarray] = {}
        self._taints: dict[tuple[Taint, ...], np.ndarray] | None = None
        self._domains: dict[str, tuple[np.ndarray, int]] = {}

    def column(self, key: str, field: bool = False) -> np.ndarray:
        name = f"field:{key}" if field else key
        col = self._columns.get(name)
        if col is None:
            if field:
                values = [n.name if key == _NAME else None for n in self.nodes]
            else:
                values = [n.labels.get(key) for n in self.nodes]
            col = self._columns[name] = np.array(values, dtype=object).reshape(self.n)
        return col

    def domains(self, key: str) -> tuple[np.ndarray, int]:
        """Per node the id of its value of label `key` (-1: the node has no such label), ids
        in order of first appearance, and how many values there are: the domains of `key`."""
        hit = self._domains.get(key)
        if hit is None:
            col = self.column(key)
            present = np.flatnonzero(col != None)  # noqa: E711 (elementwise on an object array)
            ids = np.full(self.n, -1, dtype=np.int64)
            count = 0
            if present.size:
                uniq, first, inverse = np.unique(
                    col[present].astype(str), return_index=True, return_inverse=True
                )
                rank = np.empty(uniq.size, dtype=np.int64)
                rank[np.argsort(first, kind="stable")] = np.arange(uniq.size)
                ids[present] = rank[inverse.reshape(-1)]
                count = int(uniq.size)
            hit = self._domains[key] = (ids, count)
        return hit

    def taint_groups(self) -> dict[tuple[Taint, ...], np.ndarray]:
        """The nodes of each distinct set of taints (untainted nodes left out)."""
        if self._taints is None:
            groups: dict[tuple[Taint, ...], list[int]] = {}
            for i, node in enumerate(self.nodes):
                if node.taints:
                    groups.setdefault(node.taints, []).append(i)
            self._taints = {t: np.array(idx, dtype=np.int64) for t, idx in groups.items()}
        return self._taints

    # ------------------------------------------------------------ selectors

    def requirement(self, r: Requirement, field: bool = False) -> np.ndarray:
        col = self.column(r.key, field)
        present = col != None  # noqa: E711 (elementwise on an object array)
        op = r.operator
        if op in ("In", "NotIn"):
            hit = np.isin(col, np.array(r.values, dtype=object)) & present
            return hit if op == "In" else ~hit
        if op == "Exists":
            return present
        if op == "DoesNotExist":
            return ~present
        # Gt / Lt: judged once per distinct value, as whole numbers (anything else: no match).
        out = np.zeros(self.n, dtype=bool)
        if len(r.values) != 1:
            return out
        for value in set(col[present].tolist()):
            out[col == value] = r.matches(value)
        return out

    def term(self, t: Term) -> np.ndarray:
        if not t.expressions and not t.fields:
            return np.zeros(self.n, dtype=bool)  # an empty term selects nothing
        out = np.ones(self.n, dtype=bool)
        for r in t.expressions:
            out &= self.requirement(r)
        for r in t.fields:
            out &= self.requirement(r, field=True)
        return out

    def equal(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Nodes carrying every label key=value of `pairs` (a nodeSelector)."""
        out = np.ones(self.n, dtype=bool)
        for k, v in pairs:
            out &= self.column(k) == v
        return out

    def selects(self, c: PodConstraints) -> np.ndarray:
        """PodConstraints.selects for every node."""
        out = self.equal(c.node_selector)
        if c.required is not None:
            any_term = np.zeros(self.n, dtype=bool)
            for t in c.required:
                any_term |= self.term(t)
            out &= any_term
        return out


_MEMO: dict[int, NodeColumns] = {}


def columns(nodes: tuple[Node, ...]) -> NodeColumns:
    """The columns of this node tuple, remembered for the last few tuples."""
    hit = _MEMO.get(id(nodes))
    if hit is not None and hit.nodes is nodes:
        return hit
    if len(_MEMO) >= 4:
        _MEMO.pop(next(iter(_MEMO)))
    made = _MEMO[id(nodes)] = NodeColumns(nodes)
    return made
