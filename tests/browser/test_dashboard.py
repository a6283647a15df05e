"""The live utilization dashboard in a real browser, over a real WebSocket.

pytest-django's live_server speaks WSGI only, so the console runs under daphne (ASGI) as a
subprocess sharing the test database and the test Redis, with the real channels_redis layer
(the ``console`` fixture of tests/browser/conftest.py).
The test process samples an emulated node with the node agent's ``Agent.sample()`` (from a
thread: Playwright's sync API keeps an event loop in the main thread, where async_to_sync
cannot run) and publishes through the same Redis layer; the page's charts must grow, then show
"stale" when sampling stops.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from tests.browser.conftest import screenshot, sign_in
from tests.emulated_nodes import make_emulated_node
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]

NODE = "emu-node-1"
INTERVAL_S = 0.3


@pytest.fixture
def redis_layer(redis_layer, settings):  # type: ignore[no-untyped-def]
    """The real Redis layer (tests/browser/conftest.py), and snapshots that say interval_s = 0.3."""
    settings.TELEMETRY_INTERVAL_S = INTERVAL_S


class Sampler(threading.Thread):
    """The agent's telemetry loop, in this process: Agent.sample() every INTERVAL_S."""

    def __init__(self, node_name: str) -> None:
        super().__init__(daemon=True)
        self.node_name = node_name
        self.stopped = threading.Event()
        self.samples = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        from partitions.agent import Agent

        agent = Agent(self.node_name)
        try:
            while not self.stopped.is_set():
                started = time.monotonic()
                try:
                    agent.sample()
                    self.samples += 1
                except Exception as exc:  # reported by the test
                    self.errors.append(exc)
                self.stopped.wait(max(0.0, INTERVAL_S - (time.monotonic() - started)))
        finally:
            # The agent publishes on an event loop of its own (this thread's); close it here, so
            # the Redis layer flushes its connections in this thread, not at garbage collection.
            agent.close()
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)
        assert not self.errors, self.errors


