"""Benchmark: how fast gpufair binds pods on a real API server, against kube-scheduler.

One control plane (etcd, kube-apiserver, kube-controller-manager, KWOK) with `--nodes`
fake GPU nodes of 8 GPUs. Two cases, the clock running until every pod is bound:
- single: `--pods` single-GPU pods;
- gangs: `--gangs` gangs of 8 one-GPU pods (gpufair binds each gang whole; kube-scheduler
  has no gangs and places the same pods one by one).
Each case runs twice: `cold`, the pods exist before the scheduler starts (the clock starts
with its process: a fail-over onto a backlog), and `warm`, the scheduler runs and has bound
a first pod before the pods are created (the clock starts with the first creation: a
running scheduler meeting a burst). Each case waits for the previous one's pods to be gone.
Both schedulers run as separate processes with the same client rate limit (kube-scheduler's
default, 50 QPS with bursts of 100). The benchmark watches the pods itself and reports,
from the clock's start: the first and the last bind it saw, pods per second, and
gpufair's rate over kube-scheduler's. Prints a table and writes JSON.

    python benchmarks/bind_throughput.py [--nodes 1000] [--pods 5000] [--gangs 500] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.daemon.kube import Kube, KubeError, api_client_from  # noqa: E402
from scheduler.devcluster import DevCluster, find_binaries  # noqa: E402
from simulator.cluster_spec import nodes_for_gpus  # noqa: E402


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


class BindClock:
    """Watches the namespace's pods and notes when each is first seen bound, so the figures
    come from the API server's own stream rather than from polling (which would round every
    case up to the next poll)."""

    def __init__(self, kube: Kube, ns: str) -> None:
        self.kube = kube
        self.path = f"/api/v1/namespaces/{ns}/pods"
        self.bound_at: dict[str, float] = {}
        self.t0 = time.perf_counter()
        items, self.rv = kube.list(self.path)
        self._seen(items)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _seen(self, pods: list[dict]) -> None:
        now = time.perf_counter() - self.t0
        for pod in pods:
            if pod["spec"].get("nodeName"):
                self.bound_at.setdefault(pod["metadata"]["name"], now)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self.kube.watch(self.path, self.rv, timeout_s=60):
                    obj = event["object"]
                    self.rv = obj["metadata"].get("resourceVersion", self.rv)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._seen([obj])
                    if self._stop.is_set():
                        return
            except KubeError:
                items, self.rv = self.kube.list(self.path)
                self._seen(items)

    def start_clock(self) -> None:
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self._stop.set()


def start_scheduler(
    which: str, cluster: DevCluster, log: Path, qps: int = 50, burst: int = 100
) -> subprocess.Popen:
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
            str(qps),
            "--burst",
            str(burst),
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
            f"--kube-api-qps={qps}",
            f"--kube-api-burst={burst}",
            "-v=1",
        ]
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def run_case(
    cluster: DevCluster,
    kube: Kube,
    which: str,
    case: str,
    mode: str,
    limit: tuple[int, int],
    pods: int,
    gang_size: int,
    log: Path,
    timeout_s: float,
) -> dict:
    """One scheduler on one case. `cold`: the pods exist before the scheduler starts, and the
    clock starts with its process. `warm`: the scheduler runs and has bound a first pod, and
    the clock starts as the pods start to be created (a running scheduler meeting a burst)."""
    qps, burst = limit
    ns = f"bench-{which}-{case}-{mode}-{qps}"
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
    proc = None
    created_s = 0.0
    try:
        if mode == "cold":
            t0 = time.perf_counter()
            create_pods(kube, ns, scheduler, pods, gang_size)
            created_s = time.perf_counter() - t0
            clock = BindClock(kube, ns)
            clock.start_clock()
            proc = start_scheduler(which, cluster, log, qps, burst)
        else:
            proc = start_scheduler(which, cluster, log, qps, burst)
            warm_up(kube, ns, scheduler, timeout_s)
            clock = BindClock(kube, ns)
            clock.start_clock()
            create_pods(kube, ns, scheduler, pods, gang_size)
            created_s = time.perf_counter() - clock.t0
        while time.perf_counter() - clock.t0 < timeout_s and len(clock.bound_at) < pods:
            print(
                f"\r  {which:<15} {case:<7} {mode:<5} {len(clock.bound_at):>6}/{pods} bound"
                f"  {time.perf_counter() - clock.t0:6.1f}s",
                end="",
                flush=True,
            )
            time.sleep(0.5)
        clock.stop()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        print()
    delete_all(kube, ns)
    times = sorted(clock.bound_at.values())
    done = len(times)
    last = times[-1] if times else float("nan")
    return {
        "scheduler": which,
        "case": case,
        "mode": mode,
        "qps": qps,
        "burst": burst,
        "pods": pods,
        "gang_size": gang_size,
        "bound": done,
        "seconds": round(last, 2),  # clock start to the last bind seen on the watch
        "first_bind_seconds": round(times[0], 2) if times else None,
        "pods_per_second": round(done / last, 2) if times else 0.0,
        "create_seconds": round(created_s, 1),
        "complete": done >= pods,
    }


def warm_up(kube: Kube, ns: str, scheduler: str, timeout_s: float) -> None:
    """Creates one pod and waits for its bind: the scheduler has synced and works."""
    kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=_pod(ns, "warm-up", scheduler, {}, {}))
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        pod = kube.request("GET", f"/api/v1/namespaces/{ns}/pods/warm-up")
        if pod["spec"].get("nodeName"):
            delete_all(kube, ns)
            time.sleep(2.0)  # the client's token bucket refills, as it would between bursts
            return
        time.sleep(0.1)
    raise TimeoutError(f"{scheduler} did not bind a first pod in {timeout_s:.0f}s")


def delete_all(kube: Kube, ns: str) -> None:
    """Deletes the case's pods and waits until they are gone, so the next case starts on a
    quiet API server (a deletion of thousands of pods keeps it busy for a while)."""
    kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods", query={"gracePeriodSeconds": 0})
    while kube.list(f"/api/v1/namespaces/{ns}/pods")[0]:
        time.sleep(1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--gangs", type=int, default=500)
    ap.add_argument("--cases", default="single,gangs", help="which cases to run (single, gangs)")
    ap.add_argument("--modes", default="cold,warm", help="cold: pods before the scheduler; warm: after it")
    ap.add_argument("--schedulers", default="kube-scheduler,gpufair", help="which schedulers to run")
    ap.add_argument(
        "--limits",
        default="50/100,1000/2000",
        help="client QPS/burst pairs, the same for both schedulers (50/100: kube-scheduler's default;"
        " a high limit shows what each scheduler does when the limiter is not what binds)",
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per case before giving up")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    limits = [tuple(int(x) for x in pair.split("/")) for pair in args.limits.split(",")]
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
            for limit in limits:
                for mode in args.modes.split(","):
                    for which in args.schedulers.split(","):
                        results.append(
                            run_case(cluster, kube, which, case, mode, limit, pods, gang, log, args.timeout)
                        )
    head = (
        f"{'case':<8}{'mode':<6}{'qps':>6} {'scheduler':<16}{'pods':>7}{'first bind':>11}"
        f"{'last bind':>10}{'pods/s':>9}"
    )
    print("\n" + head)
    ratios = {}
    for r in results:
        print(
            f"{r['case']:<8}{r['mode']:<6}{r['qps']:>6} {r['scheduler']:<16}{r['bound']:>7}"
            f"{r['first_bind_seconds'] or 0:>10.2f}s"
            f"{r['seconds']:>9.2f}s{r['pods_per_second']:>9.2f}" + ("" if r["complete"] else "  (timed out)")
        )
    for key in sorted({(r["case"], r["mode"], r["qps"]) for r in results}):
        by = {r["scheduler"]: r for r in results if (r["case"], r["mode"], r["qps"]) == key}
        if len(by) < 2:
            continue
        ratio = by["gpufair"]["pods_per_second"] / max(by["kube-scheduler"]["pods_per_second"], 1e-9)
        ratios[f"{key[0]}/{key[1]}/qps{key[2]}"] = round(ratio, 3)
        print(f"{key[0]} ({key[1]}, {key[2]} QPS): gpufair / kube-scheduler = x{ratio:.3f}")
    payload = {
        "nodes": args.nodes,
        "results": results,
        "ratio": ratios,
        "note": "kube-scheduler has no gangs: in 'gangs' it binds the same pods one by one",
    }
    (out / "bind_throughput.json").write_text(json.dumps(payload, indent=2))
    print(f"wrote {out / 'bind_throughput.json'}; scheduler logs in {log}")


if __name__ == "__main__":
    main()
