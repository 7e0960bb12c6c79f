"""The daemon's decision input kept from one cycle to the next, change by change.

`SnapshotBuilder.build` reads the whole cache; at 4,000 nodes and 145,000 pods that is
seconds a cycle. `LiveState` keeps the translation of every object instead and, each cycle,
translates again only what the watch changed since the last one (`Store.drain`), plus the
objects that read something that changed: a pod's gang is assembled again when any of its
pods changes; a PodGroup re-reads the pods labelled with it; a PriorityClass the pods that
take their priority from one; a namespace's labels the pods stating pod (anti-)affinity; a
PodDisruptionBudget the bound pods of its namespace whose protection it turns; a storage
object, or a pod with claims, every pending pod with claims; a node joining or leaving the
pods on it; a GPUTeam the gangs of the namespaces it takes or gives up. The gangs that
changed go to a persistent `Core` (put / remove; a node change is one `set_nodes`), so the
core too reads only what changed. It decides nothing: every object is translated by the
builder's own steps, so a fresh build and this state agree, which `check` verifies.

A relist (410 Gone, a broken watch, a restart) rebuilds it all from the cache.
"""

from __future__ import annotations

import logging
from collections import ChainMap, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.core.config import PolicyConfig
from scheduler.core.errors import InvalidInput
from scheduler.core.incremental import Core
from scheduler.core.mig import MigRates, is_mig
from scheduler.core.model import Gang, Node, Snapshot, Team, TeamUsage
from scheduler.core.policies import Policy
from scheduler.daemon.cache import Cache
from scheduler.daemon.translate import (
    GANG_LABEL,
    GANG_SIZE,
    LABEL_GANG,
    POD_GROUP_LABEL,
    SCHEDULER_NAME,
    TERMINAL_PHASES,
    PodPart,
    Problem,
    SnapshotBuilder,
    Translation,
    _GangParts,
    node_from_api,
    protected_by_pdb,
)
from scheduler.daemon.volumes import VolumeReader, has_claims
from scheduler.daemon.workloads import CacheOwners, Workload

log = logging.getLogger("gpufair.live")

STORAGE = ("pvcs", "pvs", "storageclasses", "csinodes")
OWN, FOREIGN, INVALID = 0, 1, 2


@dataclass(slots=True)
class _Entry:
    """One pod as last translated."""

    rv: str
    node: str | None  # as read, the daemon's assumed bind included
    kind: int
    ns: str
    gid: str | None = None  # its gang (OWN, INVALID) or its foreign gang (FOREIGN, on a known node)
    min_member: int | None = None
    label: str | None = None  # a gpufair.io/gang gang's label value
    size: str | None = None  # its gang-size annotation
    group: str | None = None  # ns/name of the PodGroup it names
    workload: Workload | None = None  # the owning workload that names its gang
    reads: tuple[tuple[str, str], ...] = ()  # the owners (resource, key) its gang was read from
    protected: bool = False
    part: PodPart | None = None
    obj: dict[str, Any] | None = None


def _with_node(obj: dict[str, Any], node: str | None) -> dict[str, Any]:
    if node is None:
        return obj
    return {**obj, "spec": {**obj.get("spec", {}), "nodeName": node}}


def _reads_namespaces(obj: Mapping[str, Any]) -> bool:
    affinity = (obj.get("spec") or {}).get("affinity") or {}
    return bool(affinity.get("podAffinity") or affinity.get("podAntiAffinity"))


