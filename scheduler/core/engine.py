"""The decision core's entry point: `decide(snapshot) -> Decisions`.

It builds a fresh `Core` (incremental.py) from the snapshot and runs one cycle
(cycle.py) under the policy's units (policies.py; the extension points are in
framework.py). Same snapshot, config and policy: same decisions.
"""

from __future__ import annotations

from dataclasses import replace

from scheduler.core.config import PolicyConfig
from scheduler.core.cycle import run_cycle
from scheduler.core.incremental import Core
from scheduler.core.model import Decisions, Snapshot
from scheduler.core.policies import Policy

__all__ = ["decide", "run_cycle"]


def decide(
    snapshot: Snapshot,
    config: PolicyConfig | None = None,
    policy: str | Policy = "gpufair",
    reference: bool = False,
) -> Decisions:
    """Run one decision cycle. `reference=True`: with every speed-up off (shortcuts.py)."""
    core = Core.from_snapshot(snapshot, config, policy, reference=reference)
    d = core.decide(snapshot.now_s, snapshot.usage)
    return replace(d, pending=tuple(d.pending))
