"""Telling people what the scheduler decided: pod conditions, events and GPUTeam status.

Pending pods get `PodScheduled=False`, reason `Unschedulable`, with the core's words, and
a `FailedScheduling` event. Neither is rewritten every cycle: a condition is patched when
its words change (and at most every `condition_every_s` when only numbers in them move),
an event is posted when the reason code changes or `event_every_s` has passed. Victims get
a `Preempted` event naming the preemptor before they are evicted, which is what
`gpufair explain` reads once the pod is gone.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scheduler.core.model import Eviction, TeamStatus
from scheduler.daemon.kube import MERGE_PATCH, STRATEGIC_PATCH, Kube, KubeError

log = logging.getLogger("gpufair.explain")

COMPONENT = "gpufair"


def now_rfc3339(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class _Said:
    code: str
    message: str
    condition_at: float
    event_at: float


@dataclass(slots=True)
class Explainer:
    kube: Kube
    identity: str = COMPONENT
    condition_every_s: float = 30.0
    event_every_s: float = 300.0
    _said: dict[str, _Said] = field(default_factory=dict)
    _team_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    _team_at: dict[str, float] = field(default_factory=dict)

    def pending(self, pod: dict[str, Any], code: str, message: str, now: float) -> None:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        said = self._said.get(key)
        condition: dict[str, Any] = next(
            (c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "PodScheduled"),
            {},
        )
        shown = condition.get("status") == "False" and condition.get("message") == message
        due = said is None or said.code != code or now - said.condition_at >= self.condition_every_s
        if not shown and due:
            self._condition(meta, message)
            said = self._remember(key, code, message, now, said)
            said.condition_at = now
        if said is None or said.code != code or now - said.event_at >= self.event_every_s:
            self.event(pod, "FailedScheduling", message, "Warning")
            said = self._remember(key, code, message, now, said)
            said.event_at = now

    def _remember(self, key: str, code: str, message: str, now: float, said: _Said | None) -> _Said:
        if said is None:
            said = self._said[key] = _Said(code, message, -1e18, -1e18)
        said.code, said.message = code, message
        return said

    def forget(self, live: set[str]) -> None:
        for key in [k for k in self._said if k not in live]:
            del self._said[key]

    def _condition(self, meta: dict[str, Any], message: str) -> None:
        body = {
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastTransitionTime": now_rfc3339(),
                    }
                ]
            }
        }
        try:
            self.kube.request(
                "PATCH",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                body=body,
                content_type=STRATEGIC_PATCH,
            )
        except KubeError as exc:
            if exc.status != 404:
                log.warning("could not set PodScheduled on %s/%s: %s", meta["namespace"], meta["name"], exc)

    def event(self, obj: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        stamp = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": ns},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind", "Pod"),
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.identity,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.kube.request("POST", f"/api/v1/namespaces/{ns}/events", body=body)
        except KubeError as exc:
            log.warning("could not post event %s on %s: %s", reason, meta["name"], exc)

    def team_problem(self, team: dict[str, Any], message: str, now: float) -> None:
        """A Warning event on a GPUTeam that cannot be read, once per message or interval."""
        name = team["metadata"]["name"]
        key = f"GPUTeam/{name}"
        said = self._said.get(key)
        if said is not None and said.message == message and now - said.event_at < self.event_every_s:
            return
        obj = {**team, "apiVersion": "gpufair.io/v1alpha1", "kind": "GPUTeam"}
        self.event(obj, "InvalidSpec", message, "Warning")
        said = self._remember(key, "InvalidSpec", message, now, said)
        said.event_at = now

    def preempted(self, pod: dict[str, Any], eviction: Eviction) -> None:
        self.event(pod, "Preempted", eviction.reason, "Warning")

    def bound(self, pod: dict[str, Any], node: str) -> None:
        self.event(
            pod,
            "Scheduled",
            f"Successfully assigned {pod['metadata']['namespace']}/{pod['metadata']['name']} to {node}",
        )

    def team_status(
        self, team: str, status: TeamStatus | None, problem: str | None, now: float, min_every_s: float = 5.0
    ) -> None:
        """Patches a GPUTeam's status subresource when what it shows changed."""
        body: dict[str, Any] = {"conditions": [_valid_condition(problem)]}
        if status is not None:
            body.update(
                {
                    "weight": status.weight,
                    "fairShareGPUs": round(status.fair_share_gpus, 3),
                    "allocatedGPUs": round(status.allocated_gpus, 3),
                    "productionGPUs": round(status.production_gpus, 3),
                    "scavengerGPUs": round(status.scavenger_gpus, 3),
                    "pendingPods": status.pending_pods,
                    "budgetGPUHours": status.budget_gpu_hours,
                    "budgetUsedGPUHours": round(status.budget_used_gpu_hours, 3),
                    "budgetLeftGPUHours": (
                        None
                        if status.budget_left_gpu_hours is None
                        else round(status.budget_left_gpu_hours, 3)
                    ),
                    "budgetExhausted": status.budget_exhausted,
                    "budgetExhaustedAt": status.budget_exhausted_at,
                    "path": status.path,
                    "group": status.group,
                    "idleGPUs": round(status.idle_gpus, 3),
                    "budgetResetsAt": (
                        None if status.budget_resets_s is None else now_rfc3339(status.budget_resets_s)
                    ),
                }
            )
        if self._team_status.get(team) == body:
            return
        if now - self._team_at.get(team, -1e18) < min_every_s and team in self._team_status:
            return
        stamped = {**body, "lastUpdated": now_rfc3339(now)}
        stamped["conditions"] = [{**c, "lastTransitionTime": now_rfc3339(now)} for c in body["conditions"]]
        try:
            self.kube.request(
                "PATCH",
                f"/apis/gpufair.io/v1alpha1/gputeams/{team}/status",
                body={"status": stamped},
                content_type=MERGE_PATCH,
            )
        except KubeError as exc:
            if exc.status != 404:
                log.warning("could not update GPUTeam %s status: %s", team, exc)
            return
        self._team_status[team] = body
        self._team_at[team] = now


def _valid_condition(problem: str | None) -> dict[str, str]:
    if problem is None:
        return {"type": "Valid", "status": "True", "reason": "Accepted", "message": "spec is valid"}
    return {"type": "Valid", "status": "False", "reason": "InvalidSpec", "message": problem[:1024]}
