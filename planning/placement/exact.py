"""``place_exact``: the CP-SAT optimum of every placement rule, on an aggregated count model."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from planning.placement._slots import _fill, _interleave_nodes, _move_spread_apart, _Unrealisable
from planning.placement._state import _INVALID, SPX, _Gpu, _Pool, _Rep, _State
from planning.placement.check import quality, spread_shared
from planning.placement.reasons import unplaced_reason
from planning.placement.types import (
    Assignment,
    Demand,
    Fleet,
    ModeChange,
    Placement,
    PlacementError,
    PlacementTimeout,
    Slot,
    Unplaced,
)

MAX_VARIABLES = 300_000
VARIABLES_PER_SECOND = 10_000
"""Larger models are not built (``ExactTooLarge``): more than ``MAX_VARIABLES``, or more than
``VARIABLES_PER_SECOND`` x the time limit (building and presolving alone would eat it)."""
MIN_FULL_MODEL_S = 0.2
"""The full model (after the relaxation) is only built with at least this much time left."""


class ExactTooLarge(PlacementError):
    """The instance would need more variables than the limits allow."""


def place_exact(fleet: Fleet, demands: Sequence[Demand], *, allow_repartition: bool = True,
                time_limit_s: float = 10.0, hint: Placement | None = None,
                deadline: float | None = None) -> Placement:
    """Optimal placement by CP-SAT, for every rule ``place_heuristic`` follows.

    Model (counts, not one variable per GPU x replica, so 1,000s of GPUs stay small): GPUs are
    grouped into classes of interchangeable ones: empty GPUs by (pool = GPU model + NPS +
    allowed modes, current mode; per node only on pinned nodes or when spread is counted per
    node; a pinned GPU alone), GPUs with occupants by (pool, mode, free partitions, the spread
    deployments they hold, and node likewise). Integers x[class, mode] = empty GPUs opened in
    that mode, w[node, class] = its empty GPUs on that node taken whole in SPX by tensor
    parallelism. Replicas: y[group, pool, size] for interchangeable plain replicas (same
    priority and fit), v[demand, class(, mode)] for pinned or spread ones (the class decides
    node, GPU and, for spread, at most one per GPU), z[tp group, node, GPU model] for
    tensor-parallel replicas (t whole GPUs of one model on one node: t x z = the w there).
    Partition capacity per class and per (pool, size) bounds the replicas.

    Solved lexicographically, one CP-SAT run per stage, each fixing the previous optimum:
    most replicas placed (weighted so that each priority level outweighs all below it);
    spread replicas on as many different nodes as possible; fewest GPUs; fewest mode changes;
    then, as a tie-break within a fifth of the budget, replicas in the smallest partitions that
    hold them (best fit). ``hint`` (a valid placement of the same input, e.g. the heuristic's)
    seeds the search and is kept while it is optimal for the stages so far.

    Spread across nodes is solved in two steps: first a relaxation that counts unpinned spread
    replicas per (pool, size), at most one per GPU there, not per node (far smaller). Its
    counts are dealt out to GPUs on distinct nodes where possible; when that leaves no node
    shared, the relaxation's optimum is the optimum. Otherwise the full per-node model runs
    with the time left, its GPU and mode-change optima bounded below by the relaxation's.

    ``time_limit_s`` is shared by the stages and steps (``deadline``, a ``time.monotonic()``
    value, cuts it further). A stage that runs out of time ends the solve with the best
    solution so far (``optimal=False``, ``solver_note`` says so); PlacementTimeout when there
    is none. Raises PlacementError for bad input, ExactTooLarge past the size limits
    (``MAX_VARIABLES``, ``VARIABLES_PER_SECOND``).
    """
    st = _State(fleet, demands)
    reps = st.pending()
    if not reps:
        return Placement((), (), (), st.gpus_used(), solver="exact", optimal=True, excluded=tuple(st.excluded))
    start = time.monotonic()
    budget = max(0.0, time_limit_s if deadline is None else min(time_limit_s, deadline - start))
    relaxed = None
    if any(r.d.spread and r.d.pin_node is None for r in reps):
        # First the relaxation: spread replicas counted per pool, not per node (far fewer
        # variables). When its answer puts them on different nodes, it is the optimum too.
        m = _Model(st, reps, allow_repartition, relaxed=True, limit=_limit(budget))
        values, optimal, note = m.solve(budget, hint)
        # Its optima bound the full model's from below (it is a relaxation), unless pinned spread
        # deployments, whose node sharing it does count, could trade against them.
        floors = {k: v for k, v in m.optima.items() if k in ("placed", "GPUs used", "mode changes")} if not m.spread_terms else {}
        try:
            relaxed = m.expand(values, optimal, note)
        except _Unrealisable:
            relaxed = None
        if relaxed is not None and _spread_shared(fleet, relaxed, demands):
            relaxed = _move_spread_apart(m.st, fleet, relaxed, demands)
        if relaxed is not None and relaxed.optimal and _spread_shared(fleet, relaxed, demands) == 0:
            return relaxed
        left = budget - (time.monotonic() - start)
        if relaxed is not None and left < MIN_FULL_MODEL_S:
            return dataclasses.replace(relaxed, optimal=False, solver_note=(
                relaxed.solver_note if not relaxed.optimal else
                f"time budget ({budget:g} s) hit before spread across nodes was proven; best found"))
        st = _State(fleet, demands)
        reps = st.pending()
        # Seed the full model with whichever is better (the relaxed answer may share nodes).
        hint = min((p for p in (relaxed, hint) if p is not None), key=lambda p: quality(p, fleet, demands), default=None)
        try:
            m = _Model(st, reps, allow_repartition, limit=_limit(left))
        except ExactTooLarge:
            if relaxed is None:
                raise
            return dataclasses.replace(relaxed, optimal=False, solver_note="spread across nodes not proven: the full "
                                       "model is too large for the time budget left; best found")
    else:
        floors = {}
        m = _Model(st, reps, allow_repartition, limit=_limit(budget))
    values, optimal, note = m.solve(max(0.0, budget - (time.monotonic() - start)), hint, floors)
    result = m.expand(values, optimal, note)
    if relaxed is not None and not result.optimal and quality(relaxed, fleet, demands) <= quality(result, fleet, demands):
        # Its spread replicas share nodes and the full model did not finish: not proven.
        return dataclasses.replace(relaxed, optimal=False, solver_note=f"{result.solver_note} (spread not proven)")
    return result


def _limit(seconds: float) -> int:
    return int(min(MAX_VARIABLES, VARIABLES_PER_SECOND * max(seconds, 0.1)))


def _spread_shared(fleet: Fleet, p: Placement, demands: Sequence[Demand]) -> int:
    """Replicas of unpinned spread deployments on a node that already has one of theirs."""
    return spread_shared(p, fleet, demands, pinned=False)


# --- classes of interchangeable GPUs and where replicas can go ---------------------------------

@dataclass(eq=False)
class _Class:
    pool: _Pool
    node: str | None
    gpus: list[_Gpu]
    frm: str = ""                      # empty classes: current mode (or _INVALID)
    mode: str = ""                     # used classes: the mode they are in
    free: int = 0                      # used classes: free partitions per GPU
    holds: frozenset[str] = frozenset()  # used classes: spread deployments already on them

    @property
    def empty(self) -> bool:
        return bool(self.frm)


@dataclass(eq=False)
class _Unit:
    """Where partitions of one size come from: a used class, or an empty class opened in ``to``."""

    cls: _Class
    to: str
    size: float
    per_gpu: int
    rank: int = 0
    x: Any = None  # the opened-GPU count variable (empty classes)


@dataclass(eq=False)
class _Group:
    """Replicas that are interchangeable for the model. kind: "plain", "sens" (pinned or
    spread, one demand), "tp" (tensor parallel)."""

    kind: str
    priority: int
    reps: list[_Rep]
    d: Demand
    spread: bool = False
    vars: list[Any] = field(default_factory=list)


def _workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


class _Model:
    def __init__(self, st: _State, reps: list[_Rep], allow_repartition: bool, relaxed: bool = False,
                 limit: int = MAX_VARIABLES) -> None:
        """``relaxed``: unpinned spread replicas are counted per (pool, size) with at most one per
        GPU there, not per node: a relaxation of the node-spread objective (see place_exact)."""
        from ortools.sat.python import cp_model

        self.cp = cp_model
        self.st, self.reps, self.allow, self.relaxed = st, reps, allow_repartition, relaxed
        model = self.model = cp_model.CpModel()
        demands = {r.d.key: r.d for r in reps}
        # Node granularity only where a rule looks at nodes: spread across nodes (unless relaxed),
        # pinned nodes. Tensor parallelism counts whole GPUs per node of pool-wide classes (w).
        every_node = any(d.spread and not relaxed and d.pin_node is None for d in demands.values())
        pinned_nodes = {d.pin_node for d in demands.values() if d.pin_node is not None}
        pinned = {(d.pin_node, d.pin_gpu) for d in demands.values() if d.pin_gpu is not None}
        spread_keys = {k for k, d in demands.items() if d.spread}

        # GPU classes.
        classes: dict[tuple[Any, ...], _Class] = {}
        self.class_of: dict[int, _Class] = {}
        for g in st.gpus:
            if g.pool is None:
                continue
            node = g.node if every_node or g.node in pinned_nodes else None
            alone = g.index if (g.node, g.index) in pinned else None
            if not g.used:
                frm = g.mode if g.valid else _INVALID
                key: tuple[Any, ...] = ("e", g.pool.id, frm, node, alone)
                if key not in classes:
                    classes[key] = _Class(g.pool, node, [], frm=frm)
            elif g.valid and g.free:
                holds = frozenset(k for k in spread_keys if g in st.sib_gpus[k])
                key = ("u", g.pool.id, g.mode, len(g.free), holds, node, alone)
                if key not in classes:
                    classes[key] = _Class(g.pool, node, [], mode=g.mode, free=len(g.free), holds=holds)
            else:
                continue
            classes[key].gpus.append(g)
            self.class_of[g.pos] = classes[key]
        self.classes = list(classes.values())
        self.per_node: dict[_Class, dict[str, int]] = {}
        for c in self.classes:
            self.per_node[c] = defaultdict(int)
            for g in c.gpus:
                self.per_node[c][g.node] += 1
        for c in self.classes:
            if c.node is None:  # consecutive GPUs on different nodes: spread replicas land apart
                by_node: dict[str, list[_Gpu]] = defaultdict(list)
                for g in c.gpus:
                    by_node[g.node].append(g)
                c.gpus = [g for rnd in itertools.zip_longest(*by_node.values()) for g in rnd if g is not None]
        self.alone: dict[tuple[str | None, int | None], _Class] = {
            (c.gpus[0].node, c.gpus[0].index): c for k, c in classes.items() if k[-1] is not None}

        sizes = sorted({s for p in st.pools for s in p.sizes})
        rank = self.rank = {s: i for i, s in enumerate(sizes)}
        self.units: list[_Unit] = []
        self.units_of: dict[_Class, list[_Unit]] = defaultdict(list)
        self.opened: dict[tuple[_Class, str], Any] = {}
        self.whole: dict[tuple[str, _Class], Any] = {}  # (node, empty class) -> GPUs taken whole
        for c in self.classes:
            if c.empty:
                for to, (count, size) in c.pool.modes.items():
                    if allow_repartition or to == c.frm:
                        u = _Unit(c, to, size, count, rank[size])
                        u.x = self.opened[(c, to)] = model.new_int_var(0, len(c.gpus), "x")
                        self.units.append(u)
                        self.units_of[c].append(u)
            else:
                u = _Unit(c, c.mode, c.gpus[0].size, c.free, rank[c.gpus[0].size])
                self.units.append(u)
                self.units_of[c].append(u)
        self.units_at: dict[tuple[int, float], list[_Unit]] = defaultdict(list)
        for u in self.units:
            self.units_at[(u.cls.pool.id, u.size)].append(u)

        # Replica groups.
        groups: dict[tuple[Any, ...], _Group] = {}
        for r in reps:
            d = r.d
            if d.tensor_parallel > 1:
                models = frozenset(p.model for p in r.pools if SPX in p.modes)
                # Interchangeable when they may use the same GPU models (whose SPX holds them).
                key = ("tp", d.priority, d.tensor_parallel, models) if not (d.pin_node or d.spread) else ("tp1", d.key)
                kind = "tp"
            elif d.pin_node is not None or (d.spread and not relaxed):
                key, kind = ("s", d.key), "sens"
            elif d.spread:
                key, kind = ("r", d.key), "spread"
            else:
                key = ("p", d.priority, tuple((p.id, next(s for s in p.sizes if s >= d.memory_gb)) for p in r.pools))
                kind = "plain"
            if key not in groups:
                groups[key] = _Group(kind, d.priority, [], d, spread=d.spread)
            groups[key].reps.append(r)
        self.groups = list(groups.values())

        self._estimate_size(limit)
        self.upper: dict[Any, int] = {}
        self._build_replicas(model)

    def _int(self, upper: int, name: str) -> Any:
        v = self.model.new_int_var(0, upper, name)
        self.upper[v] = upper
        return v

    def _estimate_size(self, limit: int) -> None:
        n_nodes = len(self.st.node_gpus)
        on_node: dict[str | None, int] = defaultdict(int)
        for u in self.units:
            on_node[u.cls.node] += 1
        estimate = len(self.units) + sum(
            (on_node[g.d.pin_node] if g.d.pin_node is not None else len(self.units)) if g.kind == "sens"
            else n_nodes if g.kind == "tp" else 12 for g in self.groups)
        if estimate > limit:
            raise ExactTooLarge(f"the exact model would need about {estimate:,} variables (limit {limit:,})")

    def _build_replicas(self, model: Any) -> None:
        st = self.st
        # unit -> sensitive (pinned/spread) variables in it; (pool, size) -> every replica variable
        self.sens_in: dict[_Unit, list[tuple[_Group, Any]]] = defaultdict(list)
        self.plain_in: dict[tuple[int, float], list[tuple[_Group, Any]]] = defaultdict(list)
        self.spread_in: dict[tuple[int, float], list[tuple[_Group, Any]]] = defaultdict(list)
        self.tp_in: dict[tuple[str, str], list[tuple[_Group, Any]]] = defaultdict(list)
        self.fit_terms: list[Any] = []
        self.spread_nodes: dict[_Group, dict[str, list[Any]]] = {}
        self.pinned_tp: dict[_Class, list[Any]] = defaultdict(list)
        for g in self.groups:
            d, n = g.d, len(g.reps)
            pool_ids = {p.id for p in g.reps[0].pools}
            if g.kind in ("plain", "spread"):
                for pid, cls in ((p.id, next(s for s in p.sizes if s >= d.memory_gb)) for p in g.reps[0].pools):
                    for s in st.pools[pid].sizes:
                        if s >= cls:
                            v = self._int(n, "y")
                            g.vars.append(v)
                            (self.plain_in if g.kind == "plain" else self.spread_in)[(pid, s)].append((g, v))
                            self.fit_terms.append((self.rank[s], v))
                            if g.kind == "spread":  # at most one per GPU: no more than the GPUs there
                                here = self.units_at[(pid, s)]
                                model.add(v <= sum(u.x if u.cls.empty else (0 if d.key in u.cls.holds else len(u.cls.gpus))
                                                   for u in here))
            elif g.kind == "sens":
                per_node: dict[str, list[Any]] = defaultdict(list)
                for u in self.units:
                    c = u.cls
                    if (c.pool.id not in pool_ids or u.size < d.memory_gb
                            or (d.pin_node is not None and c.node != d.pin_node)
                            or (d.pin_gpu is not None and self.alone.get((d.pin_node, d.pin_gpu)) is not c)
                            or (d.spread and d.key in c.holds)):
                        continue
                    cap = min(n, len(c.gpus) * u.per_gpu, len(c.gpus) if d.spread else n)
                    v = self._int(cap, "v")
                    if d.spread and c.empty:
                        model.add(v <= u.x)  # one replica per GPU: no more than the GPUs opened
                    g.vars.append(v)
                    self.sens_in[u].append((g, v))
                    self.fit_terms.append((u.rank, v))
                    assert c.node is not None
                    per_node[c.node].append(v)
                if d.spread:
                    self.spread_nodes[g] = per_node
            else:
                t = d.tensor_parallel
                eligible: dict[tuple[str, str], int] = defaultdict(int)
                for c in self.classes:
                    if (c.empty and c.pool.id in pool_ids and SPX in c.pool.modes
                            and c.pool.modes[SPX][1] >= d.memory_gb and (self.allow or c.frm == SPX)):
                        for node, count in self.per_node[c].items():
                            if d.pin_node is None or node == d.pin_node:
                                eligible[(node, c.pool.model)] += count
                per_node = defaultdict(list)
                pin = None
                if d.pin_gpu is not None:
                    pin = self.alone.get((d.pin_node, d.pin_gpu))
                    if pin is None or not pin.empty or pin.pool.id not in pool_ids or SPX not in pin.pool.modes:
                        eligible.clear()
                    else:
                        eligible = defaultdict(int, {k: v for k, v in eligible.items() if k[1] == pin.pool.model})
                for (node, gpu_model), count in eligible.items():
                    if count < t:
                        continue
                    v = self._int(1 if pin is not None else min(n, count // t), "z")
                    g.vars.append(v)
                    self.tp_in[(node, gpu_model)].append((g, v))
                    per_node[node].append(v)
                if pin is not None and g.vars:
                    self.pinned_tp[pin].extend(g.vars)
                if d.spread:
                    self.spread_nodes[g] = per_node
            if g.vars:
                model.add(sum(g.vars) <= n)

        # Whole GPUs for tensor parallelism, per (node, GPU model): t x z = the GPUs taken whole there.
        tp_classes: dict[str, list[_Class]] = defaultdict(list)
        for c in self.classes:
            if c.empty and SPX in c.pool.modes and (self.allow or c.frm == SPX):
                tp_classes[c.pool.model].append(c)
        for (node, gpu_model), items in self.tp_in.items():
            ws = []
            for c in tp_classes[gpu_model]:
                if self.per_node[c].get(node):
                    self.whole[(node, c)] = w = model.new_int_var(0, self.per_node[c][node], "w")
                    ws.append(w)
            model.add(sum(g.d.tensor_parallel * v for g, v in items) == sum(ws))
        for c, zs in self.pinned_tp.items():
            w = self.whole.get((c.gpus[0].node, c))
            if w is not None:
                model.add(sum(zs) <= w)
            else:
                for z in zs:
                    model.add(z == 0)
        whole_of: dict[_Class, list[Any]] = defaultdict(list)
        for (_, c), w in self.whole.items():
            whole_of[c].append(w)
        for c in self.classes:
            if c.empty:
                taken = [self.opened[(c, u.to)] for u in self.units_of[c]] + whole_of[c]
                if taken:
                    model.add(sum(taken) <= len(c.gpus))

        # Partition capacity: per class (what pinned/spread replicas use), per (pool, size) (everything).
        # GPUs opened per (pool, size) as one integer too: it lets the solver round its LP bound
        # (ceil(replicas / partitions per GPU)) instead of opening fractions of GPUs on many nodes.
        supply: dict[tuple[int, float], list[Any]] = defaultdict(list)
        opened_at: dict[tuple[int, float], list[_Unit]] = defaultdict(list)
        for u in self.units:
            if u.cls.empty:
                opened_at[(u.cls.pool.id, u.size)].append(u)
            else:
                supply[(u.cls.pool.id, u.size)].append(u.per_gpu * len(u.cls.gpus))
            if self.sens_in[u]:
                cap = u.per_gpu * u.x if u.cls.empty else u.per_gpu * len(u.cls.gpus)
                model.add(sum(v for _, v in self.sens_in[u]) <= cap)
        for key, units in opened_at.items():
            total = sum(len(u.cls.gpus) for u in units)
            if len(units) > 1:
                agg = model.new_int_var(0, total, "X")
                model.add(agg == sum(u.x for u in units))
            else:
                agg = units[0].x
            supply[key].append(units[0].per_gpu * agg)
        demand_at: dict[tuple[int, float], list[Any]] = defaultdict(list)
        for key, items in [*self.plain_in.items(), *self.spread_in.items()]:
            demand_at[key] += [v for _, v in items]
        for u, items in self.sens_in.items():
            demand_at[(u.cls.pool.id, u.size)] += [v for _, v in items]
        for key, vs in demand_at.items():
            model.add(sum(vs) <= sum(supply[key]))

        # Spread: replicas beyond the first on a node (occupants' nodes already have one) count
        # against it. e >= count - 1 with e >= 0 keeps the bound of 0 visible to propagation.
        self.spread_terms: list[Any] = []
        self.node_used: dict[tuple[_Group, str], Any] = {}
        for g, per_node in self.spread_nodes.items():
            for node, vs in per_node.items():
                first = 0 if node in st.sib_nodes[g.d.key] else 1
                e = self.node_used[(g, node)] = model.new_int_var(0, len(g.reps), "e")
                model.add(e >= sum(vs) - first)
                self.spread_terms.append(e)

    # -- solving

    def _placed(self) -> Any:
        return sum(v for g in self.groups for v in g.vars)

    def _placed_terms(self, level: int | None = None) -> list[tuple[int, Any]]:
        return [(1, v) for g in self.groups if level is None or g.priority == level for v in g.vars]

    def _placed_stages(self, total: int) -> list[tuple[list[tuple[int, Any]], bool, str, bool]]:
        levels = sorted({g.priority for g in self.groups}, reverse=True)
        if len(levels) == 1:
            return [(self._placed_terms(), True, "replicas placed", True)]
        if (total + 1) ** len(levels) < 2**60:
            # One run, lexicographic by weights: a replica of a level outweighs all below it.
            weights = {lvl: (total + 1) ** k for k, lvl in enumerate(reversed(levels))}
            terms = [(weights[g.priority], v) for g in self.groups for v in g.vars]
            return [(terms, True, "replicas placed by priority", True)]
        return [(self._placed_terms(lvl), True, f"replicas of priority {lvl}", True) for lvl in levels]

    def solve(self, budget: float, hint: Placement | None,
              floors: dict[str, Any] | None = None) -> tuple[dict[Any, int], bool, str]:
        """Values of every variable, whether proven optimal, and a note. ``floors``: the relaxed
        model's optima (its ``optima``), lower bounds here while the replicas placed per priority
        match. Sets ``optima``: each finished stage's value, and "placed" per priority."""
        cp, model = self.cp, self.model
        variables = [v for g in self.groups for v in g.vars] + list(self.opened.values()) + list(self.whole.values()) + list(
            self.node_used.values())
        hinted: dict[Any, int] = {}
        if hint is not None:
            hinted = self._hint(hint)
            for v in variables:  # a complete hint: CP-SAT starts from it as a solution
                model.add_hint(v, hinted.get(v, 0))
        total = len(self.reps)
        gpus = [(1, v) for v in self.opened.values()] + [(1, v) for v in self.whole.values()]
        changes = [(1, v) for (c, to), v in self.opened.items() if c.frm != to] + [
            (1, v) for (_, c), v in self.whole.items() if c.frm != SPX]
        # (objective terms, maximise, what, counts for the optimality claim); best fit is only a tie-break.
        stages: list[tuple[list[tuple[int, Any]], bool, str, bool]] = []
        most = {g: min(len(g.reps), sum(self.upper[v] for v in g.vars)) for g in self.groups}
        if hint is not None and all(sum(hinted.get(v, 0) for v in g.vars) >= most[g] for g in self.groups):
            # The hint places as many of each group as its variables allow: nothing to maximise.
            model.add(self._placed() == sum(most.values()))
        else:
            stages += self._placed_stages(total)
        stages += [([(1, e) for e in self.spread_terms], False, "spread", True), (gpus, False, "GPUs used", True),
                   (changes, False, "mode changes", True)]
        if not self.relaxed:  # (the relaxed model's answer may be replaced: no time for tie-breaks)
            stages.append((list(self.fit_terms), False, "best fit", False))
        stages = [st for st in stages if st[0]]  # nothing to choose
        solver = cp.CpSolver()
        solver.parameters.num_workers = _workers()
        # Symmetry detection can take seconds on big fleets (all those alike nodes) before any search.
        solver.parameters.symmetry_level = 0
        start = time.monotonic()
        values: dict[Any, int] | None = None
        optimal, note = True, "optimal"
        self.optima: dict[str, Any] = {}
        levels = sorted({g.priority for g in self.groups}, reverse=True)
        for i, (terms, maximise, what, required) in enumerate(stages):
            if not maximise and "placed" not in self.optima:
                now = values if values is not None else hinted
                self.optima["placed"] = tuple(sum(now.get(v, 0) for g in self.groups if g.priority == lvl for v in g.vars)
                                              for lvl in levels)
            if (floors and what in floors and floors.get("placed") == self.optima.get("placed")
                    and (what != "mode changes" or floors.get("GPUs used") == self.optima.get("GPUs used"))):
                # The relaxation's optimum bounds this one from below: reaching it proves it.
                model.add(sum(c * v for c, v in terms) >= floors[what])
            left = budget - (time.monotonic() - start)
            if not required:
                left = min(left, max(0.1, 0.2 * budget))  # a tie-break: never the whole budget
            if left <= 0.0:
                if required:
                    optimal, note = False, f"time budget ({budget:g} s) hit before stage {what!r}; best found"
                break
            expr = sum(c * v for c, v in terms)
            model.maximize(expr) if maximise else model.minimize(expr)
            # Minimising GPUs is the hard stage: it gets three shares of what is left.
            if required:
                left *= (3 if what == "GPUs used" else 1) / sum(3 if s[2] == "GPUs used" else 1 for s in stages[i:] if s[3])
            solver.parameters.max_time_in_seconds = left
            status = solver.solve(model)
            if status not in (cp.OPTIMAL, cp.FEASIBLE):
                if status in (cp.INFEASIBLE, cp.MODEL_INVALID):
                    raise PlacementError(f"CP-SAT: {solver.status_name(status)} at stage {what!r}")
                if required:  # UNKNOWN: out of time before any solution of this stage
                    optimal, note = False, f"time budget ({budget:g} s) hit before stage {what!r} found a solution; best found"
                break
            values = {v: solver.value(v) for v in variables}
            if status != cp.OPTIMAL:
                if required:
                    optimal, note = False, f"time budget ({budget:g} s) hit while optimising {what}; best found"
                break
            value = round(solver.objective_value)
            self.optima[what] = value
            if not hinted or sum(c * hinted.get(v, 0) for c, v in terms) != value:
                # The hint is not optimal for this stage: go on from the solution found (keep the
                # hint while it is, it is usually better in the stages to come).
                hinted = values
                model.clear_hints()  # type: ignore[no-untyped-call]
                for v, x in values.items():
                    model.add_hint(v, x)
            model.add(expr >= value if maximise else expr <= value)
        if values is None:
            if hint is None and stages:
                raise PlacementTimeout(f"the exact solver found no solution within {budget:g} s")
            values = self._hint(hint) if hint is not None else {}
        return values, optimal, note

    def _hint(self, hint: Placement) -> dict[Any, int]:
        """The variables' values for ``hint`` (a placement of the same input)."""
        st = self.st
        out: dict[Any, int] = defaultdict(int)
        group_of: dict[tuple[str, int], _Group] = {(r.d.key, r.replica): g for g in self.groups for r in g.reps}
        opened: dict[_Gpu, str] = {}
        whole: set[_Gpu] = set()
        on_node: dict[tuple[_Group, str], int] = defaultdict(int)
        for a in hint.assignments:
            g = group_of.get((a.deployment, a.replica))
            if g is None:
                continue
            gpus = [st.by_key[(s.node, s.gpu_index)] for s in a.slots]
            for gpu, s in zip(gpus, a.slots):
                if not gpu.used:
                    if g.kind == "tp":
                        whole.add(gpu)
                    else:
                        opened[gpu] = s.compute_mode
            if g.kind == "tp":
                var = self._find(self.tp_in.get((gpus[0].node, gpus[0].spec.model), []), g)
            elif g.kind in ("plain", "spread"):
                assert gpus[0].pool is not None
                where = self.plain_in if g.kind == "plain" else self.spread_in
                var = self._find(where.get((gpus[0].pool.id, a.slots[0].memory_gb), []), g)
            else:
                unit = self._unit(gpus[0], a.slots[0].compute_mode)
                var = None if unit is None else self._find(self.sens_in.get(unit, []), g)
            if var is not None:
                out[var] += 1
                if g in self.spread_nodes:
                    on_node[(g, gpus[0].node)] += 1
        for (g, node), count in on_node.items():
            if (g, node) in self.node_used:
                out[self.node_used[(g, node)]] = max(0, count - (0 if node in st.sib_nodes[g.d.key] else 1))
        for gpu, mode in opened.items():
            var = self.opened.get((self.class_of[gpu.pos], mode))
            if var is not None:
                out[var] += 1
        for gpu in whole:
            var = self.whole.get((gpu.node, self.class_of[gpu.pos]))
            if var is not None:
                out[var] += 1
        return out

    def _deal_spread(self, val: dict[Any, int], sens: dict[_Unit, list[_Group]]) -> dict[_Unit, dict[_Group, int]]:
        """Relaxed model: deal each spread deployment's count per (pool, size) out to units, at
        most one per GPU, on nodes it does not use yet first, then on GPUs already in use."""
        dealt: dict[_Unit, dict[_Group, int]] = defaultdict(lambda: defaultdict(int))
        nodes: dict[_Group, set[str]] = defaultdict(set)
        for key, gvs in self.spread_in.items():
            here = self.units_at[key]
            load = {u: len(sens[u]) for u in here}
            for g, v in sorted(gvs, key=lambda gv: -val.get(gv[1], 0)):
                nodes[g] |= self.st.sib_nodes[g.d.key]
                for _ in range(val.get(v, 0)):
                    best = None
                    for u in here:
                        gpus = val.get(u.x, 0) if u.cls.empty else (0 if g.d.key in u.cls.holds else len(u.cls.gpus))
                        room = (val.get(u.x, 0) if u.cls.empty else len(u.cls.gpus)) * u.per_gpu - load[u]
                        if dealt[u][g] >= gpus or room <= 0:
                            continue
                        score = (u.cls.node is not None and u.cls.node in nodes[g], dealt[u][g], u.cls.empty, -room)
                        if best is None or score < best[0]:
                            best = (score, u)
                    if best is None:
                        raise _Unrealisable(f"spread deployment {g.d.key}: no GPU left for a replica")
                    u = best[1]
                    dealt[u][g] += 1
                    load[u] += 1
                    if u.cls.node is not None:
                        nodes[g].add(u.cls.node)
        return dealt

    @staticmethod
    def _find(items: list[tuple[_Group, Any]], g: _Group) -> Any:
        return next((v for gg, v in items if gg is g), None)

    def _unit(self, gpu: _Gpu, mode: str) -> _Unit | None:
        c = self.class_of.get(gpu.pos)
        return None if c is None else next((u for u in self.units_of[c] if u.to == mode), None)

    # -- from counts to slots

    def expand(self, val: dict[Any, int], optimal: bool, note: str) -> Placement:
        st = self.st
        changes: list[ModeChange] = []
        slots_of: dict[_Group, list[tuple[Slot, ...]]] = defaultdict(list)
        # Which GPUs of each empty class are taken whole (tensor parallel) or opened per mode.
        spare: dict[_Class, list[_Gpu]] = {c: list(c.gpus) for c in self.classes if c.empty}
        for (node, gpu_model), tp_items in self.tp_in.items():
            reserved: list[_Gpu] = []
            for (n, c), w in self.whole.items():
                if (n, c.pool.model) == (node, gpu_model) and val.get(w, 0):
                    mine = [gpu for gpu in spare[c] if gpu.node == node][:val[w]]
                    reserved += mine
                    taken = set(mine)
                    spare[c] = [gpu for gpu in spare[c] if gpu not in taken]
            # A pinned replica gets its GPU (the model reserved it: sum of its z <= its w <= 1).
            claimed = {g: self.alone[(node, g.d.pin_gpu)].gpus[0] for g, v in tp_items
                       if g.d.pin_gpu is not None and val.get(v, 0)}
            pool = [gpu for gpu in reserved if gpu not in claimed.values()]
            for g, v in tp_items:
                for _ in range(val.get(v, 0)):
                    members = [claimed[g]] if g in claimed else []
                    members += [pool.pop(0) for _ in range(g.d.tensor_parallel - len(members))]
                    slots = []
                    for gpu in members:
                        change = st.open(gpu, SPX)
                        if change:
                            changes.append(change)
                        slots.append(st.take(gpu, whole=True))
                    slots_of[g].append(tuple(slots))

        # Items per unit: pinned/spread replicas as the model put them (relaxed spread ones
        # dealt out here), then plain ones where room is. One spread deployment's items stay
        # consecutive (spread ones first) for the round-robin below.
        sens: dict[_Unit, list[_Group]] = defaultdict(list)
        for u, gvs in self.sens_in.items():
            for g, v in sorted(gvs, key=lambda gv: (not gv[0].spread, gv[0].d.key)):
                sens[u] += [g] * val.get(v, 0)
        dealt = self._deal_spread(val, sens)
        items: dict[_Unit, list[_Group]] = defaultdict(list)
        for u in self.units:
            items[u] = [g for g in sens[u] if g.spread] + [g for g, n in dealt[u].items() for _ in range(n)] + [
                g for g in sens[u] if not g.spread]
        gpus_for: dict[_Unit, int] = {}
        for u in self.units:
            if u.cls.empty:
                counts: dict[_Group, int] = defaultdict(int)
                for g in items[u]:
                    counts[g] += 1
                spread = max((n for g, n in counts.items() if g.spread), default=0)
                gpus_for[u] = max(spread, math.ceil(len(items[u]) / u.per_gpu))
        for (pid, size), gvs in self.plain_in.items():
            todo = [g for g, v in gvs for _ in range(val.get(v, 0))]
            here = sorted(self.units_at[(pid, size)], key=lambda u: u.cls.empty)  # GPUs in use first
            for u in here:  # room on GPUs that are in use or opened anyway
                room = (len(u.cls.gpus) * u.per_gpu if not u.cls.empty else gpus_for[u] * u.per_gpu) - len(items[u])
                take, todo = todo[:max(room, 0)], todo[max(room, 0):]
                items[u] += take
            for u in here:  # then more GPUs, as many as the model opened
                while todo and u.cls.empty and gpus_for[u] < val.get(u.x, 0):
                    gpus_for[u] += 1
                    take, todo = todo[:u.per_gpu], todo[u.per_gpu:]
                    items[u] += take
            if todo:
                raise PlacementError(f"exact expansion: {len(todo)} replica(s) of {todo[0].d.key} left over")
        nodes_of: dict[str, set[str]] = defaultdict(set)  # spread deployment -> nodes it is on
        for g in self.groups:
            if g.spread:
                nodes_of[g.d.key] |= st.sib_nodes[g.d.key]
        for u in self.units:
            if not items[u]:
                continue
            in_unit = Counter(g for g in items[u] if g.spread)
            if u.cls.empty:
                # Open as few GPUs as the items need, on nodes the unit's spread deployments avoid.
                avoid = {n for g in in_unit for n in nodes_of[g.d.key]}
                order = sorted(range(len(spare[u.cls])), key=lambda i: (spare[u.cls][i].node in avoid, i))
                chosen = set(order[:gpus_for[u]])
                gpus = [gpu for i, gpu in enumerate(spare[u.cls]) if i in chosen]
                spare[u.cls] = [gpu for i, gpu in enumerate(spare[u.cls]) if i not in chosen]
                for gpu in gpus:
                    change = st.open(gpu, u.to)
                    if change:
                        changes.append(change)
            else:
                gpus = u.cls.gpus
            for gpu, g in _fill(gpus, in_unit, [g for g in items[u] if not g.spread], nodes_of):
                slots_of[g].append((st.take(gpu),))

        assignments: list[tuple[tuple[int, int], Assignment]] = []
        unplaced: list[tuple[tuple[int, int], Unplaced]] = []
        placed_by_demand: dict[str, list[tuple[tuple[int, int], Assignment]]] = defaultdict(list)
        left: list[_Rep] = []
        for g in self.groups:
            placed = slots_of[g]
            if g.spread:
                placed = _interleave_nodes(placed)
            reps = sorted(g.reps, key=lambda r: (r.pos, r.replica)) if g.kind != "plain" else g.reps
            for r, s in zip(reps, placed):
                a = Assignment(r.d.key, r.replica, s)
                placed_by_demand[r.d.key].append(((r.pos, r.replica), a))
                for slot in s:
                    gpu = st.by_key[(slot.node, slot.gpu_index)]
                    st.sib_gpus[r.d.key].add(gpu)
                    st.sib_nodes[r.d.key].add(gpu.node)
            left += reps[len(placed):]
        for items_ in placed_by_demand.values():
            assignments += items_
        reasons = {}
        for r in left:
            if r.d.key not in reasons:
                reasons[r.d.key] = unplaced_reason(st, r.d, self.allow)
            code, text = reasons[r.d.key]
            unplaced.append(((r.pos, r.replica), Unplaced(r.d.key, r.replica, text, code)))
        return Placement(tuple(a for _, a in sorted(assignments, key=lambda v: v[0])), tuple(changes),
                         tuple(u for _, u in sorted(unplaced, key=lambda v: v[0])), st.gpus_used(),
                         solver="exact", optimal=optimal, solver_note=note, excluded=tuple(st.excluded))
