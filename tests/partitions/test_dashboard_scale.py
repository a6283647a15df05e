"""The dashboard page at fleet scale: its bytes and queries do not grow with the fleet, and
its frame is computed at most once per ``PAGE_FRAME_TTL_S`` and view, whoever loads the page."""

from __future__ import annotations

import types

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from partitions import dashboard
from partitions.models import Node
from partitions.simulation import delete_simulated_telemetry, fleet_spec, replace_simulated_nodes, write_simulated_telemetry

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def simulated(nodes: int, redis_url: str) -> None:
    spec = fleet_spec(nodes=nodes, prefix="sim-")
    replace_simulated_nodes(spec)
    Node.objects.update(agent_heartbeat_at=timezone.now())
    write_simulated_telemetry(spec, client=redis.Redis.from_url(redis_url))


@pytest.fixture
def frozen_tick(monkeypatch):  # type: ignore[no-untyped-def]
    """The dashboard's clock, moved by hand: ``clock.now`` in Unix seconds (no frame cached
    from another test, whose Redis key prefix differs anyway)."""
    monkeypatch.setattr(dashboard, "_PAGE_FRAMES", {})
    clock = types.SimpleNamespace(now=1_800_000_000.2)
    monkeypatch.setattr(dashboard, "time", types.SimpleNamespace(time=lambda: clock.now))
    return clock


def test_page_bytes_and_queries_stay_flat_from_10_to_200_nodes(client, viewer, redis_url, frozen_tick):
    client.force_login(viewer)
    try:
        simulated(10, redis_url)
        with CaptureQueriesContext(connection) as small_queries:
            small = client.get("/dashboard/").content
        simulated(200, redis_url)
        frozen_tick.now += dashboard.PAGE_FRAME_TTL_S
        with CaptureQueriesContext(connection) as large_queries:
            large = client.get("/dashboard/").content
    finally:
        delete_simulated_telemetry("sim-", client=redis.Redis.from_url(redis_url))
    assert b"200 of 200 nodes reporting" in large and b"and 190 more" in large  # emulated: 10 named, then a count
    assert b'<input type="search" name="node"' in large  # no select of every node
    assert len(large) <= 1.3 * len(small)
    assert len(large_queries.captured_queries) <= len(small_queries.captured_queries)


def test_page_loads_share_a_views_frame_for_a_few_seconds(client, viewer, redis_url, frozen_tick, monkeypatch):
    computed = []
    real = dashboard.build_view
    monkeypatch.setattr(dashboard, "build_view", lambda *a, **k: computed.append(1) or real(*a, **k))
    client.force_login(viewer)
    simulated(3, redis_url)
    try:
        for _ in range(3):
            assert client.get("/dashboard/").status_code == 200
        assert len(computed) == 1
        assert client.get("/dashboard/", {"node": "sim-0001"}).status_code == 200  # another view: its own frame
        assert len(computed) == 2
        frozen_tick.now += dashboard.PAGE_FRAME_TTL_S - 0.5
        assert client.get("/dashboard/").status_code == 200
        assert len(computed) == 2
        frozen_tick.now += 0.5  # as old as allowed: the fleet's frame anew
        assert client.get("/dashboard/").status_code == 200
        assert len(computed) == 3
    finally:
        delete_simulated_telemetry("sim-", client=redis.Redis.from_url(redis_url))
