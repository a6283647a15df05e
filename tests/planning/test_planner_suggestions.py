"""Issue 13 §6 on the pure planner: memory-mode (NPS) changes on idle nodes in suggested plans,
busy nodes named with what to stop, soft spread, counted unplaced reasons, replica numbers."""

from __future__ import annotations

from planning import placement as pl
from planning import planner


def node(name: str, modes: list[str], memory: str = "NPS1") -> pl.NodeState:
    return pl.NodeState(name=name, memory_mode=memory,
                        gpus=tuple(pl.GpuState(node=name, index=i, gpu_model="MI300X", compute_mode=m) for i, m in enumerate(modes)))


def occ(dep: str, node_: str, gpu: int, part: int, replica: int = 0) -> pl.Occupant:
    return pl.Occupant(deployment=dep, replica=replica, priority=0, node=node_, gpu_index=gpu, partition_index=part, memory_gb=10.0)


def test_an_idle_node_in_nps4_is_switched_to_nps1_when_only_that_places_the_demand():
    fleet = pl.Fleet(nodes=(node("n1", ["CPX"] * 4, "NPS4"), node("n2", ["CPX"] * 4, "NPS4")),
                     occupants=(occ("chat", "n1", 0, 0),))
    result = planner.plan(fleet, demands=[pl.Demand(key="big", memory_gb=100.0, replicas=2)], exact_time_budget_s=0)
    assert result.ok
    (change,) = result.node_changes
    assert (change.node, change.from_memory, change.to_memory, change.compute_mode) == ("n2", "NPS4", "NPS1", "SPX")
    assert {s.node for a in result.assignments for s in a.slots} == {"n2"}
    assert [s.kind for s in result.steps][0] == "set-memory-mode"
    assert any("memory mode of idle node" in w for w in result.warnings)


def test_a_busy_node_whose_change_would_help_is_named_with_what_to_stop():
    fleet = pl.Fleet(nodes=(node("n1", ["CPX"] * 4, "NPS4"),),
                     occupants=(occ("chat", "n1", 0, 0), occ("chat", "n1", 1, 0, replica=1)))
    result = planner.plan(fleet, demands=[pl.Demand(key="big", memory_gb=100.0, replicas=2)], exact_time_budget_s=0)
    assert not result.ok and result.node_changes == ()
    (hint,) = result.hints
    assert hint == "node n1 would fit 2 more replica(s) in SPX/NPS1, but GPUs 0–1 are busy: stop chat first"
    assert planner.summary(result)["hints"] == [hint]


def test_explicit_targets_get_no_suggested_memory_change():
    fleet = pl.Fleet(nodes=(node("n1", ["CPX"] * 2, "NPS4"), node("n2", ["CPX"] * 2, "NPS4")))
    result = planner.plan(fleet, gpu_targets=[planner.GpuTarget("n1", 0, "QPX")],
                          demands=[pl.Demand(key="big", memory_gb=100.0, replicas=1)], exact_time_budget_s=0)
    assert result.node_changes == () and result.unplaced


def test_soft_spread_prefers_different_gpus_then_shares_hard_spread_leaves_the_rest():
    fleet = pl.Fleet(nodes=(node("a", ["CPX", "CPX"]), node("b", ["CPX", "CPX"])))
    for budget in (0, 2):
        hard = pl.place(fleet, [pl.Demand(key="y", memory_gb=20, replicas=6, spread=True)], time_budget_s=budget)
        soft = pl.place(fleet, [pl.Demand(key="y", memory_gb=20, replicas=6, soft_spread=True)], time_budget_s=budget)
        assert len(hard.assignments) == 4 and len(hard.unplaced) == 2
        assert not soft.unplaced and sorted(a.replica for a in soft.assignments) == list(range(6))
        assert len({(s.node, s.gpu_index) for a in soft.assignments for s in a.slots}) == 4  # every GPU first
        assert pl.validate(fleet, soft, [pl.Demand(key="y", memory_gb=20, replicas=6)]) == []


def test_plan_summary_counts_what_fits_and_why_the_rest_does_not():
    fleet = pl.Fleet(nodes=(node("a", ["QPX", "QPX", "QPX"]),), occupants=(occ("x", "a", 0, 0),))
    result = planner.plan(fleet, gpu_targets=[planner.GpuTarget("a", 2, "QPX")],
                          demands=[pl.Demand(key="m", memory_gb=40.0, replicas=12)], exact_time_budget_s=0)
    (row,) = planner.summary(result)["unplaced_summary"]
    assert (row["deployment"], row["asked"], row["placed"]) == ("m", 12, 11)
    assert sum(r["replicas"] for r in row["reasons"]) == 1 and len(row["reasons"]) == 1


def test_plan_steps_number_each_new_replica():
    fleet = pl.Fleet(nodes=(node("a", ["SPX", "SPX"]), node("b", ["SPX", "SPX"])))
    result = planner.plan(fleet, demands=[pl.Demand(key="m", memory_gb=100.0, replicas=4)], exact_time_budget_s=0)
    starts = sorted(s.detail.split(" replica ")[1].split(" ")[0] for s in result.steps if s.kind == "deploy")
    assert starts == ["0", "1", "2", "3"]
