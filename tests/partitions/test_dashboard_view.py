"""The live utilization dashboard page (server side): fleet and node views, figures in
json_script, the emulated badge, the no-JavaScript table of the latest snapshots."""

from __future__ import annotations

import json
import re

import pytest
import redis

from partitions.models import Node
from partitions.telemetry_store import snapshot_key

pytestmark = pytest.mark.django_db


def json_script(html: str, element_id: str):  # type: ignore[no-untyped-def]
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S)
    assert match, f"no json_script #{element_id}"
    return json.loads(match.group(1))


@pytest.fixture
def viewer_client(client, viewer):  # type: ignore[no-untyped-def]
    client.force_login(viewer)
    return client


def test_fleet_view_renders_for_a_viewer_with_the_figures_in_json_script(viewer_client):
    Node.objects.create(name="real-1", emulated=False)
    response = viewer_client.get("/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    figures = json_script(html, "dashboard-figures")
    assert set(figures) == {"activity", "vram", "power", "temperature"}
    assert figures["vram"]["layout"]["yaxis"]["title"]["text"] == "VRAM used (GiB)"
    assert "derived from per-XCP busy" in figures["activity"]["layout"]["title"]["text"]
    live = json_script(html, "dashboard-live")
    assert live["ws_path"] == "/ws/telemetry/" and live["node"] is None
    assert live["max_points"] == 300 and live["stale_after_intervals"] == 3 and live["interval_s"] > 0
    for chart in figures:
        assert f'id="chart-{chart}"' in html
    assert 'id="dashboard-stale"' in html and 'id="dashboard-status"' in html
    assert '<select name="node"' in html and '<option value="real-1"' in html
    assert "live charts need JavaScript" in html
    assert "not real hardware" not in html  # no emulated node in view
    assert "/static/plotly/plotly.min.js" in html and "/static/partitions/dashboard.js" in html
    assert "/static/partitions/dashboard.css" in html


def test_no_inline_script_or_style(viewer_client):
    Node.objects.create(name="emu-x", emulated=True)
    html = viewer_client.get("/dashboard/?node=emu-x").content.decode()
    assert " style=" not in html and "<style" not in html
    for tag in re.findall(r"<script[^>]*>", html):
        assert " src=" in tag or 'type="application/json"' in tag, tag


def test_node_view_and_emulated_badge(viewer_client):
    Node.objects.create(name="real-1", emulated=False)
    Node.objects.create(name="emu-node-1", emulated=True)
    html = viewer_client.get("/dashboard/?node=emu-node-1").content.decode()
    assert json_script(html, "dashboard-live")["ws_path"] == "/ws/telemetry/?node=emu-node-1"
    assert '<option value="emu-node-1" selected>' in html
    assert 'id="dashboard-emulated"' in html and "data is emulated, not real hardware" in html
    html = viewer_client.get("/dashboard/?node=real-1").content.decode()
    assert "not real hardware" not in html
    html = viewer_client.get("/dashboard/").content.decode()  # fleet: any emulated node in view
    assert "data is emulated, not real hardware (emu-node-1)" in html


def test_unknown_node_is_404(viewer_client):
    assert viewer_client.get("/dashboard/?node=nope").status_code == 404


def test_sign_in_required_and_role_needed(client, norole):
    response = client.get("/dashboard/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(norole)
    assert client.get("/dashboard/").status_code == 403


@pytest.mark.redis
def test_table_of_latest_snapshot_values(viewer_client, redis_url):
    import time

    Node.objects.create(name="emu-tbl", emulated=True)
    Node.objects.create(name="emu-quiet", emulated=True)
    snap = {"node": "emu-tbl", "ts": time.time(), "interval_s": 1.0, "emulated": True, "gpus": [
        {"index": 0, "power_w": 612.4, "temperature_c": 77.0, "mem_temperature_c": 60.0, "gfx_activity": 55.0,
         "partitions": [
             {"index": 0, "logical_index": 0, "gfx_activity": 91.5, "derived": True, "vram_used_mb": 20480, "vram_total_mb": 24576},
             {"index": 1, "logical_index": 4, "gfx_activity": 3.0, "derived": True, "vram_used_mb": 1024, "vram_total_mb": 24576},
         ]}]}
    client = redis.Redis.from_url(redis_url)
    client.set(snapshot_key("emu-tbl"), json.dumps(snap), ex=30)
    try:
        html = viewer_client.get("/dashboard/").content.decode()
    finally:
        client.delete(snapshot_key("emu-tbl"))
    table = html[html.index('id="dashboard-latest"'):]
    assert "emu-tbl gpu0/p0 (derived)" in table and "emu-tbl gpu0/p1 (derived)" in table
    assert "91.5" in table and "20.0" in table and "612" in table and "77" in table
    assert 'rowspan="2"' in table
    assert "No recent sample from emu-quiet" in table


def test_page_renders_when_redis_is_down(viewer_client, settings):
    from tests.processes import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    Node.objects.create(name="emu-down", emulated=True)
    response = viewer_client.get("/dashboard/")
    assert response.status_code == 200
    assert "No recent sample from emu-down" in response.content.decode()
