"""The fleet as placement sees it, the stale-plan fingerprint and plan limits (through the API)."""

from __future__ import annotations

import dataclasses

import pytest

from models.models import ModelProfile
from partitions.models import GPU, Node, Partition, Reconfiguration
from planning import placement as pl
from planning.models import Plan
from planning.services import MAX_PLAN_DEMANDS, MAX_PLAN_REPLICAS, MAX_REPLICAS_PER_DEMAND, fingerprint, fleet_state
from serving.models import Deployment, DeploymentSlot
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db


def profile(hf_id: str, precision: str) -> ModelProfile:
    return ModelProfile.objects.get(model__hf_id=hf_id, precision__code=precision, gpu_model="MI300X",
                                    context_tokens=8192, concurrent_sequences=1)


LLAMA70_FP16 = ("meta-llama/Llama-3.3-70B-Instruct", "fp16")  # ~150 GiB: one SPX GPU per replica
LLAMA8_FP16 = ("meta-llama/Llama-3.1-8B-Instruct", "fp16")    # ~19.5 GiB


@pytest.fixture
def rows(db):  # type: ignore[no-untyped-def]
    """Two nodes of two MI300X GPUs in SPX, as rows only (nothing runs)."""
    nodes = []
    for name in ("n1", "n2"):
        node = Node.objects.create(name=name, backend=Node.Backend.SIMULATED, emulated=True, memory_mode="NPS1")
        for i in range(2):
            GPU.objects.create(node=node, index=i, gpu_model="MI300X", compute_mode="SPX", memory_mode="NPS1",
                               health=GPU.Health.HEALTHY)
        nodes.append(node)
    return nodes


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)


def gpu_state(fleet: pl.Fleet, node: str, index: int) -> pl.GpuState:
    return next(g for n in fleet.nodes if n.name == node for g in n.gpus if g.index == index)


# --- operations in flight --------------------------------------------------------------------------

def test_gpus_under_an_operation_are_unschedulable_and_placement_leaves_them_out(rows, catalog, api_client_for, operator):
    gpu = GPU.objects.get(node__name="n1", index=0)
    op = Reconfiguration.objects.create(kind=Reconfiguration.Kind.COMPUTE, node=gpu.node, gpu=gpu, gpu_index=0,
                                        target_compute_mode="CPX", state="applying")
    fleet = fleet_state()
    state = gpu_state(fleet, "n1", 0)
    assert not state.schedulable and f"reconfiguration #{op.pk}" in state.problem
    assert gpu_state(fleet, "n1", 1).schedulable
    # Four SPX GPUs, one busy: three replicas of a one-GPU model fit, the fourth cannot.
    response = api_client_for(operator).post("/api/v1/plans/", {"demands": [
        {"name": "big", "profile": profile(*LLAMA70_FP16).pk, "replicas": 4}]}, format="json")
    assert response.status_code == 201, response.json()
    result = response.json()["result"]
    used = {(s["node"], s["gpu_index"]) for a in result["assignments"] for s in a["slots"]}
    assert ("n1", 0) not in used and len(used) == 3 and len(result["unplaced"]) == 1
    assert {"node": "n1", "gpu_index": 0, "reason": state.problem} in result["excluded"]


def test_a_node_under_a_memory_mode_change_is_unschedulable(rows):
    node = rows[1]
    op = Reconfiguration.objects.create(kind=Reconfiguration.Kind.MEMORY, node=node, target_memory_mode="NPS4",
                                        state="pending")
    fleet = fleet_state()
    state = next(n for n in fleet.nodes if n.name == "n2")
    assert not state.schedulable and f"reconfiguration #{op.pk}" in state.problem
    result = pl.place(fleet, [pl.Demand("s", 20.0, 4)])
    assert {s.node for a in result.assignments for s in a.slots} == {"n1"}
    assert pl.Excluded("n2", None, state.problem) in result.excluded
    Reconfiguration.objects.filter(pk=op.pk).update(state="succeeded")
    assert next(n for n in fleet_state().nodes if n.name == "n2").schedulable


# --- one bad node must not stop placement elsewhere -----------------------------------------------

