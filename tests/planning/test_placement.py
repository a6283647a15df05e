"""Placement engine: hand cases, validate(), exact vs heuristic vs brute force, and a stateful
Hypothesis machine checking the invariants after every fleet event. Pure: no database."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from partitions.geometry import get_spec
from planning.placement import (
    Assignment,
    Demand,
    Fleet,
    GpuState,
    ModeChange,
    NodeState,
    Occupant,
    Placement,
    PlacementError,
    Slot,
    Unplaced,
    partitions_of,
    place,
    place_exact,
    place_heuristic,
    quality,
    validate,
)


def node(name: str, modes: str | list[str] = "SPX", *, n: int = 1, nps: str = "NPS1", model: str = "MI300X",
         bad: tuple[int, ...] = (), schedulable: bool = True) -> NodeState:
    modes = [modes] * n if isinstance(modes, str) else modes
    return NodeState(name, nps, tuple(GpuState(name, i, model, m, schedulable=i not in bad)
                                      for i, m in enumerate(modes)), schedulable)


def slots_of(p: Placement, key: str) -> list[Slot]:
    return [s for a in p.assignments if a.deployment == key for s in a.slots]


def checked(fleet: Fleet, demands: list[Demand], **kw) -> Placement:  # type: ignore[no-untyped-def]
    p = place(fleet, demands, **kw)
    assert validate(fleet, p, demands) == []
    return p


# --------------------------------------------------------------------------- hand cases


def test_it_fits_free_partitions_without_repartitioning() -> None:
    fleet = Fleet((node("a", "DPX", n=2),))
    p = checked(fleet, [Demand("llama", 80.0, 2)])
    assert p.ok() and p.mode_changes == () and p.gpus_used == 1
    assert [(s.gpu_index, s.partition_index, s.memory_gb) for s in slots_of(p, "llama")] == [(0, 0, 96.0), (0, 1, 96.0)]


def test_it_switches_an_empty_gpu_to_cpx_for_many_small_replicas() -> None:
    fleet = Fleet((node("a", "SPX"),))
    p = checked(fleet, [Demand("small", 20.0, 8)])
    assert p.ok() and p.mode_changes == (ModeChange("a", 0, "SPX", "CPX"),)
    assert {s.compute_mode for s in slots_of(p, "small")} == {"CPX"} and p.gpus_used == 1


def test_it_keeps_the_mode_when_a_change_saves_no_gpu() -> None:
    p = checked(Fleet((node("a", "SPX"),)), [Demand("one", 20.0, 1)])
    assert p.mode_changes == () and slots_of(p, "one") == [Slot("a", 0, 0, "SPX", 192.0)]


def test_it_best_fits_into_the_smallest_free_partition() -> None:
    fleet = Fleet((node("a", ["DPX", "CPX", "QPX"], n=3),),
                  (Occupant("x", 0, 0, "a", 0, 0, 50.0), Occupant("y", 0, 0, "a", 1, 0, 10.0),
                   Occupant("z", 0, 0, "a", 2, 0, 10.0)))
    p = checked(fleet, [Demand("m", 30.0, 1), Demand("s", 20.0, 1)])
    assert slots_of(p, "m")[0].memory_gb == 48.0 and slots_of(p, "s")[0].memory_gb == 24.0
    assert p.gpus_used == 3 and p.mode_changes == ()


def test_nps4_forbids_spx_and_dpx() -> None:
    fleet = Fleet((node("a", "QPX", n=2, nps="NPS4"),))
    p = checked(fleet, [Demand("big", 60.0, 1), Demand("ok", 40.0, 1), Demand("tp", 100.0, 1, tensor_parallel=2)])
    reasons = {u.deployment: u.reason for u in p.unplaced}
    assert "NPS4" in reasons["big"] and "48.0 GiB" in reasons["big"]
    assert "SPX" in reasons["tp"] and "NPS4" in reasons["tp"]
    assert slots_of(p, "ok")[0].compute_mode == "QPX"
    assert all(c.to_mode in ("QPX", "CPX") for c in p.mode_changes)


def test_an_nps4_gpu_in_an_invalid_mode_is_repartitioned_before_use() -> None:
    fleet = Fleet((node("a", "SPX", nps="NPS4"),))
    p = checked(fleet, [Demand("s", 20.0, 2)])
    assert p.ok() and p.mode_changes[0].to_mode in ("QPX", "CPX")
    assert not checked(fleet, [Demand("s", 20.0, 1)], allow_repartition=False).ok()
    assert partitions_of(fleet) == []


def test_tensor_parallel_takes_whole_spx_gpus_on_one_node() -> None:
    fleet = Fleet((node("a", "SPX", n=2, bad=(1,)), node("b", ["CPX", "SPX", "SPX"], n=3)))
    p = checked(fleet, [Demand("tp", 150.0, 1, tensor_parallel=2)])
    slots = slots_of(p, "tp")
    assert {s.node for s in slots} == {"b"} and {s.gpu_index for s in slots} == {1, 2}
    assert all(s.partition_index is None and s.compute_mode == "SPX" and s.memory_gb == 192.0 for s in slots)
    assert p.mode_changes == () and p.gpus_used == 2


def test_tensor_parallel_reasons() -> None:
    fleet = Fleet((node("a", "SPX", n=4, bad=(3,)), node("b", "SPX", n=2)))
    p = checked(fleet, [Demand("four", 150.0, 1, tensor_parallel=4), Demand("huge", 100.0, 1, tensor_parallel=16),
                        Demand("fat", 300.0, 1, tensor_parallel=2)])
    reasons = {u.deployment: u.reason for u in p.unplaced}
    assert reasons["four"] == "tensor parallel 4 needs 4 free GPUs in SPX on one node; best node a has 3"
    assert reasons["huge"] == "tensor parallel 16 needs 16 GPUs on one node; the largest node has 4"
    assert reasons["fat"] == "needs 300.0 GiB per GPU, more than a whole MI300X (192.0 GiB)"


def test_pins_are_obeyed_and_explained() -> None:
    fleet = Fleet((node("a", "CPX", n=2), node("b", "CPX", n=2, bad=(1,))))
    p = checked(fleet, [Demand("pg", 20.0, 2, pin_node="b", pin_gpu=0), Demand("pn", 20.0, 1, pin_node="a"),
                        Demand("dead", 20.0, 1, pin_node="b", pin_gpu=1)])
    assert {(s.node, s.gpu_index) for s in slots_of(p, "pg")} == {("b", 0)}
    assert slots_of(p, "pn")[0].node == "a"
    assert [u.reason for u in p.unplaced] == ["pinned to b/gpu1: the GPU is unschedulable"]
    full = checked(fleet, [Demand("pg", 20.0, 9, pin_node="b", pin_gpu=0)])
    assert full.unplaced[0].reason.startswith("pinned to b/gpu0: needs 20.0 GiB, no free partition")


@pytest.mark.parametrize("demand, message", [
    (Demand("x", 20.0, 0), "replicas"),
    (Demand("x", 0.0, 1), "memory_gb"),
    (Demand("x", 20.0, 1, gpu_models=("H100",)), "Unknown GPU model"),
    (Demand("x", 20.0, 1, pin_node="zz"), "pinned node 'zz'"),
    (Demand("x", 20.0, 1, pin_node="a", pin_gpu=7), "pinned GPU a/gpu7"),
    (Demand("x", 20.0, 1, pin_gpu=0), "pin_gpu needs pin_node"),
    (Demand("x", 20.0, 1, tensor_parallel=0), "tensor_parallel"),
])
def test_bad_input_raises_placement_error(demand: Demand, message: str) -> None:
    with pytest.raises(PlacementError, match=message):
        place(Fleet((node("a"),)), [demand])


def test_an_occupant_outside_the_fleet_raises_placement_error() -> None:
    with pytest.raises(PlacementError, match="not in the fleet"):
        place(Fleet((node("a"),), (Occupant("x", 0, 0, "a", 5, 0, 1.0),)), [])


@pytest.mark.parametrize("bad, reason", [
    (NodeState("bad", "", tuple(GpuState("bad", i, "MI300X", "SPX") for i in range(2)), problem="GPUs 0-1 NPS1, 2-3 NPS4"),
     "GPUs 0-1 NPS1, 2-3 NPS4"),
    (NodeState("bad", "NPS3", (GpuState("bad", 0, "MI300X", "SPX"),)), "unknown memory mode 'NPS3'"),
])
@pytest.mark.parametrize("solver", [place, place_heuristic, place_exact])
def test_a_node_with_unusable_memory_mode_is_excluded_not_fatal(bad: NodeState, reason: str, solver) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet((node("a", "SPX"), bad))
    demands = [Demand("s", 20.0, 1), Demand("pinned", 20.0, 1, pin_node="bad")]
    p = solver(fleet, demands)
    assert validate(fleet, p, demands) == []
    assert slots_of(p, "s")[0].node == "a"
    assert [(e.node, e.gpu_index, e.reason) for e in p.excluded] == [("bad", None, reason)]
    (u,) = p.unplaced
    assert (u.deployment, u.code) == ("pinned", "unschedulable") and reason in u.reason


@pytest.mark.parametrize("solver", [place, place_heuristic, place_exact])
def test_a_gpu_of_unknown_model_or_mode_is_excluded_not_fatal(solver) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet((NodeState("a", "NPS1", (GpuState("a", 0, "B200", "SPX"), GpuState("a", 1, "MI300X", "XPX"),
                                            GpuState("a", 2, "MI300X", "SPX"))),),
                  (Occupant("old", 0, 0, "a", 0, 0, 10.0),))
    p = solver(fleet, [Demand("s", 20.0, 2), Demand("pinned", 20.0, 1, pin_node="a", pin_gpu=1)])
    assert {s.gpu_index for s in slots_of(p, "s")} == {2}
    assert [(e.gpu_index, e.reason) for e in p.excluded] == [(0, "unknown GPU model 'B200'"),
                                                             (1, "MI300X has no compute mode 'XPX'")]
    assert p.gpus_used == 2  # the occupied GPU still counts
    assert p.unplaced[0].reason == "pinned to a/gpu1: the GPU is excluded: MI300X has no compute mode 'XPX'"
    assert partitions_of(fleet) == [Slot("a", 2, 0, "SPX", 192.0)]


def test_spread_puts_replicas_on_different_gpus_and_nodes() -> None:
    fleet = Fleet((node("a", "CPX", n=2), node("b", "CPX", n=2)))
    p = checked(fleet, [Demand("s", 20.0, 3, spread=True)])
    where = [(s.node, s.gpu_index) for s in slots_of(p, "s")]
    assert len(set(where)) == 3 and {n for n, _ in where[:2]} == {"a", "b"}
    p = checked(fleet, [Demand("s", 20.0, 5, spread=True)])
    assert len(p.unplaced) == 1 and "spread excludes the 4 GPU(s) already holding s" in p.unplaced[0].reason


def test_unschedulable_gpus_and_nodes_are_skipped() -> None:
    fleet = Fleet((node("a", "CPX", n=2, bad=(0,)), node("b", "CPX", schedulable=False)))
    p = checked(fleet, [Demand("s", 20.0, 9)])
    assert {(s.node, s.gpu_index) for s in slots_of(p, "s")} == {("a", 1)} and len(p.unplaced) == 1
    assert len(partitions_of(fleet)) == 8


def test_higher_priority_wins_and_occupants_are_never_moved() -> None:
    fleet = Fleet((node("a", ["DPX", "SPX"], n=2),), (Occupant("old", 0, -5, "a", 0, 0, 90.0),))
    p = checked(fleet, [Demand("low", 90.0, 2, priority=0), Demand("high", 150.0, 1, priority=9)])
    assert slots_of(p, "high") == [Slot("a", 1, 0, "SPX", 192.0)]
    assert slots_of(p, "low") == [Slot("a", 0, 1, "DPX", 96.0)]
    assert p.unplaced[0].reason == ("needs 90.0 GiB, no free partition on the 2 schedulable GPU(s) of model any; "
                                    "no empty GPU left to repartition")
    assert p.gpus_used == 2 and p.mode_changes == ()


def test_replicas_is_the_desired_total_and_occupied_gpus_keep_their_mode() -> None:
    fleet = Fleet((node("a", "SPX", n=2),), (Occupant("s", 0, 0, "a", 0, 0, 20.0),))
    p = checked(fleet, [Demand("s", 20.0, 3)])
    assert [a.replica for a in p.assignments] == [1, 2]
    assert p.mode_changes == (ModeChange("a", 1, "SPX", "CPX"),) and p.gpus_used == 2


def test_the_largest_free_partition_is_named() -> None:
    fleet = Fleet((node("emu-node-1", ["SPX", "SPX", "SPX", "DPX"], n=4),),
                  tuple(Occupant(f"o{i}", 0, 0, "emu-node-1", i, 0, 90.0) for i in range(4)))
    p = checked(fleet, [Demand("big", 141.0, 1)])
    assert p.unplaced[0].reason == ("needs 141.0 GiB, largest free partition 96.0 GiB (emu-node-1/gpu3 DPX); "
                                    "no empty GPU left to repartition")
    p = checked(Fleet((node("a", "SPX", n=2),), (Occupant("o", 0, 0, "a", 0, 0, 1.0),)), [Demand("s", 20.0, 2)],
                allow_repartition=False)
    assert p.unplaced[0].reason.endswith("no free partition on the 2 schedulable GPU(s) of model any; "
                                         "no empty GPU left to repartition")


def test_model_restrictions() -> None:
    fleet = Fleet((node("a", "SPX"), node("b", "SPX", model="MI325X")))
    p = checked(fleet, [Demand("x", 200.0, 1), Demand("y", 20.0, 1, gpu_models=("MI300X",)),
                        Demand("z", 20.0, 1, gpu_models=("MI355X",))])
    assert slots_of(p, "x")[0].node == "b" and slots_of(p, "y")[0].node == "a"
    assert p.unplaced[0].reason == "no GPU of model MI355X in the fleet"


def test_partitions_of_applies_changes() -> None:
    fleet = Fleet((node("a", "SPX", n=2),))
    slots = partitions_of(fleet, [ModeChange("a", 1, "SPX", "QPX")])
    assert [(s.gpu_index, s.partition_index, s.compute_mode, s.memory_gb) for s in slots] == [
        (0, 0, "SPX", 192.0)] + [(1, i, "QPX", 48.0) for i in range(4)]


# --------------------------------------------------------------------------- validate()


def _valid() -> tuple[Fleet, list[Demand], Placement]:
    fleet = Fleet((node("a", ["SPX", "SPX", "QPX"], n=3, nps="NPS1"), node("b", "CPX", n=2, nps="NPS4", bad=(1,))),
                  (Occupant("occ", 0, 0, "a", 2, 0, 40.0),))
    demands = [Demand("tp", 150.0, 1, tensor_parallel=2), Demand("s", 40.0, 2, spread=True),
               Demand("p", 20.0, 1, pin_node="b", pin_gpu=0)]
    p = place(fleet, demands)
    assert validate(fleet, p, demands) == [] and p.ok()
    return fleet, demands, p


def _edit(p: Placement, key: str, **slot_changes: object) -> Placement:
    def fix(a: Assignment) -> Assignment:
        if a.deployment != key:
            return a
        return dataclasses.replace(a, slots=(dataclasses.replace(a.slots[0], **slot_changes),) + a.slots[1:])
    return dataclasses.replace(p, assignments=tuple(fix(a) for a in p.assignments))


@pytest.mark.parametrize("mutate, expected", [
    (lambda f, p: _edit(p, "s", memory_gb=24.0, compute_mode="CPX"), "ends in"),
    (lambda f, p: dataclasses.replace(p, assignments=p.assignments + (
        Assignment("p", 0, (Slot("b", 0, 0, "CPX", 24.0),)),)), "placed twice"),
    (lambda f, p: dataclasses.replace(p, assignments=p.assignments + (
        Assignment("extra", 0, (Slot("b", 0, 0, "CPX", 24.0),)),)), "unknown deployment"),
    (lambda f, p: _edit(p, "tp", node="b", gpu_index=0, compute_mode="CPX"), "spans several nodes"),
    (lambda f, p: _edit(p, "p", node="a", gpu_index=2, partition_index=0, compute_mode="QPX", memory_gb=48.0),
     "pinned to b/gpu0"),
    (lambda f, p: _edit(p, "p", node="a", gpu_index=2, partition_index=0, compute_mode="QPX", memory_gb=48.0),
     "more than one replica"),
    (lambda f, p: _edit(p, "p", gpu_index=1), "not schedulable"),
    (lambda f, p: dataclasses.replace(p, mode_changes=p.mode_changes + (ModeChange("a", 2, "QPX", "CPX"),)),
     "holds a running replica"),
    (lambda f, p: dataclasses.replace(p, mode_changes=p.mode_changes + (ModeChange("b", 0, "CPX", "SPX"),)),
     "SPX+NPS4 is not allowed"),
    (lambda f, p: dataclasses.replace(p, gpus_used=p.gpus_used + 1), "gpus_used"),
    (lambda f, p: dataclasses.replace(p, assignments=p.assignments[1:]), "neither placed nor reported"),
    (lambda f, p: dataclasses.replace(p, assignments=p.assignments[:-1], unplaced=(
        Unplaced(p.assignments[-1].deployment, p.assignments[-1].replica, " ", "no_free_partition"),)), "without a reason"),
    (lambda f, p: dataclasses.replace(p, assignments=p.assignments[:-1], unplaced=(
        Unplaced(p.assignments[-1].deployment, p.assignments[-1].replica, "full", "full"),)),  # type: ignore[arg-type]
     "unknown reason code 'full'"),
])
def test_validate_catches_each_violation(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    fleet, demands, p = _valid()
    errors = validate(fleet, mutate(fleet, p), demands)
    assert any(expected in e for e in errors), errors


def test_validate_catches_capacity_spread_and_tp_shape() -> None:
    fleet = Fleet((node("a", "CPX", n=2),))
    demands = [Demand("big", 30.0, 1), Demand("s", 10.0, 2, spread=True), Demand("tp", 20.0, 1, tensor_parallel=2)]
    bad = Placement((Assignment("big", 0, (Slot("a", 0, 0, "CPX", 24.0),)),
                     Assignment("s", 0, (Slot("a", 0, 1, "CPX", 24.0),)), Assignment("s", 1, (Slot("a", 0, 2, "CPX", 24.0),)),
                     Assignment("tp", 0, (Slot("a", 1, 0, "CPX", 24.0),))), (), (), 2)
    errors = "\n".join(validate(fleet, bad, demands))
    for expected in ("over capacity", "spread replicas share a GPU", "1 slot(s) for tensor_parallel 2",
                     "must be a whole GPU in SPX"):
        assert expected in errors


# --------------------------------------------------------------------------- exact vs heuristic vs brute force

SIZES = [5.0, 20.0, 24.0, 30.0, 47.0, 60.0, 95.0, 120.0, 190.0]


def _max_matching(needs: list[float], slots: list[float]) -> int:
    match: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j, size in enumerate(slots):
            if size >= needs[i] and j not in seen:
                seen.add(j)
                if j not in match or augment(match[j], seen):
                    match[j] = i
                    return True
        return False
    return sum(augment(i, set()) for i in range(len(needs)))


def brute_force(fleet: Fleet, demands: list[Demand]) -> tuple[int, int]:
    """(most replicas placeable, fewest GPUs used for that), by enumerating every GPU's mode."""
    held = {(o.deployment, o.replica) for o in fleet.occupants}
    needs = [d.memory_gb for d in demands for r in range(d.replicas) if (d.key, r) not in held]
    options, occupied = [], {(o.node, o.gpu_index) for o in fleet.occupants}
    for n in fleet.nodes:
        for g in n.gpus:
            spec = get_spec(g.gpu_model)
            modes = [str(c) for c, m in spec.valid_pairs if str(m) == n.memory_mode]
            taken = sum(1 for o in fleet.occupants if (o.node, o.gpu_index) == (n.name, g.index))
            if (n.name, g.index) in occupied:
                usable = g.compute_mode in modes and g.schedulable and n.schedulable
                free = spec.partition_count(g.compute_mode) - taken if usable else 0
                options.append([(True, [spec.smallest_partition_gb(g.compute_mode)] * free)])
            elif not (g.schedulable and n.schedulable):
                options.append([(False, [])])
            else:
                options.append([(False, [])] + [(True, [spec.smallest_partition_gb(m)] * spec.partition_count(m))
                                                  for m in modes])
    best = None
    for combo in itertools.product(*options):
        slots = [s for _, free in combo for s in free]
        key = (_max_matching(needs, slots), -sum(used for used, _ in combo))
        best = key if best is None else max(best, key)
    assert best is not None
    return best[0], -best[1]


