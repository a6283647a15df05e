"""Placement quality and speed: the default path (exact within its budget), the heuristic and the
old prototype rule, against the proven optimum, all on the same instances.

Instance families (MI300X nodes of 8 GPUs: SPX 1x192, DPX 2x96, QPX 4x48, CPX 8x24 GiB; empty GPUs in
random current modes). Every family mixes in the demands of the console's own rules: about 5 %
tensor-parallel (2 or 4 whole SPX GPUs of one node, 100-180 GiB per GPU), 8 % spread (2-4 replicas on
different GPUs and nodes) and 3 % pinned to a node (a third of those to one GPU):

- "random": NPS1, catalogue-like sizes, one priority.
- "adversarial": 25 % of the nodes NPS4, sizes just above partition boundaries, three priorities.
- "mixed": every other node MI325X (256 GiB) and a third of the models restricted to one GPU model.
- "rules": every rule at once: mixed MI300X/MI325X fleet with 20 % NPS4 nodes, 30 % of the demand
  already running (occupants the solver must work around), three priorities, model restrictions,
  8 % tensor-parallel, 8 % spread, 3 % pinned.

Per instance: GPUs used by ``place_heuristic``, by ``place`` (the default path: ``place_exact`` within
``DEFAULT_TIME_BUDGET_S`` seeded with the heuristic, heuristic fallback) and by the optimum (``place_exact``
with a long time limit; "unproven" when even that does not finish), and the wall time of each, measured
on that same instance. Ratios are GPUs over the optimum's on instances where both place everything.
``default_optimal_gpus`` counts the instances (up to 1,000 GPUs) where the default path used the optimum
number of GPUs and placed as many replicas; ``budget_hit`` how often the exact solver ran out of its budget
on the default path.

``old rule``: the prototype's scheduler as docs/prototype-facts.md (sections 1, 4.4, 8) describes it, run
on the same instance (same GPUs, same demands, already-running ones first) and timed there:

- the operator initialises every GPU in one mode, SPX (1 partition) or CPX (8), once; NPS4 nodes must be
  CPX; every GPU counts as 192 GB (its spec table, MI325X included), so a CPX partition is 24 GB;
- a model goes to a partition with at least 8 GB free (``min_partition_gb``), the one with the most free
  memory first, if its memory fits that free memory; partitions are shared by several models (no
  isolation); a pinned model goes to its preferred partition when it fits (the 8 GB filter skipped);
- one instance per model id and priorities ignored: replicas are registered as separate models, in the
  order asked; spread and GPU-model restrictions are not expressible (a placement that breaks one is
  counted in ``old_*_violations``); a tensor-parallel replica needs its whole memory in one partition
  (``gpu_count`` is always 1), which no partition has.

It is reported as the better of its SPX and CPX runs per instance (``old_best``), over the optimum where it
placed everything, plus the replicas it left unplaced where the console placed them.

Speed: one instance per family at 100, 1,000 and 5,000 GPUs (two replicas per GPU; "rules" 0.7 demands per
GPU), the wall time of the heuristic, of the exact solver with the default budget, of the default path and
of the old rule, on the same instance.

``--quick`` (about a minute on 2 cores): instances up to 256 GPUs, speed at 100 and 1,000 GPUs. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planning.placement import (  # noqa: E402
    DEFAULT_TIME_BUDGET_S,
    Demand,
    ExactTooLarge,
    Fleet,
    GpuState,
    NodeState,
    Occupant,
    Placement,
    place,
    place_exact,
    place_heuristic,
    quality,
    validate,
)

GPU_MEMORY = 192.0
MODES = ("SPX", "DPX", "QPX", "CPX")
FLOOR_GB = 8.0


def make_fleet(gpus: int, rng: random.Random, *, nps4_share: float = 0.0, modes: tuple[str, ...] = MODES) -> Fleet:
    nodes = []
    for n in range((gpus + 7) // 8):
        count = min(8, gpus - 8 * n)
        nps = "NPS4" if rng.random() < nps4_share else "NPS1"
        allowed = [m for m in modes if nps == "NPS1" or m in ("QPX", "CPX")] or ["CPX"]
        nodes.append(NodeState(f"n{n:04d}", nps, tuple(
            GpuState(f"n{n:04d}", i, "MI300X", rng.choice(allowed)) for i in range(count))))
    return Fleet(tuple(nodes))


def random_needs(n: int, rng: random.Random) -> list[float]:
    """Catalogue-like sizes: mostly small models, some 70B-class, a few near a whole GPU."""
    pool = [6, 9, 12, 16, 18, 20, 22, 28, 34, 40, 44, 60, 75, 90, 110, 140, 170, 185]
    weights = [6, 6, 6, 8, 6, 6, 4, 4, 4, 4, 3, 3, 3, 3, 2, 2, 1, 1]
    return [float(x) + round(rng.uniform(-1.5, 1.5), 1) for x in rng.choices(pool, weights, k=n)]


def adversarial_needs(n: int, rng: random.Random) -> list[float]:
    """Sizes just above partition boundaries and mixes that leave one slot of a larger class."""
    out: list[float] = []
    while len(out) < n:
        kind = rng.randrange(3)
        if kind == 0:
            out += [rng.choice([24.5, 48.5, 96.5, 23.9, 47.9, 95.9])]
        elif kind == 1:
            out += [90.0] + [20.0] * rng.randint(1, 7)  # one DPX-class with CPX-class company
        else:
            out += [45.0] * 3 + [20.0] * rng.randint(1, 3)
    return out[:n]


def demands_for(needs: list[float], rng: random.Random, priorities: int = 1) -> list[Demand]:
    return [Demand(f"m{i}", need, 1, priority=rng.randrange(priorities)) for i, need in enumerate(needs)]


PROTOTYPE_GPU_GB = 192.0  # the prototype's spec table gives every GPU 192 GB, MI325X included


def old_rule(fleet: Fleet, demands: list[Demand], mode: str) -> dict[str, Any]:
    """The prototype's scheduler (see the module docstring) with every GPU initialised in ``mode``
    ("SPX" or "CPX"; NPS4 nodes CPX). Returns GPUs used, replicas unplaced, placements that break a
    spread or GPU-model rule it cannot express, and its wall time."""
    start = time.perf_counter()
    free: list[float] = []
    where: list[tuple[str, int, str]] = []  # partition -> (node, GPU index, GPU model)
    by_node: dict[str, list[int]] = {}
    for node in fleet.nodes:
        count = 8 if mode == "CPX" or node.memory_mode == "NPS4" else 1
        for gpu in node.gpus:
            for _ in range(count):
                by_node.setdefault(node.name, []).append(len(free))
                free.append(PROTOTYPE_GPU_GB / count)
                where.append((node.name, gpu.index, gpu.gpu_model))
    heap = [(-f, i) for i, f in enumerate(free)]
    heapq.heapify(heap)
    used: set[tuple[str, int]] = set()
    unplaced = violations = 0

    def take(i: int, need: float, d: Demand, held: set[tuple[str, int]]) -> None:
        nonlocal violations
        free[i] -= need
        heapq.heappush(heap, (-free[i], i))
        node, index, model = where[i]
        violations += bool(d.gpu_models and model not in d.gpu_models) + bool(d.spread and (node, index) in held)
        held.add((node, index))
        used.add((node, index))

    for d in demands:
        need = d.memory_gb * max(1, d.tensor_parallel)  # one process in one partition: no multi-GPU
        held: set[tuple[str, int]] = set()
        for _ in range(d.replicas):
            if d.pin_node:  # its preferred partition: the pinned GPU's (or node's) with the most free memory
                pool = [i for i in by_node.get(d.pin_node, []) if d.pin_gpu is None or where[i][1] == d.pin_gpu]
                best = max(pool, key=lambda i: free[i], default=None)
                if best is not None and need <= free[best]:
                    take(best, need, d, held)
                    continue
            while heap and -heap[0][0] != free[heap[0][1]]:
                heapq.heappop(heap)  # a stale entry: that partition took a model since
            if heap and free[heap[0][1]] >= FLOOR_GB and need <= free[heap[0][1]]:
                take(heapq.heappop(heap)[1], need, d, held)
            else:
                unplaced += 1  # the partition with the most free memory cannot take it, so none can
    return {"gpus": len(used), "unplaced": unplaced, "violations": violations,
            "seconds": time.perf_counter() - start}


def with_features(demands: list[Demand], fleet: Fleet, rng: random.Random, *, tensor_parallel: float = 0.05,
                  spread: float = 0.08, pinned: float = 0.03) -> list[Demand]:
    """The console's own rules mixed in: tensor-parallel, spread and pinned demands."""
    out = []
    for d in demands:
        r = rng.random()
        if r < tensor_parallel:
            d = dataclasses.replace(d, tensor_parallel=rng.choice([2, 4]), memory_gb=round(rng.uniform(100, 180), 1))
        elif r < tensor_parallel + spread:
            d = dataclasses.replace(d, spread=True, replicas=rng.randint(2, 4))
        elif r < tensor_parallel + spread + pinned:
            node = rng.choice(fleet.nodes)
            d = dataclasses.replace(d, pin_node=node.name, gpu_models=(),
                                    pin_gpu=rng.choice(node.gpus).index if rng.random() < 0.3 else None)
        out.append(d)
    return out


