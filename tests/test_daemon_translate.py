"""API objects into the core's snapshot: the daemon's only reading of Kubernetes fields."""

from __future__ import annotations

import pytest

from scheduler.core import decide
from scheduler.core.config import PolicyConfig
from scheduler.core.errors import InvalidInput
from scheduler.core.policies import get_policy
from scheduler.daemon.config import daemon_config_from, load_daemon_config
from scheduler.daemon.translate import (
    SnapshotBuilder,
    node_from_api,
    pod_requests,
    protected_by_pdb,
    timestamp,
)


def node(name: str, gpus: int = 8, ready: bool = True, **labels: str) -> dict:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "96", "memory": "1Ti", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(
    name: str,
    ns: str = "ml",
    gpus: int = 1,
    node_name: str | None = None,
    scheduler: str = "gpufair",
    labels: dict | None = None,
    annotations: dict | None = None,
    priority: int = 0,
    created: str = "2026-11-29T10:00:00Z",
) -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{ns}-{name}",
            "labels": labels or {},
            "annotations": annotations or {},
            "creationTimestamp": created,
        },
        "spec": {
            "schedulerName": scheduler,
            "priority": priority,
            **({"nodeName": node_name} if node_name else {}),
            "containers": [
                {
                    "name": "c",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"cpu": "4"}},
                }
            ],
        },
        "status": {"phase": "Running" if node_name else "Pending"},
    }


def team(name: str, *namespaces: str, weight: float = 1, **spec) -> dict:
    return {
        "apiVersion": "gpufair.io/v1alpha1",
        "kind": "GPUTeam",
        "metadata": {"name": name},
        "spec": {"weight": weight, "namespaces": list(namespaces), **spec},
    }


def test_requests_count_init_containers_and_overhead_as_the_kubelet_does():
    p = pod("a", gpus=2)
    p["spec"]["containers"].append(
        {"name": "side", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}
    )
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "8", "memory": "512Mi"}}}]
    p["spec"]["overhead"] = {"cpu": "250m"}
    assert pod_requests(p) == (2, 8250, 1024)


def test_sidecar_init_containers_add_up_with_the_app_as_the_kubelet_counts_them():
    # A sidecar (restartPolicy: Always) runs beside the app: its request adds up. A plain
    # init container after it runs beside the sidecar, then exits.
    p = pod("a", gpus=1)  # the app asks for 1 CPU and 1 GiB
    p["spec"]["initContainers"] = [
        {
            "name": "proxy",
            "restartPolicy": "Always",
            "resources": {"requests": {"cpu": "2", "memory": "1Gi"}},
        },
        {"name": "setup", "resources": {"requests": {"cpu": "4", "memory": "256Mi"}}},
    ]
    _, cpu, mem = pod_requests(p)
    app_cpu, app_mem = pod_requests(pod("a", gpus=1))[1:]
    assert cpu == max(app_cpu + 2000, 4000 + 2000) and mem == max(app_mem + 1024, 256 + 1024)
    p["spec"]["initContainers"][1]["resources"]["requests"]["cpu"] = "100m"
    assert pod_requests(p)[1] == app_cpu + 2000  # the app and its sidecar, summed


def test_node_reads_allocatable_labels_and_readiness():
    n = node_from_api(node("n1", 8, **{"gpufair.io/gpu-model": "H100"}), unhealthy=[3, 99])
    assert (n.gpus, n.cpu_milli, n.memory_mib, n.gpu_model) == (8, 96000, 1024 * 1024, "H100")
    assert n.unhealthy_gpus == frozenset({3})
    assert n.schedulable
    assert not node_from_api(node("n2", ready=False)).schedulable
    cordoned = node("n3")
    cordoned["spec"]["unschedulable"] = True
    assert not node_from_api(cordoned).schedulable


def test_team_comes_from_the_namespace_never_from_the_pods_labels():
    b = SnapshotBuilder([team("vision", "ml"), team("nlp", "text")])
    sneaky = pod("x", ns="ml", labels={"gpufair.io/team": "nlp"})
    tr = b.build(0.0, [node("n1")], [sneaky, pod("y", ns="nowhere")])
    by_id = {g.id: g for g in tr.snapshot.gangs}
    assert by_id["ml/x"].team == "vision"
    assert by_id["nowhere/y"].team == ""
    d = decide(tr.snapshot, PolicyConfig(), get_policy("gpufair"))
    assert d.pending_reason("nowhere/y").code == "NoTeam"
    assert {b.gang for b in d.binds} == {"ml/x"}