tiny_gpu = st.tuples(st.sampled_from(["SPX", "DPX", "QPX", "CPX"]), st.booleans())


@st.composite
def tiny_instances(draw):  # type: ignore[no-untyped-def]
    nodes = []
    for n in range(draw(st.integers(1, 2))):
        nps = draw(st.sampled_from(["NPS1", "NPS1", "NPS4"]))
        gpus = draw(st.lists(tiny_gpu, min_size=1, max_size=2))
        nodes.append(NodeState(f"n{n}", nps, tuple(GpuState(f"n{n}", i, "MI300X", m, schedulable=ok or i)
                                                    for i, (m, ok) in enumerate(gpus))))
    occupants = []
    if draw(st.booleans()):
        g = nodes[0].gpus[0]
        pairs = {(str(c), str(m)) for c, m in get_spec("MI300X").valid_pairs}
        if (g.compute_mode, nodes[0].memory_mode) in pairs:
            size = get_spec("MI300X").smallest_partition_gb(g.compute_mode)
            occupants.append(Occupant("occ", 0, 5, "n0", 0, 0, min(size, 10.0)))
    demands = [Demand(f"d{i}", draw(st.sampled_from(SIZES)), draw(st.integers(1, 3)))
               for i in range(draw(st.integers(1, 3)))]
    return Fleet(tuple(nodes), tuple(occupants)), demands


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiny_instances())
def test_exact_matches_brute_force_and_bounds_the_heuristic(instance) -> None:  # type: ignore[no-untyped-def]
    fleet, demands = instance
    exact, heur = place_exact(fleet, demands, time_limit_s=30), place_heuristic(fleet, demands)
    assert validate(fleet, exact, demands) == [] and validate(fleet, heur, demands) == []
    placed, gpus = brute_force(fleet, demands)
    total = sum(len(a.slots) for a in exact.assignments)
    assert total == placed
    assert exact.gpus_used == gpus and exact.optimal and exact.solver == "exact"
    assert len(heur.unplaced) >= len(exact.unplaced)
    if len(heur.unplaced) == len(exact.unplaced):
        assert heur.gpus_used >= exact.gpus_used


