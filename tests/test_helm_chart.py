"""The Helm chart in deploy/helm/gpufair, checked with the pinned helm and kubectl against a real
API server: it lints, it renders with each set of values in `ci/`, the API server accepts every
object it renders (server-side dry run), its RBAC is the least the daemon needs (and the
integration scenarios pass with the daemon on the chart's own ServiceAccount token), and its
admission policy keeps the node agent to its own node and its own labels.

The module runs its own control plane (8 nodes x 8 GPUs, as the integration tests): the
scenarios it borrows from tests/test_daemon_integration.py expect an empty cluster.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

import tests.test_daemon_integration as scenarios
from scheduler.agent.labels import patch_own_node
from scheduler.daemon.cache import RESOURCES
from scheduler.daemon.config import load_daemon_config
from scheduler.devcluster import binaries
from tests.daemon_support import (
    ROOT,
    install_crds_and_priorities,
    kube_for,
    make_namespace,
    wait_for,
)

CHART = ROOT / "deploy" / "helm" / "gpufair"
RELEASE, NAMESPACE = "gpufair", "gpufair-system"
SCHEDULER_SA, AGENT_SA = "gpufair-scheduler", "gpufair-agent"
VALUE_SETS = {
    "default": None,
    "postgresql-external-broker": CHART / "ci" / "postgresql-values.yaml",
    "monitoring-cert-manager": CHART / "ci" / "monitoring-values.yaml",
    "minimal": CHART / "ci" / "minimal-values.yaml",
}
# Kinds of operators the chart can write objects for (Prometheus Operator, cert-manager);
# the test cluster has stand-in CRDs for them so the API server can check the rest.
OPERATOR_KINDS = {
    ("monitoring.coreos.com", "ServiceMonitor"): "servicemonitors",
    ("monitoring.coreos.com", "PrometheusRule"): "prometheusrules",
    ("cert-manager.io", "Certificate"): "certificates",
}

# What the daemon does through the API (scheduler/daemon: cache.py, actuator.py, explain.py,
# leader.py): (apiGroup, resource, verb). Nothing else may be granted.
SCHEDULER_CLUSTER_RIGHTS = {
    *(
        (g, r, v)
        for g, r in (
            ("", "pods"),
            ("", "nodes"),
            ("", "namespaces"),
            ("scheduling.k8s.io", "priorityclasses"),
            ("policy", "poddisruptionbudgets"),
            ("gpufair.io", "gputeams"),
            ("scheduling.x-k8s.io", "podgroups"),
            ("", "persistentvolumeclaims"),
            ("", "persistentvolumes"),
            ("storage.k8s.io", "storageclasses"),
            ("storage.k8s.io", "csinodes"),
            ("batch", "jobs"),
            ("jobset.x-k8s.io", "jobsets"),
            ("leaderworkerset.x-k8s.io", "leaderworkersets"),
            ("ray.io", "rayclusters"),
            ("ray.io", "rayjobs"),
            *(
                ("kubeflow.org", k)
                for k in ("pytorchjobs", "tfjobs", "mpijobs", "xgboostjobs", "paddlejobs", "jaxjobs")
            ),
            ("trainer.kubeflow.org", "trainjobs"),
        )
        for v in ("list", "watch")
    ),
    ("", "persistentvolumes", "update"),
    ("", "persistentvolumeclaims", "patch"),
    ("", "pods/binding", "create"),
    ("", "pods/eviction", "create"),
    ("", "pods/status", "patch"),
    ("", "events", "create"),
    ("gpufair.io", "gputeams/status", "patch"),
}
PROBE = "example.com/gpufair-probe"  # a label the agent must not set
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "bind", "escalate", "impersonate"}
WRITABLE = {
    *("pods/binding", "pods/eviction", "pods/status", "events", "gputeams/status", "leases", "nodes"),
    *("persistentvolumes", "persistentvolumeclaims"),  # the volume binder's claimRef and selected node
}


# ---------------------------------------------------------------- helpers


def _tool(name: str) -> Path:
    try:
        return binaries.binary(name)
    except binaries.MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(_tool("helm")), *args], capture_output=True, text=True, timeout=120)


def render(values: Path | None = None, *extra: str, crds: bool = False) -> list[dict]:
    """The chart's objects as `helm template` writes them for `values`."""
    argv = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra]
    if values:
        argv += ["-f", str(values)]
    if crds:
        argv.append("--include-crds")
    out = helm(*argv)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def kubectl(kubeconfig: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(_tool("kubectl")), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def rights(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def apply_for_real(kubeconfig: Path, docs: list[dict]) -> None:
    out = kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert out.returncode == 0, out.stderr


@dataclass
class AsServiceAccount:
    """What the borrowed scenarios call `cluster`: the daemon gets this kubeconfig."""

    kubeconfig: Path


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(kube_cluster_factory):
    c = kube_cluster_factory(None)  # 8 nodes x 8 GPUs, 4 nodes per leaf
    install_crds_and_priorities(kube_for(c.kubeconfig))
    make_namespace(kube_for(c.kubeconfig), NAMESPACE)
    return c


@pytest.fixture
def kube(cluster):
    """The test's own client: admin, as in the integration tests."""
    return kube_for(cluster.kubeconfig)


ns = scenarios.ns  # the integration tests' namespace fixture (cleans pods and GPUTeams up)


@pytest.fixture(scope="module")
def chart_rbac(cluster) -> list[dict]:
    """The chart's ServiceAccounts, roles, bindings and admission policy, applied for real."""
    kinds = {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    docs = [d for d in render() if d["kind"] in kinds]
    apply_for_real(cluster.kubeconfig, docs)
    return docs


@pytest.fixture(scope="module")
def scheduler_account(cluster, chart_rbac) -> AsServiceAccount:
    config = cluster.serviceaccount_kubeconfig(NAMESPACE, SCHEDULER_SA, create=False)
    with cluster.new_api_client(config) as api:
        me = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
    assert me.status.user_info.username == f"system:serviceaccount:{NAMESPACE}:{SCHEDULER_SA}"
    return AsServiceAccount(config)


# ---------------------------------------------------------------- the chart itself


def test_embedded_copies_match_their_sources() -> None:
    deploy = ROOT / "deploy"
    pairs = [(f, CHART / "crds" / f.name) for f in sorted((deploy / "crds").glob("*.yaml"))]
    pairs += [(f, CHART / "files" / "grafana" / f.name) for f in sorted((deploy / "grafana").glob("*.json"))]
    pairs += [
        (deploy / "mosquitto" / n, CHART / "files" / "mosquitto" / n) for n in ("mosquitto.conf", "acl")
    ]
    pairs.append(
        (deploy / "prometheus" / "gpufair-rules.yaml", CHART / "files" / "prometheus" / "gpufair-rules.yaml")
    )
    stale = [
        str(copy.relative_to(ROOT))
        for src, copy in pairs
        if not copy.exists() or copy.read_bytes() != src.read_bytes()
    ]
    assert len(pairs) >= 7
    assert not stale, f"chart copies differ from deploy/: {stale}; run deploy/helm/sync-files.sh"
    assert {p.name for p in (CHART / "crds").iterdir()} == {p.name for p in (deploy / "crds").glob("*.yaml")}


@pytest.mark.parametrize("values", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_helm_lint_is_clean(values: Path | None) -> None:
    out = helm(
        "lint", str(CHART), "--strict", "--namespace", NAMESPACE, *(["-f", str(values)] if values else [])
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "ledger.type=postgresql"], "ledger.postgresql.existingSecret is required"),
        (["--set", "ledger.type=mysql"], 'ledger.type "mysql" is not one of'),
        (["--set", "mqtt.enabled=false"], "agent.enabled needs mqtt.enabled"),
        (["--set", "mqtt.bundled=false"], "mqtt.externalAddress (host:port) is required"),
        (["--set", "mqtt.certManager.enabled=true"], "mqtt.certManager.issuerRef.name is required"),
    ],
)
def test_values_that_cannot_work_are_refused_with_the_fix(flags: list[str], message: str) -> None:
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *flags)
    assert out.returncode != 0
    assert message in out.stderr


