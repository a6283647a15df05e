"""An operator repartitions an emulated GPU in a real browser and watches it happen live
(daphne + a real node agent + Redis + the amd-smi emulator)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot, sign_in
from tests.emulated_nodes import make_emulated_node

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]


def test_operator_switches_a_gpu_to_cpx_and_watches_it(page, console, start_agent, operator, tmp_path):
    emulated = make_emulated_node(tmp_path, "emu-ui", gpus=2)
    start_agent("emu-ui", env={**console.env})
    sign_in(page, console, "otto", "pw-otto")
    card = page.locator("#node-emu-ui")
    assert card.locator(".badge", has_text="emulated").is_visible()
    assert card.locator(".gpu").count() == 2
    page.wait_for_selector("#live-status[data-state=live]")
    screenshot(page, "fleet-operator")

    card.locator(".gpu").nth(1).locator("a", has_text="GPU 1").click()
    assert page.locator("input[value=TPX]").is_disabled()
    page.check("input[value=CPX]")
    page.click("#preview-plan")
    plan = page.locator("#plan")
    plan.wait_for()
    assert "SPX → CPX" in plan.inner_text() and "24 GiB" in plan.inner_text()
    screenshot(page, "layout-editor-plan")

    page.click("#apply-plan")
    page.wait_for_url("**/operations/*/")
    expect(page.locator("#op-state")).to_have_text("Succeeded", timeout=60_000)
    assert page.locator("#op-progress").get_attribute("data-state") == "succeeded"
    assert page.locator("#op-steps li").count() >= 5
    expect(page.locator("#op-layout .part")).to_have_count(8, timeout=10_000)
    screenshot(page, "operation-succeeded")
    assert emulated.state.compute_mode(1) == "CPX"

    page.goto(f"{console.url}/fleet/")
    assert page.locator("#node-emu-ui .gpu").nth(1).locator(".part").count() == 8
