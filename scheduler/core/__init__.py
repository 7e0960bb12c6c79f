"""The pure decision core: a snapshot in, decisions out, no I/O and no clock.

The daemon and the simulator call `decide`; neither holds policy of its own.
"""

from scheduler.core.config import PolicyConfig, load_policy
from scheduler.core.engine import decide
from scheduler.core.errors import InvalidInput
from scheduler.core.manifests import load_teams, team_from_manifest
from scheduler.core.model import (
    Bind,
    Budget,
    Decisions,
    Eviction,
    Gang,
    Node,
    OnExhausted,
    Pending,
    Pod,
    Snapshot,
    Team,
    TeamStatus,
    TeamUsage,
    Tier,
)
from scheduler.core.policies import POLICIES, Policy

__all__ = [
    "POLICIES",
    "Bind",
    "Budget",
    "Decisions",
    "Eviction",
    "Gang",
    "InvalidInput",
    "Node",
    "OnExhausted",
    "Pending",
    "Pod",
    "Policy",
    "PolicyConfig",
    "Snapshot",
    "Team",
    "TeamStatus",
    "TeamUsage",
    "Tier",
    "decide",
    "load_policy",
    "load_teams",
    "team_from_manifest",
]