def test_gangs_from_podgroups_and_from_the_crd_free_label():
    b = SnapshotBuilder([team("t", "ml")])
    pg = {"metadata": {"name": "job1", "namespace": "ml"}, "spec": {"minMember": 3}}
    pods = [pod(f"w{i}", gpus=8, labels={"scheduling.x-k8s.io/pod-group": "job1"}) for i in range(4)]
    pods += [
        pod(f"g{i}", labels={"gpufair.io/gang": "small"}, annotations={"gpufair.io/gang-size": "2"})
        for i in range(2)
    ]
    tr = b.build(0.0, [node("n1")], pods, podgroups_raw=[pg])
    by_id = {g.id: g for g in tr.snapshot.gangs}
    assert by_id["ml/podgroup:job1"].required_members == 3 and len(by_id["ml/podgroup:job1"].pods) == 4
    assert by_id["ml/gang:small"].required_members == 2
    assert sorted(tr.gang_pods["ml/gang:small"]) == ["ml/g0", "ml/g1"]


@pytest.mark.parametrize(
    ("labels", "annotations", "gang", "words"),
    [
        ({"gpufair.io/gang": "g"}, {}, "ml/gang:g", "gpufair.io/gang-size"),
        ({"gpufair.io/gang": "g"}, {"gpufair.io/gang-size": "four"}, "ml/gang:g", "not a whole number"),
        ({"scheduling.x-k8s.io/pod-group": "missing"}, {}, "ml/bad", "PodGroup ml/missing does not exist"),
        ({}, {"gpufair.io/min-runtime": "soon"}, "ml/bad", "gpufair.io/min-runtime"),
    ],
)
def test_a_malformed_pod_is_reported_and_the_others_still_schedule(labels, annotations, gang, words):
    b = SnapshotBuilder([team("t", "ml")])
    bad = pod("bad", labels=labels, annotations=annotations)
    tr = b.build(0.0, [node("n1")], [bad, pod("good")])
    assert gang in tr.invalid and words in tr.invalid[gang]
    assert tr.gang_pods[gang] == ["ml/bad"]
    assert [p.name for p in tr.problems] == ["bad"] and words in tr.problems[0].message
    d = decide(tr.snapshot, PolicyConfig(), get_policy("gpufair"))
    assert [b.pod for b in d.binds] == ["ml/good"]


def test_a_malformed_or_overlapping_team_is_left_out_with_a_problem():
    teams = [team("a", "ml"), team("b", "ml"), team("c", "x", weight=-1)]
    b = SnapshotBuilder(teams)
    assert [t.name for t in b.teams] == ["a"]
    msgs = {p.name: p.message for p in b.problems}
    assert "already belongs to GPUTeam 'a'" in msgs["b"]
    assert "spec.weight" in msgs["c"]


def test_foreign_pods_hold_room_but_are_never_victims_and_terminated_pods_hold_nothing():
    b = SnapshotBuilder([team("t", "ml")])
    other = pod("web", ns="ops", gpus=6, node_name="n1", scheduler="default-scheduler")
    done = pod("old", gpus=8, node_name="n1")
    done["status"]["phase"] = "Succeeded"
    prod = pod("infer", gpus=4, priority=200000)
    tr = b.build(0.0, [node("n1")], [other, done, prod])
    d = decide(tr.snapshot, PolicyConfig(), get_policy("gpufair"))
    assert not d.binds and not d.evictions  # 6 of 8 held by a pod gpufair may not move
    assert d.pending_reason("ml/infer") is not None


def test_pdb_with_no_disruptions_left_protects_matching_pods():
    p = pod("a", node_name="n1", labels={"app": "train"})
    pdb = {
        "metadata": {"name": "keep", "namespace": "ml"},
        "spec": {"selector": {"matchLabels": {"app": "train"}}},
        "status": {"disruptionsAllowed": 0},
    }
    assert protected_by_pdb(p, [pdb])
    assert not protected_by_pdb(p, [{**pdb, "status": {"disruptionsAllowed": 1}}])
    other_ns = {**pdb, "metadata": {"name": "keep", "namespace": "ops"}}
    assert not protected_by_pdb(p, [other_ns])
    expr = {
        **pdb,
        "spec": {
            "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["train", "x"]}]}
        },
    }
    assert protected_by_pdb(p, [expr])
    tr = SnapshotBuilder([team("t", "ml")]).build(0.0, [node("n1")], [p], pdbs_raw=[pdb])
    assert not tr.snapshot.gangs[0].evictable


