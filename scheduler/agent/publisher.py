"""Publishes one node's telemetry, surviving broker loss with bounded memory.

While the broker is away the publisher keeps only the latest state message and a deque of at most
`max_samples` samples (the oldest are dropped and counted). On every (re)connect it republishes the
state, retained, so a broker that lost its retained store learns it again, then flushes the samples
in order. A sample leaves the deque only after the broker acknowledged it (QoS 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import aiomqtt

from scheduler.telemetry.broker import Backoff, BrokerConfig
from scheduler.telemetry.messages import SAMPLES, STATE, topic

log = logging.getLogger("gpufair.agent")


class Publisher:
    def __init__(
        self, node: str, broker: BrokerConfig, max_samples: int = 360, backoff: Backoff | None = None
    ) -> None:
        if max_samples < 1:
            raise ValueError("max_samples must be at least 1")
        self.node = node
        self.broker = broker
        self.backoff = backoff or Backoff()
        self._state: bytes | None = None
        self._state_sent = False
        self._samples: deque[bytes] = deque(maxlen=max_samples)
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()
        self.dropped_samples = 0
        self.published_states = 0
        self.published_samples = 0
        self.connects = 0

    @property
    def buffered(self) -> int:
        return len(self._samples)

    def set_state(self, payload: bytes) -> None:
        """Replace the state to publish (only the latest matters)."""
        self._state = payload
        self._state_sent = False
        self._wake.set()

    def add_sample(self, payload: bytes) -> None:
        if len(self._samples) == self._samples.maxlen:
            self.dropped_samples += 1  # deque(maxlen) drops the oldest on append
        self._samples.append(payload)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, publish, reconnect with backoff, until `stop` is set."""
        while not stop.is_set():
            try:
                async with self.broker.client(f"gpufair-agent-{self.node}") as client:
                    self.connects += 1
                    self.backoff.reset()
                    self._state_sent = False
                    self.connected.set()
                    log.info("agent %s connected to %s:%d", self.node, self.broker.host, self.broker.port)
                    await self._drain(client, stop)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                delay = self.backoff.next()
                log.warning(
                    "agent %s: broker %s:%d unavailable (%s); retry in %.1fs, %d sample(s) buffered",
                    self.node,
                    self.broker.host,
                    self.broker.port,
                    exc,
                    delay,
                    len(self._samples),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        self.connected.clear()

    async def _drain(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            if self._state is not None and not self._state_sent:
                payload = self._state
                await client.publish(topic(self.node, STATE), payload, qos=1, retain=True)
                self._state_sent = payload is self._state
                self.published_states += 1
            while self._samples:
                payload = self._samples[0]
                await client.publish(topic(self.node, SAMPLES), payload, qos=1)
                if self._samples and self._samples[0] is payload:
                    self._samples.popleft()
                self.published_samples += 1
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
