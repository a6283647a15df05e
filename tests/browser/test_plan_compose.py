"""Composing a what-if plan in a real browser (issue 13 §4): add rows (in place, with the page's
script), preview, see the plan; an invalid row shows its error next to it; no script errors or
CSP refusals. Also without JavaScript: "Add a GPU row" posts the form back with one more row."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from models.models import ModelProfile
from planning.models import Plan
from tests.browser.conftest import screenshot
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)


@pytest.fixture
def nodes(tmp_path, catalog):  # type: ignore[no-untyped-def]
    return [make_emulated_node(tmp_path, name, gpus=2).node for name in ("emu-a", "emu-b")]


def small_profile() -> ModelProfile:
    return ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                    gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)


def test_compose_rows_preview_and_see_the_plan(signed_in_operator, live_server, nodes):
    page = signed_in_operator
    page.goto(f"{live_server.url}/plans/new/")
    page.click("button[data-add=gpu]")
    page.fill("input[name=gpu-0-gpu]", "emu-a/1")
    page.select_option("select[name=gpu-0-compute_mode]", "CPX")
    page.click("button[data-add=node]")
    page.fill("input[name=node-0-node]", "emu-b")
    page.select_option("select[name=node-0-memory_mode]", "NPS4")
    page.select_option("select[name=node-0-compute_mode]", "CPX")
    page.fill("input[name=demand-0-name]", "chat")
    page.select_option("select[name=demand-0-profile]", str(small_profile().pk))
    page.fill("input[name=demand-0-replicas]", "3")
    page.select_option("select[name=demand-0-spread]", "soft")
    assert Plan.objects.count() == 0  # adding rows did not post
    page.click("#preview-plan")
    plan = page.locator("#plan")
    expect(plan).to_contain_text("What-if plan #")
    expect(plan).to_contain_text("NPS1 → NPS4")
    expect(plan).to_contain_text("SPX → CPX")
    screenshot(page, "plan-compose-preview")
    saved = Plan.objects.get()
    assert saved.request["demands"][0]["spread"] == "soft"
    assert page.locator("#apply-plan").is_visible()
    assert not page.errors, page.errors


def test_an_invalid_row_shows_its_error_inline(signed_in_operator, live_server, nodes):
    page = signed_in_operator
    page.goto(f"{live_server.url}/plans/new/")
    page.click("button[data-add=gpu]")
    page.click("button[data-add=gpu]")
    page.fill("input[name=gpu-0-gpu]", "emu-a/0")
    page.select_option("select[name=gpu-0-compute_mode]", "QPX")
    page.fill("input[name=gpu-1-gpu]", "emu-a/9")
    page.select_option("select[name=gpu-1-compute_mode]", "CPX")
    page.fill("input[name=demand-0-name]", "")
    page.click("#preview-plan")
    bad = page.locator('[data-row="gpu-1"] .row-errors')
    expect(bad).to_contain_text("emu-a has no GPU 9")
    assert page.locator('[data-row="gpu-0"] .row-errors').count() == 0
    assert page.locator('input[name="gpu-0-gpu"]').input_value() == "emu-a/0"  # what was typed is kept
    assert Plan.objects.count() == 0
    screenshot(page, "plan-compose-error")
    assert not page.errors, page.errors


def test_rows_are_added_without_javascript(browser, live_server, operator, nodes):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("#id_username", "otto")
        page.fill("#id_password", "pw-otto")
        page.click("button[type=submit]")
        page.goto(f"{live_server.url}/plans/new/")
        page.click("button[data-add=gpu]")
        page.fill("input[name=gpu-0-gpu]", "emu-a/1")
        page.select_option("select[name=gpu-0-compute_mode]", "CPX")
        page.fill("input[name=demand-0-name]", "")
        page.click("#preview-plan")
        expect(page.locator("#plan")).to_contain_text("SPX → CPX")
    finally:
        context.close()
