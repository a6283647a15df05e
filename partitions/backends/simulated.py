"""An in-process simulated fleet: no subprocess, for planning and scale tests (1,000 × 8 GPUs).

It obeys the same hardware rules as the emulator and the real GPUs (valid pairs per model
from geometry, NPS node-wide, compute mode re-derived after an NPS change, busy GPUs refuse)
and reports through the same value types as the amd-smi backend. Everything it reports is
marked ``emulated`` (simulated data is never presented as real).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from partitions.backends.errors import DeviceBusy, DeviceNotFound, InvalidValue, SettingUnavailable
from partitions.backends.types import (
    AcceleratorProfile,
    GpuInfo,
    LogicalDevice,
    Metrics,
    NodeInventory,
    PartitionInfo,
    PartitionState,
    StaticInfo,
    ToolVersion,
)
from partitions.geometry import ComputeMode, GpuSpec, MemoryMode, get_spec

SIM_VERSION = ToolVersion(tool="simulated", library="simulated", rocm="7.1.0")



@dataclass
class SimulatedNode:
    """Mutable state of one simulated node."""

    name: str
    spec: GpuSpec
    compute_modes: list[ComputeMode]
    memory_mode: MemoryMode
    busy_gpus: set[int] = field(default_factory=set)
    load: dict[tuple[int, int], float] = field(default_factory=dict)  # (gpu, partition) -> 0..1
    seed: int = 0


class SimulatedFleet:
    """N nodes of ``gpu_count`` GPUs each, all in the GPU model's default mode at start."""

    def __init__(self, nodes: int = 2, gpu_count: int = 8, gpu_model: str = "MI300X",
                 prefix: str = "sim-", seed: int = 0) -> None:
        spec = get_spec(gpu_model)
        compute, memory = spec.default_pair
        self._lock = threading.Lock()
        self.nodes: dict[str, SimulatedNode] = {
            f"{prefix}{i:04d}": SimulatedNode(
                name=f"{prefix}{i:04d}", spec=spec, compute_modes=[compute] * gpu_count,
                memory_mode=memory, seed=seed * 1_000_003 + i,
            )
            for i in range(nodes)
        }

    def backend(self, node: str) -> SimulatedBackend:
        try:
            return SimulatedBackend(state=self.nodes[node], lock=self._lock)
        except KeyError:
            raise DeviceNotFound(f"no simulated node {node!r}") from None


