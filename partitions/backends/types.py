"""Values the hardware backends return. Pure Python, frozen dataclasses.

One *logical device* is what amd-smi numbers with ``gpu`` (a partition of a physical GPU, or
the whole GPU in SPX). A *physical GPU* groups the logical devices sharing PCI bus/device;
the PCI function digit is the partition id. Memory in MiB as amd-smi prints it ("MB").
Any field the tool reports as "N/A" (or that the given outputs do not contain) is None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolVersion:
    """``amd-smi version``: tool/library/ROCm versions as printed (strings, not semver)."""

    tool: str
    library: str
    rocm: str | None
    amdgpu: str | None = None

    @property
    def rocm_tuple(self) -> tuple[int, ...]:
        """ROCm version as a tuple, e.g. (6, 4, 1); derived from the tool version when the
        ROCm field is N/A (amd-smi 26.x -> 7.0, 25.x -> 6.4, 24.7 -> 6.3, 24.6 -> 6.2,
        older -> 6.1)."""
        from partitions.backends.versions import rocm_version_tuple  # local: avoid cycle

        return rocm_version_tuple(self)


@dataclass(frozen=True)
class LogicalDevice:
    """One row of ``amd-smi list [-e]``."""

    logical_index: int
    bdf: str | None
    uuid: str | None
    partition_id: int | None = None
    kfd_id: int | None = None
    node_id: int | None = None
    render: str | None = None  # "renderD128"
    card: str | None = None  # "card0"
    hip_id: int | None = None
    hip_uuid: str | None = None


@dataclass(frozen=True)
class StaticInfo:
    """``amd-smi static -a -v -p`` for one logical device."""

    logical_index: int
    market_name: str | None
    device_id: str | None  # "0x74a1"
    num_compute_units: int | None  # per logical device
    gfx_target: str | None  # "gfx942"
    vram_mb: int | None
    compute_mode: str | None  # "SPX" ... (static "compute_partition"/"accelerator_partition")
    memory_mode: str | None  # "NPS1" ...
    partition_id: int | None = None
    asic_serial: str | None = None


@dataclass(frozen=True)
class AcceleratorProfile:
    """One profile of ``amd-smi partition --accelerator`` (resources collapsed)."""

    profile_index: int
    accelerator_type: str  # "CPX" (the trailing "*" stripped)
    memory_caps: tuple[str, ...]  # ("NPS1", "NPS4")
    num_partitions: int | None
    active: bool
    resources: dict[str, int] = field(default_factory=dict)  # resource_type -> instances


@dataclass(frozen=True)
class PartitionState:
    """``amd-smi partition`` for one logical device (the ``gpu_id`` of the tool)."""

    logical_index: int
    compute_mode: str | None
    memory_mode: str | None
    partition_id: int | None
    profile_index: int | None = None
    memory_caps: tuple[str, ...] = ()
    profiles: tuple[AcceleratorProfile, ...] = ()


@dataclass(frozen=True)
class Metrics:
    """``amd-smi metric -u -m -p -t -e`` for one logical device.

    Secondary partitions report most values as N/A (None); ``gfx_busy_inst`` (XCP index ->
    per-XCC busy %, None for unused slots) is reported only on the primary partition.
    """

    logical_index: int
    gfx_activity: float | None = None  # %
    umc_activity: float | None = None  # %
    gfx_busy_inst: dict[int, tuple[float | None, ...]] = field(default_factory=dict)
    vram_used_mb: int | None = None
    vram_total_mb: int | None = None
    power_w: float | None = None
    temperature_hotspot_c: float | None = None
    temperature_mem_c: float | None = None
    ecc_correctable: int | None = None
    ecc_uncorrectable: int | None = None
    ecc_deferred: int | None = None


@dataclass(frozen=True)
class PartitionInfo:
    """A logical device placed on its physical GPU."""

    partition_id: int  # index on the GPU (PCI function digit)
    logical_index: int  # node-global index amd-smi uses (ROCR/HIP visible devices)
    bdf: str | None
    uuid: str | None
    render_node: str | None  # "renderD128"
    compute_units: int | None
    memory_mb: int | None  # as reported; secondaries before 6.4.1 report the whole GPU


@dataclass(frozen=True)
class GpuInfo:
    """One physical GPU with its partitions, as the backend sees it now."""

    index: int  # physical index on the node, 0.. in BDF order
    bdf: str | None  # function 0
    uuid: str | None
    market_name: str | None
    gpu_model: str | None  # geometry key ("MI300X") when recognised
    gfx_target: str | None
    compute_mode: str | None
    memory_mode: str | None
    memory_caps: tuple[str, ...]
    profiles: tuple[AcceleratorProfile, ...]
    compute_units: int | None  # whole GPU
    vram_mb: int | None  # whole GPU
    partitions: tuple[PartitionInfo, ...]


@dataclass(frozen=True)
class NodeInventory:
    """Everything a backend reports about one node at one moment."""

    version: ToolVersion | None
    gpus: tuple[GpuInfo, ...]
    emulated: bool = False
    warnings: tuple[str, ...] = ()
    """What the outputs said about how they were taken (e.g. a user missing groups)."""

    def to_json(self) -> dict[str, Any]:
        """The import/inventory JSON shape (fields unknown from the inputs are null)."""
        return {
            "gpus": [
                {
                    "index": g.index,
                    "market_name": g.market_name,
                    "gpu_model": g.gpu_model,
                    "bdf": g.bdf,
                    "uuid": g.uuid,
                    "compute_mode": g.compute_mode,
                    "memory_mode": g.memory_mode,
                    "memory_caps": list(g.memory_caps),
                    "partitions": [
                        {
                            "logical_index": p.logical_index,
                            "partition_id": p.partition_id,
                            "memory_gb": None if p.memory_mb is None else round(p.memory_mb / 1024, 2),
                            "bdf": p.bdf,
                            "uuid": p.uuid,
                            "render_node": p.render_node,
                            "compute_units": p.compute_units,
                        }
                        for p in g.partitions
                    ],
                }
                for g in self.gpus
            ],
        }
