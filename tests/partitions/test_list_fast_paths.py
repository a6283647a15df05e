"""The node, GPU and partition lists' hot read paths (values() rows, no serializer per row)
answer exactly the JSON their serializers give, field for field and in the same order; their
query count does not grow with the fleet; and their keyset pages (``next`` links,
``?cursor=``) walk the whole list once and cost the same deep in it as at its start."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from partitions.models import GPU, Node, Partition
from partitions.simulation import fleet_spec, replace_simulated_nodes

pytestmark = pytest.mark.django_db


@pytest.fixture
def varied_fleet(db):  # type: ignore[no-untyped-def]
    """Nodes and GPUs in every state the serializers render differently."""
    now = timezone.now()
    fresh = Node.objects.create(name="b-fresh", backend="emulator", emulated=True, agent_heartbeat_at=now,
                                agent_lease_holder="host:1", agent_lease_expires_at=now + timedelta(seconds=30),
                                last_synced_at=now, reconciled_at=now, reconcile_changes=[{"gpu": 0, "what": "mode"}],
                                memory_mode="NPS1", amd_smi_version="25.1", rocm_version="6.4.1")
    Node.objects.create(name="a-stale", backend="amdsmi", runtime="kubernetes", agent_heartbeat_at=now - timedelta(minutes=5),
                        layout_problem="mixed NPS", sync_error="timeout")
    Node.objects.create(name="c-never", backend="imported")
    gpu = GPU.objects.create(node=fresh, index=0, gpu_model="MI300X", market_name="AMD Instinct MI300X", compute_mode="DPX",
                             memory_mode="NPS1", memory_caps=["NPS1", "NPS2"], accelerator_profiles=[{"profile_type": "DPX"}],
                             compute_units=304, vram_mb=196592, health="unhealthy", health_reason="ECC",
                             schedulable=False, pending_memory_mode="NPS2", health_check_requested_at=now,
                             bdf="0000:0c:00.0", uuid="u-0", gfx_target="gfx942")
    GPU.objects.create(node=fresh, index=1)  # nothing reported, no partitions
    for p in (1, 0):
        Partition.objects.create(gpu=gpu, index=p, logical_index=p, xcds=4, compute_units=152, memory_gb=96.0,
                                 reported_memory_mb=98304, render_node=f"renderD{128 + p}", uuid=f"p-{p}", bdf=f"0000:0c:00.{p}")
    return fresh


@pytest.mark.parametrize(("url", "detail"), [
    ("/api/v1/nodes/", lambda row: f"/api/v1/nodes/{row['name']}/"),
    ("/api/v1/gpus/", lambda row: f"/api/v1/gpus/{row['id']}/"),
    ("/api/v1/partitions/", lambda row: f"/api/v1/partitions/{row['id']}/"),
])
def test_each_list_row_is_the_serializers_json(api_client_for, viewer, varied_fleet, url, detail):
    client = api_client_for(viewer)
    rows = client.get(url, {"limit": 100}).json()["results"]
    assert rows, url
    for row in rows:
        serialized = client.get(detail(row)).json()  # rendered by the serializer
        assert json.dumps(row) == json.dumps(serialized), (url, row, serialized)


def test_the_node_lists_computed_fields_follow_the_models_rules(api_client_for, viewer, varied_fleet):
    rows = {r["name"]: r for r in api_client_for(viewer).get("/api/v1/nodes/").json()["results"]}
    assert [rows[n]["agent_alive"] for n in ("b-fresh", "a-stale", "c-never")] == [True, False, False]
    assert [rows[n]["schedulable"] for n in ("b-fresh", "a-stale")] == [True, False]
    assert [rows[n]["serving_runtime"] for n in ("b-fresh", "a-stale", "c-never")] == ["emulated", "kubernetes", ""]
    assert [rows[n]["gpu_count"] for n in ("b-fresh", "a-stale")] == [2, 0]


def _queries(client, url: str) -> int:  # type: ignore[no-untyped-def]
    client.get(url)  # warm-up: the role lookup is cached per user afterwards
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url, {"limit": 1000}).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("url", ["/api/v1/nodes/", "/api/v1/gpus/", "/api/v1/partitions/", "/api/v1/deployments/"])
def test_list_queries_do_not_grow_with_the_fleet(api_client_for, viewer, url):
    client = api_client_for(viewer)
    replace_simulated_nodes(fleet_spec(nodes=2, prefix="q-"))
    small = _queries(client, url)
    replace_simulated_nodes(fleet_spec(nodes=12, prefix="q-"))
    assert _queries(client, url) == small


def _walk(client, url: str) -> list[dict]:  # type: ignore[no-untyped-def]
    rows, pages = [], 0
    while url:
        body = client.get(url).json()
        rows += body["results"]
        url, pages = body["next"], pages + 1
        assert pages < 100
    return rows


@pytest.mark.parametrize(("url", "key"), [
    ("/api/v1/nodes/?limit=3", "name"),
    ("/api/v1/gpus/?limit=7&compute_mode=CPX", "id"),
    ("/api/v1/partitions/?limit=50", "id"),
])
def test_next_links_are_cursors_that_walk_the_whole_list_once_in_order(api_client_for, viewer, url, key):
    replace_simulated_nodes(fleet_spec(nodes=5, prefix="k-", gpus_per_node=2))
    client = api_client_for(viewer)
    first = client.get(url).json()
    assert "cursor=" in first["next"] and "offset=" not in first["next"]
    walked = _walk(client, url)
    everything = client.get(url.split("?")[0], {"limit": 1000, **dict(p.split("=") for p in url.split("?")[1].split("&")[1:])}).json()
    assert [r[key] for r in walked] == [r[key] for r in everything["results"]]
    assert len(walked) == everything["count"]


def test_offset_paging_still_works_and_an_ordering_turns_cursors_off(api_client_for, viewer):
    replace_simulated_nodes(fleet_spec(nodes=5, prefix="k-"))
    client = api_client_for(viewer)
    page = client.get("/api/v1/nodes/", {"limit": 2, "offset": 2}).json()
    assert [r["name"] for r in page["results"]] == ["k-0002", "k-0003"] and "cursor=" in page["next"]
    ordered = client.get("/api/v1/nodes/", {"limit": 2, "ordering": "-name"}).json()
    assert [r["name"] for r in ordered["results"]] == ["k-0004", "k-0003"] and "offset=2" in ordered["next"]


@pytest.mark.parametrize("query", [
    {"cursor": "not-a-cursor"},
    {"cursor": "WzFd"},  # [1]: one value, the GPU list's key has two
    {"cursor": "WyJhIiwieCJd"},  # ["a","x"]: an index that is no number
    {"cursor": "WyJhIiwxXQ", "offset": "5"},
    {"cursor": "WyJhIiwxXQ", "ordering": "index"},
])
def test_a_bad_cursor_is_a_400_naming_it(api_client_for, viewer, query):
    response = api_client_for(viewer).get("/api/v1/gpus/", query)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and "cursor" in response.json()["detail"]


def _vm_steps(sql: str, params) -> int:  # type: ignore[no-untyped-def]
    """SQLite virtual-machine instructions one query executes (a progress handler called on
    every one): the work the query does, counted, not timed."""
    raw = connection.connection
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    raw.set_progress_handler(count, 1)
    try:
        raw.execute(sql, params).fetchall()
    finally:
        raw.set_progress_handler(None, 1)
    return steps[0]


def _page_query_work(client, url: str) -> int:  # type: ignore[no-untyped-def]
    """The work of the query that reads the page's rows (the largest SELECT with a LIMIT)."""
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    selects = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("SELECT") and "LIMIT" in q["sql"]]
    assert selects, url
    with connection.cursor() as cursor:
        work = []
        for sql in selects:
            cursor.execute("SELECT 1")  # the connection is open
            work.append(_vm_steps(sql, ()))
    return max(work)


