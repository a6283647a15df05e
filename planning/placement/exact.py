"""``place_exact``: the CP-SAT optimum on an aggregated count model."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Sequence

from planning.placement._state import _Gpu, _Rep, _State
from planning.placement.heuristic import _reason
from planning.placement.types import Assignment, Demand, Fleet, ModeChange, Placement, PlacementError, Unplaced

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
