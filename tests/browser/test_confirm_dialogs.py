"""Confirmation dialogs in a real browser (issue 13 §5): "Stop" opens a native dialog naming
what stops; cancelling changes nothing, confirming stops. The page runs under the console's CSP,
so the dialog only works if its script is a static file."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from models.models import ModelProfile
from planning.services import DemandSpec
from serving.models import Deployment
from serving.services import create_deployment
from tests.browser.conftest import screenshot
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signed_in(signed_in_operator):  # type: ignore[no-untyped-def]
    return signed_in_operator


@pytest.fixture
def deployment(tmp_path, catalog) -> Deployment:  # type: ignore[no-untyped-def]
    make_emulated_node(tmp_path, "emu-1", gpus=2)
    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    return create_deployment(spec=DemandSpec(name="llama8", profile=profile, replicas=1))


def test_stop_asks_first_naming_the_replica_and_its_node(signed_in, live_server, deployment):
    page = signed_in
    url = f"{live_server.url}/deployments/{deployment.pk}/"
    page.goto(url)
    dialog = page.locator("#confirm-stop")
    expect(dialog).to_be_hidden()

    page.click("#stop-deployment")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("1 replica on emu-1")
    assert dialog.evaluate("d => d.open && d.matches(':modal')")
    screenshot(page, "confirm-stop-dialog")

    page.click("#confirm-stop-cancel")
    expect(dialog).to_be_hidden()
    assert page.url == url
    deployment.refresh_from_db()
    assert deployment.is_active

    page.click("#stop-deployment")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    deployment.refresh_from_db()
    assert deployment.is_active

    page.click("#stop-deployment")
    with page.expect_navigation():
        page.click("#confirm-stop-submit")
    expect(page.locator("#deployment-state")).to_have_text("stopped")
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.STOPPED
    assert not page.errors, page.errors


def test_without_javascript_stop_posts_straight_away(browser, live_server, operator, deployment):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("#id_username", "otto")
        page.fill("#id_password", "pw-otto")
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/fleet/")
        page.goto(f"{live_server.url}/deployments/{deployment.pk}/")
        expect(page.locator("#confirm-stop")).to_be_hidden()
        with page.expect_navigation():
            page.click("#stop-deployment")
        deployment.refresh_from_db()
        assert deployment.state == Deployment.State.STOPPED
    finally:
        context.close()
