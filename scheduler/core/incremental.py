"""The decision core's input kept current change by change, for callers that decide often.

`decide(snapshot)` reads the whole snapshot every cycle. A caller that decides after
every few changes (the simulator, after each batch of events; a daemon, after each
watch event) can keep a `Core` instead: tell it what changed (`put` a new or changed
gang, `remove` a finished one, `set_nodes`), then call `Core.decide(now, usage)`. It
runs the very same cycle as `decide`, on the same input as `decide(core.snapshot(...))`,
and gives the same decisions; only the reading of the input is incremental. The Core is
an explicit object the caller owns and passes around, not hidden state: `decide` itself
builds a fresh one from its snapshot each time.

Gang order matters where the policy breaks ties between running gangs, so the Core keeps
the order of a snapshot: a gang that is put again (bound, evicted) moves to the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scheduler.core.cluster import ClusterState
from scheduler.core.config import PolicyConfig
from scheduler.core.cycle import run_cycle
from scheduler.core.errors import InvalidInput
from scheduler.core.intake import RunningStore
from scheduler.core.model import Decisions, Gang, Node, Snapshot, Team, TeamUsage
from scheduler.core.placement import GangRequest, RequestKey
from scheduler.core.podcycle import states_terms
from scheduler.core.policies import Policy, get_policy
from scheduler.core.pools import reserved_pools, with_team_pool
from scheduler.core.shortcuts import Shortcuts
from scheduler.core.teamtree import build_tree
from scheduler.core.waiting import WaitingStore


def _waits(gang: Gang) -> bool:
    """Whether the gang has a pod not yet bound (as `read_running` splits them)."""
    pods = gang.pods
    if len(pods) == 1:
        return pods[0].node is None
    return any(p.node is None for p in pods)


class Core:
    """Nodes, teams and gangs, kept as the cycle reads them. See the module doc."""

    nodes: tuple[Node, ...]
    base: ClusterState
    max_node_gpus: int
    running: RunningStore

    def __init__(
        self,
        nodes: Iterable[Node],
        teams: Iterable[Team],
        config: PolicyConfig | None = None,
        policy: str | Policy = "gpufair",
        explain: bool = True,
        reference: bool = False,
    ) -> None:
        """`reference=True` switches every speed-up off (see shortcuts.py): the same
        decisions, slower; for the tests that hold the fast mode to it."""
        self.config = config or PolicyConfig()
        # False: cycles leave `pending` empty. Saying why each gang waits is a good part of
        # a cycle's cost, and a replay never reads it; binds and evictions are the same.
        self.explain = explain
        self.policy = get_policy(policy)
        self.teams = tuple(teams)
        self.team_index = {t.name: i for i, t in enumerate(self.teams)}
        self.tree = build_tree(self.teams)  # refuses a cycle, a missing parent, ...
        # Team node pools (pools.py): merged into each gang the Core is given.
        self._reserved = reserved_pools(self.teams)
        self._pools = any(t.node_selector or t.tolerations for t in self.teams) or any(
            self._reserved.values()
        )
        self.sink = len(self.teams)
        self.gangs: dict[str, Gang] = {}  # snapshot order
        # Gangs a pod of which states host ports, pod (anti-)affinity or spread: while there
        # are none, a cycle builds no index of placed pods (podcycle.py).
        self.term_gangs: set[str] = set()
        self.seq: dict[str, int] = {}
        self._next_seq = 0
        self.waiting = WaitingStore(frozenset(self.team_index), self.policy.filters)
        self.shortcuts = Shortcuts(reference=reference)
        self.nodes = ()
        self._set_nodes(tuple(nodes), reload=False)

    @classmethod
    def from_snapshot(
        cls,
        snap: Snapshot,
        config: PolicyConfig | None = None,
        policy: str | Policy = "gpufair",
        reference: bool = False,
    ) -> Core:
        core = cls(snap.nodes, snap.teams, config, policy, reference=reference)
        gangs = tuple(core._pooled(g) for g in snap.gangs) if core._pools else snap.gangs
        for gang in gangs:
            if gang.id in core.gangs:
                raise InvalidInput(
                    f"gang {gang.id!r}",
                    "id",
                    "two gangs of the snapshot share this id",
                    "give each gang its own id",
                )
            core.gangs[gang.id] = gang
            if gang.terms and states_terms(gang):
                core.term_gangs.add(gang.id)
        core.seq = {gid: n for n, gid in enumerate(core.gangs)}
        core._next_seq = len(core.gangs)
        waiting = core.running.load(gangs)
        core.waiting.load([(pos, gang) for pos, gang in waiting])
        return core

    # ------------------------------------------------------------------ changes

    def _set_nodes(self, nodes: tuple[Node, ...], reload: bool = True) -> None:
        # The running store names nodes by position: while the names stay the same in the
        # same order (a node relabelled, cordoned, resized), its rows hold as they are, and
        # only what was worked out on the old nodes goes (the loaded cluster, the masks).
        keep = (
            reload
            and self.shortcuts.enabled
            and len(nodes) == len(self.nodes)
            and all(a.name == b.name for a, b in zip(nodes, self.nodes, strict=True))
        )
        self.nodes = nodes
        self.base = ClusterState(nodes, self.config)  # free capacity before any running pod
        self.max_node_gpus = int(self.base.usable.max()) if self.base.node_count else 0
        if keep:
            self.running.node_index = self.base.index
            self.running.version += 1
            self.running.removals += 1  # a node may have more room than it had
            self.running.changes = None
            reload = False
        else:
            self.running = RunningStore(self.team_index, self.sink, self.base.index)
        self.shortcuts.forget_nodes()
        # Shared placement requests by (shapes, filter signatures, widest level): their node
        # masks depend on the nodes only, so they live as long as the node list.
        self.requests: dict[RequestKey, GangRequest] = {}
        if reload:
            self.running.load(tuple(self.gangs.values()))

    def set_nodes(self, nodes: Iterable[Node]) -> None:
        """New node list (a node failed, was repaired, joined or left)."""
        self._set_nodes(tuple(nodes))

    def _pooled(self, gang: Gang) -> Gang:
        t = self.team_index.get(gang.team)
        team = self.teams[t] if t is not None else None
        return with_team_pool(gang, team, self._reserved.get(gang.team, ()))

    def put(self, gang: Gang) -> None:
        """A new gang, or a new version of one (bound, evicted, changed); it moves to the end."""
        if self._pools:
            gang = self._pooled(gang)
        old = self.gangs.pop(gang.id, None)
        if old is not None:
            self._drop(old)
        self.gangs[gang.id] = gang
        if gang.terms and states_terms(gang):
            self.term_gangs.add(gang.id)
        self.seq[gang.id] = self._next_seq
        self._next_seq += 1
        self.running.add(gang)
        if _waits(gang):
            self.waiting.add(gang, self.seq[gang.id])

    def remove(self, gang_id: str) -> None:
        """The gang is gone (finished, deleted)."""
        old = self.gangs.pop(gang_id)
        del self.seq[gang_id]
        self._drop(old)

    def _drop(self, gang: Gang) -> None:
        self.term_gangs.discard(gang.id)
        if any(p.node is not None for p in gang.pods):
            self.running.remove(gang.id)
        if _waits(gang):
            self.waiting.remove(gang)

    # ------------------------------------------------------------------ deciding

    def snapshot(self, now_s: float, usage: Mapping[str, TeamUsage] | None = None) -> Snapshot:
        """The snapshot this Core stands for: `decide` on it gives what `self.decide` gives."""
        return Snapshot(now_s, self.nodes, self.teams, tuple(self.gangs.values()), dict(usage or {}))

    def decide(self, now_s: float, usage: Mapping[str, TeamUsage] | None = None) -> Decisions:
        """One decision cycle on the current input. `pending` is a LazyPending: the reasons
        for long runs of look-alike waiting gangs are built when first read (and it is
        empty when the Core was made with `explain=False`)."""
        return run_cycle(self, now_s, usage or {})