def test_the_scheduler_config_is_one_the_daemon_accepts() -> None:
    docs = render()
    cm = named(docs, "ConfigMap", "gpufair-scheduler-config")
    cfg = load_daemon_config(cm["data"]["config.yaml"])
    assert (cfg.lease_namespace, cfg.lease_name) == (NAMESPACE, SCHEDULER_SA)
    assert cfg.leader_elect and cfg.ledger_url == "/var/lib/gpufair/ledger.db"
    assert (
        cfg.mqtt_broker == f"gpufair-mqtt.{NAMESPACE}.svc:8883"
        and cfg.mqtt_cert == "/etc/gpufair/mqtt/tls.crt"
    )
    deploy = named(docs, "Deployment", "gpufair-scheduler")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deploy["spec"]["replicas"] == 2
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
    assert pod["serviceAccountName"] == SCHEDULER_SA
    # Both replicas share the SQLite volume (ReadWriteOnce), so they share a node.
    assert "podAffinity" in pod["affinity"]

    pg = render(VALUE_SETS["postgresql-external-broker"])
    cfg = load_daemon_config(named(pg, "ConfigMap", "gpufair-scheduler-config")["data"]["config.yaml"])
    assert cfg.ledger_url is None  # the URL comes from the Secret, through the environment
    assert cfg.mqtt_broker == "mqtt.example.internal:8883" and cfg.max_in_flight == 32
    assert cfg.policy.default_min_runtime_s == 900 and cfg.policy.usage_half_life_s == 14 * 86400
    (container,) = named(pg, "Deployment", "gpufair-scheduler")["spec"]["template"]["spec"]["containers"]
    assert not [a for a in container["args"] if "ledger" in a]  # never in argv: the daemon reads the env
    ledger_env = next(e for e in container["env"] if e["name"] == "GPUFAIR_LEDGER_URL")
    assert ledger_env["valueFrom"] == {"secretKeyRef": {"name": "gpufair-ledger", "key": "url"}}
    assert not of_kind(pg, "PersistentVolumeClaim") and not [d for d in pg if "mqtt" in d["metadata"]["name"]]