@pytest.mark.parametrize("seed", range(8))
def test_heuristic_is_close_to_exact_on_small_fleets(seed: int) -> None:
    rng = random.Random(seed)
    fleet = Fleet(tuple(node(f"n{i}", [rng.choice(["SPX", "DPX", "QPX", "CPX"]) for _ in range(8)], n=8,
                             nps=rng.choice(["NPS1", "NPS1", "NPS4"])) for i in range(3)))
    demands = [Demand(f"d{i}", rng.choice(SIZES[:-1]), rng.randint(1, 4), priority=rng.randrange(2))
               for i in range(10)]
    heur, exact = place_heuristic(fleet, demands), place_exact(fleet, demands, time_limit_s=30)
    assert validate(fleet, heur, demands) == [] and validate(fleet, exact, demands) == []
    assert (len(heur.unplaced), heur.gpus_used) >= (len(exact.unplaced), exact.gpus_used)
    if heur.ok() and exact.ok():
        assert heur.gpus_used <= exact.gpus_used + 1


def test_exact_respects_priority_when_not_everything_fits() -> None:
    fleet = Fleet((node("a", "DPX"),))
    demands = [Demand("low", 20.0, 2, priority=0), Demand("high", 90.0, 1, priority=1)]
    p = place_exact(fleet, demands)
    assert validate(fleet, p, demands) == [] and [a.deployment for a in p.assignments] == ["low", "high"]
    assert p.gpus_used == 1 and len(p.unplaced) == 1 and p.unplaced[0].deployment == "low"


