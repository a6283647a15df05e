"""Pure hive model of the emulator: GPUs, partitions, logical devices, the hardware rules.

Works on the plain JSON-able dict stored in the state file (see ``state.py`` for the format);
no I/O here, except the liveness probe of engine pids (``engines.py``: a process that died
holds nothing, so every read of the hive forgets it). Hardware facts (modes, valid pairs, XCD/CU counts, memory) come from
``partitions.geometry``; only amd-smi presentation facts (BDF buses, OAM ids, resource counts
of the profile table) live here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from partitions.geometry import ComputeMode, GpuSpec, MemoryMode, get_spec

from .engines import IDLE_VRAM_MB, process_count, reap_dead_engines

# Bus numbers and OAM ids of a real 8 x MI300X node (ROCm 7.0 default view, fixture).
_BUSES = ("0c", "22", "38", "5c", "9f", "af", "bf", "df")
_OAM_IDS = (2, 1, 0, 3, 7, 5, 4, 6)
VCN_PER_GPU = 4
JPEG_PER_GPU = 32
DMA_PER_GPU = 16
GTT_TOTAL_MB = 515895
GTT_USED_MB = 21
# (idle W, max W, memory bandwidth GB/s) per model; amd-smi presentation values.
POWER = {"MI300X": (140, 750, 5325), "MI325X": (160, 1000, 6000), "MI300A": (110, 550, 5325),
         "MI308X": (120, 650, 5325), "MI350X": (180, 1000, 8000), "MI355X": (210, 1400, 8000)}


def parse_version(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in re.findall(r"\d+", str(text))[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


class RuleError(Exception):
    """A hardware rule refused a change: ``status`` is the amdsmi status name."""

    def __init__(self, status: str, detail: str = "") -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{status}: {detail}")


@dataclass(frozen=True)
class Device:
    """One logical device as amd-smi enumerates it."""

    index: int  # logical id ("gpu")
    gpu: int  # physical GPU index in the state
    partition: int  # partition id (PCI function digit)
    count: int  # partitions on this physical GPU
    bdf: str
    uuid: str
    kfd_id: int
    node_id: int
    render: str
    card: str
    hip_uuid: str

    @property
    def primary(self) -> bool:
        return self.partition == 0


def _h(*parts: object) -> bytes:
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()


def vram_total_mb(spec: GpuSpec) -> int:
    """Whole-GPU VRAM total as amd-smi prints it (MiB)."""
    if spec.vram_mb_reported:
        return spec.vram_mb_reported
    return spec.memory_gb * 1024 - 16  # same 16 MiB reserve as the observed MI300X/MI355X values


def new_gpu(index: int, spec: GpuSpec, compute: str, memory: str) -> dict:
    bus = _BUSES[index] if index < len(_BUSES) else format(0x03 + 2 * (index - len(_BUSES)), "02x")
    serial = "0x" + _h("serial", spec.model, index).hex()[:16].upper()
    gpu = {
        "bus": bus,
        "serial": serial,
        "oam_id": _OAM_IDS[index] if index < len(_OAM_IDS) else index,
        "compute_mode": compute,
        "memory_mode": memory,
        "pending_memory_mode": None,
        "processes": 0,
        "ecc": {"correctable": 0, "uncorrectable": 0, "deferred": 0},
        "partitions": [],
    }
    resize_partitions(gpu, spec)
    return gpu


def resize_partitions(gpu: dict, spec: GpuSpec) -> None:
    """After a compute change the partitions are new devices: loads reset to idle."""
    count = spec.partition_count(gpu["compute_mode"])
    gpu["partitions"] = [{"load": 0.0, "vram_used_mb": IDLE_VRAM_MB} for _ in range(count)]


class Hive:
    """The whole node (one XGMI hive): every GPU of the state file."""

    def __init__(self, data: dict) -> None:
        self.data = data
        # The kernel frees a killed process's memory and queues at once: every reader of the
        # hive (busy checks, telemetry, listings) sees dead engines gone, whoever writes next.
        reap_dead_engines(data)
        self.spec = get_spec(data["gpu_model"])
        self.rocm = parse_version(data["rocm"])

    # -- static facts -------------------------------------------------------------------
    @property
    def gpus(self) -> list[dict]:
        return self.data["gpus"]

    @property
    def root(self) -> bool:
        return bool(self.data.get("root", True))

    @property
    def missing_groups(self) -> list[str]:
        """Groups (of render, video) the non-root user lacks; [] for root or a user in both."""
        if self.root:
            return []
        return sorted({str(g) for g in self.data.get("missing_groups", [])} & {"render", "video"})

    def allowed_pairs(self) -> tuple[tuple[str, str], ...]:
        """Valid (compute, memory) pairs for this model on this ROCm version."""
        pairs = [(str(c), str(m)) for c, m in self.spec.pairs_for_rocm(self.rocm)]
        for c, m in self.data.get("extra_pairs", []):  # firmware-dependent pairs, opt-in
            pairs.append((c, m))
        return tuple(pairs)

    def memory_caps(self) -> list[str]:
        """``memory_partition_caps`` of the device ([] = N/A: not switchable)."""
        if not self.spec.memory_switchable:
            return []
        return [str(m) for m in self.spec.memory_modes]

    def profiles(self) -> list[dict]:
        """Accelerator partition profiles (index order = compute modes of the model)."""
        out = []
        pairs = self.allowed_pairs()
        for index, mode in enumerate(self.spec.compute_modes):
            count = self.spec.partition_count(mode)
            caps = [m for m in (str(x) for x in MemoryMode) if (str(mode), m) in pairs]
            resources = [
                ("XCC", max(1, self.spec.xcds // count), 1),
                ("DECODER", max(1, VCN_PER_GPU // count), max(1, count // VCN_PER_GPU)),
                ("DMA", max(1, DMA_PER_GPU // count), 1),
                ("JPEG", max(1, JPEG_PER_GPU // count), 1),
            ]
            out.append({
                "index": index,
                "type": str(mode),
                "caps": caps if self.spec.memory_switchable else [],
                "count": count,
                "resources": resources,
            })
        return out

    def profile_index(self, mode: str) -> int:
        return [str(m) for m in self.spec.compute_modes].index(mode)

    # -- logical devices ----------------------------------------------------------------
    def devices(self) -> list[Device]:
        out: list[Device] = []
        dev_id = self.spec.pci_device_id[2:] or "0000"  # MI350P: no public PCI id
        per_partition_ids = self.rocm >= (7, 0, 0)
        fixed_render = self.rocm >= (6, 4, 1)
        for g, gpu in enumerate(self.gpus):
            count = len(gpu["partitions"])
            primary_index = len(out)
            for p in range(count):
                index = len(out)
                up = p if per_partition_ids else 0
                u = _h("uuid", self.spec.model, g, up).hex()
                uuid = f"{u[:2]}ff{dev_id}-0000-1000-80{u[2:4]}-{u[4:16]}"
                node = index if fixed_render or p == 0 else primary_index
                out.append(Device(
                    index=index, gpu=g, partition=p, count=count,
                    bdf=f"0000:{gpu['bus']}:00.{p}",
                    uuid=uuid,
                    kfd_id=10000 + int.from_bytes(_h("kfd", g, p)[:4], "big") % 55000,
                    node_id=2 + index,
                    render=f"renderD{128 + node}",
                    card=f"card{node}",
                    hip_uuid="GPU-" + _h("hip", g, p).hex()[:16],
                ))
        return out

    def compute_mode(self, gpu: int) -> str:
        return self.gpus[gpu]["compute_mode"]

    def memory_mode(self, gpu: int = 0) -> str:
        return self.gpus[gpu]["memory_mode"]

    def pending_memory_mode(self, gpu: int = 0) -> str | None:
        return self.gpus[gpu].get("pending_memory_mode")

    def busy(self, gpu: int | None = None, force: bool = False) -> bool:
        if force:
            return True
        gpus = self.gpus if gpu is None else [self.gpus[gpu]]
        return any(process_count(g) > 0 for g in gpus)

    # -- changes ------------------------------------------------------------------------
    def check_compute(self, gpu: int, mode: str, force_busy: bool = False) -> None:
        """Raise RuleError for a compute change the driver would refuse."""
        if mode not in [str(m) for m in self.spec.compute_modes]:
            raise RuleError("AMDSMI_STATUS_NOT_SUPPORTED", f"{self.spec.model} has no {mode}")
        # The driver validates the mode before it locks KFD (aqua_vanjaram_switch_partition_mode):
        # an unavailable mode is refused as such even on a busy GPU.
        if (mode, self.memory_mode(gpu)) not in self.allowed_pairs():
            raise RuleError("AMDSMI_STATUS_SETTING_UNAVAILABLE",
                            f"{mode} is not available under {self.memory_mode(gpu)}")
        if self.busy(gpu, force_busy):
            raise RuleError("AMDSMI_STATUS_BUSY", "processes running on the GPU")

    def set_compute(self, gpu: int, mode: str) -> None:
        g = self.gpus[gpu]
        g["compute_mode"] = mode
        resize_partitions(g, self.spec)

    def check_memory(self, mode: str) -> None:
        if not self.spec.memory_switchable:
            raise RuleError("AMDSMI_STATUS_NOT_SUPPORTED", f"{self.spec.model} cannot switch NPS")
        if mode not in self.memory_caps():
            raise RuleError("AMDSMI_STATUS_INVAL", f"{mode} not in {self.memory_caps()}")

    def set_pending_memory(self, mode: str, gpus: list[int] | None = None) -> None:
        for g in gpus if gpus is not None else range(len(self.gpus)):
            self.gpus[g]["pending_memory_mode"] = mode

    def derived_compute(self, memory: str) -> str:
        """Compute mode the driver picks after a reload in ``memory`` (kernel auto-mode, see
        ``GpuSpec.compute_after_reload``: NPS4 on an 8-XCD dGPU gives CPX)."""
        picked = str(self.spec.compute_after_reload(memory))
        if (picked, memory) in self.allowed_pairs():
            return picked
        pairs = [c for c, m in self.allowed_pairs() if m == memory]
        return pairs[0] if pairs else str(self.spec.default_pair[0])

    def reload_driver(self) -> None:
        """Driver reload: pending NPS applied, compute re-derived, partitions re-created."""
        for g in self.gpus:
            if g.get("pending_memory_mode"):
                g["memory_mode"] = g["pending_memory_mode"]
                g["pending_memory_mode"] = None
            g["compute_mode"] = self.derived_compute(g["memory_mode"])
            resize_partitions(g, self.spec)


def new_hive(gpu_model: str, count: int, rocm: str, root: bool = True) -> dict:
    spec = get_spec(gpu_model)
    compute, memory = (str(x) for x in spec.default_pair)
    ComputeMode(compute)
    return {
        "format": 1,
        "gpu_model": spec.model,
        "rocm": str(rocm),
        "root": bool(root),
        "reloading_until": 0,
        "gpus": [new_gpu(i, spec, compute, memory) for i in range(int(count))],
        "faults": [],
        "env_fault_uses": {},
        "quirks": [],
    }