def test_held_gangs_are_left_out_of_the_cycle():
    tr = SnapshotBuilder([team("t", "ml")]).build(0.0, [node("n1")], [pod("a"), pod("b")], hold=["ml/a"])
    assert [g.id for g in tr.snapshot.gangs] == ["ml/b"]
    assert tr.gang_pods["ml/a"] == ["ml/a"]


def test_only_the_daemons_own_nominations_hold_a_node_for_a_pod():
    claims = pod("claims")
    claims["status"]["nominatedNodeName"] = "n1"  # written by someone else: not read
    pods = [pod("preemptor"), claims, pod("running", node_name="n1")]
    nominated = {"ml/preemptor": "n1", "ml/running": "n1"}
    tr = SnapshotBuilder([team("t", "ml")]).build(0.0, [node("n1")], pods, nominated=nominated)
    held = {g.id: g.pods[0].nominated_node for g in tr.snapshot.gangs}
    assert held == {"ml/preemptor": "n1", "ml/claims": None, "ml/running": None}


def test_daemon_config_reads_durations_and_rejects_unknown_keys():
    cfg = load_daemon_config(
        "kind: SchedulerConfig\nscheduler:\n  interval: 5s\n  qps: 20\n  lease: 20s\n"
        "policy:\n  fairShare:\n    usageHalfLife: 3d\n"
    )
    assert cfg.interval_s == 5 and cfg.qps == 20 and cfg.lease_s == 20
    assert cfg.policy.usage_half_life_s == 3 * 86400
    with pytest.raises(InvalidInput, match=r"scheduler\.intervl"):
        daemon_config_from({"scheduler": {"intervl": "5s"}})
    with pytest.raises(InvalidInput, match="lease > renewDeadline"):
        daemon_config_from({"scheduler": {"lease": "5s"}})
    with pytest.raises(InvalidInput, match="unknown policy"):
        daemon_config_from({"scheduler": {"policyName": "lottery"}})


def test_priority_falls_back_to_the_class_then_the_global_default():
    classes = [
        {"metadata": {"name": "gpufair-production"}, "value": 100000},
        {"metadata": {"name": "low"}, "value": -5, "globalDefault": True},
    ]
    p1, p2, p3 = pod("a"), pod("b"), pod("c", priority=7)
    for p in (p1, p2):
        del p["spec"]["priority"]
    p1["spec"]["priorityClassName"] = "gpufair-production"
    tr = SnapshotBuilder([team("t", "ml")]).build(0.0, [node("n1")], [p1, p2, p3], priority_classes=classes)
    assert {g.id: g.priority for g in tr.snapshot.gangs} == {"ml/a": 100000, "ml/b": -5, "ml/c": 7}


def test_ledger_url_comes_from_the_environment_when_no_flag_names_it(monkeypatch):
    import argparse

    from scheduler.daemon.cli import add_daemon_commands

    parser = argparse.ArgumentParser()
    add_daemon_commands(parser.add_subparsers(dest="command"))
    from scheduler.daemon.cli import _config

    monkeypatch.setenv("GPUFAIR_LEDGER_URL", "postgresql+psycopg://u:secret@db/ledger")
    assert _config(parser.parse_args(["run"])).ledger_url == "postgresql+psycopg://u:secret@db/ledger"
    assert _config(parser.parse_args(["run", "--ledger", "/tmp/l.db"])).ledger_url == "/tmp/l.db"
    cfg = _config(parser.parse_args(["run", "--lease-seconds", "6", "--no-leader-elect"]))
    assert not cfg.leader_elect and cfg.lease_s == 6 and cfg.lease_s > cfg.renew_deadline_s > cfg.retry_s


def test_a_bound_pod_starts_at_its_start_time_else_its_bind_never_its_creation():
    # Created 10:00; bound 11:00 (PodScheduled); the kubelet reports 11:00:05.
    b = SnapshotBuilder([team("t", "ml")])
    started = pod("started", node_name="n1")
    started["status"]["startTime"] = "2026-11-29T11:00:05Z"
    scheduled = pod("scheduled", node_name="n1")
    scheduled["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-29T11:00:00Z"}
    ]
    just_bound = pod("just-bound", node_name="n1")  # bound by us, not yet seen so: young
    tr = b.build(0.0, [node("n1")], [started, scheduled, just_bound])
    start = {g.pods[0].name: g.pods[0].start_s for g in tr.snapshot.gangs}
    assert start == {
        "ml/started": timestamp("2026-11-29T11:00:05Z"),
        "ml/scheduled": timestamp("2026-11-29T11:00:00Z"),
        "ml/just-bound": None,
    }
