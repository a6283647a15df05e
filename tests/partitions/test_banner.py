"""The fleet banner on every page (partitions/context_processors.py): agents down and stale
telemetry, linking to the fleet page; one query and one Redis round trip at most."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from partitions.models import Node
from partitions.telemetry_store import snapshot_key

pytestmark = pytest.mark.django_db

PROCESSOR = "partitions.context_processors.fleet_alerts"


def banner(html: str) -> str | None:
    """The banner's text (tags stripped), or None when the page has none."""
    match = re.search(r'<div class="fleet-banner"[^>]*>(.*?)</div>', html, re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip() if match else None


def node(name: str, *, heartbeat_age: timedelta | None, emulated: bool = True) -> Node:
    return Node.objects.create(name=name, backend=Node.Backend.EMULATOR, emulated=emulated,
                               agent_heartbeat_at=None if heartbeat_age is None else timezone.now() - heartbeat_age)


def snapshot(client, name: str, *, age_s: float) -> None:  # type: ignore[no-untyped-def]
    client.set(snapshot_key(name), json.dumps({"node": name, "ts": time.time() - age_s, "gpus": []}), ex=30)


@pytest.fixture
def r(redis_url):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(redis_url)


def test_a_node_whose_agent_heartbeat_is_old_shows_the_banner_on_any_page(client, viewer, r):
    node("emu-node-1", heartbeat_age=timedelta(seconds=2))
    snapshot(r, "emu-node-1", age_s=0.5)
    node("emu-node-2", heartbeat_age=timedelta(minutes=3, seconds=5))
    client.force_login(viewer)
    html = client.get("/catalog/").content.decode()
    text = banner(html)
    assert text is not None and "Agent down: emu-node-2 (emulated, last heartbeat 3 min ago)" in text
    assert "emu-node-1" not in text
    assert re.search(r'<div class="fleet-banner"[^>]*>.*?<a href="/fleet/#node-emu-node-2"', html, re.S)


def test_a_live_agent_with_fresh_telemetry_shows_no_banner(client, viewer, r):
    node("emu-node-1", heartbeat_age=timedelta(seconds=1))
    snapshot(r, "emu-node-1", age_s=0.5)
    client.force_login(viewer)
    assert banner(client.get("/catalog/").content.decode()) is None


def test_a_node_never_seen_says_never(client, viewer, r):
    node("emu-new", heartbeat_age=None, emulated=False)
    client.force_login(viewer)
    assert "Agent down: emu-new (never seen)" in (banner(client.get("/catalog/").content.decode()) or "")


@pytest.mark.parametrize("age_s", [None, 25.0])
def test_a_live_agent_whose_snapshot_is_missing_or_old_shows_stale_telemetry(client, viewer, r, age_s):
    node("emu-node-1", heartbeat_age=timedelta(seconds=1))
    if age_s is not None:
        snapshot(r, "emu-node-1", age_s=age_s)
    client.force_login(viewer)
    text = banner(client.get("/catalog/").content.decode()) or ""
    assert "Telemetry stale on emu-node-1" in text and "Agent down" not in text
    assert ("25 s old" in text) if age_s else ("no snapshot" in text)


def test_a_node_whose_agent_is_down_is_named_once_not_again_as_stale(client, viewer, r):
    node("emu-node-2", heartbeat_age=timedelta(minutes=3))
    client.force_login(viewer)
    text = banner(client.get("/catalog/").content.decode()) or ""
    assert text.count("emu-node-2") == 1 and "Telemetry stale" not in text


def test_many_nodes_down_are_summarised(client, viewer, r):
    for i in range(8):
        node(f"emu-{i}", heartbeat_age=None)
    client.force_login(viewer)
    text = banner(client.get("/catalog/").content.decode()) or ""
    assert "emu-4" in text and "emu-5" not in text and "and 3 more" in text


def test_without_redis_the_banner_says_telemetry_is_unavailable_and_still_names_agents_down(client, viewer, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    node("emu-node-1", heartbeat_age=timedelta(seconds=1))
    node("emu-node-2", heartbeat_age=timedelta(minutes=3))
    client.force_login(viewer)
    text = banner(client.get("/catalog/").content.decode()) or ""
    assert "Telemetry unavailable" in text and "Agent down: emu-node-2" in text
    assert "Telemetry stale on emu-node-1" not in text


def test_anonymous_pages_have_no_banner_and_read_nothing(client, settings):
    node("emu-node-2", heartbeat_age=timedelta(minutes=3))
    with CaptureQueriesContext(connection) as ctx:
        html = client.get("/accounts/login/").content.decode()
    assert banner(html) is None
    assert not [q for q in ctx.captured_queries if "partitions_node" in q["sql"]]


def test_htmx_fragment_requests_read_nothing_for_the_banner(client, viewer):
    node("emu-node-2", heartbeat_age=timedelta(minutes=3))
    client.force_login(viewer)
    with CaptureQueriesContext(connection) as ctx:
        client.get("/catalog/", headers={"HX-Request": "true"})
    assert not [q for q in ctx.captured_queries if "partitions_node" in q["sql"]]


def test_the_banner_adds_at_most_one_query(client, viewer, settings, r):
    for i in range(5):
        node(f"emu-{i}", heartbeat_age=timedelta(minutes=i))
    client.force_login(viewer)
    client.get("/catalog/")  # warm the session

    def count() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as ctx:
            html = client.get("/catalog/").content.decode()
        return len(ctx.captured_queries), html

    with_banner, html = count()
    assert banner(html) is not None
    engine = settings.TEMPLATES[0]
    settings.TEMPLATES = [{**engine, "OPTIONS": {**engine["OPTIONS"], "context_processors": [
        p for p in engine["OPTIONS"]["context_processors"] if p != PROCESSOR]}}]
    without, html = count()
    assert banner(html) is None
    assert with_banner - without <= 1, (with_banner, without)


def test_the_banner_shows_a_node_name_with_control_characters_escaped(client, viewer, db):
    from partitions.models import Node

    Node.objects.create(name="emu-x", backend=Node.Backend.EMULATOR, emulated=True)
    Node.objects.filter(name="emu-x").update(name="emu\u202ex")  # names are validated on input; the page must not trust rows
    client.force_login(viewer)
    page = client.get("/catalog/").content.decode()
    assert "\u202e" not in page and "emu\\u202ex" in page