def test_the_agent_runs_on_gpu_nodes_only_and_labels_its_own_node() -> None:
    docs = render()
    ds = named(docs, "DaemonSet", "gpufair-agent")
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in container[
        "env"
    ]
    assert "--label-node" in container["args"] and "--node=$(NODE_NAME)" in container["args"]
    assert "nvidia.com/gpu" not in str(container["resources"])  # it must not take a GPU
    assert pod["serviceAccountName"] == AGENT_SA


def test_priority_classes_dashboards_and_operator_objects() -> None:
    docs = render()
    assert {d["metadata"]["name"]: d["value"] for d in of_kind(docs, "PriorityClass")} == {
        "gpufair-production": 100000,
        "gpufair-training": 0,
        "gpufair-scavenger": -100,
    }
    boards = [
        d for d in of_kind(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(boards) == len(list((ROOT / "deploy" / "grafana").glob("*.json")))
    assert not [d for d in docs if d["kind"] in ("ServiceMonitor", "PrometheusRule", "Certificate")]
    mon = render(VALUE_SETS["monitoring-cert-manager"])
    rule = named(mon, "PrometheusRule", "gpufair")
    source = yaml.safe_load((ROOT / "deploy" / "prometheus" / "gpufair-rules.yaml").read_text())
    assert rule["spec"] == source
    assert named(mon, "ServiceMonitor", "gpufair-scheduler")["spec"]["endpoints"][0]["port"] == "metrics"
    certs = {d["spec"]["secretName"]: d for d in of_kind(mon, "Certificate")}
    assert certs["gpufair-mqtt-scheduler-tls"]["spec"]["commonName"] == "gpufair:scheduler"
    assert f"gpufair-mqtt.{NAMESPACE}.svc" in certs["gpufair-mqtt-broker-tls"]["spec"]["dnsNames"]
    assert all(
        b["metadata"]["namespace"] == "monitoring"
        for b in of_kind(mon, "ConfigMap")
        if "dashboard" in b["metadata"]["name"]
    )


# ---------------------------------------------------------------- RBAC is minimal


@pytest.mark.parametrize("values", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_rbac_is_least_privilege(values: Path | None) -> None:
    docs = render(values)
    text = yaml.safe_dump_all(docs)
    roles = of_kind(docs, "ClusterRole") + of_kind(docs, "Role")
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key] and not any("*" in x for x in rule[key]), (
                    role["metadata"]["name"],
                    rule,
                )
            assert "secrets" not in rule["resources"], rule
            assert not rule.get("nonResourceURLs"), rule
            for verb in set(rule["verbs"]) & WRITE_VERBS:
                assert set(rule["resources"]) <= WRITABLE, (verb, rule)
    assert not of_kind(docs, "Secret")  # the chart makes no Secret and reads none
    assert "kind: Secret\n" not in text
    scheduler_role = named(docs, "ClusterRole", SCHEDULER_SA)
    assert rights(scheduler_role["rules"]) == SCHEDULER_CLUSTER_RIGHTS
    assert not [r for r in scheduler_role["rules"] if r.get("resourceNames")]
    # Leases only in a namespaced Role, get/update only of the one Lease.
    assert not [
        c for c in of_kind(docs, "ClusterRole") if any("leases" in r["resources"] for r in c["rules"])
    ]
    leader = named(docs, "Role", f"{SCHEDULER_SA}-leader")
    assert leader["metadata"]["namespace"] == NAMESPACE
    assert rights(leader["rules"]) == {
        ("coordination.k8s.io", "leases", v) for v in ("create", "get", "update")
    }
    assert all(
        r.get("resourceNames") == [SCHEDULER_SA] for r in leader["rules"] if "create" not in r["verbs"]
    )
    bindings = {
        b["metadata"]["name"]: b for b in of_kind(docs, "ClusterRoleBinding") + of_kind(docs, "RoleBinding")
    }
    for b in bindings.values():
        assert b["roleRef"]["name"] == b["metadata"]["name"]
        assert [s["name"] for s in b["subjects"]] in ([SCHEDULER_SA], [AGENT_SA])
    agent_roles = [c for c in of_kind(docs, "ClusterRole") if c["metadata"]["name"] == AGENT_SA]
    if values != VALUE_SETS["minimal"]:
        (agent,) = agent_roles
        assert rights(agent["rules"]) == {("", "nodes", "get"), ("", "nodes", "patch")}
        assert named(docs, "ValidatingAdmissionPolicyBinding", f"{AGENT_SA}-own-node")["spec"][
            "validationActions"
        ] == ["Deny"]
    else:
        assert not agent_roles
    # The broker gets no API access at all.
    for sa in of_kind(docs, "ServiceAccount"):
        if sa["metadata"]["name"].endswith("-mqtt"):
            assert sa["automountServiceAccountToken"] is False


def test_the_chart_lets_the_scheduler_watch_every_resource_its_cache_watches() -> None:
    scheduler_role = named(render(None), "ClusterRole", SCHEDULER_SA)
    granted = rights(scheduler_role["rules"])
    for r in RESOURCES:
        parts = r.path.strip("/").split("/")  # api/v1/<plural> or apis/<group>/<version>/<plural>
        group = "" if parts[0] == "api" else parts[1]
        for verb in ("list", "watch"):
            assert (group, parts[-1], verb) in granted, (r.name, verb)


def test_the_scheduler_account_can_do_what_the_daemon_needs_and_nothing_more(cluster, chart_rbac) -> None:
    user = f"system:serviceaccount:{NAMESPACE}:{SCHEDULER_SA}"

    def allowed(group: str, resource: str, verb: str, namespace: str = "default", name: str = "") -> bool:
        resource, _, sub = resource.partition("/")
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                groups=[
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{NAMESPACE}",
                    "system:authenticated",
                ],
                resource_attributes=client.V1ResourceAttributes(
                    group=group,
                    resource=resource,
                    subresource=sub or None,
                    verb=verb,
                    namespace=namespace,
                    name=name or None,
                ),
            )
        )
        with cluster.new_api_client() as api:
            return bool(client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed)

    for group, resource, verb in sorted(SCHEDULER_CLUSTER_RIGHTS):
        assert allowed(group, resource, verb), (group, resource, verb)
    for group, resource, verb in [
        ("", "secrets", "get"),
        ("", "secrets", "list"),
        ("", "configmaps", "get"),
        ("", "pods", "delete"),
        ("", "pods", "create"),
        ("", "pods", "get"),
        ("", "nodes", "patch"),
        ("gpufair.io", "gputeams", "update"),
        ("", "events", "delete"),
        ("apps", "deployments", "list"),
        ("", "pods/exec", "create"),
        ("", "persistentvolumes", "delete"),
        ("", "persistentvolumes", "patch"),
        ("", "persistentvolumeclaims", "update"),
        ("", "persistentvolumeclaims", "delete"),
        ("storage.k8s.io", "storageclasses", "update"),
    ]:
        assert not allowed(group, resource, verb), (group, resource, verb)
    assert allowed("coordination.k8s.io", "leases", "update", NAMESPACE, SCHEDULER_SA)
    assert allowed("coordination.k8s.io", "leases", "get", NAMESPACE, SCHEDULER_SA)
    assert not allowed("coordination.k8s.io", "leases", "update", NAMESPACE, "kube-scheduler")
    assert not allowed("coordination.k8s.io", "leases", "update", "kube-system", SCHEDULER_SA)
    assert not allowed("coordination.k8s.io", "leases", "create", "kube-system")


