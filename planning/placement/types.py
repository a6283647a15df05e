"""Inputs and outputs of the placement engine (frozen dataclasses; memory in GiB)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

@dataclass(frozen=True)
class GpuState:
    """One physical GPU as the engine sees it."""

    node: str
    index: int
    """Physical GPU index on the node."""
    gpu_model: str
    """Geometry key, e.g. "MI300X"."""
    compute_mode: str
    """Current compute mode, e.g. "SPX"."""
    schedulable: bool = True
    """False: unhealthy, mid-operation or node layout problem; never used."""
    caps: Mapping[str, tuple[str, ...]] | None = None
    """``memory_partition_caps`` per compute mode as the hardware reports them; None: geometry defaults."""


@dataclass(frozen=True)
class NodeState:
    name: str
    memory_mode: str
    """NPS mode of the whole node ("NPS1"...); never changed by the engine."""
    gpus: tuple[GpuState, ...]
    schedulable: bool = True


@dataclass(frozen=True)
class Occupant:
    """A replica already running; fixed (never moved)."""

    deployment: str
    replica: int
    priority: int
    node: str
    gpu_index: int
    partition_index: int | None
    """None: the whole GPU (tensor-parallel member)."""
    memory_gb: float
    """Memory need of the replica (GiB)."""


@dataclass(frozen=True)
class Fleet:
    nodes: tuple[NodeState, ...]
    occupants: tuple[Occupant, ...] = ()


@dataclass(frozen=True)
class Demand:
    """A deployment to place: ``replicas`` replicas (desired total) of ``memory_gb`` GiB each."""

    key: str
    memory_gb: float
    """Need of one replica on one partition (GiB); with tensor_parallel > 1 the need per GPU."""
    replicas: int
    priority: int = 0
    """Higher is more important."""
    gpu_models: tuple[str, ...] = ()
    """Allowed GPU models; empty: any."""
    tensor_parallel: int = 1
    """GPUs per replica; > 1: that many whole GPUs in SPX on one node."""
    pin_node: str | None = None
    pin_gpu: int | None = None
    """With ``pin_node``: only this GPU (with tensor_parallel > 1: the set includes it)."""
    spread: bool = False
    """Replicas on different GPUs (and on different nodes when possible)."""


@dataclass(frozen=True)
class Slot:
    """Where one replica (or one tensor-parallel member) goes."""

    node: str
    gpu_index: int
    partition_index: int | None
    """None for a whole GPU used by tensor parallelism."""
    compute_mode: str
    """The GPU's compute mode after the plan."""
    memory_gb: float
    """Partition memory (GiB)."""


@dataclass(frozen=True)
class Assignment:
    deployment: str
    replica: int
    slots: tuple[Slot, ...]


@dataclass(frozen=True)
class ModeChange:
    node: str
    gpu_index: int
    from_mode: str
    to_mode: str


@dataclass(frozen=True)
class Unplaced:
    deployment: str
    replica: int
    reason: str


@dataclass(frozen=True)
class Placement:
    assignments: tuple[Assignment, ...]
    mode_changes: tuple[ModeChange, ...]
    unplaced: tuple[Unplaced, ...]
    gpus_used: int
    """GPUs holding at least one replica after the plan, existing occupants included."""

    def ok(self) -> bool:
        """True when every requested replica was placed."""
        return not self.unplaced


class PlacementError(ValueError):
    """Bad input (not an unplaceable replica); the message names the problem."""
