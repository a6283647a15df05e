"""The layout editors' refusals (issue 13 §5): each says what is wrong with real values, the
current pair is pre-selected, and applying a plan that moves replicas asks first."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError

from models.models import ModelProfile
from partitions.models import GPU, Node
from partitions.services.reconfiguration import request_reconfiguration
from planning.models import Plan
from planning.services import DemandSpec
from serving.services import create_deployment
from tests.serving.test_safe_actions import classes, element

pytestmark = pytest.mark.django_db

GARBLED = re.compile(r"under\s*[;:(]|:\s*none\b|\(valid: \)")


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)


def _hx_post(client, url: str, data: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post(url, data, HTTP_HX_REQUEST="true")


def _error(response) -> str:  # type: ignore[no-untyped-def]
    found = element(response, "plan-error")
    assert found is not None, response.content.decode()
    return found[1]


def _forget_memory_modes(node: Node) -> None:
    GPU.objects.filter(node=node).update(memory_mode="")
    Node.objects.filter(pk=node.pk).update(memory_mode="")


def _nps4_cpx(node: Node) -> None:
    GPU.objects.filter(node=node).update(memory_mode="NPS4", compute_mode="CPX")
    Node.objects.filter(pk=node.pk).update(memory_mode="NPS4")


# --- the GPU editor ----------------------------------------------------------------------------

def test_an_empty_gpu_preview_asks_for_a_compute_mode(client, operator, emulated):
    client.force_login(operator)
    gpu = GPU.objects.get(node=emulated.node, index=1)
    response = _hx_post(client, f"/fleet/gpus/{gpu.pk}/", {})
    assert response.status_code == 400
    assert _error(response) == "Choose a compute mode for GPU 1 of emu-a."
    assert not Plan.objects.exists()


def test_a_forced_unknown_compute_mode_is_named_with_the_models_modes(client, operator, emulated):
    client.force_login(operator)
    gpu = GPU.objects.get(node=emulated.node, index=1)
    response = _hx_post(client, f"/fleet/gpus/{gpu.pk}/", {"compute_mode": "ZPX"})
    assert response.status_code == 400
    assert _error(response) == "'ZPX' is not a compute mode; MI300X modes: SPX, DPX, QPX, CPX."
    response = _hx_post(client, f"/fleet/gpus/{gpu.pk}/", {"compute_mode": "TPX"})
    assert _error(response) == "MI300X has no TPX mode; compute modes valid under NPS1: SPX, DPX, QPX, CPX."
    assert not Plan.objects.exists()


def test_a_forced_invalid_pair_names_the_memory_mode_and_the_valid_compute_modes(client, operator, emulated):
    client.force_login(operator)
    _nps4_cpx(emulated.node)
    gpu = GPU.objects.get(node=emulated.node, index=0)
    response = _hx_post(client, f"/fleet/gpus/{gpu.pk}/", {"compute_mode": "SPX"})
    assert response.status_code == 400
    assert _error(response) == "SPX is not valid under NPS4 on MI300X; compute modes valid under NPS4: QPX, CPX."
    assert not Plan.objects.exists()


def test_a_gpu_that_reports_no_memory_mode_says_so_instead_of_an_empty_sentence(client, operator, emulated):
    client.force_login(operator)
    _forget_memory_modes(emulated.node)
    gpu = GPU.objects.get(node=emulated.node, index=1)
    page = client.get(f"/fleet/gpus/{gpu.pk}/").content.decode()
    assert "GPU 1 of emu-a reports no memory mode" in page
    assert not GARBLED.search(page), GARBLED.search(page)
    response = _hx_post(client, f"/fleet/gpus/{gpu.pk}/", {"compute_mode": "CPX"})
    assert response.status_code == 400
    error = _error(response)
    assert error.startswith("GPU 1 of emu-a reports no memory mode;") and not GARBLED.search(error), error
    assert not Plan.objects.exists()


def test_a_node_whose_gpus_disagree_on_memory_mode_says_so(client, operator, emulated):
    client.force_login(operator)
    GPU.objects.filter(node=emulated.node, index=0).update(memory_mode="NPS4", compute_mode="CPX")
    Node.objects.filter(pk=emulated.node.pk).update(
        memory_mode="", layout_problem="memory modes differ across the node (GPUs [1] in NPS1; GPUs [0] in NPS4)")
    gpu = GPU.objects.get(node=emulated.node, index=1)
    error = _error(_hx_post(client, f"/fleet/gpus/{gpu.pk}/", {"compute_mode": "CPX"}))
    assert error == ("emu-a reports no node-wide memory mode: memory modes differ across the node "
                     "(GPUs [1] in NPS1; GPUs [0] in NPS4); set one for the whole node first.")


def test_the_service_names_a_gpu_without_a_memory_mode(emulated):
    _forget_memory_modes(emulated.node)
    gpu = GPU.objects.get(node=emulated.node, index=1)
    with pytest.raises(ValidationError) as refused:
        request_reconfiguration(gpu=gpu, compute_mode="CPX")
    message = refused.value.message_dict["compute_mode"][0]
    assert message.startswith("GPU 1 of emu-a reports no memory mode;") and not GARBLED.search(message), message


def test_the_service_names_the_valid_compute_modes_under_the_memory_mode(emulated):
    _nps4_cpx(emulated.node)
    gpu = GPU.objects.get(node=emulated.node, index=0)
    with pytest.raises(ValidationError) as refused:
        request_reconfiguration(gpu=gpu, compute_mode="SPX")
    assert refused.value.message_dict["compute_mode"] == [
        "SPX is not valid under NPS4 on MI300X; compute modes valid under NPS4: QPX, CPX"]


def test_the_service_says_when_the_hardware_reports_no_compute_mode_under_the_memory_mode(emulated):
    gpu = GPU.objects.get(node=emulated.node, index=0)
    # The hardware reports SPX under NPS4 only: nothing at all under the node's NPS1.
    GPU.objects.filter(pk=gpu.pk).update(accelerator_profiles=[{"accelerator_type": "SPX", "memory_caps": ["NPS4"]}])
    gpu.refresh_from_db()
    with pytest.raises(ValidationError) as refused:
        request_reconfiguration(gpu=gpu, compute_mode="CPX")
    message = refused.value.message_dict["compute_mode"][0]
    assert message == "CPX is not valid under NPS1 on MI300X; the hardware reports no compute mode valid under NPS1"


# --- the node editor ---------------------------------------------------------------------------

def test_an_empty_node_preview_asks_for_a_pair(client, operator, emulated):
    client.force_login(operator)
    response = _hx_post(client, "/fleet/nodes/emu-a/", {})
    assert response.status_code == 400
    assert _error(response) == "Choose a memory and compute mode pair for emu-a."
    assert not Plan.objects.exists()


def test_forced_node_pairs_name_what_is_wrong(client, operator, emulated):
    client.force_login(operator)
    url = "/fleet/nodes/emu-a/"
    assert _error(_hx_post(client, url, {"pair": "NPS3:CPX"})) == "'NPS3' is not a memory mode; MI300X memory modes: NPS1, NPS4."
    assert _error(_hx_post(client, url, {"pair": "NPS2:CPX"})) == "MI300X has no NPS2 memory mode; its memory modes: NPS1, NPS4."
    assert _error(_hx_post(client, url, {"pair": "NPS4:ZPX"})) == "'ZPX' is not a compute mode; MI300X modes: SPX, DPX, QPX, CPX."
    assert _error(_hx_post(client, url, {"pair": "NPS4:SPX"})) == (
        "SPX is not valid under NPS4 on MI300X; compute modes valid under NPS4: QPX, CPX.")
    assert not Plan.objects.exists()


# --- the current pair is pre-selected ---------------------------------------------------------

def _checked(html: str, name: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf'<input type="radio" name="{name}" value="([^"]+)"[^>]*\bchecked\b', html)]


def test_the_gpu_editor_pre_selects_the_gpus_compute_mode(client, operator, emulated):
    client.force_login(operator)
    _nps4_cpx(emulated.node)
    gpu = GPU.objects.get(node=emulated.node, index=0)
    assert _checked(client.get(f"/fleet/gpus/{gpu.pk}/").content.decode(), "compute_mode") == ["CPX"]


def test_the_node_editor_pre_selects_the_nodes_memory_mode_and_shared_compute_mode(client, operator, emulated):
    client.force_login(operator)
    assert _checked(client.get("/fleet/nodes/emu-a/").content.decode(), "pair") == ["NPS1:SPX"]
    _nps4_cpx(emulated.node)
    assert _checked(client.get("/fleet/nodes/emu-a/").content.decode(), "pair") == ["NPS4:CPX"]


def test_the_node_editor_pre_selects_nothing_when_its_gpus_differ_in_compute_mode(client, operator, emulated):
    client.force_login(operator)
    GPU.objects.filter(node=emulated.node, index=0).update(compute_mode="DPX")
    html = client.get("/fleet/nodes/emu-a/").content.decode()
    assert _checked(html, "pair") == []


# --- applying from the editor asks first when replicas move ------------------------------------

def _llama8() -> ModelProfile:
    return ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                    gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)


def test_the_editors_apply_button_opens_a_dialog_naming_the_replica_it_moves(client, operator, emulated, catalog):
    create_deployment(spec=DemandSpec(name="llama8", profile=_llama8(), replicas=1, pin_node=emulated.node, pin_gpu_index=0))
    client.force_login(operator)
    gpu = GPU.objects.get(node=emulated.node, index=0)
    page = client.get(f"/fleet/gpus/{gpu.pk}/").content.decode()
    assert "/static/serving/confirm.js" in page and "/static/planning/layout_editor.js" in page
    preview = _hx_post(client, f"/fleet/gpus/{gpu.pk}/", {"compute_mode": "CPX"})
    assert preview.status_code == 200
    button = element(preview, "apply-plan")
    assert button is not None and button[0].get("data-confirm") == "confirm-apply" and "danger" in classes(button)
    dialog = element(preview, "confirm-apply")
    assert dialog is not None and "moves 1 replica" in dialog[1] and "llama8" in dialog[1] and "emu-a" in dialog[1]
    form = element(preview, "apply-form")
    plan = Plan.objects.get()
    assert form is not None and form[0]["action"] == f"/plans/{plan.pk}/apply/"
    assert "{#" not in preview.content.decode()  # no template comment leaks into the page


def test_the_editors_apply_button_is_plain_when_nothing_moves(client, operator, emulated):
    client.force_login(operator)
    gpu = GPU.objects.get(node=emulated.node, index=1)
    preview = _hx_post(client, "/fleet/nodes/emu-a/", {"pair": "NPS4:CPX"})
    assert "primary" in classes(element(preview, "apply-plan"))
    assert element(preview, "confirm-apply") is None
    assert "/static/serving/confirm.js" in client.get(f"/fleet/gpus/{gpu.pk}/").content.decode()
    assert "/static/serving/confirm.js" in client.get("/fleet/nodes/emu-a/").content.decode()
