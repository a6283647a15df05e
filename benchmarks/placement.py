"""Placement quality and speed: the default path (exact within its budget), the heuristic and the
old prototype rule, against the proven optimum.

Instance families (MI300X nodes of 8 GPUs: SPX 1x192, DPX 2x96, QPX 4x48, CPX 8x24 GiB; empty GPUs in
random current modes):

- "random": NPS1, catalogue-like sizes, one replica per model, one priority.
- "adversarial": 25 % of the nodes NPS4, sizes just above partition boundaries, three priorities.
- "mixed": every other node MI325X (256 GiB) and a third of the models restricted to one GPU model.
- "rules": every rule at once: mixed MI300X/MI325X fleet with 20 % NPS4 nodes, 30 % of the demand
  already running (occupants the solver must work around), three priorities, model restrictions,
  8 % tensor-parallel demands (2 or 4 whole GPUs of one node), 8 % spread demands (2-4 replicas on
  different GPUs and nodes), 3 % pinned to a node (a third of those to one GPU).

Per instance: GPUs used by ``place_heuristic``, by ``place`` (the default path: ``place_exact`` within
``DEFAULT_TIME_BUDGET_S`` seeded with the heuristic, heuristic fallback) and by the optimum (``place_exact``
with a long time limit; "unproven" when even that does not finish). Ratios are GPUs over the optimum's on
instances where both place everything. ``default_optimal_gpus`` counts the instances (up to 1,000 GPUs)
where the default path used the optimum number of GPUs and placed as many replicas; ``budget_hit`` how
often the exact solver ran out of its budget on the default path.

``old rule / optimum``: the prototype's rule, reimplemented here as the baseline. Its fleets are all SPX
(1x192 GiB per GPU) or all CPX (8x24 GiB); each model instance goes to the partition with the most free
memory, provided at least 8 GB stays free there after placing it; partitions are shared by several models
(no isolation). Reported for the "random" and "adversarial" families.

Speed: one instance per family at 100, 1,000 and 5,000 GPUs (two replicas per GPU; "rules" 0.7 demands per
GPU), the wall time of the heuristic, of the exact solver with the default budget, and of the default path.

``--quick`` (about a minute on 2 cores): instances up to 256 GPUs, speed at 100 and 1,000 GPUs. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
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


def old_rule(gpus: int, needs: list[float], mode: str) -> tuple[int, int]:
    """The prototype: largest free partition first, >= 8 GB left free; SPX 1x192 or CPX 8x24.

    Returns (GPUs used, models unplaced).
    """
    per_gpu, size = (1, 192.0) if mode == "SPX" else (8, 24.0)
    heap = [(-size, gpu, part) for gpu in range(gpus) for part in range(per_gpu)]
    heapq.heapify(heap)
    used, unplaced = set(), 0
    for need in needs:
        free, gpu, part = heap[0]
        if -free - need >= FLOOR_GB:
            heapq.heapreplace(heap, (free + need, gpu, part))
            used.add(gpu)
        else:
            unplaced += 1  # the largest free partition cannot take it, so none can
    return len(used), unplaced


def with_mi325x(fleet: Fleet) -> Fleet:
    """Every other node MI325X (256 GiB)."""
    return Fleet(tuple(NodeState(n.name, n.memory_mode, tuple(GpuState(g.node, g.index, "MI325X", g.compute_mode)
                                                              for g in n.gpus)) if i % 2 else n
                       for i, n in enumerate(fleet.nodes)), fleet.occupants)


def mixed(fleet: Fleet, demands: list[Demand], rng: random.Random) -> tuple[Fleet, list[Demand]]:
    """Every other node MI325X; a third of the models restricted to one GPU model."""
    return with_mi325x(fleet), [Demand(d.key, d.memory_gb, d.replicas, d.priority,
                                       rng.choice([(), (), ("MI300X",), ("MI325X",)])) for d in demands]


def rules(gpus: int, n: int, rng: random.Random) -> tuple[Fleet, list[Demand]]:
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
    return Fleet(nodes, occupants), demands[k:]


def instance(kind: str, gpus: int, n: int, rng: random.Random) -> tuple[Fleet, list[Demand], list[float]]:
    if kind == "rules":
        fleet, demands = rules(gpus, n, rng)
        return fleet, demands, []
    needs = (adversarial_needs if kind == "adversarial" else random_needs)(n, rng)
    fleet = make_fleet(gpus, rng, nps4_share=0.25 if kind == "adversarial" else 0.0)
    demands = demands_for(needs, rng, priorities=1 if kind == "random" else 3)
    if kind == "mixed":
        fleet, demands = mixed(fleet, demands, rng)
    return fleet, demands, needs


def timed(fn: Callable[[], Placement]) -> tuple[float, Placement]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def budget_hit(p: Placement) -> bool:
    """The exact solver ran out of its budget (or was too large to build within it) on the
    default path, whichever answered."""
    return not p.optimal and ("budget" in p.solver_note or "too large" in p.solver_note)


def compare(kind: str, gpus: int, n: int, rng: random.Random, optimum_limit: float) -> dict[str, Any]:
    fleet, demands, needs = instance(kind, gpus, n, rng)
    heur_s, heur = timed(lambda: place_heuristic(fleet, demands))
    default_s, default = timed(lambda: place(fleet, demands))
    hint = min((heur, default), key=lambda p: quality(p, fleet, demands))
    optimum = default if default.optimal else place_exact(fleet, demands, time_limit_s=optimum_limit, hint=hint)
    for p in (heur, default, optimum):
        errors = validate(fleet, p, demands)
        assert not errors, errors[:3]
    row: dict[str, Any] = {
        "kind": kind, "gpus": gpus, "replicas": sum(d.replicas for d in demands), "heuristic": heur.gpus_used,
        "default": default.gpus_used, "optimum": optimum.gpus_used, "proven": optimum.optimal,
        "heuristic_unplaced": len(heur.unplaced), "default_unplaced": len(default.unplaced),
        "optimum_unplaced": len(optimum.unplaced), "solver": default.solver, "budget_hit": budget_hit(default),
        "default_is_optimum": quality(default, fleet, demands) == quality(optimum, fleet, demands),
        "heuristic_s": round(heur_s, 3), "default_s": round(default_s, 3),
    }
    if needs:
        for mode in ("SPX", "CPX"):
            row[f"old_{mode.lower()}"], row[f"old_{mode.lower()}_unplaced"] = old_rule(gpus, needs, mode)
    return row


def ratios(rows: list[dict[str, Any]], key: str, unplaced_key: str | None = None) -> dict[str, Any]:
    vals = [r[key] / r["optimum"] for r in rows if r["optimum"] and r["optimum_unplaced"] == 0 and r["proven"]
            and (unplaced_key is None or r[unplaced_key] == 0) and r["heuristic_unplaced"] == 0]
    if not vals:
        return {"n": 0}
    return {"n": len(vals), "mean": round(statistics.fmean(vals), 4), "max": round(max(vals), 4)}


def speed(kind: str, gpus: int, rng: random.Random) -> dict[str, Any]:
    fleet, demands, _ = instance(kind, gpus, int(gpus * (0.7 if kind == "rules" else 2)), rng)
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
            "default_s": round(default_s, 3), "default_gpus": default.gpus_used, "default_solver": default.solver}


KINDS = ("random", "adversarial", "mixed", "rules")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sizes = [(8, 16), (16, 32), (64, 128), (256, 500)] + ([] if args.quick else [(1000, 2000)])
    repeats = 2 if args.quick else 3
    optimum_limit = 10.0 if args.quick else 30.0
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
          "| default s (solver)")
    for s in speeds:
        print(f"  {s['kind']:11} {s['gpus']:5} {s['replicas']:6} | {s['heuristic_s']:7.3f} ({s['heuristic_gpus']}, "
              f"{s['heuristic_unplaced']}) | {s['exact_s']:7.3f} ({s['exact_gpus']}, {s['exact_unplaced']}, "
              f"{s['exact_optimal']}, {s['exact_budget_hit']}) | {s['default_s']:7.3f} ({s['default_solver']})")
    old = [r for r in rows if "old_spx" in r]
    for r in old:
        r["old_best"] = min(r["old_spx"] if not r["old_spx_unplaced"] else 10**9,
                            r["old_cpx"] if not r["old_cpx_unplaced"] else 10**9)
        r["old_best_unplaced"] = 0 if r["old_best"] < 10**9 else 1
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
        "old_rule_instances_with_unplaced": sum(r["old_best_unplaced"] for r in old),
        "speed": speeds,
        "speed_exact_budget_hit": f"{sum(s['exact_budget_hit'] for s in speeds)}/{len(speeds)}",
        "quick": args.quick,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
