"""Inputs and outputs of the placement engine (frozen dataclasses; memory in GiB)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ReasonCode = Literal["no_gpu_model", "not_allowed_model", "unschedulable", "exceeds_gpu", "tensor_parallel",
                     "memory_mode", "no_free_partition"]
REASON_CODES: tuple[ReasonCode, ...] = ("no_gpu_model", "not_allowed_model", "unschedulable", "exceeds_gpu",
                                        "tensor_parallel", "memory_mode", "no_free_partition")
"""Why a replica is unplaced, as a bounded code (``Unplaced.code``; the metrics' reason label):
no GPU of an allowed model in the fleet; the pinned GPU is of a model the demand does not allow;
the usable GPUs (or the pinned ones) are unschedulable or excluded; one replica needs more than a
whole GPU; no node has the whole SPX GPUs tensor parallelism needs; the node's memory (NPS) mode
allows no partition that holds it; no free partition holds it (spread and repartitioning included)."""

Solver = Literal["exact", "heuristic"]
SOLVERS: tuple[Solver, ...] = ("exact", "heuristic")

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
    problem: str = ""
    """Why it is unschedulable (e.g. "an operation is in flight"), reported in ``Placement.excluded``."""


@dataclass(frozen=True)
class NodeState:
    name: str
    memory_mode: str
    """NPS mode of the whole node ("NPS1"...); never changed by the engine."""
    gpus: tuple[GpuState, ...]
    schedulable: bool = True
    problem: str = ""
    """Why it is unschedulable (e.g. its GPUs report different memory modes), reported in ``Placement.excluded``."""


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
    """Hard spread: replicas on different GPUs (and on different nodes when possible); a replica
    with no GPU of its own left stays unplaced."""
    soft_spread: bool = False
    """Soft spread (ignored with ``spread``): replicas on different GPUs (and nodes) while there
    are some, then sharing GPUs rather than staying unplaced (``place`` runs two passes)."""


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
    """For people: specific words (sizes, node names)."""
    code: ReasonCode
    """For machines (metrics): one of ``REASON_CODES``."""


@dataclass(frozen=True)
class Excluded:
    """A node or GPU the engine did not use, and why (bad data such as a node whose GPUs report
    different memory modes, or marked unschedulable). Placement goes on without it."""

    node: str
    gpu_index: int | None
    """None: the whole node."""
    reason: str


@dataclass(frozen=True)
class Placement:
    assignments: tuple[Assignment, ...]
    mode_changes: tuple[ModeChange, ...]
    unplaced: tuple[Unplaced, ...]
    gpus_used: int
    """GPUs holding at least one replica after the plan, existing occupants included."""
    solver: Solver = "heuristic"
    """Which one answered: "exact" (CP-SAT) or "heuristic" (greedy)."""
    optimal: bool = False
    """Proven optimal (the exact solver finished every stage within its budget)."""
    solver_note: str = ""
    """Why the heuristic answered (budget hit, too large to model, disabled), or how the exact one did."""
    excluded: tuple[Excluded, ...] = ()

    def ok(self) -> bool:
        """True when every requested replica was placed."""
        return not self.unplaced


class PlacementError(ValueError):
    """Bad input (not an unplaceable replica); the message names the problem."""


class PlacementTimeout(Exception):
    """The caller's deadline passed before a placement was found (``deadline=`` arguments)."""
