"""The overview's numbers: what is allocated, idle, stranded, in flight and broken. Pure Python.

``summarize`` turns rows the overview view reads (a fixed number of aggregate queries and one
Redis round trip) into the KPI tiles' numbers: the held partitions one by one (each may be
idle), the free ones counted by GPU model and size (``FreePartitions``), and each node's
telemetry summary rather than its every sample (``summary_facts``). Memory in GiB (2**30 bytes); activity in
percent (0-100, as amd-smi reports GFX activity); ages in seconds.

Missing data is never a zero: without Redis (``snapshots is None``) the idle count and the
stale-telemetry list are ``None`` ("telemetry unavailable"), and a held partition without a
fresh reading is counted as unknown, not idle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from partitions.aggregate import triples
from partitions.operations import ACTIVE_STATES, FAILED, ROLLED_BACK

# A held partition whose latest GFX activity is below this (percent) is "allocated but idle".
IDLE_BELOW_PCT = 5.0
# Replica copy states the overview counts (serving.models.Replica.State; ``stopped`` copies
# are history, not capacity).
REPLICA_STATES = ("ready", "starting", "restarting", "failed")


@dataclass(frozen=True)
class NodeFacts:
    """A node: ``heartbeat_age_s`` since its agent's last heartbeat (None: never seen)."""

    name: str
    emulated: bool
    heartbeat_age_s: float | None


@dataclass(frozen=True)
class GpuFacts:
    node: str
    index: int
    gpu_model: str
    unhealthy: bool


@dataclass(frozen=True)
class PartitionFacts:
    """A partition: ``holder`` names the deployment whose replica holds it ("" when free);
    ``reserved_gb`` is what that replica holds on it (0 when free)."""

    node: str
    gpu_index: int
    index: int
    gpu_model: str
    memory_gb: float | None
    holder: str
    reserved_gb: float


@dataclass(frozen=True)
class FreePartitions:
    """``count`` free partitions of ``gpu_model`` of ``memory_gb`` each (None: unknown size)."""

    gpu_model: str
    memory_gb: float | None
    count: int


@dataclass(frozen=True)
class SnapshotFacts:
    """A node's latest telemetry snapshot: its age and (gpu index, partition index, GFX
    activity %, None where the tool reported N/A) per partition."""

    node: str
    age_s: float
    activity: tuple[tuple[int, int, float | None], ...]


@dataclass(frozen=True)
class OverviewInputs:
    """Everything ``summarize`` reads.

    ``smallest_need_gb``: (GPU model, the smallest need of its default catalog profiles, GiB).
    ``operation_states``: (reconfiguration state, count, count finished in the last 24 h).
    ``replica_states``: (replica copy state, count). ``snapshots``: None when Redis could not
    be read (unknown), else the snapshots found (a node without one has none cached).
    ``partitions``: partitions one by one (the view lists the held ones); ``free_groups``:
    more free partitions, counted by GPU model and size.
    """

    nodes: tuple[NodeFacts, ...]
    gpus: tuple[GpuFacts, ...]
    partitions: tuple[PartitionFacts, ...]
    smallest_need_gb: tuple[tuple[str, float], ...]
    operation_states: tuple[tuple[str, int, int], ...]
    replica_states: tuple[tuple[str, int], ...]
    snapshots: tuple[SnapshotFacts, ...] | None
    agent_stale_after_s: float
    telemetry_stale_after_s: float
    idle_below_pct: float = IDLE_BELOW_PCT
    free_groups: tuple[FreePartitions, ...] = ()


@dataclass(frozen=True)
class Allocation:
    partitions: int
    held: int
    total_gb: float
    reserved_gb: float

    @property
    def ratio(self) -> float | None:
        """Held partitions ÷ all partitions (None without partitions)."""
        return self.held / self.partitions if self.partitions else None

    @property
    def memory_ratio(self) -> float | None:
        """Reserved GiB ÷ the partitions' GiB (None when no partition has a known size)."""
        return self.reserved_gb / self.total_gb if self.total_gb else None