def test_a_node_with_mixed_memory_modes_is_only_excluded(tmp_path, catalog, api_client_for, operator):
    good = make_emulated_node(tmp_path, "emu-good", gpus=2)
    bad = make_emulated_node(tmp_path, "emu-bad", gpus=2)
    problem = "GPUs report different memory modes: NPS1 on GPU 0, NPS4 on GPU 1"
    Node.objects.filter(pk=bad.node.pk).update(memory_mode="", layout_problem=problem)
    GPU.objects.filter(node=bad.node, index=1).update(memory_mode="NPS4")
    client = api_client_for(operator)

    response = client.post("/api/v1/deployments/", {"name": "llama8", "profile": profile(*LLAMA8_FP16).pk,
                                                     "replicas": 1}, format="json")
    assert response.status_code == 201, response.content
    assert {s["node"] for s in response.json()["slots"]} == {good.node.name}

    response = client.post("/api/v1/plans/", {"demands": [
        {"name": "more", "profile": profile(*LLAMA8_FP16).pk, "replicas": 2},
        {"name": "pinned", "profile": profile(*LLAMA8_FP16).pk, "replicas": 1, "pin_node": "emu-bad"}]}, format="json")
    assert response.status_code == 201, response.content
    result = response.json()["result"]
    assert {"node": "emu-bad", "gpu_index": None, "reason": problem} in result["excluded"]
    assert {s["node"] for a in result["assignments"] for s in a["slots"]} == {"emu-good"}
    (unplaced,) = result["unplaced"]
    assert unplaced["deployment"] == "pinned" and unplaced["code"] == "unschedulable" and problem in unplaced["reason"]
    # A deployment pinned to the bad node does not fit: the 409 says which node was left out and why.
    response = client.post("/api/v1/deployments/", {"name": "pinned", "profile": profile(*LLAMA8_FP16).pk,
                                                     "replicas": 1, "pin_node": "emu-bad"}, format="json")
    assert response.status_code == 409, response.content
    assert {"node": "emu-bad", "gpu_index": None, "reason": problem} in response.json()["detail"]["excluded"]
    # A plan that retargets a good GPU is not refused because of the bad node either.
    gpu = GPU.objects.get(node=good.node, index=1)
    response = client.post("/api/v1/plans/", {"gpus": [{"gpu": gpu.pk, "compute_mode": "CPX"}]}, format="json")
    assert response.status_code == 201, response.content


# --- the stale-plan fingerprint -------------------------------------------------------------------------

FLEET = pl.Fleet((pl.NodeState("a", "NPS1", tuple(pl.GpuState("a", i, "MI300X", "CPX") for i in range(2))),
                  pl.NodeState("b", "NPS1", (pl.GpuState("b", 0, "MI300X", "CPX"),))),
                 (pl.Occupant("d", 0, 0, "a", 0, 0, 20.0),))


@pytest.mark.parametrize("moved", [
    dict(partition_index=1), dict(gpu_index=1), dict(node="b", gpu_index=0), dict(replica=1), dict(deployment="e"),
    dict(priority=5), dict(memory_gb=22.0),
])
def test_the_fingerprint_changes_when_an_occupant_moves_or_changes(moved: dict) -> None:
    other = dataclasses.replace(FLEET, occupants=(dataclasses.replace(FLEET.occupants[0], **moved),))
    assert fingerprint(other) != fingerprint(FLEET)
    assert fingerprint(dataclasses.replace(FLEET)) == fingerprint(FLEET)


def test_the_fingerprint_changes_with_what_the_hardware_allows() -> None:
    caps = {"CPX": ("NPS1",), "SPX": ("NPS1",)}
    nodes = (dataclasses.replace(FLEET.nodes[0], gpus=(dataclasses.replace(FLEET.nodes[0].gpus[0], caps=caps),
                                                        FLEET.nodes[0].gpus[1])), FLEET.nodes[1])
    assert fingerprint(dataclasses.replace(FLEET, nodes=nodes)) != fingerprint(FLEET)


