"""Per-device records (the dicts amd-smi builds before formatting) for list/static/metric/partition.

Key names, key order, value types, "N/A" placement and unit objects follow the reference
(sections 3-6) and the fixtures, per emulated version. Live metrics are derived from the
per-partition ``load``/``vram_used_mb`` in the state plus a little time-based noise.
"""

from __future__ import annotations

import random
import time
from typing import Any

from .model import GTT_TOTAL_MB, GTT_USED_MB, JPEG_PER_GPU, POWER, VCN_PER_GPU, Device, Hive, vram_total_mb

NA = "N/A"


def unit(value, u: str) -> dict:
    return {"value": value, "unit": u}


# -- list --------------------------------------------------------------------------------
def list_record(hive: Hive, dev: Device, enum: bool) -> dict:
    rec: dict = {"gpu": dev.index, "bdf": dev.bdf, "uuid": dev.uuid}
    if hive.rocm >= (6, 3, 0):
        rec.update(kfd_id=dev.kfd_id, node_id=dev.node_id, partition_id=dev.partition)
    if enum:
        rec.update(render=dev.render, card=dev.card, hsa_id=dev.node_id, hip_id=dev.index,
                   hip_uuid=dev.hip_uuid)
    return rec


# -- static ------------------------------------------------------------------------------
def vram_total_for(hive: Hive, dev: Device) -> int:
    """VRAM total a logical device reports: whole GPU on the primary (and on every device
    before 6.4.1), device/N on secondaries from 6.4.1."""
    total = vram_total_mb(hive.spec)
    if dev.primary or hive.rocm < (6, 4, 1):
        return total
    return total // dev.count


