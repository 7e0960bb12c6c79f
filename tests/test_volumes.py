"""A pod's volumes as node constraints (scheduler/daemon/volumes.py reads the storage
objects, scheduler/core/volumes.py holds the filters), with kube-scheduler's edge cases:
bound claims, WaitForFirstConsumer matching (class, capacity, access modes, volumeMode,
selector, smallest first, one PV per claim), provisioning topologies, Immediate claims,
missing and ephemeral claims, ReadWriteOncePod, zones and CSI attach limits.
tests/test_kube_scheduler_differential_volumes.py holds them to the real kube-scheduler."""

from __future__ import annotations

from typing import Any

from scheduler.core import Gang, Pod, decide
from scheduler.core.cluster import ClusterState
from scheduler.core.config import PolicyConfig
from scheduler.core.filters import DEFAULT_FILTERS, allowed, ruled_out
from scheduler.daemon.podspec import pod_constraints
from scheduler.daemon.volumebinder import bound_pv
from scheduler.daemon.volumes import Plan, VolumeReader
from tests.builders import nodes, snapshot, teams

NS = "a"
HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def sc(
    name: str, mode: str = "WaitForFirstConsumer", provisioner: str = "kubernetes.io/no-provisioner", **kw
):
    return {"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode, **kw}


def pv(name: str, host: str | None, size: str = "10Gi", cls: str = "local", **spec: Any) -> dict:
    phase, labels = spec.pop("phase", "Available"), spec.pop("labels", {})
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": cls,
            **spec,
        },
        "status": {"phase": phase},
    }
    if host is not None:
        terms = [{"matchExpressions": [{"key": HOST, "operator": "In", "values": [host]}]}]
        body["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": terms}}
    return body


def pvc(name: str, size: str = "5Gi", cls: str | None = "local", volume: str = "", **spec: Any) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"uid-{name}", "annotations": {}}
    body: dict[str, Any] = {
        "metadata": meta,
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, **spec},
    }
    if cls is not None:
        body["spec"]["storageClassName"] = cls
    if volume:
        body["spec"]["volumeName"] = volume
        meta["annotations"]["pv.kubernetes.io/bind-completed"] = "yes"
    return body


