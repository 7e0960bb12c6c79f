"""Binding a pod's WaitForFirstConsumer claims before the pod, as kube-scheduler's volume
binder does in its PreBind step: each chosen PV gets the claim in spec.claimRef (with
pv.kubernetes.io/bound-by-controller, so the PV controller treats the binding as its own
and finishes it), each claim to provision gets volume.kubernetes.io/selected-node; then
the pod is bound once every claim is bound. Every write passes the actuator's leader
fence; a PV written meanwhile by anyone else fails on its resourceVersion, so two
replicas (or a replica and kube-scheduler) never give one PV to two claims.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from scheduler.daemon.actuator import Actuator, Outcome
from scheduler.daemon.volumes import BOUND_BY_CONTROLLER, SELECTED_NODE, Plan, fully_bound

MERGE_PATCH = "application/merge-patch+json"


def claim_ref(pvc: dict[str, Any]) -> dict[str, Any]:
    """The reference the binder writes into a PV: the claim, with its UID and version."""
    meta = pvc["metadata"]
    return {
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }


def bound_pv(pv: dict[str, Any], pvc: dict[str, Any]) -> dict[str, Any]:
    """`pv` bound to `pvc` the way the PV controller binds it (GetBindVolumeToClaim)."""
    out = copy.deepcopy(pv)
    out.pop("status", None)
    out["spec"]["claimRef"] = claim_ref(pvc)
    meta = out["metadata"]
    meta["annotations"] = {**(meta.get("annotations") or {}), BOUND_BY_CONTROLLER: "yes"}
    return out


def bind_with_volumes(
    actuator: Actuator,
    claims: Callable[[str], dict[str, Any] | None],
    pod: dict[str, Any],
    node: str,
    plan: Plan,
    term: int | None,
    timeout_s: float,
) -> Outcome:
    """Writes the plan, waits until the claims are bound (read through `claims`, the watch
    cache, by namespace/name), then binds the pod. Any failure leaves the pod unbound: the
    next cycle decides again, from what the writes left (a selected node stays selected,
    as kube-scheduler leaves it)."""
    meta = pod["metadata"]
    key = f"{meta['namespace']}/{meta['name']}"
    for pv, pvc in plan.bind:
        path = f"/api/v1/persistentvolumes/{pv['metadata']['name']}"
        failed = actuator.write(key, "PUT", path, bound_pv(pv, pvc), term)
        if failed is not None:
            return failed
    for pvc in plan.provision:
        m = pvc["metadata"]
        body = {
            "metadata": {"annotations": {SELECTED_NODE: node}, "resourceVersion": m.get("resourceVersion")}
        }
        path = f"/api/v1/namespaces/{m['namespace']}/persistentvolumeclaims/{m['name']}"
        failed = actuator.write(key, "PATCH", path, body, term, MERGE_PATCH)
        if failed is not None:
            return failed
    names = [f"{c['metadata']['namespace']}/{c['metadata']['name']}" for c in plan.claims]
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = [n for n in names if not fully_bound(claims(n) or {})]
        if not waiting:
            break
        for n in waiting:
            annotations = ((claims(n) or {}).get("metadata") or {}).get("annotations") or {}
            if n in {f"{c['metadata']['namespace']}/{c['metadata']['name']}" for c in plan.provision} and (
                annotations.get(SELECTED_NODE) not in (None, node)
            ):
                return Outcome(key, "error", f"provisioning of claim {n} was handed to another node")
        if time.monotonic() > deadline:
            return Outcome(
                key,
                "error",
                f"claim(s) {', '.join(waiting)} not bound within {timeout_s:g}s; the pod is tried again",
            )
        time.sleep(0.1)
    return actuator.bind(pod, node, term)