def static_record(hive: Hive, dev: Device, sections: list[str]) -> dict:
    spec = hive.spec
    gpu = hive.gpus[dev.gpu]
    rec: dict = {"gpu": dev.index}
    for section in sections:
        if section == "asic":
            asic: dict[str, Any] = {
                "market_name": f"AMD Instinct {spec.model}",
                "vendor_id": "0x1002",
                "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
                "subvendor_id": "0x1002",
                "device_id": spec.pci_device_id,
            }
            if hive.rocm >= (6, 3, 0):
                asic["subsystem_id"] = spec.pci_device_id
            asic.update(rev_id="0x00", asic_serial=gpu["serial"], oam_id=gpu["oam_id"],
                        num_compute_units=spec.cus // dev.count)
            if hive.rocm >= (6, 3, 0):
                asic["target_graphics_version"] = spec.gfx_target
            rec["asic"] = asic
        elif section == "bus":
            rec["bus"] = {"bdf": dev.bdf, "max_pcie_width": 16, "max_pcie_speed": unit(32, "GT/s"),
                          "pcie_interface_version": "Gen 5", "slot_type": "OAM"}
        elif section == "driver":
            rec["driver"] = {"name": "amdgpu", "version": amdgpu_version(hive)}
        elif section == "vram":
            vram = {"type": "HBM", "vendor": "UNKNOWN", "size": unit(vram_total_for(hive, dev), "MB"),
                    "bit_width": 8192}
            if hive.rocm >= (6, 4, 0):
                vram["max_bandwidth"] = unit(POWER.get(spec.model, (0, 0, 5325))[2], "GB/s")
            rec["vram"] = vram
        elif section == "partition":
            key = "accelerator_partition" if hive.rocm >= (6, 4, 2) else "compute_partition"
            part = {key: gpu["compute_mode"], "memory_partition": gpu["memory_mode"]}
            if hive.rocm >= (6, 3, 0):
                part["partition_id"] = dev.partition
            rec["partition"] = part
    return rec


def amdgpu_version(hive: Hive) -> str:
    return "6.14.14" if hive.rocm >= (7, 0, 0) else "6.10.10"


# -- metric ------------------------------------------------------------------------------
def _noise(dev: Device, key: str, amp: float) -> float:
    rng = random.Random(f"{dev.gpu}/{dev.partition}/{key}/{int(time.time())}")
    return rng.uniform(-amp, amp)


def _pct(value: float) -> int:
    return int(round(min(100.0, max(0.0, value))))


def _device_load(hive: Hive, dev: Device) -> float:
    parts = hive.gpus[dev.gpu]["partitions"]
    return sum(p["load"] for p in parts) / len(parts)


def _usage(hive: Hive, dev: Device) -> dict:
    parts = hive.gpus[dev.gpu]["partitions"]
    load = _device_load(hive, dev)
    gfx = _pct(load * 100 + (_noise(dev, "gfx", 1.5) if load else 0))
    v7 = hive.rocm >= (7, 0, 0)
    usage: dict = {
        "gfx_activity": unit(gfx, "%"),
        "umc_activity": unit(_pct(gfx * 0.42), "%"),
        "mm_activity": NA,
        "vcn_activity": [NA] * VCN_PER_GPU if v7 else [unit(0, "%")] * VCN_PER_GPU,
        "jpeg_activity": [NA] * JPEG_PER_GPU if v7 else [unit(0, "%")] * JPEG_PER_GPU,
    }
    if hive.rocm < (6, 3, 0):
        return usage
    count = len(parts)
    xcc = max(1, hive.spec.xcds // count)
    jpeg_slots = 40 if v7 else 32
    jpeg = min(JPEG_PER_GPU, 8 * xcc)  # observed: 32 slots in SPX, 8 per XCP in CPX
    vcn = max(1, VCN_PER_GPU // count)
    busy: dict = {}
    for k, part in enumerate(parts):
        values: list[dict[str, Any] | str] = []
        for x in range(8):
            if x < xcc:
                noise = _noise(dev, f"xcc{k}.{x}", 2.0) if part["load"] else 0
                values.append(unit(_pct(part["load"] * 100 + noise), "%"))
            else:
                values.append(NA)
        busy[f"xcp_{k}"] = values
    usage["gfx_busy_inst"] = busy
    if hive.rocm < (6, 4, 0):
        usage["gfx_busy_acc"] = {k: [unit(0, "%") if v != NA else NA for v in vals]
                                 for k, vals in busy.items()}
    usage["jpeg_busy"] = {f"xcp_{k}": [unit(0, "%")] * jpeg + [NA] * (jpeg_slots - jpeg)
                          for k in range(count)}
    usage["vcn_busy"] = {f"xcp_{k}": [unit(0, "%")] * vcn + [NA] * (VCN_PER_GPU - vcn)
                         for k in range(count)}
    return usage


def _order_power(hive: Hive, power: dict) -> dict:
    if hive.rocm < (6, 3, 0):  # 6.1/6.2: power_management before throttle_status
        keys = ["socket_power", "gfx_voltage", "soc_voltage", "mem_voltage", "power_management",
                "throttle_status"]
        return {k: power[k] for k in keys}
    return power


def metric_record(hive: Hive, dev: Device, sections: list[str]) -> dict:
    gpu = hive.gpus[dev.gpu]
    na_secondary = not dev.primary and hive.rocm >= (6, 4, 1)
    load = _device_load(hive, dev)
    idle, peak, _ = POWER.get(hive.spec.model, (150, 750, 5325))
    rec: dict = {"gpu": dev.index}
    for section in sections:
        if section == "usage":
            rec["usage"] = NA if na_secondary else _usage(hive, dev)
        elif section == "power":
            watts = NA if na_secondary else unit(
                int(round(idle + (peak - idle) * 0.92 * load + _noise(dev, "power", 3))), "W")
            rec["power"] = _order_power(hive, {
                "socket_power": watts, "gfx_voltage": NA, "soc_voltage": NA, "mem_voltage": NA,
                "throttle_status": NA, "power_management": "ENABLED"})
        elif section == "temperature":
            if na_secondary:
                rec["temperature"] = {"edge": NA, "hotspot": NA, "mem": NA}
            else:
                rec["temperature"] = {
                    "edge": NA,
                    "hotspot": unit(int(round(38 + 34 * load + _noise(dev, "hot", 1))), "C"),
                    "mem": unit(int(round(33 + 25 * load + _noise(dev, "mem", 1))), "C"),
                }
        elif section == "ecc":
            ecc = gpu["ecc"]
            rec["ecc"] = {
                "total_correctable_count": ecc["correctable"],
                "total_uncorrectable_count": ecc["uncorrectable"],
                "total_deferred_count": ecc.get("deferred", 0),
                "cache_correctable_count": 0,
                "cache_uncorrectable_count": 0,
            }
        elif section == "ecc_blocks":
            ecc = gpu["ecc"]
            blocks = {}
            for name in ("UMC", "SDMA", "GFX", "MMHUB", "PCIE_BIF", "HDP", "XGMI_WAFL"):
                own = name == "UMC"
                blocks[name] = {"correctable_count": ecc["correctable"] if own else 0,
                                "uncorrectable_count": ecc["uncorrectable"] if own else 0,
                                "deferred_count": ecc.get("deferred", 0) if own else 0}
            rec["ecc_blocks"] = blocks
        elif section == "mem_usage":
            total = vram_total_for(hive, dev)
            used = min(total, int(hive.gpus[dev.gpu]["partitions"][dev.partition]["vram_used_mb"]))
            free = total - used
            rec["mem_usage"] = {
                "total_vram": unit(total, "MB"), "used_vram": unit(used, "MB"),
                "free_vram": unit(free, "MB"), "total_visible_vram": unit(total, "MB"),
                "used_visible_vram": unit(used, "MB"), "free_visible_vram": unit(free, "MB"),
                "total_gtt": unit(GTT_TOTAL_MB, "MB"), "used_gtt": unit(GTT_USED_MB, "MB"),
                "free_gtt": unit(GTT_TOTAL_MB - GTT_USED_MB, "MB"),
            }
    return rec


# -- partition ---------------------------------------------------------------------------
def current_rows(hive: Hive, devs: list[Device]) -> list[dict]:
    rows = []
    for dev in devs:
        gpu = hive.gpus[dev.gpu]
        if hive.rocm < (6, 4, 0):  # before 6.4.0: id list on the primary, N/A on secondaries
            pid = ",".join(str(i) for i in range(dev.count)) if dev.primary else NA
        else:
            pid = str(dev.partition)
        rows.append({"gpu_id": dev.index, "memory": gpu["memory_mode"],
                     "accelerator_type": gpu["compute_mode"],
                     "accelerator_profile_index": hive.profile_index(gpu["compute_mode"]),
                     "partition_id": pid})
    return rows


def memory_rows(hive: Hive, devs: list[Device]) -> list[dict]:
    caps = ",".join(hive.memory_caps()) or NA
    return [{"gpu_id": d.index, "memory_partition_caps": caps,
             "current_memory_partition": hive.gpus[d.gpu]["memory_mode"]} for d in devs]


PROFILE_KEYS = ("gpu_id", "profile_index", "memory_partition_caps", "accelerator_type",
                "partition_id", "num_partitions", "num_resources", "resource_index",
                "resource_type", "resource_instances", "resources_shared")
RESOURCE_KEYS = ("resource_index", "resource_type", "resource_instances", "resources_shared")


def profile_rows(hive: Hive, devs: list[Device]) -> tuple[list[dict], list[dict]]:
    profiles: list[dict[str, Any]] = []
    resources: list[dict[str, Any]] = []
    if not hive.root:
        for dev in devs:
            row: dict[str, Any] = dict.fromkeys(PROFILE_KEYS, NA)
            row["gpu_id"] = dev.index if hive.rocm >= (7, 0, 0) else NA
            row["partition_id"] = str(dev.partition)
            profiles.append(row)
            resources.append(dict.fromkeys(RESOURCE_KEYS, NA))
        return profiles, resources
    for dev in devs:
        active = hive.gpus[dev.gpu]["compute_mode"]
        resource_index = 0
        for prof in hive.profiles():
            for r, (rtype, instances, shared) in enumerate(prof["resources"]):
                row = dict.fromkeys(PROFILE_KEYS, "")
                if r == 0:
                    is_active = prof["type"] == active
                    row.update(
                        profile_index=prof["index"],
                        memory_partition_caps=",".join(prof["caps"]) or NA,
                        accelerator_type=prof["type"] + ("*" if is_active else ""),
                        partition_id=str(dev.partition) if is_active else NA,
                        num_partitions=prof["count"], num_resources=len(prof["resources"]))
                if resource_index == 0:
                    row["gpu_id"] = dev.index
                row.update(resource_index=resource_index, resource_type=rtype,
                           resource_instances=instances, resources_shared=shared)
                profiles.append(row)
                resources.append({k: row[k] for k in RESOURCE_KEYS})
                resource_index += 1
    return profiles, resources
