"""GPU geometry: what each AMD Instinct model can be partitioned into.

Pure Python (no Django). Every figure comes from docs/hardware/amd-smi.md (section 9);
figures that the reference calls inferred, nominal or unobserved carry ``estimated=True``
and a note, so the UI and API can say so.

Units: memory in GiB (2**30 bytes). A GPU sold as "192 GB" has 192 GiB of HBM; amd-smi
reports it as 196592 MB where its "MB" is MiB (bytes // 2**20).

Vocabulary:
- compute mode (SPX/DPX/TPX/QPX/CPX): how many logical devices ("partitions") one GPU
  exposes; a GPU-level choice.
- memory mode (NPS1/NPS2/NPS4): how HBM is split into NUMA domains; changing it reloads the
  driver for every GPU of the node, so it is a node-level choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Iterable, Mapping


class ComputeMode(StrEnum):
    SPX = "SPX"
    DPX = "DPX"
    TPX = "TPX"
    QPX = "QPX"
    CPX = "CPX"


class MemoryMode(StrEnum):
    NPS1 = "NPS1"
    NPS2 = "NPS2"
    NPS4 = "NPS4"
    NPS8 = "NPS8"


# Partitions per GPU for each compute mode, except CPX which is one per XCD.
_FIXED_COUNTS = {ComputeMode.SPX: 1, ComputeMode.DPX: 2, ComputeMode.TPX: 3, ComputeMode.QPX: 4}


class GeometryError(ValueError):
    """Base class for geometry errors: the message is meant for an operator."""


class UnknownGpuModel(GeometryError):
    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"Unknown GPU model {model!r}; known models: {', '.join(SPECS)}."
        )


class InvalidPartitionMode(GeometryError):
    """A (compute, memory) pair this GPU cannot run; the message lists the valid pairs."""

    def __init__(self, model: str, compute: str, memory: str, valid: Iterable[tuple[str, str]]) -> None:
        self.model = model
        self.compute = compute
        self.memory = memory
        self.valid = tuple(valid)
        pairs = ", ".join(f"{c}+{m}" for c, m in self.valid)
        super().__init__(f"{model} cannot run {compute}+{memory}; valid combinations: {pairs}.")


@dataclass(frozen=True)
class PartitionLayout:
    """What one GPU exposes in one (compute, memory) mode: ``count`` equal partitions."""

    gpu_model: str
    compute_mode: ComputeMode
    memory_mode: MemoryMode
    count: int
    xcds: int
    cus: int
    memory_gb: float
    """Nominal memory per partition (GiB): the GPU's HBM divided evenly among partitions."""
    estimated: bool
    note: str = ""

    @property
    def total_memory_gb(self) -> float:
        return self.memory_gb * self.count


