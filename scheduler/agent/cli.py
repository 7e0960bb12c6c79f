"""`gpufair agent`: the node agent (NVML reader, node labels, MQTT telemetry)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from scheduler.core.durations import parse_duration
from scheduler.core.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME", ""),
        help="this node's name (default: $NODE_NAME, set it from spec.nodeName)",
    )
    parser.add_argument("--broker", help="MQTT broker HOST:PORT (TLS)")
    parser.add_argument("--tls-ca", type=Path, help="CA bundle that signed the broker's certificate")
    parser.add_argument("--tls-cert", type=Path, help="this node's client certificate (CN = node name)")
    parser.add_argument("--tls-key", type=Path, help="the client certificate's key")
    parser.add_argument("--username", help="username instead of a client certificate (the node name)")
    parser.add_argument("--password-file", type=Path, help="file holding the password for --username")
    parser.add_argument("--interval", default="10s", help="sample interval (default 10s)")
    parser.add_argument(
        "--max-buffered",
        type=int,
        default=360,
        help="samples kept while the broker is away; older ones are dropped (default 360)",
    )
    parser.add_argument(
        "--label-node",
        action="store_true",
        help="patch this node's labels (gpu.clique, gpu-model, nvlink-domain-size)",
    )
    parser.add_argument("--nvml-replay", type=Path, help="answer NVML from a recording (no GPU needed)")
    parser.add_argument("--once", action="store_true", help="print the state message and labels, then exit")


_NO_DRIVER = "is the NVIDIA driver mounted into the pod? (--nvml-replay FILE runs without a GPU)"


def run(args: argparse.Namespace) -> int:
    import pynvml

    from scheduler.agent.labels import node_labels, patch_own_node
    from scheduler.agent.nvml_api import NvmlApi
    from scheduler.agent.nvml_reader import NvmlReader
    from scheduler.agent.payloads import state_message
    from scheduler.agent.publisher import Publisher
    from scheduler.agent.runner import run_agent
    from scheduler.telemetry.broker import BrokerConfig
    from scheduler.telemetry.messages import NODE_NAME

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if not args.node or not NODE_NAME.match(args.node):
            raise InvalidInput(
                "agent", "--node", f"{args.node!r} is not a node name", "pass --node or set NODE_NAME"
            )
        interval = parse_duration(args.interval, "agent", "--interval")
        if interval <= 0:
            raise InvalidInput("agent", "--interval", "must be above 0", "use e.g. 10s")
        api: NvmlApi  # a recording or the driver
        if args.nvml_replay:
            from scheduler.agent.nvml_replay import ReplayApi

            api = ReplayApi(args.nvml_replay)
        else:
            from scheduler.agent.nvml_api import PynvmlApi

            api = PynvmlApi()
        reader = NvmlReader(api)
        if args.once:
            reader.open()
            inventory = reader.inventory()
            state = json.loads(state_message(args.node, 1, 0.0, inventory, reader.health(inventory)))
            print(json.dumps({"labels": node_labels(inventory), "state": state}, indent=1))
            reader.close()
            return 0
        if not args.broker:
            raise InvalidInput("agent", "--broker", "no broker address", "pass --broker HOST:PORT")
        password = args.password_file.read_text().strip() if args.password_file else None
        broker = BrokerConfig.parse(
            args.broker,
            ca=args.tls_ca,
            cert=args.tls_cert,
            key=args.tls_key,
            username=args.username,
            password=password,
        )
        broker.tls_context()  # refuse bad TLS settings now, not in the reconnect loop
    except pynvml.NVMLError as exc:
        print(f"gpufair agent: NVML: {exc}; {_NO_DRIVER}", file=sys.stderr)
        return 1
    except (InvalidInput, ValueError, OSError) as exc:
        print(f"gpufair agent: {exc}", file=sys.stderr)
        return 2
    publisher = Publisher(args.node, broker, max_samples=args.max_buffered)
    label = (lambda labels: patch_own_node(args.node, labels)) if args.label_node else None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_agent(reader, publisher, interval, stop, label_node=label)

    try:
        asyncio.run(main())
    except pynvml.NVMLError as exc:
        print(f"gpufair agent: NVML: {exc}; {_NO_DRIVER}", file=sys.stderr)
        return 1
    return 0
