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

Objective, in this order: place as many replicas as possible, higher priority first; then use
as few GPUs as possible; then change as few compute modes as possible. "No repartition first"
is honoured whenever it costs no extra GPU: a replica goes to a free partition of a GPU already
in use before any empty GPU is opened, and an empty GPU already in a fitting mode is preferred
to one that must change, unless the change lets the GPU hold more of the remaining demand.

``place`` is the fast heuristic, ``place_exact`` the CP-SAT optimum (see their docstrings).

Modules: ``types`` (the dataclasses), ``_state`` (shared bookkeeping), ``heuristic`` (``place``),
``exact`` (``place_exact``), ``check`` (``partitions_of``, ``validate``).
"""

from __future__ import annotations

from planning.placement.check import partitions_of, validate
from planning.placement.exact import place_exact
from planning.placement.heuristic import place
from planning.placement.types import (
    Assignment,
    Demand,
    Fleet,
    GpuState,
    ModeChange,
    NodeState,
    Occupant,
    Placement,
    PlacementError,
    Slot,
    Unplaced,
)

__all__ = [
    "Assignment", "Demand", "Fleet", "GpuState", "ModeChange", "NodeState", "Occupant", "Placement",
    "PlacementError", "Slot", "Unplaced", "partitions_of", "place", "place_exact", "validate",
]