# ---------------------------------------------------------------- the API server accepts it


def _stub_crd(group: str, kind: str, plural: str) -> dict:
    """A stand-in for an operator's CRD: any spec, so the API server can take the object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def operator_crds(cluster) -> None:
    apply_for_real(cluster.kubeconfig, [_stub_crd(g, k, p) for (g, k), p in OPERATOR_KINDS.items()])
    make_namespace(kube_for(cluster.kubeconfig), "monitoring")
    out = kubectl(
        cluster.kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{p}.{g}" for (g, _), p in OPERATOR_KINDS.items()),
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("values", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_server_side_dry_run_accepts_every_object(cluster, operator_crds, values: Path | None) -> None:
    docs = render(values, crds=True)
    out = kubectl(cluster.kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == len(docs) and all(line.endswith("(server dry run)") for line in lines), out.stdout
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ClusterRole", "Role", "CustomResourceDefinition", "ConfigMap"} <= kinds
    if values is None:
        assert {"DaemonSet", "ValidatingAdmissionPolicy", "PriorityClass", "PersistentVolumeClaim"} <= kinds


# ---------------------------------------------------------------- the daemon on the chart's account

# Every daemon scenario of the integration tests: the RBAC must be enough for all of them.
SCENARIOS = [
    fn for name, fn in vars(scenarios).items() if name.startswith("test_") and inspect.isfunction(fn)
]


@pytest.mark.parametrize(
    "scenario", SCENARIOS, ids=[s.__name__.removeprefix("test_")[:48] for s in SCENARIOS]
)
def test_integration_scenario_passes_on_the_charts_serviceaccount(
    scenario, scheduler_account, kube, ns, tmp_path, caplog
) -> None:
    """The scenario as the integration tests run it, except that the daemon's kubeconfig holds
    the token of the chart's scheduler ServiceAccount (the test's own client stays admin)."""
    caplog.set_level(logging.WARNING)
    args: dict[str, Any] = {"cluster": scheduler_account, "kube": kube, "ns": ns, "tmp_path": tmp_path}
    scenario(**{name: args[name] for name in inspect.signature(scenario).parameters})
    refused = [
        r.getMessage() for r in caplog.records if "403" in r.getMessage() or "orbidden" in r.getMessage()
    ]
    assert not refused, refused


# ---------------------------------------------------------------- the agent's admission policy


def _pod_bound_token(api: client.ApiClient, pod: dict) -> str:
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(
            audiences=[],
            expiration_seconds=600,
            bound_object_ref=client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=pod["metadata"]["name"], uid=pod["metadata"]["uid"]
            ),
        )
    )
    made = client.CoreV1Api(api).create_namespaced_service_account_token(AGENT_SA, NAMESPACE, request)
    return str(made.status.token)


def _patch(api: client.ApiClient, node: str, body: dict) -> ApiException | None:
    try:
        client.CoreV1Api(api).patch_node(node, body)
    except ApiException as exc:
        return exc
    return None


@pytest.fixture
def agent_pod(cluster, kube, chart_rbac) -> Iterator[dict]:
    """A pod of the agent's ServiceAccount on the first node, as the DaemonSet would run there."""
    node = cluster.node_names[0]
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "agent-probe", "namespace": NAMESPACE},
        "spec": {
            "nodeName": node,
            "serviceAccountName": AGENT_SA,
            "containers": [{"name": "agent", "image": "registry.example/gpufair:0"}],
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
        },
    }
    pod = kube.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body=body)
    yield pod
    kube.request(
        "DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/agent-probe", query={"gracePeriodSeconds": 0}
    )
    for name in cluster.node_names[:2]:
        kube.request(
            "PATCH",
            f"/api/v1/nodes/{name}",
            body={
                "metadata": {
                    "labels": {"gpufair.io/nvlink-domain-size": None, "gpufair.io/probe": None, PROBE: None}
                }
            },
            content_type="application/merge-patch+json",
        )