def api_pod(name: str, *claims: str, node: str | None = None, ephemeral: str = "") -> dict:
    vols: list[dict[str, Any]] = [
        {"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)
    ]
    if ephemeral:
        vols.append({"name": ephemeral, "ephemeral": {"volumeClaimTemplate": {"spec": {}}}})
    spec: dict[str, Any] = {"containers": [{"name": "c"}], "volumes": vols}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"}, "spec": spec, "status": {}}


CLUSTER = nodes(4)  # n00..n03, hostname labels


def verdict(reader: VolumeReader, pod: dict, cluster=CLUSTER):
    """(allowed node names, kube-scheduler-style reasons) for the pod."""
    c = pod_constraints(pod, reader.read)
    gang = Gang(
        f"{NS}/{pod['metadata']['name']}", "", (Pod(pod["metadata"]["name"]),), constraints=(c,) if c else ()
    )
    state = ClusterState(cluster, PolicyConfig())
    mask = allowed(state, gang, DEFAULT_FILTERS)
    ok = state.schedulable if mask is None else mask & state.schedulable
    return (
        [state.names[i] for i in ok.nonzero()[0]],
        {t: n for _, n, t in ruled_out(state, gang, DEFAULT_FILTERS)},
        c,
    )


def test_a_pod_without_claims_has_no_constraints_and_one_with_claims_is_no_longer_unsupported():
    reader = VolumeReader([], [], [])
    assert (
        pod_constraints({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}, reader.read)
        is None
    )
    c = pod_constraints(api_pod("p", "data"), reader.read)
    assert (
        c is not None
        and not c.unsupported
        and c.volumes[0].waits == ('persistentvolumeclaim "data" not found',)
    )
    assert pod_constraints(api_pod("p", "data")).unsupported == ("spec.volumes[].persistentVolumeClaim",)


def test_a_bound_claim_keeps_the_pod_where_its_pv_is():
    reader = VolumeReader([pvc("data", volume="pv1")], [pv("pv1", "n02")], [sc("local")])
    ok, why, _ = verdict(reader, api_pod("p", "data"))
    assert ok == ["n02"] and why == {"node(s) didn't match PersistentVolume's node affinity": 3}
    # Its PV is gone: every node, in kube-scheduler's words.
    gone = VolumeReader([pvc("data", volume="pv1")], [], [sc("local")])
    ok, why, _ = verdict(gone, api_pod("p", "data"))
    assert ok == [] and why == {
        "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)": 4
    }


def test_an_unbound_wffc_claim_may_use_only_matching_available_pvs():
    pvs = [
        pv("small", "n00", size="1Gi"),  # too small
        pv("other-class", "n01", cls="fast"),
        pv("block", "n02", volumeMode="Block"),  # the claim wants a filesystem
        pv("rwx-only", "n03", accessModes=["ReadWriteMany"]),  # lacks ReadWriteOnce
        pv("released", "n03", phase="Released"),
        pv("taken", "n03", claimRef={"name": "x", "namespace": NS}),
    ]
    reader = VolumeReader([pvc("data")], pvs, [sc("local"), sc("fast")])
    ok, why, _ = verdict(reader, api_pod("p", "data"))
    assert ok == [] and why == {"node(s) didn't find available persistent volumes to bind": 4}
    fits = VolumeReader(
        [pvc("data")], [*pvs, pv("fits", "n01"), pv("anywhere", None, size="100Gi")], [sc("local")]
    )
    ok, _why, _ = verdict(fits, api_pod("p", "data"))
    assert ok == ["n00", "n01", "n02", "n03"]  # the PV without node affinity is reachable everywhere
    # The binder takes the smallest that fits on the chosen node, and PVs already picked are skipped.
    plan = fits.plan(api_pod("p", "data"), "n01", CLUSTER[1].labels, set())
    assert isinstance(plan, Plan) and [v["metadata"]["name"] for v, _ in plan.bind] == ["fits"]
    plan = fits.plan(api_pod("p", "data"), "n01", CLUSTER[1].labels, {"fits"})
    assert isinstance(plan, Plan) and [v["metadata"]["name"] for v, _ in plan.bind] == ["anywhere"]
    assert isinstance(fits.plan(api_pod("p", "data"), "n01", CLUSTER[1].labels, {"fits", "anywhere"}), str)


def test_a_selector_on_the_claim_narrows_the_pvs():
    claim = pvc("data", selector={"matchLabels": {"disk": "ssd"}})
    reader = VolumeReader(
        [claim], [pv("hdd", "n00"), pv("ssd", "n01", labels={"disk": "ssd"})], [sc("local")]
    )
    assert verdict(reader, api_pod("p", "data"))[0] == ["n01"]


def test_two_claims_cannot_share_one_pv():
    reader = VolumeReader([pvc("a1"), pvc("a2")], [pv("only", "n00")], [sc("local")])
    assert verdict(reader, api_pod("p", "a1", "a2"))[0] == []
    two = VolumeReader([pvc("a1"), pvc("a2")], [pv("one", "n00"), pv("two", "n00")], [sc("local")])
    assert verdict(two, api_pod("p", "a1", "a2"))[0] == ["n00"]


def test_a_provisioning_class_admits_the_nodes_of_its_allowed_topologies():
    topo = [{"matchLabelExpressions": [{"key": HOST, "values": ["n01", "n03"]}]}]
    reader = VolumeReader(
        [pvc("data", cls="csi")], [], [sc("csi", provisioner="csi.example.com", allowedTopologies=topo)]
    )
    assert verdict(reader, api_pod("p", "data"))[0] == ["n01", "n03"]
    plan = reader.plan(api_pod("p", "data"), "n03", CLUSTER[3].labels, set())
    assert (
        isinstance(plan, Plan)
        and not plan.bind
        and [c["metadata"]["name"] for c in plan.provision] == ["data"]
    )
    anywhere = VolumeReader([pvc("data", cls="csi")], [], [sc("csi", provisioner="csi.example.com")])
    assert len(verdict(anywhere, api_pod("p", "data"))[0]) == 4
    # A selected node already set pins the claim there.
    picked = pvc("data", cls="csi")
    picked["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] = "n02"
    pinned = VolumeReader([picked], [], [sc("csi", provisioner="csi.example.com")])
    assert verdict(pinned, api_pod("p", "data"))[0] == ["n02"]


def test_claims_that_keep_the_pod_from_being_tried_say_so_in_kube_scheduler_words():
    cases = [
        (
            VolumeReader([pvc("data", cls="now")], [], [sc("now", mode="Immediate")]),
            api_pod("p", "data"),
            "pod has unbound immediate PersistentVolumeClaims",
        ),
        (
            VolumeReader([pvc("data", cls=None)], [], []),
            api_pod("p", "data"),
            "pod has unbound immediate PersistentVolumeClaims",
        ),
        (
            VolumeReader([pvc("data", cls="gone")], [], []),
            api_pod("p", "data"),
            'storageclass "gone" not found',
        ),
        (VolumeReader([], [], []), api_pod("p", "data"), 'persistentvolumeclaim "data" not found'),
        (
            VolumeReader([], [], []),
            api_pod("p", ephemeral="scratch"),
            'waiting for ephemeral volume controller to create the persistentvolumeclaim "p-scratch"',
        ),
        (
            VolumeReader([pvc("p-scratch")], [], [sc("local")]),
            api_pod("p", ephemeral="scratch"),
            "was not created for pod a/p (pod is not owner)",
        ),
    ]
    for reader, pod, words in cases:
        c = pod_constraints(pod, reader.read)
        g = Gang(f"{NS}/p", NS, (Pod(f"{NS}/p", gpus=1),), constraints=(c,))
        reason = decide(snapshot(CLUSTER, teams((NS, 1)), [g])).pending_reason(f"{NS}/p")
        assert reason.code == "Unschedulable" and words in reason.reason, (words, reason)


def test_an_ephemeral_claim_owned_by_its_pod_is_the_pods_claim():
    claim = pvc("p-scratch")
    claim["metadata"]["ownerReferences"] = [{"kind": "Pod", "name": "p", "uid": "uid-p", "controller": True}]
    reader = VolumeReader([claim], [pv("pv1", "n03")], [sc("local")])
    assert verdict(reader, api_pod("p", ephemeral="scratch"))[0] == ["n03"]


def test_a_read_write_once_pod_claim_in_use_makes_the_pod_wait():
    claim = pvc("solo", accessModes=["ReadWriteOncePod"], volume="pv1")
    user = api_pod("user", "solo", node="n00")
    reader = VolumeReader(
        [claim], [pv("pv1", None, accessModes=["ReadWriteOncePod"])], [sc("local")], pods=[user]
    )
    _ok, _why, c = verdict(reader, api_pod("p", "solo"))
    assert c.volumes[0].waits == (
        "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode",
    )
    free = VolumeReader([claim], [pv("pv1", None, accessModes=["ReadWriteOncePod"])], [sc("local")])
    assert len(verdict(free, api_pod("p", "solo"))[0]) == 4


def test_a_bound_pv_in_a_zone_admits_nodes_of_that_zone_and_nodes_without_zones():
    zoned = tuple(
        n.__class__(**{**{f: getattr(n, f) for f in n.__dataclass_fields__}, "labels": {**n.labels, **extra}})
        for n, extra in zip(
            CLUSTER,
            [{ZONE: "z1"}, {ZONE: "z2"}, {"failure-domain.beta.kubernetes.io/zone": "z1"}, {}],
            strict=True,
        )
    )
    beta = pv("pv1", None, labels={"failure-domain.beta.kubernetes.io/zone": "z1__z3"})
    reader = VolumeReader([pvc("data", volume="pv1")], [beta], [sc("local")])
    ok, why, _ = verdict(reader, api_pod("p", "data"), zoned)
    # The beta label on the PV matches the GA label on n00; n03 has no zone label at all.
    assert ok == ["n00", "n02", "n03"] and why == {"node(s) had no available volume zone": 1}


def test_csi_attach_limits_count_the_volumes_already_on_the_node():
    csi = {"driver": "csi.example.com", "volumeHandle": "h1"}
    pvs = [pv("pv1", None, csi=csi), pv("pv2", None, csi={**csi, "volumeHandle": "h2"})]
    claims = [pvc("c1", volume="pv1"), pvc("c2", volume="pv2")]
    limit = {
        "metadata": {"name": "n00"},
        "spec": {"drivers": [{"name": "csi.example.com", "allocatable": {"count": 1}}]},
    }
    on_n00 = api_pod("there", "c1", node="n00")
    reader = VolumeReader(claims, pvs, [sc("local")], [limit], pods=[on_n00])
    ok, why, _ = verdict(reader, api_pod("p", "c2"))
    assert ok == ["n01", "n02", "n03"] and why == {"node(s) exceed max volume count": 1}
    # The same volume again is attached already: no new attachment.
    assert len(verdict(reader, api_pod("p", "c1"))[0]) == 4


def test_the_pv_is_bound_to_the_claim_as_the_pv_controller_binds_it():
    claim = pvc("data")
    claim["metadata"]["resourceVersion"] = "7"
    out = bound_pv(pv("pv1", "n00"), claim)
    assert out["spec"]["claimRef"] == {
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "namespace": NS,
        "name": "data",
        "uid": "uid-data",
        "resourceVersion": "7",
    }
    assert (
        out["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
        and "status" not in out
    )