def with_mi325x(fleet: Fleet) -> Fleet:
    """Every other node MI325X (256 GiB)."""
    return Fleet(tuple(NodeState(n.name, n.memory_mode, tuple(GpuState(g.node, g.index, "MI325X", g.compute_mode)
                                                              for g in n.gpus)) if i % 2 else n
                       for i, n in enumerate(fleet.nodes)), fleet.occupants)


def mixed(fleet: Fleet, demands: list[Demand], rng: random.Random) -> tuple[Fleet, list[Demand]]:
    """Every other node MI325X; a third of the models (pinned ones aside) restricted to one GPU model."""
    return with_mi325x(fleet), [d if d.pin_node else dataclasses.replace(
        d, gpu_models=rng.choice([(), (), ("MI300X",), ("MI325X",)])) for d in demands]


def rules(gpus: int, n: int, rng: random.Random) -> tuple[Fleet, list[Demand], list[Demand]]:
    """Every rule at once (see the module docstring)."""
    fleet = with_mi325x(make_fleet(gpus, rng, nps4_share=0.2))
    demands = []
    for i, need in enumerate(random_needs(n, rng)):
        r = rng.random()
        kw: dict[str, Any] = dict(key=f"m{i}", memory_gb=need, replicas=1, priority=rng.randrange(3),
                                  gpu_models=rng.choice([(), (), ("MI300X",), ("MI325X",)]))
        if r < 0.08:
            kw.update(tensor_parallel=rng.choice([2, 4]), memory_gb=round(rng.uniform(100, 180), 1))
        elif r < 0.16:
            kw.update(spread=True, replicas=rng.randint(2, 4))
        elif r < 0.19:
            node = rng.choice(fleet.nodes)
            kw.update(pin_node=node.name, gpu_models=())
            if rng.random() < 0.3:
                kw.update(pin_gpu=rng.choice(node.gpus).index)
        demands.append(Demand(**kw))
    # 30 % of the demand is already running: place it, keep it as occupants, place the rest.
    k = len(demands) * 3 // 10
    first = place_heuristic(fleet, demands[:k])
    by_key = {d.key: d for d in demands}
    occupants = tuple(Occupant(a.deployment, a.replica, by_key[a.deployment].priority, s.node, s.gpu_index,
                               s.partition_index, by_key[a.deployment].memory_gb)
                      for a in first.assignments for s in a.slots)
    modes = {(c.node, c.gpu_index): c.to_mode for c in first.mode_changes}
    nodes = tuple(NodeState(x.name, x.memory_mode, tuple(
        GpuState(g.node, g.index, g.gpu_model, modes.get((g.node, g.index), g.compute_mode)) for g in x.gpus))
        for x in fleet.nodes)
    return Fleet(nodes, occupants), demands[k:], demands[:k]


