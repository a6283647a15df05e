"""The layout editors in a real browser (issue 13 §5): htmx drops 4xx answers unless told
otherwise, so a refused preview must still show its reason; and applying a plan that moves a
replica opens the confirmation dialog first. The pages run under the console's CSP."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from models.models import ModelProfile
from partitions.models import GPU, Reconfiguration
from planning.models import Plan
from planning.services import DemandSpec
from serving.services import create_deployment
from tests.browser.conftest import screenshot
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)


@pytest.fixture
def signed_in(signed_in_operator):  # type: ignore[no-untyped-def]
    return signed_in_operator


@pytest.fixture
def node(tmp_path, catalog):  # type: ignore[no-untyped-def]
    return make_emulated_node(tmp_path, "emu-1", gpus=2).node


def test_a_refused_gpu_preview_shows_its_reason(signed_in, live_server, node):
    page = signed_in
    gpu = GPU.objects.get(node=node, index=1)
    page.goto(f"{live_server.url}/fleet/gpus/{gpu.pk}/")
    slot = page.locator("#plan-slot")

    # A forced value the page never offers (as a hand-edited form would send).
    page.evaluate("document.querySelector('input[name=compute_mode]:checked').value = 'ZPX'")
    page.click("#preview-plan")
    expect(slot.locator("#plan-error")).to_have_text("'ZPX' is not a compute mode; MI300X modes: SPX, DPX, QPX, CPX.")
    screenshot(page, "gpu-editor-refused")

    # No mode at all.
    page.evaluate("document.querySelectorAll('input[name=compute_mode]').forEach(i => { i.checked = false; })")
    page.click("#preview-plan")
    expect(slot.locator("#plan-error")).to_have_text("Choose a compute mode for GPU 1 of emu-1.")
    assert not Plan.objects.exists()
    assert not page.errors, page.errors


def test_a_refused_node_preview_shows_its_reason(signed_in, live_server, node):
    page = signed_in
    page.goto(f"{live_server.url}/fleet/nodes/emu-1/")
    page.evaluate("document.querySelector('input[name=pair]:checked').value = 'NPS4:SPX'")
    page.click("#preview-plan")
    expect(page.locator("#plan-slot #plan-error")).to_have_text(
        "SPX is not valid under NPS4 on MI300X; compute modes valid under NPS4: QPX, CPX.")
    assert not Plan.objects.exists()
    assert not page.errors, page.errors


def test_applying_from_the_editor_asks_first_when_the_plan_moves_a_replica(signed_in, live_server, node):
    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    create_deployment(spec=DemandSpec(name="llama8", profile=profile, replicas=1, pin_node=node, pin_gpu_index=0))
    page = signed_in
    gpu = GPU.objects.get(node=node, index=0)
    url = f"{live_server.url}/fleet/gpus/{gpu.pk}/"
    page.goto(url)
    page.check("input[value=CPX]")
    page.click("#preview-plan")
    page.locator("#plan").wait_for()
    dialog = page.locator("#confirm-apply")
    expect(dialog).to_be_hidden()

    page.click("#apply-plan")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("moves 1 replica")
    expect(dialog).to_contain_text("llama8")
    assert dialog.evaluate("d => d.open && d.matches(':modal')")
    screenshot(page, "gpu-editor-confirm-apply")

    page.click("#confirm-apply-cancel")
    expect(dialog).to_be_hidden()
    assert page.url == url
    assert Plan.objects.get().state == Plan.State.DRAFT and not Reconfiguration.objects.exists()

    page.click("#apply-plan")
    with page.expect_navigation():
        page.click("#confirm-apply-submit")
    assert Plan.objects.get().state != Plan.State.DRAFT
    assert Reconfiguration.objects.filter(gpu=gpu, target_compute_mode="CPX").exists()
    assert not page.errors, page.errors