@dataclass(frozen=True)
class GpuSpec:
    """Static facts about one GPU model."""

    model: str
    memory_gb: int
    memory_type: str
    xcds: int
    cus: int
    gfx_target: str
    pci_device_id: str
    compute_modes: tuple[ComputeMode, ...]
    memory_modes: tuple[MemoryMode, ...]
    valid_pairs: tuple[tuple[ComputeMode, MemoryMode], ...]
    """Pairs AMD documents as working on this model (first one = power-on default)."""
    conditional_pairs: Mapping[tuple[ComputeMode, MemoryMode], str] = field(default_factory=dict)
    """Pairs that depend on firmware or ROCm version; usable only when the hardware's
    ``memory_partition_caps`` list them. Value: the condition, in words."""
    min_rocm: Mapping[tuple[ComputeMode, MemoryMode], tuple[int, int]] = field(default_factory=dict)
    """Conditional pairs that every GPU of this model supports from a ROCm version on."""
    vram_mb_reported: int | None = None
    """Total VRAM as amd-smi prints it (MiB); None where no capture exists."""
    partition_memory_gb: Mapping[ComputeMode, float] = field(default_factory=dict)
    """Per-partition memory where it is not simply memory_gb / count (MI300A)."""
    apu: bool = False
    memory_switchable: bool = True
    estimated_fields: tuple[str, ...] = ()
    """Fields (or "partition_memory") that the reference calls inferred or nominal."""
    notes: str = ""

    @property
    def default_pair(self) -> tuple[ComputeMode, MemoryMode]:
        return self.valid_pairs[0]

    def partition_count(self, compute: ComputeMode | str) -> int:
        compute = ComputeMode(compute)
        if compute not in self.compute_modes:
            raise GeometryError(
                f"{self.model} has no {compute} mode; compute modes: "
                f"{', '.join(self.compute_modes)}."
            )
        return self.xcds if compute is ComputeMode.CPX else _FIXED_COUNTS[compute]

    def pairs_for_rocm(self, rocm: tuple[int, ...]) -> tuple[tuple[ComputeMode, MemoryMode], ...]:
        """Validated pairs plus the conditional ones this ROCm version enables for everyone."""
        extra = tuple(pair for pair, version in self.min_rocm.items() if tuple(rocm[:2]) >= version)
        return self.valid_pairs + extra

    def allowed_pairs(
        self, caps: Mapping[str, Iterable[str]] | None = None
    ) -> tuple[tuple[ComputeMode, MemoryMode], ...]:
        """Valid pairs; with ``caps`` (compute mode -> memory modes, as read from
        ``amd-smi partition --accelerator``) the hardware's own list decides, limited to
        pairs this model can run at all (validated or conditional)."""
        if caps is None:
            return self.valid_pairs
        known = list(self.valid_pairs) + list(self.conditional_pairs)
        reported = {
            (ComputeMode(c.rstrip("*").strip()), MemoryMode(m.strip()))
            for c, mems in caps.items()
            for m in mems
        }
        return tuple(pair for pair in known if pair in reported)

    def layout(
        self,
        compute: ComputeMode | str,
        memory: MemoryMode | str,
        caps: Mapping[str, Iterable[str]] | None = None,
    ) -> PartitionLayout:
        """The partitions one GPU exposes in ``compute``+``memory``.

        Raises InvalidPartitionMode (naming the valid pairs) for a pair this GPU cannot run.
        """
        valid = self.allowed_pairs(caps)
        try:
            pair = (ComputeMode(str(compute).upper()), MemoryMode(str(memory).upper()))
        except ValueError:
            raise InvalidPartitionMode(self.model, str(compute), str(memory), valid) from None
        if pair not in valid:
            raise InvalidPartitionMode(self.model, pair[0], pair[1], valid)
        compute_mode, memory_mode = pair
        count = self.partition_count(compute_mode)
        estimated = "partition_memory" in self.estimated_fields
        note = self.conditional_pairs.get(pair, "")
        if estimated:
            note = "; ".join(filter(None, [note, self.notes]))
        return PartitionLayout(
            gpu_model=self.model,
            compute_mode=compute_mode,
            memory_mode=memory_mode,
            count=count,
            xcds=self.xcds // count,
            cus=self.cus // count,
            memory_gb=self.smallest_partition_gb(compute_mode),
            estimated=estimated,
            note=note,
        )

    def layouts(self) -> list[PartitionLayout]:
        """Every validated layout, in the order of ``valid_pairs``."""
        return [self.layout(c, m) for c, m in self.valid_pairs]

    def smallest_partition_gb(self, compute: ComputeMode | str) -> float:
        """Memory of one partition in ``compute`` mode (the same for every memory mode)."""
        count = self.partition_count(compute)
        return self.partition_memory_gb.get(ComputeMode(compute), round(self.memory_gb / count, 2))

    def modes_by_partition_size(self) -> tuple[ComputeMode, ...]:
        """Compute modes from the smallest partitions (CPX) to the largest (SPX)."""
        return tuple(sorted(self.compute_modes, key=self.partition_count, reverse=True))


C, M = ComputeMode, MemoryMode

_MI300_PAIRS = (
    (C.SPX, M.NPS1),
    (C.DPX, M.NPS1),
    (C.QPX, M.NPS1),
    (C.QPX, M.NPS4),
    (C.CPX, M.NPS1),
    (C.CPX, M.NPS4),
)
_MI300_CONDITIONAL = {
    (C.DPX, M.NPS2): "firmware-dependent: only where memory_partition_caps list NPS2 for DPX",
}
_MI350_PAIRS = (
    (C.SPX, M.NPS1),
    (C.DPX, M.NPS1),
    (C.DPX, M.NPS2),
    (C.QPX, M.NPS1),
    (C.CPX, M.NPS1),
)
_MI350_CONDITIONAL = {
    (C.QPX, M.NPS2): "ROCm 7.13 or newer",
}

