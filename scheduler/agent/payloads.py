"""Builds the state and sample messages from a reading, validated by the same schema the scheduler
uses (scheduler.telemetry.messages), so the agent cannot send what the scheduler would drop."""

from __future__ import annotations

import json

from scheduler.agent.labels import node_labels
from scheduler.agent.nvml_reader import GpuHealth, Inventory, Sample
from scheduler.telemetry.messages import MAX_PAYLOAD_BYTES, VERSION, SampleMessage, StateMessage


def _compact(message: StateMessage | SampleMessage) -> bytes:
    data = json.dumps(message.model_dump(mode="json"), separators=(",", ":")).encode()
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"{type(message).__name__} is {len(data)} bytes, over {MAX_PAYLOAD_BYTES}")
    return data


def state_message(
    node: str, seq: int, ts: float, inventory: Inventory, health: tuple[GpuHealth, ...]
) -> bytes:
    fabric = inventory.fabric
    gpus = []
    for g in inventory.gpus:
        h = health[g.index]
        gpus.append(
            {
                "index": g.index,
                "uuid": g.uuid,
                "pci_bus_id": g.pci_bus_id,
                "model": (g.name or "")[:96],
                "memory_mib": g.memory_total_mib,
                "domain": inventory.domain_of(g.index),
                "healthy": h.healthy,
                "reasons": [r[:200] for r in h.reasons[:16]],
                "xids": list(h.xids[-32:]),
                "ecc_uncorrected": h.ecc_uncorrected,
                "retired_pages": h.retired_pages,
                "remapped_pending": h.remapped_pending,
                "remapped_failure": h.remapped_failure,
                "unavailable": sorted(g.unavailable)[:64],
            }
        )
    message = StateMessage.model_validate(
        {
            "v": VERSION,
            "node": node,
            "seq": seq,
            "ts": float(ts),
            "driver": inventory.driver,
            "model": inventory.model[:96],
            "gpus": gpus,
            "topology": {
                "domains": [list(d) for d in inventory.domains],
                "nvswitch": inventory.nvswitch,
                "pcie": [list(row) for row in inventory.pcie],
                "fabric": None
                if fabric is None
                else {
                    "cluster_uuid": fabric.cluster_uuid,
                    "clique_id": fabric.clique_id,
                    "state": fabric.state,
                },
                "clique": inventory.clique,
            },
            "labels": node_labels(inventory),
            "notes": list(inventory.notes[:16]),
        }
    )
    return _compact(message)


def sample_message(node: str, seq: int, ts: float, sample: Sample, dropped: int = 0) -> bytes:
    message = SampleMessage.model_validate(
        {
            "v": VERSION,
            "node": node,
            "seq": seq,
            "ts": float(ts),
            "util": [None if u is None else max(0, min(100, u)) for u in sample.util],
            "mem_mib": list(sample.mem_mib),
            "dropped": dropped,
        }
    )
    return _compact(message)
