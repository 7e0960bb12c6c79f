"""Writes the four reconstructed NVML recordings in this folder from the public facts in README.md.

Run from the repository root: `python tests/data/nvml/build_reconstructed.py`. The output is
deterministic; the test suite checks that the committed files equal what this script writes, so a
hand edit to a JSON file cannot drift from its documented source.
"""

from __future__ import annotations

import json
from pathlib import Path

MIB = 1024 * 1024
NS = {"error": "NVML_ERROR_NOT_SUPPORTED"}
INVALID = {"error": "NVML_ERROR_INVALID_ARGUMENT"}
TIMEOUT = {"error": "NVML_ERROR_TIMEOUT"}
XID_AND_DBE = 0x8 | 0x2  # nvmlEventTypeXidCriticalError | nvmlEventTypeDoubleBitEccError
SUPPORTED_EVENTS = 0x1 | 0x2 | 0x4 | 0x8 | 0x10  # SBE, DBE, PState, Xid, Clock


def v(value: object) -> dict:
    return {"value": value}


def machine(
    *,
    machine_name: str,
    source: str,
    driver: str,
    name: str,
    bus_ids: list[str],
    uuids: list[str],
    total_mib: int,
    reserved_mib: int,
    links: int,
    switches: list[str],
    switch_split: list[int],
    remote_pci_supported: bool,
    fabric: dict | None,
    numa: list[int],
    pcie_same_numa: int,
    util: list[list[int]],
) -> dict:
    n = len(bus_ids)
    calls: dict[str, dict[str, object]] = {
        "nvmlInit": {"": v(None)},
        "nvmlShutdown": {"": v(None)},
        "nvmlSystemGetDriverVersion": {"": v(driver)},
        "nvmlDeviceGetCount": {"": v(n)},
        "nvmlEventSetCreate": {"": v(None)},
        "nvmlEventSetWait": {"0": TIMEOUT},
    }

    def put(fn: str, key: str, answer: object) -> None:
        calls.setdefault(fn, {})[key] = answer

    for i in range(n):
        put("nvmlDeviceGetName", f"{i}", v(name))
        put("nvmlDeviceGetUUID", f"{i}", v(uuids[i]))
        put("nvmlDeviceGetPciInfo", f"{i}", v(bus_ids[i]))
        used = reserved_mib * MIB
        put(
            "nvmlDeviceGetMemoryInfo",
            f"{i}",
            v({"total": total_mib * MIB, "free": total_mib * MIB - used, "used": used}),
        )
        put("nvmlDeviceGetGpuFabricInfoV", f"{i}", v(fabric) if fabric is not None else NS)
        put("nvmlDeviceGetTotalEccErrors", f"{i},1,0", v(0))
        put("nvmlDeviceGetRetiredPages", f"{i},0", NS)
        put("nvmlDeviceGetRetiredPages", f"{i},1", NS)
        put("nvmlDeviceGetRetiredPagesPendingStatus", f"{i}", NS)
        put("nvmlDeviceGetRemappedRows", f"{i}", v([0, 0, 0, 0]))
        put(
            "nvmlDeviceGetUtilizationRates",
            f"{i}",
            [v({"gpu": u, "memory": max(0, u - 10)}) for u in util[i]],
        )
        put("nvmlDeviceGetSupportedEventTypes", f"{i}", v(SUPPORTED_EVENTS))
        put("nvmlDeviceRegisterEvents", f"{i},{XID_AND_DBE}", v(None))
        if links == 0:
            put("nvmlDeviceGetNvLinkState", f"{i},0", NS)
            continue
        owner = [k for k, count in enumerate(switch_split) for _ in range(count)]
        for link in range(links):
            put("nvmlDeviceGetNvLinkState", f"{i},{link}", v(1))
            put(
                "nvmlDeviceGetNvLinkRemotePciInfo",
                f"{i},{link}",
                v(switches[owner[link]]) if remote_pci_supported else NS,
            )
            put("nvmlDeviceGetNvLinkRemoteDeviceType", f"{i},{link}", v(2))
        put("nvmlDeviceGetNvLinkState", f"{i},{links}", INVALID)
    for i in range(n):
        for j in range(i + 1, n):
            put(
                "nvmlDeviceGetTopologyCommonAncestor",
                f"{i},{j}",
                v(pcie_same_numa if numa[i] == numa[j] else 50),
            )
            if links:
                put("nvmlDeviceGetP2PStatus", f"{i},{j},2", v(0))
    return {
        "format": "gpufair-nvml-recording/1",
        "machine": machine_name,
        "source": source,
        "calls": {fn: dict(sorted(by.items())) for fn, by in sorted(calls.items())},
    }