SPECS: dict[str, GpuSpec] = {
    spec.model: spec
    for spec in (
        GpuSpec(
            model="MI300X",
            memory_gb=192,
            memory_type="HBM3",
            xcds=8,
            cus=304,
            gfx_target="gfx942",
            pci_device_id="0x74a1",
            compute_modes=(C.SPX, C.DPX, C.QPX, C.CPX),
            memory_modes=(M.NPS1, M.NPS4),
            valid_pairs=_MI300_PAIRS,
            conditional_pairs=_MI300_CONDITIONAL,
            vram_mb_reported=196592,
        ),
        GpuSpec(
            model="MI325X",
            memory_gb=256,
            memory_type="HBM3E",
            xcds=8,
            cus=304,
            gfx_target="gfx942",
            pci_device_id="0x74a5",
            compute_modes=(C.SPX, C.DPX, C.QPX, C.CPX),
            memory_modes=(M.NPS1, M.NPS4),
            valid_pairs=_MI300_PAIRS,
            conditional_pairs=_MI300_CONDITIONAL,
            estimated_fields=("vram_mb_reported",),
            notes="amd-smi VRAM total for MI325X not observed",
        ),
        GpuSpec(
            model="MI300A",
            memory_gb=128,
            memory_type="HBM3 (unified with 24 Zen 4 cores)",
            xcds=6,
            cus=228,
            gfx_target="gfx942",
            pci_device_id="0x74a0",
            compute_modes=(C.SPX, C.TPX, C.CPX),
            memory_modes=(M.NPS1,),
            valid_pairs=((C.SPX, M.NPS1), (C.TPX, M.NPS1), (C.CPX, M.NPS1)),
            # AMD's MI300A guide gives ~32 GB (TPX) and ~16 GB (CPX); amd-smi shows 128/N.
            # Size against the smaller, documented figure.
            partition_memory_gb={C.TPX: 32.0, C.CPX: 16.0},
            apu=True,
            memory_switchable=False,
            estimated_fields=("partition_memory",),
            notes=(
                "APU memory is shared with the CPU: per-partition memory is nominal "
                "(amd-smi shows 128/3 and 128/6 GB, AMD documents ~32/~16 GB)"
            ),
        ),
        GpuSpec(
            model="MI308X",
            memory_gb=192,
            memory_type="HBM3",
            xcds=4,
            cus=80,
            gfx_target="gfx942",
            pci_device_id="0x74a2",
            compute_modes=(C.SPX, C.DPX, C.CPX),
            memory_modes=(M.NPS1, M.NPS4),
            valid_pairs=((C.SPX, M.NPS1), (C.DPX, M.NPS1), (C.CPX, M.NPS1), (C.CPX, M.NPS4)),
            estimated_fields=("partition_memory", "memory_modes", "valid_pairs"),
            notes="MI308X modes and memory per partition are inferred from XCD count and kernel rules",
        ),
        GpuSpec(
            model="MI350X",
            memory_gb=288,
            memory_type="HBM3E",
            xcds=8,
            cus=256,
            gfx_target="gfx950",
            pci_device_id="0x75a0",
            compute_modes=(C.SPX, C.DPX, C.QPX, C.CPX),
            memory_modes=(M.NPS1, M.NPS2),
            valid_pairs=_MI350_PAIRS,
            conditional_pairs=_MI350_CONDITIONAL,
            min_rocm={(C.QPX, M.NPS2): (7, 13)},
            estimated_fields=("partition_memory", "vram_mb_reported"),
            notes="MI350-series memory per partition is nominal (288/N); not observed on hardware",
        ),
        GpuSpec(
            model="MI355X",
            memory_gb=288,
            memory_type="HBM3E",
            xcds=8,
            cus=256,
            gfx_target="gfx950",
            pci_device_id="0x75a3",
            compute_modes=(C.SPX, C.DPX, C.QPX, C.CPX),
            memory_modes=(M.NPS1, M.NPS2),
            valid_pairs=_MI350_PAIRS,
            conditional_pairs=_MI350_CONDITIONAL,
            min_rocm={(C.QPX, M.NPS2): (7, 13)},
            estimated_fields=("partition_memory", "vram_mb_reported"),
            notes="MI350-series memory per partition is nominal (288/N); not observed on hardware",
        ),
    )
}

GPU_MODELS: tuple[str, ...] = tuple(SPECS)


def get_spec(model: str) -> GpuSpec:
    """The spec for ``model`` ("MI300X", case-insensitive; "AMD Instinct MI300X" accepted)."""
    key = model.strip().upper().removeprefix("AMD INSTINCT").strip()
    try:
        return SPECS[key]
    except KeyError:
        raise UnknownGpuModel(model) from None


def layout(model: str, compute: str, memory: str) -> PartitionLayout:
    """Shortcut for ``get_spec(model).layout(compute, memory)``."""
    return get_spec(model).layout(compute, memory)