def instance(kind: str, gpus: int, n: int, rng: random.Random) -> tuple[Fleet, list[Demand], list[Demand]]:
    """(fleet, demands to place, demands already running there as occupants)."""
    if kind == "rules":
        return rules(gpus, n, rng)
    needs = (adversarial_needs if kind == "adversarial" else random_needs)(n, rng)
    fleet = make_fleet(gpus, rng, nps4_share=0.25 if kind == "adversarial" else 0.0)
    demands = with_features(demands_for(needs, rng, priorities=1 if kind == "random" else 3), fleet, rng)
    if kind == "mixed":
        fleet, demands = mixed(fleet, demands, rng)
    return fleet, demands, []


def old_runs(fleet: Fleet, demands: list[Demand], running: list[Demand]) -> dict[str, Any]:
    """The old rule in both of its modes on this instance (the already-running demands first,
    as the prototype would have placed them itself), and the better of the two."""
    row: dict[str, Any] = {}
    for mode in ("SPX", "CPX"):
        old = old_rule(Fleet(fleet.nodes), running + demands, mode)
        key = f"old_{mode.lower()}"
        row[key], row[f"{key}_unplaced"], row[f"{key}_violations"] = old["gpus"], old["unplaced"], old["violations"]
        row[f"{key}_s"] = round(old["seconds"], 4)
    best = min(("spx", "cpx"), key=lambda m: (row[f"old_{m}_unplaced"], row[f"old_{m}"]))
    row.update(old_best=row[f"old_{best}"], old_best_unplaced=row[f"old_{best}_unplaced"],
               old_best_violations=row[f"old_{best}_violations"], old_best_mode=best.upper())
    return row