def mixed_node(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Two MI300X: GPU 0 in CPX (8 partitions, activity derived), GPU 1 in SPX; some load."""
    import redis
    from django.conf import settings

    from amdsmi_emulator.model import Hive, resize_partitions
    from partitions.services import sync_node
    from partitions.telemetry_store import snapshot_key

    redis.Redis.from_url(settings.REDIS_URL).delete(snapshot_key(NODE))  # none left by another test
    emulated = make_emulated_node(tmp_path, NODE, gpus=2)
    with emulated.state.transaction() as data:
        hive = Hive(data)
        gpu = data["gpus"][0]
        assert ("CPX", gpu["memory_mode"]) in hive.allowed_pairs()
        gpu["compute_mode"] = "CPX"
        resize_partitions(gpu, hive.spec)
    sync_node(node=emulated.node)
    for partition, load in enumerate((0.9, 0.2, 0.6, 1.0, 0.0, 0.4, 0.75, 0.1)):
        emulated.state.set_load(0, partition, load, vram_used_mb=2_000 + 2_500 * partition)
    emulated.state.set_load(1, 0, 0.65, vram_used_mb=120_000)
    return emulated


def open_dashboard(page, console, query: str = "") -> None:  # type: ignore[no-untyped-def]
    sign_in(page, console, "vera", "pw-vera")
    page.goto(f"{console.url}/dashboard/{query}")


def wait_in_page(page, expression: str, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll a JavaScript expression (page.wait_for_function evals its predicate in the page,
    which the console's CSP forbids: no 'unsafe-eval')."""
    wait_for(lambda: page.evaluate(expression), timeout, what, interval=0.1)


def points(page, chart: str) -> list[int]:  # type: ignore[no-untyped-def]
    return page.evaluate("(id) => (document.getElementById(id).data || []).map((t) => t.x.length)", f"chart-{chart}")


def traces(page, chart: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return page.evaluate(
        "(id) => document.getElementById(id).data.map((t) => ({name: t.name, key: t.meta && t.meta.key,"
        " color: t.line.color, y: t.y}))", f"chart-{chart}")


def test_gpu_view_grows_over_the_websocket_then_goes_stale(page, console, redis_layer, viewer, tmp_path):
    mixed_node(tmp_path)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    open_dashboard(page, console, f"?node={NODE}&gpu=0")
    assert page.locator("h1").inner_text().startswith("Utilization")
    emulated_note = page.locator("#dashboard-emulated")
    assert emulated_note.is_visible() and "data is emulated, not real hardware" in emulated_note.inner_text()
    # Connected, no snapshot yet (nothing sampled): empty charts, not stale.
    page.wait_for_selector("#dashboard-status[data-state=waiting]", timeout=10_000)
    assert points(page, "activity") == [] and page.locator("#dashboard-stale").is_hidden()

    sampler = Sampler(NODE)
    sampler.start()
    try:
        wait_in_page(page, "['activity', 'vram', 'power', 'temperature'].every((c) => {"
                     " const d = document.getElementById('chart-' + c).data;"
                     " return d.length > 0 && d.every((t) => t.x.length >= 3); })", 20, "3 points in every trace")
        first = points(page, "activity")
        assert len(first) == 8  # GPU 0 in CPX: its 8 partitions, one line each
        assert len(points(page, "vram")) == 8 and len(points(page, "power")) == 1
        time.sleep(2.5)
        later = points(page, "activity")
        assert all(b > a for a, b in zip(first, later)), (first, later)  # new frames keep arriving
        assert page.locator("#dashboard-status").get_attribute("data-state") == "live"

        activity = {t["name"]: t for t in traces(page, "activity")}
        assert f"{NODE} g0/p3 (derived)" in activity
        busy, idle = activity[f"{NODE} g0/p3 (derived)"]["y"], activity[f"{NODE} g0/p4 (derived)"]["y"]
        assert busy[-1] > 80 and idle[-1] < 20
        vram_names = [t["name"] for t in traces(page, "vram")]
        assert f"{NODE} g0/p3" in vram_names and not any("derived" in n for n in vram_names)  # only activity is derived
        for trace in traces(page, "vram"):
            assert trace["color"] == next(t["color"] for t in activity.values() if t["key"] == trace["key"])
        # Legend as a table: last, mean, max per series; the VRAM total is a threshold line.
        legend = page.locator("#legend-activity tbody tr")
        assert legend.count() == 8 and f"{NODE} g0/p3 (derived)" in legend.nth(3).inner_text()
        assert page.evaluate("document.getElementById('chart-activity').layout.hovermode") == "closest"
        shapes = page.evaluate("document.getElementById('chart-vram').layout.shapes.map((s) => s.label.text)")
        assert shapes == ["VRAM total 24 GiB"]
        assert page.evaluate("document.getElementById('chart-heatmap').data[0].z.length") == 8
        screenshot(page, "dashboard-gpu")
    finally:
        sampler.stop()

    # No sample for 3 x 0.3 s (+ a tick): stale, and the charts stop growing.
    page.wait_for_selector("#dashboard-stale:not([hidden])", timeout=8_000)
    assert page.locator("#dashboard-status").get_attribute("data-state") == "stale"
    frozen = points(page, "activity")
    time.sleep(1.5)
    assert points(page, "activity") == frozen
    assert not errors, errors


def test_fleet_of_20_nodes_heatmap_top_n_and_drill_down(page, console, redis_layer, viewer):
    """20 simulated nodes x 8 GPUs x 8 partitions (1,280 partitions): the heatmap's rows become
    GPUs, lines are the busiest 12 nodes, and top-N links drill down to a GPU."""
    import json

    import redis
    from django.conf import settings

    from partitions.models import Node
    from partitions.telemetry_store import snapshot_key
    from tests.partitions.fleetsnapshots import fleet

    snaps = fleet(20, prefix="sim-fleet-")
    Node.objects.bulk_create([Node(name=n, emulated=True, backend=Node.Backend.SIMULATED) for n in snaps])
    client = redis.Redis.from_url(settings.REDIS_URL)
    stop = threading.Event()

    def refresh() -> None:  # agents sampling every second
        while not stop.is_set():
            now = time.time()
            client.mset({snapshot_key(n): json.dumps({**s, "ts": now}) for n, s in snaps.items()})
            stop.wait(1.0)

    feeder = threading.Thread(target=refresh, daemon=True)
    feeder.start()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        open_dashboard(page, console)
        wait_in_page(page, "(document.getElementById('chart-heatmap').data[0].x || []).length >= 2", 20, "two heatmap columns")
        rows = page.evaluate("document.getElementById('chart-heatmap').data[0].y")
        assert len(rows) == 160 and rows[0] == "sim-fleet-1 g0"  # GPUs, grouped by node
        assert "GPUs" in page.locator("#heatmap-rows-are").inner_text()
        assert len(traces(page, "activity")) == 12 and page.locator("#legend-activity tbody tr").count() == 12
        assert page.locator("#top-busy tbody tr").count() == 10 and page.locator("#top-idle tbody tr").count() == 10
        assert "emulated" in page.locator("#dashboard-emulated").inner_text()
        screenshot(page, "dashboard-fleet-20")
        link = page.locator("#top-busy tbody tr a").first
        target = link.get_attribute("href")
        link.click()
        page.wait_for_url(f"**/dashboard/{target}")
        assert "gpu" in page.locator("h1").inner_text()
        wait_in_page(page, "document.getElementById('chart-activity').data.length === 8", 20, "a GPU's 8 partitions")
    finally:
        stop.set()
        feeder.join(5)
    assert not errors, errors


def test_table_of_latest_values_without_javascript(browser, console, redis_layer, viewer, tmp_path):
    """With JavaScript off the page still reads: a note and the table of the latest snapshot."""
    mixed_node(tmp_path)
    sampler = Sampler(NODE)  # one sample: the snapshot is stored in Redis
    sampler.start()
    wait_for(lambda: sampler.samples or sampler.errors, 20, "a sample")
    sampler.stop()
    context = browser.new_context(viewport={"width": 1400, "height": 900}, java_script_enabled=False)
    try:
        page = context.new_page()
        open_dashboard(page, console, f"?node={NODE}")
        assert "live charts need JavaScript" in page.locator("main").inner_text()
        assert page.locator("#dashboard-charts").is_hidden()
        rows = page.locator("#dashboard-latest tbody tr")
        assert rows.count() == 9
        assert "emu-node-1 gpu0/p3" in rows.nth(3).inner_text() and "(derived)" in rows.nth(3).inner_text()
    finally:
        context.close()


# A stand-in WebSocket that closes with a given code: the page's reaction to refusals and drops
# (daphne turns a consumer's close before accept into a failed handshake, so the real codes
# 4401/4403/4404 do not reach a browser today; the page must still handle them).
FAKE_SOCKET = """
window.__sockets = [];
window.WebSocket = class {
  constructor(url) {
    window.__sockets.push(url);
    setTimeout(() => this.onclose && this.onclose({code: %d, reason: ""}), 50);
  }
  close() {}
};
"""


@pytest.mark.parametrize("code, text", [(4404, "unknown node"), (4403, "may not view"), (4401, "not signed in")])
def test_refused_socket_shows_why_and_does_not_reconnect(page, live_server, viewer, code, text):
    from partitions.models import Node

    Node.objects.create(name=NODE, emulated=True)
    page.add_init_script(FAKE_SOCKET % code)
    page.goto(f"{live_server.url}/accounts/login/?next=/dashboard/%3Fnode%3D{NODE}")
    page.fill("#id_username", "vera")
    page.fill("#id_password", "pw-vera")
    page.click("button[type=submit]")
    page.wait_for_selector("#dashboard-status[data-state=refused]", timeout=20_000)  # the page loads Plotly first
    assert text in page.locator("#dashboard-status").inner_text() and str(code) in page.locator("#dashboard-status").inner_text()
    time.sleep(2)
    sockets = [url for url in page.evaluate("window.__sockets") if "/ws/me/" not in url]  # base.html's toasts socket
    assert sockets == [f"ws://{live_server.url.split('://')[1]}/ws/dashboard/?node={NODE}"]


def test_dropped_socket_reconnects_with_backoff(page, live_server, viewer):
    page.add_init_script(FAKE_SOCKET % 1006)
    page.goto(f"{live_server.url}/accounts/login/?next=/dashboard/")
    page.fill("#id_username", "vera")
    page.fill("#id_password", "pw-vera")
    page.click("button[type=submit]")
    page.wait_for_selector("#dashboard-status[data-state=reconnecting]", timeout=20_000)  # the page loads Plotly first
    assert "retrying" in page.locator("#dashboard-status").inner_text()
    dashboard_sockets = "window.__sockets.filter((u) => u.includes('/ws/dashboard/')).length"
    wait_in_page(page, dashboard_sockets + " >= 3", 8, "two reconnects")  # after ~1 s, then ~2 s
    started = time.monotonic()
    time.sleep(2.5)
    assert page.evaluate(dashboard_sockets) <= 4, "backoff grows (next retry after ~4 s)"
    assert time.monotonic() - started >= 2.5
