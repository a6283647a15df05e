"""Placement engine: hand cases, validate(), exact vs heuristic vs brute force, and a stateful
Hypothesis machine checking the invariants after every fleet event. Pure: no database."""

from __future__ import annotations

import dataclasses
import itertools
import random

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


def test_bad_fleet_raises_placement_error() -> None:
    with pytest.raises(PlacementError, match="Unknown GPU model"):
        place(Fleet((node("a", model="B200"),)), [])
    with pytest.raises(PlacementError, match="not in the fleet"):
        place(Fleet((node("a"),), (Occupant("x", 0, 0, "a", 5, 0, 1.0),)), [])


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
        Unplaced(p.assignments[-1].deployment, p.assignments[-1].replica, " "),)), "without a reason"),
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
    exact, heur = place_exact(fleet, demands, time_limit_s=5), place(fleet, demands)
    assert validate(fleet, exact, demands) == [] and validate(fleet, heur, demands) == []
    placed, gpus = brute_force(fleet, demands)
    total = sum(len(a.slots) for a in exact.assignments)
    assert total == placed
    assert exact.gpus_used == gpus
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
    heur, exact = place(fleet, demands), place_exact(fleet, demands)
    assert validate(fleet, heur, demands) == [] and validate(fleet, exact, demands) == []
    assert (len(heur.unplaced), heur.gpus_used) >= (len(exact.unplaced), exact.gpus_used)
    if heur.ok() and exact.ok():
        assert heur.gpus_used <= exact.gpus_used + 1


def test_exact_refuses_what_it_does_not_model() -> None:
    with pytest.raises(PlacementError, match="place_exact"):
        place_exact(Fleet((node("a"),)), [Demand("t", 10.0, 1, tensor_parallel=2)])


def test_exact_respects_priority_when_not_everything_fits() -> None:
    fleet = Fleet((node("a", "DPX"),))
    demands = [Demand("low", 20.0, 2, priority=0), Demand("high", 90.0, 1, priority=1)]
    p = place_exact(fleet, demands)
    assert validate(fleet, p, demands) == [] and [a.deployment for a in p.assignments] == ["low", "high"]
    assert p.gpus_used == 1 and len(p.unplaced) == 1 and p.unplaced[0].deployment == "low"


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
