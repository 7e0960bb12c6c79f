"""Decayed GPU-seconds, integrated exactly so accrual frequency does not change the result.

A GPU held over [a, b] adds, at a later instant `ref`, the integral of
2^-((ref - t) / h) dt over [a, b]. Charging [a, m] and [m, b] separately, or the whole
[a, b] at once (after a restart), gives the same number, which a rectangle rule
(`decay(D, dt) + g * dt`, as the simulator's per-event accrual does) would not. For short
intervals the two agree: the difference is about dt * ln2 / (2h) of the charge.
"""

from __future__ import annotations

import math

from scheduler.core.fairshare import decay

__all__ = ["decay", "decayed_charge"]


def decayed_charge(gpus: float, start_s: float, end_s: float, ref_s: float, half_life_s: float) -> float:
    """What `gpus` held from `start_s` to `end_s` are worth at `ref_s` (>= end_s), decayed."""
    length = end_s - start_s
    if length <= 0 or gpus == 0:
        return 0.0
    k = math.log(2.0) / half_life_s
    # gpus/k * 2^-((ref-b)/h) * (1 - 2^-((b-a)/h)), with expm1 for short intervals.
    return gpus / k * math.exp(-k * max(0.0, ref_s - end_s)) * -math.expm1(-k * length)
