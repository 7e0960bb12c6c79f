#!/usr/bin/env python3
"""Record this machine's NVML answers for the gpufair agent's tests (needs only the repo and pynvml).

    python scripts/record_nvml.py --out tests/data/nvml/<machine>.json [--samples 3]

It runs the agent's own NVML reader once through a recorder, so the file holds exactly the calls
the reader makes (and the NVML error for each one this GPU does not support), then prints a short
summary. GPU UUIDs are replaced by placeholders unless --keep-uuids is given. `--replay FILE`
records from a recording instead of the real library (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.agent.labels import node_labels
from scheduler.agent.nvml_reader import NvmlReader
from scheduler.agent.nvml_replay import RecordingApi, ReplayApi


def _scrub(calls: dict) -> None:
    for k, (key, answer) in enumerate(sorted(calls.get("nvmlDeviceGetUUID", {}).items())):
        if "value" in answer:
            calls["nvmlDeviceGetUUID"][key] = {"value": f"GPU-{k:08d}-0000-0000-0000-{k:012d}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the recording (JSON)")
    parser.add_argument("--samples", type=int, default=3, help="utilisation samples to record, 1 s apart")
    parser.add_argument(
        "--machine", default="", help="a description for the file (default: GPU model and host)"
    )
    parser.add_argument("--keep-uuids", action="store_true", help="keep the real GPU UUIDs")
    parser.add_argument("--replay", type=Path, help="record from this recording instead of the real NVML")
    args = parser.parse_args(argv)

    if args.replay:
        inner = ReplayApi(args.replay)
        source = f"re-recorded from {args.replay.name}"
    else:
        import pynvml

        from scheduler.agent.nvml_api import PynvmlApi

        inner = PynvmlApi()
        source = (
            f"recorded by scripts/record_nvml.py with nvidia-ml-py on {platform.node()} "
            f"at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        )
        del pynvml
    api = RecordingApi(inner)
    reader = NvmlReader(api)
    try:
        reader.open()
    except Exception as exc:  # pynvml.NVMLError: no driver, no GPU, no permission
        print(
            f"record_nvml: NVML could not start: {exc}; run this on a GPU machine with the driver loaded",
            file=sys.stderr,
        )
        return 1
    inventory = reader.inventory()
    health = reader.health(inventory)
    samples = []
    for k in range(max(1, args.samples)):
        if k and not args.replay:
            time.sleep(1)
        samples.append(reader.sample())
    reader.health(inventory)  # a second poll records the event queue as drained
    reader.close()

    machine = args.machine or f"{len(inventory.gpus)}x {inventory.model or 'unknown GPU'}"
    doc = api.document(machine, source)
    if not args.keep_uuids:
        _scrub(doc["calls"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")

    calls = sum(len(v) for v in doc["calls"].values())
    print(f"{machine}: {len(inventory.gpus)} GPU(s) {inventory.model}, driver {inventory.driver}")
    print(
        f"  NVLink domains {[list(d) for d in inventory.domains]}, NVSwitch {inventory.nvswitch}, "
        f"clique {inventory.clique or '-'}"
    )
    print(f"  labels {node_labels(inventory)}")
    healthy = sum(h.healthy for h in health)
    print(f"  health: {healthy}/{len(health)} healthy; last sample util {samples[-1].util}")
    unsupported = sorted({k for g in inventory.gpus for k in g.unavailable} | set(reader.unavailable))
    print(f"  not supported here: {', '.join(unsupported) or 'nothing'}")
    print(f"  wrote {calls} recorded call(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
