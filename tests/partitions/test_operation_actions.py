"""Recovery actions on an operation's page (issue 13 §5): "Retry with drain" on an operation
refused because workloads use its partitions, and "Restore the previous layout" on a finished
one. Both go through the request services, against the amd-smi emulator through the real
backend; the worker runs in the test (no Celery)."""

from __future__ import annotations

import pytest

from models.models import ModelProfile
from partitions import operations as ops
from partitions.models import GPU, Reconfiguration
from partitions.reconfigure import run_reconfiguration
from partitions.services.reconfiguration import request_reconfiguration
from planning.services import DemandSpec
from serving.models import Deployment
from serving.services import create_deployment
from tests.emulated_nodes import make_emulated_node
from tests.serving.test_safe_actions import classes, element

pytestmark = pytest.mark.django_db


def no_sleep(seconds: float) -> None:
    pass


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)


@pytest.fixture
def emulated(tmp_path, catalog, fast_ops):  # type: ignore[no-untyped-def]
    return make_emulated_node(tmp_path, "emu-1", gpus=2)


def gpu(emulated, index: int) -> GPU:  # type: ignore[no-untyped-def]
    return GPU.objects.get(node=emulated.node, index=index)


def run(op: Reconfiguration) -> Reconfiguration:
    run_reconfiguration(op.pk, sleep=no_sleep)
    op.refresh_from_db()
    return op


@pytest.fixture
def refused(emulated) -> Reconfiguration:  # type: ignore[no-untyped-def]
    """GPU 0 serves a replica; a change to CPX without drain was refused for it."""
    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    create_deployment(spec=DemandSpec(name="llama8", profile=profile, replicas=1, pin_node=emulated.node, pin_gpu_index=0))
    op = run(request_reconfiguration(gpu=gpu(emulated, 0), compute_mode="CPX", reason="more replicas"))
    assert (op.state, op.error_code) == (ops.FAILED, "workloads_present")
    return op


# --- retry with drain ------------------------------------------------------------------------

def test_an_operation_refused_for_workloads_is_retried_with_drain(client, operator, emulated, refused):
    client.force_login(operator)
    page = client.get(f"/operations/{refused.pk}/")
    assert "danger" in classes(element(page, "retry-drain"))
    assert "llama8" in element(page, "confirm-retry-drain-workloads")[1]  # type: ignore[index]

    response = client.post(f"/operations/{refused.pk}/retry-with-drain/")

    retry = Reconfiguration.objects.exclude(pk=refused.pk).get()
    assert response.status_code == 302 and response["Location"] == f"/operations/{retry.pk}/"
    assert (retry.kind, retry.gpu_id, retry.target_compute_mode, retry.drain, retry.state) == (
        "compute", refused.gpu_id, "CPX", True, ops.PENDING)
    assert retry.requested_by == operator and f"#{refused.pk}" in retry.reason
    assert run(retry).state == ops.SUCCEEDED
    assert emulated.state.compute_mode(0) == "CPX"
    assert retry.steps.filter(action=ops.STEP_DRAIN, message__startswith="stopped workloads: llama8").exists()
    assert not Deployment.objects.get(name="llama8").slots.filter(partition__gpu__index=0).exists()


def test_retry_with_drain_is_offered_only_for_a_refusal_for_workloads(client, operator, emulated):
    op = run(request_reconfiguration(gpu=gpu(emulated, 1), compute_mode="CPX"))
    assert op.state == ops.SUCCEEDED
    client.force_login(operator)
    assert element(client.get(f"/operations/{op.pk}/"), "retry-drain") is None
    response = client.post(f"/operations/{op.pk}/retry-with-drain/", follow=True)
    assert response.redirect_chain[-1][0] == f"/operations/{op.pk}/"
    assert "not refused because workloads" in response.content.decode()
    assert Reconfiguration.objects.count() == 1


def test_retry_with_drain_meets_the_request_services_conflicts(client, operator, emulated, refused):
    request_reconfiguration(gpu=gpu(emulated, 0), compute_mode="DPX")  # in flight on the same GPU
    client.force_login(operator)
    response = client.post(f"/operations/{refused.pk}/retry-with-drain/", follow=True)
    assert response.redirect_chain[-1][0] == f"/operations/{refused.pk}/"
    assert "in progress" in response.content.decode()
    assert Reconfiguration.objects.count() == 2