def scrubbed_uuids(n: int) -> list[str]:
    """The placeholder form the public captures use for scrubbed GPU UUIDs."""
    return [f"GPU-{i:08d}-0000-0000-0000-{i:012d}" for i in range(n)]


MACHINES = {
    "h100_sxm_8x.json": dict(
        machine_name="8x NVIDIA H100 80GB HBM3 (HGX, 4 NVSwitch)",
        source="reconstructed from public facts, see README.md#h100_sxm_8x",
        driver="580.105.08",
        name="NVIDIA H100 80GB HBM3",
        bus_ids=[f"00000000:{b}:00.0" for b in ("53", "64", "75", "86", "97", "A8", "B9", "CA")],
        uuids=scrubbed_uuids(8),
        total_mib=81559,
        reserved_mib=480,
        links=18,
        switches=[f"00000000:{b}:00.0" for b in ("05", "06", "07", "08")],
        switch_split=[5, 4, 4, 5],
        remote_pci_supported=True,
        fabric={
            "cluster_uuid": "00000000-0000-0000-0000-000000000000",
            "clique_id": 0,
            "state": 3,
            "status": 0,
            "health_mask": 0,
            "health_summary": 0,
        },
        numa=[0, 0, 0, 0, 1, 1, 1, 1],
        pcie_same_numa=40,
        util=[[97, 98], [95, 96], [0, 0], [0, 0], [88, 91], [90, 92], [2, 1], [0, 0]],
    ),
    "a100_sxm4_8x.json": dict(
        machine_name="8x NVIDIA A100-SXM4-40GB (HGX A100, 6 NVSwitch)",
        source="reconstructed from public facts, see README.md#a100_sxm4_8x",
        driver="570.148.08",
        name="NVIDIA A100-SXM4-40GB",
        bus_ids=[f"00000000:{b}:00.0" for b in ("07", "0F", "47", "4E", "87", "90", "B7", "BD")],
        uuids=scrubbed_uuids(8),
        total_mib=40960,
        reserved_mib=518,
        links=12,
        switches=[f"00000000:{b}:00.0" for b in ("C4", "C5", "C6", "C7", "C8", "C9")],
        switch_split=[2, 2, 2, 2, 2, 2],
        remote_pci_supported=True,
        fabric=None,
        numa=[0, 0, 0, 0, 1, 1, 1, 1],
        pcie_same_numa=40,
        util=[[50, 55]] * 8,
    ),
    "l40s_pcie_4x.json": dict(
        machine_name="4x NVIDIA L40S (PCIe, no NVLink)",
        source="reconstructed from public facts, see README.md#l40s_pcie_4x",
        driver="595.91.07",
        name="NVIDIA L40S",
        bus_ids=[f"00000000:{b}:00.0" for b in ("30", "31", "B0", "B1")],
        uuids=scrubbed_uuids(4),
        total_mib=46068,
        reserved_mib=609,
        links=0,
        switches=[],
        switch_split=[],
        remote_pci_supported=False,
        fabric=None,
        numa=[0, 0, 1, 1],
        pcie_same_numa=10,
        util=[[0], [30], [0], [100]],
    ),
    "gb200_nvl72_tray.json": dict(
        machine_name="NVIDIA GB200 NVL72 compute tray (4x NVIDIA GB200)",
        source="reconstructed from public facts, see README.md#gb200_nvl72_tray",
        driver="580.173.02",
        name="NVIDIA GB200",
        bus_ids=[f"00000000:{b}:00.0" for b in ("29", "3F", "55", "6B")],
        uuids=[
            "GPU-24fb92fc-15ec-deff-a5c1-82b48e063f59",
            "GPU-5a889549-86cd-3b1b-685e-24042771850c",
            "GPU-00000002-0000-0000-0000-000000000002",
            "GPU-00000003-0000-0000-0000-000000000003",
        ],
        total_mib=189471,
        reserved_mib=742,
        links=18,
        switches=[],
        switch_split=[18],
        remote_pci_supported=False,
        fabric={
            "cluster_uuid": "9c6f5af3-53bf-49b5-a436-b66766c413c3",
            "clique_id": 4026,
            "state": 3,
            "status": 0,
            "health_mask": 0,
            "health_summary": 1,
        },
        numa=[0, 0, 1, 1],
        pcie_same_numa=40,
        util=[[12], [12], [0], [0]],
    ),
}


def build(directory: Path) -> dict[str, str]:
    out = {}
    for filename, spec in MACHINES.items():
        out[filename] = json.dumps(machine(**spec), indent=1) + "\n"  # type: ignore[arg-type]
    return out


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    for filename, text in build(here).items():
        (here / filename).write_text(text)
        print(f"wrote {here / filename}")