class SimulatedBackend:
    """The Backend protocol over one :class:`SimulatedNode`."""

    def __init__(self, state: SimulatedNode | None = None, *, lock: threading.Lock | None = None,
                 node: str = "sim-0000", gpu_model: str = "MI300X", gpu_count: int = 8) -> None:
        if state is None:
            spec = get_spec(gpu_model)
            state = SimulatedNode(name=node, spec=spec, compute_modes=[spec.default_pair[0]] * gpu_count,
                                  memory_mode=spec.default_pair[1])
        self.state = state
        self._lock = lock or threading.Lock()

    # --- reads -------------------------------------------------------------------------------
    def version(self) -> ToolVersion:
        return SIM_VERSION

    def inventory(self) -> NodeInventory:
        s = self.state
        spec = s.spec
        gpus = []
        logical = 0
        for index, compute in enumerate(s.compute_modes):
            count = spec.partition_count(compute)
            memory_mb = int(spec.memory_gb * 1024 / count)
            bus = 0x0C + index * 0x10
            partitions = tuple(
                PartitionInfo(
                    partition_id=p, logical_index=logical + p, bdf=f"0000:{bus:02x}:00.{p}",
                    uuid=f"sim-{s.name}-{index}-{p}", render_node=f"renderD{128 + logical + p}",
                    compute_units=spec.cus // count, memory_mb=memory_mb,
                )
                for p in range(count)
            )
            logical += count
            gpus.append(GpuInfo(
                index=index, bdf=f"0000:{bus:02x}:00.0", uuid=f"sim-{s.name}-{index}",
                market_name=f"AMD Instinct {spec.model} (simulated)", gpu_model=spec.model,
                gfx_target=spec.gfx_target, compute_mode=str(compute), memory_mode=str(s.memory_mode),
                memory_caps=tuple(str(m) for m in spec.memory_modes), profiles=self._profiles(compute),
                compute_units=spec.cus, vram_mb=spec.vram_mb_reported or spec.memory_gb * 1024,
                partitions=partitions,
            ))
        return NodeInventory(version=SIM_VERSION, gpus=tuple(gpus), emulated=True)

    def _profiles(self, active: ComputeMode) -> tuple[AcceleratorProfile, ...]:
        spec = self.state.spec
        caps: dict[ComputeMode, list[str]] = {}
        for compute, memory in list(spec.valid_pairs):
            caps.setdefault(compute, []).append(str(memory))
        return tuple(
            AcceleratorProfile(profile_index=i, accelerator_type=str(mode), memory_caps=tuple(caps.get(mode, ())),
                               num_partitions=spec.partition_count(mode), active=mode == active,
                               resources={"XCC": spec.xcds // spec.partition_count(mode)})
            for i, mode in enumerate(spec.compute_modes)
        )

    def list_devices(self) -> tuple[LogicalDevice, ...]:
        return tuple(
            LogicalDevice(logical_index=p.logical_index, bdf=p.bdf, uuid=p.uuid, partition_id=p.partition_id,
                          render=p.render_node)
            for g in self.inventory().gpus for p in g.partitions
        )

    def static_info(self) -> tuple[StaticInfo, ...]:
        return tuple(
            StaticInfo(logical_index=p.logical_index, market_name=g.market_name, device_id=self.state.spec.pci_device_id,
                       num_compute_units=p.compute_units, gfx_target=g.gfx_target, vram_mb=p.memory_mb,
                       compute_mode=g.compute_mode, memory_mode=g.memory_mode, partition_id=p.partition_id)
            for g in self.inventory().gpus for p in g.partitions
        )

    def partition_state(self) -> tuple[PartitionState, ...]:
        return tuple(
            PartitionState(logical_index=p.logical_index, compute_mode=g.compute_mode, memory_mode=g.memory_mode,
                           partition_id=p.partition_id, memory_caps=g.memory_caps, profiles=g.profiles)
            for g in self.inventory().gpus for p in g.partitions
        )

    def metrics(self, logical_indices: Iterable[int] | None = None) -> tuple[Metrics, ...]:
        """Synthetic telemetry following each partition's load (0..1), with slow noise.

        Like the real tool on ROCm ≥ 6.4.1, only a GPU's primary partition reports power,
        temperature and per-XCP activity."""
        wanted = None if logical_indices is None else set(logical_indices)
        now = time.time()
        out = []
        for g in self.inventory().gpus:
            loads = [self.state.load.get((g.index, p.partition_id), 0.0) for p in g.partitions]
            wave = 0.03 * math.sin(now / 7.0 + self.state.seed + g.index)
            busy = {p.partition_id: max(0.0, min(100.0, 100 * (load + wave * (load > 0)))) for p, load in zip(g.partitions, loads)}
            mean = sum(busy.values()) / len(busy)
            for p, load in zip(g.partitions, loads):
                if wanted is not None and p.logical_index not in wanted:
                    continue
                primary = p.partition_id == 0
                total = p.memory_mb or 0
                out.append(Metrics(
                    logical_index=p.logical_index,
                    gfx_activity=round(mean, 1) if primary else None,
                    gfx_busy_inst={k: (round(v, 1),) for k, v in busy.items()} if primary else {},
                    vram_used_mb=int(total * (0.02 + 0.9 * load)),
                    vram_total_mb=total,
                    power_w=round(140 + 600 * mean / 100, 1) if primary else None,
                    temperature_hotspot_c=round(38 + 45 * mean / 100, 1) if primary else None,
                    temperature_mem_c=round(34 + 30 * mean / 100, 1) if primary else None,
                    ecc_correctable=0, ecc_uncorrectable=0, ecc_deferred=0,
                ))
        return tuple(out)

    # --- changes -----------------------------------------------------------------------------
    def set_compute_mode(self, gpu_indices: list[int], mode: str) -> NodeInventory:
        s = self.state
        try:
            compute = ComputeMode(mode.upper())
        except ValueError:
            raise InvalidValue(f"{mode!r} is not a compute mode; valid: {', '.join(s.spec.compute_modes)}") from None
        with self._lock:
            for index in gpu_indices:
                if not 0 <= index < len(s.compute_modes):
                    raise DeviceNotFound(f"no GPU {index} on simulated node {s.name}")
                # availability before busy, as the driver checks (aqua_vanjaram_switch_partition_mode)
                if (compute, s.memory_mode) not in s.spec.valid_pairs:
                    raise SettingUnavailable(
                        f"{s.spec.model} cannot run {compute} under {s.memory_mode}; switch the memory mode first"
                    )
                if index in s.busy_gpus:
                    raise DeviceBusy(f"GPU {index} is busy (processes running)")
            for index in gpu_indices:
                s.compute_modes[index] = compute
        return self.inventory()

    def set_memory_mode(self, mode: str) -> NodeInventory:
        """NPS is node-wide: every GPU switches, and the driver re-derives the compute mode."""
        s = self.state
        try:
            memory = MemoryMode(mode.upper())
        except ValueError:
            raise InvalidValue(f"{mode!r} is not a memory mode") from None
        if memory not in s.spec.memory_modes or not s.spec.memory_switchable:
            raise InvalidValue(f"{s.spec.model} does not support {memory}; valid: {', '.join(s.spec.memory_modes)}")
        with self._lock:
            if s.busy_gpus:
                raise DeviceBusy(f"GPUs {sorted(s.busy_gpus)} are busy; an NPS change needs every GPU idle")
            compute = s.spec.compute_after_reload(memory)  # the driver's auto mode (NPS4 -> CPX)
            if (compute, memory) not in s.spec.valid_pairs:
                compute = next(c for c, m in s.spec.valid_pairs if m == memory)
            s.memory_mode = memory
            s.compute_modes = [compute] * len(s.compute_modes)
        return self.inventory()
