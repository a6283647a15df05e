"""A person signs in and reads the catalog and the nodes, in a real browser."""

from __future__ import annotations

import pytest

from tests.browser.conftest import screenshot

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signed_in(page, live_server, catalog, viewer):  # type: ignore[no-untyped-def]
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "vera")
    page.fill("#id_password", "pw-vera")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/fleet/")
    page.click("nav >> text=Catalog")
    page.wait_for_url(f"{live_server.url}/catalog/")
    return page


def test_sign_in_lands_on_the_catalog_with_the_fit_matrix(signed_in):
    page = signed_in
    assert page.locator("h1").inner_text() == "Model catalog"
    assert page.locator("#fit-matrix tbody tr").count() == 37
    row = page.locator("#fit-matrix tbody tr", has_text="deepseek-ai/DeepSeek-V3-0324")
    assert "× GPU" in row.inner_text()
    assert page.locator(".whoami .role").inner_text().lower() == "viewer"
    screenshot(page, "catalog")


def test_search_and_gpu_switch(signed_in):
    page = signed_in
    page.fill("form.filters input[name=q]", "llama-3.3")  # the catalog's filter, not the header's console search
    page.select_option("select[name=gpu]", "MI325X")
    page.click("form.filters button")
    rows = page.locator("#fit-matrix tbody tr")
    assert rows.count() == 1
    assert "SPX" in rows.first.inner_text()  # 149 GiB fp16 fits only a whole GPU


def test_nodes_page_labels_emulated_nodes(signed_in, live_server):
    from partitions.backends.simulated import SimulatedFleet
    from partitions.models import Node
    from partitions.services import sync_inventory

    fleet = SimulatedFleet(nodes=1, gpu_count=2, prefix="sim-")
    backend = fleet.backend("sim-0000")
    backend.set_compute_mode([1], "CPX")
    node = Node.objects.create(name="sim-0000", backend=Node.Backend.SIMULATED, emulated=True)
    sync_inventory(node=node, inventory=backend.inventory())
    page = signed_in
    page.click("nav >> text=Fleet")
    card = page.locator("#node-sim-0000")
    assert card.locator(".badge", has_text="emulated").is_visible()
    assert card.locator(".gpu").count() == 2
    assert card.locator(".gpu").nth(1).locator(".part").count() == 8
    assert page.locator("a.button", has_text="Memory mode").count() == 0  # a viewer gets no action buttons
    screenshot(page, "fleet-viewer")
