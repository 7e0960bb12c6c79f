"""A pod's volumes as node constraints (scheduler/core/volumes.py), and the binder's choice
of PersistentVolumes once the core has picked a node.

Read from PersistentVolumeClaims, PersistentVolumes, StorageClasses and CSINodes as
kube-scheduler's volume binder reads them (k8s.io/component-helpers/storage/volume): a claim
is bound when it names its volume and carries pv.kubernetes.io/bind-completed; an unbound
claim of a WaitForFirstConsumer class may take an available PV of its class (phase
Available, no claimRef or one naming the claim, capacity, volumeMode, access modes and
selector matching, not being deleted), the smallest first, or be provisioned where its
class's allowedTopologies allow; any other unbound claim must be bound before the pod is
tried. The words are kube-scheduler's.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from scheduler.core.constraints import OPERATORS, Requirement, Term
from scheduler.core.volumes import BIND_CONFLICT, ZONE_LABELS, Affinity, Claim, VolumeConstraints

BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
BETA_CLASS = "volume.beta.kubernetes.io/storage-class"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
WFFC = "WaitForFirstConsumer"
RWOP = "ReadWriteOncePod"
UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
RWOP_CONFLICT = "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
TERMINAL = ("Succeeded", "Failed")


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _bytes(value: Any) -> int:
    try:
        return int(parse_quantity(str(value)))
    except (ValueError, TypeError):
        return 0


def _capacity(pv: Mapping[str, Any]) -> int:
    return _bytes(((pv.get("spec") or {}).get("capacity") or {}).get("storage", 0))


def claim_class(pvc: Mapping[str, Any]) -> str:
    """The claim's class: the beta annotation wins, as in GetPersistentVolumeClaimClass."""
    beta = (_meta(pvc).get("annotations") or {}).get(BETA_CLASS)
    if beta is not None:
        return str(beta)
    return str((pvc.get("spec") or {}).get("storageClassName") or "")


def volume_class(pv: Mapping[str, Any]) -> str:
    beta = (_meta(pv).get("annotations") or {}).get(BETA_CLASS)
    if beta is not None:
        return str(beta)
    return str((pv.get("spec") or {}).get("storageClassName") or "")


def fully_bound(pvc: Mapping[str, Any]) -> bool:
    return bool((pvc.get("spec") or {}).get("volumeName")) and BIND_COMPLETED in (
        _meta(pvc).get("annotations") or {}
    )


def _requirement(r: Mapping[str, Any]) -> Requirement:
    # A topology term's expressions carry no operator: they read as In. An operator the API
    # would refuse matches nothing (Gt with no number).
    op = str(r.get("operator") or "In")
    values = tuple(str(v) for v in r.get("values") or ())
    return Requirement(str(r.get("key")), op, values) if op in OPERATORS else Requirement("", "Gt")


def _terms(raw: Iterable[Any], key: str = "matchExpressions") -> tuple[Term, ...]:
    out = []
    for term in raw or []:
        if not isinstance(term, Mapping):
            continue
        exprs = tuple(_requirement(r) for r in term.get(key) or [] if isinstance(r, Mapping))
        fields = tuple(_requirement(r) for r in term.get("matchFields") or [] if isinstance(r, Mapping))
        out.append(Term(exprs, fields))
    return tuple(out)


