"""The agent's loop: read the GPUs, publish state on change and a sample every interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from scheduler.agent.labels import node_labels
from scheduler.agent.nvml_reader import NvmlReader
from scheduler.agent.payloads import sample_message, state_message
from scheduler.agent.publisher import Publisher

log = logging.getLogger("gpufair.agent")


async def run_agent(
    reader: NvmlReader,
    publisher: Publisher,
    interval_s: float,
    stop: asyncio.Event,
    clock: Callable[[], float] = time.time,
    label_node: Callable[[dict[str, str]], None] | None = None,
) -> None:
    """Until `stop`: every `interval_s` a sample; the state whenever health changes."""
    reader.open()
    inventory = reader.inventory()
    for note in inventory.notes:
        log.warning("node %s: %s", publisher.node, note)
    if label_node is not None:
        try:
            await asyncio.to_thread(label_node, node_labels(inventory))
        except Exception as exc:  # labelling is best effort; telemetry goes on
            log.error("node %s: could not patch node labels: %s", publisher.node, exc)
    seq = 0
    last_health = None
    task = asyncio.create_task(publisher.run(stop))
    try:
        while not stop.is_set():
            health = reader.health(inventory)
            if health != last_health:
                seq += 1
                publisher.set_state(state_message(publisher.node, seq, clock(), inventory, health))
                last_health = health
            seq += 1
            publisher.add_sample(
                sample_message(publisher.node, seq, clock(), reader.sample(), publisher.dropped_samples)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        stop.set()
        await task
        reader.close()
