"""Agent and scheduler through a real Mosquitto (TLS, client certificates, ACL) on loopback."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from scheduler.agent.nvml_reader import NvmlReader
from scheduler.agent.nvml_replay import ReplayApi
from scheduler.agent.publisher import Publisher
from scheduler.agent.runner import run_agent
from scheduler.telemetry.broker import Backoff, BrokerConfig
from scheduler.telemetry.messages import MAX_PAYLOAD_BYTES
from scheduler.telemetry.state import TelemetryState
from scheduler.telemetry.subscriber import TelemetrySubscriber
from tests.fixtures_mqtt import PASSWORD, PASSWORD_USER, SCHEDULER_IDENTITY, Broker, free_port

DATA = Path(__file__).resolve().parent / "data" / "nvml"
FAST = {"base_s": 0.05, "cap_s": 0.4}


def config(broker: Broker, identity: str) -> BrokerConfig:
    cert, key = broker.cert(identity)
    return BrokerConfig(
        "127.0.0.1", broker.port, ca=broker.ca, cert=cert, key=key, keepalive_s=5, timeout_s=3
    )


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def paho_client(broker: Broker, identity: str, received: list | None = None) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"raw-{identity.replace(':', '-')}", protocol=paho.MQTTv5
    )
    cert, key = broker.cert(identity)
    client.tls_set(ca_certs=str(broker.ca), certfile=str(cert), keyfile=str(key))
    if received is not None:
        client.on_message = lambda c, u, m: received.append((m.topic, m.payload))
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def test_a_node_cannot_publish_for_another(mqtt_broker: Broker) -> None:
    received: list[tuple[str, bytes]] = []
    sched = paho_client(mqtt_broker, SCHEDULER_IDENTITY, received)
    subscribed = threading.Event()
    sched.on_subscribe = lambda *a: subscribed.set()
    sched.subscribe("gpufair/nodes/#", qos=1)
    assert subscribed.wait(5)
    acks: dict[int, int] = {}
    done = threading.Event()

    def on_publish(client, userdata, mid, reason_code, properties) -> None:
        acks[mid] = reason_code.value
        if len(acks) == 2:
            done.set()

    node_a = paho_client(mqtt_broker, "gpu-a")
    node_a.on_publish = on_publish
    own = node_a.publish("gpufair/nodes/gpu-a/samples", b"own", qos=1).mid
    spoof = node_a.publish("gpufair/nodes/gpu-b/state", b"spoof", qos=1, retain=True).mid
    assert done.wait(5)
    assert acks[own] == 0
    assert acks[spoof] == 0x87  # MQTT v5 PUBACK reason code: Not authorized
    time.sleep(0.3)
    assert received == [("gpufair/nodes/gpu-a/samples", b"own")]
    for c in (node_a, sched):
        c.loop_stop()
        c.disconnect()

    async def aiomqtt_spoof() -> None:
        # aiomqtt discards the PUBACK reason code: a denied publish "succeeds" for the caller, which
        # is why non-delivery is what the test asserts
        async with config(mqtt_broker, "gpu-a").client("spoofer") as client:
            await client.publish("gpufair/nodes/gpu-b/state", b"spoof-2", qos=1, retain=True)
        async with config(mqtt_broker, SCHEDULER_IDENTITY).client("reader") as client:
            await client.subscribe("gpufair/nodes/gpu-b/#", qos=1)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(anext(aiter(client.messages)), 0.5)

    asyncio.run(aiomqtt_spoof())


def test_no_certificate_no_connection(mqtt_broker: Broker) -> None:
    async def attempt(cfg: BrokerConfig) -> None:
        async with cfg.client("intruder"):
            pass

    with pytest.raises((aiomqtt.MqttError, ssl.SSLError, OSError)):
        asyncio.run(attempt(BrokerConfig("127.0.0.1", mqtt_broker.port, ca=mqtt_broker.ca, timeout_s=3)))

    # a node may not read other nodes' telemetry either: Mosquitto grants the subscription but
    # checks the ACL on delivery, so nothing of gpu-b's arrives at gpu-a
    async def read_others() -> None:
        async with config(mqtt_broker, "gpu-a").client("nosy") as nosy:
            await nosy.subscribe("gpufair/nodes/#", qos=1)
            async with config(mqtt_broker, "gpu-b").client("talker") as talker:
                await talker.publish("gpufair/nodes/gpu-b/samples", b"private", qos=1)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(anext(aiter(nosy.messages)), 0.5)

    asyncio.run(read_others())


def test_username_password_per_node(mqtt_broker: Broker) -> None:
    async def run(password: str) -> None:
        cfg = BrokerConfig(
            "127.0.0.1",
            mqtt_broker.password_port,
            ca=mqtt_broker.ca,
            username=PASSWORD_USER,
            password=password,
            timeout_s=3,
        )
        async with cfg.client("pw-node") as client:
            await client.publish(f"gpufair/nodes/{PASSWORD_USER}/samples", b"x", qos=1)

    asyncio.run(run(PASSWORD))
    with pytest.raises(aiomqtt.MqttError):
        asyncio.run(run("wrong"))


def _agent(broker: Broker, node: str, machine: str, max_samples: int = 360):
    reader = NvmlReader(ReplayApi(DATA / f"{machine}.json"))
    publisher = Publisher(node, config(broker, node), max_samples=max_samples, backoff=Backoff(**FAST))
    return reader, publisher


def test_end_to_end_bad_messages_and_broker_restart(mqtt_broker: Broker) -> None:
    async def scenario() -> None:
        state = TelemetryState(stale_after_s=5)
        sub = TelemetrySubscriber(state, config(mqtt_broker, SCHEDULER_IDENTITY), backoff=Backoff(**FAST))
        sub.start()
        await until(sub.connected.is_set, what="subscriber")
        stop = asyncio.Event()
        reader, publisher = _agent(mqtt_broker, "gpu-a", "gb200_nvl72_tray")
        agent = asyncio.create_task(run_agent(reader, publisher, 0.1, stop))
        await until(
            lambda: state.state("gpu-a") is not None and state.last_sample("gpu-a") is not None,
            what="first telemetry",
        )
        assert state.state("gpu-a").topology.clique == "9c6f5af3-53bf-49b5-a436-b66766c413c3.4026"

        # gpu-b (allowed on its own topic) sends garbage: dropped and counted; gpu-a keeps flowing
        async with config(mqtt_broker, "gpu-b").client("bad-node") as bad:
            await bad.publish("gpufair/nodes/gpu-b/state", b"{broken", qos=1)
            await bad.publish("gpufair/nodes/gpu-b/samples", b"[" * (MAX_PAYLOAD_BYTES + 10), qos=1)
            await bad.publish(
                "gpufair/nodes/gpu-b/samples",
                json.dumps(
                    {"v": 1, "node": "gpu-a", "seq": 1, "ts": 1.0, "util": [1] * 4, "mem_mib": [1] * 4}
                ).encode(),
                qos=1,
            )
        await until(lambda: sum(state.dropped.values()) == 3, what="drops")
        assert state.dropped == {"bad_json": 1, "oversized": 1, "node_mismatch": 1}
        assert "gpu-b" not in state.nodes()
        before = state.accepted["samples"]
        await until(lambda: state.accepted["samples"] > before + 2, what="good samples after the bad ones")

        # the broker restarts (no persistence: retained state is gone); both sides come back
        states_before = state.accepted["state"]
        await asyncio.to_thread(mqtt_broker.restart, 0.3)
        await until(lambda: sub.connects >= 2 and publisher.connects >= 2, what="reconnects")
        await until(lambda: state.accepted["state"] > states_before, what="state republished")
        samples_after = state.accepted["samples"]
        await until(lambda: state.accepted["samples"] > samples_after + 2, what="samples after restart")
        # a scheduler that starts only now still gets the retained state (the agent re-retained it)
        late_state = TelemetryState()
        late = TelemetrySubscriber(late_state, config(mqtt_broker, SCHEDULER_IDENTITY), identifier="late")
        late.start()
        await until(
            lambda: late_state.state("gpu-a") is not None, what="retained state for a late subscriber"
        )
        await late.stop()

        stop.set()
        await agent
        await sub.stop()
        assert state.stale_nodes(time.time() + 6) == ["gpu-a"]

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_memory_bound_while_broker_away(mqtt_broker: Broker) -> None:
    async def scenario() -> None:
        state = TelemetryState()
        sub = TelemetrySubscriber(state, config(mqtt_broker, SCHEDULER_IDENTITY), backoff=Backoff(**FAST))
        sub.start()
        await until(sub.connected.is_set, what="subscriber")
        stop = asyncio.Event()
        reader, publisher = _agent(mqtt_broker, "gpu-a", "l40s_pcie_4x", max_samples=50)
        reader.open()
        task = asyncio.create_task(publisher.run(stop))
        await until(publisher.connected.is_set, what="publisher")
        mqtt_broker.stop()
        from scheduler.agent.payloads import sample_message

        for seq in range(1, 1001):
            publisher.add_sample(sample_message("gpu-a", seq, time.time(), reader.sample()))
            if seq % 100 == 0:
                await asyncio.sleep(0.01)
        await until(lambda: not publisher.connected.is_set(), what="publisher to notice the broker is gone")
        # samples are not queued for a subscriber that is not there yet: the scheduler must come back
        # first, so the agent is pointed at a dead port until then
        real = publisher.broker
        publisher.broker = BrokerConfig("127.0.0.1", free_port(), ca=real.ca, cert=real.cert, key=real.key)
        assert publisher.buffered == 50 and publisher.dropped_samples == 950
        seen: list[int] = []
        original = state.apply

        def spy(topic: str, payload, now: float) -> bool:
            if topic.endswith("/samples"):
                seen.append(json.loads(payload)["seq"])
            return original(topic, payload, now)

        state.apply = spy  # type: ignore[method-assign]
        await asyncio.to_thread(mqtt_broker.start)
        await until(sub.connected.is_set, what="subscriber back")
        assert publisher.buffered == 50 and publisher.connects == 1
        publisher.broker = real
        await until(lambda: len(seen) >= 50, timeout=20, what="buffered samples after the broker returns")
        assert seen[:50] == list(range(951, 1001))  # the newest 50, in order, none twice
        assert publisher.buffered == 0
        stop.set()
        await task
        await sub.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_production_config_runs(mqtt_broker: Broker, tmp_path: Path) -> None:
    """deploy/mosquitto/mosquitto.conf, with its paths moved into a temp dir, starts and enforces the ACL."""
    import shutil

    from tests.fixtures_mqtt import free_port

    root = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto"
    (tmp_path / "certs").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "config").mkdir()
    shutil.copy(mqtt_broker.ca, tmp_path / "certs" / "ca.crt")
    shutil.copy(mqtt_broker.directory / "server.crt", tmp_path / "certs" / "tls.crt")
    shutil.copy(mqtt_broker.directory / "server.key", tmp_path / "certs" / "tls.key")
    shutil.copy(root / "acl", tmp_path / "config" / "acl")
    port = free_port()
    conf = (root / "mosquitto.conf").read_text().replace("/mosquitto/", f"{tmp_path}/")
    conf = conf.replace("listener 8883", f"listener {port} 127.0.0.1").replace(
        "log_dest stdout", "log_dest stderr"
    )
    conf += f"\nuser {__import__('getpass').getuser()}\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen(
        [mqtt_broker.binary, "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        prod = Broker(tmp_path, port, port, mqtt_broker.ca, mqtt_broker.certs, mqtt_broker.binary)
        received: list = []
        deadline = time.monotonic() + 10
        while True:
            try:
                sched = paho_client(prod, SCHEDULER_IDENTITY, received)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, (
                    proc.stderr.read() if proc.stderr else ""
                )
                time.sleep(0.1)
        subscribed = threading.Event()
        sched.on_subscribe = lambda *a: subscribed.set()
        sched.subscribe("gpufair/nodes/#", qos=1)
        assert subscribed.wait(5)
        node = paho_client(prod, "gpu-b")
        node.publish("gpufair/nodes/gpu-a/state", b"spoof", qos=1).wait_for_publish(5)
        node.publish("gpufair/nodes/gpu-b/state", b"mine", qos=1).wait_for_publish(5)
        time.sleep(0.3)
        assert received == [("gpufair/nodes/gpu-b/state", b"mine")]
        for c in (node, sched):
            c.loop_stop()
            c.disconnect()
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_agent_command_publishes(mqtt_broker: Broker) -> None:
    """`gpufair agent` as a process: replayed NVML in, state and samples out, clean exit on SIGTERM."""
    import signal
    import sys

    cert, key = mqtt_broker.cert("gpu-a")
    cmd = [
        sys.executable,
        "-m",
        "scheduler.cli",
        "agent",
        "--node",
        "gpu-a",
        "--broker",
        f"127.0.0.1:{mqtt_broker.port}",
        "--tls-ca",
        str(mqtt_broker.ca),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--interval",
        "0.2s",
        "--nvml-replay",
        str(DATA / "a100_sxm4_8x.json"),
    ]

    async def scenario() -> None:
        state = TelemetryState()
        sub = TelemetrySubscriber(state, config(mqtt_broker, SCHEDULER_IDENTITY), backoff=Backoff(**FAST))
        sub.start()
        await until(sub.connected.is_set, what="subscriber")
        proc = subprocess.Popen(
            cmd, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            await until(lambda: state.accepted["samples"] >= 3, timeout=20, what="samples from the command")
        finally:
            proc.send_signal(signal.SIGTERM)
            out = await asyncio.to_thread(proc.communicate, timeout=10)
        assert proc.returncode == 0, out[0].decode()[-2000:]
        assert len(state.state("gpu-a").gpus) == 8 and state.unhealthy_gpus("gpu-a") == frozenset()
        await sub.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    bad = subprocess.run([*cmd[:6], "--broker", "nowhere:99999"], capture_output=True, text=True)
    assert bad.returncode == 2 and "is not HOST:PORT" in bad.stderr, bad.stderr