class LiveState:
    """See the module doc. `refresh` once a cycle; `core` is then the cycle's input."""

    def __init__(self, cache: Cache, config: PolicyConfig, policy: Policy, reference: bool = False) -> None:
        self.cache = cache
        self.config = config
        self.policy = policy
        self.reference = reference
        self.core: Core | None = None
        self.rebuilds = 0
        self._clear()

    def _clear(self) -> None:
        self.builder = SnapshotBuilder(())
        self.builder.owners = CacheOwners(self.cache.stores)
        self.teams: tuple[Team, ...] = ()
        self.team_problems: list[Problem] = []
        self.node_rows: dict[str, tuple[tuple[str, tuple[int, ...]], Node | None]] = {}
        self.nodes: tuple[Node, ...] = ()
        self.node_names: frozenset[str] = frozenset()
        self.node_problems: dict[str, Problem] = {}
        self.entries: dict[str, _Entry] = {}
        self.members: dict[str, set[str]] = {}  # gang id -> its pods' keys
        self.gangs: dict[str, Gang] = {}  # every readable gang, held ones included
        self.pods: dict[str, dict[str, Any]] = {}  # gpufair's pods as read
        self.gang_pods: dict[str, list[str]] = {}
        self.pod_gang_pods: dict[str, list[str]] = {}  # of pods whose gang cannot be named
        self.gang_invalid: dict[str, str] = {}
        self.pod_invalid: dict[str, str] = {}
        self.pod_problems: dict[str, Problem] = {}
        self.gang_problems: dict[str, Problem] = {}
        # Who reads what, for the changes that are not the pod's own.
        self.by_ns: dict[str, set[str]] = defaultdict(set)  # gpufair's pods
        self.on_node: dict[str, set[str]] = defaultdict(set)  # every pod with a node
        self.by_group: dict[str, set[str]] = defaultdict(set)
        self.by_owner: dict[tuple[str, str], set[str]] = defaultdict(set)  # owner -> pods read from it
        self.class_priority: set[str] = set()  # no spec.priority: read from the PriorityClass
        self.affinity_pods: set[str] = set()
        self.claim_pods: set[str] = set()
        self.mig_pods: set[str] = set()
        self.pdbs: dict[str, list[dict[str, Any]]] = {}
        self.held: frozenset[str] = frozenset()
        self.overlay: dict[str, str] = {}
        self.nominated: dict[str, str] = {}
        self.unhealthy: dict[str, tuple[int, ...]] = {}
        self.taken: frozenset[str] = frozenset()
        self.storage: VolumeReader | None = None
        self._changed: set[str] = set()
        self._dirty_gangs: set[str] = set()
        self._claims_changed = False
        self._built = False

    # ------------------------------------------------------------------ a cycle

    def refresh(
        self,
        now: float,
        *,
        unhealthy: Mapping[str, Iterable[int]] | None = None,
        hold: Iterable[str] = (),
        nominated: Mapping[str, str] | None = None,
        overlay: Mapping[str, str] | None = None,
        taken: Iterable[str] = (),
        usage: Mapping[str, TeamUsage] | None = None,
    ) -> Translation:
        """Reads what changed since the last call; `overlay` gives pods the daemon has bound
        whose watch event has not come back (pod -> node); the rest as SnapshotBuilder.build."""
        drained = {name: store.drain() for name, store in self.cache.stores.items()}
        if not self._built or any(relisted for relisted, _ in drained.values()):
            self._clear()
            self.rebuilds += 1
            dirty: dict[str, set[str]] = {
                name: set(store.keys()) for name, store in self.cache.stores.items()
            }
        else:
            dirty = {name: keys for name, (_r, keys) in drained.items()}
        self._apply(
            dirty, unhealthy or {}, frozenset(hold), dict(nominated or {}), dict(overlay or {}), taken
        )
        return self.translation(now, usage)

    def translation(self, now: float, usage: Mapping[str, TeamUsage] | None = None) -> Translation:
        assert self.core is not None
        held = self.held
        invalid = {g: why for g, why in self.gang_invalid.items() if g not in held} | self.pod_invalid
        problems = [
            *self.team_problems,
            *self.node_problems.values(),
            *self.pod_problems.values(),
            *(p for g, p in self.gang_problems.items() if g not in held),
        ]
        snapshot = Snapshot(
            now, self.core.nodes, self.core.teams, tuple(self.core.gangs.values()), dict(usage or {})
        )
        gang_pods = ChainMap(self.gang_pods, self.pod_gang_pods)
        return Translation(snapshot, self.pods, gang_pods, problems, invalid)

    def in_core(self, pod: str) -> bool:
        """The pod's gang is in this cycle's input."""
        e = self.entries.get(pod)
        return e is not None and e.kind == OWN and self.core is not None and e.gid in self.core.gangs

    # ------------------------------------------------------------------ applying changes

    def _apply(
        self,
        dirty: dict[str, set[str]],
        unhealthy: Mapping[str, Iterable[int]],
        hold: frozenset[str],
        nominated: dict[str, str],
        overlay: dict[str, str],
        taken: Iterable[str],
    ) -> None:
        cache, b = self.cache, self.builder
        forced: set[str] = set()  # pods to translate again though their own object is the same
        new_core = self.core is None or not self._built
        if dirty.get("gputeams") or not self._built:
            new_core |= self._teams(forced)
        if dirty.get("priorityclasses") or dirty.get("namespaces") or not self._built:
            before = (b.priority_of, b.default_priority, b.namespace_labels)
            b.read_context(
                cache["priorityclasses"].values(), b.nominated, b.volumes, cache["namespaces"].values()
            )
            if (b.priority_of, b.default_priority) != before[:2]:
                forced |= self.class_priority
            if b.namespace_labels != before[2]:
                forced |= self.affinity_pods
        if nominated != self.nominated:
            forced |= {
                k
                for k in nominated.keys() | self.nominated.keys()
                if nominated.get(k) != self.nominated.get(k)
            }
            self.nominated = nominated
            b.nominated = nominated
        for key in overlay.keys() | self.overlay.keys():
            if overlay.get(key) != self.overlay.get(key):
                forced.add(key)
        self.overlay = overlay
        nodes_changed = self._nodes(dirty.get("nodes", set()), unhealthy, forced)
        if dirty.get("pdbs"):
            self._pdbs(dirty["pdbs"], forced)
        for key in dirty.get("podgroups", ()):
            forced |= self.by_group.get(key, set())
        if self.by_owner:  # a workload that changed, arrived or went: its pods read again
            for name, keys in dirty.items():
                for key in keys:
                    forced |= self.by_owner.get((name, key), set())
        for key in dirty.get("pods", set()) | forced:
            self._pod(key, key in forced)
        self._storage(dirty, frozenset(taken))
        for gid in self._dirty_gangs:
            self._assemble(gid)
        self._dirty_gangs = set()
        if hold != self.held:
            self._changed |= hold ^ self.held
            self.held = hold
        self._sync(new_core, nodes_changed)
        self._built = True

    def _teams(self, forced: set[str]) -> bool:
        """GPUTeams read again; True when the core's team list changed (a new Core)."""
        b = self.builder
        old_owner = dict(b.team_of_ns)
        fresh = SnapshotBuilder(self.cache["gputeams"].values())
        b.team_of_ns, self.team_problems = fresh.team_of_ns, fresh.problems
        b.teams = fresh.teams
        moved = {
            ns for ns in old_owner.keys() | b.team_of_ns.keys() if old_owner.get(ns) != b.team_of_ns.get(ns)
        }
        if moved:
            self._dirty_gangs |= {gid for gid in self.members if gid.split("/", 1)[0] in moved}
        changed = fresh.teams != self.teams
        self.teams = fresh.teams
        return changed

    def _nodes(self, keys: set[str], unhealthy: Mapping[str, Iterable[int]], forced: set[str]) -> bool:
        sick = {n: tuple(sorted(v)) for n, v in unhealthy.items() if v}
        keys = keys | {n for n in sick.keys() | self.unhealthy.keys() if sick.get(n) != self.unhealthy.get(n)}
        self.unhealthy = sick
        changed: set[str] = set()
        store = self.cache["nodes"]
        for name in keys:
            obj = store.get(name)
            old = self.node_rows.get(name)
            if obj is None:
                if old is not None:
                    del self.node_rows[name]
                    changed.add(name)
                self.node_problems.pop(name, None)
                continue
            stamp = (obj["metadata"].get("resourceVersion", ""), sick.get(name, ()))
            if old is not None and old[0] == stamp:
                continue
            self.node_problems.pop(name, None)
            try:
                node: Node | None = node_from_api(obj, sick.get(name, ()))
            except InvalidInput as exc:  # left out (nothing is placed there); the rest go on
                node = None
                self.node_problems[name] = Problem("Node", "", name, str(exc))
            self.node_rows[name] = (stamp, node)
            if old is None or old[1] != node:
                changed.add(name)
        if not changed:
            return False
        nodes = tuple(row[1] for _n, row in sorted(self.node_rows.items()) if row[1] is not None)
        names = frozenset(n.name for n in nodes)
        for name in names ^ self.node_names:  # their pods now count, or no longer
            forced |= self.on_node.get(name, set())
        mig = any(is_mig(r) for n in (*nodes, *self.nodes) if n.name in changed for r, _a in n.extras)
        if mig or not self._built:
            self.builder.mig = MigRates(nodes)
            forced |= self.mig_pods
        self.nodes, self.node_names = nodes, names
        return True

    def _pdbs(self, keys: set[str], forced: set[str]) -> None:
        by_ns: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for pdb in self.cache["pdbs"].values():
            by_ns[pdb["metadata"].get("namespace", "")].append(pdb)
        self.pdbs = dict(by_ns)
        for ns in {k.split("/", 1)[0] for k in keys}:
            pdbs = self.pdbs.get(ns, [])
            for key in self.by_ns.get(ns, ()):
                e = self.entries[key]
                if e.node is not None and e.obj is not None and protected_by_pdb(e.obj, pdbs) != e.protected:
                    forced.add(key)

    def _storage(self, dirty: dict[str, set[str]], taken: frozenset[str]) -> None:
        """A new VolumeReader when a storage object, a pod with claims or the PVs being
        bound changed; every pending pod with claims is then read with it."""
        changed = self._claims_changed or taken != self.taken or any(dirty.get(r) for r in STORAGE)
        if not (changed or not self._built):
            return
        self._claims_changed = False
        self.taken = taken
        claimed = [e.obj for k in self.claim_pods if (e := self.entries.get(k)) is not None and e.obj]
        c = self.cache
        self.storage = VolumeReader(
            c["pvcs"].values(),
            c["pvs"].values(),
            c["storageclasses"].values(),
            c["csinodes"].values(),
            claimed,
            taken,
        )
        self.builder.volumes = self.storage.read
        for key in self.claim_pods:  # their parts read the claims: made again at assembly
            e = self.entries.get(key)
            if e is not None and e.kind == OWN and e.node is None and e.gid is not None:
                e.part = None
                self._dirty_gangs.add(e.gid)

    # ------------------------------------------------------------------ pods and gangs

    def _pod(self, key: str, forced: bool) -> None:
        raw = self.cache["pods"].get(key)
        old = self.entries.get(key)
        node_over = self.overlay.get(key)
        # An overlay that changed forces it: otherwise the same version reads the same.
        if (
            not forced
            and raw is not None
            and old is not None
            and old.rv == raw["metadata"].get("resourceVersion")
        ):
            return
        if old is not None:
            self._unlink(key, old)
        if raw is None or raw.get("status", {}).get("phase") in TERMINAL_PHASES:
            return
        obj = _with_node(raw, node_over)
        meta, spec = obj["metadata"], obj.get("spec", {})
        ns = meta.get("namespace", "default")
        node = spec.get("nodeName")
        if node:
            self.on_node[node].add(key)
        if _reads_namespaces(obj):
            self.affinity_pods.add(key)
        if has_claims(obj):
            self.claim_pods.add(key)
            self._claims_changed = True
        if spec.get("schedulerName") != SCHEDULER_NAME:
            e = _Entry(meta.get("resourceVersion", ""), node, FOREIGN, ns, obj=obj)
            self.entries[key] = e
            if node in self.node_names:
                e.gid = f"{key}#other"
                try:
                    gang = self.builder.foreign(obj, key, node)
                except InvalidInput as exc:
                    self.pod_problems[key] = Problem("Pod", ns, meta["name"], str(exc))
                else:
                    if any(is_mig(r) for r, _a in gang.pods[0].extras):
                        self.mig_pods.add(key)
                    self._set_gang(e.gid, gang)
            return
        self.pods[key] = obj
        self.by_ns[ns].add(key)
        if spec.get("priority") is None:
            self.class_priority.add(key)
        labels = meta.get("labels") or {}
        e = _Entry(meta.get("resourceVersion", ""), node, OWN, ns, obj=obj)
        self.entries[key] = e
        if labels.get(POD_GROUP_LABEL):
            e.group = f"{ns}/{labels[POD_GROUP_LABEL]}"
            self.by_group[e.group].add(key)
        try:
            gid, e.min_member = self.builder.gang_of(obj, ns, labels, self.cache["podgroups"])
        except InvalidInput as exc:
            self._read_owners(key, e)
            gid = f"{ns}/{meta['name']}"
            e.kind, e.gid = INVALID, gid
            self.pod_invalid[gid] = str(exc)
            self.pod_gang_pods[gid] = [key]
            self.pod_problems[key] = Problem("Pod", ns, meta["name"], str(exc))
            return
        self._read_owners(key, e)
        e.workload = self.builder.last_workload
        e.gid = gid
        if e.min_member is None and gid.startswith(f"{ns}/{LABEL_GANG}"):
            e.label = labels[GANG_LABEL]
            e.size = (meta.get("annotations") or {}).get(GANG_SIZE)
        if node is not None:
            e.protected = protected_by_pdb(obj, self.pdbs.get(ns, ()))
        self.members.setdefault(gid, set()).add(key)
        self._dirty_gangs.add(gid)

    def _read_owners(self, key: str, e: _Entry) -> None:
        e.reads = tuple(self.builder.last_reads)
        for owner in e.reads:
            self.by_owner[owner].add(key)

    def _unlink(self, key: str, e: _Entry) -> None:
        del self.entries[key]
        for owner in e.reads:
            pods = self.by_owner.get(owner)
            if pods is not None:
                pods.discard(key)
                if not pods:
                    del self.by_owner[owner]
        if e.node:
            on = self.on_node.get(e.node)
            if on is not None:
                on.discard(key)
                if not on:
                    del self.on_node[e.node]
        self.affinity_pods.discard(key)
        self.mig_pods.discard(key)
        if key in self.claim_pods:
            self.claim_pods.discard(key)
            self._claims_changed = True
        self.pod_problems.pop(key, None)
        if e.kind == FOREIGN:
            if e.gid is not None:
                self._set_gang(e.gid, None)
            return
        self.pods.pop(key, None)
        self.by_ns[e.ns].discard(key)
        self.class_priority.discard(key)
        if e.group is not None:
            self.by_group[e.group].discard(key)
        if e.kind == INVALID:
            assert e.gid is not None
            self.pod_invalid.pop(e.gid, None)
            self.pod_gang_pods.pop(e.gid, None)
            return
        assert e.gid is not None
        members = self.members.get(e.gid)
        if members is not None:
            members.discard(key)
        self._dirty_gangs.add(e.gid)

    def _assemble(self, gid: str) -> None:
        self.gang_invalid.pop(gid, None)
        self.gang_problems.pop(gid, None)
        keys = self.members.get(gid)
        if not keys:
            self.members.pop(gid, None)
            self.gang_pods.pop(gid, None)
            self._set_gang(gid, None)
            return
        ordered = sorted(keys)  # one namespace: by key is by pod name
        self.gang_pods[gid] = ordered
        entries = [self.entries[k] for k in ordered]
        ns = entries[0].ns
        b = self.builder
        try:
            label = entries[0].label
            min_member: int | None
            if label is not None:
                sizes = {k: e.size for k, e in zip(ordered, entries, strict=True)}
                min_member = b._label_gang_size(gid, _GangParts(ns, label=label, sizes=sizes))
            else:
                min_member = next((e.min_member for e in entries if e.min_member is not None), None)
            parts = []
            for e in entries:
                if e.part is None:
                    assert e.obj is not None
                    e.part = b.pod_part(e.obj, ns, self.node_names, e.protected)
                parts.append(e.part)
            workload = next((e.workload for e in entries if e.workload is not None), None)
            gang = b.assemble(gid, ns, min_member, parts, workload)
        except InvalidInput as exc:
            self.gang_invalid[gid] = str(exc)
            first = entries[0].obj["metadata"]["name"] if entries[0].obj else ordered[0]
            self.gang_problems[gid] = Problem("Pod", ns, first, str(exc))
            self._set_gang(gid, None)
            return
        self._set_gang(gid, gang)

    def _set_gang(self, gid: str, gang: Gang | None) -> None:
        old = self.gangs.get(gid)
        if gang is None:
            if old is not None:
                del self.gangs[gid]
                self._changed.add(gid)
        elif old is None or old != gang:
            self.gangs[gid] = gang
            self._changed.add(gid)

    def _sync(self, new_core: bool, nodes_changed: bool) -> None:
        """The changed gangs (and nodes) into the Core; a new Core when the teams changed."""
        if new_core or self.core is None:
            gangs = tuple(g for gid, g in self.gangs.items() if gid not in self.held)
            snap = Snapshot(0.0, self.nodes, self.teams, gangs, {})
            self.core = Core.from_snapshot(snap, self.config, self.policy, reference=self.reference)
            self._changed = set()
            return
        core = self.core
        if nodes_changed:
            core.set_nodes(self.nodes)
        for gid in self._changed:
            gang = self.gangs.get(gid)
            if gang is not None and gid not in self.held:
                core.put(gang)
            elif gid in core.gangs:
                core.remove(gid)
        self._changed = set()

    # ------------------------------------------------------------------ the full check

    def fresh(
        self,
        now: float,
        unhealthy: Mapping[str, Iterable[int]] | None = None,
        taken: Iterable[str] = (),
    ) -> Translation:
        """A fresh build from the whole cache with the inputs of the last refresh."""
        c = self.cache
        pods = [_with_node(p, self.overlay.get(k)) for k, p in c["pods"].items()]
        storage = VolumeReader(
            c["pvcs"].values(),
            c["pvs"].values(),
            c["storageclasses"].values(),
            c["csinodes"].values(),
            pods,
            taken,
        )
        return SnapshotBuilder(c["gputeams"].values()).build(
            now,
            c["nodes"].values(),
            pods,
            c["podgroups"].values(),
            c["pdbs"].values(),
            unhealthy=unhealthy,
            hold=self.held,
            priority_classes=c["priorityclasses"].values(),
            nominated=self.nominated,
            volumes=storage.read,
            namespaces_raw=c["namespaces"].values(),
            owners=CacheOwners(c.stores),
        )

    def differences(self, fresh: Translation, limit: int = 10) -> list[str]:
        """How this state differs from `fresh` (empty: it is the same core input)."""
        out: list[str] = []
        snap = fresh.snapshot
        if self.nodes != snap.nodes:
            mine = {n.name: n for n in self.nodes}
            theirs = {n.name: n for n in snap.nodes}
            out += [f"node {n}" for n in sorted(mine.keys() | theirs.keys()) if mine.get(n) != theirs.get(n)]
        if self.teams != snap.teams:
            out.append("teams")
        mine_g = {gid: g for gid, g in self.gangs.items() if gid not in self.held}
        theirs_g = {g.id: g for g in snap.gangs}
        for gid in sorted(mine_g.keys() | theirs_g.keys()):
            if mine_g.get(gid) != theirs_g.get(gid):
                how = "missing" if gid not in mine_g else "extra" if gid not in theirs_g else "differs"
                out.append(f"gang {gid}: {how}")
        assert self.core is not None
        if (
            set(self.core.gangs) != set(theirs_g)
            or self.core.nodes != snap.nodes
            or self.core.teams != snap.teams
        ):
            out.append("core input")
        mine_tr = self.translation(snap.now_s)
        if set(mine_tr.pods) != set(fresh.pods):
            out.append("pods")
        if dict(mine_tr.gang_pods) != dict(fresh.gang_pods):
            out.append("gang pods")
        if mine_tr.invalid != fresh.invalid:
            out.append(f"invalid {sorted(mine_tr.invalid.items() ^ fresh.invalid.items())[:3]}")
        if sorted(map(repr, mine_tr.problems)) != sorted(map(repr, fresh.problems)):
            out.append("problems")
        return out[:limit]
