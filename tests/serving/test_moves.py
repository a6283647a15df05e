"""Plans that move running replicas (issue 11, 3.1), on emulated nodes with the agents'
functions called directly (tests/integration runs a real agent).

Applying a plan keeps the deployment's name and replica count: only the displaced replicas move,
make-before-break when their new partitions exist and are free now (the new copy starts, then
the old one stops), otherwise stop then start; the plan says which."""

from __future__ import annotations

import pytest

from models.models import ModelProfile
from partitions.models import GPU, Reconfiguration
from partitions.reconfigure import run_reconfiguration
from serving import models as serving_models
from serving.models import Deployment
from serving.services import reconcile_node
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db

BIG = ("meta-llama/Llama-3.3-70B-Instruct", "fp16")   # ~149 GiB: one SPX GPU per replica
SMALL = ("meta-llama/Llama-3.1-8B-Instruct", "fp16")  # ~19.5 GiB: fits a CPX partition (24 GiB)


def profile(hf_id: str, precision: str) -> ModelProfile:
    return ModelProfile.objects.get(model__hf_id=hf_id, precision__code=precision, gpu_model="MI300X",
                                    context_tokens=8192, concurrent_sequences=1)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)


@pytest.fixture
def api(api_client_for, operator):  # type: ignore[no-untyped-def]
    return api_client_for(operator)


@pytest.fixture
def pages(client, operator):  # type: ignore[no-untyped-def]
    client.force_login(operator)
    return client


def start_running(api, emulated, name: str, model: tuple[str, str], replicas: int, **extra) -> Deployment:  # type: ignore[no-untyped-def]
    response = api.post("/api/v1/deployments/", {"name": name, "profile": profile(*model).pk, "replicas": replicas,
                                                     "spread": True, **extra}, format="json")
    assert response.status_code == 201, response.json()
    for node in emulated:
        reconcile_node(node=node.node)
    deployment = Deployment.objects.get(name=name)
    assert deployment.state == "running"
    return deployment


def gpu_of(deployment: Deployment, replica: int) -> GPU:
    (slot,) = deployment.slots.filter(replica=replica).select_related("partition__gpu__node")
    return slot.partition.gpu


def where(deployment: Deployment) -> dict[int, list[tuple[str, int, int, str]]]:
    """Replica -> (node, GPU, partition, GPU mode) of its slots, all of them."""
    out: dict[int, list[tuple[str, int, int, str]]] = {}
    for slot in deployment.slots.select_related("partition__gpu__node").order_by("replica", "pk"):
        gpu = slot.partition.gpu
        out.setdefault(slot.replica, []).append((gpu.node.name, gpu.index, slot.partition.index, gpu.compute_mode))
    return out


