"""Emulated ``amdsmi`` Python library (see ../README.md): the subset of ROCm's ``amdsmi``
package the console's telemetry calls, backed by the amd-smi emulator's state file.

Names, arguments and return shapes follow ROCm/amdsmi ``py-interface/amdsmi_interface.py``:
memory in bytes, activity in %, power in W, temperatures in °C, "N/A" where the library maps
0xFFFF. The values are those the emulator's ``amd-smi metric`` prints for the same state
(``amdsmi_emulator.records.metric_record``), so the CLI and the library agree.

Like the real library, ``amdsmi_init`` enumerates the devices once: a handle names one logical
device by BDF, and after a partition change a handle whose device is gone raises
``AmdSmiLibraryException`` (new devices appear after ``amdsmi_shut_down`` + ``amdsmi_init``).
Calls are counted in ``CALLS`` (tests show a sample runs no process).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from enum import IntEnum
from pathlib import Path
from typing import Any

from amdsmi_emulator import records
from amdsmi_emulator import state as st
from amdsmi_emulator.model import Device, Hive

AMDSMI_EMULATED = True
CALLS: Counter[str] = Counter()

# amdsmi_wrapper status codes the emulator raises (amd_smi.h amdsmi_status_t)
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_NOT_FOUND = 31
AMDSMI_STATUS_NOT_INIT = 32
AMDSMI_STATUS_DRIVER_NOT_LOADED = 34
AMDSMI_STATUS_NO_PERM = 10
_STATUS_TEXT = {
    AMDSMI_STATUS_NOT_SUPPORTED: "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported",
    AMDSMI_STATUS_NOT_FOUND: "AMDSMI_STATUS_NOT_FOUND - Device Not found",
    AMDSMI_STATUS_NOT_INIT: "AMDSMI_STATUS_NOT_INIT - Device not initialized",
    AMDSMI_STATUS_DRIVER_NOT_LOADED: "AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded",
    AMDSMI_STATUS_NO_PERM: "AMDSMI_STATUS_NO_PERM - Permission Denied",
}


class AmdSmiException(Exception):
    """Base smi exception class"""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        self.err_info = _STATUS_TEXT.get(err_code, f"unknown error {err_code}")

    def get_error_info(self) -> str:
        return self.err_info

    def get_error_code(self) -> int:
        return self.err_code


class AmdSmiParameterException(AmdSmiException):
    def __init__(self, received: object, expected: object) -> None:
        super().__init__(f"Invalid parameter: expected {expected}, got {type(received)}")
        self.err_code = None


class AmdSmiInitFlags(IntEnum):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1 << 0
    INIT_AMD_GPUS = 1 << 1
    INIT_NON_AMD_CPUS = 1 << 2
    INIT_NON_AMD_GPUS = 1 << 3
    INIT_AMD_APUS = (1 << 0) | (1 << 1)


class AmdSmiTemperatureType(IntEnum):
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2
    HBM_0 = 3
    HBM_1 = 4
    HBM_2 = 5
    HBM_3 = 6
    PLX = 7


class AmdSmiTemperatureMetric(IntEnum):
    CURRENT = 0
    MAX = 1
    MIN = 2
    CRITICAL = 5
    EMERGENCY = 7


class AmdSmiMemoryType(IntEnum):
    VRAM = 0
    VIS_VRAM = 1
    GTT = 2


class amdsmi_processor_handle:  # noqa: N801 - the real library's ctypes type name
    """One logical device, by BDF (fixed at init, like the real handle)."""

    def __init__(self, bdf: str) -> None:
        self.bdf = bdf

    def __repr__(self) -> str:
        return f"<emulated amdsmi_processor_handle {self.bdf}>"


_state_path: Path | None = None
_handles: list[amdsmi_processor_handle] = []


def _count(name: str) -> None:
    CALLS[name] += 1


def amdsmi_init(flag: AmdSmiInitFlags = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
    global _state_path, _handles
    _count("amdsmi_init")
    if not isinstance(flag, AmdSmiInitFlags):
        raise AmdSmiParameterException(flag, AmdSmiInitFlags)
    path = st.default_path()
    hive = _hive_at(path)
    _state_path = path
    _handles = [amdsmi_processor_handle(d.bdf) for d in hive.devices()]


def amdsmi_shut_down() -> None:
    global _state_path, _handles
    _count("amdsmi_shut_down")
    _state_path, _handles = None, []


def amdsmi_get_processor_handles() -> list[amdsmi_processor_handle]:
    _count("amdsmi_get_processor_handles")
    if _state_path is None:
        raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
    return list(_handles)


def amdsmi_get_gpu_device_bdf(processor_handle: amdsmi_processor_handle) -> str:
    _count("amdsmi_get_gpu_device_bdf")
    hive, dev = _device(processor_handle)
    return dev.bdf


def amdsmi_get_gpu_compute_partition(processor_handle: amdsmi_processor_handle) -> str:
    _count("amdsmi_get_gpu_compute_partition")
    hive, dev = _device(processor_handle)
    return str(hive.gpus[dev.gpu]["compute_mode"])


def amdsmi_get_gpu_activity(processor_handle: amdsmi_processor_handle) -> dict[str, Any]:
    _count("amdsmi_get_gpu_activity")
    usage = _section(processor_handle, "usage")
    return {"gfx_activity": _value(usage.get("gfx_activity")), "umc_activity": _value(usage.get("umc_activity")),
            "mm_activity": _value(usage.get("mm_activity"))}


def amdsmi_get_gpu_metrics_info(processor_handle: amdsmi_processor_handle) -> dict[str, Any]:
    """The fields of the real dict the console reads: ``num_partition`` and the per-XCP
    ``xcp_stats.gfx_busy_inst`` (8 XCC slots each, "N/A" unused), plus temperatures/power."""
    _count("amdsmi_get_gpu_metrics_info")
    rec = _record(processor_handle, ["usage", "power", "temperature"])
    usage = rec["usage"] if isinstance(rec["usage"], dict) else {}
    busy = usage.get("gfx_busy_inst") or {}
    temp = rec["temperature"]
    power = rec["power"]
    return {
        "temperature_edge": _value(temp.get("edge")),
        "temperature_hotspot": _value(temp.get("hotspot")),
        "temperature_mem": _value(temp.get("mem")),
        "average_gfx_activity": _value(usage.get("gfx_activity")),
        "average_umc_activity": _value(usage.get("umc_activity")),
        "current_socket_power": _value(power.get("socket_power")),
        "average_socket_power": "N/A",
        "num_partition": len(busy) if busy else "N/A",
        "xcp_stats.gfx_busy_inst": [[_value(v) for v in busy[k]] for k in sorted(busy, key=_xcp)],
    }


def amdsmi_get_power_info(processor_handle: amdsmi_processor_handle) -> dict[str, Any]:
    _count("amdsmi_get_power_info")
    power = _section(processor_handle, "power")
    return {"current_socket_power": _value(power.get("socket_power")), "average_socket_power": "N/A",
            "gfx_voltage": "N/A", "soc_voltage": "N/A", "mem_voltage": "N/A", "power_limit": "N/A"}


def amdsmi_get_temp_metric(processor_handle: amdsmi_processor_handle, sensor_type: AmdSmiTemperatureType,
                           metric: AmdSmiTemperatureMetric) -> int:
    _count("amdsmi_get_temp_metric")
    if not isinstance(sensor_type, AmdSmiTemperatureType):
        raise AmdSmiParameterException(sensor_type, AmdSmiTemperatureType)
    if not isinstance(metric, AmdSmiTemperatureMetric):
        raise AmdSmiParameterException(metric, AmdSmiTemperatureMetric)
    key = {AmdSmiTemperatureType.EDGE: "edge", AmdSmiTemperatureType.HOTSPOT: "hotspot",
           AmdSmiTemperatureType.VRAM: "mem"}.get(sensor_type)
    if key is None or metric != AmdSmiTemperatureMetric.CURRENT:
        raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
    value = _value(_section(processor_handle, "temperature").get(key))
    if value == "N/A":  # the real call fails where the CLI prints N/A
        raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
    return int(value)


def amdsmi_get_gpu_memory_total(processor_handle: amdsmi_processor_handle, mem_type: AmdSmiMemoryType) -> int:
    """Bytes (the CLI prints ``// 2**20`` as MB)."""
    _count("amdsmi_get_gpu_memory_total")
    return _memory(processor_handle, mem_type, "total")


def amdsmi_get_gpu_memory_usage(processor_handle: amdsmi_processor_handle, mem_type: AmdSmiMemoryType) -> int:
    _count("amdsmi_get_gpu_memory_usage")
    return _memory(processor_handle, mem_type, "used")


def amdsmi_get_gpu_total_ecc_count(processor_handle: amdsmi_processor_handle) -> dict[str, Any]:
    _count("amdsmi_get_gpu_total_ecc_count")
    ecc = _section(processor_handle, "ecc")
    return {"correctable_count": ecc["total_correctable_count"], "uncorrectable_count": ecc["total_uncorrectable_count"],
            "deferred_count": ecc["total_deferred_count"]}


# --- plumbing --------------------------------------------------------------------------------

_parsed: tuple[tuple[int, ...], dict] | None = None  # (inode, mtime, ctime, size) of the state file, its data


def _hive_at(path: Path) -> Hive:
    """The hive in the state file; parsed again only when the file changed (a sample makes a
    few calls per device; every change replaces the file atomically: a new inode, new times)."""
    global _parsed
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_FOUND) from None
    stamp = (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)
    if _parsed is not None and _parsed[0] == stamp:
        data = _parsed[1]
    else:
        fresh = st.read(path)
        if fresh is None:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_FOUND)
        _parsed, data = (stamp, fresh), fresh
    if time.time() < float(data.get("reloading_until") or 0):
        raise AmdSmiLibraryException(AMDSMI_STATUS_DRIVER_NOT_LOADED)
    hive = Hive(data)
    if hive.missing_groups:
        raise AmdSmiLibraryException(AMDSMI_STATUS_NO_PERM)
    return hive