def test_a_viewer_may_not_retry_with_drain(client, viewer, refused):
    client.force_login(viewer)
    assert element(client.get(f"/operations/{refused.pk}/"), "retry-drain") is None
    assert client.post(f"/operations/{refused.pk}/retry-with-drain/").status_code == 403
    assert Reconfiguration.objects.count() == 1


# --- restore the previous layout ---------------------------------------------------------------

def test_a_finished_gpu_change_is_undone_by_restoring_its_previous_compute_mode(client, operator, emulated):
    op = run(request_reconfiguration(gpu=gpu(emulated, 1), compute_mode="CPX"))
    assert op.previous_layout["gpus"]["1"]["compute_mode"] == "SPX"
    client.force_login(operator)
    button = element(client.get(f"/operations/{op.pk}/"), "restore-layout")
    assert "primary" in classes(button) and button is not None and "SPX" in button[1]

    response = client.post(f"/operations/{op.pk}/restore/")

    restore = Reconfiguration.objects.exclude(pk=op.pk).get()
    assert response.status_code == 302 and response["Location"] == f"/operations/{restore.pk}/"
    assert (restore.kind, restore.gpu_id, restore.target_compute_mode, restore.drain) == ("compute", op.gpu_id, "SPX", False)
    assert run(restore).state == ops.SUCCEEDED
    assert emulated.state.compute_mode(1) == "SPX"


def test_restore_is_refused_when_the_previous_layout_is_the_current_one(client, operator, emulated):
    op = run(request_reconfiguration(gpu=gpu(emulated, 1), compute_mode="CPX"))
    run(request_reconfiguration(gpu=gpu(emulated, 1), compute_mode="SPX"))  # already put back by hand
    client.force_login(operator)
    page = client.get(f"/operations/{op.pk}/")
    assert element(page, "restore-layout") is None
    note = element(page, "restore-note")
    assert note is not None and "already" in note[1]

    response = client.post(f"/operations/{op.pk}/restore/", follow=True)

    assert response.redirect_chain[-1][0] == f"/operations/{op.pk}/"
    assert "emu-1/gpu1 is already in SPX, its layout before operation" in response.content.decode()
    assert Reconfiguration.objects.count() == 2


def test_a_finished_node_change_is_undone_by_restoring_its_previous_memory_mode(client, operator, emulated):
    op = run(request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="CPX"))
    assert op.state == ops.SUCCEEDED and emulated.state.memory_mode() == "NPS4"
    client.force_login(operator)
    assert "NPS1" in element(client.get(f"/operations/{op.pk}/"), "restore-layout")[1]  # type: ignore[index]

    response = client.post(f"/operations/{op.pk}/restore/")

    restore = Reconfiguration.objects.exclude(pk=op.pk).get()
    assert response["Location"] == f"/operations/{restore.pk}/"
    assert (restore.kind, restore.target_memory_mode, restore.target_compute_mode) == ("memory", "NPS1", "SPX")
    assert run(restore).state == ops.SUCCEEDED
    assert (emulated.state.memory_mode(), emulated.state.compute_mode(0)) == ("NPS1", "SPX")


def test_an_operation_still_running_offers_neither_action(client, operator, emulated):
    op = request_reconfiguration(gpu=gpu(emulated, 1), compute_mode="CPX")
    client.force_login(operator)
    page = client.get(f"/operations/{op.pk}/")
    assert element(page, "restore-layout") is None and element(page, "retry-drain") is None
    response = client.post(f"/operations/{op.pk}/restore/", follow=True)
    assert "has not finished" in response.content.decode()
    assert Reconfiguration.objects.count() == 1


def test_a_viewer_may_not_restore(client, viewer, emulated):
    op = run(request_reconfiguration(gpu=gpu(emulated, 1), compute_mode="CPX"))
    client.force_login(viewer)
    assert element(client.get(f"/operations/{op.pk}/"), "restore-layout") is None
    assert client.post(f"/operations/{op.pk}/restore/").status_code == 403
    assert Reconfiguration.objects.count() == 1