def timed(fn: Callable[[], Placement]) -> tuple[float, Placement]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def budget_hit(p: Placement) -> bool:
    """The exact solver ran out of its budget (or was too large to build within it) on the
    default path, whichever answered."""
    return not p.optimal and ("budget" in p.solver_note or "too large" in p.solver_note)


def compare(kind: str, gpus: int, n: int, rng: random.Random, optimum_limit: float) -> dict[str, Any]:
    fleet, demands, running = instance(kind, gpus, n, rng)
    heur_s, heur = timed(lambda: place_heuristic(fleet, demands))
    default_s, default = timed(lambda: place(fleet, demands))
    hint = min((heur, default), key=lambda p: quality(p, fleet, demands))
    optimum_s, optimum = timed(lambda: default if default.optimal else
                               place_exact(fleet, demands, time_limit_s=optimum_limit, hint=hint))
    for p in (heur, default, optimum):
        errors = validate(fleet, p, demands)
        assert not errors, errors[:3]
    row: dict[str, Any] = {
        "kind": kind, "gpus": gpus, "replicas": sum(d.replicas for d in demands), "heuristic": heur.gpus_used,
        "default": default.gpus_used, "optimum": optimum.gpus_used, "proven": optimum.optimal,
        "heuristic_unplaced": len(heur.unplaced), "default_unplaced": len(default.unplaced),
        "optimum_unplaced": len(optimum.unplaced), "solver": default.solver, "budget_hit": budget_hit(default),
        "default_is_optimum": quality(default, fleet, demands) == quality(optimum, fleet, demands),
        "heuristic_s": round(heur_s, 3), "default_s": round(default_s, 3), "optimum_s": round(optimum_s, 3),
        "features": {"tensor_parallel": sum(d.tensor_parallel > 1 for d in demands), "spread": sum(d.spread for d in demands),
                     "pinned": sum(bool(d.pin_node) for d in demands),
                     "restricted": sum(bool(d.gpu_models) for d in demands)},
    }
    row.update(old_runs(fleet, demands, running))
    return row