def plan_cpx(api, gpu: GPU) -> dict:  # type: ignore[no-untyped-def]
    response = api.post("/api/v1/plans/", {"gpus": [{"gpu": gpu.pk, "compute_mode": "CPX"}]}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def run_operations() -> list[str]:
    return [run_reconfiguration(op.pk, sleep=lambda s: None) for op in Reconfiguration.objects.filter(state="pending")]


def processes(emulated, gpu_index: int) -> int:  # type: ignore[no-untyped-def]
    return int(emulated.state.data["gpus"][gpu_index].get("processes", 0))


def test_applying_a_plan_moves_only_the_displaced_replica_and_keeps_the_deployment(api, tmp_path, catalog):
    emulated = make_emulated_node(tmp_path, "emu-1", gpus=4)
    big = start_running(api, [emulated], "big", BIG, 2)
    moving, staying = gpu_of(big, 0), gpu_of(big, 1)
    plan = plan_cpx(api, moving)
    (displaced,) = plan["result"]["displaced"]
    assert (displaced["deployment"], displaced["replica"]) == ("big", 0)
    # Two SPX GPUs are free now: the new copy can start before the old one stops.
    assert displaced["move"] == "make-before-break"

    applied = api.post(f"/api/v1/plans/{plan['id']}/apply/")
    assert applied.status_code == 202, applied.json()
    assert [(d["name"], d["state"]) for d in applied.json()["deployments"]] == [("big", "running")]
    assert run_operations() == ["succeeded"]
    reconcile_node(node=emulated.node)

    assert list(Deployment.objects.values_list("name", "state", "replicas")) == [("big", "running", 2)]
    big.refresh_from_db()
    replicas = where(big)
    assert sorted(replicas) == [0, 1]
    assert replicas[1] == [("emu-1", staying.index, 0, "SPX")]  # the other replica did not move
    (new,) = replicas[0]
    assert new[1] not in (moving.index, staying.index) and new[3] == "SPX"
    assert GPU.objects.get(pk=moving.pk).compute_mode == "CPX"
    assert processes(emulated, moving.index) == 0 and processes(emulated, new[1]) == 1
    move = serving_models.ReplicaMove.objects.get()
    assert (move.deployment_id, move.replica, move.strategy, move.state) == (big.pk, 0, "make_before_break", "done")


def test_make_before_break_starts_the_new_copy_before_the_drain_stops_the_old_one(api, tmp_path, catalog):
    emulated = make_emulated_node(tmp_path, "emu-1", gpus=4)
    big = start_running(api, [emulated], "big", BIG, 2)
    moving = gpu_of(big, 0)
    plan = plan_cpx(api, moving)
    assert api.post(f"/api/v1/plans/{plan['id']}/apply/").status_code == 202

    # Applied, nothing run yet: the deployment still serves both replicas and says what moves.
    body = api.get(f"/api/v1/deployments/{big.pk}/").json()
    assert body["state"] == "running" and "replica 0 moving to emu-1 GPU" in body["state_message"]
    (move,) = body["moves"]
    assert (move["replica"], move["strategy"], move["state"]) == (0, "make_before_break", "starting")
    assert sorted(s["state"] for s in body["slots"] if s["replica"] == 0) == ["active", "retiring"]
    assert [w["replica"] for w in body["workloads"]] == [0, 1]  # one workload per replica, the new copy's

    # The agent runs the reconfiguration first: its drain starts the new copy, then stops the old.
    assert run_operations() == ["succeeded"]
    move = serving_models.ReplicaMove.objects.get()
    assert move.state == "done" and move.started_at is not None and move.started_at <= move.finished_at
    reconcile_node(node=emulated.node)
    big.refresh_from_db()
    assert (big.state, big.slots.count()) == ("running", 2)
    assert "replica 0 moved to emu-1 GPU" in big.state_message
    assert processes(emulated, moving.index) == 0
    op = Reconfiguration.objects.get()
    assert "big" in " ".join(op.steps.values_list("message", flat=True))


def test_the_old_copy_serves_until_the_new_copy_runs_on_another_node(api, tmp_path, catalog):
    one = make_emulated_node(tmp_path, "emu-1", gpus=1)
    two = make_emulated_node(tmp_path, "emu-2", gpus=1)
    big = start_running(api, [one], "big", BIG, 1, pin_node="emu-1")
    assert api.post(f"/api/v1/plans/{plan_cpx(api, gpu_of(big, 0))['id']}/apply/").status_code == 202

    # emu-1's agent sweeps first: the new copy is not running yet, so the old one keeps serving.
    reconcile_node(node=one.node)
    assert processes(one, 0) == 1 and processes(two, 0) == 0
    assert Deployment.objects.get(pk=big.pk).state == "running"
    # emu-2's agent starts the new copy; only then does emu-1's agent stop the old one.
    reconcile_node(node=two.node)
    assert processes(one, 0) == 1 and processes(two, 0) == 1
    reconcile_node(node=one.node)
    assert processes(one, 0) == 0 and processes(two, 0) == 1
    assert where(Deployment.objects.get(pk=big.pk)) == {0: [("emu-2", 0, 0, "SPX")]}
    assert serving_models.ReplicaMove.objects.get().state == "done"
    assert run_operations() == ["succeeded"]  # nothing left to drain on emu-1 GPU 0


def test_a_replica_with_no_free_partition_now_stops_then_starts_and_the_deployment_says_so(api, pages, tmp_path, catalog):
    emulated = make_emulated_node(tmp_path, "emu-1", gpus=2)
    small = start_running(api, [emulated], "small", SMALL, 2)  # spread: one SPX GPU each, none free
    moving, staying = gpu_of(small, 0), gpu_of(small, 1)
    plan = plan_cpx(api, moving)
    (displaced,) = plan["result"]["displaced"]
    # Its only place is a CPX partition of the GPU being changed: it cannot start there first.
    assert displaced["move"] == "stop-then-start" and displaced["to"][0]["gpu_index"] == moving.index
    kinds = [(s["kind"], s["starts_at_s"]) for s in plan["result"]["steps"]]
    assert [k for k, _ in kinds] == ["stop", "set-compute-mode", "deploy"]
    plan_page = pages.get(f"/plans/{plan['id']}/")
    assert "stop then start" in plan_page.content.decode()

    assert api.post(f"/api/v1/plans/{plan['id']}/apply/").status_code == 202
    small.refresh_from_db()
    assert small.state == "running" and "replica 0 will move" in small.state_message
    assert serving_models.ReplicaMove.objects.get().state == "waiting"

    assert run_operations() == ["succeeded"]
    # Drained: replica 0 is stopped and the deployment says it serves 1 of 2 replicas.
    small.refresh_from_db()
    assert small.state == "degraded" and "replica 0" in small.state_message
    assert where(small) == {1: [("emu-1", staying.index, 0, "SPX")]}
    assert serving_models.ReplicaMove.objects.get().state == "stopped"

    reconcile_node(node=emulated.node)
    small.refresh_from_db()
    assert (small.name, small.state, small.replicas) == ("small", "running", 2)
    replicas = where(small)
    assert replicas[1] == [("emu-1", staying.index, 0, "SPX")]
    ((node, gpu_index, _, mode),) = replicas[0]
    assert (gpu_index, mode) == (moving.index, "CPX")
    assert serving_models.ReplicaMove.objects.get().state == "done"
    assert Deployment.objects.count() == 1


def test_the_plan_page_says_make_before_break(api, pages, tmp_path, catalog):
    emulated = make_emulated_node(tmp_path, "emu-1", gpus=4)
    big = start_running(api, [emulated], "big", BIG, 2)
    plan = plan_cpx(api, gpu_of(big, 0))
    steps = plan["result"]["steps"]
    start = next(s for s in steps if s["kind"] == "deploy")
    stop = next(s for s in steps if s["kind"] == "stop")
    change = next(s for s in steps if s["kind"] == "set-compute-mode")
    assert start["starts_at_s"] < stop["starts_at_s"] <= change["starts_at_s"]
    assert "make-before-break" in start["detail"] and "replica 0" in start["detail"]
    assert "make-before-break" in pages.get(f"/plans/{plan['id']}/").content.decode()


def test_a_plain_drain_stops_only_the_replicas_on_the_changed_gpu(api, tmp_path, catalog, fast_ops):
    from partitions.services.reconfiguration import request_reconfiguration

    emulated = make_emulated_node(tmp_path, "emu-1", gpus=2)
    small = start_running(api, [emulated], "small", SMALL, 2)
    moving, staying = gpu_of(small, 0), gpu_of(small, 1)
    op = request_reconfiguration(gpu=moving, compute_mode="CPX", drain=True)
    assert run_reconfiguration(op.pk, sleep=lambda s: None) == "succeeded"
    small.refresh_from_db()
    assert small.state == "degraded" and "replica 0" in small.state_message
    assert where(small) == {1: [("emu-1", staying.index, 0, "SPX")]}
    assert processes(emulated, staying.index) == 1 and processes(emulated, moving.index) == 0


def test_stopping_a_deployment_cancels_its_moves(api, tmp_path, catalog):
    emulated = make_emulated_node(tmp_path, "emu-1", gpus=4)
    big = start_running(api, [emulated], "big", BIG, 2)
    assert api.post(f"/api/v1/plans/{plan_cpx(api, gpu_of(big, 0))['id']}/apply/").status_code == 202
    assert api.delete(f"/api/v1/deployments/{big.pk}/").json()["state"] == "stopped"
    assert serving_models.ReplicaMove.objects.get().state == "cancelled"
    assert not big.slots.exists()
    reconcile_node(node=emulated.node)
    assert all(processes(emulated, i) == 0 for i in range(4))


def test_the_deployments_list_takes_the_same_queries_with_more_deployments_slots_and_moves(api, tmp_path, catalog):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    emulated = make_emulated_node(tmp_path, "emu-1", gpus=8)

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert api.get("/api/v1/deployments/").status_code == 200
        return len(queries)

    big = start_running(api, [emulated], "big", BIG, 2)
    assert api.post(f"/api/v1/plans/{plan_cpx(api, gpu_of(big, 0))['id']}/apply/").status_code == 202
    one = count()
    start_running(api, [emulated], "small", SMALL, 3)
    start_running(api, [emulated], "other", SMALL, 1)
    assert serving_models.ReplicaMove.objects.count() == 1 and Deployment.objects.count() == 3
    assert count() == one
