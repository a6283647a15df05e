"""Placement engine: which GPU partition each replica of each deployment runs on.

Pure Python (standard library, ``partitions.geometry`` and OR-Tools): frozen dataclasses in
and out, no Django. Units: memory in GiB (2**30 bytes), as in ``partitions.geometry``.

Rules (checked by ``validate``):

- a partition holds at most one replica; a replica fits iff its ``memory_gb`` is at most the
  partition's memory;
- a GPU only runs (compute, memory) pairs its spec (or its ``caps``) allows under its node's
  memory (NPS) mode; the engine never changes a node's memory mode;
- the engine changes the compute mode of empty, schedulable GPUs only (``ModeChange``); it never
  moves or evicts an occupant, and a GPU holding an occupant keeps its mode;
- tensor parallelism (``tensor_parallel`` = t > 1) takes t whole GPUs of one model in SPX on one
  node; such slots (and such occupants) have ``partition_index=None``. A single replica on an
  SPX GPU has ``partition_index=0``;
- ``Demand.replicas`` is the desired total: replica numbers 0..replicas-1 that an occupant of
  the same deployment already holds are not placed again (occupants beyond that are left alone).

- ``spread`` replicas run on different GPUs (occupants of the deployment included), and on
  different nodes where possible; pins (``pin_node``, ``pin_gpu``) and ``gpu_models`` are hard.

Objective, in this order (``quality`` scores a placement by it): place as many replicas as
possible, higher priority first (priorities never displace running replicas); then put spread
replicas on as many different nodes as possible; then use as few GPUs as possible; then change as
few compute modes as possible ("no repartition first" whenever it costs no extra GPU); the exact
solver then breaks ties by putting replicas in the smallest partitions that hold them. The
heuristic follows the same order greedily: a replica goes to a free partition of a GPU already in
use before any empty GPU is opened, and an empty GPU already in a fitting mode is preferred to one
that must change, unless the change lets the GPU hold more of the remaining demand.

Nodes and GPUs whose data cannot be used (a node whose GPUs report different memory modes, an
unknown GPU model or compute mode) are left out and listed in ``Placement.excluded`` with the
reason, as are unschedulable ones; they never make the whole call fail. Each unplaced replica has
a reason in words and a bounded ``code`` (``REASON_CODES``).

``place`` is the default: the exact CP-SAT optimum (``place_exact``) within a time budget, seeded
with and falling back to the fast heuristic (``place_heuristic``); ``Placement.solver`` says which
answered. See their docstrings.

Modules: ``types`` (the dataclasses), ``_state`` (shared bookkeeping), ``heuristic``
(``place_heuristic``), ``exact`` (``place_exact``; ``_slots`` turns its counts into GPUs), ``default`` (``place``), ``reasons``
(unplaced reasons and codes), ``check`` (``partitions_of``, ``validate``).
"""

from __future__ import annotations

from planning.placement.check import partitions_of, quality, validate
from planning.placement.default import DEFAULT_TIME_BUDGET_S, place
from planning.placement.exact import ExactTooLarge, place_exact
from planning.placement.heuristic import place_heuristic
from planning.placement.types import (
    REASON_CODES,
    SOLVERS,
    Assignment,
    Demand,
    Excluded,
    Fleet,
    GpuState,
    ModeChange,
    NodeState,
    Occupant,
    Placement,
    PlacementError,
    PlacementTimeout,
    ReasonCode,
    Slot,
    Solver,
    Unplaced,
)

__all__ = [
    "DEFAULT_TIME_BUDGET_S", "REASON_CODES", "SOLVERS", "Assignment", "Demand", "Excluded", "ExactTooLarge", "Fleet",
    "GpuState", "ModeChange", "NodeState", "Occupant", "Placement", "PlacementError", "PlacementTimeout", "ReasonCode",
    "Slot", "Solver", "Unplaced", "partitions_of", "place", "place_exact", "place_heuristic", "quality", "validate",
]
