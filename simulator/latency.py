"""The live control plane's delays, as the replay's clock can model them (all 0: none).

A replay decides the instant anything changes and its decisions take effect at once; a
live daemon decides in cycles, its binds take time to become running pods, and a pod that
finished is noticed a while later (the kubelet marks it done, the watch delivers it, the
next cycle runs). These options move the replay's clock the same way, so a replay can be
compared with a live run (benchmarks/sim_vs_live.py). They change when the core is asked
and when its decisions take effect, never what it decides: the policy stays in the core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Latency:
    """Delays in trace seconds.

    - `cycle_s`: the core decides only at ticks every `cycle_s` (0, 1·cycle_s, 2·cycle_s, …),
      as the daemon's loop does; an arrival or an end between ticks waits for the next one,
      and while gangs wait and anything runs a tick comes every `cycle_s`, so rules that
      depend on time alone (a min-runtime running out) act at the next tick. A preemptor
      binds a tick after its victims' eviction (the daemon's next cycle).
    - `bind_s`: a decided gang's pods start `bind_s` after the decision. Its GPUs are held
      from the decision; its start, min-runtime and end count from the pods' start.
    - `end_s`: a finished run's GPUs come back to the scheduler `end_s` after its end. The
      job ends (and stops counting as allocated) at its end; until then the core still sees
      its pods bound, so no one can use the GPUs.
    - `arrival_s`: a job reaches the scheduler `arrival_s` after its submission (the API's
      whole-second creation time, the watch); its wait still counts from the submission.
    """

    cycle_s: float = 0.0
    bind_s: float = 0.0
    end_s: float = 0.0
    arrival_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("cycle_s", "bind_s", "end_s", "arrival_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"latency {name}: {value!r} is not a number of seconds >= 0")

    @property
    def none(self) -> bool:
        """True when the replay keeps today's instant clock."""
        return self.cycle_s == 0 and self.bind_s == 0 and self.end_s == 0 and self.arrival_s == 0

    def next_tick(self, now: float) -> float:
        """The first tick at or after `now` (now itself without a cycle interval)."""
        if self.cycle_s == 0:
            return now
        k = math.ceil(now / self.cycle_s - 1e-9)
        return k * self.cycle_s

    def on_tick(self, now: float) -> bool:
        return self.cycle_s == 0 or abs(self.next_tick(now) - now) <= 1e-9 * max(1.0, abs(now))
