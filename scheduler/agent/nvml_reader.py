"""What a node's GPUs are, how they are wired and whether they are well, read through `NvmlApi`.

Every NVML call a GPU may not support is taken per field: the field becomes None and the NVML
error is noted in `unavailable`, the rest of the reading goes on. NVLink domains come from the
links themselves: a link whose far end is another local GPU joins the two directly; on NVSwitch
boards (HGX, GB200 trays) the far end is a switch, so GPUs that reach switches are joined when
NVML says they can talk peer-to-peer over NVLink (or, without that answer, share a switch).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pynvml

from scheduler.agent.nvml_api import NvmlApi, error_name

MIB = 1024 * 1024
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
#: Xids that an application causes (bad program, illegal access, ...): the GPU itself is fine.
#: The same list the NVIDIA device plugin skips.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
EVENT_MASK = pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError
MAX_EVENTS_PER_POLL = 256
PCIE_LEVELS = {0: "X", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}
FABRIC_STATES = {0: "not-supported", 1: "not-started", 2: "in-progress", 3: "completed"}
_NVLINK_REMOTE_GPU, _NVLINK_REMOTE_SWITCH = 0, 2


@dataclass(frozen=True)
class NvLink:
    link: int
    remote_bus_id: str | None
    remote: str  # 'gpu' (a local GPU), 'switch', or 'unknown'
    remote_gpu: int | None = None


@dataclass(frozen=True)
class Fabric:
    """Multi-node NVLink membership of one GPU (GB200-class racks)."""

    cluster_uuid: str
    clique_id: int
    state: str
    status: int
    health_summary: int | None = None

    @property
    def attached(self) -> bool:
        """As GPU feature discovery decides: registration completed, succeeded, and a real cluster."""
        return self.state == "completed" and self.status == 0 and self.cluster_uuid != ZERO_UUID

    @property
    def clique(self) -> str:
        return f"{self.cluster_uuid}.{self.clique_id}"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str | None
    uuid: str | None
    pci_bus_id: str | None
    memory_total_mib: int | None
    nvlinks: tuple[NvLink, ...]
    fabric: Fabric | None
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    """The static part: read once at start (and again if the GPU count changes)."""

    driver: str | None
    gpus: tuple[GpuInfo, ...]
    domains: tuple[tuple[int, ...], ...]
    nvswitch: bool
    pcie: tuple[tuple[str, ...], ...]
    clique: str | None
    fabric: Fabric | None
    notes: tuple[str, ...] = ()

    @property
    def model(self) -> str:
        """The most common GPU name on the node ('' when none is readable)."""
        names = Counter(g.name for g in self.gpus if g.name)
        return names.most_common(1)[0][0] if names else ""

    @property
    def domain_size(self) -> int:
        """GPUs in the largest NVLink domain of this node (1 on PCIe-only boxes)."""
        return max((len(d) for d in self.domains), default=0)

    def domain_of(self, index: int) -> int:
        return next(k for k, d in enumerate(self.domains) if index in d)


@dataclass(frozen=True)
class GpuHealth:
    index: int
    healthy: bool
    reasons: tuple[str, ...]
    xids: tuple[int, ...]
    ecc_uncorrected: int | None
    retired_pages: int | None
    remapped_pending: bool | None
    remapped_failure: bool | None


@dataclass(frozen=True)
class Sample:
    """Per GPU utilisation (%) and memory in use (MiB); None where NVML gave nothing."""

    util: tuple[int | None, ...]
    mem_mib: tuple[int | None, ...]


def normalize_bus_id(bus_id: str) -> str:
    """'0000:53:00.0' and '00000000:53:00.0' name the same device: 8-digit domain, upper case."""
    text = bus_id.strip().upper()
    domain, _, rest = text.rpartition(":")[0].partition(":")
    if not rest:  # no domain given
        return f"00000000:{text}"
    return f"{int(domain, 16):08X}:{rest}:{text.rsplit(':', 1)[1]}"


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> tuple[tuple[int, ...], ...]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return tuple(tuple(g) for _, g in sorted(out.items()))


class NvmlReader:
    """Reads one node. `open()` once, then `inventory()`, and `health()` / `sample()` each interval."""

    def __init__(self, api: NvmlApi, ignored_xids: frozenset[int] = APPLICATION_XIDS) -> None:
        self.api = api
        self.ignored_xids = ignored_xids
        self.count = 0
        self.events = False
        self.unavailable: dict[str, str] = {}
        self._xids: dict[int, list[int]] = {}
        self._dbe: set[int] = set()
        self._lost: set[int] = set()

    # -- plumbing -------------------------------------------------------------------------------
    def _try(self, where: dict[str, str], label: str, function: str, *args: int) -> Any:
        """One field: the answer, or None with the NVML error written down under `label`."""
        try:
            return self.api.call(function, *args)
        except pynvml.NVMLError_GpuIsLost:
            if args:
                self._lost.add(args[0])
            where[label] = "NVML_ERROR_GPU_IS_LOST"
            return None
        except pynvml.NVMLError as exc:
            where[label] = error_name(exc)
            return None

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        self.api.call("nvmlInit")
        self.count = int(self.api.call("nvmlDeviceGetCount"))
        self.events = self._register_events()

    def close(self) -> None:
        self.api.call("nvmlShutdown")

    def _register_events(self) -> bool:
        if (
            self._try(self.unavailable, "events", "nvmlEventSetCreate") is None
            and "events" in self.unavailable
        ):
            return False
        registered = False
        for i in range(self.count):
            supported = self._try(
                self.unavailable, f"gpu{i}.event_types", "nvmlDeviceGetSupportedEventTypes", i
            )
            mask = EVENT_MASK if supported is None else EVENT_MASK & int(supported)
            if not mask:
                self.unavailable[f"gpu{i}.events"] = "NVML_ERROR_NOT_SUPPORTED"
                continue
            before = len(self.unavailable)
            self._try(self.unavailable, f"gpu{i}.events", "nvmlDeviceRegisterEvents", i, mask)
            registered = registered or len(self.unavailable) == before
        return registered

    # -- inventory ------------------------------------------------------------------------------
    def inventory(self) -> Inventory:
        notes: list[str] = []
        node_missing: dict[str, str] = {}
        driver = self._try(node_missing, "driver", "nvmlSystemGetDriverVersion")
        gpus = [self._gpu_static(i) for i in range(self.count)]
        bus_to_gpu = {normalize_bus_id(g.pci_bus_id): g.index for g in gpus if g.pci_bus_id}
        gpus = [self._nvlinks(g, bus_to_gpu) for g in gpus]
        domains, nvswitch = self._domains(gpus)
        pcie = self._pcie()
        fabric, clique = self._node_fabric(gpus, notes)
        return Inventory(driver, tuple(gpus), domains, nvswitch, pcie, clique, fabric, tuple(notes))

    def _gpu_static(self, i: int) -> GpuInfo:
        missing: dict[str, str] = {}
        name = self._try(missing, "name", "nvmlDeviceGetName", i)
        uuid = self._try(missing, "uuid", "nvmlDeviceGetUUID", i)
        bus = self._try(missing, "pci", "nvmlDeviceGetPciInfo", i)
        mem = self._try(missing, "memory", "nvmlDeviceGetMemoryInfo", i)
        raw_fabric = self._try(missing, "fabric", "nvmlDeviceGetGpuFabricInfoV", i)
        fabric = None
        if raw_fabric is not None:
            fabric = Fabric(
                cluster_uuid=str(raw_fabric["cluster_uuid"]).lower(),
                clique_id=int(raw_fabric["clique_id"]),
                state=FABRIC_STATES.get(int(raw_fabric["state"]), f"state-{raw_fabric['state']}"),
                status=int(raw_fabric["status"]),
                health_summary=raw_fabric.get("health_summary"),
            )
            if fabric.state == "not-supported":
                fabric = None
        return GpuInfo(
            index=i,
            name=name,
            uuid=uuid,
            pci_bus_id=normalize_bus_id(bus) if bus else None,
            memory_total_mib=int(mem["total"]) // MIB if mem else None,
            nvlinks=(),
            fabric=fabric,
            unavailable=missing,
        )

    def _nvlinks(self, gpu: GpuInfo, bus_to_gpu: dict[str, int]) -> GpuInfo:
        """Walk links 0.. until NVML says there is no such link; keep the active ones."""
        links: list[NvLink] = []
        missing = dict(gpu.unavailable)
        i = gpu.index
        for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
            try:
                active = self.api.call("nvmlDeviceGetNvLinkState", i, link)
            except pynvml.NVMLError_InvalidArgument:
                break  # past the GPU's last link
            except pynvml.NVMLError as exc:
                if link == 0:
                    missing["nvlink"] = error_name(exc)
                    break  # no NVLink on this GPU (PCIe cards), or NVLink not readable at all
                continue
            if not active:
                continue
            remote_bus = self._try(missing, "nvlink.remote_pci", "nvmlDeviceGetNvLinkRemotePciInfo", i, link)
            remote_type = self._try(
                missing, "nvlink.remote_type", "nvmlDeviceGetNvLinkRemoteDeviceType", i, link
            )
            bus = normalize_bus_id(remote_bus) if remote_bus else None
            if bus is not None and bus in bus_to_gpu and bus_to_gpu[bus] != i:
                links.append(NvLink(link, bus, "gpu", bus_to_gpu[bus]))
            elif remote_type == _NVLINK_REMOTE_SWITCH:
                links.append(NvLink(link, bus, "switch"))
            elif remote_type == _NVLINK_REMOTE_GPU and bus is None:
                links.append(NvLink(link, None, "unknown"))
            else:
                links.append(NvLink(link, bus, "switch" if bus else "unknown"))
        return GpuInfo(
            gpu.index,
            gpu.name,
            gpu.uuid,
            gpu.pci_bus_id,
            gpu.memory_total_mib,
            tuple(links),
            gpu.fabric,
            missing,
        )

    def _domains(self, gpus: list[GpuInfo]) -> tuple[tuple[tuple[int, ...], ...], bool]:
        uf = _UnionFind(len(gpus))
        switched: dict[int, set[str | None]] = {}
        for g in gpus:
            for link in g.nvlinks:
                if link.remote == "gpu" and link.remote_gpu is not None:
                    uf.union(g.index, link.remote_gpu)
                else:
                    switched.setdefault(g.index, set()).add(link.remote_bus_id)
        members = sorted(switched)
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1 :]:
                status = self._try(
                    self.unavailable,
                    f"p2p{a},{b}",
                    "nvmlDeviceGetP2PStatus",
                    a,
                    b,
                    pynvml.NVML_P2P_CAPS_INDEX_NVLINK,
                )
                if status is not None:
                    joined = status == pynvml.NVML_P2P_STATUS_OK
                else:  # no P2P answer: the same switch (or both unknown far ends) means one fabric
                    joined = bool(switched[a] & switched[b])
                if joined:
                    uf.union(a, b)
        nvswitch = any(link.remote == "switch" for g in gpus for link in g.nvlinks)
        return uf.groups(), nvswitch

    def _pcie(self) -> tuple[tuple[str, ...], ...]:
        """`nvidia-smi topo -m`'s PCIe part: X, PIX, PXB, PHB, NODE, SYS ('?' when unreadable)."""
        n = self.count
        rows = [["X" if i == j else "?" for j in range(n)] for i in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                level = self._try(
                    self.unavailable, f"topology{i},{j}", "nvmlDeviceGetTopologyCommonAncestor", i, j
                )
                rows[i][j] = rows[j][i] = PCIE_LEVELS.get(level, "?") if level is not None else "?"
        return tuple(tuple(r) for r in rows)

    @staticmethod
    def _node_fabric(gpus: list[GpuInfo], notes: list[str]) -> tuple[Fabric | None, str | None]:
        attached = [g.fabric for g in gpus if g.fabric is not None and g.fabric.attached]
        if not attached:
            return None, None
        cliques = {f.clique for f in attached}
        if len(cliques) > 1:
            notes.append(
                f"GPUs disagree on their NVLink clique ({', '.join(sorted(cliques))}); no clique label"
            )
            return None, None
        if len(attached) < len(gpus):
            notes.append(f"{len(gpus) - len(attached)} GPU(s) are not attached to the NVLink fabric")
        return attached[0], attached[0].clique

    # -- health and samples -------------------------------------------------------------------------
    def poll_events(self) -> int:
        """Drain pending Xid / double-bit-ECC events without blocking (timeout 0)."""
        if not self.events:
            return 0
        seen = 0
        for _ in range(MAX_EVENTS_PER_POLL):
            try:
                event = self.api.call("nvmlEventSetWait", 0)
            except pynvml.NVMLError_Timeout:
                break
            except pynvml.NVMLError as exc:
                self.unavailable["events.wait"] = error_name(exc)
                break
            seen += 1
            gpu, kind, data = int(event["gpu"]), int(event["type"]), int(event["data"])
            if kind & pynvml.nvmlEventTypeXidCriticalError and data not in self.ignored_xids:
                self._xids.setdefault(gpu, []).append(data)
            if kind & pynvml.nvmlEventTypeDoubleBitEccError:
                self._dbe.add(gpu)
        return seen

    def health(self, inventory: Inventory | None = None) -> tuple[GpuHealth, ...]:
        """Health now. Xids, double-bit errors and lost GPUs stay bad until the agent restarts
        (they need a GPU reset, after which the agent starts again)."""
        self.poll_events()
        out = []
        for i in range(self.count):
            missing: dict[str, str] = {}
            reasons: list[str] = []
            ecc = self._try(
                missing,
                "ecc",
                "nvmlDeviceGetTotalEccErrors",
                i,
                pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                pynvml.NVML_VOLATILE_ECC,
            )
            retired = None
            for cause in (
                pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
                pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
            ):
                pages = self._try(missing, "retired_pages", "nvmlDeviceGetRetiredPages", i, cause)
                if pages is not None:
                    retired = (retired or 0) + len(pages)
            pending_retire = self._try(
                missing, "retired_pending", "nvmlDeviceGetRetiredPagesPendingStatus", i
            )
            rows = self._try(missing, "remapped_rows", "nvmlDeviceGetRemappedRows", i)
            remap_pending = bool(rows[2]) if rows is not None else None
            remap_failure = bool(rows[3]) if rows is not None else None
            xids = tuple(self._xids.get(i, ()))
            if i in self._lost:
                reasons.append("GPU is lost (fell off the bus)")
            if xids:
                reasons.append(f"critical Xid {', '.join(map(str, sorted(set(xids))))}")
            if i in self._dbe:
                reasons.append("double-bit ECC error event")
            if ecc:
                reasons.append(f"{ecc} uncorrectable ECC error(s) since the driver loaded")
            if pending_retire:
                reasons.append("retired pages pending a GPU reset")
            if remap_pending:
                reasons.append("row remapping pending a GPU reset")
            if remap_failure:
                reasons.append("row remapping failed")
            if inventory is not None and i < len(inventory.gpus):
                fabric = inventory.gpus[i].fabric
                if (
                    fabric is not None
                    and fabric.health_summary == pynvml.NVML_GPU_FABRIC_HEALTH_SUMMARY_UNHEALTHY
                ):
                    reasons.append("NVLink fabric reports the GPU unhealthy")
            out.append(
                GpuHealth(i, not reasons, tuple(reasons), xids, ecc, retired, remap_pending, remap_failure)
            )
        return tuple(out)

    def sample(self) -> Sample:
        util: list[int | None] = []
        mem: list[int | None] = []
        for i in range(self.count):
            missing: dict[str, str] = {}
            u = self._try(missing, "util", "nvmlDeviceGetUtilizationRates", i)
            m = self._try(missing, "memory", "nvmlDeviceGetMemoryInfo", i)
            util.append(int(u["gpu"]) if u is not None else None)
            mem.append(int(m["used"]) // MIB if m is not None else None)
        return Sample(tuple(util), tuple(mem))
