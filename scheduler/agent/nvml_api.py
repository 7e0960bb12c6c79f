"""The narrow NVML interface the reader uses: one `call(function, *args)` with plain arguments and
plain JSON-able answers, so a recorded machine can stand in for a real one.

Arguments are GPU indices (never handles), link numbers and NVML constants; answers are ints,
strings, lists or small dicts. Failures are the real `pynvml.NVMLError` subclasses in both
implementations, so the reader's per-field error handling is the same on a GPU and in a test.

`FUNCTIONS` is the whole vocabulary, with the shape of each answer. `PynvmlApi` calls the real
library (nvidia-ml-py) and converts its ctypes structures; `ReplayApi` (nvml_replay.py) answers
from a recording; `RecordingApi` wraps any of them and writes down every answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pynvml

#: function -> (arguments, answer). Names are NVML's own, so a recording reads like an NVML trace.
FUNCTIONS: dict[str, tuple[str, str]] = {
    "nvmlInit": ("", "null"),
    "nvmlShutdown": ("", "null"),
    "nvmlSystemGetDriverVersion": ("", "str, e.g. '580.105.08'"),
    "nvmlDeviceGetCount": ("", "int"),
    "nvmlDeviceGetName": ("gpu", "str"),
    "nvmlDeviceGetUUID": ("gpu", "str 'GPU-...'"),
    "nvmlDeviceGetPciInfo": ("gpu", "str busId, e.g. '00000000:53:00.0'"),
    "nvmlDeviceGetMemoryInfo": ("gpu", "{total, free, used} in bytes"),
    "nvmlDeviceGetNvLinkState": ("gpu, link", "int 1 active / 0 inactive"),
    "nvmlDeviceGetNvLinkRemotePciInfo": ("gpu, link", "str busId of the far end (a GPU or an NVSwitch)"),
    "nvmlDeviceGetNvLinkRemoteDeviceType": ("gpu, link", "int 0 GPU, 1 IBMNPU, 2 NVSwitch, 255 unknown"),
    "nvmlDeviceGetTopologyCommonAncestor": ("gpu, gpu", "int NVML_TOPOLOGY_* (0, 10, 20, 30, 40, 50)"),
    "nvmlDeviceGetP2PStatus": ("gpu, gpu, capsIndex", "int NVML_P2P_STATUS_* (0 = OK)"),
    "nvmlDeviceGetGpuFabricInfoV": (
        "gpu",
        "{cluster_uuid: str, clique_id: int, state: int, status: int, health_mask: int|null, "
        "health_summary: int|null}",
    ),
    "nvmlDeviceGetTotalEccErrors": ("gpu, errorType, counterType", "int"),
    "nvmlDeviceGetRetiredPages": ("gpu, cause", "list[int] page addresses"),
    "nvmlDeviceGetRetiredPagesPendingStatus": ("gpu", "int 0/1"),
    "nvmlDeviceGetRemappedRows": ("gpu", "[correctable, uncorrectable, pending, failure]"),
    "nvmlDeviceGetUtilizationRates": ("gpu", "{gpu: %, memory: %}"),
    "nvmlDeviceGetSupportedEventTypes": ("gpu", "int bit mask"),
    "nvmlEventSetCreate": ("", "null (the api keeps the one event set)"),
    "nvmlDeviceRegisterEvents": ("gpu, mask", "null"),
    "nvmlEventSetWait": ("timeoutMs", "{gpu: int, type: int, data: int}; NVMLError_Timeout when none"),
}


class NvmlApi(Protocol):
    """What the reader needs from NVML."""

    def call(self, function: str, *args: int) -> Any: ...


def error_name(exc: pynvml.NVMLError) -> str:
    """'NVML_ERROR_NOT_SUPPORTED' for an NVMLError, the form recordings store."""
    for name in dir(pynvml):
        if name.startswith("NVML_ERROR_") and getattr(pynvml, name) == exc.value:
            return name
    return f"NVML_ERROR_{exc.value}"


def nvml_error(name: str) -> pynvml.NVMLError:
    """The pynvml exception (e.g. NVMLError_NotSupported) for a recorded error name."""
    value = getattr(pynvml, name, None)
    if not isinstance(value, int):
        raise ValueError(f"unknown NVML error name {name!r}; use a pynvml NVML_ERROR_* constant name")
    return pynvml.NVMLError(value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def fabric_uuid(raw: Any) -> str:
    """16 cluster-UUID bytes as the dashed lowercase form GPU feature discovery prints."""
    b = bytes(raw)
    h = b.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def fabric_dict(info: Any) -> dict[str, Any]:
    """A pynvml fabric-info structure (any version) as the recorded dict."""
    return {
        "cluster_uuid": fabric_uuid(info.clusterUuid),
        "clique_id": int(info.cliqueId),
        "state": int(info.state),
        "status": int(info.status),
        "health_mask": int(info.healthMask) if hasattr(info, "healthMask") else None,
        "health_summary": int(info.healthSummary) if hasattr(info, "healthSummary") else None,
    }


class PynvmlApi:
    """The real library. Needs libnvidia-ml (a GPU driver); used by the agent and the recorder."""

    def __init__(self) -> None:
        self._handles: dict[int, Any] = {}
        self._event_set: Any = None
        self._table: dict[str, Callable[..., Any]] = {
            "nvmlInit": lambda: pynvml.nvmlInit(),
            "nvmlShutdown": self._shutdown,
            "nvmlSystemGetDriverVersion": lambda: _text(pynvml.nvmlSystemGetDriverVersion()),
            "nvmlDeviceGetCount": pynvml.nvmlDeviceGetCount,
            "nvmlDeviceGetName": lambda i: _text(pynvml.nvmlDeviceGetName(self._h(i))),
            "nvmlDeviceGetUUID": lambda i: _text(pynvml.nvmlDeviceGetUUID(self._h(i))),
            "nvmlDeviceGetPciInfo": lambda i: _text(pynvml.nvmlDeviceGetPciInfo(self._h(i)).busId),
            "nvmlDeviceGetMemoryInfo": self._memory,
            "nvmlDeviceGetNvLinkState": lambda i, link: int(
                pynvml.nvmlDeviceGetNvLinkState(self._h(i), link)
            ),
            "nvmlDeviceGetNvLinkRemotePciInfo": lambda i, link: _text(
                pynvml.nvmlDeviceGetNvLinkRemotePciInfo(self._h(i), link).busId
            ),
            "nvmlDeviceGetNvLinkRemoteDeviceType": lambda i, link: int(
                pynvml.nvmlDeviceGetNvLinkRemoteDeviceType(self._h(i), link)
            ),
            "nvmlDeviceGetTopologyCommonAncestor": lambda i, j: int(
                pynvml.nvmlDeviceGetTopologyCommonAncestor(self._h(i), self._h(j))
            ),
            "nvmlDeviceGetP2PStatus": lambda i, j, caps: int(
                pynvml.nvmlDeviceGetP2PStatus(self._h(i), self._h(j), caps)
            ),
            "nvmlDeviceGetGpuFabricInfoV": self._fabric,
            "nvmlDeviceGetTotalEccErrors": lambda i, err, counter: int(
                pynvml.nvmlDeviceGetTotalEccErrors(self._h(i), err, counter)
            ),
            "nvmlDeviceGetRetiredPages": lambda i, cause: [
                int(p) for p in pynvml.nvmlDeviceGetRetiredPages(self._h(i), cause)
            ],
            "nvmlDeviceGetRetiredPagesPendingStatus": lambda i: int(
                pynvml.nvmlDeviceGetRetiredPagesPendingStatus(self._h(i))
            ),
            "nvmlDeviceGetRemappedRows": lambda i: [
                int(v) for v in pynvml.nvmlDeviceGetRemappedRows(self._h(i))
            ],
            "nvmlDeviceGetUtilizationRates": self._utilization,
            "nvmlDeviceGetSupportedEventTypes": lambda i: int(
                pynvml.nvmlDeviceGetSupportedEventTypes(self._h(i))
            ),
            "nvmlEventSetCreate": self._event_set_create,
            "nvmlDeviceRegisterEvents": lambda i, mask: pynvml.nvmlDeviceRegisterEvents(
                self._h(i), mask, self._event_set
            ),
            "nvmlEventSetWait": self._event_wait,
        }

    def call(self, function: str, *args: int) -> Any:
        try:
            fn = self._table[function]
        except KeyError:
            raise ValueError(f"{function} is not part of the reader's NVML interface") from None
        return fn(*args)

    def _h(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = pynvml.nvmlDeviceGetHandleByIndex(index)
        return self._handles[index]

    def _memory(self, i: int) -> dict[str, int]:
        m = pynvml.nvmlDeviceGetMemoryInfo(self._h(i))
        return {"total": int(m.total), "free": int(m.free), "used": int(m.used)}

    def _utilization(self, i: int) -> dict[str, int]:
        u = pynvml.nvmlDeviceGetUtilizationRates(self._h(i))
        return {"gpu": int(u.gpu), "memory": int(u.memory)}

    def _fabric(self, i: int) -> dict[str, Any]:
        """Newest structure first (v3 has the health summary), then v2, then the legacy call."""
        for struct in ("c_nvmlGpuFabricInfo_v3_t", "c_nvmlGpuFabricInfo_v2_t"):
            cls = getattr(pynvml, struct, None)
            if cls is None:
                continue
            info = cls()
            try:
                pynvml.nvmlDeviceGetGpuFabricInfoV(self._h(i), pynvml.byref(info))
                return fabric_dict(info)
            except pynvml.NVMLError_FunctionNotFound:
                break
            except (pynvml.NVMLError_ArgumentVersionMismatch, pynvml.NVMLError_InvalidArgument):
                continue
        legacy = pynvml.c_nvmlGpuFabricInfo_t()
        pynvml.nvmlDeviceGetGpuFabricInfo(self._h(i), pynvml.byref(legacy))
        return fabric_dict(legacy)

    def _event_set_create(self) -> None:
        self._event_set = pynvml.nvmlEventSetCreate()

    def _event_wait(self, timeout_ms: int) -> dict[str, int]:
        data = pynvml.nvmlEventSetWait(self._event_set, timeout_ms)
        return {
            "gpu": int(pynvml.nvmlDeviceGetIndex(data.device)),
            "type": int(data.eventType),
            "data": int(data.eventData),
        }

    def _shutdown(self) -> None:
        if self._event_set is not None:
            pynvml.nvmlEventSetFree(self._event_set)
            self._event_set = None
        self._handles.clear()
        pynvml.nvmlShutdown()
