"""Benchmark: how fast gpufair binds pods on a real API server, against kube-scheduler.

One control plane (etcd, kube-apiserver, kube-controller-manager, KWOK) with `--nodes`
fake GPU nodes of 8 GPUs. For each case the pods are created first, with no scheduler
running; then the scheduler starts and the clock runs until every pod is bound:
- single: `--pods` single-GPU pods;
- gangs: `--gangs` gangs of 8 one-GPU pods (gpufair binds each gang whole; kube-scheduler
  has no gangs and places the same pods one by one).
Both schedulers run as separate processes with the same client rate limit (kube-scheduler's
default, 50 QPS with bursts of 100). Reported: seconds from scheduler start to the last
bind, pods per second, and gpufair's rate over kube-scheduler's. Prints a table and writes
JSON.

    python benchmarks/bind_throughput.py [--nodes 1000] [--pods 5000] [--gangs 500] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.daemon.kube import Kube, api_client_from  # noqa: E402
from scheduler.devcluster import DevCluster, find_binaries  # noqa: E402
from simulator.cluster_spec import nodes_for_gpus  # noqa: E402

QPS, BURST = 50, 100


def _pod(ns: str, name: str, scheduler: str, labels: dict, annotations: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
        "spec": {
            "schedulerName": scheduler,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/job:1",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "100m"}},
                }
            ],
        },
    }


def create_pods(kube: Kube, ns: str, scheduler: str, pods: int, gang_size: int) -> None:
    def one(i: int) -> None:
        labels, annotations = {}, {}
        if gang_size > 1:
            labels = {"gpufair.io/gang": f"g{i // gang_size}"}
            annotations = {"gpufair.io/gang-size": str(gang_size)}
        kube.request(
            "POST",
            f"/api/v1/namespaces/{ns}/pods",
            body=_pod(ns, f"p{i:05d}", scheduler, labels, annotations),
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(pods)))


def bound_count(kube: Kube, ns: str) -> int:
    items = kube.list(f"/api/v1/namespaces/{ns}/pods")[0]
    return sum(1 for p in items if p["spec"].get("nodeName"))


def start_scheduler(which: str, cluster: DevCluster, log: Path) -> subprocess.Popen:
    out = log.open("ab")
    if which == "gpufair":
        argv = [
            sys.executable,
            "-m",
            "scheduler.cli",
            "run",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--no-leader-elect",
            "--listen",
            "127.0.0.1:0",
            "--qps",
            str(QPS),
            "--burst",
            str(BURST),
            "--log-format",
            "text",
            "--log-level",
            "INFO",
        ]
    else:
        argv = [
            str(find_binaries().kube_scheduler),
            f"--kubeconfig={cluster.kubeconfig}",
            "--secure-port=0",
            "--leader-elect=false",
            "-v=1",
        ]
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def run_case(
    cluster: DevCluster,
    kube: Kube,
    which: str,
    case: str,
    pods: int,
    gang_size: int,
    log: Path,
    timeout_s: float,
) -> dict:
    ns = f"bench-{which}-{case}"
    kube.request(
        "POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    if which == "gpufair":
        kube.request(
            "POST",
            "/apis/gpufair.io/v1alpha1/gputeams",
            body={
                "apiVersion": "gpufair.io/v1alpha1",
                "kind": "GPUTeam",
                "metadata": {"name": ns},
                "spec": {"weight": 1, "namespaces": [ns]},
            },
        )
    scheduler = "gpufair" if which == "gpufair" else "default-scheduler"
    t0 = time.perf_counter()
    create_pods(kube, ns, scheduler, pods, gang_size)
    created_s = time.perf_counter() - t0
    proc = start_scheduler(which, cluster, log)
    started = time.perf_counter()
    done = 0
    try:
        while time.perf_counter() - started < timeout_s:
            done = bound_count(kube, ns)
            print(
                f"\r  {which:<15} {case:<7} {done:>6}/{pods} bound  {time.perf_counter() - started:6.1f}s",
                end="",
                flush=True,
            )
            if done >= pods:
                break
            time.sleep(0.5)
    finally:
        elapsed = time.perf_counter() - started
        proc.terminate()
        proc.wait(timeout=30)
        print()
    kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods", query={"gracePeriodSeconds": 0})
    return {
        "scheduler": which,
        "case": case,
        "pods": pods,
        "gang_size": gang_size,
        "bound": done,
        "seconds": round(elapsed, 2),
        "pods_per_second": round(done / elapsed, 1),
        "create_seconds": round(created_s, 1),
        "complete": done >= pods,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--gangs", type=int, default=500)
    ap.add_argument("--cases", default="single,gangs", help="which cases to run (single, gangs)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per case before giving up")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Path(tempfile.mkdtemp(prefix="gpufair-bench-")) / "schedulers.log"
    with DevCluster() as cluster:
        print(f"control plane up; creating {args.nodes} fake nodes of 8 GPUs ...", flush=True)
        cluster.create_nodes(nodes_for_gpus(args.nodes * 8), timeout_s=600)
        kube = Kube(api_client_from(str(cluster.kubeconfig)), qps=0)
        from tests.daemon_support import install_crds_and_priorities

        install_crds_and_priorities(kube)
        results = []
        chosen = set(args.cases.split(","))
        for case, pods, gang in (("single", args.pods, 1), ("gangs", args.gangs * 8, 8)):
            if case not in chosen:
                continue
            for which in ("kube-scheduler", "gpufair"):
                results.append(run_case(cluster, kube, which, case, pods, gang, log, args.timeout))
    print(f"\n{'case':<8}{'scheduler':<16}{'pods':>7}{'seconds':>9}{'pods/s':>9}")
    ratios = {}
    for r in results:
        print(
            f"{r['case']:<8}{r['scheduler']:<16}{r['bound']:>7}{r['seconds']:>9.1f}{r['pods_per_second']:>9.1f}"
            + ("" if r["complete"] else "  (timed out)")
        )
    for case in sorted({r["case"] for r in results}):
        by = {r["scheduler"]: r for r in results if r["case"] == case}
        ratios[case] = round(
            by["gpufair"]["pods_per_second"] / max(by["kube-scheduler"]["pods_per_second"], 1e-9), 2
        )
        print(f"{case}: gpufair / kube-scheduler = x{ratios[case]:.2f}")
    payload = {
        "nodes": args.nodes,
        "qps": QPS,
        "burst": BURST,
        "results": results,
        "ratio": ratios,
        "note": "kube-scheduler has no gangs: in 'gangs' it binds the same pods one by one",
    }
    (out / "bind_throughput.json").write_text(json.dumps(payload, indent=2))
    print(f"wrote {out / 'bind_throughput.json'}; scheduler logs in {log}")


if __name__ == "__main__":
    main()
