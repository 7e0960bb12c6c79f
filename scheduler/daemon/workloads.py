"""Gangs found from the workload that owns a pod: Job, JobSet, LeaderWorkerSet, Kubeflow
training jobs, TrainJob, RayCluster and RayJob, with no gpufair labels on the pods.

Translation only: each recogniser reads the labels and owner references its controller
puts on the pods and the owning object's spec, and says the gang id, its minimum (the pods
that must start together; more are extras that may come and go), a required topology level
and the gang's age. What to do with a gang stays in the core. A PodGroup or a
`gpufair.io/gang` label wins over all of these (translate.py asks them first).

Owning objects come from the daemon's watch caches (`Owners`); a kind whose CRD is not
installed reads as unavailable, and its pods are then simply not recognised (each one its
own gang, as before). A shape that cannot be read raises InvalidInput naming the object and
the field, so the pods wait with that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from scheduler.core.errors import InvalidInput

log = logging.getLogger("gpufair.workloads")

# Opt-out for Jobs whose pods are independent (on the Job or its pod template).
INDEPENDENT_PODS = "gpufair.io/independent-pods"
WORKLOAD_GANG = "workload:"  # gang ids: "<ns>/workload:<kind>/<name>[/<group>]"

JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
JOBSET_TOPOLOGY = "alpha.jobset.sigs.k8s.io/exclusive-topology"
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP = "leaderworkerset.sigs.k8s.io/group-index"
LWS_TOPOLOGY = "leaderworkerset.sigs.k8s.io/exclusive-topology"
RAY_CLUSTER = "ray.io/cluster"
KUBEFLOW_JOB = "training.kubeflow.org/job-name"

# Owner kind -> the cache resource holding it (scheduler/daemon/cache.py RESOURCES).
RESOURCE_OF = {
    ("batch", "Job"): "jobs",
    ("jobset.x-k8s.io", "JobSet"): "jobsets",
    ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"): "leaderworkersets",
    ("ray.io", "RayCluster"): "rayclusters",
    ("ray.io", "RayJob"): "rayjobs",
    ("trainer.kubeflow.org", "TrainJob"): "trainjobs",
    ("kubeflow.org", "PyTorchJob"): "pytorchjobs",
    ("kubeflow.org", "TFJob"): "tfjobs",
    ("kubeflow.org", "MPIJob"): "mpijobs",
    ("kubeflow.org", "XGBoostJob"): "xgboostjobs",
    ("kubeflow.org", "PaddleJob"): "paddlejobs",
    ("kubeflow.org", "JAXJob"): "jaxjobs",
}
# training-operator v1: each kind's map of replica type -> ReplicaSpec.
KUBEFLOW_REPLICAS = {
    "PyTorchJob": "pytorchReplicaSpecs",
    "TFJob": "tfReplicaSpecs",
    "MPIJob": "mpiReplicaSpecs",
    "XGBoostJob": "xgbReplicaSpecs",
    "PaddleJob": "paddleReplicaSpecs",
    "JAXJob": "jaxReplicaSpecs",
}


class Owners(Protocol):
    """Owning objects by cache resource and "namespace/name"."""

    def get(self, resource: str, key: str) -> Mapping[str, Any] | None: ...

    def available(self, resource: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Workload:
    """What a recogniser read: the gang's id, minimum, required level and age."""

    gid: str
    min_member: int
    kind: str
    topology_required: str | None = None
    submit_s: float | None = None
    # JobSet exclusive topology: (replicated job, pods of each of its Jobs) whose followers
    # are not created before their leader is bound (see job_set).
    exclusive_jobs: tuple[tuple[str, int], ...] = ()