def pv_affinity(pv: Mapping[str, Any]) -> Affinity:
    """The PV's required node affinity (None: any node), as CheckNodeAffinity reads it."""
    required = (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required")) or None
    if required is None:
        return None
    return _terms(required.get("nodeSelectorTerms"))


def class_topology(sc: Mapping[str, Any]) -> Affinity:
    """A class's allowedTopologies as node terms (None: provisions anywhere)."""
    topo = sc.get("allowedTopologies") or []
    if not topo:
        return None
    return _terms(topo, "matchLabelExpressions")


def _selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if (op == "Exists") != (key in labels) and op in ("Exists", "DoesNotExist"):
            return False
    return True


def _claims_of(pod: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """(claim name, whether it is a generic ephemeral volume's) for each of the pod's volumes."""
    out = []
    name = _meta(pod).get("name", "")
    for v in (pod.get("spec") or {}).get("volumes") or []:
        if not isinstance(v, Mapping):
            continue
        if "persistentVolumeClaim" in v:
            out.append((str((v["persistentVolumeClaim"] or {}).get("claimName") or ""), False))
        elif "ephemeral" in v:
            out.append((f"{name}-{v.get('name', '')}", True))  # the ephemeral controller's name
    return out


def has_claims(pod: Mapping[str, Any]) -> bool:
    return any(
        isinstance(v, Mapping) and ("persistentVolumeClaim" in v or "ephemeral" in v)
        for v in (pod.get("spec") or {}).get("volumes") or []
    )


@dataclass(slots=True)
class Plan:
    """What to write before the pod binds: PVs to bind to claims, claims to provision."""

    bind: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)  # (pv, pvc)
    provision: list[dict[str, Any]] = field(default_factory=list)

    @property
    def claims(self) -> list[dict[str, Any]]:
        return [pvc for _pv, pvc in self.bind] + self.provision


class VolumeReader:
    """One consistent read of the storage objects, for one cycle."""

    def __init__(
        self,
        pvcs: Iterable[dict[str, Any]],
        pvs: Iterable[dict[str, Any]],
        classes: Iterable[dict[str, Any]],
        csinodes: Iterable[dict[str, Any]] = (),
        pods: Iterable[Mapping[str, Any]] = (),
        taken: Iterable[str] = (),
    ) -> None:
        self.pvcs = {f"{_meta(c).get('namespace')}/{_meta(c).get('name')}": c for c in pvcs}
        self.pvs = {_meta(v).get("name", ""): v for v in pvs}
        self.classes = {_meta(c).get("name", ""): c for c in classes}
        self.taken = set(taken)  # PVs being bound by an earlier cycle's call: not available
        self.by_class: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for pv in self.pvs.values():
            self.by_class[volume_class(pv)].append(pv)
        self.limits: dict[str, dict[str, int]] = {}
        for cn in csinodes:
            drivers = {
                str(d.get("name")): int(d["allocatable"]["count"])
                for d in (cn.get("spec") or {}).get("drivers") or []
                if isinstance(d, Mapping) and (d.get("allocatable") or {}).get("count") is not None
            }
            if drivers:
                self.limits[_meta(cn).get("name", "")] = drivers
        self.users: dict[str, int] = defaultdict(int)  # claim -> pods on nodes that use it
        self.on_node: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for p in pods:
            node = (p.get("spec") or {}).get("nodeName")
            if not node or (p.get("status") or {}).get("phase") in TERMINAL or not has_claims(p):
                continue
            self.on_node[node].append(p)
            for claim, _eph in _claims_of(p):
                self.users[f"{_meta(p).get('namespace')}/{claim}"] += 1
        self._attached: dict[str, dict[str, str]] = {}
        self.unbound: set[str] = set()  # pods read with claims still to bind

    # ------------------------------------------------------------------ reading

    def read(self, pod: Mapping[str, Any]) -> VolumeConstraints | None:
        """The node constraints of the pod's claims (None: it uses none)."""
        ns, name = _meta(pod).get("namespace", "default"), _meta(pod).get("name", "")
        claims = _claims_of(pod)
        if not claims:
            return None
        missing_claim: str | None = None  # VolumeRestrictions' PreFilter reports this one first
        problem: str | None = None  # then VolumeBinding's, volume by volume
        rwop: str | None = None
        immediate: str | None = None
        bound: list[Affinity] = []
        missing = False
        unbound: list[Claim] = []
        zones: list[tuple[str, tuple[str, ...]]] = []
        for claim, ephemeral in claims:
            if not claim:
                problem = problem or "PersistentVolumeClaim had no name"
                continue
            key = f"{ns}/{claim}"
            pvc = self.pvcs.get(key)
            if pvc is None:
                if ephemeral:
                    text = (
                        "waiting for ephemeral volume controller to create the persistentvolumeclaim "
                        f'"{claim}"'
                    )
                else:
                    text = missing_claim = missing_claim or f'persistentvolumeclaim "{claim}" not found'
                problem = problem or text
                continue
            spec = pvc.get("spec") or {}
            volume = str(spec.get("volumeName") or "")
            if (pvc.get("status") or {}).get("phase") == "Lost":
                lost = f'persistentvolumeclaim "{claim}" bound to non-existent persistentvolume "{volume}"'
                problem = problem or lost
            elif _meta(pvc).get("deletionTimestamp"):
                problem = problem or f'persistentvolumeclaim "{claim}" is being deleted'
            elif ephemeral and not _owned_by(pvc, pod):
                problem = problem or f"PVC {key} was not created for pod {ns}/{name} (pod is not owner)"
            if RWOP in (spec.get("accessModes") or []) and self.users.get(key):
                rwop = rwop or RWOP_CONFLICT
            if fully_bound(pvc):
                pv = self.pvs.get(volume)
                if pv is None:
                    missing = True
                    continue
                bound.append(pv_affinity(pv))
                if not ephemeral:  # VolumeZone reads persistentVolumeClaim volumes only
                    zones.extend(_zones(pv))
                continue
            cls_name = claim_class(pvc)
            cls = self.classes.get(cls_name) if cls_name else None
            if cls is None or cls.get("volumeBindingMode") != WFFC or volume:
                if cls_name and cls is None:
                    immediate = immediate or f'{UNBOUND_IMMEDIATE} (storageclass "{cls_name}" not found)'
                else:
                    immediate = immediate or UNBOUND_IMMEDIATE
                continue
            unbound.append(self._claim(key, pvc, cls))
        wait = missing_claim or problem or immediate or rwop
        if wait is not None:
            return VolumeConstraints(waits=(wait,))
        if unbound:
            self.unbound.add(f"{ns}/{name}")
        return VolumeConstraints(
            bound=tuple(bound),
            pv_missing=missing,
            claims=tuple(sorted(unbound, key=lambda c: c.size)),
            zones=tuple(zones),
            over_limit=self._over_limit(pod),
        )

    def _candidates(self, pvc: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The PVs the claim may bind, smallest first, and one pre-bound to it (that one alone
        is tried, where its affinity allows)."""
        spec = pvc.get("spec") or {}
        want = _bytes(((spec.get("resources") or {}).get("requests") or {}).get("storage", 0))
        mode = spec.get("volumeMode") or "Filesystem"
        modes = set(spec.get("accessModes") or [])
        meta = _meta(pvc)
        out = []
        prebound = None
        for pv in self.by_class.get(claim_class(pvc), ()):
            pspec = pv.get("spec") or {}
            ref = pspec.get("claimRef")
            mine = (
                ref is not None
                and ref.get("name") == meta.get("name")
                and ref.get("namespace") == meta.get("namespace")
                and (not ref.get("uid") or ref.get("uid") == meta.get("uid"))
            )
            if ref is not None and not mine:
                continue
            if _capacity(pv) < want:
                continue
            if (pspec.get("volumeMode") or "Filesystem") != mode or _meta(pv).get("deletionTimestamp"):
                continue
            if mine:
                prebound = pv
                break
            name = _meta(pv).get("name", "")
            if name in self.taken or (pv.get("status") or {}).get("phase") != "Available":
                continue
            if not _selector_matches(spec.get("selector"), _meta(pv).get("labels") or {}):
                continue
            if not modes <= set(pspec.get("accessModes") or []):
                continue
            out.append(pv)
        out.sort(key=lambda pv: (_capacity(pv), _meta(pv).get("name", "")))
        return out, prebound

    def _claim(self, key: str, pvc: Mapping[str, Any], cls: Mapping[str, Any]) -> Claim:
        spec = pvc.get("spec") or {}
        size = _bytes(((spec.get("resources") or {}).get("requests") or {}).get("storage", 0))
        provisioner = str(cls.get("provisioner") or "")
        provisions = provisioner not in ("", NO_PROVISIONER)
        selected = str((_meta(pvc).get("annotations") or {}).get(SELECTED_NODE) or "")
        pvs, prebound = self._candidates(pvc)
        chosen = [prebound] if prebound is not None else pvs
        return Claim(
            key,
            size,
            tuple((_meta(pv).get("name", ""), pv_affinity(pv)) for pv in chosen),
            provisions,
            class_topology(cls),
            selected,
        )

    # ------------------------------------------------------------------ attach limits

    def _csi(self, ns: str, claim: str) -> tuple[str, str] | None:
        """(driver, unique volume name) of a claim, as NodeVolumeLimits counts it."""
        pvc = self.pvcs.get(f"{ns}/{claim}")
        if pvc is None:
            return None
        pv = self.pvs.get(str((pvc.get("spec") or {}).get("volumeName") or ""))
        if pv is not None:
            csi = (pv.get("spec") or {}).get("csi") or {}
            if not csi.get("driver") or not csi.get("volumeHandle"):
                return None
            return str(csi["driver"]), f"{csi['driver']}/{csi['volumeHandle']}"
        cls = self.classes.get(claim_class(pvc))
        if cls is None or not cls.get("provisioner"):
            return None
        driver = str(cls["provisioner"])
        return driver, f"{driver}/{uuid.uuid4().hex}"  # a volume still to be made: a new one

    def _attached_on(self, node: str) -> dict[str, str]:
        got = self._attached.get(node)
        if got is None:
            got = {}
            for p in self.on_node.get(node, ()):
                ns = _meta(p).get("namespace", "default")
                for claim, _eph in _claims_of(p):
                    hit = self._csi(ns, claim)
                    if hit is not None:
                        got[hit[1]] = hit[0]
            self._attached[node] = got
        return got

    def _over_limit(self, pod: Mapping[str, Any]) -> tuple[str, ...]:
        if not self.limits:
            return ()
        ns = _meta(pod).get("namespace", "default")
        new: dict[str, str] = {}
        for claim, _eph in _claims_of(pod):
            hit = self._csi(ns, claim)
            if hit is not None:
                new[hit[1]] = hit[0]
        if not new:
            return ()
        over = []
        for node, limits in sorted(self.limits.items()):
            attached = self._attached_on(node)
            have: dict[str, int] = defaultdict(int)
            for driver in attached.values():
                have[driver] += 1
            adding: dict[str, int] = defaultdict(int)
            for unique, driver in new.items():
                if unique not in attached:
                    adding[driver] += 1
            if any(driver in limits and have[driver] + n > limits[driver] for driver, n in adding.items()):
                over.append(node)
        return tuple(over)

    # ------------------------------------------------------------------ binding

    def plan(
        self, pod: Mapping[str, Any], node: str, labels: Mapping[str, str], chosen: set[str]
    ) -> Plan | str:
        """The PVs to bind and claims to provision for the pod on `node`, as the binder picks
        them (PVs in `chosen`, picked for other pods this cycle, excluded), or why none can."""
        ns = _meta(pod).get("namespace", "default")
        plan = Plan()
        wanted = []
        for claim, _eph in _claims_of(pod):
            pvc = self.pvcs.get(f"{ns}/{claim}")
            if pvc is None:
                return f'persistentvolumeclaim "{claim}" not found'
            if fully_bound(pvc):
                continue
            cls = self.classes.get(claim_class(pvc))
            if cls is None:
                return UNBOUND_IMMEDIATE
            wanted.append((self._claim(f"{ns}/{claim}", pvc, cls), pvc))
        picked = set(chosen)
        for c, pvc in sorted(wanted, key=lambda w: w[0].size):
            pv_name = pick(c, node, labels, picked)
            if pv_name is None:
                return f"{BIND_CONFLICT} on {node}: another pod took the PersistentVolume this cycle"
            if pv_name:
                picked.add(pv_name)
                plan.bind.append((self.pvs[pv_name], dict(pvc)))
            else:
                plan.provision.append(dict(pvc))
        return plan


def _admits(terms: Affinity, labels: Mapping[str, str]) -> bool:
    return terms is None or any(t.matches("", labels) for t in terms)  # labels only, as CheckNodeAffinity


def pick(claim: Claim, node: str, labels: Mapping[str, str], picked: set[str]) -> str | None:
    """The PV the binder gives `claim` on `node` (the first, so the smallest, it can reach that
    is not in `picked`), "" to provision it there, or None when neither can be had."""
    if claim.selected:
        ok = claim.selected == node and claim.provisions and _admits(claim.topology, labels)
        return "" if ok else None
    for pv, terms in claim.pvs:
        if pv not in picked and _admits(terms, labels):
            return pv
    return "" if claim.provisions and _admits(claim.topology, labels) else None


def _owned_by(pvc: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    uid = _meta(pod).get("uid")
    return any(
        ref.get("kind") == "Pod" and ref.get("controller") and (not uid or ref.get("uid") == uid)
        for ref in _meta(pvc).get("ownerReferences") or []
        if isinstance(ref, Mapping)
    )


def _zones(pv: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    labels = _meta(pv).get("labels") or {}
    out = []
    for key in ZONE_LABELS:
        if key in labels:
            values = tuple(sorted({v.strip() for v in str(labels[key]).split("__") if v.strip()}))
            if values:
                out.append((key, values))
    return out
