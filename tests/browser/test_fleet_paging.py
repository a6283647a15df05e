"""The fleet page's paging and search in a real browser, on the real ASGI console (daphne,
Redis channel layer): pages and searches without a reload keep the URL in step (so reloads and
links land on the same page), the plain links work without JavaScript, and a fleet-wide change
refetches only what the page shows, not one card per node of the fleet."""

from __future__ import annotations

import pytest
from django.utils import timezone

from partitions.models import Node
from partitions.simulation import fleet_spec, replace_simulated_nodes
from tests.browser.conftest import screenshot, sign_in
from tests.browser.test_fleet_live import evaluate, in_thread
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]

SHOWN = "Array.from(document.querySelectorAll('#fleet-nodes section.node')).map((s) => s.dataset.node)"


def names(count: int) -> list[str]:
    spec = fleet_spec(nodes=count, prefix="sim-", compute_mode="SPX")
    replace_simulated_nodes(spec)
    Node.objects.update(agent_heartbeat_at=timezone.now())
    return spec.names


def test_paging_and_search_without_a_reload_keep_the_url(browser, console, viewer):
    fleet = names(25)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, console, "vera", "pw-vera")
    assert evaluate(page, SHOWN) == fleet[:10]
    evaluate(page, "window.notReloaded = true")

    page.click("#fleet-page nav[data-pager=top] a[data-page=next]")
    wait_for(lambda: evaluate(page, SHOWN) == fleet[10:20], 10, "the second page")
    assert page.url.endswith(f"/fleet/?after={fleet[9]}") and evaluate(page, "window.notReloaded === true")
    page.go_back()
    wait_for(lambda: evaluate(page, SHOWN) == fleet[:10], 10, "back on the first page")

    page.fill("#fleet-filters input[name=node]", "sim-002")
    page.click("#fleet-filters button[type=submit]")
    wait_for(lambda: evaluate(page, SHOWN) == fleet[20:25], 10, "the search's nodes")
    assert "node=sim-002" in page.url and evaluate(page, "window.notReloaded === true")
    assert "5 nodes match" in page.inner_text("#fleet-totals")
    page.reload()
    assert evaluate(page, SHOWN) == fleet[20:25]  # the URL kept the search
    screenshot(page, "fleet-search")
    assert errors == [], errors
    context.close()


def test_the_pager_works_without_javascript(browser, console, viewer):
    fleet = names(12)
    context = browser.new_context(viewport={"width": 1400, "height": 900}, java_script_enabled=False)
    page = context.new_page()
    sign_in(page, console, "vera", "pw-vera")
    page.click("#fleet-page nav[data-pager=top] a[data-page=next]")
    page.wait_for_url(f"**/fleet/?after={fleet[9]}")
    assert evaluate(page, SHOWN) == fleet[10:]
    context.close()


def test_a_fleet_wide_change_refetches_only_the_page_shown(browser, console, viewer, redis_layer):  # noqa: F811
    from partitions import events

    fleet = names(40)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    sign_in(page, console, "vera", "pw-vera")
    wait_for(lambda: evaluate(page, "document.getElementById('live-status').dataset.state === 'live'"), 20, "fleet live")
    page.wait_for_timeout(1500)  # "live" is the first socket's; let /ws/fleet/ join its group too
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url) if "/fleet/" in request.url else None)

    def change_everything() -> None:
        for name in fleet:  # e.g. a fleet-wide drain: every node changed
            events.publish_fleet_changed(name)

    in_thread(change_everything)
    # wait_for_timeout lets Playwright deliver the request events meanwhile.
    wait_for(lambda: page.wait_for_timeout(100) or requests, 15, "the page's refetch")
    page.wait_for_timeout(2000)  # the rest of the burst (the socket coalesces it into messages 0.5 s apart)
    cards = [url.split("/fleet/node/")[1].split("/")[0] for url in requests if "/fleet/node/" in url]
    assert set(cards) <= set(fleet[:10]), cards  # only cards on the page shown
    # Each message names the nodes changed since the last one: a node's card when a few of the
    # page's changed, the page's results in one GET when more did. Never one GET per node.
    assert len(cards) == len(set(cards)) and len(requests) <= 10, requests
    assert evaluate(page, SHOWN) == fleet[:10]
    context.close()
