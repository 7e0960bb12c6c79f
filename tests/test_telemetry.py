"""TelemetryState and the message schema, fed directly (no broker): the clock is passed in."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from scheduler.agent.nvml_reader import NvmlReader
from scheduler.agent.nvml_replay import ReplayApi
from scheduler.agent.payloads import sample_message, state_message
from scheduler.core.errors import InvalidInput
from scheduler.core.model import Node
from scheduler.telemetry.broker import Backoff, BrokerConfig
from scheduler.telemetry.messages import MAX_GPUS, MAX_PAYLOAD_BYTES
from scheduler.telemetry.state import TelemetryState

DATA = Path(__file__).resolve().parent / "data" / "nvml"
T0 = 1_800_000_000.0


def reading(machine: str, unhealthy: dict[int, str] | None = None):
    api = ReplayApi(DATA / f"{machine}.json")
    for gpu in unhealthy or {}:
        api.override("nvmlDeviceGetRemappedRows", (gpu,), {"value": [0, 1, 1, 0]})
    reader = NvmlReader(api)
    reader.open()
    inv = reader.inventory()
    return reader, inv


def state_bytes(node: str, machine: str = "h100_sxm_8x", seq: int = 1, ts: float = T0, bad=None) -> bytes:
    reader, inv = reading(machine, bad)
    return state_message(node, seq, ts, inv, reader.health(inv))


def samples_bytes(node: str, util: list[int | None], seq: int, ts: float) -> bytes:
    return json.dumps(
        {"v": 1, "node": node, "seq": seq, "ts": ts, "util": util, "mem_mib": [100] * len(util), "dropped": 0}
    ).encode()


def topic(node: str, kind: str) -> str:
    return f"gpufair/nodes/{node}/{kind}"


def test_state_gives_unhealthy_gpus() -> None:
    st = TelemetryState()
    assert st.apply(topic("gpu-1", "state"), state_bytes("gpu-1", bad={2: "", 5: ""}), T0)
    assert st.unhealthy_gpus("gpu-1") == frozenset({2, 5})
    assert st.unhealthy_gpus("never-heard") == frozenset()
    # the daemon puts them into Node.unhealthy_gpus; the core model accepts them
    node = Node("gpu-1", gpus=8, cpu_milli=1, memory_mib=1, unhealthy_gpus=st.unhealthy_gpus("gpu-1"))
    assert node.healthy_gpus == 6
    # a later healthy state clears them
    assert st.apply(topic("gpu-1", "state"), state_bytes("gpu-1", seq=3, ts=T0 + 5), T0 + 5)
    assert st.unhealthy_gpus("gpu-1") == frozenset()
    assert st.accepted["state"] == 2 and not st.dropped


def test_stale_nodes_by_the_clock_passed_in() -> None:
    st = TelemetryState(stale_after_s=30)
    st.apply(topic("gpu-1", "state"), state_bytes("gpu-1"), T0)
    st.apply(topic("gpu-2", "state"), state_bytes("gpu-2"), T0)
    st.apply(topic("gpu-2", "samples"), samples_bytes("gpu-2", [1] * 8, 2, T0 + 25), T0 + 25)
    assert st.stale_nodes(T0 + 30) == []
    assert st.stale_nodes(T0 + 31) == ["gpu-1"]
    assert st.stale_nodes(T0 + 56) == ["gpu-1", "gpu-2"]
    # stale is not unhealthy: the last reported health stands
    assert st.unhealthy_gpus("gpu-1") == frozenset()


def test_disagreements_are_readable_lines() -> None:
    st = TelemetryState()
    st.apply(topic("gpu-1", "state"), state_bytes("gpu-1"), T0)
    st.apply(topic("rack-1", "state"), state_bytes("rack-1", "gb200_nvl72_tray"), T0)
    st.apply(topic("ghost", "state"), state_bytes("ghost", "l40s_pcie_4x"), T0)
    nodes = [
        Node("gpu-1", gpus=4, cpu_milli=1, memory_mib=1, gpu_model="A100"),
        Node(
            "rack-1",
            gpus=4,
            cpu_milli=1,
            memory_mib=1,
            gpu_model="NVIDIA-GB200",
            labels={"nvidia.com/gpu.clique": "clique-rack-1"},
        ),
        Node("gpu-9", gpus=8, cpu_milli=1, memory_mib=1, gpu_model="H100"),
    ]
    lines = st.disagreements(nodes)
    assert lines == [
        "node gpu-1: the agent sees 8 GPUs, the node's nvidia.com/gpu capacity is 4",
        "node gpu-1: the agent sees GPU model 'NVIDIA H100 80GB HBM3', the node says 'A100'",
        "node rack-1: the agent sees NVLink clique 9c6f5af3-53bf-49b5-a436-b66766c413c3.4026, "
        "the node's nvidia.com/gpu.clique label is clique-rack-1",
        "node ghost: telemetry arrives for a node the cluster does not list",
    ]
    agreeing = [Node("gpu-1", gpus=8, cpu_milli=1, memory_mib=1, gpu_model="H100")]
    st.forget("rack-1")
    st.forget("ghost")
    assert st.disagreements(agreeing) == []


def test_idle_allocated_gpus_by_team() -> None:
    st = TelemetryState()
    st.apply(topic("gpu-1", "state"), state_bytes("gpu-1"), T0)
    for k in range(6):  # GPU 2 and 3 idle throughout, GPU 1 busy, GPU 0 idle only lately
        util = [0 if k >= 3 else 90, 80, 0, 1, 0, 0, 0, 0]
        st.apply(topic("gpu-1", "samples"), samples_bytes("gpu-1", util, 2 + k, T0 + 60 * k), T0 + 60 * k)
    alloc = {
        ("gpu-1", 0): "vision",
        ("gpu-1", 1): "vision",
        ("gpu-1", 2): "nlp",
        ("gpu-1", 3): "vision",
        ("gpu-9", 0): "nlp",
    }
    now = T0 + 300
    assert st.idle_allocated_gpus(now, alloc, window_s=600) == {
        "nlp": [("gpu-1", 2)],
        "vision": [("gpu-1", 3)],
    }
    assert st.idle_allocated_gpus(now, alloc, window_s=150) == {
        "nlp": [("gpu-1", 2)],
        "vision": [("gpu-1", 0), ("gpu-1", 3)],
    }
    # too few samples in the window: not judged
    assert st.idle_allocated_gpus(now, alloc, window_s=90) == {}


@pytest.mark.parametrize(
    ("topic_name", "payload", "reason"),
    [
        ("gpufair/nodes/gpu-2/state", b"{not json", "bad_json"),
        ("gpufair/nodes/gpu-2/samples", b'{"v": 1}', "schema"),
        ("gpufair/nodes/gpu-2/samples", b"x" * (MAX_PAYLOAD_BYTES + 1), "oversized"),
        (
            "gpufair/nodes/gpu-2/samples",
            json.dumps({"v": 1, "node": "gpu-2", "seq": 1, "ts": T0, "util": [101], "mem_mib": [1]}).encode(),
            "schema",
        ),
        (
            "gpufair/nodes/gpu-2/samples",
            json.dumps(
                {
                    "v": 1,
                    "node": "gpu-2",
                    "seq": 1,
                    "ts": T0,
                    "util": [1] * (MAX_GPUS + 1),
                    "mem_mib": [1] * (MAX_GPUS + 1),
                }
            ).encode(),
            "schema",
        ),
        (
            "gpufair/nodes/gpu-2/samples",
            json.dumps({"v": 2, "node": "gpu-2", "seq": 1, "ts": T0, "util": [], "mem_mib": []}).encode(),
            "schema",
        ),
        (
            "gpufair/nodes/gpu-2/samples",
            json.dumps(
                {"v": 1, "node": "gpu-2", "seq": 1, "ts": T0, "util": [1], "mem_mib": [1], "extra": 1}
            ).encode(),
            "schema",
        ),
        ("gpufair/nodes/gpu-2/state", samples_bytes("gpu-1", [1], 1, T0), "schema"),
        ("gpufair/nodes/gpu-2/samples", samples_bytes("gpu-1", [1], 1, T0), "node_mismatch"),
        ("gpufair/nodes/Not_A_Node/samples", samples_bytes("gpu-1", [1], 1, T0), "bad_topic"),
        ("gpufair/nodes/gpu-2/other", b"{}", "bad_topic"),
    ],
)
def test_bad_messages_are_dropped_with_a_reason(topic_name, payload, reason, caplog) -> None:
    st = TelemetryState()
    st.apply(topic("gpu-1", "state"), state_bytes("gpu-1"), T0)
    with caplog.at_level(logging.WARNING, logger="gpufair.telemetry"):
        assert not st.apply(topic_name, payload, T0 + 1)
    assert st.dropped == {reason: 1}
    assert len(caplog.records) == 1 and topic_name in caplog.records[0].getMessage()
    # nothing else disturbed
    assert st.nodes() == ["gpu-1"] and st.state("gpu-1") is not None
    assert st.apply(topic("gpu-1", "samples"), samples_bytes("gpu-1", [5] * 8, 2, T0 + 2), T0 + 2)


def test_state_consistency_rules() -> None:
    good = json.loads(state_bytes("gpu-1", "l40s_pcie_4x"))
    st = TelemetryState()
    broken = json.loads(json.dumps(good))
    broken["topology"]["domains"] = [[0, 1], [1, 2, 3]]
    assert not st.apply(topic("gpu-1", "state"), json.dumps(broken).encode(), T0)
    broken = json.loads(json.dumps(good))
    broken["gpus"][2]["index"] = 7
    assert not st.apply(topic("gpu-1", "state"), json.dumps(broken).encode(), T0)
    assert st.dropped == {"schema": 2}
    assert st.apply(topic("gpu-1", "state"), json.dumps(good).encode(), T0)
    # a sample whose GPU count contradicts the node's state is refused
    assert not st.apply(topic("gpu-1", "samples"), samples_bytes("gpu-1", [1] * 8, 2, T0), T0)
    # an older state (lower seq and time) does not overwrite a newer one
    newer = dict(good, seq=10, ts=T0 + 10)
    assert st.apply(topic("gpu-1", "state"), json.dumps(newer).encode(), T0 + 10)
    assert not st.apply(topic("gpu-1", "state"), json.dumps(good).encode(), T0 + 11)
    assert st.dropped == {"schema": 2, "inconsistent": 1, "out_of_order": 1}


def test_samples_memory_is_bounded() -> None:
    st = TelemetryState(max_samples=10)
    for k in range(100):
        st.apply(topic("gpu-1", "samples"), samples_bytes("gpu-1", [k % 100], k, T0 + k), T0 + k)
    assert st.last_sample("gpu-1")[1] == (99,)
    assert len(st._nodes["gpu-1"].samples) == 10


def test_backoff_grows_with_jitter_and_caps() -> None:
    b = Backoff(base_s=1, cap_s=8, rng=random.Random(7))
    delays = [b.next() for _ in range(8)]
    for k, d in enumerate(delays):
        ceiling = min(8, 2**k)
        assert ceiling / 2 <= d <= ceiling
    assert len(set(delays)) == len(delays)  # jitter
    b.reset()
    assert b.next() <= 1


def test_broker_config_errors() -> None:
    assert BrokerConfig.parse("mqtt.gpufair:8883").port == 8883
    assert BrokerConfig.parse("mqtt.gpufair").port == 8883
    with pytest.raises(InvalidInput, match="not HOST:PORT"):
        BrokerConfig.parse("mqtt:99999")
    with pytest.raises(InvalidInput, match="--tls-ca"):
        BrokerConfig("h", cert=Path("c")).tls_context()
    with pytest.raises(InvalidInput, match="not a readable file"):
        BrokerConfig("h", ca=Path("/nonexistent/ca.crt")).tls_context()


def test_sample_message_from_reader_is_accepted() -> None:
    reader, inv = reading("a100_sxm4_8x")
    st = TelemetryState()
    st.apply(topic("gpu-3", "state"), state_message("gpu-3", 1, T0, inv, reader.health(inv)), T0)
    assert st.apply(topic("gpu-3", "samples"), sample_message("gpu-3", 2, T0 + 1, reader.sample()), T0 + 1)
    assert st.last_sample("gpu-3")[1] == (50,) * 8