@pytest.mark.redis
@pytest.mark.skipif(connection.vendor != "sqlite", reason="counts SQLite VM steps; PostgreSQL plans tiny tables as seq scans")
@pytest.mark.parametrize(("url", "nodes", "gpus", "key"), [
    ("/api/v1/nodes/", 1000, 1, ("name",)),
    ("/api/v1/telemetry/", 1000, 1, ("node",)),
    ("/api/v1/gpus/", 200, 8, ("node", "index")),
    ("/api/v1/partitions/", 40, 8, ("node", "gpu_index", "index")),
])
def test_a_deep_cursor_page_costs_what_the_first_page_costs(api_client_for, viewer, redis_url, url, nodes, gpus, key):
    from aimconsole.api import encode_cursor

    replace_simulated_nodes(fleet_spec(nodes=nodes, gpus_per_node=gpus, prefix="deep-"))
    client = api_client_for(viewer)
    total = client.get(url, {"limit": 1}).json()["count"]

    def cursor_after(offset: int) -> str:
        row = client.get(url, {"limit": 1, "offset": offset}).json()["results"][0]
        return encode_cursor([row[k] for k in key])

    # At the same place within a node near the start (a page may begin mid-node, where the
    # rows of that node before the cursor are read and skipped: at most one node's worth).
    same_place_in_first_node = (total - 21) % (total // nodes)
    early = _page_query_work(client, f"{url}?limit=20&cursor={cursor_after(same_place_in_first_node)}")
    deep = _page_query_work(client, f"{url}?limit=20&cursor={cursor_after(total - 21)}")  # the last 20
    by_offset = _page_query_work(client, f"{url}?limit=20&offset={total - 20}")
    if not url.endswith("telemetry/"):  # telemetry rows carry the sample's age, which moves
        assert client.get(url, {"limit": 20, "cursor": cursor_after(total - 21)}).json()["results"] == client.get(
            url, {"limit": 20, "offset": total - 20}).json()["results"]
    assert deep <= early * 1.1, (early, deep, by_offset)
    assert by_offset > deep * 2, (early, deep, by_offset)  # what the cursor saves: OFFSET reads every row before


def test_cursor_values_the_database_would_choke_on_are_a_400(api_client_for, viewer):
    from aimconsole.api import encode_cursor

    client = api_client_for(viewer)
    for key in (["a", 2**70], ["a\x00b", 1], ["a", True], ["a", None]):
        response = client.get("/api/v1/gpus/", {"cursor": encode_cursor(key)})
        assert response.status_code == 400, (key, response.content)
