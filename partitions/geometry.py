"""GPU geometry: what each AMD Instinct model can be partitioned into.

Pure Python (no Django). Every figure comes from docs/hardware/amd-smi.md (section 9, with the
sources of section 13); figures that the reference calls inferred, nominal or unobserved carry
``estimated=True`` and a note, so the UI and API can say so. Every (compute, memory) pair also
has a :class:`Validation` status: AMD-validated, driver-allowed (the amdgpu driver accepts it,
AMD does not list it as validated), estimated (inferred), conditional (only where the hardware
reports it) or reported (not in this table at all, accepted because the hardware's
``memory_partition_caps`` list it).

Units: memory in GiB (2**30 bytes). A GPU sold as "192 GB" has 192 GiB of HBM; amd-smi
reports it as 196592 MB where its "MB" is MiB (bytes // 2**20).

Vocabulary:
- compute mode (SPX/DPX/TPX/QPX/CPX): how many logical devices ("partitions") one GPU
  exposes; a GPU-level choice.
- memory mode (NPS1/NPS2/NPS4): how HBM is split into NUMA domains; changing it reloads the
  driver for every GPU of the node, so it is a node-level choice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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


class Validation(StrEnum):
    """How far a (compute, memory) pair is vouched for on one GPU model."""

    VALIDATED = "validated"
    """AMD documents the pair as supported on this model."""
    DRIVER_ALLOWED = "driver_allowed"
    """The amdgpu driver accepts it; AMD does not (or no longer) list it as validated."""
    ESTIMATED = "estimated"
    """Inferred (copied from a sibling model or derived from the driver's rules), not observed."""
    CONDITIONAL = "conditional"
    """Firmware/version dependent: usable only where the hardware's caps list it."""
    REPORTED = "reported"
    """Not in this table; accepted because the hardware's memory_partition_caps report it."""

    @property
    def label(self) -> str:
        """The words the UI and API show."""
        return _VALIDATION_LABELS[self]


_VALIDATION_LABELS = {
    Validation.VALIDATED: "AMD-validated",
    Validation.DRIVER_ALLOWED: "driver-allowed, not AMD-validated",
    Validation.ESTIMATED: "estimated",
    Validation.CONDITIONAL: "conditional: only where the hardware reports it",
    Validation.REPORTED: "reported by hardware, not in the geometry table",
}

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
    validation: Validation = Validation.VALIDATED

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
    pair_status: Mapping[tuple[ComputeMode, MemoryMode], Validation] = field(default_factory=dict)
    """Validation status of valid pairs that are not simply AMD-validated."""
    pair_notes: Mapping[tuple[ComputeMode, MemoryMode], str] = field(default_factory=dict)
    """Why a pair has its status (source, in words)."""
    in_catalog: bool = True
    """Whether the model catalog sizes profiles for this GPU (GPU_MODELS). The catalog's
    database constraint lists those models: adding one needs a catalog migration first."""

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

    def validation(self, compute: ComputeMode | str, memory: MemoryMode | str) -> Validation | None:
        """Status of a pair of this table (None: not in the table)."""
        pair = (ComputeMode(str(compute).upper()), MemoryMode(str(memory).upper()))
        if pair in self.valid_pairs:
            if pair in self.pair_status:
                return self.pair_status[pair]
            return Validation.ESTIMATED if "valid_pairs" in self.estimated_fields else Validation.VALIDATED
        if pair in self.conditional_pairs:
            return Validation.CONDITIONAL
        return None

    def compute_after_reload(self, memory: MemoryMode | str) -> ComputeMode:
        """Compute mode amdgpu picks after a driver (re)load in ``memory`` mode.

        The kernel's auto mode (aqua_vanjaram.c ``__aqua_vanjaram_get_auto_mode``): one memory
        partition -> SPX; as many as XCCs -> CPX; half as many -> CPX (TPX on an APU); two ->
        DPX. Anything else the driver cannot pick; the model's default then.
        """
        nps = int(MemoryMode(str(memory).upper())[3:])
        if nps == 1:
            picked = ComputeMode.SPX
        elif nps == self.xcds:
            picked = ComputeMode.CPX
        elif nps == self.xcds // 2:
            picked = ComputeMode.TPX if self.apu else ComputeMode.CPX
        elif nps == 2 and not self.apu:
            picked = ComputeMode.DPX
        else:
            return self.default_pair[0]
        return picked if picked in self.compute_modes else self.default_pair[0]


    def pairs_for_rocm(self, rocm: tuple[int, ...]) -> tuple[tuple[ComputeMode, MemoryMode], ...]:
        """Validated pairs plus the conditional ones this ROCm version enables for everyone."""
        extra = tuple(pair for pair, version in self.min_rocm.items() if tuple(rocm[:2]) >= version)
        return self.valid_pairs + extra

    def allowed_pairs(
        self, caps: Mapping[str, Iterable[str]] | None = None
    ) -> tuple[tuple[ComputeMode, MemoryMode], ...]:
        """Valid pairs; with ``caps`` (compute mode -> memory modes, as read from
        ``amd-smi partition --accelerator``; see :func:`reported_caps`) the hardware's own list
        decides: the table's pairs it reports, in table order, then the pairs it reports that
        the table lacks (status REPORTED), for compute modes this model has. A compute mode the
        model does not have cannot be laid out (its partition count is unknown) and is ignored."""
        if caps is None:
            return self.valid_pairs
        reported = _caps_pairs(caps)
        known = list(self.valid_pairs) + list(self.conditional_pairs)
        extra = sorted((pair for pair in reported if pair not in known and pair[0] in self.compute_modes),
                       key=lambda p: (list(ComputeMode).index(p[0]), list(MemoryMode).index(p[1])))
        return tuple(pair for pair in known if pair in reported) + tuple(extra)

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
        status = self.validation(compute_mode, memory_mode) or Validation.REPORTED
        count = self.partition_count(compute_mode)
        if status is Validation.REPORTED:
            note = (f"{compute_mode}+{memory_mode} reported by hardware (memory_partition_caps); "
                    f"not in the geometry table for {self.model}")
        else:
            note = self.conditional_pairs.get(pair, "") or self.pair_notes.get(pair, "")
        estimated = "partition_memory" in self.estimated_fields or status is Validation.ESTIMATED
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
            validation=status,
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
_MI325_STATUS = {pair: Validation.ESTIMATED for pair in _MI300_PAIRS if pair[0] is not C.SPX}
_MI325_NOTES = {pair: "copied from MI300X; AMD documents no MI325X partition table" for pair in _MI325_STATUS}
_MI350_PAIRS = (
    (C.SPX, M.NPS1),
    (C.DPX, M.NPS1),
    (C.DPX, M.NPS2),
    (C.QPX, M.NPS1),
    (C.QPX, M.NPS2),
    (C.CPX, M.NPS1),
    (C.CPX, M.NPS2),
)
# amd-gfx "drm/amdgpu: Update supported modes for GC v9.5.0" (Lijo Lazar, July 2025; Linux 6.17,
# stable): __aqua_vanjaram_get_px_mode_info adds NPS2 to the compatible modes of QPX and CPX.
_GC950_NOTE = "amdgpu 'Update supported modes for GC v9.5.0' (Linux 6.17): driver-allowed, not AMD-validated"
_MI350_STATUS = {(C.QPX, M.NPS2): Validation.DRIVER_ALLOWED, (C.CPX, M.NPS2): Validation.DRIVER_ALLOWED}
_MI350_NOTES = {pair: _GC950_NOTE for pair in _MI350_STATUS}

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
            notes="amd-smi VRAM total for MI325X not observed; non-SPX pairs copied from MI300X",
            pair_status=_MI325_STATUS,
            pair_notes=_MI325_NOTES,
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
            pair_status={(C.TPX, M.NPS1): Validation.DRIVER_ALLOWED},
            pair_notes={(C.TPX, M.NPS1): "the driver allows TPX on 6 XCCs; AMD no longer lists it as validated"},
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
            pair_status=_MI350_STATUS,
            pair_notes=_MI350_NOTES,
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
            pair_status=_MI350_STATUS,
            pair_notes=_MI350_NOTES,
            estimated_fields=("partition_memory", "vram_mb_reported"),
            notes="MI350-series memory per partition is nominal (288/N); not observed on hardware",
        ),
        # ROCm docs "AMD Instinct MI350 Series microarchitecture": PCIe card, four XCDs (128 CUs),
        # one IOD with four HBM3E stacks (144 GB), "up to four compute partitions and a single
        # (NPS1) memory partition". The driver offers SPX/DPX/CPX on four XCCs (QPX needs two
        # XCCs per partition). PCI device id: not found in a public source.
        GpuSpec(
            model="MI350P",
            memory_gb=144,
            memory_type="HBM3E",
            xcds=4,
            cus=128,
            gfx_target="gfx950",
            pci_device_id="",
            compute_modes=(C.SPX, C.DPX, C.CPX),
            memory_modes=(M.NPS1,),
            valid_pairs=((C.SPX, M.NPS1), (C.DPX, M.NPS1), (C.CPX, M.NPS1)),
            pair_status={(C.DPX, M.NPS1): Validation.DRIVER_ALLOWED},
            pair_notes={(C.DPX, M.NPS1): "the driver offers DPX on four XCCs; AMD documents 1 or 4 partitions"},
            memory_switchable=False,
            estimated_fields=("partition_memory", "vram_mb_reported", "pci_device_id"),
            notes="MI350P memory per partition is nominal (144/N); not observed on hardware",
            in_catalog=False,  # until the catalog's migration admits it (profile_gpu_model_known)
        ),
    )
}

