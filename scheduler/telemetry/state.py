"""What the scheduler knows from node telemetry. Pure: the clock is passed in, nothing is read here.

Feed it with `apply(topic, payload, now)` (the subscriber does, the tests do directly). A bad
message is dropped, counted by reason in `dropped`, and logged once with the node, topic and the
problem; every other node's telemetry goes on untouched. The daemon asks:

- `unhealthy_gpus(node)`: GPU indices to put in `Node.unhealthy_gpus`;
- `stale_nodes(now)`: nodes whose telemetry stopped (stale is not unhealthy: their GPUs stay
  schedulable on what Kubernetes says; the daemon decides what to do with a stale node);
- `disagreements(nodes)`: readable lines where telemetry and the Node objects differ;
- `idle_allocated_gpus(now, allocations)`: GPUs held by pods yet idle, by team.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.core.model import Node
from scheduler.telemetry.messages import STATE, Rejected, SampleMessage, StateMessage, parse

log = logging.getLogger("gpufair.telemetry")
CLIQUE = "nvidia.com/gpu.clique"


@dataclass
class _NodeTelemetry:
    state: StateMessage | None = None
    state_at: float | None = None
    last_seen: float = 0.0
    samples: deque[tuple[float, tuple[int | None, ...], tuple[int | None, ...]]] = field(
        default_factory=deque
    )
    agent_dropped: int = 0


def _norm_model(text: str) -> str:
    return "-".join(text.lower().replace("_", " ").replace("-", " ").split())


class TelemetryState:
    """Per node: the last state message and a window of samples. Thread-safe (one lock)."""

    def __init__(
        self, stale_after_s: float = 60.0, sample_window_s: float = 3600.0, max_samples: int = 720
    ) -> None:
        self.stale_after_s = stale_after_s
        self.sample_window_s = sample_window_s
        self.max_samples = max_samples
        self.dropped: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self._nodes: dict[str, _NodeTelemetry] = {}
        self._lock = threading.Lock()

    # -- intake -----------------------------------------------------------------------------------
    def apply(self, topic: str, payload: bytes | bytearray | str, now: float) -> bool:
        """Take one message; False (and counted, logged) when it is dropped."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        try:
            kind, message = parse(topic, data)
            with self._lock:
                self._take(kind, message, now)
        except Rejected as exc:
            node = topic.split("/")[2] if topic.count("/") >= 3 else "?"
            self.dropped[exc.reason] += 1
            log.warning("telemetry dropped: node %s, topic %s: %s", node, topic, exc)
            return False
        self.accepted[kind] += 1
        return True

    def _take(self, kind: str, message: StateMessage | SampleMessage, now: float) -> None:
        entry = self._nodes.setdefault(message.node, _NodeTelemetry(samples=deque(maxlen=self.max_samples)))
        if kind == STATE:
            assert isinstance(message, StateMessage)
            if entry.state is not None and message.seq < entry.state.seq and message.ts <= entry.state.ts:
                raise Rejected("out_of_order", f"state seq {message.seq} is older than seq {entry.state.seq}")
            entry.state, entry.state_at = message, now
        else:
            assert isinstance(message, SampleMessage)
            if entry.state is not None and len(message.util) != len(entry.state.gpus):
                raise Rejected(
                    "inconsistent",
                    f"sample has {len(message.util)} GPUs, the node's state has {len(entry.state.gpus)}",
                )
            at = min(message.ts, now)  # the agent's time of reading, never in the future
            entry.samples.append((at, tuple(message.util), tuple(message.mem_mib)))
            entry.agent_dropped = message.dropped
        entry.last_seen = now

    def forget(self, node: str) -> None:
        with self._lock:
            self._nodes.pop(node, None)

    # -- questions ----------------------------------------------------------------------------------
    def nodes(self) -> list[str]:
        with self._lock:
            return sorted(self._nodes)

    def state(self, node: str) -> StateMessage | None:
        with self._lock:
            entry = self._nodes.get(node)
            return entry.state if entry else None

    def last_sample(self, node: str) -> tuple[float, tuple[int | None, ...], tuple[int | None, ...]] | None:
        with self._lock:
            entry = self._nodes.get(node)
            return entry.samples[-1] if entry and entry.samples else None

    def unhealthy_gpus(self, node: str) -> frozenset[int]:
        """GPU indices the node's agent reports unhealthy (empty when it never reported)."""
        with self._lock:
            entry = self._nodes.get(node)
            return entry.state.unhealthy if entry and entry.state else frozenset()

    def stale_nodes(self, now: float) -> list[str]:
        """Nodes heard from before but not within `stale_after_s`."""
        with self._lock:
            return sorted(n for n, e in self._nodes.items() if now - e.last_seen > self.stale_after_s)

    def disagreements(self, nodes: Iterable[Node]) -> list[str]:
        """Where telemetry and the Node objects differ: GPU count, model, NVLink clique, unknown nodes."""
        lines: list[str] = []
        with self._lock:
            known = set()
            for node in nodes:
                known.add(node.name)
                entry = self._nodes.get(node.name)
                if entry is None or entry.state is None:
                    continue
                st = entry.state
                if len(st.gpus) != node.gpus:
                    lines.append(
                        f"node {node.name}: the agent sees {len(st.gpus)} GPUs, "
                        f"the node's nvidia.com/gpu capacity is {node.gpus}"
                    )
                a, b = _norm_model(node.gpu_model), _norm_model(st.model)
                if a and b and a not in b and b not in a:
                    lines.append(
                        f"node {node.name}: the agent sees GPU model {st.model!r}, "
                        f"the node says {node.gpu_model!r}"
                    )
                label = node.labels.get(CLIQUE)
                if st.topology.clique and label != st.topology.clique:
                    lines.append(
                        f"node {node.name}: the agent sees NVLink clique {st.topology.clique}, "
                        f"the node's {CLIQUE} label is {label or 'missing'}"
                    )
            for name in sorted(set(self._nodes) - known):
                lines.append(f"node {name}: telemetry arrives for a node the cluster does not list")
        return lines

    def idle_allocated_gpus(
        self,
        now: float,
        allocations: Mapping[tuple[str, int], str],
        window_s: float = 600.0,
        idle_below_pct: int = 5,
        min_samples: int = 3,
    ) -> dict[str, list[tuple[str, int]]]:
        """Allocated GPUs whose utilisation stayed under `idle_below_pct` in every sample of the last
        `window_s` (at least `min_samples` of them), by team. `allocations` maps (node, GPU index)
        to the team whose pod holds it. Nodes without recent samples are not judged."""
        out: dict[str, list[tuple[str, int]]] = {}
        with self._lock:
            for (node, gpu), team in sorted(allocations.items()):
                entry = self._nodes.get(node)
                if entry is None:
                    continue
                recent = [s for s in entry.samples if now - window_s <= s[0] <= now]
                if len(recent) < min_samples:
                    continue
                values = [s[1][gpu] if gpu < len(s[1]) else None for s in recent]
                if all(v is not None and v < idle_below_pct for v in values):
                    out.setdefault(team, []).append((node, gpu))
        return out