# ------------------------------------------------- every rule: the default path vs exhaustive search


def brute_force_rules(fleet: Fleet, demands: list[Demand], allow_repartition: bool) -> tuple[int, ...]:
    """The best ``quality`` key any placement can reach (tensor parallelism, pins, spread,
    models, priorities, NPS, occupants), by trying every GPU mode and every replica's GPU(s)."""
    gpus = []  # (node, index, spec, current mode, options, free partitions if occupied else None)
    for n in fleet.nodes:
        for g in n.gpus:
            spec = get_spec(g.gpu_model)
            modes = [str(c) for c, m in spec.allowed_pairs(g.caps) if str(m) == n.memory_mode]
            taken = [o for o in fleet.occupants if (o.node, o.gpu_index) == (n.name, g.index)]
            if taken:
                usable = g.compute_mode in modes and g.schedulable and n.schedulable
                free = spec.partition_count(g.compute_mode) - len(taken) if usable else 0
                gpus.append((n.name, g.index, spec, g.compute_mode, [g.compute_mode], free))
            elif not (g.schedulable and n.schedulable):
                gpus.append((n.name, g.index, spec, g.compute_mode, [None], None))
            else:
                options = [m for m in modes if allow_repartition or m == g.compute_mode]
                whole = ["W"] if "SPX" in options else []  # W: SPX, taken whole by tensor parallelism
                gpus.append((n.name, g.index, spec, g.compute_mode, [None, *options, *whole], None))
    held = {(o.deployment, o.replica) for o in fleet.occupants}
    reps = [d for d in demands for r in range(d.replicas) if (d.key, r) not in held]
    levels = sorted({d.priority for d in demands}, reverse=True)
    spread = {d.key for d in demands if d.spread}
    occupied_nodes = {(o.deployment, o.node) for o in fleet.occupants if o.deployment in spread}
    holders = {(o.deployment, next(i for i, g in enumerate(gpus) if (g[0], g[1]) == (o.node, o.gpu_index)))
               for o in fleet.occupants}
    best: tuple[int, ...] | None = None

    def allowed(d: Demand, spec) -> bool:  # type: ignore[no-untyped-def]
        return not d.gpu_models or spec.model in {get_spec(m).model for m in d.gpu_models}

    def options(d: Demand, config: tuple, cap: list[int], used: set[tuple[str, int]], whole: set[int]) -> list[tuple[int, ...]]:
        if d.tensor_parallel == 1:
            return [(i,) for i, (g, mode) in enumerate(zip(gpus, config))
                    if mode not in (None, "W") and cap[i] > 0 and g[2].smallest_partition_gb(mode) >= d.memory_gb
                    and allowed(d, g[2]) and d.pin_node in (None, g[0]) and d.pin_gpu in (None, g[1])
                    and not (d.spread and (d.key, i) in used)]
        cands = [i for i, (g, mode) in enumerate(zip(gpus, config))
                 if mode == "W" and i not in whole and g[2].memory_gb >= d.memory_gb and allowed(d, g[2])
                 and d.pin_node in (None, g[0])]
        return [c for c in itertools.combinations(cands, d.tensor_parallel)
                if len({gpus[i][0] for i in c}) == 1 and len({gpus[i][2].model for i in c}) == 1
                and (d.pin_gpu is None or any(gpus[i][1] == d.pin_gpu for i in c))]

    def score(config: tuple, placed: list[tuple[Demand, tuple[int, ...]]]) -> tuple[int, ...]:
        lost = Counter(d.priority for d in reps) - Counter(d.priority for d, _ in placed)
        used = {i for _, c in placed for i in c} | {i for i, g in enumerate(gpus) if g[5] is not None}
        changes = sum(1 for i in {i for _, c in placed for i in c}
                      if gpus[i][5] is None and ("SPX" if config[i] == "W" else config[i]) != gpus[i][3])
        per_node = Counter((d.key, gpus[c[0]][0]) for d, c in placed if d.spread)
        shared = sum(n - (key not in occupied_nodes) for key, n in per_node.items())
        return (*(lost[lvl] for lvl in levels), shared, len(used), changes)

    def search(config: tuple, k: int, cap: list[int], placed: list[tuple[Demand, tuple[int, ...]]],
               used: set[tuple[str, int]], whole: set[int]) -> None:
        nonlocal best
        if k == len(reps):
            key = score(config, placed)
            best = key if best is None else min(best, key)
            return
        d = reps[k]
        search(config, k + 1, cap, placed, used, whole)
        for combo in options(d, config, cap, used, whole):
            if d.tensor_parallel == 1:
                cap[combo[0]] -= 1
                search(config, k + 1, cap, placed + [(d, combo)], used | {(d.key, combo[0])}, whole)
                cap[combo[0]] += 1
            else:
                search(config, k + 1, cap, placed + [(d, combo)], used, whole | set(combo))

    for config in itertools.product(*(g[4] for g in gpus)):
        cap = [0 if mode in (None, "W") else g[5] if g[5] is not None else g[2].partition_count(mode)
               for g, mode in zip(gpus, config)]
        search(config, 0, cap, [], set(holders), set())
    assert best is not None
    return best


