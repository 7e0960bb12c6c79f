"""The NVML reader, labels and payloads on the four recorded machines (tests/data/nvml)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from scheduler.agent.labels import CLIQUE, DOMAIN_SIZE, GPU_MODEL, label_patch, label_value, node_labels
from scheduler.agent.nvml_api import error_name, fabric_dict, fabric_uuid, nvml_error
from scheduler.agent.nvml_reader import NvmlReader, normalize_bus_id
from scheduler.agent.nvml_replay import RecordingApi, ReplayApi, UnrecordedCall, load_recording
from scheduler.agent.payloads import sample_message, state_message
from scheduler.core.errors import InvalidInput
from scheduler.telemetry.messages import MAX_PAYLOAD_BYTES, parse

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "nvml"
GB200_CLIQUE = "9c6f5af3-53bf-49b5-a436-b66766c413c3.4026"

# machine -> (GPUs, model, domains, nvswitch, clique, labels)
EXPECTED = {
    "h100_sxm_8x": (
        8,
        "NVIDIA H100 80GB HBM3",
        [list(range(8))],
        True,
        None,
        {DOMAIN_SIZE: "8", GPU_MODEL: "NVIDIA-H100-80GB-HBM3"},
    ),
    "a100_sxm4_8x": (
        8,
        "NVIDIA A100-SXM4-40GB",
        [list(range(8))],
        True,
        None,
        {DOMAIN_SIZE: "8", GPU_MODEL: "NVIDIA-A100-SXM4-40GB"},
    ),
    "l40s_pcie_4x": (
        4,
        "NVIDIA L40S",
        [[0], [1], [2], [3]],
        False,
        None,
        {DOMAIN_SIZE: "1", GPU_MODEL: "NVIDIA-L40S"},
    ),
    "gb200_nvl72_tray": (
        4,
        "NVIDIA GB200",
        [[0, 1, 2, 3]],
        True,
        GB200_CLIQUE,
        {DOMAIN_SIZE: "4", GPU_MODEL: "NVIDIA-GB200", CLIQUE: GB200_CLIQUE},
    ),
}


def reader_for(machine: str) -> tuple[NvmlReader, ReplayApi]:
    api = ReplayApi(DATA / f"{machine}.json")
    reader = NvmlReader(api)
    reader.open()
    return reader, api


@pytest.mark.parametrize("machine", sorted(EXPECTED))
def test_reader_inventory_and_labels(machine: str) -> None:
    gpus, model, domains, nvswitch, clique, labels = EXPECTED[machine]
    reader, _ = reader_for(machine)
    inv = reader.inventory()
    assert len(inv.gpus) == gpus
    assert inv.model == model
    assert [list(d) for d in inv.domains] == domains
    assert inv.nvswitch is nvswitch
    assert inv.clique == clique
    assert node_labels(inv) == labels
    assert all(g.uuid and g.uuid.startswith("GPU-") for g in inv.gpus)
    assert len({g.pci_bus_id for g in inv.gpus}) == gpus  # every GPU has its own bus id
    assert all(len(row) == gpus for row in inv.pcie) and all(inv.pcie[i][i] == "X" for i in range(gpus))
    health = reader.health(inv)
    assert all(h.healthy for h in health), health
    # Ampere and later report no retired pages (NVML: not supported); the reader carries on
    assert all(h.retired_pages is None and h.remapped_pending is False for h in health)
    _, message = parse(f"gpufair/nodes/node-{gpus}/state", state_message(f"node-{gpus}", 1, 1.0, inv, health))
    assert message.labels == labels and len(message.gpus) == gpus


def test_h100_fabric_without_cluster_gets_no_clique() -> None:
    """HGX H100 answers the fabric query (state completed) with an all-zero cluster UUID: not attached,
    as GPU feature discovery decides, so no clique label."""
    reader, _ = reader_for("h100_sxm_8x")
    inv = reader.inventory()
    assert all(g.fabric is not None and not g.fabric.attached for g in inv.gpus)
    assert inv.clique is None and inv.fabric is None
    links = inv.gpus[0].nvlinks
    assert len(links) == 18 and {link.remote for link in links} == {"switch"}
    assert len({link.remote_bus_id for link in links}) == 4  # four NVSwitches


def test_unsupported_calls_are_per_field() -> None:
    reader, _ = reader_for("l40s_pcie_4x")
    inv = reader.inventory()
    gpu = inv.gpus[0]
    assert gpu.unavailable == {"fabric": "NVML_ERROR_NOT_SUPPORTED", "nvlink": "NVML_ERROR_NOT_SUPPORTED"}
    assert gpu.nvlinks == () and gpu.fabric is None and gpu.memory_total_mib == 46068
    assert inv.pcie[0] == ("X", "PIX", "SYS", "SYS")
    gb, _ = reader_for("gb200_nvl72_tray")
    ginv = gb.inventory()
    # remote PCI info is not available for links into the NVLink switch trays; the type still says switch
    assert ginv.gpus[0].unavailable == {"nvlink.remote_pci": "NVML_ERROR_NOT_SUPPORTED"}
    assert {link.remote for link in ginv.gpus[0].nvlinks} == {"switch"}


def test_p2p_answers_split_and_fallbacks() -> None:
    api = ReplayApi(DATA / "h100_sxm_8x.json")
    for i in range(4):  # the two halves of the board cannot reach each other over NVLink
        for j in range(4, 8):
            api.override(
                "nvmlDeviceGetP2PStatus",
                (i, j, pynvml.NVML_P2P_CAPS_INDEX_NVLINK),
                {"value": pynvml.NVML_P2P_STATUS_NOT_SUPPORTED},
            )
    reader = NvmlReader(api)
    reader.open()
    assert [list(d) for d in reader.inventory().domains] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # no P2P answer at all: GPUs reaching the same NVSwitch form one domain
    api2 = ReplayApi(DATA / "h100_sxm_8x.json")
    for i in range(8):
        for j in range(i + 1, 8):
            api2.override("nvmlDeviceGetP2PStatus", (i, j, 2), {"error": "NVML_ERROR_NOT_SUPPORTED"})
    reader2 = NvmlReader(api2)
    reader2.open()
    inv2 = reader2.inventory()
    assert [list(d) for d in inv2.domains] == [list(range(8))] and inv2.domain_size == 8
    assert "p2p0,1" in reader2.unavailable


def test_direct_nvlink_pairs() -> None:
    """A board whose links end at other GPUs (NVLink bridges): domains from the remote bus ids."""
    api = ReplayApi(DATA / "l40s_pcie_4x.json")
    bus = ["00000000:30:00.0", "00000000:31:00.0", "00000000:B0:00.0", "00000000:B1:00.0"]
    peer = {0: 1, 1: 0, 2: 3, 3: 2}
    for i in range(4):
        for link in range(4):
            api.override("nvmlDeviceGetNvLinkState", (i, link), {"value": 1})
            api.override("nvmlDeviceGetNvLinkRemotePciInfo", (i, link), {"value": bus[peer[i]].lower()})
            api.override("nvmlDeviceGetNvLinkRemoteDeviceType", (i, link), {"value": 0})
        api.override("nvmlDeviceGetNvLinkState", (i, 4), {"error": "NVML_ERROR_INVALID_ARGUMENT"})
    reader = NvmlReader(api)
    reader.open()
    inv = reader.inventory()
    assert [list(d) for d in inv.domains] == [[0, 1], [2, 3]]
    assert inv.nvswitch is False and inv.gpus[0].nvlinks[0].remote_gpu == 1
    assert node_labels(inv)[DOMAIN_SIZE] == "2"


def test_xid_ecc_remap_and_lost_gpu_make_gpus_unhealthy() -> None:
    api = ReplayApi(DATA / "h100_sxm_8x.json")
    xid, dbe = pynvml.nvmlEventTypeXidCriticalError, pynvml.nvmlEventTypeDoubleBitEccError
    api.override(
        "nvmlEventSetWait",
        (0,),
        {"value": {"gpu": 3, "type": xid, "data": 79}},  # fallen off the bus
        {"value": {"gpu": 1, "type": xid, "data": 13}},  # an application's fault: ignored
        {"value": {"gpu": 6, "type": dbe, "data": 0}},
        {"error": "NVML_ERROR_TIMEOUT"},
    )
    api.override("nvmlDeviceGetTotalEccErrors", (2, 1, 0), {"value": 2})
    api.override("nvmlDeviceGetRemappedRows", (4,), {"value": [0, 1, 1, 0]})
    api.override("nvmlDeviceGetUtilizationRates", (5,), {"error": "NVML_ERROR_GPU_IS_LOST"})
    reader = NvmlReader(api)
    reader.open()
    inv = reader.inventory()
    sample = reader.sample()
    assert sample.util[5] is None and sample.util[0] == 97
    health = reader.health(inv)
    bad = {h.index: h.reasons for h in health if not h.healthy}
    assert sorted(bad) == [2, 3, 4, 5, 6]
    assert bad[3] == ("critical Xid 79",)
    assert "uncorrectable ECC" in bad[2][0] and "row remapping pending" in bad[4][0]
    assert "lost" in bad[5][0] and "double-bit" in bad[6][0]
    # sticky: the Xid needs a reset, so it stays after the event queue is empty
    again = reader.health(inv)
    assert not again[3].healthy and again[3].xids == (79,) and again[1].healthy


def test_unrecorded_call_is_an_error_not_a_default() -> None:
    api = ReplayApi(DATA / "l40s_pcie_4x.json")
    with pytest.raises(UnrecordedCall, match=r"nvmlDeviceGetName\(9\)"):
        api.call("nvmlDeviceGetName", 9)
    doc = json.loads((DATA / "l40s_pcie_4x.json").read_text())
    del doc["calls"]["nvmlDeviceGetUUID"]["2"]
    reader = NvmlReader(ReplayApi(doc))
    reader.open()
    with pytest.raises(UnrecordedCall):  # never swallowed as an unsupported field
        reader.inventory()


def test_recording_format_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a gpufair-nvml-recording/1"):
        load_recording(bad)
    bad.write_text(json.dumps({"format": "gpufair-nvml-recording/1", "calls": {"nvmlFoo": {}}}))
    with pytest.raises(ValueError, match="nvmlFoo is not in the reader's NVML interface"):
        load_recording(bad)
    bad.write_text(
        json.dumps(
            {
                "format": "gpufair-nvml-recording/1",
                "calls": {"nvmlDeviceGetCount": {"": {"error": "NVML_ERROR_BOGUS"}}},
            }
        )
    )
    with pytest.raises(ValueError, match="NVML_ERROR_BOGUS"):
        load_recording(bad)


def test_committed_recordings_match_their_builder() -> None:
    sys.path.insert(0, str(DATA))
    try:
        import build_reconstructed
    finally:
        sys.path.remove(str(DATA))
    for filename, text in build_reconstructed.build(DATA).items():
        assert (DATA / filename).read_text() == text, f"{filename} drifted from build_reconstructed.py"


@pytest.mark.parametrize("machine", sorted(EXPECTED))
def test_recorder_round_trip(machine: str) -> None:
    """Recording a reader run and replaying the recording gives the same reading."""
    recorder = RecordingApi(ReplayApi(DATA / f"{machine}.json"))
    r1 = NvmlReader(recorder)
    r1.open()
    inv1, health1, s1 = r1.inventory(), None, r1.sample()
    health1 = r1.health(inv1)
    r1.close()
    r2 = NvmlReader(ReplayApi(recorder.document(machine, "round trip")))
    r2.open()
    inv2 = r2.inventory()
    assert inv2 == inv1 and r2.sample() == s1 and r2.health(inv2) == health1


def test_record_script_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "rec.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "record_nvml.py"),
            "--out",
            str(out),
            "--samples",
            "2",
            "--replay",
            str(DATA / "gb200_nvl72_tray.json"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 GPU(s) NVIDIA GB200" in proc.stdout and GB200_CLIQUE in proc.stdout
    reader = NvmlReader(ReplayApi(out))
    reader.open()
    assert reader.inventory().clique == GB200_CLIQUE


def test_real_pynvml_structures_convert() -> None:
    """The conversions PynvmlApi applies, on real pynvml structures (no GPU needed to build them)."""
    info = pynvml.c_nvmlGpuFabricInfo_v3_t()
    for k, b in enumerate(bytes.fromhex("9c6f5af353bf49b5a436b66766c413c3")):
        info.clusterUuid[k] = b
    info.cliqueId, info.state, info.status, info.healthMask, info.healthSummary = 4026, 3, 0, 5, 1
    assert fabric_dict(info) == {
        "cluster_uuid": "9c6f5af3-53bf-49b5-a436-b66766c413c3",
        "clique_id": 4026,
        "state": 3,
        "status": 0,
        "health_mask": 5,
        "health_summary": 1,
    }
    legacy = pynvml.c_nvmlGpuFabricInfo_t()
    assert fabric_dict(legacy)["health_summary"] is None and fabric_uuid(legacy.clusterUuid).count("-") == 4
    exc = nvml_error("NVML_ERROR_NOT_SUPPORTED")
    assert isinstance(exc, pynvml.NVMLError_NotSupported) and error_name(exc) == "NVML_ERROR_NOT_SUPPORTED"
    assert normalize_bus_id("0000:1b:00.0") == "00000000:1B:00.0" == normalize_bus_id("1B:00.0")


def test_label_helpers() -> None:
    assert label_value(" NVIDIA H100 80GB HBM3 ") == "NVIDIA-H100-80GB-HBM3"
    with pytest.raises(InvalidInput):
        label_value("  ")
    patch = label_patch({DOMAIN_SIZE: "8"})
    assert patch == {"metadata": {"labels": {GPU_MODEL: None, DOMAIN_SIZE: "8"}}}
    assert CLIQUE not in patch["metadata"]["labels"]  # shared with GFD: never removed by gpufair


def test_payload_bounds() -> None:
    reader, _ = reader_for("h100_sxm_8x")
    inv = reader.inventory()
    state = state_message("gpu-1", 1, 2.0, inv, reader.health(inv))
    assert len(state) < MAX_PAYLOAD_BYTES // 4
    sample = json.loads(sample_message("gpu-1", 2, 2.0, reader.sample(), dropped=3))
    assert sample == {
        "v": 1,
        "node": "gpu-1",
        "seq": 2,
        "ts": 2.0,
        "util": [97, 95, 0, 0, 88, 90, 2, 0],
        "mem_mib": [480] * 8,
        "dropped": 3,
    }
