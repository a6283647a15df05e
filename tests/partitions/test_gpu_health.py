"""Clearing an unhealthy GPU: "mark healthy after check" (API and fleet page), which the
node's agent answers by re-reading the hardware, and a successful operation's read-back."""

from __future__ import annotations

import pytest

from aimconsole.models import AuditEvent
from partitions import operations as ops
from partitions.models import GPU, Reconfiguration
from partitions.reconfigure import run_reconfiguration
from partitions.services.reconfiguration import claim_reconfiguration, mark_gpus_unhealthy, request_reconfiguration
from partitions.tasks import check_gpu_health_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):  # type: ignore[no-untyped-def]
    """Health checks sent to node queues (the agent's task is then called directly)."""
    messages: list[tuple[int, int | None, str]] = []
    monkeypatch.setattr("partitions.dispatch.send_health_check",
                        lambda gpu_id, user_id, node_name: messages.append((gpu_id, user_id, node_name)))
    return messages


def hung_gpu(emulated, index: int = 1) -> GPU:  # type: ignore[no-untyped-def]
    """A GPU left unhealthy by an operation that timed out (CPX requested, SPX before)."""
    op = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=index), compute_mode="CPX")
    claim = claim_reconfiguration(op.pk, worker="w")
    claim.transition(ops.DRAINING, ops.STEP_CLAIMED, "claimed")
    claim.update(previous_layout={"gpus": {str(i): {"compute_mode": "SPX", "memory_mode": "NPS1"} for i in range(2)}})
    claim.transition(ops.APPLYING, ops.STEP_APPLY, "amd-smi set -C CPX")
    claim.transition(ops.FAILED, ops.STEP_DONE, "amd-smi timed out", ok=False, error_code="timeout")
    mark_gpus_unhealthy(node=emulated.node, gpu_indices=[index], reason=f"reconfiguration #{op.pk}: amd-smi timed out")
    return GPU.objects.get(node=emulated.node, index=index)


@pytest.mark.parametrize("role", ["viewer", "norole"])
def test_viewers_cannot_mark_a_gpu_healthy(request, api_client_for, emulated, sent, role):
    gpu = hung_gpu(emulated)
    response = api_client_for(request.getfixturevalue(role)).post(f"/api/v1/gpus/{gpu.pk}/mark-healthy/")
    assert response.status_code == 403
    gpu.refresh_from_db()
    assert (gpu.health, gpu.health_check_requested_at) == ("unhealthy", None) and sent == []


def test_an_operator_asks_the_agent_to_check_and_a_good_read_clears_the_gpu(api_client_for, operator, emulated, sent,
                                                                             django_capture_on_commit_callbacks):
    gpu = hung_gpu(emulated)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for(operator).post(f"/api/v1/gpus/{gpu.pk}/mark-healthy/")
    assert response.status_code == 202, response.json()
    assert response.json()["health"] == "unhealthy" and response.json()["health_check_requested_at"]
    assert sent == [(gpu.pk, operator.pk, "emu-a")]
    assert AuditEvent.objects.filter(action="gpu.health_check.request", actor="otto").exists()

    # On the agent: the hardware reads SPX+NPS1, the layout before the failed operation.
    assert check_gpu_health_task(gpu.pk, operator.pk) == "cleared"
    gpu.refresh_from_db()
    assert (gpu.health, gpu.schedulable, gpu.health_reason, gpu.health_check_requested_at) == ("healthy", True, "", None)
    event = AuditEvent.objects.get(action="gpu.mark_healthy")
    assert event.actor == "otto" and event.before["health"] == "unhealthy" and event.after["health"] == "healthy"
    assert check_gpu_health_task(gpu.pk, operator.pk) == "not cleared"  # a second delivery changes nothing
    assert AuditEvent.objects.filter(action="gpu.mark_healthy").count() == 1


def test_the_check_keeps_the_gpu_unhealthy_when_the_hardware_is_not_at_the_expected_layout(api_client_for, operator,
                                                                                           emulated, sent):
    gpu = hung_gpu(emulated)
    emulated.state.set_modes(compute="CPX")  # the hung change did land: not the layout before it
    assert api_client_for(operator).post(f"/api/v1/gpus/{gpu.pk}/mark-healthy/").status_code == 202
    assert check_gpu_health_task(gpu.pk, operator.pk) == "not cleared"
    gpu.refresh_from_db()
    assert (gpu.health, gpu.schedulable, gpu.health_check_requested_at) == ("unhealthy", False, None)
    assert "the hardware reads CPX+NPS1, expected SPX+NPS1" in gpu.health_reason
    assert AuditEvent.objects.filter(action="gpu.health_check.refused", actor="otto").exists()


def test_a_gpu_that_is_not_unhealthy_has_nothing_to_clear(api_client_for, operator, emulated, sent):
    gpu = GPU.objects.get(node=emulated.node, index=0)
    response = api_client_for(operator).post(f"/api/v1/gpus/{gpu.pk}/mark-healthy/")
    assert response.status_code == 400 and "nothing to clear" in str(response.json())
    assert sent == []


def test_no_check_while_an_operation_holds_the_gpu(api_client_for, operator, emulated, sent, monkeypatch):
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)
    gpu = hung_gpu(emulated)
    op = request_reconfiguration(gpu=gpu, compute_mode="DPX")
    response = api_client_for(operator).post(f"/api/v1/gpus/{gpu.pk}/mark-healthy/")
    assert response.status_code == 409 and response.json()["detail"]["operation"] == op.pk
    assert sent == []


def test_a_successful_operation_clears_the_gpu_it_read_back_at_the_requested_layout(emulated, fast_ops):
    gpu = hung_gpu(emulated, index=1)
    mark_gpus_unhealthy(node=emulated.node, gpu_indices=[0], reason="something else")
    op = request_reconfiguration(gpu=gpu, compute_mode="DPX")
    assert run_reconfiguration(op.pk, sleep=lambda s: None) == ops.SUCCEEDED
    assert "GPUs [1] healthy again" in Reconfiguration.objects.get(pk=op.pk).steps.last().message
    rows = {g.index: g for g in GPU.objects.filter(node=emulated.node)}
    assert (rows[1].health, rows[1].schedulable) == ("healthy", True)
    assert (rows[0].health, rows[0].schedulable) == ("unhealthy", False)  # not this operation's GPU
    assert AuditEvent.objects.filter(action="gpu.mark_healthy", object_id=str(gpu.pk)).exists()


def test_the_fleet_page_offers_operators_the_check_and_refuses_viewers(client, operator, viewer, emulated, sent,
                                                                       django_capture_on_commit_callbacks):
    gpu = hung_gpu(emulated)
    client.force_login(viewer)
    assert f'data-mark-healthy="{gpu.pk}"' not in client.get("/fleet/").content.decode()
    assert client.post("/fleet/", {"gpu": gpu.pk}).status_code == 403
    assert sent == []
    client.force_login(operator)
    assert f'data-mark-healthy="{gpu.pk}"' in client.get("/fleet/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/fleet/", {"gpu": gpu.pk}, follow=True)
    assert response.status_code == 200 and "health check sent" in response.content.decode()
    assert sent == [(gpu.pk, operator.pk, "emu-a")]
    assert 'data-health-check="pending"' in response.content.decode()