def _device(handle: amdsmi_processor_handle) -> tuple[Hive, Device]:
    if not isinstance(handle, amdsmi_processor_handle):
        raise AmdSmiParameterException(handle, amdsmi_processor_handle)
    if _state_path is None:
        raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
    hive = _hive_at(_state_path)
    for dev in hive.devices():
        if dev.bdf == handle.bdf:
            return hive, dev
    raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_FOUND)  # re-partitioned since amdsmi_init


def _record(handle: amdsmi_processor_handle, sections: list[str]) -> dict[str, Any]:
    hive, dev = _device(handle)
    return records.metric_record(hive, dev, sections)


def _section(handle: amdsmi_processor_handle, name: str) -> dict[str, Any]:
    section = _record(handle, [name])[name]
    if not isinstance(section, dict):  # "N/A": the whole query failed (secondary partitions)
        raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
    return section


def _memory(handle: amdsmi_processor_handle, mem_type: AmdSmiMemoryType, which: str) -> int:
    if not isinstance(mem_type, AmdSmiMemoryType):
        raise AmdSmiParameterException(mem_type, AmdSmiMemoryType)
    mem = _section(handle, "mem_usage")
    prefix = {AmdSmiMemoryType.VRAM: "vram", AmdSmiMemoryType.VIS_VRAM: "visible_vram",
              AmdSmiMemoryType.GTT: "gtt"}[mem_type]
    return int(_value(mem[f"{which}_{prefix}"])) * 1024 * 1024


def _value(value: Any) -> Any:
    """A CLI record value ({"value", "unit"} or "N/A") as the library returns it."""
    if isinstance(value, dict):
        return value.get("value", "N/A")
    return "N/A" if value is None else value


def _xcp(key: str) -> int:
    return int(str(key).rsplit("_", 1)[-1])


__all__ = [
    "AMDSMI_EMULATED", "AmdSmiException", "AmdSmiInitFlags", "AmdSmiLibraryException", "AmdSmiMemoryType",
    "AmdSmiParameterException", "AmdSmiTemperatureMetric", "AmdSmiTemperatureType", "amdsmi_get_gpu_activity",
    "amdsmi_get_gpu_compute_partition", "amdsmi_get_gpu_device_bdf", "amdsmi_get_gpu_memory_total", "amdsmi_get_gpu_memory_usage",
    "amdsmi_get_gpu_metrics_info", "amdsmi_get_gpu_total_ecc_count", "amdsmi_get_power_info",
    "amdsmi_get_processor_handles", "amdsmi_get_temp_metric", "amdsmi_init", "amdsmi_shut_down",
]