@dataclass(frozen=True)
class Idle:
    """Held partitions below ``threshold_pct``. ``available`` is False without Redis, and then
    ``idle`` is None. ``unknown``: held partitions without a fresh reading."""

    available: bool
    threshold_pct: float
    held: int
    measured: int
    idle: int | None
    unknown: int
    idle_partitions: tuple[tuple[str, str], ...]  # (node/gpuN/pM, deployment)


@dataclass(frozen=True)
class Stranded:
    """Free partitions that no default catalog profile of their GPU model fits."""

    partitions: int
    gb: float
    free_partitions: int
    free_gb: float
    smallest_need_gb: tuple[tuple[str, float], ...]  # of the GPU models in the fleet
    no_profile_models: tuple[str, ...]  # GPU models of free partitions with no profile at all


@dataclass(frozen=True)
class Operations:
    in_flight: int
    failed_24h: int  # failed or rolled back, finished in the last 24 h
    rolled_back_24h: int


@dataclass(frozen=True)
class Health:
    """``stale`` is None when Redis could not be read (unknown), else the nodes whose
    snapshot is missing or older than the threshold (agents that are down included)."""

    gpus: int
    unhealthy: tuple[str, ...]  # node/gpuN
    agents_down: tuple[NodeFacts, ...]
    telemetry_available: bool
    stale: tuple[str, ...] | None


@dataclass(frozen=True)
class Overview:
    nodes: int
    emulated_nodes: int
    allocation: Allocation
    idle: Idle
    stranded: Stranded
    operations: Operations
    health: Health
    replicas: tuple[tuple[str, int], ...]


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def snapshot_facts(node: str, snapshot: Mapping[str, Any], now: float) -> SnapshotFacts:
    """The facts ``summarize`` needs from one snapshot as the agents store it
    (partitions/telemetry.py ``shape``). A snapshot without a usable ``ts`` reads as
    infinitely old; devices the inventory does not know yet (negative GPU index) are left
    out; malformed parts are skipped rather than failing the page."""
    ts = _as_float(snapshot.get("ts"))
    age = max(0.0, now - ts) if ts is not None else float("inf")
    activity: list[tuple[int, int, float | None]] = []
    gpus = snapshot.get("gpus")
    for gpu in gpus if isinstance(gpus, list) else ():
        if not isinstance(gpu, Mapping) or not isinstance(gpu.get("index"), int) or gpu["index"] < 0:
            continue
        parts = gpu.get("partitions")
        for p in parts if isinstance(parts, list) else ():
            if isinstance(p, Mapping) and isinstance(p.get("index"), int):
                activity.append((gpu["index"], p["index"], _as_float(p.get("gfx_activity"))))
            elif isinstance(p, Mapping):
                activity.append((gpu["index"], -1, None))
    return SnapshotFacts(node=node, age_s=age, activity=tuple(activity))


def summary_facts(node: str, summary: Mapping[str, Any], now: float) -> SnapshotFacts:
    """``snapshot_facts`` from a node's telemetry summary as its agent stores it
    (partitions/aggregate.py ``node_summary``: ``activity`` holds ``gpu, partition, %`` per
    partition, flat) instead of its whole sample. Malformed entries are skipped."""
    ts = _as_float(summary.get("ts"))
    age = max(0.0, now - ts) if ts is not None else float("inf")
    activity = tuple(row for row in triples(summary.get("activity")) if row[0] >= 0)
    return SnapshotFacts(node=node, age_s=age, activity=activity)


