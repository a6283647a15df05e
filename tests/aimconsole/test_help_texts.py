"""The deployment form and the fleet page explain their terms: priority, spread (a hard rule:
one replica per GPU), "free now" and a partition's logical index (issue 13, 7)."""

from __future__ import annotations

import re

import pytest

from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db


def help_for(page: str, marker: str) -> str:
    """The <small class="help"> that follows ``marker`` in the same <label>."""
    start = page.index(marker)
    label = page[start:page.index("</label>", start)]
    found = re.search(r'<small class="help[^"]*">(.*?)</small>', label, re.S)
    assert found, label
    return found.group(1)


@pytest.fixture
def node(tmp_path, catalog):  # type: ignore[no-untyped-def]
    return make_emulated_node(tmp_path, "emu-1", gpus=1)


def test_the_form_states_the_spread_rule(client, operator, node):
    client.force_login(operator)
    page = client.get("/deployments/new/").content.decode()
    spread = help_for(page, 'name="spread"')
    assert "hard rule" in spread and "one replica per GPU" in spread


def test_the_form_explains_priority_and_free_now(client, operator, node):
    client.force_login(operator)
    page = client.get("/deployments/new/").content.decode()
    assert "higher" in help_for(page, 'name="priority"').lower()
    assert "free now" in help_for(page, 'name="profile"').lower()


def test_the_fleet_page_explains_the_logical_index(client, viewer, node):
    client.force_login(viewer)
    page = client.get("/fleet/").content.decode()
    assert re.search(r'<span class="pl" title="[^"]*logical index[^"]*"', page, re.I)
