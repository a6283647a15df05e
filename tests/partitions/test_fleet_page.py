"""The fleet page at scale: one bounded page of nodes, keyset paging, search and filters kept
in the query string, totals of the whole matching fleet, bad input never a 500."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from partitions.models import GPU, Node, Reconfiguration
from partitions.simulation import fleet_spec, replace_simulated_nodes

pytestmark = pytest.mark.django_db


def fleet(nodes: int, *, prefix: str = "sim-", mode: str = "CPX") -> list[str]:
    """``nodes`` simulated nodes of 8 GPUs, agents alive; returns their names."""
    spec = fleet_spec(nodes=nodes, prefix=prefix, compute_mode=mode)
    replace_simulated_nodes(spec)
    Node.objects.filter(name__startswith=prefix).update(agent_heartbeat_at=timezone.now())
    return spec.names


def shown(html: str) -> list[str]:
    return re.findall(r'<section class="card node" id="node-([^"]+)"', html)


def pager(html: str, which: str) -> str | None:
    found = re.search(rf'<a href="([^"]*)" data-page="{which}"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_a_large_fleet_shows_one_page_of_nodes_and_the_totals_of_all(client, viewer):
    names = fleet(23)
    client.force_login(viewer)
    html = client.get("/fleet/").content.decode()
    assert shown(html) == names[:10]
    totals = re.search(r'id="fleet-totals" data-nodes="(\d+)"', html)
    assert totals and totals.group(1) == "23"
    assert "184 GPUs (184 CPX)" in html and "1472 partitions (0 in use)" in html
    assert pager(html, "next") == f"?after={names[9]}" and pager(html, "previous") is None


def test_following_the_pager_visits_every_node_once_and_comes_back(client, viewer):
    names = fleet(23)
    client.force_login(viewer)
    seen, url = [], "/fleet/?per_page=10"
    pages = 0
    while url and pages < 5:
        html = client.get(url if url.startswith("/") else "/fleet/" + url).content.decode()
        seen += shown(html)
        url, pages = pager(html, "next"), pages + 1
    assert seen == names and pages == 3
    last = client.get("/fleet/?last=1").content.decode()
    assert shown(last) == names[-10:] and pager(last, "next") is None
    back = client.get("/fleet/" + pager(last, "previous")).content.decode()
    assert shown(back) == names[3:13]
    assert shown(client.get("/fleet/" + pager(back, "first")).content.decode()) == names[:10]


def test_the_search_filters_and_page_size_stay_in_the_pager_links(client, viewer):
    fleet(30)
    fleet(5, prefix="other-")
    client.force_login(viewer)
    html = client.get("/fleet/", {"node": "sim-", "mode": "CPX", "per_page": 25}).content.decode()
    assert len(shown(html)) == 25 and all(n.startswith("sim-") for n in shown(html))
    following = pager(html, "next")
    assert following is not None and "node=sim-" in following and "mode=CPX" in following and "per_page=25" in following
    rest = client.get("/fleet/" + following).content.decode()
    assert shown(rest) == [f"sim-{i:04d}" for i in range(25, 30)]


def test_state_filters_pick_nodes_and_gpus(client, viewer):
    names = fleet(12)
    Node.objects.filter(name=names[3]).update(agent_heartbeat_at=timezone.now() - timedelta(minutes=5))
    gpu = GPU.objects.get(node__name=names[7], index=2)
    GPU.objects.filter(pk=gpu.pk).update(health=GPU.Health.UNHEALTHY, health_reason="test")
    Reconfiguration.objects.create(kind="compute", node=gpu.node, gpu=gpu, gpu_index=2, target_compute_mode="SPX",
                                   state=Reconfiguration.State.PENDING)
    client.force_login(viewer)
    assert shown(client.get("/fleet/", {"state": "agent_down"}).content.decode()) == [names[3]]
    unhealthy = client.get("/fleet/", {"state": "unhealthy"}).content.decode()
    assert shown(unhealthy) == [names[7]] and unhealthy.count('<article class="gpu') == 1
    busy = client.get("/fleet/", {"state": "operation"}).content.decode()
    assert shown(busy) == [names[7]] and busy.count('<article class="gpu') == 8  # a node filter: all its GPUs


@pytest.mark.parametrize(("query", "expect"), [
    ({"per_page": "7"}, "error"), ({"per_page": "lots"}, "error"), ({"after": "x" * 200}, "error"),
    ({"state": "on-fire"}, "error"), ({"free": "-1"}, "error"), ({"free": "nan"}, "error"), ({"mode": "ZPX"}, "error"),
    ({"node": "n" * 300}, "error"), ({"before": ""}, "first"), ({"last": "maybe"}, "last"),
    ({"after": "zzz-after-the-end"}, "empty"), ({"gpu_model": "<script>"}, "no match"),
])
def test_bad_paging_or_filter_input_is_refused_or_ignored_never_a_500(client, viewer, query, expect):
    names = fleet(12)
    client.force_login(viewer)
    response = client.get("/fleet/", query)
    assert response.status_code == 200
    html = response.content.decode()
    if expect == "error":  # said inline, that field ignored: the first page at the default size
        assert "These filters cannot be used" in html and shown(html) == names[:10]
    elif expect == "first":
        assert shown(html) == names[:10]
    elif expect == "last":
        assert shown(html) == names[-10:]
    elif expect == "empty":
        assert shown(html) == [] and pager(html, "first") == "?"
    else:
        assert shown(html) == [] and "No GPUs match these filters" in html and "<script>" not in html.split('id="fleet-page"')[1]


def test_control_characters_in_the_cursor_are_a_clear_400(client, viewer):
    fleet(2)
    client.force_login(viewer)
    assert client.get("/fleet/", {"before": "\x00"}).status_code == 400


def test_the_page_has_a_fixed_number_of_queries_whatever_the_fleet_size(client, viewer):
    fleet(4)
    client.force_login(viewer)
    with CaptureQueriesContext(connection) as small:
        client.get("/fleet/", {"mode": "CPX", "free": "10", "state": "unschedulable"})
    fleet(60)
    with CaptureQueriesContext(connection) as large:
        client.get("/fleet/", {"mode": "CPX", "free": "10", "state": "unschedulable"})
    assert len(large.captured_queries) == len(small.captured_queries)


def test_the_last_page_costs_the_same_queries_as_the_first_and_no_offset_scan(client, viewer):
    fleet(45)
    client.force_login(viewer)
    costs = {}
    for which, query in (("first", {}), ("deep", {"after": "sim-0039"}), ("last", {"last": "1"})):
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/fleet/", query).status_code == 200
        costs[which] = len(ctx.captured_queries)
        assert not any(" OFFSET " in q["sql"].upper() for q in ctx.captured_queries), which
    assert costs["first"] == costs["deep"] == costs["last"]


def test_the_page_weighs_the_same_at_200_nodes_as_at_10(client, viewer):
    fleet(10)
    client.force_login(viewer)
    small = len(client.get("/fleet/").content)
    fleet(200)
    large = len(client.get("/fleet/").content)
    assert large <= 1.05 * small  # the same 10 cards; only the totals' digits grow


def test_the_page_fragment_is_the_pages_results_for_the_live_update(client, viewer):
    names = fleet(15)
    client.force_login(viewer)
    fragment = client.get("/fleet/cards/", {"after": names[9]}).content.decode()
    assert shown(fragment) == names[10:] and "<html" not in fragment and 'id="fleet-totals"' in fragment


def test_a_node_card_is_empty_once_the_node_no_longer_matches_a_node_state_filter(client, viewer):
    names = fleet(3)
    client.force_login(viewer)
    assert client.get(f"/fleet/node/{names[0]}/card/", {"state": "agent_down"}).content == b""
    Node.objects.filter(name=names[0]).update(agent_heartbeat_at=None)
    assert names[0] in client.get(f"/fleet/node/{names[0]}/card/", {"state": "agent_down"}).content.decode()
