"""How both sides reach the broker: address, TLS with a client certificate or a username and
password, reconnect backoff. Shared by the agent's publisher and the scheduler's subscriber."""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

import aiomqtt

from scheduler.core.errors import InvalidInput


class BrokerOptions(TypedDict, total=False):
    """The BrokerConfig fields besides the address, as keywords of `BrokerConfig.parse`."""

    ca: Path | None
    cert: Path | None
    key: Path | None
    username: str | None
    password: str | None
    keepalive_s: int
    timeout_s: float


@dataclass(frozen=True)
class BrokerConfig:
    host: str
    port: int = 8883
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    timeout_s: float = 10.0

    @classmethod
    def parse(cls, address: str, **kwargs: Unpack[BrokerOptions]) -> BrokerConfig:
        """'host:port' (port 8883 when left out); names the fix when the address is bad."""
        host, sep, port = address.rpartition(":")
        if not sep:
            host, port = address, "8883"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInput(
                "broker", "--broker", f"{address!r} is not HOST:PORT", "give e.g. mqtt.gpufair:8883"
            )
        return cls(host=host, port=int(port), **kwargs)

    def tls_context(self) -> ssl.SSLContext | None:
        """Verifies the broker against `ca` (hostname included); presents `cert`/`key` when given."""
        if self.ca is None:
            if self.cert or self.key:
                raise InvalidInput("broker", "--tls-ca", "a client certificate without a CA", "pass --tls-ca")
            return None
        for name, path in (("--tls-ca", self.ca), ("--tls-cert", self.cert), ("--tls-key", self.key)):
            if path is not None and not Path(path).is_file():
                raise InvalidInput("broker", name, f"{path} is not a readable file", "mount the secret there")
        context = ssl.create_default_context(cafile=str(self.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None:
            if self.key is None:
                raise InvalidInput("broker", "--tls-key", "a certificate without its key", "pass --tls-key")
            context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def client(self, identifier: str) -> aiomqtt.Client:
        """A fresh MQTT v5 client (aiomqtt clients are reusable but not re-entrant; one per attempt)."""
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            username=self.username,
            password=self.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=self.tls_context(),
            keepalive=self.keepalive_s,
            timeout=self.timeout_s,
        )


class Backoff:
    """Exponential backoff with jitter, capped: the n-th delay is drawn from [c/2, c], c = min(cap, base*2^n),
    so a fleet of agents does not reconnect in lock-step after a broker restart."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