def summarize(inputs: OverviewInputs) -> Overview:
    """The overview's numbers from ``inputs`` (see the module docstring)."""
    parts = inputs.partitions
    groups = inputs.free_groups
    held = [p for p in parts if p.holder]
    free = [p for p in parts if not p.holder]
    allocation = Allocation(
        partitions=len(parts) + sum(g.count for g in groups), held=len(held),
        total_gb=sum((p.memory_gb or 0.0 for p in parts), 0.0) + sum((g.count * (g.memory_gb or 0.0) for g in groups), 0.0),
        reserved_gb=sum((p.reserved_gb for p in held), 0.0),
    )

    # Only fresh snapshots say anything about activity: an older one describes a past state.
    fresh: dict[str, SnapshotFacts] = {}
    if inputs.snapshots is not None:
        fresh = {s.node: s for s in inputs.snapshots if s.age_s <= inputs.telemetry_stale_after_s}
    readings = {(s.node, g, p): a for s in fresh.values() for g, p, a in s.activity}
    measured = idle_count = unknown = 0
    idle_partitions: list[tuple[str, str]] = []
    for p in held:
        activity = readings.get((p.node, p.gpu_index, p.index))
        if activity is None:
            unknown += 1
            continue
        measured += 1
        if activity < inputs.idle_below_pct:
            idle_count += 1
            idle_partitions.append((f"{p.node}/gpu{p.gpu_index}/p{p.index}", p.holder))
    available = inputs.snapshots is not None
    idle = Idle(
        available=available, threshold_pct=inputs.idle_below_pct, held=len(held),
        measured=measured if available else 0, idle=idle_count if available else None,
        unknown=unknown if available else len(held), idle_partitions=tuple(idle_partitions),
    )

    # A profile fits a partition when its need <= the partition's memory (models/sizing.py
    # fit()), so a free partition smaller than the smallest need fits nothing in the catalog.
    needs = dict(inputs.smallest_need_gb)
    # Free partitions as groups: each partition listed alone is a group of one.
    sized_free = [FreePartitions(p.gpu_model, p.memory_gb, 1) for p in free if p.memory_gb is not None]
    sized_free += [g for g in groups if g.memory_gb is not None and g.count > 0]
    stranded = [g for g in sized_free if g.gpu_model not in needs or (g.memory_gb or 0.0) < needs[g.gpu_model]]
    fleet_models = {p.gpu_model for p in parts} | {g.gpu_model for g in groups if g.count > 0}
    stranded_memory = Stranded(
        partitions=sum(g.count for g in stranded), gb=sum((g.count * (g.memory_gb or 0.0) for g in stranded), 0.0),
        free_partitions=sum(g.count for g in sized_free), free_gb=sum((g.count * (g.memory_gb or 0.0) for g in sized_free), 0.0),
        smallest_need_gb=tuple(sorted((m, n) for m, n in needs.items() if m in fleet_models)),
        no_profile_models=tuple(sorted({g.gpu_model for g in sized_free if g.gpu_model not in needs})),
    )

    operations = Operations(
        in_flight=sum(n for state, n, _ in inputs.operation_states if state in ACTIVE_STATES),
        failed_24h=sum(recent for state, _, recent in inputs.operation_states if state in (FAILED, ROLLED_BACK)),
        rolled_back_24h=sum(recent for state, _, recent in inputs.operation_states if state == ROLLED_BACK),
    )

    # Alive iff the last heartbeat is younger than the threshold (partitions.models.Node.agent_alive).
    down = tuple(n for n in inputs.nodes if n.heartbeat_age_s is None or n.heartbeat_age_s >= inputs.agent_stale_after_s)
    stale: tuple[str, ...] | None = None
    if inputs.snapshots is not None:
        ages = {s.node: s.age_s for s in inputs.snapshots}
        stale = tuple(n.name for n in inputs.nodes if ages.get(n.name, float("inf")) > inputs.telemetry_stale_after_s)
    health = Health(
        gpus=len(inputs.gpus), unhealthy=tuple(f"{g.node}/gpu{g.index}" for g in inputs.gpus if g.unhealthy),
        agents_down=down, telemetry_available=inputs.snapshots is not None, stale=stale,
    )

    counts = dict(inputs.replica_states)
    return Overview(
        nodes=len(inputs.nodes), emulated_nodes=sum(1 for n in inputs.nodes if n.emulated),
        allocation=allocation, idle=idle, stranded=stranded_memory, operations=operations, health=health,
        replicas=tuple((state, counts.get(state, 0)) for state in REPLICA_STATES),
    )