def ratios(rows: list[dict[str, Any]], key: str, unplaced_key: str | None = None) -> dict[str, Any]:
    vals = [r[key] / r["optimum"] for r in rows if r["optimum"] and r["optimum_unplaced"] == 0 and r["proven"]
            and (unplaced_key is None or r[unplaced_key] == 0) and r["heuristic_unplaced"] == 0]
    if not vals:
        return {"n": 0}
    return {"n": len(vals), "mean": round(statistics.fmean(vals), 4), "max": round(max(vals), 4)}


def speed(kind: str, gpus: int, rng: random.Random) -> dict[str, Any]:
    fleet, demands, running = instance(kind, gpus, int(gpus * (0.7 if kind == "rules" else 2)), rng)
    heur_s, heur = timed(lambda: place_heuristic(fleet, demands))
    start = time.perf_counter()
    try:
        exact: Placement | None = place_exact(fleet, demands, time_limit_s=DEFAULT_TIME_BUDGET_S, hint=heur)
    except ExactTooLarge:
        exact = None  # not built: the default path answers with the heuristic
    exact_s = time.perf_counter() - start
    default_s, default = timed(lambda: place(fleet, demands))
    return {"kind": kind, "gpus": gpus, "replicas": sum(d.replicas for d in demands),
            "heuristic_s": round(heur_s, 3), "heuristic_gpus": heur.gpus_used, "heuristic_unplaced": len(heur.unplaced),
            "exact_s": round(exact_s, 3), "exact_gpus": exact and exact.gpus_used,
            "exact_unplaced": exact and len(exact.unplaced), "exact_optimal": bool(exact and exact.optimal),
            "exact_budget_hit": exact is None or budget_hit(exact), "exact_too_large": exact is None,
            "default_s": round(default_s, 3), "default_gpus": default.gpus_used, "default_solver": default.solver,
            "default_unplaced": len(default.unplaced), **old_runs(fleet, demands, running)}


