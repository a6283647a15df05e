"""``place``: the fast greedy placement, and the unplaced-replica reasons it shares."""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Callable, Sequence

from planning.placement._state import SPX, _first, _gib, _Gpu, _predicate, _Rep, _State
from planning.placement.types import Assignment, Demand, Fleet, ModeChange, Placement, Unplaced

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
    Up to four passes, the best kept (fewest unplaced per priority level from the highest, then
    fewest GPUs, then fewest changes): the order above; replicas restricted to fewer GPU pools
    (model, NPS) first within a priority (when pools differ); priority ignored (kept only when it
    places everything, so priorities cannot be hurt); small first within a priority (only when
    nothing else placed everything: maximises how many fit).
    Raises PlacementError for bad input.
    """
    best, levels = None, sorted({d.priority for d in demands}, reverse=True)
    passes = ["priority"] + (["constrained"] if any(d.gpu_models for d in demands) else [])
    passes += ["size"] if len(levels) > 1 else []
    for order in passes + ["small"]:
        if order == "small" and (best is None or best[1].ok()):
            break
        result = _greedy(fleet, demands, allow_repartition, order)
        if order == "size" and not result.ok():
            continue
        lost = {d.key: d.priority for d in demands}
        key = (tuple(sum(lost[u.deployment] == lvl for u in result.unplaced) for lvl in levels),
               result.gpus_used, len(result.mode_changes))
        if best is None or key < best[0]:
            best = (key, result)
    assert best is not None
    return best[1]


def _greedy(fleet: Fleet, demands: Sequence[Demand], allow_repartition: bool, order: str) -> Placement:
    st = _State(fleet, demands)
    assignments: list[tuple[tuple[int, int], Assignment]] = []
    changes: list[ModeChange] = []
    unplaced: list[tuple[tuple[int, int], Unplaced]] = []
    failed: dict[str, str] = {}
    for rep in st.pending(order):
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
