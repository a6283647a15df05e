"""Deployments and plans through the API, on emulated nodes (agents' reconciler called
directly here; tests/integration runs real agents)."""

from __future__ import annotations

import pytest

from models.models import ModelProfile
from partitions.models import GPU, Node, Reconfiguration
from partitions.reconfigure import run_reconfiguration
from planning.models import Plan
from serving.models import Deployment
from serving.services import reconcile_node
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db


def profile(hf_id: str, precision: str, gpu: str = "MI300X") -> ModelProfile:
    return ModelProfile.objects.get(model__hf_id=hf_id, precision__code=precision, gpu_model=gpu,
                                    context_tokens=8192, concurrent_sequences=1)


LLAMA70_INT4 = ("meta-llama/Llama-3.3-70B-Instruct", "int4")     # ~40.7 GiB: QPX
QWEN7_FP16 = ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "fp16")  # ~18 GiB: CPX
LLAMA8_FP16 = ("meta-llama/Llama-3.1-8B-Instruct", "fp16")        # ~19.5 GiB


@pytest.fixture
def fleet(tmp_path, catalog):  # type: ignore[no-untyped-def]
    return [make_emulated_node(tmp_path, f"emu-{i}", gpus=4) for i in (1, 2)]


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)


def run_all_operations() -> None:
    for op in Reconfiguration.objects.filter(state="pending"):
        run_reconfiguration(op.pk, sleep=lambda s: None)