class Reading:
    """One pod's look-ups, remembered (`reads`) so the live state can read the pod again
    when one of those owners changes, arrives or goes."""

    def __init__(self, owners: Owners, timestamp: Callable[[str | None], float | None]) -> None:
        self.owners = owners
        self.timestamp = timestamp
        self.reads: set[tuple[str, str]] = set()

    def get(self, resource: str, key: str) -> Mapping[str, Any] | None:
        if not self.owners.available(resource):
            _log_unavailable(resource)
            return None
        self.reads.add((resource, key))
        return self.owners.get(resource, key)

    def need(self, resource: str, key: str, kind: str, pod: str) -> Mapping[str, Any] | None:
        """The owner, or None if its kind is not served; InvalidInput while it is served
        but not (yet) read, so the pod waits rather than starting alone."""
        obj = self.get(resource, key)
        if obj is None and self.owners.available(resource):
            raise InvalidInput(
                f"pod {pod}",
                "metadata.ownerReferences",
                f"its {kind} {key} is not known (yet)",
                f"it starts once the {kind} is read; delete the pod if the {kind} is gone",
            )
        return obj


_LOGGED: set[str] = set()


def _log_unavailable(resource: str) -> None:
    if resource not in _LOGGED:
        _LOGGED.add(resource)
        log.info("%s are not served or not readable: their pods are not recognised as workloads", resource)


