"""The dev control plane is a real Kubernetes: RBAC refuses strangers, KWOK runs pods on
fake GPU nodes, the controller manager keeps PodDisruptionBudgets (so evictions honour
them), ServiceAccount tokens work, and the API server can restart under running clients."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from scheduler.core.errors import InvalidInput
from scheduler.devcluster import binaries
from scheduler.devcluster.cluster import DevCluster, _https_get
from scheduler.devcluster.gpufair_objects import priority_values
from scheduler.devcluster.kubeconfig import api_client
from scheduler.devcluster.nodes import GPU_MODEL_LABEL, KWOK_ANNOTATION, gpu_nodes
from scheduler.devcluster.stages import FAKE_NODE_STATUS_ANNOTATION, FAKE_RUNTIME_ANNOTATION
from scheduler.devcluster.workloads import WORKLOAD_VERSIONS
from tests.fixtures_kube import KubeCluster, resolve_nodes, start_kube_cluster

REPO = Path(__file__).resolve().parents[1]
TOPOLOGY = (
    "network.gpufair.io/spine",
    "network.gpufair.io/leaf",
    "nvidia.com/gpu.clique",
    "kubernetes.io/hostname",
)


def eventually(check: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll `check` until it returns a truthy value; the last error or value is reported."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except ApiException as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout_s}s; last: {last!r}")


def gpu_pod(name: str, node: str | None, gpus: int = 1, labels: dict[str, str] | None = None, **ann: str):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}, annotations=ann or None),
        spec=client.V1PodSpec(
            node_name=node,
            containers=[
                client.V1Container(
                    name="train",
                    image="registry.example/train:1",
                    resources=client.V1ResourceRequirements(
                        requests={"nvidia.com/gpu": str(gpus), "cpu": "1"},
                        limits={"nvidia.com/gpu": str(gpus)},
                    ),
                )
            ],
        ),
    )


def running_and_ready(core: client.CoreV1Api, ns: str, name: str) -> bool:
    pod = core.read_namespaced_pod(name, ns)
    ready = {c.type: c.status for c in pod.status.conditions or ()}.get("Ready")
    return pod.status.phase == "Running" and ready == "True" and bool(pod.status.pod_ip)


def gone(core: client.CoreV1Api, ns: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, ns)
    except ApiException as exc:
        return exc.status == 404
    return False


# ---------------------------------------------------------------- binaries


def test_versions_match_the_build_script() -> None:
    script = (REPO / "scripts" / "build-control-plane.sh").read_text()
    pinned = dict(re.findall(r"^(K8S|ETCD|KWOK|HELM)_VERSION=(v\S+)$", script, re.M))
    assert pinned == {
        "K8S": binaries.K8S_VERSION,
        "ETCD": binaries.ETCD_VERSION,
        "KWOK": binaries.KWOK_VERSION,
        "HELM": binaries.HELM_VERSION,
    }
    targets = dict(re.findall(r'^\s*"([a-z-]+)\|[a-z]+\|\S+\|\$(\w+)_VERSION"$', script, re.M))
    assert {name: pinned[var] for name, var in targets.items()} == binaries.VERSIONS
    mods = REPO / "scripts" / "controlplane-go"
    mod = (mods / "kubernetes" / "go.mod").read_text()
    assert f"k8s.io/kubernetes {binaries.K8S_VERSION}" in mod
    assert f"k8s.io/api => k8s.io/api v0.{binaries.K8S_VERSION[3:]}" in mod
    assert "k8s.io/kubernetes/cmd/kubectl" in mod
    assert f"helm.sh/helm/v3 {binaries.HELM_VERSION}" in (mods / "helm" / "go.mod").read_text()


def test_missing_binaries_fail_with_the_build_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUFAIR_CACHE", str(tmp_path))
    with pytest.raises(binaries.MissingBinary, match=r"kube-apiserver.*make control-plane"):
        DevCluster(tmp_path / "state").start()
    assert not (tmp_path / "state" / "state.json").exists()
    # The fixture turns it into a test failure (an error), never a skip.
    with pytest.raises(pytest.fail.Exception, match="make control-plane"):
        start_kube_cluster()


# ---------------------------------------------------------------- API server and RBAC


def test_rbac_refuses_strangers_and_admits_the_admin(kube_cluster: KubeCluster) -> None:
    dev = kube_cluster.dev
    url = f"{dev.server}/api/v1/nodes"
    assert _https_get(url, dev.ca_cert, None)[0] == 403  # anonymous: authenticated as nobody, forbidden
    assert _https_get(url, dev.ca_cert, "not-a-token")[0] == 401
    assert _https_get(url, dev.ca_cert, dev.static_tokens["gpufair-nobody"])[0] == 403
    status, body = _https_get(url, dev.ca_cert, dev.admin_token)
    assert status == 200 and len(json.loads(body)["items"]) >= 8
    with api_client(dev.static_kubeconfig("gpufair-nobody")) as api:
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(api).list_node()
        assert refused.value.status == 403
    version = client.VersionApi(kube_cluster.api).get_code()
    assert version.git_version == binaries.K8S_VERSION


def test_fake_gpu_nodes_carry_topology_and_gpus(kube_cluster: KubeCluster) -> None:
    nodes = {n.metadata.name: n for n in kube_cluster.core.list_node(label_selector="type=kwok").items}
    assert sorted(nodes) == [f"gpu-{i:04d}" for i in range(8)]
    leaves: dict[str, list[str]] = {}
    for name, node in nodes.items():
        labels = node.metadata.labels
        assert all(key in labels for key in TOPOLOGY), labels
        assert labels["kubernetes.io/hostname"] == name
        assert labels["nvidia.com/gpu.clique"] == f"clique-{name}"
        assert labels[GPU_MODEL_LABEL] == "H100"
        assert node.metadata.annotations[KWOK_ANNOTATION] == "fake"
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        assert node.status.capacity["nvidia.com/gpu"] == "8"
        assert node.status.allocatable["pods"] == "110"
        ready = {c.type: c.status for c in node.status.conditions}
        assert ready["Ready"] == "True"
        leaves.setdefault(labels["network.gpufair.io/leaf"], []).append(name)
    assert {leaf: sorted(names) for leaf, names in leaves.items()} == {
        "leaf-0": ["gpu-0000", "gpu-0001", "gpu-0002", "gpu-0003"],
        "leaf-1": ["gpu-0004", "gpu-0005", "gpu-0006", "gpu-0007"],
    }


def test_added_nodes_get_their_own_leaf_and_report_unhealthy_gpus(kube_cluster: KubeCluster) -> None:
    made = kube_cluster.add_gpu_nodes(2, name="l40s", gpus_per_node=4, gpu_model="L40S", unhealthy_gpus=2)
    try:
        for node in made:
            live = kube_cluster.core.read_node(node.name)
            assert live.metadata.labels["network.gpufair.io/leaf"] == "leaf-2"
            assert live.metadata.labels["network.gpufair.io/spine"] == "spine-1"
            assert live.metadata.labels[GPU_MODEL_LABEL] == "L40S"
            # capacity counts every GPU; allocatable only the healthy ones (device plugin style)
            assert live.status.capacity["nvidia.com/gpu"] == "4"
            assert live.status.allocatable["nvidia.com/gpu"] == "3"
    finally:
        kube_cluster.delete_nodes(made)
    left = {n.metadata.name for n in kube_cluster.core.list_node().items}
    assert not left & {n.name for n in made}
    assert len(kube_cluster.nodes) == 8


def test_a_node_marked_for_the_test_keeps_the_status_it_is_given(kube_cluster: KubeCluster) -> None:
    (node,) = kube_cluster.add_gpu_nodes(1, name="flaky")
    core = kube_cluster.core

    def ready() -> str:
        conditions = core.read_node(node.name).status.conditions
        return next(c.status for c in conditions if c.type == "Ready")

    try:
        core.patch_node(node.name, {"metadata": {"annotations": {FAKE_NODE_STATUS_ANNOTATION: "test"}}})
        down = {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "test outage"}
        core.patch_node_status(node.name, {"status": {"conditions": [down]}})
        time.sleep(1.0)  # KWOK would have flipped an unmarked node back within milliseconds
        assert ready() == "False"
        core.patch_node(node.name, {"metadata": {"annotations": {FAKE_NODE_STATUS_ANNOTATION: None}}})
        eventually(lambda: ready() == "True", what="KWOK makes the unmarked node Ready again")
    finally:
        kube_cluster.delete_nodes([node])


# ---------------------------------------------------------------- KWOK pods


def test_a_pod_bound_to_a_fake_node_runs_and_goes_away_on_delete(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    core = kube_cluster.core
    core.create_namespaced_pod(kube_namespace, gpu_pod("trainer", "gpu-0003", gpus=8))
    eventually(lambda: running_and_ready(core, kube_namespace, "trainer"), what="pod Running and Ready")
    pod = core.read_namespaced_pod("trainer", kube_namespace)
    assert pod.spec.node_name == "gpu-0003"
    assert pod.status.container_statuses[0].ready is True
    core.delete_namespaced_pod("trainer", kube_namespace)  # default grace period; KWOK finishes it
    eventually(lambda: gone(core, kube_namespace, "trainer"), what="pod deleted")


def test_a_pod_with_a_fake_runtime_succeeds(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    core = kube_cluster.core
    core.create_namespaced_pod(
        kube_namespace, gpu_pod("short", "gpu-0001", **{FAKE_RUNTIME_ANNOTATION: "1s"})
    )
    eventually(
        lambda: core.read_namespaced_pod("short", kube_namespace).status.phase == "Succeeded",
        what="pod Succeeded after its fake runtime",
    )


def test_disruption_budget_status_is_kept_and_evictions_honour_it(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    core, ns = kube_cluster.core, kube_namespace
    labels = {"gpufair.io/gang": "bert"}
    for i, node in enumerate(("gpu-0004", "gpu-0005")):
        core.create_namespaced_pod(ns, gpu_pod(f"bert-{i}", node, gpus=8, labels=labels))
    policy = client.PolicyV1Api(kube_cluster.api)
    policy.create_namespaced_pod_disruption_budget(
        ns,
        client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name="bert"),
            spec=client.V1PodDisruptionBudgetSpec(
                min_available=1, selector=client.V1LabelSelector(match_labels=labels)
            ),
        ),
    )

    def status() -> Any:
        got = policy.read_namespaced_pod_disruption_budget("bert", ns).status
        return got if got.expected_pods == 2 and got.current_healthy == 2 else None

    got = eventually(status, what="PDB status filled in by the disruption controller")
    assert got.disruptions_allowed == 1 and got.desired_healthy == 1

    def evict(name: str) -> None:
        core.create_namespaced_pod_eviction(
            name, ns, client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=ns))
        )

    evict("bert-0")
    with pytest.raises(ApiException) as refused:
        evict("bert-1")
    assert refused.value.status == 429  # the budget allows no second disruption
    eventually(lambda: gone(core, ns, "bert-0"), what="evicted pod gone")
    assert core.read_namespaced_pod("bert-1", ns).status.phase == "Running"


# ---------------------------------------------------------------- identities


def test_serviceaccount_token_kubeconfig_is_bound_by_rbac(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    ns = kube_namespace
    kubeconfig = kube_cluster.serviceaccount_kubeconfig(ns, "gpufair")
    with api_client(kubeconfig) as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
        assert review.status.user_info.username == f"system:serviceaccount:{ns}:gpufair"
        core = client.CoreV1Api(api)
        with pytest.raises(ApiException) as refused:
            core.list_namespaced_pod(ns)
        assert refused.value.status == 403
        rbac = client.RbacAuthorizationV1Api(kube_cluster.api)
        rbac.create_namespaced_role(
            ns,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="pod-reader"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            ns,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="gpufair-reads-pods"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
                ),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="gpufair", namespace=ns)],
            ),
        )
        eventually(lambda: core.list_namespaced_pod(ns).items == [], what="RBAC grant takes effect")
        with pytest.raises(ApiException) as still_refused:
            core.list_node()
        assert still_refused.value.status == 403


# ---------------------------------------------------------------- restart


def test_clients_and_controllers_survive_an_apiserver_restart(kube_cluster: KubeCluster) -> None:
    core = kube_cluster.core
    ns = f"restart-{os.getpid()}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    eventually(lambda: core.read_namespaced_service_account("default", ns), what="default SA")
    core.create_namespaced_pod(ns, gpu_pod("before", "gpu-0002"))
    eventually(lambda: running_and_ready(core, ns, "before"), what="pod before restart Running")
    old_pid = kube_cluster.dev.procs["kube-apiserver"].pid

    kube_cluster.restart_apiserver(downtime_s=1.0)

    assert kube_cluster.dev.procs["kube-apiserver"].pid != old_pid
    assert all(kube_cluster.dev.running().values())
    # the same ApiClient keeps working, and the data (in etcd) is all there
    assert running_and_ready(core, ns, "before")
    # KWOK re-watched: a new pod starts; the controller manager re-watched: a PDB gets status
    core.create_namespaced_pod(ns, gpu_pod("after", "gpu-0002", labels={"app": "after"}))
    eventually(lambda: running_and_ready(core, ns, "after"), what="pod after restart Running")
    policy = client.PolicyV1Api(kube_cluster.api)
    policy.create_namespaced_pod_disruption_budget(
        ns,
        client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name="after"),
            spec=client.V1PodDisruptionBudgetSpec(
                max_unavailable=0, selector=client.V1LabelSelector(match_labels={"app": "after"})
            ),
        ),
    )
    eventually(
        lambda: policy.read_namespaced_pod_disruption_budget("after", ns).status.current_healthy == 1,
        what="PDB status after restart",
        timeout_s=120,  # the controller manager's informers back off (up to 30 s, jittered) while it was down
    )
    core.delete_namespace(ns)


# ---------------------------------------------------------------- separate clusters and the CLI


def test_factory_gives_a_separate_cluster_with_its_own_nodes(
    kube_cluster: KubeCluster, kube_cluster_factory: Callable[..., KubeCluster]
) -> None:
    rack = gpu_nodes(4, name="gb200", gpus_per_node=4, gpu_model="GB200", nodes_per_rack=4)
    other = kube_cluster_factory(nodes=rack, with_kube_scheduler=True)
    assert other.server != kube_cluster.server
    live = other.core.list_node().items
    assert sorted(n.metadata.name for n in live) == [f"gb200-{i:04d}" for i in range(4)]
    assert {n.metadata.labels["nvidia.com/gpu.clique"] for n in live} == {"clique-gb200-rack-0"}
    assert all(not n.spec.taints for n in live)
    assert "gb200-0000" not in {n.metadata.name for n in kube_cluster.core.list_node().items}
    # this cluster runs the default kube-scheduler (for side-by-side benchmarks): it binds
    # a pod that names no node, and KWOK runs it
    other.core.create_namespaced_pod("default", gpu_pod("unbound", None, gpus=4))
    eventually(
        lambda: running_and_ready(other.core, "default", "unbound"), what="kube-scheduler binds the pod"
    )
    assert other.core.read_namespaced_pod("unbound", "default").spec.node_name.startswith("gb200-")
    other.stop()
    assert not any(other.dev.running().values()) and not other.dev.state_dir.exists()


def test_factory_node_sets_come_from_nodes_or_cluster_specs() -> None:
    spec = {
        "apiVersion": "gpufair.io/v1alpha1",
        "kind": "ClusterSpec",
        "groups": [{"name": "a100", "count": 3, "gpusPerNode": 8, "gpuModel": "A100", "nodesPerLeaf": 2}],
    }
    from_dict = resolve_nodes(spec)
    assert [n.name for n in from_dict] == ["a100-0000", "a100-0001", "a100-0002"]
    assert [n.labels["network.gpufair.io/leaf"] for n in from_dict] == ["leaf-0", "leaf-0", "leaf-1"]
    assert from_dict[0].cpu_milli == 112_000 and from_dict[0].memory_mib == 2 * 1024 * 1024
    text = json.dumps({**spec, "groups": [{**spec["groups"][0], "cpus": 112, "memoryMiB": 2097152}]})
    assert resolve_nodes(text + "\n") == from_dict
    assert len(resolve_nodes(REPO / "deploy" / "examples" / "cluster.yaml")) == 152
    assert [n.name for n in resolve_nodes(None)] == [f"gpu-{i:04d}" for i in range(8)]
    with pytest.raises(InvalidInput, match="gpusPerNode"):
        resolve_nodes({**spec, "groups": [{"name": "x", "count": 1, "gpuModel": "H100"}]})


def test_cli_up_env_down_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "dev"

    def gpufair(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "scheduler.cli", "dev-cluster", *args, "--state-dir", str(state)]
        return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=timeout, check=False)

    spec = REPO / "deploy" / "examples" / "cluster.yaml"
    pids: list[dict[str, Any]] = []
    up = gpufair("up", "--cluster", str(spec), timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = Path(up.stdout.strip())
        assert kubeconfig == state / "admin.kubeconfig" and kubeconfig.is_file()
        pids = json.loads((state / "state.json").read_text())["procs"]
        assert {p["name"] for p in pids} == {"etcd", "kube-apiserver", "kube-controller-manager", "kwok"}
        assert gpufair("env").stdout.strip() == f"export KUBECONFIG={kubeconfig}"
        with api_client(kubeconfig) as api:
            nodes = client.CoreV1Api(api).list_node().items
        assert len(nodes) == 64 + 72 + 16  # the example spec's three groups
        gpus = sum(int(n.status.allocatable["nvidia.com/gpu"]) for n in nodes)
        assert gpus == 64 * 8 - 3 + 72 * 4 + 16 * 4  # its 3 unhealthy H100s are not allocatable
        # gpufair's CRDs and the chart's PriorityClasses are there: the example teams apply at once
        teams = subprocess.run(
            [
                str(binaries.binary("kubectl")),
                f"--kubeconfig={kubeconfig}",
                "apply",
                "-f",
                "deploy/examples/teams.yaml",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert teams.returncode == 0, teams.stderr
        with api_client(kubeconfig) as api:
            listed = client.CustomObjectsApi(api).list_cluster_custom_object(
                "gpufair.io", "v1alpha1", "gputeams"
            )
            classes = client.SchedulingV1Api(api).list_priority_class().items
        assert sorted(t["metadata"]["name"] for t in listed["items"]) == ["inference", "research", "vision"]
        assert {c.metadata.name: c.value for c in classes if c.metadata.name.startswith("gpufair-")} == (
            priority_values()
        )
        status = gpufair("status")
        assert status.returncode == 0, status.stdout + status.stderr
        again = gpufair("up")  # idempotent: reports the running cluster
        assert again.returncode == 0 and again.stdout.strip() == str(kubeconfig)
    finally:
        down = gpufair("down")
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    for proc in pids:
        assert not Path(f"/proc/{proc['pid']}").exists() or _zombie(proc["pid"])
    after = gpufair("env")
    assert after.returncode == 1 and "gpufair dev-cluster up" in after.stderr


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def test_cli_up_with_workload_controllers_and_down(tmp_path: Path) -> None:
    state = tmp_path / "dev"

    def gpufair(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "scheduler.cli", "dev-cluster", *args, "--state-dir", str(state)]
        return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=timeout, check=False)

    up = gpufair("up", "--gpu-nodes", "2", "--workload-controllers", timeout=300)
    pids: list[dict[str, Any]] = []
    try:
        assert up.returncode == 0, up.stderr
        pids = json.loads((state / "state.json").read_text())["procs"]
        names = {p["name"] for p in pids}
        assert set(WORKLOAD_VERSIONS) <= names, names
        status = gpufair("status")
        assert status.returncode == 0, status.stdout + status.stderr
        for name in WORKLOAD_VERSIONS:
            assert re.search(rf"^{name}\s+running", status.stdout, re.M), status.stdout
        with api_client(Path(up.stdout.strip())) as api:
            crds = {
                c.metadata.name
                for c in client.ApiextensionsV1Api(api).list_custom_resource_definition().items
            }
        assert {
            "jobsets.jobset.x-k8s.io",
            "leaderworkersets.leaderworkerset.x-k8s.io",
            "rayclusters.ray.io",
        } <= crds
        assert "gputeams.gpufair.io" in crds
    finally:
        down = gpufair("down")
    assert down.returncode == 0, down.stderr
    for proc in pids:
        assert not Path(f"/proc/{proc['pid']}").exists() or _zombie(proc["pid"])
