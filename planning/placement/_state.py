"""Mutable bookkeeping shared by the heuristic and the exact solver (internal)."""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from partitions.geometry import GeometryError, GpuSpec, MemoryMode, get_spec
from planning.placement.types import Demand, Excluded, Fleet, GpuState, ModeChange, NodeState, PlacementError, Slot

SPX = "SPX"
_INVALID = "?"  # unused-GPU bucket for GPUs whose current mode their node's NPS forbids


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
        self.mode = self.orig = gs.compute_mode.upper()  # known: _gpu_problem() checked it
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
        # Nodes and GPUs whose data the engine cannot use (unknown memory mode, e.g. mixed NPS;
        # unknown GPU model or compute mode) are left out, with the reason, instead of failing
        # the whole fleet: one bad node must not stop placement everywhere else.
        self.excluded: list[Excluded] = []
        self.bad_nodes: dict[str, str] = {}
        self.bad_gpus: dict[tuple[str, int], str] = {}
        self.bad_used = 0  # left-out GPUs that hold occupants (still count as used)
        for node in fleet.nodes:
            if node.name in self.node_gpus:
                raise PlacementError(f"node {node.name!r} appears twice in the fleet")
            self.node_gpus[node.name], self.node_ok[node.name] = [], node.schedulable
            nps = _memory_mode(node.memory_mode)
            if nps is None:
                self.bad_nodes[node.name] = node.problem or f"unknown memory mode {node.memory_mode!r}"
                self.node_ok[node.name] = False
                self.excluded.append(Excluded(node.name, None, self.bad_nodes[node.name]))
            elif not node.schedulable:
                self.excluded.append(Excluded(node.name, None, node.problem or "the node is not schedulable"))
            for gs in node.gpus:
                key = (node.name, gs.index)
                if key in self.by_key or key in self.bad_gpus:
                    raise PlacementError(f"GPU {node.name}/gpu{gs.index} appears twice")
                problem = self.bad_nodes.get(node.name) or _gpu_problem(gs)
                if problem is not None:
                    self.bad_gpus[key] = problem
                    if node.name not in self.bad_nodes:
                        self.excluded.append(Excluded(node.name, gs.index, problem))
                    continue
                assert nps is not None
                g = _Gpu(node, gs, get_spec(gs.gpu_model), nps, len(self.gpus))
                if node.schedulable and not gs.schedulable:
                    self.excluded.append(Excluded(node.name, gs.index, gs.problem or "the GPU is not schedulable"))
                self.gpus.append(g)
                self.by_key[key] = g
                self.node_gpus[node.name].append(g)
        self.sib_gpus: dict[str, set[_Gpu]] = defaultdict(set)
        self.sib_nodes: dict[str, set[str]] = defaultdict(set)
        self.held: dict[str, set[int]] = defaultdict(set)
        bad_used: set[tuple[str, int]] = set()
        for occ in fleet.occupants:
            og = self.by_key.get((occ.node, occ.gpu_index))
            if og is None and (occ.node, occ.gpu_index) in self.bad_gpus:
                bad_used.add((occ.node, occ.gpu_index))  # nothing to book on a left-out GPU
                self.sib_nodes[occ.deployment].add(occ.node)
                self.held[occ.deployment].add(occ.replica)
                continue
            if og is None:
                raise PlacementError(f"occupant {occ.deployment}#{occ.replica} is on "
                                     f"{occ.node}/gpu{occ.gpu_index}, which is not in the fleet")
            if occ.partition_index is None:
                og.free = []
            elif occ.partition_index in og.free:
                og.free.remove(occ.partition_index)
            elif not 0 <= occ.partition_index < og.spec.partition_count(og.mode):
                raise PlacementError(f"occupant {occ.deployment}#{occ.replica}: {og.name} has no "
                                     f"partition {occ.partition_index}")
            og.used = og.locked = True
            self.sib_gpus[occ.deployment].add(og)
            self.sib_nodes[occ.deployment].add(og.node)
            self.held[occ.deployment].add(occ.replica)
        self.bad_used = len(bad_used)
        self.demands = list(demands)
        self.allowed: dict[str, frozenset[str] | None] = {}
        for d in self.demands:
            self._check(d)
        pools: dict[tuple[str, str, tuple[str, ...]], _Pool] = {}
        self.pools: list[_Pool] = []
        self.node_pools: dict[str, set[int]] = defaultdict(set)
        for g in self.gpus:
            if not g.ok or not g.modes:
                continue
            pkey = (g.spec.model, g.nps, tuple(g.modes))
            if pkey not in pools:
                pools[pkey] = _Pool(len(self.pools), g)
                self.pools.append(pools[pkey])
            g.pool = pool = pools[pkey]
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
        if d.pin_gpu is not None and (d.pin_node, d.pin_gpu) not in self.by_key and (
                d.pin_node, d.pin_gpu) not in self.bad_gpus:
            raise PlacementError(f"deployment {d.key}: pinned GPU {d.pin_node}/gpu{d.pin_gpu} is not in the fleet")
        self.allowed[d.key] = frozenset(_spec(m).model for m in d.gpu_models) or None

    def model_ok(self, d: Demand, g: _Gpu) -> bool:
        allowed = self.allowed[d.key]
        return allowed is None or g.spec.model in allowed

    def pending(self, order: str = "priority") -> list[_Rep]:
        """Replicas to place, in processing order. "priority": priority, tensor-parallel, pinned,
        memory need (all descending); "constrained": the same, but replicas with fewer eligible
        GPU pools first within a priority; "size": priority ignored; "small": small first."""
        reps = []
        for pos, d in enumerate(self.demands):
            allowed = self.allowed[d.key]
            pools = [p for p in self.pools if (allowed is None or p.model in allowed) and p.sizes[-1] >= d.memory_gb]
            if d.pin_node is not None:
                pools = [p for p in pools if p.id in self.node_pools[d.pin_node]]
            reps += [_Rep(d, r, pos, pools) for r in range(d.replicas) if r not in self.held[d.key]]
        sign, narrow = (1 if order == "small" else -1), order == "constrained"
        reps.sort(key=lambda r: (0 if order == "size" else -r.d.priority, r.d.tensor_parallel == 1,
                                 r.d.pin_node is None, len(r.pools) if narrow else 0, sign * r.d.memory_gb,
                                 r.pos, r.replica))
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
        return sum(g.used for g in self.gpus) + self.bad_used


def _memory_mode(value: str) -> str | None:
    try:
        return str(MemoryMode(value.upper()))
    except (ValueError, AttributeError):
        return None


def _gpu_problem(gs: GpuState) -> str | None:
    """Why the engine cannot use this GPU's data at all, or None."""
    try:
        spec = get_spec(gs.gpu_model)
    except GeometryError:
        return gs.problem or f"unknown GPU model {gs.gpu_model!r}"
    if gs.compute_mode.upper() not in {str(c) for c in spec.compute_modes}:
        return gs.problem or f"{spec.model} has no compute mode {gs.compute_mode!r}"
    return None


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
