"""Reconfiguration API: 202 with the operation, 409 naming the one in progress, 400 before
anything is queued, operators and admins only; the operations WebSocket."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator

from partitions.models import GPU, Reconfiguration
from partitions.services.reconfiguration import enqueue as ENQUEUE

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):  # type: ignore[no-untyped-def]
    """Record enqueues instead of talking to a broker (the integration tests use a real one)."""
    sent: list[int] = []
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: sent.append(pk) or True)
    return sent


def test_operator_requests_a_compute_change(api_client_for, operator, emulated, django_capture_on_commit_callbacks, no_broker):
    gpu = GPU.objects.get(node=emulated.node, index=0)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for(operator).post(f"/api/v1/gpus/{gpu.pk}/reconfigure/",
                                                 {"compute_mode": "CPX", "reason": "pack small models"}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["state"] == "pending" and body["target"] == "emu-a/gpu0 → CPX"
    assert body["steps"][0]["action"] == "enqueued"
    assert body["websocket"] == f"/ws/operations/{body['id']}/"
    assert body["requested_by"] == "otto"
    assert no_broker == [body["id"]]


def test_second_request_gets_409_naming_the_operation(api_client_for, operator, emulated):
    gpu = GPU.objects.get(node=emulated.node, index=0)
    client = api_client_for(operator)
    first = client.post(f"/api/v1/gpus/{gpu.pk}/reconfigure/", {"compute_mode": "CPX"}, format="json").json()
    response = client.post(f"/api/v1/gpus/{gpu.pk}/reconfigure/", {"compute_mode": "DPX"}, format="json")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "conflict"
    assert f"operation #{first['id']}" in body["message"]
    assert body["detail"]["operation"] == first["id"]
    assert Reconfiguration.objects.count() == 1


@pytest.mark.parametrize(
    "payload, text",
    [
        ({"compute_mode": "TPX"}, "valid under NPS1: SPX, DPX, QPX, CPX"),
        ({"compute_mode": ""}, "compute_mode"),
        ({}, "compute_mode"),
        ({"compute_mode": "CPX", "memory_mode": "NPS4"}, "node-wide"),
    ],
)
def test_invalid_gpu_targets_are_400_and_queue_nothing(api_client_for, operator, emulated, payload, text, no_broker):
    gpu = GPU.objects.get(node=emulated.node, index=0)
    response = api_client_for(operator).post(f"/api/v1/gpus/{gpu.pk}/reconfigure/", payload, format="json")
    assert response.status_code == 400
    assert text in str(response.json())
    assert not Reconfiguration.objects.exists() and no_broker == []


def test_node_nps_change(api_client_for, admin_user, emulated):
    client = api_client_for(admin_user)
    bad = client.post(f"/api/v1/nodes/{emulated.node.name}/reconfigure/", {"memory_mode": "NPS4"}, format="json")
    assert bad.status_code == 400 and "QPX, CPX" in bad.json()["message"]
    response = client.post(f"/api/v1/nodes/{emulated.node.name}/reconfigure/",
                           {"memory_mode": "NPS4", "compute_mode": "CPX"}, format="json")
    assert response.status_code == 202
    assert response.json()["kind"] == "memory"
    # Any GPU of the node is now blocked by the NPS change.
    gpu = GPU.objects.get(node=emulated.node, index=1)
    blocked = client.post(f"/api/v1/gpus/{gpu.pk}/reconfigure/", {"compute_mode": "DPX"}, format="json")
    assert blocked.status_code == 409


def test_a_node_request_in_its_current_memory_mode_is_compute_changes_per_gpu_without_a_reload(
        api_client_for, operator, emulated, django_capture_on_commit_callbacks, no_broker, fast_ops):
    from partitions.reconfigure import run_reconfiguration

    GPU.objects.filter(node=emulated.node, index=1).update(compute_mode="CPX")  # already there: left alone
    emulated.state.set_modes(compute="SPX")
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for(operator).post(f"/api/v1/nodes/{emulated.node.name}/reconfigure/",
                                                 {"memory_mode": "NPS1", "compute_mode": "CPX"}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert [(r["kind"], r["gpu_index"], r["target_compute_mode"], r["target_memory_mode"]) for r in body["reconfigurations"]] == [
        ("compute", 0, "CPX", "")]
    assert "no memory change" in body["message"]
    assert no_broker == [r["id"] for r in body["reconfigurations"]]
    for op in body["reconfigurations"]:
        assert run_reconfiguration(op["id"], sleep=lambda s: None) == "succeeded"
    assert emulated.state.compute_mode(0) == "CPX"
    assert emulated.calls("reset") == [] and [c for c in emulated.calls("set") if "-M" in c["args"]] == []


def test_a_node_request_for_the_layout_it_already_has_queues_nothing(api_client_for, operator, emulated, no_broker):
    response = api_client_for(operator).post(f"/api/v1/nodes/{emulated.node.name}/reconfigure/",
                                             {"memory_mode": "NPS1"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["reconfigurations"] == [] and "nothing to change" in response.json()["message"]
    assert not Reconfiguration.objects.exists() and no_broker == []


def test_the_operation_shows_when_it_was_last_sent(api_client_for, operator, emulated, django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr("partitions.dispatch.send_reconfiguration", lambda pk, node_name: None)
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", ENQUEUE)  # the real one, to a stand-in broker
    gpu = GPU.objects.get(node=emulated.node, index=0)
    client = api_client_for(operator)
    with django_capture_on_commit_callbacks(execute=True):
        op = client.post(f"/api/v1/gpus/{gpu.pk}/reconfigure/", {"compute_mode": "CPX"}, format="json").json()
    assert op["enqueued_at"] is None  # answered before the on-commit send
    detail = client.get(f"/api/v1/reconfigurations/{op['id']}/").json()
    assert detail["enqueued_at"] is not None
    assert detail["enqueued_at"] == Reconfiguration.objects.get(pk=op["id"]).enqueued_at.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("role", ["viewer", "norole"])
def test_viewers_cannot_reconfigure(request, api_client_for, emulated, role):
    gpu = GPU.objects.get(node=emulated.node, index=0)
    client = api_client_for(request.getfixturevalue(role))
    assert client.post(f"/api/v1/gpus/{gpu.pk}/reconfigure/", {"compute_mode": "CPX"}, format="json").status_code == 403
    assert client.post(f"/api/v1/nodes/{emulated.node.name}/reconfigure/", {"memory_mode": "NPS4"}, format="json").status_code == 403
    assert not Reconfiguration.objects.exists()


def test_operations_list_filters_and_detail(api_client_for, operator, viewer, emulated, django_assert_max_num_queries):
    client = api_client_for(operator)
    for index, mode in ((0, "CPX"), (1, "DPX")):
        gpu = GPU.objects.get(node=emulated.node, index=index)
        client.post(f"/api/v1/gpus/{gpu.pk}/reconfigure/", {"compute_mode": mode}, format="json")
    reader = api_client_for(viewer)
    with django_assert_max_num_queries(5):
        listing = reader.get("/api/v1/reconfigurations/", {"node": "emu-a", "state": "pending"})
    assert listing.json()["count"] == 2
    gpu1 = GPU.objects.get(node=emulated.node, index=1)
    only = reader.get("/api/v1/reconfigurations/", {"gpu": gpu1.pk}).json()
    assert [r["target_compute_mode"] for r in only["results"]] == ["DPX"]
    detail = reader.get(f"/api/v1/reconfigurations/{only['results'][0]['id']}/").json()
    assert {"id", "state", "steps"} <= set(detail)


def test_gpu_objects_carry_their_partitions(api_client_for, viewer, emulated):
    body = api_client_for(viewer).get("/api/v1/gpus/", {"node": "emu-a"}).json()
    gpu = body["results"][0]
    assert {"id", "node", "index", "compute_mode", "memory_mode", "emulated", "partitions"} <= set(gpu)
    assert gpu["emulated"] is True and len(gpu["partitions"]) == 1


# --- WebSocket --------------------------------------------------------------------------------

def _communicator(path: str, user=None):  # type: ignore[no-untyped-def]
    from aimconsole.asgi import application

    communicator = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
    if user is not None:
        communicator.scope["user"] = user
    return communicator


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_operations_websocket_sends_a_snapshot_then_steps(operator, emulated):
    from asgiref.sync import sync_to_async

    from partitions import operations as ops
    from partitions.services.reconfiguration import claim_reconfiguration, request_reconfiguration

    gpu = await sync_to_async(GPU.objects.get)(node=emulated.node, index=0)
    op = await sync_to_async(request_reconfiguration)(gpu=gpu, compute_mode="CPX")
    communicator = _communicator(f"/ws/operations/{op.pk}/", operator)
    connected, _ = await communicator.connect()
    assert connected
    snapshot = await communicator.receive_json_from()
    assert snapshot["type"] == "operation.snapshot"
    assert snapshot["operation"]["state"] == "pending" and [s["action"] for s in snapshot["steps"]] == ["enqueued"]

    def claim_and_step() -> None:
        claim = claim_reconfiguration(op.pk, worker="w")
        claim.transition(ops.DRAINING, ops.STEP_CLAIMED, "claimed by w")

    await sync_to_async(claim_and_step)()
    event = await communicator.receive_json_from(timeout=5)
    assert event["type"] == "operation.step"
    assert event["step"]["action"] == "claimed" and event["operation"]["state"] == "draining"
    await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_operations_websocket_refuses_anonymous_users_and_foreign_origins(operator, emulated):
    from aimconsole.asgi import application
    from tests.wsutil import outcome

    assert await outcome(_communicator("/ws/operations/1/")) == 4401
    foreign = WebsocketCommunicator(application, "/ws/operations/1/", headers=[(b"origin", b"http://evil.example"), (b"host", b"localhost")])
    foreign.scope["user"] = operator
    connected, _ = await foreign.connect()
    assert not connected
