"""The two telemetry messages, their topics and their strict validation.

    gpufair/nodes/<node>/state    retained, QoS 1: inventory, topology, health (on change)
    gpufair/nodes/<node>/samples  QoS 1: utilisation and memory in use per GPU (every interval)

Both are compact JSON objects with `v` (schema version), `node`, `seq` and `ts`. The topic is the
identity: the broker lets a node write only under its own name, and `parse` refuses a payload
whose `node` differs from the topic's. Anything malformed raises `Rejected` with a reason code
(for the drop counter) and a sentence (for the one log line).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_GPUS = 64
TOPIC_PREFIX = "gpufair/nodes"
STATE, SAMPLES = "state", "samples"
#: a Kubernetes node name (DNS-1123 subdomain)
NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

Text = Annotated[str, Field(max_length=200)]
Index = Annotated[int, Field(ge=0, lt=MAX_GPUS)]
Level = Literal["X", "PIX", "PXB", "PHB", "NODE", "SYS", "?"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GpuState(_Strict):
    index: Index
    uuid: Annotated[str, Field(max_length=64)] | None
    pci_bus_id: Annotated[str, Field(max_length=32)] | None
    model: Annotated[str, Field(max_length=96)]
    memory_mib: Annotated[int, Field(ge=0, le=1 << 24)] | None
    domain: Index
    healthy: bool
    reasons: Annotated[list[Text], Field(max_length=16)]
    xids: Annotated[list[Annotated[int, Field(ge=0, le=1 << 16)]], Field(max_length=32)]
    ecc_uncorrected: Annotated[int, Field(ge=0)] | None
    retired_pages: Annotated[int, Field(ge=0)] | None
    remapped_pending: bool | None
    remapped_failure: bool | None
    unavailable: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=64)]


class FabricState(_Strict):
    cluster_uuid: Annotated[str, Field(pattern=UUID)]
    clique_id: Annotated[int, Field(ge=0, le=0xFFFFFFFF)]
    state: Annotated[str, Field(max_length=32)]


class Topology(_Strict):
    domains: Annotated[
        list[Annotated[list[Index], Field(min_length=1, max_length=MAX_GPUS)]], Field(max_length=MAX_GPUS)
    ]
    nvswitch: bool
    pcie: Annotated[list[Annotated[list[Level], Field(max_length=MAX_GPUS)]], Field(max_length=MAX_GPUS)]
    fabric: FabricState | None
    clique: Annotated[str, Field(max_length=63)] | None


class StateMessage(_Strict):
    v: Literal[1]
    node: Annotated[str, Field(min_length=1, max_length=253)]
    seq: Annotated[int, Field(ge=0)]
    ts: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    driver: Annotated[str, Field(max_length=32)] | None
    model: Annotated[str, Field(max_length=96)]
    gpus: Annotated[list[GpuState], Field(max_length=MAX_GPUS)]
    topology: Topology
    labels: Annotated[
        dict[Annotated[str, Field(max_length=253)], Annotated[str, Field(max_length=63)]],
        Field(max_length=16),
    ]
    notes: Annotated[list[Text], Field(max_length=16)] = []

    @model_validator(mode="after")
    def _consistent(self) -> StateMessage:
        n = len(self.gpus)
        if [g.index for g in self.gpus] != list(range(n)):
            raise ValueError(f"gpus must be listed by index 0..{n - 1}")
        flat = sorted(i for d in self.topology.domains for i in d)
        if flat != list(range(n)):
            raise ValueError("topology.domains must hold every GPU index exactly once")
        if len(self.topology.pcie) != n or any(len(row) != n for row in self.topology.pcie):
            raise ValueError(f"topology.pcie must be a {n}x{n} matrix")
        domains = self.topology.domains
        for g in self.gpus:
            if g.domain >= len(domains) or g.index not in domains[g.domain]:
                raise ValueError(f"gpus[{g.index}].domain does not name the topology domain holding it")
        return self

    @property
    def unhealthy(self) -> frozenset[int]:
        return frozenset(g.index for g in self.gpus if not g.healthy)


class SampleMessage(_Strict):
    v: Literal[1]
    node: Annotated[str, Field(min_length=1, max_length=253)]
    seq: Annotated[int, Field(ge=0)]
    ts: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    util: Annotated[list[Annotated[int, Field(ge=0, le=100)] | None], Field(max_length=MAX_GPUS)]
    mem_mib: Annotated[list[Annotated[int, Field(ge=0, le=1 << 24)] | None], Field(max_length=MAX_GPUS)]
    dropped: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _same_length(self) -> SampleMessage:
        if len(self.util) != len(self.mem_mib):
            raise ValueError(f"util has {len(self.util)} entries but mem_mib has {len(self.mem_mib)}")
        return self


class Rejected(ValueError):
    """A message that is dropped: `reason` is the counter label, `detail` the readable part."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def topic(node: str, kind: str) -> str:
    return f"{TOPIC_PREFIX}/{node}/{kind}"


def split_topic(name: str) -> tuple[str, str]:
    """('gpu-1', 'state') from 'gpufair/nodes/gpu-1/state'; Rejected for anything else."""
    parts = name.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_PREFIX or parts[3] not in (STATE, SAMPLES):
        raise Rejected("bad_topic", f"topic {name!r} is not {TOPIC_PREFIX}/<node>/state|samples")
    if len(parts[2]) > 253 or not NODE_NAME.match(parts[2]):
        raise Rejected("bad_topic", f"topic {name!r} does not name a Kubernetes node")
    return parts[2], parts[3]


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse(topic_name: str, payload: bytes) -> tuple[str, StateMessage | SampleMessage]:
    """Validate one message: its topic, size, JSON and schema, and that it speaks for its topic's node."""
    node, kind = split_topic(topic_name)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected("oversized", f"{len(payload)} bytes, over the {MAX_PAYLOAD_BYTES} byte limit")
    model = StateMessage if kind == STATE else SampleMessage
    try:
        message = model.model_validate_json(payload)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise Rejected("bad_json", "payload is not JSON") from None
        raise Rejected("schema", _describe(exc)) from None
    if message.node != node:
        raise Rejected("node_mismatch", f"payload says node {message.node!r} on the topic of node {node!r}")
    return kind, message