@st.composite
def rule_instances(draw):  # type: ignore[no-untyped-def]
    nodes, total = [], 0
    for n in range(draw(st.integers(1, 2))):
        nps = draw(st.sampled_from(["NPS1", "NPS1", "NPS4"]))
        count = draw(st.integers(1, 3 - total - (1 if n == 0 else 0))) if total < 3 else 0
        if count == 0:
            break
        total += count
        nodes.append(NodeState(f"n{n}", nps, tuple(
            GpuState(f"n{n}", i, draw(st.sampled_from(["MI300X", "MI300X", "MI325X"])),
                     draw(st.sampled_from(["SPX", "SPX", "DPX", "QPX", "CPX"])), schedulable=draw(st.integers(0, 5)) > 0)
            for i in range(count))))
    occupants = []
    g = nodes[0].gpus[0]
    spec = get_spec(g.gpu_model)
    if draw(st.booleans()) and (g.compute_mode, nodes[0].memory_mode) in {(str(c), str(m)) for c, m in spec.valid_pairs}:
        occupants.append(Occupant(draw(st.sampled_from(["occ", "d0"])), 0, draw(st.integers(0, 1)), "n0", 0, 0,
                                  min(spec.smallest_partition_gb(g.compute_mode), 10.0)))
    demands, pending = [], 0
    for i in range(draw(st.integers(1, 3))):
        tp = draw(st.sampled_from([1, 1, 1, 2]))
        replicas = draw(st.integers(1, 2))
        pin_node = draw(st.sampled_from([None, None, *[n.name for n in nodes]]))
        pin_gpu = draw(st.sampled_from([None, 0])) if pin_node else None
        demands.append(Demand(f"d{i}", draw(st.sampled_from([20.0, 30.0, 47.0, 60.0, 95.0, 150.0, 200.0])), replicas,
                              priority=draw(st.integers(0, 1)), gpu_models=draw(st.sampled_from([(), (), ("MI325X",)])),
                              tensor_parallel=tp, pin_node=pin_node, pin_gpu=pin_gpu, spread=draw(st.booleans())))
        pending += replicas
        if pending >= 4:
            break
    return Fleet(tuple(nodes), tuple(occupants)), demands, draw(st.sampled_from([True, True, False]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_instances())
def test_the_default_path_is_optimal_for_every_rule(instance) -> None:  # type: ignore[no-untyped-def]
    fleet, demands, allow = instance
    p = place(fleet, demands, allow_repartition=allow, time_budget_s=30)
    assert validate(fleet, p, demands) == []
    assert p.solver == "exact" and p.optimal, p.solver_note
    best = brute_force_rules(fleet, demands, allow)
    assert quality(p, fleet, demands) == best
    # The model alone, without the heuristic's hint, reaches the same optimum.
    alone = place_exact(fleet, demands, allow_repartition=allow, time_limit_s=30)
    assert validate(fleet, alone, demands) == [] and alone.optimal and quality(alone, fleet, demands) == best
    heur = place_heuristic(fleet, demands, allow_repartition=allow)
    assert quality(heur, fleet, demands) >= quality(p, fleet, demands)


def test_exact_models_tensor_parallelism_pins_and_spread() -> None:
    fleet = Fleet((node("a", ["SPX", "SPX", "CPX", "SPX"], n=4), node("b", "SPX", n=5)),
                  (Occupant("s", 0, 0, "a", 2, 0, 20.0),))
    demands = [Demand("tp", 150.0, 2, tensor_parallel=2, pin_node="b"), Demand("pinned", 150.0, 1, tensor_parallel=2,
                                                                               pin_node="a", pin_gpu=3),
               Demand("s", 20.0, 3, spread=True)]
    p = place_exact(fleet, demands)
    assert validate(fleet, p, demands) == [] and p.ok() and p.optimal
    assert {s.node for s in slots_of(p, "tp")} == {"b"}
    assert ("a", 3) in {(s.node, s.gpu_index) for s in slots_of(p, "pinned")}
    # spread: replica 0 runs on a/gpu2; the others go to distinct GPUs, never a/gpu2, on both nodes
    spread = [(s.node, s.gpu_index) for s in slots_of(p, "s")]
    assert ("a", 2) not in spread and len(set(spread)) == 2 and {n for n, _ in spread} == {"a", "b"}
    assert p.gpus_used == 9 and p.mode_changes == ()  # one replica per SPX GPU needs no change


@pytest.mark.parametrize("hinted", [True, False])
def test_exact_spreads_over_nodes_then_gpus(hinted: bool) -> None:
    def solve(fleet: Fleet, demands: list[Demand]) -> Placement:
        p = place(fleet, demands, time_budget_s=30) if hinted else place_exact(fleet, demands)
        assert validate(fleet, p, demands) == [] and p.solver == "exact" and p.optimal
        return p

    fleet = Fleet((node("n0", "CPX", n=2), node("n1", "CPX")))
    assert {s.node for s in slots_of(solve(fleet, [Demand("s", 20.0, 2, spread=True)]), "s")} == {"n0", "n1"}
    # A node where a replica already runs counts as taken, even if its partitions fit better.
    fleet = Fleet((node("n0", "CPX", n=2), node("n1", "SPX")), (Occupant("s", 0, 0, "n0", 0, 0, 20.0),))
    assert [s.node for s in slots_of(solve(fleet, [Demand("s", 20.0, 2, spread=True)]), "s")] == ["n1"]
    # Another node is worth another GPU: here n0's used GPU has room, n1 must open one.
    fleet = Fleet((node("n0", "CPX"), node("n1", "SPX")), (Occupant("s", 0, 0, "n0", 0, 0, 20.0),))
    p = solve(fleet, [Demand("s", 20.0, 3, spread=True), Demand("x", 20.0, 1)])
    assert {s.node for s in slots_of(p, "s")} == {"n1"} and slots_of(p, "x")[0].node == "n0"
    # One GPU per replica even when a single GPU's partitions would hold them all.
    fleet = Fleet((node("n0", ["CPX", "SPX"], n=2),))
    p = solve(fleet, [Demand("s", 20.0, 2, spread=True)])
    assert len({(s.node, s.gpu_index) for s in slots_of(p, "s")}) == 2 and p.gpus_used == 2
    # ... so a free partition of a GPU in use beats a second fresh GPU, however small its partitions.
    fleet = Fleet((node("n0", ["CPX", "CPX", "DPX"], n=3),), (Occupant("x", 0, 0, "n0", 2, 0, 20.0),))
    p = solve(fleet, [Demand("s", 20.0, 2, spread=True)])
    assert p.gpus_used == 2 and ("n0", 2) in {(s.node, s.gpu_index) for s in slots_of(p, "s")}


@pytest.mark.parametrize("hinted", [True, False])
def test_a_pinned_tensor_parallel_replica_gets_its_gpu_even_when_that_costs_a_change(hinted: bool) -> None:
    fleet = Fleet((node("a", ["SPX", "SPX", "CPX"], n=3),))
    demands = [Demand("tp", 150.0, 1, tensor_parallel=2, pin_node="a", pin_gpu=2), Demand("s", 20.0, 1)]
    p = place(fleet, demands, time_budget_s=30) if hinted else place_exact(fleet, demands)
    assert validate(fleet, p, demands) == [] and p.ok() and p.optimal
    assert 2 in {s.gpu_index for s in slots_of(p, "tp")}
    assert p.mode_changes == (ModeChange("a", 2, "CPX", "SPX"),) and p.gpus_used == 3


def test_a_time_budget_of_zero_answers_with_the_heuristic() -> None:
    fleet, demands = Fleet((node("a", "SPX", n=2),)), [Demand("s", 20.0, 3)]
    p = place(fleet, demands, time_budget_s=0)
    assert p.solver == "heuristic" and "disabled" in p.solver_note and validate(fleet, p, demands) == []
    assert place(fleet, demands).solver == "exact"


def test_the_default_path_uses_fewer_gpus_than_the_heuristic_where_it_can() -> None:
    """A case where the greedy heuristic opens one GPU too many (found by the benchmark's mixed family)."""
    rng = random.Random(6)
    fleet = Fleet(tuple(node(f"n{i}", [rng.choice(["SPX", "DPX", "QPX", "CPX"]) for _ in range(8)], n=8,
                             model="MI325X" if i % 2 else "MI300X") for i in range(2)))
    demands = [Demand(f"d{i}", rng.choice([20.0, 30.0, 45.0, 60.0, 90.0, 120.0]), 1,
                      gpu_models=rng.choice([(), ("MI300X",), ("MI325X",)])) for i in range(24)]
    heur, best = place_heuristic(fleet, demands), place(fleet, demands, time_budget_s=30)
    assert validate(fleet, best, demands) == [] and best.solver == "exact" and best.optimal
    assert heur.ok() and best.ok() and (heur.gpus_used, best.gpus_used) == (12, 11)


# --------------------------------------------------------------------------- stateful


def priority_violations(fleet: Fleet, p: Placement, demands: list[Demand]) -> list[str]:
    """A lower-priority replica placed in a slot that an unplaced higher-priority one could use."""
    by_key = {d.key: d for d in demands}
    models = {(n.name, g.index): get_spec(g.gpu_model).model for n in fleet.nodes for g in n.gpus}
    out = []
    for u in p.unplaced:
        r = by_key[u.deployment]
        if r.tensor_parallel > 1 or r.pin_node or r.spread:
            continue
        for a in p.assignments:
            low = by_key[a.deployment]
            for s in a.slots:
                if (low.priority < r.priority and s.memory_gb >= r.memory_gb
                        and (not r.gpu_models or models[(s.node, s.gpu_index)] in r.gpu_models)):
                    out.append(f"{a.deployment}#{a.replica} (p{low.priority}) took {s} that {r.key} (p{r.priority}) fits")
    return out


class FleetMachine(RuleBasedStateMachine):
    """Add/remove deployments, fail GPUs, flip a node's NPS; re-place after every event."""

    @initialize(layout=st.lists(st.tuples(st.sampled_from(["MI300X", "MI300X", "MI325X"]),
                                          st.lists(st.sampled_from(["SPX", "DPX", "QPX", "CPX"]), min_size=1, max_size=4)),
                                min_size=1, max_size=3))
    def build(self, layout: list[tuple[str, list[str]]]) -> None:
        self.nps = {f"n{i}": "NPS1" for i in range(len(layout))}
        self.gpus = {(f"n{i}", j): [model, mode, True] for i, (model, modes) in enumerate(layout)
                     for j, mode in enumerate(modes)}
        self.demands: dict[str, Demand] = {}
        self.occupants: list[Occupant] = []
        self.counter = 0

    def fleet(self) -> Fleet:
        return Fleet(tuple(NodeState(n, nps, tuple(GpuState(n, j, m, mode, ok) for (nn, j), (m, mode, ok)
                                                   in self.gpus.items() if nn == n))
                           for n, nps in self.nps.items()), tuple(self.occupants))

    def replan(self, allow_repartition: bool = True) -> None:
        fleet, demands = self.fleet(), list(self.demands.values())
        p = place(fleet, demands, allow_repartition=allow_repartition)
        assert validate(fleet, p, demands) == []
        assert priority_violations(fleet, p, demands) == []
        assert all(u.reason.strip() for u in p.unplaced)
        by_key = {d.key: d for d in demands}
        for a in p.assignments:
            for s in a.slots:
                assert s.memory_gb >= by_key[a.deployment].memory_gb
        for c in p.mode_changes:
            self.gpus[(c.node, c.gpu_index)][1] = c.to_mode
        for a in p.assignments:
            d = by_key[a.deployment]
            self.occupants += [Occupant(d.key, a.replica, d.priority, s.node, s.gpu_index, s.partition_index,
                                        d.memory_gb) for s in a.slots]

    @rule(memory=st.sampled_from([8.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 150.0, 190.0, 250.0]),
          replicas=st.integers(1, 4), priority=st.integers(0, 2), tp=st.sampled_from([1, 1, 1, 2, 3]),
          spread=st.booleans(), pin=st.integers(-3, 2), model=st.sampled_from([(), (), ("MI325X",)]),
          allow=st.sampled_from([True, True, False]))
    def add_deployment(self, memory: float, replicas: int, priority: int, tp: int, spread: bool, pin: int,
                       model: tuple[str, ...], allow: bool) -> None:
        self.counter += 1
        pin_node = f"n{pin}" if f"n{pin}" in self.nps else None
        self.demands[f"d{self.counter}"] = Demand(f"d{self.counter}", memory, replicas, priority, model, tp,
                                                  pin_node=pin_node, spread=spread)
        self.replan(allow)

    @rule(data=st.data())
    def remove_deployment(self, data: st.DataObject) -> None:
        if self.demands:
            key = data.draw(st.sampled_from(sorted(self.demands)))
            del self.demands[key]
            self.occupants = [o for o in self.occupants if o.deployment != key]
            self.replan()

    @rule(data=st.data())
    def fail_gpu(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.gpus)))
        self.gpus[key][2] = False
        # A failed GPU's replicas die with it; the whole (tensor-parallel) replica goes.
        dead = {(o.deployment, o.replica) for o in self.occupants if (o.node, o.gpu_index) == key}
        self.occupants = [o for o in self.occupants if (o.deployment, o.replica) not in dead]
        self.replan()

    @rule(data=st.data(), fix_modes=st.booleans())
    def change_nps(self, data: st.DataObject, fix_modes: bool) -> None:
        free = sorted(n for n in self.nps if not any(o.node == n for o in self.occupants))
        if not free:
            return
        n = data.draw(st.sampled_from(free))
        self.nps[n] = "NPS4" if self.nps[n] == "NPS1" else "NPS1"
        if fix_modes and self.nps[n] == "NPS4":
            for (nn, _), gpu in self.gpus.items():
                if nn == n and gpu[1] in ("SPX", "DPX"):
                    gpu[1] = "CPX"
        self.replan()

    @invariant()
    def occupants_fit_their_partitions(self) -> None:
        seen = set()
        for o in self.occupants:
            model, mode, _ = self.gpus[(o.node, o.gpu_index)]
            spec = get_spec(model)
            assert (mode, self.nps[o.node]) in {(str(c), str(m)) for c, m in spec.valid_pairs}
            if o.partition_index is None:
                assert mode == "SPX" and o.memory_gb <= spec.memory_gb
            else:
                assert o.partition_index < spec.partition_count(mode)
                assert o.memory_gb <= spec.smallest_partition_gb(mode)
            key = (o.node, o.gpu_index, o.partition_index)
            assert key not in seen
            seen.add(key)


FleetMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=12, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
test_fleet_machine = FleetMachine.TestCase
