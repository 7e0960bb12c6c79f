"""Weighted max-min fair share (water-filling) and the decayed-usage fair-share factor."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.core.model import Team


def decay(value: float, elapsed_s: float, half_life_s: float) -> float:
    """`value` after `elapsed_s` of exponential decay with the given half-life."""
    if elapsed_s <= 0:
        return value
    return value * math.pow(0.5, elapsed_s / half_life_s)


def water_fill(
    capacity: float,
    weights: Sequence[float],
    demands: Sequence[float],
    floors: Sequence[float],
    caps: Sequence[float | None],
) -> list[float]:
    """Weighted max-min fair shares of `capacity`.

    Each team first gets min(floor, demand, cap); if the floors alone exceed capacity
    they are scaled down in proportion. The rest is poured in proportion to weight until
    every team reaches min(demand, cap) or the capacity runs out, so no team gets more
    than it asks for and unused entitlement flows to the others.
    """
    n = len(weights)
    if n == 0:
        return []
    # min() and max() are written out as conditionals (same values, same arithmetic):
    # their calls were most of the cost, and a replay divides capacity every cycle.
    limits = [
        x if x > 0.0 else 0.0
        for x in [c if c is not None and c < d else d for d, c in zip(demands, caps, strict=True)]
    ]
    if any(f > 0.0 for f in floors):
        floor = [f if f > 0.0 else 0.0 for f in floors]
        base = [lim if lim < a else a for lim, a in zip(limits, floor, strict=True)]
    else:
        base = [0.0] * n  # min(max(0, floor), limit) with no floor and limits never below 0
    capacity = max(0.0, capacity)
    total_base = sum(base)
    if total_base >= capacity:
        scale = capacity / total_base if total_base > 0 else 0.0
        return [b * scale for b in base]
    if all(map(math.isfinite, limits)) and sum(limits) <= capacity:
        return limits[:]

    def level_part(bases: Sequence[float], ws: Sequence[float], level: float) -> list[float]:
        """max(floor, weight * level) per team (the level is never negative)."""
        rise = [w * level for w in ws]
        return [x if x > b else b for b, x in zip(bases, rise, strict=True)] if any(bases) else rise

    # A team that asks for nothing gets nothing at every level and adds exactly 0.0 to
    # every sum, so the search leaves it out (most of a replay's teams, early on).
    lims, bases, ws = zip(*[t for t in zip(limits, base, weights, strict=True) if t[0] > 0], strict=True)

    def filled(level: float) -> float:
        return sum([x if x < lim else lim for lim, x in zip(lims, level_part(bases, ws, level), strict=True)])

    # The filled amount is piecewise linear in the water level, bending where a team
    # leaves its floor or reaches its limit: find the segment that crosses capacity.
    bends = {b / w for b, w in zip(bases, ws, strict=True)} | {
        lim / w for lim, w in zip(lims, ws, strict=True) if math.isfinite(lim)
    }
    points = sorted(bends)
    # `filled` never falls as the level rises: a binary search finds the first bend that
    # reaches capacity, with the same arithmetic as walking the bends one by one.
    first, last = 0, len(points)
    while first < last:
        mid = (first + last) // 2
        if filled(points[mid]) >= capacity:
            last = mid
        else:
            first = mid + 1
    lo = points[first - 1] if first > 0 else 0.0
    f_lo = filled(lo)
    level = None
    if first < len(points):
        p = points[first]
        f_p = filled(p)
        level = p if f_p == f_lo else lo + (capacity - f_lo) * (p - lo) / (f_p - f_lo)
    if level is None:  # past every bend: only teams with no limit still rise
        slope = sum(w for w, lim in zip(weights, limits, strict=True) if not math.isfinite(lim))
        level = lo + (capacity - f_lo) / slope
    return [x if x < lim else lim for lim, x in zip(limits, level_part(base, weights, level), strict=True)]


def fairshare_factors(weights: Sequence[float], decayed_usage: Sequence[float]) -> list[float]:
    """Slurm's classic factor 2^(-U/S): 1 for a team with no history, towards 0 for heavy users.

    U is the team's part of all decayed usage, S its part of all weight.
    """
    total_w = sum(weights)
    total_u = sum(decayed_usage)
    out = []
    for w, u in zip(weights, decayed_usage, strict=True):
        share = w / total_w if total_w > 0 else 0.0
        used = u / total_u if total_u > 0 else 0.0
        out.append(math.pow(2.0, -used / share) if share > 0 else 0.0)
    return out


def entitled_shares(
    healthy: float, demand: Mapping[str, float], teams: Mapping[str, Team]
) -> dict[str, float]:
    """The yardstick of fairness reports: each team with demand gets its water-filled share
    of the healthy GPUs (a team not in `teams` weighs 1, with no floor or cap)."""
    names = [n for n, d in demand.items() if d > 0]
    if not names:
        return {}
    cfg = [teams.get(n) for n in names]
    shares = water_fill(
        healthy,
        [1.0 if c is None else c.weight for c in cfg],
        [demand[n] for n in names],
        [0.0 if c is None else c.guaranteed_gpus for c in cfg],
        [None if c is None else c.max_gpus for c in cfg],
    )
    return dict(zip(names, shares, strict=True))
