"""What-if planner: pure, no side effects. Hand cases and Hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partitions.geometry import get_spec
from planning import placement as pl
from planning import planner


def node(name: str, modes: list[str], memory: str = "NPS1", model: str = "MI300X") -> pl.NodeState:
    return pl.NodeState(name=name, memory_mode=memory,
                        gpus=tuple(pl.GpuState(node=name, index=i, gpu_model=model, compute_mode=m) for i, m in enumerate(modes)))


def occupant(dep: str, node: str, gpu: int, part: int | None, gb: float, prio: int = 0, replica: int = 0) -> pl.Occupant:
    return pl.Occupant(deployment=dep, replica=replica, priority=prio, node=node, gpu_index=gpu, partition_index=part, memory_gb=gb)


def test_planning_a_cpx_switch_of_a_busy_gpu_moves_its_model():
    fleet = pl.Fleet(nodes=(node("a", ["SPX", "SPX"]),), occupants=(occupant("big", "a", 0, 0, 150.0),))
    result = planner.plan(fleet, gpu_targets=[planner.GpuTarget("a", 0, "CPX")])
    (change,) = result.gpu_changes
    assert (change.from_compute, change.to_compute, change.reason) == ("SPX", "CPX", "requested")
    (moved,) = result.displaced
    assert moved.to is not None and moved.to[0].gpu_index == 1
    assert result.blast_radius == {"a": (0,)}
    assert result.ok
    capacity = {row.memory_gb: row for row in result.capacity}
    assert (capacity[192.0].total_before, capacity[192.0].total_after) == (2, 1)
    assert (capacity[24.0].total_after, capacity[24.0].free_after) == (8, 8)


def test_a_displaced_model_with_nowhere_to_go_is_reported():
    fleet = pl.Fleet(nodes=(node("a", ["SPX"]),), occupants=(occupant("big", "a", 0, 0, 150.0),))
    result = planner.plan(fleet, gpu_targets=[planner.GpuTarget("a", 0, "CPX")])
    (moved,) = result.displaced
    assert moved.to is None and "150" in moved.reason
    assert not result.ok and result.warnings


def test_nps_change_touches_every_gpu_and_orders_steps():
    fleet = pl.Fleet(nodes=(node("a", ["SPX", "CPX", "SPX"]), node("b", ["SPX"])))
    durations = planner.StepDurations(compute_change_s=10, memory_change_s=100, deploy_s=30, stop_s=5)
    result = planner.plan(fleet, node_targets=[planner.NodeTarget("a", "NPS4", "QPX")], durations=durations)
    assert result.blast_radius == {"a": (0, 1, 2)}
    assert [nc.to_memory for nc in result.node_changes] == ["NPS4"]
    assert {c.to_compute for c in result.gpu_changes} == {"QPX"}
    assert [s.kind for s in result.steps] == ["set-memory-mode"]  # compute re-set is part of it
    assert result.eta_s == 100


def test_a_node_target_in_the_current_memory_mode_is_compute_changes_per_gpu_without_a_reload():
    fleet = pl.Fleet(nodes=(node("a", ["SPX", "CPX", "SPX"]),), occupants=(occupant("big", "a", 0, 0, 150.0),))
    durations = planner.StepDurations(compute_change_s=10, memory_change_s=100, deploy_s=30, stop_s=5)
    result = planner.plan(fleet, node_targets=[planner.NodeTarget("a", "NPS1", "CPX")], durations=durations)
    assert result.node_changes == ()  # no memory change, so no driver reload
    assert [(c.gpu_index, c.from_compute, c.to_compute, c.from_memory, c.to_memory, c.reason) for c in result.gpu_changes] == [
        (0, "SPX", "CPX", "NPS1", "NPS1", "requested"), (2, "SPX", "CPX", "NPS1", "NPS1", "requested")]
    assert [s.kind for s in result.steps if s.kind != "stop"] == ["set-compute-mode", "set-compute-mode"]
    assert result.blast_radius == {"a": (0, 2)}
    assert [d.deployment for d in result.displaced] == ["big"]  # GPU 0 changes, so its replica moves
    assert not any("reloads the driver" in w for w in result.warnings)


def test_a_node_target_in_the_current_memory_mode_without_a_compute_mode_changes_nothing():
    fleet = pl.Fleet(nodes=(node("a", ["SPX", "CPX"]),))
    result = planner.plan(fleet, node_targets=[planner.NodeTarget("a", "NPS1")])
    assert (result.gpu_changes, result.node_changes, result.steps) == ((), (), ())
    with pytest.raises(planner.PlanError, match="valid under NPS1"):
        planner.plan(fleet, node_targets=[planner.NodeTarget("a", "NPS1", "TPX")])


def test_a_node_that_reports_no_memory_mode_is_named_and_not_garbled():
    fleet = pl.Fleet(nodes=(node("a", ["SPX"], memory=""),))
    with pytest.raises(planner.PlanError) as refused:
        planner.plan(fleet, gpu_targets=[planner.GpuTarget("a", 0, "CPX")])
    assert "a/gpu0 (MI300X) reports no memory mode" in str(refused.value)
    assert "under ;" not in str(refused.value) and ": none" not in str(refused.value)


def test_invalid_targets_name_the_valid_choices():
    fleet = pl.Fleet(nodes=(node("a", ["SPX"]),))
    with pytest.raises(planner.PlanError, match="valid under NPS4: QPX, CPX"):
        planner.plan(fleet, node_targets=[planner.NodeTarget("a", "NPS4")])
    with pytest.raises(planner.PlanError, match="no node 'zz'"):
        planner.plan(fleet, gpu_targets=[planner.GpuTarget("zz", 0, "CPX")])
    with pytest.raises(planner.PlanError, match="has no GPU 7"):
        planner.plan(fleet, gpu_targets=[planner.GpuTarget("a", 7, "CPX")])
    with pytest.raises(planner.PlanError, match="give target layouts"):
        planner.plan(fleet)


def test_new_demand_gets_mode_changes_and_an_eta():
    fleet = pl.Fleet(nodes=(node("a", ["SPX", "SPX"]),))
    demand = pl.Demand(key="qwen", memory_gb=18.0, replicas=8)
    result = planner.plan(fleet, demands=[demand], durations=planner.StepDurations(compute_change_s=10, deploy_s=30))
    assert result.ok and len(result.assignments) == 8
    assert [c.to_compute for c in result.gpu_changes] == ["CPX"]
    assert result.eta_s == 10 + 30  # one change, then the replicas start together
    summary = planner.summary(result)
    assert summary["ok"] and len(summary["assignments"]) == 8 and summary["steps"]


MODES = ["SPX", "DPX", "QPX", "CPX"]


@st.composite
def fleets(draw):  # type: ignore[no-untyped-def]
    nodes = []
    for n in range(draw(st.integers(1, 3))):
        modes = draw(st.lists(st.sampled_from(MODES), min_size=1, max_size=4))
        nodes.append(node(f"n{n}", modes))
    fleet = pl.Fleet(nodes=tuple(nodes))
    # A few occupants on free partitions.
    occupants = []
    for i, slot in enumerate(pl.partitions_of(fleet)):
        if draw(st.integers(0, 3)) == 0:
            occupants.append(occupant(f"d{i}", slot.node, slot.gpu_index, slot.partition_index,
                                      draw(st.floats(1, slot.memory_gb)), prio=draw(st.integers(0, 2))))
    return pl.Fleet(nodes=fleet.nodes, occupants=tuple(occupants))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=fleets(), data=st.data())
def test_plans_keep_every_invariant(fleet, data):
    gpus = [(n.name, g.index) for n in fleet.nodes for g in n.gpus]
    targets = data.draw(st.lists(st.tuples(st.sampled_from(gpus), st.sampled_from(MODES)), max_size=3, unique_by=lambda t: t[0]))
    demands = data.draw(st.lists(st.builds(pl.Demand, key=st.sampled_from(["x", "y"]), memory_gb=st.floats(1, 180),
                                           replicas=st.integers(1, 6), priority=st.integers(0, 2)),
                                 max_size=2, unique_by=lambda d: d.key))
    if not targets and not demands:
        return
    result = planner.plan(fleet, gpu_targets=[planner.GpuTarget(n, i, m) for (n, i), m in targets], demands=demands)
    after = {(c.node, c.gpu_index): c.to_compute for c in result.gpu_changes}
    # Only valid pairs, and only changed GPUs in the blast radius.
    for change in result.gpu_changes:
        assert (change.to_compute, change.to_memory) in {(str(c), str(m)) for c, m in get_spec("MI300X").valid_pairs}
        assert change.gpu_index in result.blast_radius[change.node]
    # Every replica that lost its partition is either moved or has a reason; same for new demand.
    for moved in result.displaced:
        assert (moved.to is None) == bool(moved.reason)
        assert (moved.node, moved.gpu_index) in after
    assert all(u.reason for u in result.unplaced)
    # No partition receives two replicas, and each fits.
    taken = [(s.node, s.gpu_index, s.partition_index) for a in result.assignments for s in a.slots]
    taken += [(s.node, s.gpu_index, s.partition_index) for d in result.displaced if d.to for s in d.to]
    assert len(taken) == len(set(taken))
    staying = {(o.node, o.gpu_index, o.partition_index) for o in fleet.occupants if (o.node, o.gpu_index) not in after}
    assert not staying & set(taken)
    # Capacity after matches the layout after.
    totals = {row.memory_gb: row.total_after for row in result.capacity}
    expected: dict[float, int] = {}
    for n in fleet.nodes:
        for g in n.gpus:
            mode = after.get((n.name, g.index), g.compute_mode)
            spec = get_spec(g.gpu_model)
            expected[spec.smallest_partition_gb(mode)] = expected.get(spec.smallest_partition_gb(mode), 0) + spec.partition_count(mode)
    assert {k: v for k, v in totals.items() if v} == expected
    assert result.eta_s >= 0 and all(s.starts_at_s >= 0 for s in result.steps)