def test_the_admission_policy_keeps_the_agent_to_its_own_node_and_labels(cluster, kube, agent_pod) -> None:
    mine, other = cluster.node_names[0], cluster.node_names[1]
    assert agent_pod["spec"]["nodeName"] == mine
    with cluster.new_api_client() as admin:
        token = _pod_bound_token(admin, agent_pod)
    config = cluster.dev.token_kubeconfig(
        token, f"system:serviceaccount:{NAMESPACE}:{AGENT_SA}", namespace=NAMESPACE
    )
    labels = {"gpufair.io/nvlink-domain-size": "8", "gpufair.io/gpu-model": "NVIDIA-H100-80GB-HBM3"}
    with cluster.new_api_client(config) as api:
        # A new policy takes a moment to be in force; probe with a harmless foreign label (a new
        # value each time: a patch that changes nothing is no change to refuse).
        probes = itertools.count()
        wait_for(
            "the policy in force",
            lambda: _patch_refused(api, mine, {"metadata": {"labels": {PROBE: str(next(probes))}}}),
        )
        # Its own node: allowed, by the agent's own code path.
        patch_own_node(mine, labels, api)
        assert (
            kube.request("GET", f"/api/v1/nodes/{mine}")["metadata"]["labels"][
                "gpufair.io/nvlink-domain-size"
            ]
            == "8"
        )
        # Another node: RBAC allows patch, the policy refuses it.
        refused = _patch(api, other, {"metadata": {"labels": labels}})
        assert refused is not None and refused.status == 403
        assert "only its own node" in refused.body and mine in refused.body
        assert (
            "gpufair.io/nvlink-domain-size"
            not in kube.request("GET", f"/api/v1/nodes/{other}")["metadata"]["labels"]
        )
        # Its own node, but a label outside gpufair.io/ and the clique, or the spec.
        err = _patch(api, mine, {"metadata": {"labels": {"network.gpufair.io/leaf": "leaf-9"}}})
        assert err is not None and err.status == 403 and "network.gpufair.io/leaf" in err.body
        err = _patch(api, mine, {"spec": {"unschedulable": True}})
        assert err is not None and err.status == 403
        err = _patch(api, mine, {"metadata": {"annotations": {"gpufair.io/probe": "x"}}})
        assert err is not None and err.status == 403
        assert (
            _patch(
                api, mine, {"metadata": {"labels": {"nvidia.com/gpu.clique": "c.0", "gpufair.io/probe": "1"}}}
            )
            is None
        )
        err = _patch(api, mine, {"metadata": {"labels": {"nvidia.com/gpu.clique": None}}})
        assert err is None  # the clique label is the agent's to set and to clear
    # A token not bound to a pod names no node: refused even for that node.
    plain = cluster.serviceaccount_kubeconfig(NAMESPACE, AGENT_SA, create=False)
    with cluster.new_api_client(plain) as api:
        err = _patch(api, mine, {"metadata": {"labels": {"gpufair.io/probe": "2"}}})
        assert err is not None and err.status == 403 and "not a pod-bound token" in err.body


def _patch_refused(api: client.ApiClient, node: str, body: dict) -> ApiException | None:
    err = _patch(api, node, body)
    return err if err is not None and err.status == 403 else None
