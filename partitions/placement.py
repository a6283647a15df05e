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
"""

from __future__ import annotations

import bisect
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from partitions.geometry import GeometryError, GpuSpec, MemoryMode, get_spec

SPX = "SPX"
_INVALID = "?"  # unused-GPU bucket for GPUs whose current mode their node's NPS forbids


# --------------------------------------------------------------------------- data in / out


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


# --------------------------------------------------------------------------- internal state


def _gib(x: float) -> str:
    return f"{x:.1f} GiB"


def _spec(model: str) -> GpuSpec:
    try:
        return get_spec(model)
    except GeometryError as exc:
        raise PlacementError(str(exc)) from None


class _Gpu:
    __slots__ = ("node", "index", "spec", "nps", "ok", "modes", "mode", "orig", "free",
                 "used", "locked", "pool", "pos")

    def __init__(self, node: NodeState, gs: GpuState, spec: GpuSpec, nps: str, pos: int) -> None:
        self.node, self.index, self.spec, self.nps, self.pos = node.name, gs.index, spec, nps, pos
        self.ok = gs.schedulable and node.schedulable
        pairs = spec.allowed_pairs(gs.caps)
        # Allowed compute modes under this node's NPS -> (partition count, GiB each), small first.
        self.modes = {str(c): (spec.partition_count(c), float(spec.smallest_partition_gb(c)))
                      for c, m in sorted(pairs, key=lambda p: spec.smallest_partition_gb(p[0]))
                      if str(m) == nps}
        self.mode = self.orig = gs.compute_mode.upper()
        if self.mode not in {str(c) for c in spec.compute_modes}:
            raise PlacementError(f"{node.name}/gpu{gs.index}: {spec.model} has no compute mode "
                                 f"{gs.compute_mode!r}")
        self.free = list(range(spec.partition_count(self.mode)))
        self.used = self.locked = False
        self.pool: _Pool | None = None

    @property
    def valid(self) -> bool:
        return self.mode in self.modes

    @property
    def size(self) -> float:
        return float(self.spec.smallest_partition_gb(self.mode))

    @property
    def name(self) -> str:
        return f"{self.node}/gpu{self.index} {self.mode}"


class _Pool:
    """Schedulable GPUs of one model, NPS and allowed-mode set (interchangeable for packing)."""

    def __init__(self, pid: int, gpu: _Gpu) -> None:
        self.id, self.model = pid, gpu.spec.model
        self.modes = gpu.modes
        self.sizes = sorted({s for _, s in self.modes.values()})
        self.used_free: dict[float, dict[_Gpu, None]] = defaultdict(dict)
        self.unused: dict[str, dict[_Gpu, None]] = defaultdict(dict)
        self.remaining: list[float] = []  # sorted needs of pending replicas that may use the pool


@dataclass
class _Rep:
    d: Demand
    replica: int
    pos: int
    pools: list[_Pool]


class _State:
    def __init__(self, fleet: Fleet, demands: Sequence[Demand]) -> None:
        self.gpus: list[_Gpu] = []
        self.by_key: dict[tuple[str, int], _Gpu] = {}
        self.node_gpus: dict[str, list[_Gpu]] = {}
        self.node_ok: dict[str, bool] = {}
        for node in fleet.nodes:
            if node.name in self.node_gpus:
                raise PlacementError(f"node {node.name!r} appears twice in the fleet")
            try:
                nps = str(MemoryMode(node.memory_mode.upper()))
            except ValueError:
                raise PlacementError(f"node {node.name}: unknown memory mode {node.memory_mode!r}") from None
            self.node_gpus[node.name], self.node_ok[node.name] = [], node.schedulable
            for gs in node.gpus:
                if (node.name, gs.index) in self.by_key:
                    raise PlacementError(f"GPU {node.name}/gpu{gs.index} appears twice")
                g = _Gpu(node, gs, _spec(gs.gpu_model), nps, len(self.gpus))
                self.gpus.append(g)
                self.by_key[(node.name, gs.index)] = g
                self.node_gpus[node.name].append(g)
        self.sib_gpus: dict[str, set[_Gpu]] = defaultdict(set)
        self.sib_nodes: dict[str, set[str]] = defaultdict(set)
        self.held: dict[str, set[int]] = defaultdict(set)
        for occ in fleet.occupants:
            g = self.by_key.get((occ.node, occ.gpu_index))
            if g is None:
                raise PlacementError(f"occupant {occ.deployment}#{occ.replica} is on "
                                     f"{occ.node}/gpu{occ.gpu_index}, which is not in the fleet")
            if occ.partition_index is None:
                g.free = []
            elif occ.partition_index in g.free:
                g.free.remove(occ.partition_index)
            elif not 0 <= occ.partition_index < g.spec.partition_count(g.mode):
                raise PlacementError(f"occupant {occ.deployment}#{occ.replica}: {g.name} has no "
                                     f"partition {occ.partition_index}")
            g.used = g.locked = True
            self.sib_gpus[occ.deployment].add(g)
            self.sib_nodes[occ.deployment].add(g.node)
            self.held[occ.deployment].add(occ.replica)
        self.demands = list(demands)
        self.allowed: dict[str, frozenset[str] | None] = {}
        for d in self.demands:
            self._check(d)
        pools: dict[tuple, _Pool] = {}
        self.pools: list[_Pool] = []
        self.node_pools: dict[str, set[int]] = defaultdict(set)
        for g in self.gpus:
            if not g.ok or not g.modes:
                continue
            key = (g.spec.model, g.nps, tuple(g.modes))
            if key not in pools:
                pools[key] = _Pool(len(self.pools), g)
                self.pools.append(pools[key])
            g.pool = pool = pools[key]
            self.node_pools[g.node].add(pool.id)
            if not g.used:
                pool.unused[g.mode if g.valid else _INVALID][g] = None
            elif g.valid and g.free:
                pool.used_free[g.size][g] = None

    def _check(self, d: Demand) -> None:
        if d.key in self.allowed:
            raise PlacementError(f"deployment {d.key!r} is listed twice")
        if isinstance(d.replicas, bool) or not isinstance(d.replicas, int) or d.replicas <= 0:
            raise PlacementError(f"deployment {d.key}: replicas must be a positive integer, got {d.replicas!r}")
        if not isinstance(d.memory_gb, (int, float)) or not math.isfinite(d.memory_gb) or d.memory_gb <= 0:
            raise PlacementError(f"deployment {d.key}: memory_gb must be positive, got {d.memory_gb!r}")
        if not isinstance(d.tensor_parallel, int) or d.tensor_parallel < 1:
            raise PlacementError(f"deployment {d.key}: tensor_parallel must be >= 1, got {d.tensor_parallel!r}")
        if d.pin_gpu is not None and d.pin_node is None:
            raise PlacementError(f"deployment {d.key}: pin_gpu needs pin_node")
        if d.pin_node is not None and d.pin_node not in self.node_gpus:
            raise PlacementError(f"deployment {d.key}: pinned node {d.pin_node!r} is not in the fleet")
        if d.pin_gpu is not None and (d.pin_node, d.pin_gpu) not in self.by_key:
            raise PlacementError(f"deployment {d.key}: pinned GPU {d.pin_node}/gpu{d.pin_gpu} is not in the fleet")
        self.allowed[d.key] = frozenset(_spec(m).model for m in d.gpu_models) or None

    def model_ok(self, d: Demand, g: _Gpu) -> bool:
        allowed = self.allowed[d.key]
        return allowed is None or g.spec.model in allowed

    def pending(self, by_priority: bool = True, small_first: bool = False) -> list[_Rep]:
        """Replicas to place, in processing order: priority, TP, pinned, size (all descending;
        without ``by_priority`` priority is ignored; ``small_first`` reverses the size order)."""
        reps = []
        for pos, d in enumerate(self.demands):
            pools = [p for p in self.pools if (self.allowed[d.key] is None or p.model in self.allowed[d.key])
                     and p.sizes[-1] >= d.memory_gb]
            if d.pin_node is not None:
                pools = [p for p in pools if p.id in self.node_pools[d.pin_node]]
            reps += [_Rep(d, r, pos, pools) for r in range(d.replicas) if r not in self.held[d.key]]
        sign = 1 if small_first else -1
        reps.sort(key=lambda r: (-r.d.priority if by_priority else 0, r.d.tensor_parallel == 1,
                                 r.d.pin_node is None, sign * r.d.memory_gb, r.pos, r.replica))
        for r in reps:
            if r.d.tensor_parallel == 1:
                for p in r.pools:
                    bisect.insort(p.remaining, r.d.memory_gb)
        return reps

    # -- mutations
    def open(self, g: _Gpu, mode: str) -> ModeChange | None:
        """Start using an empty GPU in ``mode`` (a change when it differs from the current one)."""
        assert g.pool is not None and not g.used
        del g.pool.unused[g.mode if g.valid else _INVALID][g]
        change = ModeChange(g.node, g.index, g.mode, mode) if mode != g.mode else None
        g.mode, g.used = mode, True
        g.free = list(range(g.spec.partition_count(mode)))
        g.pool.used_free[g.size][g] = None
        return change

    def take(self, g: _Gpu, whole: bool = False) -> Slot:
        part = None if whole else g.free[0]
        g.free = [] if whole else g.free[1:]
        if not g.free and g.pool is not None:
            g.pool.used_free[g.size].pop(g, None)
        return Slot(g.node, g.index, part, g.mode, g.size)

    def gpus_used(self) -> int:
        return sum(g.used for g in self.gpus)


def _first(d: dict[_Gpu, None], ok: Callable[[_Gpu], bool] | None) -> _Gpu | None:
    if ok is None:
        return next(iter(d), None)
    return next((g for g in d if ok(g)), None)


def _predicate(st: _State, d: Demand, strict: bool) -> Callable[[_Gpu], bool] | None:
    ex_g = st.sib_gpus[d.key] if d.spread else None
    ex_n = st.sib_nodes[d.key] if d.spread and strict else None
    if d.pin_node is None and not ex_g:
        return None

    def ok(g: _Gpu) -> bool:
        return ((d.pin_node is None or g.node == d.pin_node)
                and (d.pin_gpu is None or g.index == d.pin_gpu)
                and not (ex_g and g in ex_g) and not (ex_n and g.node in ex_n))
    return ok


# --------------------------------------------------------------------------- heuristic


def place(fleet: Fleet, demands: Sequence[Demand], *, allow_repartition: bool = True) -> Placement:
    """Fast heuristic: first-fit-decreasing by size class, fragmentation aware.

    Replicas are taken by priority (high first), tensor-parallel and pinned ones first within a
    priority, then by memory need (large first). Each goes to the smallest free partition that
    holds it on a GPU already in use (best fit, no new GPU, no change). Failing that it opens an
    empty GPU, choosing the (GPU pool, mode) that lets the new GPU hold the most of the remaining
    demand that fits its partitions, then a GPU already in that mode (no change), then the
    smallest partition size. Tensor-parallel replicas take whole empty GPUs on the node needing
    the fewest changes, then with the fewest such GPUs free (keeps big nodes whole).
    O(replicas x pools x modes) plus dictionary work: ~0.1 s for 1,000 GPUs x 2,000 replicas.
    Three passes, the best kept (fewest unplaced per priority level from the highest, then
    fewest GPUs, then fewest changes): the order above; the same ignoring priority (kept only
    when it places everything, so priorities cannot be hurt); small first within a priority
    (only when the first pass leaves replicas unplaced: maximises how many fit).
    Raises PlacementError for bad input.
    """
    best, levels = None, sorted({d.priority for d in demands}, reverse=True)
    passes = [(True, False)] + ([(False, False)] if len(levels) > 1 else [])
    for i, (by_priority, small_first) in enumerate(passes + [(True, True)]):
        if i == len(passes) and (best is None or best[1].ok()):
            break
        result = _greedy(fleet, demands, allow_repartition, by_priority, small_first)
        if not by_priority and not result.ok():
            continue
        lost = {d.key: d.priority for d in demands}
        key = (tuple(sum(lost[u.deployment] == lvl for u in result.unplaced) for lvl in levels),
               result.gpus_used, len(result.mode_changes))
        if best is None or key < best[0]:
            best = (key, result)
    assert best is not None
    return best[1]


def _greedy(fleet: Fleet, demands: Sequence[Demand], allow_repartition: bool, by_priority: bool,
            small_first: bool) -> Placement:

    st = _State(fleet, demands)
    assignments: list[tuple[int, Assignment]] = []
    changes: list[ModeChange] = []
    unplaced: list[tuple[int, Unplaced]] = []
    failed: dict[str, str] = {}
    for rep in st.pending(by_priority, small_first):
        d = rep.d
        if d.tensor_parallel == 1:
            for p in rep.pools:
                p.remaining.pop(bisect.bisect_left(p.remaining, d.memory_gb))
        slots = None
        if d.key not in failed:  # state only fills up: a sibling that failed fails again
            for strict in ((True, False) if d.spread else (False,)):
                ok = _predicate(st, d, strict)
                found = (_find_tp(st, d, ok, allow_repartition, strict) if d.tensor_parallel > 1
                         else _find_one(st, rep, ok, allow_repartition))
                if found is not None:
                    slots = []
                    for g, mode in found:
                        if not g.used:
                            change = st.open(g, mode)
                            if change:
                                changes.append(change)
                        slots.append(st.take(g, whole=d.tensor_parallel > 1))
                        st.sib_gpus[d.key].add(g)
                        st.sib_nodes[d.key].add(g.node)
                    break
        if slots is None:
            if d.key not in failed:
                failed[d.key] = _reason(st, d, allow_repartition)
            unplaced.append(((rep.pos, rep.replica), Unplaced(d.key, rep.replica, failed[d.key])))
        else:
            assignments.append(((rep.pos, rep.replica), Assignment(d.key, rep.replica, tuple(slots))))
    return Placement(tuple(a for _, a in sorted(assignments, key=lambda x: x[0])), tuple(changes),
                     tuple(u for _, u in sorted(unplaced, key=lambda x: x[0])), st.gpus_used())


def _find_one(st: _State, rep: _Rep, ok: Callable[[_Gpu], bool] | None,
              allow_repartition: bool) -> list[tuple[_Gpu, str]] | None:
    need = rep.d.memory_gb
    best: tuple | None = None
    for pool in rep.pools:  # 1) best fit on a GPU already in use
        for size in pool.sizes:
            if size >= need and pool.used_free.get(size) and (best is None or size < best[0]):
                g = _first(pool.used_free[size], ok)
                if g is not None:
                    best = (size, g)
                    break
    if best is not None:
        return [(best[1], best[1].mode)]
    for pool in rep.pools:  # 2) open an empty GPU
        if not any(pool.unused.values()):
            continue
        for mode, (count, size) in pool.modes.items():
            if size < need:
                continue
            fits_more = min(count - 1, bisect.bisect_right(pool.remaining, size))
            g = _first(pool.unused.get(mode, {}), ok)
            change = g is None
            if g is None and allow_repartition:
                g = next((x for bucket in pool.unused.values() for x in bucket if ok is None or ok(x)), None)
            if g is not None:
                score = (-fits_more, change, size, pool.id)
                if best is None or score < best[0]:
                    best = (score, g, mode)
    return None if best is None else [(best[1], best[2])]


def _find_tp(st: _State, d: Demand, ok: Callable[[_Gpu], bool] | None, allow_repartition: bool,
             strict: bool) -> list[tuple[_Gpu, str]] | None:
    t, best = d.tensor_parallel, None
    for name in [d.pin_node] if d.pin_node is not None else st.node_gpus:
        if not st.node_ok[name] or (strict and d.spread and name in st.sib_nodes[d.key]):
            continue
        by_model: dict[str, list[_Gpu]] = defaultdict(list)
        for g in st.node_gpus[name]:
            if (g.ok and not g.used and SPX in g.modes and g.modes[SPX][1] >= d.memory_gb
                    and st.model_ok(d, g) and (g.mode == SPX or allow_repartition)):
                by_model[g.spec.model].append(g)
        for gpus in by_model.values():
            gpus.sort(key=lambda g: (d.pin_gpu is None or g.index != d.pin_gpu, g.mode != SPX, g.index))
            if len(gpus) < t or (d.pin_gpu is not None and gpus[0].index != d.pin_gpu):
                continue
            score = (sum(g.mode != SPX for g in gpus[:t]), len(gpus), gpus[0].pos)
            if best is None or score < best[0]:
                best = (score, gpus[:t])
    return None if best is None else [(g, SPX) for g in best[1]]


def _reason(st: _State, d: Demand, allow_repartition: bool) -> str:
    """Why no replica of ``d`` fits the current (post-placement) state, in specific words."""
    need, where = d.memory_gb, ""
    gpus = [g for g in st.gpus if st.model_ok(d, g)]
    if d.pin_node is not None:
        where = f"pinned to {d.pin_node}" + (f"/gpu{d.pin_gpu}" if d.pin_gpu is not None else "") + ": "
        gpus = [g for g in gpus if g.node == d.pin_node and (d.pin_gpu is None or g.index == d.pin_gpu)]
        if d.pin_gpu is not None and not st.model_ok(d, st.by_key[(d.pin_node, d.pin_gpu)]):
            return where + f"{st.by_key[(d.pin_node, d.pin_gpu)].spec.model} is not an allowed model"
    models = "/".join(sorted(st.allowed[d.key] or {"any"}))
    if not gpus:
        return where + f"no GPU of model {models} in the fleet"
    ok = [g for g in gpus if g.ok]
    if not ok and d.pin_node is not None:
        if not st.node_ok[d.pin_node]:
            return where + f"node {d.pin_node} is unschedulable"
        return where + ("the GPU is unschedulable" if d.pin_gpu is not None else "every GPU of the node is unschedulable")
    if not ok:
        return where + f"all {len(gpus)} GPU(s) of model {models} are unschedulable"
    biggest = max(ok, key=lambda g: g.spec.memory_gb)
    if need > biggest.spec.memory_gb:
        return where + (f"needs {_gib(need)}{' per GPU' if d.tensor_parallel > 1 else ''}, more than a "
                        f"whole {biggest.spec.model} ({_gib(biggest.spec.memory_gb)})"
                        + ("" if d.tensor_parallel > 1 else "; needs tensor parallelism"))
    if d.tensor_parallel > 1:
        t = d.tensor_parallel
        most = max(len(st.node_gpus[g.node]) for g in ok)
        if t > most:
            return where + f"tensor parallel {t} needs {t} GPUs on one node; the largest node has {most}"
        count: dict[str, int] = defaultdict(int)
        no_spx = {g.node for g in ok if SPX not in g.modes}
        for g in ok:
            if (not g.used and SPX in g.modes and g.spec.memory_gb >= need
                    and (g.mode == SPX or allow_repartition)):
                count[g.node] += 1
        node, k = max(count.items(), key=lambda kv: kv[1], default=("", 0))
        text = f"tensor parallel {t} needs {t} free GPUs in SPX on one node; " + (
            f"best node {node} has {k}" if k else "no node has one")
        if no_spx:
            text += f" ({len(no_spx)} node(s) forbid SPX under {'/'.join(sorted({g.nps for g in ok if g.node in no_spx}))})"
        if not allow_repartition:
            text += "; repartitioning is disabled"
        return where + text
    top = max(((s, m, g) for g in ok for m, (_, s) in g.modes.items()), key=lambda v: v[0], default=None)
    if top is None or need > top[0]:
        g = next(g for g in ok if g.spec.memory_gb >= need)
        fit = [str(m) for m in g.spec.modes_by_partition_size() if g.spec.smallest_partition_gb(m) >= need]
        text = (f"needs {_gib(need)}: only {'/'.join(fit)} partitions hold it, and memory mode "
                f"{'/'.join(sorted({g.nps for g in ok}))} does not allow {'them' if len(fit) > 1 else 'it'}")
        if top is not None:
            text += f"; largest allowed partition {_gib(top[0])} ({top[2].spec.model} {top[1]})"
        return where + text
    excluded = st.sib_gpus[d.key] if d.spread else set()
    free = [(g.size, g) for g in ok if g not in excluded and g.valid and g.free]
    empty = [g for g in ok if not g.used and g not in excluded and g.modes]
    if free:
        size, g = max(free, key=lambda x: (x[0], -x[1].pos))
        text = f"needs {_gib(need)}, largest free partition {_gib(size)} ({g.name})"
    else:
        text = f"needs {_gib(need)}, no free partition on the {len(ok)} schedulable GPU(s) of model {models}"
    if empty and not allow_repartition:
        text += "; repartitioning is disabled"
    elif not empty:
        text += "; no empty GPU left to repartition"
    if d.spread and excluded:
        text += f"; spread excludes the {len(excluded)} GPU(s) already holding {d.key}"
    return where + text


# --------------------------------------------------------------------------- exact (CP-SAT)


def place_exact(fleet: Fleet, demands: Sequence[Demand], *, allow_repartition: bool = True,
                time_limit_s: float = 10.0) -> Placement:
    """Optimal placement by CP-SAT on an aggregated count model.

    Per pool (GPU model + NPS + allowed modes): integers x[from, to] = empty GPUs currently in
    ``from`` opened in mode ``to``; per group of interchangeable replicas (same priority, same
    size class in every pool they may use) and partition size: integers y = replicas put in
    partitions of that size. Free partitions of GPUs with occupants are fixed capacity. Solved
    lexicographically, one CP-SAT run per stage: maximise placed replicas (all at once, or per
    priority level from the highest when not everything fits), then minimise GPUs used, then
    minimise mode changes; each stage fixes the previous optimum. Counts are then expanded into
    concrete slots (free partitions of occupied GPUs first, then opened GPUs one by one).

    Restriction: demands with tensor_parallel > 1, pins or spread raise PlacementError (use
    ``place``). ``time_limit_s`` is shared by the stages; on timeout the best solution found is
    returned (then not proven optimal).
    """
    from ortools.sat.python import cp_model

    st = _State(fleet, demands)
    for d in st.demands:
        if d.tensor_parallel > 1 or d.pin_node is not None or d.spread:
            raise PlacementError(f"deployment {d.key}: place_exact does not handle tensor parallelism, "
                                 "pins or spread; use place()")
    reps = st.pending()
    groups: dict[tuple, list[_Rep]] = defaultdict(list)
    for r in reps:
        sig = tuple((p.id, next(s for s in p.sizes if s >= r.d.memory_gb)) for p in r.pools)
        groups[(r.d.priority, sig)].append(r)
    model = cp_model.CpModel()
    x: dict[tuple[int, str, str], cp_model.IntVar] = {}
    for p in st.pools:
        for frm, bucket in p.unused.items():
            if bucket:
                for to in p.modes:
                    if allow_repartition or to == frm:
                        x[p.id, frm, to] = model.new_int_var(0, len(bucket), f"x{p.id}{frm}{to}")
                model.add(sum(v for k, v in x.items() if k[:2] == (p.id, frm)) <= len(bucket))
    y: dict[tuple[int, int, float], cp_model.IntVar] = {}
    glist = list(groups.items())
    for gi, ((_, sig), members) in enumerate(glist):
        for pid, cls in sig:
            for s in st.pools[pid].sizes:
                if s >= cls:
                    y[gi, pid, s] = model.new_int_var(0, len(members), f"y{gi}_{pid}_{s}")
        model.add(sum(v for k, v in y.items() if k[0] == gi) <= len(members))
    for p in st.pools:
        for s in p.sizes:
            cap = sum(len(g.free) for g in p.used_free.get(s, {}))
            opened = sum(p.modes[to][0] * v for (pid, _, to), v in x.items() if pid == p.id and p.modes[to][1] == s)
            model.add(sum(v for k, v in y.items() if k[1:] == (p.id, s)) <= cap + opened)
    placed = {lvl: sum(v for k, v in y.items() if glist[k[0]][0][0] == lvl) for lvl in {k[0] for k, _ in glist}}
    stages: list[tuple[object, bool]] = [(sum(y.values()), True)]
    if x or y:
        stages += [(sum(x.values()), False),
                   (sum(v for (_, frm, to), v in x.items() if frm != to), False)]
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = max(1, min(8, os.cpu_count() or 1))
    deadline = max(time_limit_s, 0.05)
    i, split = 0, False
    while i < len(stages) and (x or y):
        expr, maximise = stages[i]
        model.maximize(expr) if maximise else model.minimize(expr)
        solver.parameters.max_time_in_seconds = max(deadline / (len(stages) - i + 1), 0.02)
        status = solver.solve(model)
        deadline -= solver.wall_time
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            raise PlacementError(f"CP-SAT: {solver.status_name(status)} at stage {i}")
        value = round(solver.objective_value)
        model.clear_hints()
        for v in list(x.values()) + list(y.values()):
            model.add_hint(v, solver.value(v))
        if i == 0 and not split and value < len(reps) and len(placed) > 1:
            split = True
            # Not everything fits: maximise per priority level, highest first, instead.
            stages[0:1] = [(placed[lvl], True) for lvl in sorted(placed, reverse=True)]
            continue
        model.add(expr >= value if maximise else expr <= value)
        i += 1
    xv = {k: solver.value(v) for k, v in x.items()} if (x or y) else {}
    yv = {k: solver.value(v) for k, v in y.items()} if (x or y) else {}
    return _expand(st, glist, xv, yv, allow_repartition)


def _expand(st: _State, glist: list, xv: dict, yv: dict, allow_repartition: bool) -> Placement:
    assignments: list[tuple[tuple[int, int], Assignment]] = []
    changes: list[ModeChange] = []
    todo: dict[int, list[_Rep]] = {gi: list(members) for gi, (_, members) in enumerate(glist)}
    for p in st.pools:
        openable: dict[float, list[tuple[_Gpu, str]]] = defaultdict(list)
        offset: dict[str, int] = defaultdict(int)
        for (pid, frm, to), n in sorted(xv.items(), key=lambda kv: kv[0][1] != kv[0][2]):
            if pid == p.id and n:
                gpus = list(p.unused[frm])[offset[frm]:offset[frm] + n]
                offset[frm] += n
                openable[p.modes[to][1]] += [(g, to) for g in gpus]
        for s in p.sizes:
            queue = [gi for (gi, pid, size), n in sorted(yv.items()) if pid == p.id and size == s for _ in range(n)]
            for gi in queue:
                g = next(iter(p.used_free.get(s, {})), None)
                if g is None:
                    g, mode = openable[s].pop(0)
                    change = st.open(g, mode)
                    if change:
                        changes.append(change)
                rep = todo[gi].pop(0)
                assignments.append(((rep.pos, rep.replica), Assignment(rep.d.key, rep.replica, (st.take(g),))))
    unplaced, reasons = [], {}
    for members in todo.values():
        for rep in members:
            reason = reasons.setdefault(rep.d.key, _reason(st, rep.d, allow_repartition))
            unplaced.append(((rep.pos, rep.replica), Unplaced(rep.d.key, rep.replica, reason)))
    return Placement(tuple(a for _, a in sorted(assignments, key=lambda v: v[0])), tuple(changes),
                     tuple(u for _, u in sorted(unplaced, key=lambda v: v[0])), st.gpus_used())


# --------------------------------------------------------------------------- inspection


def partitions_of(fleet: Fleet, changes: Sequence[ModeChange] = ()) -> list[Slot]:
    """Every partition slot of the schedulable GPUs (on schedulable nodes) after ``changes``.

    GPUs whose mode after the changes is not allowed under their node's NPS have no slots.
    Occupied partitions are included. SPX GPUs show one slot with partition_index 0.
    """
    final = {(c.node, c.gpu_index): c.to_mode.upper() for c in changes}
    slots = []
    for node in fleet.nodes:
        for gs in node.gpus:
            if not (node.schedulable and gs.schedulable):
                continue
            spec = _spec(gs.gpu_model)
            mode = final.get((node.name, gs.index), gs.compute_mode.upper())
            if (mode, node.memory_mode.upper()) not in {(str(c), str(m)) for c, m in spec.allowed_pairs(gs.caps)}:
                continue
            size = float(spec.smallest_partition_gb(mode))
            slots += [Slot(node.name, gs.index, i, mode, size) for i in range(spec.partition_count(mode))]
    return slots


def validate(fleet: Fleet, placement: Placement, demands: Sequence[Demand]) -> list[str]:
    """Rule violations of ``placement`` (empty list: valid). Does not judge optimality."""
    errors: list[str] = []
    nodes = {n.name: n for n in fleet.nodes}
    gpus = {(n.name, g.index): g for n in fleet.nodes for g in n.gpus}
    by_key = {d.key: d for d in demands}
    final = {k: g.compute_mode.upper() for k, g in gpus.items()}
    occupied_gpus = {(o.node, o.gpu_index) for o in fleet.occupants}
    seen_change: set[tuple[str, int]] = set()
    for c in placement.mode_changes:
        k, label = (c.node, c.gpu_index), f"mode change {c.node}/gpu{c.gpu_index}"
        if k not in gpus:
            errors.append(f"{label}: no such GPU")
            continue
        if k in seen_change:
            errors.append(f"{label}: GPU changed twice")
        seen_change.add(k)
        if c.from_mode.upper() != final[k]:
            errors.append(f"{label}: from {c.from_mode} but the GPU is in {final[k]}")
        if k in occupied_gpus:
            errors.append(f"{label}: the GPU holds a running replica")
        if not (gpus[k].schedulable and nodes[c.node].schedulable):
            errors.append(f"{label}: the GPU is not schedulable")
        final[k] = c.to_mode.upper()
    taken: dict[tuple[str, int], list[int | None]] = defaultdict(list)
    spread_gpus: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for o in fleet.occupants:
        taken[(o.node, o.gpu_index)].append(o.partition_index)
        spread_gpus[o.deployment].append((o.node, o.gpu_index))
    held = {(o.deployment, o.replica) for o in fleet.occupants}
    done: set[tuple[str, int]] = set()
    for a in placement.assignments:
        label, d = f"{a.deployment}#{a.replica}", by_key.get(a.deployment)
        if d is None:
            errors.append(f"{label}: unknown deployment")
            continue
        if (a.deployment, a.replica) in done or (a.deployment, a.replica) in held:
            errors.append(f"{label}: replica placed twice")
        done.add((a.deployment, a.replica))
        if not 0 <= a.replica < d.replicas:
            errors.append(f"{label}: replica number out of range")
        if len(a.slots) != d.tensor_parallel:
            errors.append(f"{label}: {len(a.slots)} slot(s) for tensor_parallel {d.tensor_parallel}")
        if d.tensor_parallel > 1:
            if len({s.node for s in a.slots}) > 1:
                errors.append(f"{label}: tensor-parallel replica spans several nodes")
            if len({(s.node, s.gpu_index) for s in a.slots}) != len(a.slots):
                errors.append(f"{label}: tensor-parallel replica uses a GPU twice")
        for s in a.slots:
            k, where = (s.node, s.gpu_index), f"{label} on {s.node}/gpu{s.gpu_index}"
            if k not in gpus:
                errors.append(f"{where}: no such GPU")
                continue
            gs, node = gpus[k], nodes[s.node]
            spec = _spec(gs.gpu_model)
            if not (gs.schedulable and node.schedulable):
                errors.append(f"{where}: GPU or node is not schedulable")
            if s.compute_mode.upper() != final[k]:
                errors.append(f"{where}: slot says {s.compute_mode} but the GPU ends in {final[k]}")
            pairs = {(str(c), str(m)) for c, m in spec.allowed_pairs(gs.caps)}
            if (final[k], node.memory_mode.upper()) not in pairs:
                errors.append(f"{where}: {final[k]}+{node.memory_mode} is not allowed on {spec.model}")
                continue
            size = float(spec.smallest_partition_gb(final[k]))
            if abs(s.memory_gb - size) > 1e-6:
                errors.append(f"{where}: slot memory {s.memory_gb} but the partition has {size}")
            if d.memory_gb > size + 1e-9:
                errors.append(f"{where}: needs {_gib(d.memory_gb)}, partition holds {_gib(size)} (over capacity)")
            if d.tensor_parallel > 1 and (final[k] != SPX or s.partition_index is not None):
                errors.append(f"{where}: tensor-parallel member must be a whole GPU in SPX")
            if d.tensor_parallel == 1 and (s.partition_index is None
                                          or not 0 <= s.partition_index < spec.partition_count(final[k])):
                errors.append(f"{where}: bad partition index {s.partition_index}")
            if d.gpu_models and spec.model not in {_spec(m).model for m in d.gpu_models}:
                errors.append(f"{where}: {spec.model} is not an allowed model")
            if d.pin_node is not None and (s.node != d.pin_node or (d.pin_gpu is not None and d.tensor_parallel == 1
                                                                    and s.gpu_index != d.pin_gpu)):
                errors.append(f"{where}: pinned to {d.pin_node}" + (f"/gpu{d.pin_gpu}" if d.pin_gpu is not None else ""))
            taken[k].append(s.partition_index)
            spread_gpus[d.key].append(k)
        if d.pin_gpu is not None and d.tensor_parallel > 1 and (d.pin_node, d.pin_gpu) not in {
                (s.node, s.gpu_index) for s in a.slots}:
            errors.append(f"{label}: pinned GPU {d.pin_node}/gpu{d.pin_gpu} not among its GPUs")
    for k, parts in taken.items():
        if len(parts) != len(set(parts)) or (None in parts and len(parts) > 1):
            errors.append(f"{k[0]}/gpu{k[1]}: a partition holds more than one replica")
    for key, where in spread_gpus.items():
        if key in by_key and by_key[key].spread and len(where) != len(set(where)):
            errors.append(f"{key}: spread replicas share a GPU")
    unplaced = set()
    for u in placement.unplaced:
        if not u.reason.strip():
            errors.append(f"{u.deployment}#{u.replica}: unplaced without a reason")
        if (u.deployment, u.replica) in done or (u.deployment, u.replica) in unplaced:
            errors.append(f"{u.deployment}#{u.replica}: both placed and unplaced, or listed twice")
        unplaced.add((u.deployment, u.replica))
    for d in demands:
        for r in range(d.replicas):
            if (d.key, r) not in held | done | unplaced:
                errors.append(f"{d.key}#{r}: neither placed nor reported unplaced")
    used = {(s.node, s.gpu_index) for a in placement.assignments for s in a.slots} | occupied_gpus
    if placement.gpus_used != len(used):
        errors.append(f"gpus_used is {placement.gpus_used}, the plan uses {len(used)}")
    changed_unused = [c for c in placement.mode_changes if (c.node, c.gpu_index) not in used]
    if changed_unused:
        errors.append(f"{len(changed_unused)} mode change(s) on GPUs the plan does not use")
    return errors