KINDS = ("random", "adversarial", "mixed", "rules")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sizes = [(8, 16), (16, 32), (64, 128), (256, 500)] + ([] if args.quick else [(1000, 2000)])
    repeats = 2 if args.quick else 3
    optimum_limit = 5.0 if args.quick else 30.0
    rows = []
    for kind in KINDS:
        for gpus, n in sizes:
            if kind == "rules":
                n = int(gpus * 0.7) or 1
            for _ in range(repeats if gpus <= 256 else 1):
                rows.append(compare(kind, gpus, n, rng, optimum_limit))
    for kind in KINDS:
        print(f"{kind:12} gpus replicas heuristic default optimum(proven) unplaced h/d/o  solver  budget_hit  default_s")
        for r in rows:
            if r["kind"] == kind:
                print(f"{'':12} {r['gpus']:4} {r['replicas']:8} {r['heuristic']:9} {r['default']:7} "
                      f"{r['optimum']:7}({'y' if r['proven'] else 'n'})  "
                      f"{r['heuristic_unplaced']}/{r['default_unplaced']}/{r['optimum_unplaced']:<6} {r['solver']:9} "
                      f"{'yes' if r['budget_hit'] else 'no':5} {r['default_s']:9.3f}")
    speeds = [speed(kind, gpus, rng) for gpus in ([100, 1000] if args.quick else [100, 1000, 5000]) for kind in KINDS]
    print("speed: kind gpus replicas | heuristic s (GPUs, unplaced) | exact s with a "
          f"{DEFAULT_TIME_BUDGET_S:g} s budget (GPUs, unplaced, optimal, budget hit; None: too large to build) "
          "| default s (solver) | old rule s, best mode (GPUs, unplaced, violations)")
    for s in speeds:
        print(f"  {s['kind']:11} {s['gpus']:5} {s['replicas']:6} | {s['heuristic_s']:7.3f} ({s['heuristic_gpus']}, "
              f"{s['heuristic_unplaced']}) | {s['exact_s']:7.3f} ({s['exact_gpus']}, {s['exact_unplaced']}, "
              f"{s['exact_optimal']}, {s['exact_budget_hit']}) | {s['default_s']:7.3f} ({s['default_solver']}) | "
              f"{s['old_' + s['old_best_mode'].lower() + '_s']:7.4f} {s['old_best_mode']} ({s['old_best']}, "
              f"{s['old_best_unplaced']}, {s['old_best_violations']})")
    print("old rule: kind gpus | optimum GPUs (unplaced) | old SPX GPUs (unplaced, violations) | old CPX GPUs "
          "(unplaced, violations) | default s, old s")
    for r in rows:
        print(f"  {r['kind']:11} {r['gpus']:5} | {r['optimum']:5} ({r['optimum_unplaced']}) | {r['old_spx']:5} "
              f"({r['old_spx_unplaced']}, {r['old_spx_violations']}) | {r['old_cpx']:5} ({r['old_cpx_unplaced']}, "
              f"{r['old_cpx_violations']}) | {r['default_s']:.3f}, {r['old_spx_s'] + r['old_cpx_s']:.4f}")
    old = rows
    upto_1000 = [r for r in rows if r["gpus"] <= 1000]
    proven = [r for r in upto_1000 if r["proven"]]
    result = {
        "benchmark": "placement",
        "instances": len(rows),
        "exact_time_budget_s": DEFAULT_TIME_BUDGET_S,
        **{f"heuristic_over_optimum_{kind}": ratios([r for r in rows if r["kind"] == kind], "heuristic") for kind in KINDS},
        **{f"default_over_optimum_{kind}": ratios([r for r in rows if r["kind"] == kind], "default") for kind in KINDS},
        "gpus_by_family": {kind: {"heuristic": sum(r["heuristic"] for r in rows if r["kind"] == kind),
                                  "default": sum(r["default"] for r in rows if r["kind"] == kind),
                                  "optimum": sum(r["optimum"] for r in rows if r["kind"] == kind)} for kind in KINDS},
        "default_optimal_gpus": f"{sum(r['default'] == r['optimum'] and r['default_unplaced'] == r['optimum_unplaced'] for r in proven)}"
                                f"/{len(proven)}",
        "default_is_optimum": f"{sum(r['default_is_optimum'] for r in proven)}/{len(proven)}",
        "optimum_unproven": sum(not r["proven"] for r in upto_1000),
        "budget_hit": f"{sum(r['budget_hit'] for r in rows)}/{len(rows)}",
        "heuristic_answered": sum(r["solver"] == "heuristic" for r in rows),
        "heuristic_unplaced_more_than_optimum": sum(r["heuristic_unplaced"] > r["optimum_unplaced"] for r in rows),
        "old_spx_over_optimum": ratios(old, "old_spx", "old_spx_unplaced"),
        "old_cpx_over_optimum": ratios(old, "old_cpx", "old_cpx_unplaced"),
        "old_best_over_optimum": ratios(old, "old_best", "old_best_unplaced"),
        **{f"old_best_over_optimum_{kind}": ratios([r for r in old if r["kind"] == kind], "old_best", "old_best_unplaced")
           for kind in KINDS},
        "old_rule_instances_with_unplaced": sum(bool(r["old_best_unplaced"]) for r in old),
        "unplaced_replicas": {"old_best": sum(r["old_best_unplaced"] for r in old),
                              "default": sum(r["default_unplaced"] for r in old),
                              "optimum": sum(r["optimum_unplaced"] for r in old)},
        "old_best_violations": sum(r["old_best_violations"] for r in old),
        "seconds_same_instances": {"heuristic": round(sum(r["heuristic_s"] for r in rows), 3),
                                   "default": round(sum(r["default_s"] for r in rows), 3),
                                   "old_rule_both_modes": round(sum(r["old_spx_s"] + r["old_cpx_s"] for r in rows), 4)},
        "features": {k: sum(r["features"][k] for r in rows) for k in ("tensor_parallel", "spread", "pinned", "restricted")},
        "speed": speeds,
        "speed_exact_budget_hit": f"{sum(s['exact_budget_hit'] for s in speeds)}/{len(speeds)}",
        "quick": args.quick,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
