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
    assert set(figures) == {"activity", "vram", "power", "temperature", "heatmap"}
    assert figures["vram"]["layout"]["yaxis"]["title"]["text"] == "VRAM used (%)"  # fleet: % of each node's total
    assert "derived from per-XCP busy" in figures["activity"]["layout"]["title"]["text"]
    assert figures["activity"]["layout"]["xaxis"]["title"]["text"] == "time (UTC)"
    live = json_script(html, "dashboard-live")
    assert live["ws_path"] == "/ws/dashboard/" and live["scope"]["node"] is None and live["timezone"] == "UTC"
    assert live["max_points"] == 300 and live["stale_after_intervals"] == 3 and live["interval_s"] > 0
    frame = json_script(html, "dashboard-frame")
    assert frame["counts"]["expected_nodes"] == 1 and frame["series"]["level"] == "node"
    assert 'id="chart-heatmap"' in html and 'id="top-busy"' in html and 'id="legend-activity"' in html
    for chart in figures:
        assert f'id="chart-{chart}"' in html
    assert 'id="dashboard-stale"' in html and 'id="dashboard-status"' in html
    assert '<select name="node"' in html and '<option value="real-1"' in html
    assert "live charts need JavaScript" in html
    assert "not real hardware" not in html  # no emulated node in view
    assert "/static/plotly/plotly-" in html and "/static/partitions/dashboard.js" in html
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
    assert json_script(html, "dashboard-live")["ws_path"] == "/ws/dashboard/?node=emu-node-1"
    assert '<option value="emu-node-1" selected>' in html
    assert 'id="dashboard-emulated"' in html and "data is emulated, not real hardware" in html
    html = viewer_client.get("/dashboard/?node=real-1").content.decode()
    assert "not real hardware" not in html
    html = viewer_client.get("/dashboard/").content.decode()  # fleet: any emulated node in view
    assert "data is emulated, not real hardware (emu-node-1)" in html


def test_unknown_node_or_bad_gpu_is_404(viewer_client):
    Node.objects.create(name="real-1", emulated=False)
    assert viewer_client.get("/dashboard/?node=nope").status_code == 404
    assert viewer_client.get("/dashboard/?node=real-1&gpu=x").status_code == 404
    assert viewer_client.get("/dashboard/?gpu=1").status_code == 404


def test_gpu_view_and_the_active_timezone(viewer_client, settings):
    Node.objects.create(name="real-1", emulated=False)
    settings.TIME_ZONE = "Europe/Paris"  # the zone the request runs in (a user's preference or the default)
    html = viewer_client.get("/dashboard/?node=real-1&gpu=2").content.decode()
    live = json_script(html, "dashboard-live")
    assert live["ws_path"] == "/ws/dashboard/?node=real-1&gpu=2" and live["scope"]["level"] == "gpu"
    assert live["timezone"] == "Europe/Paris"
    figures = json_script(html, "dashboard-figures")
    assert figures["vram"]["layout"]["yaxis"]["title"]["text"] == "VRAM used (GiB)"  # one line per partition
    assert figures["power"]["layout"]["xaxis"]["title"]["text"] == "time (Europe/Paris)"


def test_history_is_marked_unavailable_without_prometheus(viewer_client, settings):
    settings.PROMETHEUS_URL = ""
    html = viewer_client.get("/dashboard/").content.decode()
    assert "history unavailable: set AIM_PROMETHEUS_URL" in html
    live = json_script(html, "dashboard-live")
    assert [r["key"] for r in live["ranges"]] == ["live", "15m", "1h", "6h", "24h"]
    assert [r["enabled"] for r in live["ranges"]] == [True, False, False, False, False]
    assert html.count('class="dash-range" data-range=') == 5 and html.count(" disabled title=") == 4
    response = viewer_client.get("/dashboard/history/?range=1h")
    assert response.status_code == 503 and "AIM_PROMETHEUS_URL" in response.json()["error"]


def test_grafana_links_when_configured_else_where_to_import(viewer_client, settings):
    from pathlib import Path

    from partitions.dashboard import GRAFANA_DASHBOARDS

    settings.GRAFANA_URL = ""
    html = viewer_client.get("/dashboard/").content.decode()
    assert "deploy/grafana/" in html and "AIM_GRAFANA_URL" in html
    settings.GRAFANA_URL = "https://grafana.example"
    html = viewer_client.get("/dashboard/").content.decode()
    assert 'href="https://grafana.example/d/aim-partition-utilization"' in html
    assert 'href="https://grafana.example/d/aim-node-health"' in html
    # the uids are those of the JSON files in deploy/grafana/
    uids = {json.loads(p.read_text())["uid"] for p in (Path(__file__).resolve().parents[2] / "deploy" / "grafana").glob("*.json")}
    assert {uid for uid, _ in GRAFANA_DASHBOARDS.values()} <= uids


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
    assert "emu-tbl gpu0/p0</a>" in table and "emu-tbl gpu0/p1</a>" in table
    assert "91.5 (derived)" in table and "20.0" in table and "612" in table and "77" in table
    assert 'rowspan="2"' in table
    assert "No recent sample from emu-quiet" in table


def test_page_renders_when_redis_is_down(viewer_client, settings):
    from tests.processes import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    Node.objects.create(name="emu-down", emulated=True)
    response = viewer_client.get("/dashboard/")
    assert response.status_code == 200
    assert "No recent sample from emu-down" in response.content.decode()
