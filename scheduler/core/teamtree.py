"""Teams in a tree: GPUTeam `spec.parent` makes departments (groups) of teams.

Fair share is divided top-down as KAI's hierarchical queues divide quota: the top-level
teams water-fill the capacity (fairshare.water_fill, by weight within floors and caps),
then each group water-fills what it got among its children, and so on. A group asks for
what its subtree can use (its children's demands within their caps, then its own cap), so
entitlement a child cannot use goes to its siblings first and leaves the group only when
the whole subtree cannot use it. A flat set of teams is one level: one water_fill, as
before. The usage factor and budgets follow the same tree (see `factors`, `exhaustion`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from scheduler.core.budget import budget_state
from scheduler.core.errors import InvalidInput
from scheduler.core.fairshare import entitled_shares as flat_entitled_shares
from scheduler.core.fairshare import fairshare_factors, water_fill
from scheduler.core.model import OnExhausted, Team, TeamUsage

_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class TeamTree:
    """Parent and children by team index (the order of `teams`); -1: a top-level team."""

    names: tuple[str, ...]
    parent: tuple[int, ...]
    children: tuple[tuple[int, ...], ...]
    roots: tuple[int, ...]
    order: tuple[int, ...]  # every parent before its children

    @property
    def nested(self) -> bool:
        return any(p >= 0 for p in self.parent)

    def is_group(self, t: int) -> bool:
        return bool(self.children[t])

    def path(self, t: int) -> tuple[int, ...]:
        """`t` and its ancestors, nearest first."""
        out = [t]
        while self.parent[out[-1]] >= 0:
            out.append(self.parent[out[-1]])
        return tuple(out)

    def path_names(self, t: int) -> str:
        """'org/dept/team': the label metrics and status give a team."""
        return "/".join(self.names[i] for i in reversed(self.path(t)))

    def depth(self, t: int) -> int:
        return len(self.path(t)) - 1

    def subtree_sums(self, values: Sequence[float]) -> list[float]:
        """Each team's value plus all its descendants' (a group's subtree total)."""
        out = [float(v) for v in values[: len(self.names)]]
        for t in reversed(self.order):
            if self.parent[t] >= 0:
                out[self.parent[t]] += out[t]
        return out

    def subtree(self, t: int) -> tuple[int, ...]:
        """`t` and all its descendants."""
        out, i = [t], 0
        while i < len(out):
            out.extend(self.children[out[i]])
            i += 1
        return tuple(out)

    def common(self, t: int, other: int) -> int:
        """How many ancestors `t` and `other` share: the larger, the nearer their subtrees."""
        return len(set(self.path(t)) & set(self.path(other)))

    def room(self, alloc: Sequence[float], share: Sequence[float], taker: int) -> list[float]:
        """Per team: the training GPUs it can give to `taker` with no subtree on its side
        of their common ancestor (itself included) falling below its share; 0 for `taker`
        and its ancestors, which are on both sides."""
        sub = self.subtree_sums(alloc)
        out = []
        for t in range(len(self.names)):
            mine = self.below(t, taker)
            out.append(min(sub[i] - share[i] for i in mine) if mine and t != taker else 0.0)
        return out

    def below(self, t: int, other: int) -> tuple[int, ...]:
        """`t` and its ancestors that are not ancestors of `other` (nor `other` itself):
        the subtrees on `t`'s side of their lowest common ancestor."""
        theirs = set(self.path(other)) if other >= 0 else set()
        return tuple(i for i in self.path(t) if i not in theirs)


def _refusal(obj: str, field: str, problem: str, fix: str) -> InvalidInput:
    return InvalidInput(obj, field, problem, fix)


def tree_problems(teams: Sequence[Team], left_out: Collection[str] = ()) -> dict[str, InvalidInput]:
    """Why each team that cannot be in the tree is refused, in the daemon's spirit: the
    others stay. A team whose parent is missing or refused is refused (its place in the
    tree is unknown); every team on a cycle is refused; a group that lists namespaces is
    refused; children whose guaranteedGPUs, added in the order given, no longer fit in
    their parent's are refused from the first that does not fit. `left_out`: GPUTeams
    refused for other reasons (a child of one is refused, saying so)."""
    by_name = {t.name: t for t in teams}
    refused: dict[str, InvalidInput] = {}
    for t in teams:
        seen = [t.name]
        p = t.parent
        while p is not None and p in by_name and p not in seen:
            seen.append(p)
            p = by_name[p].parent
        if p is not None and p in seen:
            loop = [*seen[seen.index(p) :], p]
            refused[t.name] = _refusal(
                f"GPUTeam {t.name!r}",
                "spec.parent",
                f"makes a cycle: {' -> '.join(loop)} (GPUTeam {t.parent!r} is its parent)",
                f"set spec.parent of one of {', '.join(repr(n) for n in loop[:-1])} so the chain "
                "ends at a top-level team (one without spec.parent)",
            )
    kids: dict[str, list[Team]] = {}
    for t in teams:
        if t.parent is not None:
            kids.setdefault(t.parent, []).append(t)
    for name, children in kids.items():
        group = by_name.get(name)
        if group is None or group.name in refused:
            continue
        if group.namespaces:
            refused[name] = _refusal(
                f"GPUTeam {name!r}",
                "spec.namespaces",
                f"is a group (GPUTeam {children[0].name!r} names it as spec.parent) and lists "
                "namespaces; a group's work is its children's",
                f"move {', '.join(group.namespaces)} to a child team, or remove spec.parent from "
                "its children",
            )
        if not any(c.guaranteed_gpus for c in children):
            continue
        total = 0.0
        for c in children:
            total += c.guaranteed_gpus
            if total > group.guaranteed_gpus + _EPS and c.name not in refused:
                refused[c.name] = _refusal(
                    f"GPUTeam {c.name!r}",
                    "spec.guaranteedGPUs",
                    f"{c.guaranteed_gpus:g} does not fit in parent GPUTeam {name!r}: its children "
                    f"guarantee {total:g} GPUs, it guarantees {group.guaranteed_gpus:g}",
                    f"raise spec.guaranteedGPUs of GPUTeam {name!r} to at least {total:g}, or "
                    f"lower the children's",
                )
    changed = True
    while changed:  # a missing or refused parent refuses the subtree below it
        changed = False
        for t in teams:
            if t.parent is None or t.name in refused:
                continue
            if t.parent not in by_name or t.parent in refused:
                why = "is refused" if t.parent in refused or t.parent in left_out else "is not a GPUTeam"
                refused[t.name] = _refusal(
                    f"GPUTeam {t.name!r}",
                    "spec.parent",
                    f"names GPUTeam {t.parent!r}, which {why}",
                    f"create or fix GPUTeam {t.parent!r}, or set spec.parent to an existing "
                    "team (leave it out for a top-level team)",
                )
                changed = True
    return refused


def build_tree(teams: Sequence[Team]) -> TeamTree:
    """The tree of `teams`; refuses the first problem `tree_problems` finds."""
    problems = tree_problems(teams)
    if problems:
        raise next(iter(problems.values()))
    index = {t.name: i for i, t in enumerate(teams)}
    parent = tuple(-1 if t.parent is None else index[t.parent] for t in teams)
    children: list[list[int]] = [[] for _ in teams]
    for i, p in enumerate(parent):
        if p >= 0:
            children[p].append(i)
    roots = tuple(i for i, p in enumerate(parent) if p < 0)
    order: list[int] = []
    level = list(roots)
    while level:
        order.extend(level)
        level = [c for t in level for c in children[t]]
    return TeamTree(tuple(t.name for t in teams), parent, tuple(map(tuple, children)), roots, tuple(order))


def shares(
    tree: TeamTree,
    capacity: float,
    weights: Sequence[float],
    demands: Sequence[float],
    floors: Sequence[float],
    caps: Sequence[float | None],
) -> list[float]:
    """Water-filled shares down the tree (see the module doc); a group's share is its
    subtree's. A flat tree is exactly `water_fill` of the same arguments."""
    if not tree.nested:
        return water_fill(capacity, weights, demands, floors, caps)
    want = [float(d) for d in demands[: len(tree.names)]]
    for t in reversed(tree.order):  # children before parents
        if tree.children[t]:
            want[t] = 0.0
            for c in tree.children[t]:
                cap = caps[c]
                want[t] += want[c] if cap is None or cap >= want[c] else cap
    out = [0.0] * len(want)

    def divide(level: Sequence[int], amount: float) -> None:
        got = water_fill(
            amount,
            [weights[i] for i in level],
            [want[i] for i in level],
            [floors[i] for i in level],
            [caps[i] for i in level],
        )
        for i, g in zip(level, got, strict=True):
            out[i] = g
            if tree.children[i]:
                divide(tree.children[i], g)

    divide(tree.roots, capacity)
    return out


def factors(tree: TeamTree, weights: Sequence[float], decayed: Sequence[float]) -> list[float]:
    """The hierarchical usage factor: at each level, siblings' classic factor 2^(-U/S) from
    their subtrees' decayed usage and their weights; a team's factor is the product of the
    factors on its path, so a department's heavy use lowers every one of its teams (an
    only child's level counts 1). A flat tree is exactly `fairshare_factors`."""
    if not tree.nested:
        return fairshare_factors(weights, decayed)
    used = tree.subtree_sums(decayed)
    out = [1.0] * len(tree.names)
    levels = [tree.roots] + [tree.children[t] for t in tree.order if tree.children[t]]
    for level in levels:  # parents' levels come first (tree.order)
        # An only child holds all of its parent's share and makes all of its usage: the
        # level says nothing (2^(-1/1) would halve it for having a parent at all).
        got = (
            [1.0]
            if len(level) == 1
            else fairshare_factors([weights[i] for i in level], [used[i] for i in level])
        )
        for i, f in zip(level, got, strict=True):
            p = tree.parent[i]
            out[i] = f * (out[p] if p >= 0 else 1.0)
    return out


def subtree_usage(tree: TeamTree, usage_of: Mapping[str, TeamUsage]) -> list[TeamUsage]:
    """Each team's usage; a group's is what the shell gives for it (the ledger books every
    level in the group's own budget period), else its subtree's sum. A flat tree: the
    usage as given."""
    none = TeamUsage()
    usage = [usage_of.get(name, none) for name in tree.names]
    if not tree.nested:
        return usage
    leaves = [TeamUsage() if tree.children[t] else u for t, u in enumerate(usage)]  # groups hold no work
    decayed = tree.subtree_sums([u.decayed_gpu_seconds for u in leaves])
    period = tree.subtree_sums([u.period_gpu_hours for u in leaves])
    idle = tree.subtree_sums([u.idle_gpus for u in leaves])
    return [
        usage[t]
        if name in usage_of or not tree.children[t]
        else TeamUsage(decayed_gpu_seconds=decayed[t], period_gpu_hours=period[t], idle_gpus=idle[t])
        for t, name in enumerate(tree.names)
    ]


def exhaustion(
    tree: TeamTree, teams: Sequence[Team], usage: Sequence[TeamUsage], now_s: float
) -> tuple[list[bool], list[bool], list[int]]:
    """Per team: whether a budget on its path (itself first, then up) is exhausted, whether
    that first exhausted budget says scavenge, and which team's budget it is (-1: none).
    The nearest exhausted budget decides, as it is the most specific limit on the team.
    `usage`: subtree usage (`subtree_usage`), so a group's budget caps its teams together."""
    n = len(teams)
    exhausted, scavenging, at = [False] * n, [False] * n, [-1] * n
    own = [
        (b := teams[t].budget) is not None and budget_state(b, usage[t], now_s).exhausted for t in range(n)
    ]
    if not any(own):
        return exhausted, scavenging, at
    for t in range(n):
        for i in tree.path(t):
            budget = teams[i].budget
            if own[i] and budget is not None:
                exhausted[t], at[t] = True, i
                scavenging[t] = budget.on_exhausted is OnExhausted.SCAVENGE
                break
    return exhausted, scavenging, at


def display_order(parents: dict[str, str | None]) -> list[tuple[str, int]]:
    """Names with their depth, each group followed by its children, by name: how `gpufair
    validate` and `status` print a tree. A team whose parent is not listed, or that is on
    a cycle, is shown at the top (the tables still list every GPUTeam, broken ones too)."""
    kids: dict[str | None, list[str]] = {}
    for name, parent in parents.items():
        kids.setdefault(parent if parent in parents else None, []).append(name)
    out: list[tuple[str, int]] = []
    seen: set[str] = set()

    def walk(name: str, depth: int) -> None:
        seen.add(name)
        out.append((name, depth))
        for c in sorted(kids.get(name, [])):
            if c not in seen:
                walk(c, depth + 1)

    for name in sorted(kids.get(None, [])):
        walk(name, 0)
    for name in sorted(parents):  # on a cycle: no root leads there
        if name not in seen:
            walk(name, 0)
    return out


def entitled_shares(
    healthy: float, demand: Mapping[str, float], teams: Mapping[str, Team]
) -> dict[str, float]:
    """fairshare.entitled_shares (the fairness reports' yardstick), water-filled down the
    tree when the teams form one: each team with demand gets its share of the healthy GPUs
    (a team not in `teams` is a top-level team of weight 1, with no floor or cap)."""
    if not any(t.parent is not None for t in teams.values()):
        return flat_entitled_shares(healthy, demand, teams)
    known = list(teams.values())
    extra = [n for n, d in demand.items() if d > 0 and n not in teams]
    every = [*known, *(Team(n) for n in extra)]
    tree = build_tree(every)
    got = shares(
        tree,
        healthy,
        [t.weight for t in every],
        [0.0 if tree.children[i] else float(demand.get(t.name, 0.0)) for i, t in enumerate(every)],
        [t.guaranteed_gpus for t in every],
        [t.max_gpus for t in every],
    )
    return {t.name: got[i] for i, t in enumerate(every) if demand.get(t.name, 0.0) > 0}
