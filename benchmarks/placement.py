"""Placement quality and speed: heuristic and old prototype rule vs. the CP-SAT optimum.

Fleets ("random", "adversarial"): MI300X nodes of 8 GPUs (standard partitions SPX 1x192, DPX 2x96, QPX 4x48, CPX 8x24 GiB),
NPS1 unless said otherwise, empty GPUs in random current modes. Workloads: one replica per model
("models" = replicas), 16 to 2,000 of them, on 8 to 1,000 GPUs. "mixed" (reported apart, not
standard sizes): every other node MI325X and a third of the models restricted to one GPU model.

- ``heuristic / optimum``: GPUs used by ``planning.placement.place`` divided by GPUs used by
  ``place_exact`` (the optimum of the same rules: one replica per partition, modes chosen freely
  on empty GPUs), on instances where both place everything.
- ``old rule / optimum``: the prototype's rule, reimplemented here as the baseline. Its fleets are
  all SPX (1x192 GiB per GPU) or all CPX (8x24 GiB); each model instance goes to the partition with
  the most free memory, provided at least 8 GB stays free there after placing it; partitions are
  shared by several models (no isolation). Reported for the SPX fleet, the CPX fleet and the
  better of the two per instance; instances where it leaves models unplaced are counted apart.
- run times: heuristic on 1,000 GPUs x 2,000 replicas; exact solver on 1,000 models.

``--quick`` keeps the whole run under a minute on 2 cores. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planning.placement import (  # noqa: E402
    Demand,
    Fleet,
    GpuState,
    NodeState,
    Placement,
    place,
    place_exact,
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
        nodes.append(NodeState(f"n{n:03d}", nps, tuple(
            GpuState(f"n{n:03d}", i, "MI300X", rng.choice(allowed)) for i in range(count))))
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


def mixed(fleet: Fleet, demands: list[Demand], rng: random.Random) -> tuple[Fleet, list[Demand]]:
    """Every other node MI325X (256 GiB); a third of the models restricted to one GPU model."""
    nodes = tuple(NodeState(n.name, n.memory_mode, tuple(GpuState(g.node, g.index, "MI325X", g.compute_mode)
                                                         for g in n.gpus)) if i % 2 else n
                  for i, n in enumerate(fleet.nodes))
    return Fleet(nodes), [Demand(d.key, d.memory_gb, d.replicas, d.priority,
                                 rng.choice([(), (), ("MI300X",), ("MI325X",)])) for d in demands]


def compare(gpus: int, n: int, rng: random.Random, kind: str, time_limit: float) -> dict:
    needs = (adversarial_needs if kind == "adversarial" else random_needs)(n, rng)
    fleet = make_fleet(gpus, rng, nps4_share=0.25 if kind == "adversarial" else 0.0)
    demands = demands_for(needs, rng, priorities=1 if kind == "random" else 3)
    if kind == "mixed":
        fleet, demands = mixed(fleet, demands, rng)
    heur = place(fleet, demands)
    exact = place_exact(fleet, demands, time_limit_s=time_limit)
    assert not validate(fleet, heur, demands) and not validate(fleet, exact, demands)
    spx, spx_unplaced = old_rule(gpus, needs, "SPX")
    cpx, cpx_unplaced = old_rule(gpus, needs, "CPX")
    return {"kind": kind, "gpus": gpus, "replicas": n, "heuristic": heur.gpus_used, "exact": exact.gpus_used,
            "heuristic_unplaced": len(heur.unplaced), "exact_unplaced": len(exact.unplaced),
            "old_spx": spx, "old_spx_unplaced": spx_unplaced, "old_cpx": cpx, "old_cpx_unplaced": cpx_unplaced,
            "heuristic_changes": len(heur.mode_changes), "exact_changes": len(exact.mode_changes)}


def ratios(rows: list[dict], key: str, unplaced_key: str | None = None) -> dict:
    vals = [r[key] / r["exact"] for r in rows if r["exact"] and r["exact_unplaced"] == 0
            and (unplaced_key is None or r[unplaced_key] == 0) and r["heuristic_unplaced"] == 0]
    if not vals:
        return {"n": 0}
    return {"n": len(vals), "mean": round(statistics.fmean(vals), 4), "max": round(max(vals), 4)}


def timed(fn) -> tuple[float, Placement]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sizes = [(8, 16), (16, 32), (64, 128), (256, 500), (1000, 2000)]
    repeats = 5 if args.quick else 20
    time_limit = 5.0 if args.quick else 20.0
    rows = []
    for kind in ("random", "adversarial", "mixed"):
        for gpus, n in sizes:
            if kind == "mixed" and gpus > 256:
                continue
            for _ in range(repeats if gpus <= 256 else 1):
                rows.append(compare(gpus, n, rng, kind, time_limit))
    for r in rows:
        r["old_best"] = min(r["old_spx"] if not r["old_spx_unplaced"] else 10**9,
                            r["old_cpx"] if not r["old_cpx_unplaced"] else 10**9)
        r["old_best_unplaced"] = 0 if r["old_best"] < 10**9 else 1
    for kind in ("random", "adversarial", "mixed"):
        print(f"{kind:12} gpus replicas heuristic exact old_spx(unpl) old_cpx(unpl)")
        for r in rows:
            if r["kind"] == kind:
                print(f"{'':12} {r['gpus']:4} {r['replicas']:8} {r['heuristic']:9} {r['exact']:5} "
                      f"{r['old_spx']:5}({r['old_spx_unplaced']}) {r['old_cpx']:5}({r['old_cpx_unplaced']})")
    # speed
    big_fleet = make_fleet(1000, rng)
    big = demands_for(random_needs(2000, rng), rng, priorities=3)
    heur_s, heur = timed(lambda: place(big_fleet, big))
    models = [Demand(f"m{i}", need, rng.randint(1, 2), priority=rng.randrange(3))
              for i, need in enumerate(random_needs(1000, rng))]
    exact_s, exact = timed(lambda: place_exact(big_fleet, models, time_limit_s=time_limit))
    heur2 = place(big_fleet, models)
    mi300x = [r for r in rows if r["kind"] != "mixed"]
    result = {
        "benchmark": "placement_mi300x",
        "instances": len(rows),
        "heuristic_over_optimum_mi300x": ratios([r for r in rows if r["kind"] != "mixed"], "heuristic"),
        "heuristic_over_optimum_random": ratios([r for r in rows if r["kind"] == "random"], "heuristic"),
        "heuristic_over_optimum_adversarial": ratios([r for r in rows if r["kind"] == "adversarial"], "heuristic"),
        "heuristic_over_optimum_mixed_models": ratios([r for r in rows if r["kind"] == "mixed"], "heuristic"),
        "heuristic_unplaced_more_than_exact": sum(r["heuristic_unplaced"] > r["exact_unplaced"] for r in rows),
        "old_spx_over_optimum": ratios(mi300x, "old_spx", "old_spx_unplaced"),
        "old_cpx_over_optimum": ratios(mi300x, "old_cpx", "old_cpx_unplaced"),
        "old_best_over_optimum": ratios(mi300x, "old_best", "old_best_unplaced"),
        "old_rule_instances_with_unplaced": sum(r["old_best_unplaced"] for r in mi300x),
        "heuristic_1000gpus_2000replicas_s": round(heur_s, 3),
        "heuristic_1000gpus_2000replicas_gpus_used": heur.gpus_used,
        "exact_1000models_s": round(exact_s, 3),
        "exact_1000models_replicas": sum(d.replicas for d in models),
        "exact_1000models_gpus_used": exact.gpus_used,
        "heuristic_1000models_gpus_used": heur2.gpus_used,
        "quick": args.quick,
    }
    print(f"heuristic 1000 GPUs x 2000 replicas: {heur_s:.3f} s; exact 1000 models: {exact_s:.3f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
