"""The scheduler's side of MQTT: subscribe to every node's state and samples, feed TelemetryState,
reconnect with backoff (and resubscribe; the broker then replays the retained states)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiomqtt

from scheduler.telemetry.broker import Backoff, BrokerConfig
from scheduler.telemetry.messages import SAMPLES, STATE, TOPIC_PREFIX
from scheduler.telemetry.state import TelemetryState

log = logging.getLogger("gpufair.telemetry")


class TelemetrySubscriber:
    """`start()` in a running event loop, `await stop()` to end. `connected` is set while subscribed."""

    def __init__(
        self,
        state: TelemetryState,
        broker: BrokerConfig,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        identifier: str = "gpufair-scheduler",
    ) -> None:
        self.state = state
        self.broker = broker
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.identifier = identifier
        self.connected = asyncio.Event()
        self.connects = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._stop.clear()
            self._task = asyncio.create_task(self.run(), name="gpufair-telemetry")
        return self._task

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.connected.clear()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                async with self.broker.client(self.identifier) as client:
                    await client.subscribe(f"{TOPIC_PREFIX}/+/{STATE}", qos=1)
                    await client.subscribe(f"{TOPIC_PREFIX}/+/{SAMPLES}", qos=1)
                    self.connects += 1
                    self.backoff.reset()
                    self.connected.set()
                    log.info("telemetry subscribed at %s:%d", self.broker.host, self.broker.port)
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray | str):
                            payload = b"" if payload is None else str(payload)
                        self.state.apply(str(message.topic), payload, self.clock())
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                delay = self.backoff.next()
                log.warning(
                    "telemetry broker %s:%d lost (%s); retry in %.1fs",
                    self.broker.host,
                    self.broker.port,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
