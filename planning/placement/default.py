"""``place``: the default path, the exact solver within a time budget, the heuristic as its hint and fallback."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from planning.placement.check import quality
from planning.placement.exact import ExactTooLarge, place_exact
from planning.placement.heuristic import place_heuristic
from planning.placement.types import Demand, Fleet, Placement, PlacementError, PlacementTimeout

DEFAULT_TIME_BUDGET_S = 2.0
"""Seconds the exact solver may take by default (the console's setting PLACEMENT_EXACT_TIME_BUDGET_S)."""


def place(fleet: Fleet, demands: Sequence[Demand], *, allow_repartition: bool = True,
          time_budget_s: float | None = DEFAULT_TIME_BUDGET_S, deadline: float | None = None) -> Placement:
    """Where every replica goes: the optimum when the exact solver finds it in time.

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