def test_a_plan_made_before_a_deployment_moved_is_stale(tmp_path, catalog, api_client_for, operator):
    make_emulated_node(tmp_path, "emu-1", gpus=2)
    client = api_client_for(operator)
    response = client.post("/api/v1/deployments/", {"name": "llama8", "profile": profile(*LLAMA8_FP16).pk,
                                                     "replicas": 1}, format="json")
    assert response.status_code == 201, response.content
    plan = client.post("/api/v1/plans/", {"demands": [
        {"name": "more", "profile": profile(*LLAMA8_FP16).pk, "replicas": 1}]}, format="json").json()
    # The replica moves to the other GPU (same modes, same health): only where it runs differs.
    slot = DeploymentSlot.objects.select_related("partition__gpu").get(deployment__name="llama8")
    target = Partition.objects.get(gpu__node__name="emu-1", gpu__index=1 - slot.partition.gpu.index, index=0)
    DeploymentSlot.objects.filter(pk=slot.pk).update(partition=target)
    response = client.post(f"/api/v1/plans/{plan['id']}/apply/")
    assert response.status_code == 409, response.content
    assert Plan.objects.get(pk=plan["id"]).state == "stale"
    assert not Deployment.objects.filter(name="more").exists()


# --- demand limits and the plan's time budget ------------------------------------------------------

def _demand(name: str, replicas: int) -> dict:
    return {"name": name, "profile": profile(*LLAMA8_FP16).pk, "replicas": replicas}


@pytest.mark.parametrize("demands, message", [
    (lambda: [_demand(f"d{i}", 1) for i in range(MAX_PLAN_DEMANDS + 1)], f"no more than {MAX_PLAN_DEMANDS}"),
    (lambda: [_demand("d", MAX_REPLICAS_PER_DEMAND + 1)], f"less than or equal to {MAX_REPLICAS_PER_DEMAND}"),
    (lambda: [_demand(f"d{i}", MAX_REPLICAS_PER_DEMAND) for i in range(MAX_PLAN_REPLICAS // MAX_REPLICAS_PER_DEMAND + 1)],
     f"at most {MAX_PLAN_REPLICAS} replicas"),
])
def test_plans_beyond_the_demand_limits_are_400_and_store_nothing(rows, catalog, api_client_for, operator, demands,
                                                                   message: str):
    response = api_client_for(operator).post("/api/v1/plans/", {"demands": demands()}, format="json")
    assert response.status_code == 400, response.content
    assert message in response.content.decode()
    assert not Plan.objects.exists()


def test_the_demand_limits_are_stated_in_the_schema(client, viewer):
    client.force_login(viewer)
    schemas = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["components"]["schemas"]
    assert schemas["PlanCreateRequest"]["properties"]["demands"]["maxItems"] == MAX_PLAN_DEMANDS
    assert str(MAX_PLAN_REPLICAS) in schemas["PlanCreateRequest"]["properties"]["demands"]["description"]
    assert schemas["DemandRequest"]["properties"]["replicas"]["maximum"] == MAX_REPLICAS_PER_DEMAND
    assert schemas["Plan"]["properties"]["solver"]["oneOf"][0] == {"$ref": "#/components/schemas/SolverEnum"}
    assert schemas["SolverEnum"]["enum"] == list(pl.SOLVERS)


def test_a_plan_past_its_time_budget_is_400_and_stores_nothing(rows, catalog, api_client_for, operator, settings):
    settings.PLAN_TIME_BUDGET_S = 0
    response = api_client_for(operator).post("/api/v1/plans/", {"demands": [_demand("d", 2)]}, format="json")
    assert response.status_code == 400, response.content
    assert "time budget" in response.json()["message"]
    assert not Plan.objects.exists()


def test_the_plan_says_which_solver_answered(rows, catalog, api_client_for, operator, settings, client):
    api = api_client_for(operator)
    body = api.post("/api/v1/plans/", {"demands": [_demand("d", 2)]}, format="json").json()
    assert body["solver"] == "exact" and body["result"]["solver"] == {"name": "exact", "optimal": True, "note": "optimal"}
    settings.PLACEMENT_EXACT_TIME_BUDGET_S = 0
    body = api.post("/api/v1/plans/", {"demands": [_demand("e", 2)]}, format="json").json()
    assert body["solver"] == "heuristic" and "disabled" in body["result"]["solver"]["note"]
    client.force_login(operator)
    page = client.get(f"/plans/{body['id']}/")
    assert page.status_code == 200 and "heuristic</strong> solver" in page.content.decode()
