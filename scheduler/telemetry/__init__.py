"""The scheduler's view of node telemetry: message schema, MQTT subscriber, TelemetryState."""

from scheduler.telemetry.broker import Backoff, BrokerConfig
from scheduler.telemetry.state import TelemetryState
from scheduler.telemetry.subscriber import TelemetrySubscriber

__all__ = ["Backoff", "BrokerConfig", "TelemetryState", "TelemetrySubscriber"]