def _group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def controller_ref(obj: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(API group, kind, name) of the object's controller, from metadata.ownerReferences."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller"):
            return _group(str(ref.get("apiVersion", ""))), str(ref.get("kind", "")), str(ref.get("name", ""))
    return None


def _count(value: Any, default: int, obj: str, path: str, least: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidInput(
            obj, path, f"{value!r} is not a count of {least} or more", f"set {path} to a whole number"
        )
    return value


def _job_pods(spec: Mapping[str, Any], obj: str, path: str) -> int:
    """Pods a Job runs at once: parallelism (default 1), no more than its completions."""
    par = _count(spec.get("parallelism"), 1, obj, f"{path}.parallelism")
    comp = spec.get("completions")
    if comp is not None:
        par = min(par, _count(comp, 1, obj, f"{path}.completions"))
    return par


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _created(r: Reading, obj: Mapping[str, Any]) -> float | None:
    return r.timestamp((obj.get("metadata") or {}).get("creationTimestamp"))


def _gid(ns: str, kind: str, name: str, group: str | None = None) -> str:
    tail = f"/{group}" if group is not None else ""
    return f"{ns}/{WORKLOAD_GANG}{kind.lower()}/{name}{tail}"


# ---------------------------------------------------------------------- recognisers


def leader_worker_set(pod: Mapping[str, Any], ns: str, key: str, r: Reading) -> Workload | None:
    """LeaderWorkerSet: each group (leader + size-1 workers, one group-index) is a gang; the
    LWS's exclusive-topology annotation is its required level. The controller's default
    RecreateGroupOnPodRestart recreates the group when any pod of it goes, which is why the
    group, not the pod, is the unit of preemption."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    name, group = labels.get(LWS_NAME), labels.get(LWS_GROUP)
    if not name or group is None:
        return None
    lws = r.need("leaderworkersets", f"{ns}/{name}", "LeaderWorkerSet", key)
    if lws is None:
        return None
    obj = f"LeaderWorkerSet {ns}/{name}"
    tmpl = (lws.get("spec") or {}).get("leaderWorkerTemplate") or {}
    size = _count(tmpl.get("size"), 1, obj, "spec.leaderWorkerTemplate.size", least=1)
    return Workload(
        _gid(ns, "LeaderWorkerSet", name, group),
        size,
        "LeaderWorkerSet",
        _annotations(lws).get(LWS_TOPOLOGY),
        _created(r, lws),
    )


def ray_cluster(pod: Mapping[str, Any], ns: str, key: str, r: Reading) -> Workload | None:
    """RayCluster: the head and minReplicas (x numOfHosts) of each worker group start
    together; workers beyond that are the autoscaler's extras. A RayJob's cluster takes the
    RayJob's age."""
    ref = controller_ref(pod)
    if ref is None or ref[:2] != ("ray.io", "RayCluster"):
        return None
    name = ref[2]
    rc = r.need("rayclusters", f"{ns}/{name}", "RayCluster", key)
    if rc is None:
        return None
    obj = f"RayCluster {ns}/{name}"
    need = 1  # the head
    for i, g in enumerate((rc.get("spec") or {}).get("workerGroupSpecs") or ()):
        path = f"spec.workerGroupSpecs[{i}]"
        if (g or {}).get("suspend"):
            continue
        low = _count(g.get("minReplicas"), 0, obj, f"{path}.minReplicas")
        hosts = _count(g.get("numOfHosts"), 1, obj, f"{path}.numOfHosts", least=1)
        need += low * hosts
    submit = _created(r, rc)
    owner = controller_ref(rc)
    if owner is not None and owner[:2] == ("ray.io", "RayJob"):
        job = r.get("rayjobs", f"{ns}/{owner[2]}")
        if job is not None:
            submit = _created(r, job)
    return Workload(_gid(ns, "RayCluster", name), need, "RayCluster", None, submit)


def job_set(pod: Mapping[str, Any], ns: str, key: str, r: Reading) -> Workload | None:
    """JobSet (and a Trainer v2 TrainJob, which runs as one): the whole JobSet is one gang
    of every replicated job's replicas x parallelism.

    Exclusive topology (`alpha.jobset.sigs.k8s.io/exclusive-topology` on the JobSet or a
    replicated job's template) works in two waves in JobSet itself: its pod webhook admits a
    Job's followers only once the Job's leader (completion index 0) is bound, then pins them
    to the leader's domain, and gives leaders (anti-)affinity keeping each Job alone in its
    domain. So such a Job counts its leader in the minimum (the followers come as extras in
    that domain, or the gang would wait for pods that cannot exist yet), and the level is
    the gang's required level when the JobSet runs one Job. `exclusive_jobs` lets the
    snapshot stand in for the followers not made yet (translate.py), so a leader binds only
    where its whole Job fits."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    name = labels.get(JOBSET_NAME)
    if not name:
        return None
    js = r.need("jobsets", f"{ns}/{name}", "JobSet", key)
    if js is None:
        return None
    obj = f"JobSet {ns}/{name}"
    total = jobs = 0
    levels: set[str] = set()
    exclusive: list[tuple[str, int]] = []
    for i, rj in enumerate((js.get("spec") or {}).get("replicatedJobs") or ()):
        path = f"spec.replicatedJobs[{i}]"
        rj = rj if isinstance(rj, Mapping) else {}
        replicas = _count(rj.get("replicas"), 1, obj, f"{path}.replicas")
        tmpl = rj.get("template") or {}
        pods = _job_pods(tmpl.get("spec") or {}, obj, f"{path}.template.spec")
        jobs += replicas
        level = _annotations(tmpl).get(JOBSET_TOPOLOGY) or _annotations(js).get(JOBSET_TOPOLOGY)
        if level:
            levels.add(level)
            exclusive.append((str(rj.get("name") or ""), pods))
            pods = min(pods, 1)  # its leader; the followers are admitted once it is bound
        total += replicas * pods
    if total < 1:
        raise InvalidInput(
            obj, "spec.replicatedJobs", "runs no pods", "give it a replicated job with replicas >= 1"
        )
    level = next(iter(levels)) if len(levels) == 1 and jobs == 1 else None
    kind, gname, submit = "JobSet", name, _created(r, js)
    owner = controller_ref(js)
    if owner is not None and owner[:2] == ("trainer.kubeflow.org", "TrainJob"):
        tj = r.get("trainjobs", f"{ns}/{owner[2]}")
        kind, gname = "TrainJob", owner[2]
        if tj is not None:
            submit = _created(r, tj)
    return Workload(_gid(ns, kind, gname), total, kind, level, submit, tuple(exclusive))


def kubeflow_job(pod: Mapping[str, Any], ns: str, key: str, r: Reading) -> Workload | None:
    """training-operator v1 (PyTorchJob, TFJob, MPIJob, XGBoostJob, PaddleJob, JAXJob): all
    replicas of the job start together, or runPolicy.schedulingPolicy.minAvailable of them."""
    ref = controller_ref(pod)
    if ref is None or ref[0] != "kubeflow.org" or ref[1] not in KUBEFLOW_REPLICAS:
        return None
    kind, name = ref[1], ref[2]
    job = r.need(RESOURCE_OF[("kubeflow.org", kind)], f"{ns}/{name}", kind, key)
    if job is None:
        return None
    obj, field = f"{kind} {ns}/{name}", KUBEFLOW_REPLICAS[kind]
    spec = job.get("spec") or {}
    total = 0
    for rtype, rs in sorted((spec.get(field) or {}).items()):
        rs = rs if isinstance(rs, Mapping) else {}
        total += _count(rs.get("replicas"), 1, obj, f"spec.{field}.{rtype}.replicas")
    policy = (spec.get("runPolicy") or {}).get("schedulingPolicy") or {}
    low = policy.get("minAvailable")
    if low is not None:
        total = min(total, _count(low, 1, obj, "spec.runPolicy.schedulingPolicy.minAvailable", least=1))
    if total < 1:
        raise InvalidInput(obj, f"spec.{field}", "runs no pods", "give it a replica type with replicas >= 1")
    return Workload(_gid(ns, kind, name), total, kind, None, _created(r, job))


def batch_job(pod: Mapping[str, Any], ns: str, key: str, r: Reading) -> Workload | None:
    """batch/v1 Job (indexed ones for distributed training): its parallelism pods, or the
    completions still to come if fewer, are one gang. `gpufair.io/independent-pods: "true"`
    on the Job or its pod template leaves each pod its own gang."""
    ref = controller_ref(pod)
    if ref is None or ref[:2] != ("batch", "Job"):
        return None
    if _annotations(pod).get(INDEPENDENT_PODS) == "true":
        return None
    name = ref[2]
    job = r.need("jobs", f"{ns}/{name}", "Job", key)
    if job is None or _annotations(job).get(INDEPENDENT_PODS) == "true":
        return None
    obj = f"Job {ns}/{name}"
    spec = job.get("spec") or {}
    pods = _job_pods({"parallelism": spec.get("parallelism")}, obj, "spec")
    if spec.get("completions") is not None:
        done = _count((job.get("status") or {}).get("succeeded"), 0, obj, "status.succeeded")
        left = _count(spec["completions"], 1, obj, "spec.completions") - done
        pods = max(1, min(pods, left))
    return Workload(_gid(ns, "Job", name), pods, "Job", None, _created(r, job))


Recogniser = Callable[[Mapping[str, Any], str, str, Reading], "Workload | None"]

# Asked in order; the first that recognises the pod names its gang. JobSet before Job: a
# JobSet's pods belong to its Jobs too, and the JobSet is the workload.
RECOGNISERS: tuple[tuple[str, Recogniser], ...] = (
    ("LeaderWorkerSet", leader_worker_set),
    ("RayCluster", ray_cluster),
    ("JobSet", job_set),
    ("Kubeflow", kubeflow_job),
    ("Job", batch_job),
)


_OWNER_KINDS = frozenset(kind for _group, kind in RESOURCE_OF)


def candidate(pod: Mapping[str, Any]) -> bool:
    """Whether any recogniser could claim the pod: most pods of a cluster (Deployments,
    lone pods) are turned away here, before a look-up is set up."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if LWS_NAME in labels or JOBSET_NAME in labels:
        return True
    for ref in meta.get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller") and ref.get("kind") in _OWNER_KINDS:
            return True
    return False


def recognise(pod: Mapping[str, Any], ns: str, key: str, r: Reading) -> Workload | None:
    for _kind, rec in RECOGNISERS:
        found = rec(pod, ns, key, r)
        if found is not None:
            return found
    return None


class CacheOwners:
    """Owners read from the daemon's watch caches (cache.py Stores by resource name); a
    store its list was refused for (CRD not installed, no RBAC) is unavailable."""

    def __init__(self, stores: Mapping[str, Any]) -> None:
        self.stores = stores

    def get(self, resource: str, key: str) -> Mapping[str, Any] | None:
        store = self.stores.get(resource)
        return None if store is None else store.get(key)

    def available(self, resource: str) -> bool:
        store = self.stores.get(resource)
        return store is not None and bool(getattr(store, "available", True))


class NoOwners:
    """No owner kinds at all: nothing is recognised (pods are gangs by label or alone)."""

    def get(self, resource: str, key: str) -> Mapping[str, Any] | None:
        return None

    def available(self, resource: str) -> bool:
        return False
