"""``place``: the default path, the exact solver within a time budget, the heuristic as its hint and fallback."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from planning.placement.check import quality
from planning.placement.exact import ExactTooLarge, place_exact
from planning.placement.heuristic import place_heuristic
from planning.placement.types import Demand, Fleet, Occupant, Placement, PlacementError, PlacementTimeout

DEFAULT_TIME_BUDGET_S = 2.0
"""Seconds the exact solver may take by default (the console's setting PLACEMENT_EXACT_TIME_BUDGET_S)."""


def place(fleet: Fleet, demands: Sequence[Demand], *, allow_repartition: bool = True,
          time_budget_s: float | None = DEFAULT_TIME_BUDGET_S, deadline: float | None = None) -> Placement:
    """Where every replica goes: the optimum when the exact solver finds it in time.

    Soft-spread demands (``Demand.soft_spread``) are placed in two passes: first as hard spread
    (one replica per GPU, different nodes where possible) together with every other demand,
    then their replicas left over share GPUs, on what the first pass left free (its replicas
    held, its mode changes made). The first pass's answer is optimal for hard spread; the second
    only fills in, so a soft-spread placement is never worse than hard spread and never leaves a
    replica unplaced that sharing a free partition could hold.
    """
    soft = [d for d in demands if d.soft_spread and not d.spread]
    if not soft:
        return _place_once(fleet, demands, allow_repartition=allow_repartition, time_budget_s=time_budget_s,
                           deadline=deadline)
    first = _place_once(fleet, [dataclasses.replace(d, spread=True, soft_spread=False) if d in soft else d for d in demands],
                        allow_repartition=allow_repartition, time_budget_s=time_budget_s, deadline=deadline)
    left = {u.deployment for u in first.unplaced} & {d.key for d in soft}
    if not left:
        return first
    rest = [dataclasses.replace(d, soft_spread=False) for d in soft if d.key in left]
    second = _place_once(_after(fleet, first, demands), rest, allow_repartition=allow_repartition,
                         time_budget_s=time_budget_s, deadline=deadline)
    unplaced = tuple(u for u in first.unplaced if u.deployment not in left) + second.unplaced
    note = first.solver_note + ("; " if first.solver_note else "") + f"soft spread: {len(second.assignments)} replica(s) share GPUs"
    return dataclasses.replace(
        first, assignments=first.assignments + second.assignments, mode_changes=first.mode_changes + second.mode_changes,
        unplaced=unplaced, gpus_used=second.gpus_used, optimal=first.optimal and second.optimal, solver_note=note,
    )


def _after(fleet: Fleet, p: Placement, demands: Sequence[Demand]) -> Fleet:
    """The fleet once ``p`` is done: its mode changes made, its replicas running."""
    modes = {(c.node, c.gpu_index): c.to_mode for c in p.mode_changes}
    nodes = tuple(dataclasses.replace(n, gpus=tuple(
        dataclasses.replace(g, compute_mode=modes.get((n.name, g.index), g.compute_mode)) for g in n.gpus)) for n in fleet.nodes)
    by_key = {d.key: d for d in demands}
    held = tuple(
        Occupant(deployment=a.deployment, replica=a.replica, priority=by_key[a.deployment].priority, node=s.node,
                 gpu_index=s.gpu_index, partition_index=s.partition_index, memory_gb=by_key[a.deployment].memory_gb)
        for a in p.assignments for s in a.slots)
    return Fleet(nodes=nodes, occupants=fleet.occupants + held)


def _place_once(fleet: Fleet, demands: Sequence[Demand], *, allow_repartition: bool,
                time_budget_s: float | None, deadline: float | None) -> Placement:
    """One placement: see ``place``.

    Runs ``place_heuristic`` first (fast; its placement seeds the exact search), then
    ``place_exact`` within ``time_budget_s`` seconds (None or 0: heuristic only). The exact
    answer is used when it is proven optimal; when the budget runs out, the better of its best
    solution and the heuristic's (same order as the exact objective: replicas placed per
    priority, spread, GPUs, mode changes; the heuristic on a tie); the heuristic when the
    instance is too large to model. ``Placement.solver`` says which answered, ``optimal``
    whether it is proven, ``solver_note`` why. ``deadline`` (a ``time.monotonic()`` value)
    bounds the whole call: PlacementTimeout once it passes. Raises PlacementError for bad input.
    """
    heuristic = place_heuristic(fleet, demands, allow_repartition=allow_repartition, deadline=deadline)
    if not (time_budget_s and time_budget_s > 0):
        return dataclasses.replace(heuristic, solver_note="exact solver disabled (no time budget)")
    budget = time_budget_s
    if deadline is not None:
        budget = min(budget, deadline - time.monotonic())
        if budget <= 0:
            raise PlacementTimeout("placement ran past its deadline")
    try:
        exact = place_exact(fleet, demands, allow_repartition=allow_repartition, time_limit_s=budget, hint=heuristic)
    except ExactTooLarge as exc:
        return dataclasses.replace(heuristic, solver_note=f"too large for the exact solver: {exc}")
    except PlacementTimeout:
        return dataclasses.replace(heuristic, solver_note=f"the exact solver found nothing within its {budget:g} s budget")
    except PlacementError as exc:  # pragma: no cover - a modelling bug; never leave the caller without an answer
        return dataclasses.replace(heuristic, solver_note=f"exact solver failed: {exc}")
    exact_q, heuristic_q = quality(exact, fleet, demands), quality(heuristic, fleet, demands)
    if exact.optimal and exact_q > heuristic_q:  # pragma: no cover - a modelling bug; the heuristic is valid
        return dataclasses.replace(heuristic, solver_note=f"exact solver claimed an optimum worse than the heuristic's {exact_q}")
    if exact.optimal or exact_q < heuristic_q:
        return exact
    return dataclasses.replace(heuristic, solver_note=f"exact solver: {exact.solver_note}; the heuristic's is as good")
