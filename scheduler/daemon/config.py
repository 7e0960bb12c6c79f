"""The daemon's settings: a YAML file, then command-line flags over it.

Policy knobs live in the policy document (`scheduler.core.config`), the same one the
simulator reads; this file holds only how the daemon runs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from scheduler.core.config import PolicyConfig, policy_from_mapping
from scheduler.core.durations import parse_duration
from scheduler.core.errors import InvalidInput
from scheduler.core.policies import POLICIES


def default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    kubeconfig: str | None = None  # None: $KUBECONFIG, in-cluster, ~/.kube/config (kube.find_credentials)
    policy_name: str = "gpufair"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    interval_s: float = 10.0  # a cycle at least this often, even when nothing changed
    debounce_s: float = 0.02  # least pause between cycles: a burst of watch events gathers meanwhile
    qps: float = 50.0  # client-side rate limit on API calls, as kube-scheduler's default
    burst: int = 100
    max_in_flight: int = 16  # concurrent bind / evict calls
    leader_elect: bool = True
    lease_namespace: str = "gpufair-system"
    lease_name: str = "gpufair-scheduler"
    lease_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0
    identity: str = field(default_factory=default_identity)
    listen: str = "0.0.0.0:10260"  # /healthz, /readyz, /metrics
    ledger_url: str | None = None  # SQLite path or database URL; None: $GPUFAIR_LEDGER_URL or no ledger
    accrue_every_s: float = 30.0  # how often GPU-hours are written to the ledger
    mqtt_broker: str | None = None  # host:port of the telemetry broker; None: no telemetry
    mqtt_ca: str | None = None
    mqtt_cert: str | None = None
    mqtt_key: str | None = None
    telemetry_stale_s: float = 120.0
    log_format: str = "json"  # or 'text'
    # Keep the core's input from cycle to cycle (live.py); False rebuilds it every cycle.
    incremental: bool = True
    full_check_every_s: float = 600.0  # how often the incremental state is checked against a fresh build
    check_incremental: bool = False  # check every cycle (debugging; costs a full build each cycle)


_DURATIONS = {
    "interval",
    "debounce",
    "lease",
    "renewDeadline",
    "retry",
    "telemetryStale",
    "accrueEvery",
    "fullCheckEvery",
}
_KEYS = {
    "kubeconfig": "kubeconfig",
    "policyName": "policy_name",
    "interval": "interval_s",
    "debounce": "debounce_s",
    "qps": "qps",
    "burst": "burst",
    "maxInFlight": "max_in_flight",
    "leaderElect": "leader_elect",
    "leaseNamespace": "lease_namespace",
    "leaseName": "lease_name",
    "lease": "lease_s",
    "renewDeadline": "renew_deadline_s",
    "retry": "retry_s",
    "identity": "identity",
    "listen": "listen",
    "ledger": "ledger_url",
    "accrueEvery": "accrue_every_s",
    "mqttBroker": "mqtt_broker",
    "mqttCA": "mqtt_ca",
    "mqttCert": "mqtt_cert",
    "mqttKey": "mqtt_key",
    "telemetryStale": "telemetry_stale_s",
    "logFormat": "log_format",
    "incremental": "incremental",
    "fullCheckEvery": "full_check_every_s",
    "checkIncremental": "check_incremental",
}


def daemon_config_from(doc: Mapping[str, Any] | None, base: DaemonConfig | None = None) -> DaemonConfig:
    """A `kind: SchedulerConfig` document: `scheduler:` (the keys above) and `policy:`."""
    base = base or DaemonConfig()
    doc = doc or {}
    if not isinstance(doc, Mapping):
        raise InvalidInput("scheduler config", "(document)", "is not a mapping", "write YAML keys")
    unknown = set(doc) - {"apiVersion", "kind", "scheduler", "policy"}
    if unknown:
        raise InvalidInput(
            "scheduler config", sorted(unknown)[0], "unknown key", "use apiVersion, kind, scheduler, policy"
        )
    values: dict[str, Any] = {}
    body = doc.get("scheduler") or {}
    if not isinstance(body, Mapping):
        raise InvalidInput("scheduler config", "scheduler", "is not a mapping", "write key: value pairs")
    for key, raw in body.items():
        attr = _KEYS.get(key)
        if attr is None:
            raise InvalidInput(
                "scheduler config",
                f"scheduler.{key}",
                "unknown key",
                f"use one of {', '.join(sorted(_KEYS))}",
            )
        if key in _DURATIONS:
            raw = parse_duration(raw, "scheduler config", f"scheduler.{key}")
        values[attr] = raw
    if "policy" in doc:
        values["policy"] = policy_from_mapping(doc["policy"])
    return check(replace(base, **values))


def load_daemon_config(text: str, base: DaemonConfig | None = None) -> DaemonConfig:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput("scheduler config", "(yaml)", f"cannot be parsed: {exc}", "fix the YAML") from exc
    return daemon_config_from(doc, base)


def check(cfg: DaemonConfig) -> DaemonConfig:
    if cfg.policy_name not in POLICIES:
        raise InvalidInput(
            "scheduler config",
            "scheduler.policyName",
            f"unknown policy {cfg.policy_name!r}",
            f"use one of {', '.join(sorted(POLICIES))}",
        )
    for name in ("incremental", "check_incremental"):
        if not isinstance(getattr(cfg, name), bool):
            raise InvalidInput("scheduler config", name, "must be true or false", "write true or false")
    positive = ("interval_s", "qps", "lease_s", "renew_deadline_s", "retry_s", "accrue_every_s")
    for name in (*positive, "full_check_every_s"):
        if not isinstance(getattr(cfg, name), int | float) or getattr(cfg, name) <= 0:
            raise InvalidInput("scheduler config", name, "must be a positive number", "give a value above 0")
    if not cfg.lease_s > cfg.renew_deadline_s > cfg.retry_s:
        raise InvalidInput(
            "scheduler config",
            "scheduler.lease",
            "lease > renewDeadline > retry does not hold",
            "e.g. lease 15s, renewDeadline 10s, retry 2s",
        )
    if not isinstance(cfg.max_in_flight, int) or cfg.max_in_flight < 1:
        raise InvalidInput("scheduler config", "scheduler.maxInFlight", "must be >= 1", "e.g. 16")
    host, _, port = cfg.listen.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInput(
            "scheduler config", "scheduler.listen", f"{cfg.listen!r} is not host:port", "e.g. 0.0.0.0:10260"
        )
    if cfg.log_format not in ("json", "text"):
        raise InvalidInput("scheduler config", "scheduler.logFormat", "unknown format", "use json or text")
    return cfg