GPU_MODELS: tuple[str, ...] = tuple(name for name, spec in SPECS.items() if spec.in_catalog)
"""The models the catalog sizes profiles for (every model of SPECS once the catalog admits it)."""


def _caps_pairs(caps: Mapping[str, Iterable[str]]) -> set[tuple[ComputeMode, MemoryMode]]:
    pairs = set()
    for compute, memories in caps.items():
        try:
            c = ComputeMode(str(compute).rstrip("*").strip().upper())
        except ValueError:
            continue
        for memory in memories:
            try:
                pairs.add((c, MemoryMode(str(memory).strip().upper())))
            except ValueError:
                continue
    return pairs


def reported_caps(profiles: Iterable[Any] | None) -> dict[str, tuple[str, ...]] | None:
    """``memory_partition_caps`` per compute mode as the hardware reported them, for
    :meth:`GpuSpec.allowed_pairs` and :meth:`GpuSpec.layout` (the one place that reads them).

    ``profiles``: accelerator profiles as the backend returns them (objects with
    ``accelerator_type`` and ``memory_caps``) or as stored on a GPU row (dicts with those keys).
    Profiles that report no caps (empty, "N/A": non-root, or firmware that does not say) are
    left out; when none reports any, the answer is None, meaning "use the geometry table".
    """
    caps: dict[str, tuple[str, ...]] = {}
    for profile in profiles or ():
        if isinstance(profile, Mapping):
            kind, memories = profile.get("accelerator_type"), profile.get("memory_caps")
        else:
            kind, memories = getattr(profile, "accelerator_type", None), getattr(profile, "memory_caps", None)
        if not kind:
            continue
        valid = tuple(str(m).strip().upper() for m in (memories or ()) if str(m).strip().upper() in MemoryMode.__members__)
        if valid:
            caps[str(kind).rstrip("*").strip().upper()] = valid
    return caps or None


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
