"""Synthetic clusters and workloads for benchmarks: seeded, shaped like real GPU clusters.

Nodes have 8 GPUs with an NVLink domain each, 32 nodes per InfiniBand leaf and 8
leaves per spine. Multi-pod gangs are distributed training (8 GPUs a pod, some
requiring one leaf); single pods ask for 1, 2, 4 or 8 GPUs or a share of one.
`constrain` turns a snapshot into its node-pool variant (taints, tolerations, selectors).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from scheduler.core import Gang, Node, Pod, Snapshot, Team, TeamUsage
from scheduler.core.constraints import PodConstraints, Requirement, Taint, Toleration
from scheduler.core.podterms import AffinityTerm, PodTerms, Selector, SpreadConstraint

NOW = 1_790_000_000.0
HOSTNAME = "kubernetes.io/hostname"
INFERENCE_SHARE = 0.1  # of the waiting pods, as inference Deployments


def make_nodes(count: int, gpus: int = 8) -> tuple[Node, ...]:
    return tuple(
        Node(
            f"node-{i:05d}",
            gpus,
            cpu_milli=192_000,
            memory_mib=2_048_000,
            gpu_model="H100",
            labels={
                "network.gpufair.io/spine": f"spine-{i // 256}",
                "network.gpufair.io/leaf": f"leaf-{i // 32}",
                "nvidia.com/gpu.clique": f"clique-{i}",
                "kubernetes.io/hostname": f"node-{i:05d}",
            },
        )
        for i in range(count)
    )


def make_teams(count: int, rng: np.random.Generator) -> tuple[Team, ...]:
    return tuple(
        Team(f"team-{t:02d}", weight=float(rng.integers(1, 5)), namespaces=(f"team-{t:02d}",))
        for t in range(count)
    )


def _pending_gangs(pods: int, teams: tuple[Team, ...], rng: np.random.Generator) -> list[Gang]:
    gangs: list[Gang] = []
    made = 0
    g = 0
    while made < pods:
        size = min(int(rng.integers(1, 17)), pods - made)
        team = teams[int(rng.integers(len(teams)))].name
        roll = rng.random()
        priority = 100_000 if roll < 0.05 else (-10 if roll < 0.15 else 0)
        if size == 1:
            choice = rng.random()
            if choice < 0.1:
                shape = {"gpu_milli": int(rng.choice([250, 500]))}
            else:
                shape = {"gpus": int(rng.choice([1, 2, 4, 8], p=[0.4, 0.2, 0.2, 0.2]))}
        else:
            shape = {"gpus": 8}
        required = "network.gpufair.io/leaf" if size > 1 and rng.random() < 0.2 else None
        gid = f"{team}/job-{g:06d}"
        gang_pods = tuple(Pod(f"{gid}-{k}", cpu_milli=8_000, memory_mib=64_000, **shape) for k in range(size))
        gangs.append(
            Gang(
                gid,
                team,
                gang_pods,
                priority=priority,
                submit_s=NOW - float(rng.integers(0, 86_400)),
                topology_required=required,
            )
        )
        made += size
        g += 1
    return gangs


def _running_gangs(
    nodes: tuple[Node, ...], pods: int, teams: tuple[Team, ...], rng: np.random.Generator
) -> list[Gang]:
    """Bound pods: GPU pods filling most GPUs, and CPU-only pods (loaders, services) beside them."""
    gangs: list[Gang] = []
    free = {n.name: n.gpus for n in nodes}
    names = [n.name for n in nodes]
    gpu_pods = min(pods // 5, sum(free.values()))
    made = 0
    g = 0
    cursor = 0
    while made < gpu_pods and cursor < len(names):
        team = teams[int(rng.integers(len(teams)))].name
        gid = f"{team}/run-{g:06d}"
        want = int(rng.choice([1, 2, 4, 8], p=[0.5, 0.2, 0.15, 0.15]))
        node = names[cursor]
        if free[node] < want:
            want = free[node]
        free[node] -= want
        if free[node] == 0:
            cursor += 1
        start = NOW - float(rng.integers(60, 86_400))
        pod = Pod(f"{gid}-0", gpus=want, cpu_milli=4_000, memory_mib=32_000, node=node, start_s=start)
        roll = rng.random()
        priority = 100_000 if roll < 0.1 else (-10 if roll < 0.2 else 0)
        gangs.append(Gang(gid, team, (pod,), priority=priority, submit_s=start - 30))
        made += 1
        g += 1
    cpu_only = pods - made
    for k in range(cpu_only):
        team = teams[k % len(teams)].name
        gid = f"{team}/svc-{k:07d}"
        node = names[k % len(names)]
        pod = Pod(f"{gid}-0", cpu_milli=500, memory_mib=1_024, node=node, start_s=NOW - 3_600)
        gangs.append(Gang(gid, team, (pod,), submit_s=NOW - 3_700))
    return gangs


def make_snapshot(
    nodes: int, pending_pods: int, running_pods: int = 0, teams: int = 20, seed: int = 1
) -> Snapshot:
    rng = np.random.default_rng(seed)
    node_list = make_nodes(nodes)
    team_list = make_teams(teams, rng)
    gangs = _running_gangs(node_list, running_pods, team_list, rng) if running_pods else []
    gangs += _pending_gangs(pending_pods, team_list, rng)
    usage = {t.name: TeamUsage(decayed_gpu_seconds=float(rng.integers(0, 10**8))) for t in team_list}
    return Snapshot(NOW, node_list, team_list, tuple(gangs), usage)


# ---------------------------------------------------------------- the constrained variant

GPU_TAINT = Taint("nvidia.com/gpu", "present", "NoSchedule")
GPU_TOLERATION = Toleration("nvidia.com/gpu", "Exists", "", "NoSchedule")
POOLS = 4  # node pools, one leaf of 32 nodes at a time in turn, so leaf-bound gangs fit in one
POOL_SELECTED = 0.2  # the share of waiting gangs that select a pool


def pool_of(index: int) -> str:
    return f"pool-{(index // 32) % POOLS}"


def constrain(snap: Snapshot, seed: int = 1) -> Snapshot:
    """`snap` as a cluster that reserves its GPU nodes: every GPU node labelled with its pool
    and tainted nvidia.com/gpu=present:NoSchedule, every GPU pod tolerating it, and a fifth
    of the waiting gangs selecting one pool. CPU-only pods keep no toleration (they were
    bound before the taint, as NoSchedule leaves running pods alone)."""
    rng = np.random.default_rng(seed + 1_000)
    nodes = tuple(
        replace(n, labels={**n.labels, "pool": pool_of(i), HOSTNAME: n.name}, taints=(GPU_TAINT,))
        if n.gpus
        else n
        for i, n in enumerate(snap.nodes)
    )
    tolerate = PodConstraints(tolerations=(GPU_TOLERATION,))
    gangs = []
    for g in snap.gangs:
        if not any(p.gpus or p.gpu_milli for p in g.pods):
            gangs.append(g)
            continue
        c = tolerate
        if g.pending_pods and rng.random() < POOL_SELECTED:
            c = replace(tolerate, node_selector=(("pool", f"pool-{int(rng.integers(POOLS))}"),))
        gangs.append(replace(g, constraints=(c,)))
    return replace(snap, nodes=nodes, gangs=with_inference_spread(tuple(gangs)))


def inference_replicas(gangs: tuple[Gang, ...]) -> list[int]:
    """The waiting gangs that become inference Deployments: the first of them until they
    hold INFERENCE_SHARE of the waiting pods."""
    waiting = sum(len(g.pending_pods) for g in gangs)
    out, pods = [], 0
    for i, g in enumerate(gangs):
        if pods >= INFERENCE_SHARE * waiting:
            break
        if g.pending_pods and not g.bound_pods and g.pods[0].gpus:
            out.append(i)
            pods += len(g.pods)
    return out


def with_inference_spread(gangs: tuple[Gang, ...]) -> tuple[Gang, ...]:
    """Case b-constrained's inference replicas: each gang of `inference_replicas` becomes a
    Deployment, its pods single-pod gangs (the same pods, so the same GPUs) labelled with
    the app and keeping required pod anti-affinity on kubernetes.io/hostname against the
    app's pods; every fifth Deployment is also spread (DoNotSchedule, maxSkew 1 over
    network.gpufair.io/leaf)."""
    chosen = set(inference_replicas(gangs))
    out: list[Gang] = []
    for n, g in enumerate(gangs):
        if n not in chosen:
            out.append(g)
            continue
        app = f"inf-{n}"
        namespace = g.id.split("/", 1)[0]
        mine = Selector((Requirement("app", "In", (app,)),))
        spread: tuple[SpreadConstraint, ...] = ()
        if n % 5 == 0:
            spread = (SpreadConstraint(1, "network.gpufair.io/leaf", mine),)
        terms = PodTerms(anti_affinity=(AffinityTerm(HOSTNAME, mine, frozenset({namespace})),), spread=spread)
        for k, pod in enumerate(g.pods):
            replica = replace(pod, labels=(("app", app),), namespace=namespace)
            out.append(
                replace(
                    g,
                    id=f"{g.id}-r{k}",
                    pods=(replica,),
                    min_member=None,
                    topology_required=None,
                    terms=(terms,),
                )
            )
    return tuple(out)