def test_a_deployment_that_fits_is_bound_and_started_with_load(api_client_for, operator, fleet):
    response = api_client_for(operator).post("/api/v1/deployments/", {
        "name": "llama8", "profile": profile(*LLAMA8_FP16).pk, "replicas": 2}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["state"] == "scheduled" and len(body["slots"]) == 2
    # SPX GPUs (192 GiB) hold one replica each: two different GPUs.
    assert len({(s["node"], s["gpu_index"]) for s in body["slots"]}) == 2
    workload = body["workloads"][0]
    assert workload["env"]["ROCR_VISIBLE_DEVICES"] == str(body["slots"][0]["logical_index"])
    assert "--gpu-memory-utilization" in workload["args"]
    for emulated in fleet:
        reconcile_node(node=emulated.node)
    deployment = Deployment.objects.get(name="llama8")
    assert deployment.state == "running"
    slot = body["slots"][0]
    emulated = next(e for e in fleet if e.node.name == slot["node"])
    state = emulated.state.data
    assert state["gpus"][slot["gpu_index"]]["partitions"][0]["load"] > 0
    assert state["gpus"][slot["gpu_index"]]["processes"] == 1


def test_a_deployment_that_needs_a_repartition_gets_409_and_a_plan(api_client_for, operator, fleet):
    response = api_client_for(operator).post("/api/v1/deployments/", {
        "name": "qwen", "profile": profile(*QWEN7_FP16).pk, "replicas": 12}, format="json")
    assert response.status_code == 409, response.json()
    body = response.json()
    assert body["code"] == "unplaceable" and body["detail"]["reasons"]
    plan = body["detail"]["suggested_plan"]
    assert plan and plan["result"]["ok"]
    assert any(c["to_compute"] == "CPX" for c in plan["result"]["gpu_changes"])
    assert not Deployment.objects.exists()


@pytest.mark.parametrize("payload, field", [
    ({"replicas": 0}, "replicas"),
    ({"profile": 999999}, "profile"),
    ({"pin_node": "nope"}, "pin_node"),
    ({"pin_node": "emu-1", "pin_gpu_index": 9}, "pin_gpu_index"),
])
def test_bad_deployment_requests_are_400_and_change_nothing(api_client_for, operator, fleet, payload, field):
    data = {"name": "x", "profile": profile(*LLAMA8_FP16).pk, "replicas": 1, **payload}
    response = api_client_for(operator).post("/api/v1/deployments/", data, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["detail"]
    assert not Deployment.objects.exists()


def test_an_impossible_demand_says_why(api_client_for, operator, fleet):
    response = api_client_for(operator).post("/api/v1/deployments/", {
        "name": "deepseek", "profile": profile("deepseek-ai/DeepSeek-V3", "fp16").pk, "replicas": 1}, format="json")
    assert response.status_code == 409
    assert response.json()["detail"]["reasons"]


def test_the_demo_plan_places_llama70_and_qwen7_with_mode_changes(api_client_for, operator, fleet):
    client = api_client_for(operator)
    response = client.post("/api/v1/plans/", {"demands": [
        {"name": "llama70", "profile": profile(*LLAMA70_INT4).pk, "replicas": 2},
        {"name": "qwen7", "profile": profile(*QWEN7_FP16).pk, "replicas": 12},
    ]}, format="json")
    assert response.status_code == 201, response.json()
    plan = response.json()
    result = plan["result"]
    assert result["ok"] and not result["unplaced"]
    assert {c["to_compute"] for c in result["gpu_changes"]} >= {"CPX"}
    assert result["eta_s"] > 0 and result["steps"]
    assert Reconfiguration.objects.count() == 0  # planning changes nothing

    applied = client.post(f"/api/v1/plans/{plan['id']}/apply/")
    assert applied.status_code == 202, applied.json()
    body = applied.json()
    assert len(body["reconfigurations"]) == len(result["gpu_changes"])
    assert {d["name"] for d in body["deployments"]} == {"llama70", "qwen7"}
    assert all(d["state"] == "pending" for d in body["deployments"])

    run_all_operations()
    assert set(Reconfiguration.objects.values_list("state", flat=True)) == {"succeeded"}
    for emulated in fleet:
        reconcile_node(node=emulated.node)
    llama, qwen = Deployment.objects.get(name="llama70"), Deployment.objects.get(name="qwen7")
    assert (llama.state, qwen.state) == ("running", "running")
    assert llama.slots.count() == 2 and qwen.slots.count() == 12
    # Every replica sits on its own partition of the planned mode, big enough for it; the qwen
    # replicas fill CPX GPUs (and may take the QPX partitions the two llama replicas leave free).
    for deployment in (llama, qwen):
        slots = list(deployment.slots.select_related("partition__gpu"))
        assert len({s.partition_id for s in slots}) == len(slots)
        for slot in slots:
            assert slot.partition.memory_gb >= deployment.profile.memory_required_gb
    assert {s.partition.gpu.compute_mode for s in qwen.slots.select_related("partition__gpu")} <= {"CPX", "QPX"}
    assert "CPX" in {s.partition.gpu.compute_mode for s in qwen.slots.select_related("partition__gpu")}
    assert Plan.objects.get(pk=plan["id"]).state == "applied"
    # Applying twice is refused.
    assert client.post(f"/api/v1/plans/{plan['id']}/apply/").status_code == 409


def test_a_stale_plan_is_refused_with_409_and_changes_nothing(api_client_for, operator, fleet):
    client = api_client_for(operator)
    gpu = GPU.objects.get(node__name="emu-1", index=0)
    plan = client.post("/api/v1/plans/", {"gpus": [{"gpu": gpu.pk, "compute_mode": "CPX"}]}, format="json").json()
    GPU.objects.filter(pk=gpu.pk).update(compute_mode="DPX")  # the fleet moved on
    response = client.post(f"/api/v1/plans/{plan['id']}/apply/")
    assert response.status_code == 409 and "changed since" in response.json()["message"]
    assert not Reconfiguration.objects.exists()
    assert Plan.objects.get(pk=plan["id"]).state == "stale"


def test_what_if_a_gpu_with_a_running_model_goes_cpx(api_client_for, operator, fleet):
    client = api_client_for(operator)
    created = client.post("/api/v1/deployments/", {"name": "big", "profile": profile("meta-llama/Llama-3.3-70B-Instruct", "fp8").pk,
                                                    "replicas": 1}, format="json").json()
    slot = created["slots"][0]
    gpu = GPU.objects.get(node__name=slot["node"], index=slot["gpu_index"])
    plan = client.post("/api/v1/plans/", {"gpus": [{"gpu": gpu.pk, "compute_mode": "CPX"}]}, format="json").json()
    result = plan["result"]
    (displaced,) = result["displaced"]
    assert displaced["deployment"] == "big"
    # 76.8 GiB does not fit a CPX partition; it moves to another whole GPU.
    assert displaced["to"] and displaced["to"][0]["memory_gb"] >= 96
    assert result["blast_radius"] == {slot["node"]: [slot["gpu_index"]]}
    # A whole GPU is free now: the new copy starts first, the old one stops once it runs, then
    # the GPU changes.
    assert displaced["move"] == "make-before-break"
    at = {s["kind"]: s["starts_at_s"] for s in result["steps"]}
    assert at["deploy"] < at["stop"] <= at["set-compute-mode"]


def test_an_nps_plan_has_the_whole_node_as_blast_radius(api_client_for, operator, fleet):
    plan = api_client_for(operator).post("/api/v1/plans/", {"nodes": [{"node": "emu-2", "memory_mode": "NPS4", "compute_mode": "QPX"}]},
                                         format="json").json()
    assert plan["result"]["blast_radius"] == {"emu-2": [0, 1, 2, 3]}
    assert plan["result"]["eta_s"] >= 180
    assert any("reloads the driver" in w for w in plan["result"]["warnings"])


def test_invalid_plan_targets_name_the_valid_choices(api_client_for, operator, fleet):
    response = api_client_for(operator).post("/api/v1/plans/", {"nodes": [{"node": "emu-2", "memory_mode": "NPS4"}]}, format="json")
    assert response.status_code == 400
    assert "valid under NPS4: QPX, CPX" in response.json()["message"]
    assert api_client_for(operator).post("/api/v1/plans/", {}, format="json").status_code == 400


def test_reconfiguring_a_busy_gpu_is_refused_unless_drained(fleet, api_client_for, operator, fast_ops):
    from partitions.services.reconfiguration import request_reconfiguration

    created = api_client_for(operator).post("/api/v1/deployments/", {
        "name": "llama8", "profile": profile(*LLAMA8_FP16).pk, "replicas": 1, "pin_node": "emu-1", "pin_gpu_index": 2}, format="json")
    assert created.status_code == 201, created.json()
    reconcile_node(node=Node.objects.get(name="emu-1"))
    gpu = GPU.objects.get(node__name="emu-1", index=2)
    op = request_reconfiguration(gpu=gpu, compute_mode="CPX")
    assert run_reconfiguration(op.pk, sleep=lambda s: None) == "failed"
    assert "llama8" in Reconfiguration.objects.get(pk=op.pk).error_message
    op = request_reconfiguration(gpu=gpu, compute_mode="CPX", drain=True)
    assert run_reconfiguration(op.pk, sleep=lambda s: None) == "succeeded"
    assert Deployment.objects.get(name="llama8").state == "stopped"
    assert "stopped workloads: llama8" in " ".join(Reconfiguration.objects.get(pk=op.pk).steps.values_list("message", flat=True))


def test_delete_stops_a_deployment_and_frees_its_partitions(api_client_for, operator, viewer, fleet):
    client = api_client_for(operator)
    created = client.post("/api/v1/deployments/", {"name": "llama8", "profile": profile(*LLAMA8_FP16).pk, "replicas": 1},
                          format="json").json()
    assert api_client_for(viewer).delete(f"/api/v1/deployments/{created['id']}/").status_code == 403
    response = client.delete(f"/api/v1/deployments/{created['id']}/")
    assert response.status_code == 200 and response.json()["state"] == "stopped"
    assert not Deployment.objects.get(pk=created["id"]).slots.exists()
    again = client.post("/api/v1/deployments/", {"name": "llama8", "profile": profile(*LLAMA8_FP16).pk, "replicas": 1}, format="json")
    assert again.status_code == 201  # the name is free again once stopped


def test_planned_slots_are_not_bound_on_a_gpu_whose_mode_changed_since(api_client_for, operator, tmp_path, catalog):
    """The plan put the replica on a CPX partition; by the time the agent binds it, another
    operation has made that GPU DPX. Partition 0 exists in DPX too, but it is not what was
    planned: the deployment fails instead of landing on the wrong partition."""
    from partitions.services.reconfiguration import request_reconfiguration

    emulated = make_emulated_node(tmp_path, "emu-1", gpus=1)
    gpu = GPU.objects.get(node=emulated.node, index=0)
    client = api_client_for(operator)
    plan = client.post("/api/v1/plans/", {
        "gpus": [{"gpu": gpu.pk, "compute_mode": "CPX"}],
        "demands": [{"name": "qwen", "profile": profile(*QWEN7_FP16).pk, "replicas": 1}],
    }, format="json").json()
    assert plan["result"]["ok"], plan["result"]
    (assignment,) = plan["result"]["assignments"]
    assert [(s["compute_mode"], s["partition_index"]) for s in assignment["slots"]] == [("CPX", 0)]
    assert client.post(f"/api/v1/plans/{plan['id']}/apply/").status_code == 202
    run_all_operations()
    later = request_reconfiguration(gpu=gpu, compute_mode="DPX")
    assert run_reconfiguration(later.pk, sleep=lambda s: None) == "succeeded"

    reconcile_node(node=emulated.node)
    qwen = Deployment.objects.get(name="qwen")
    assert qwen.state == "failed" and "is DPX, planned CPX" in qwen.state_message
    assert not qwen.slots.exists()


def test_a_running_deployment_that_lost_a_partition_says_degraded(api_client_for, operator, fleet, client):
    from partitions.models import Partition

    client = api_client_for(operator)
    created = client.post("/api/v1/deployments/", {"name": "llama8", "profile": profile(*LLAMA8_FP16).pk, "replicas": 2},
                          format="json").json()
    for emulated in fleet:
        reconcile_node(node=emulated.node)
    assert Deployment.objects.get(name="llama8").state == "running"
    lost = next(s for s in created["slots"] if s["replica"] == 0)
    # What an import that removed the partition does to the rows: the slot goes with it.
    Partition.objects.filter(gpu__node__name=lost["node"], gpu__index=lost["gpu_index"], index=lost["partition_index"]).delete()
    for emulated in fleet:
        reconcile_node(node=emulated.node)

    body = client.get(f"/api/v1/deployments/{created['id']}/").json()
    assert body["state"] == "degraded"
    assert "replica 0" in body["state_message"] and "1 of 2 replicas" in body["state_message"]
    assert [s["replica"] for s in body["slots"]] == [1]
    client.force_login(operator)
    page = client.get("/deployments/?state=degraded").content.decode()
    assert "llama8" in page and "degraded" in page
    # Nothing brings the replica back by itself: it stays degraded, and says so.
    for emulated in fleet:
        reconcile_node(node=emulated.node)
    assert Deployment.objects.get(name="llama8").state == "degraded"


def test_a_deployment_whose_every_replica_lost_its_partition_fails(api_client_for, operator, fleet):
    client = api_client_for(operator)
    created = client.post("/api/v1/deployments/", {"name": "llama8", "profile": profile(*LLAMA8_FP16).pk, "replicas": 1},
                          format="json").json()
    for emulated in fleet:
        reconcile_node(node=emulated.node)
    (slot,) = created["slots"]
    # An import that drops the GPU drops its partitions, and the slot with them.
    GPU.objects.filter(node__name=slot["node"], index=slot["gpu_index"]).delete()
    for emulated in fleet:
        reconcile_node(node=emulated.node)
    deployment = Deployment.objects.get(name="llama8")
    assert deployment.state == "failed" and "replica 0" in deployment.state_message
    assert client.post("/api/v1/deployments/", {"name": "llama8", "profile": profile(*LLAMA8_FP16).pk, "replicas": 1},
                       format="json").status_code == 201  # the name is free again
