"""Page weight and render cost at fleet scale: the fleet, dashboard and overview pages for a
simulated fleet of 2, 10, 125 and 1,000 nodes x 8 MI300X GPUs x 8 partitions (every GPU in CPX).

Fleet: ``serving.simulation.simulate_fleet`` (the ``manage.py simulate_fleet`` function:
Node/GPU/Partition rows bulk-created, simulated backend, labelled emulated; a quarter of the
partitions held by simulated deployments, one replica each; a telemetry snapshot of every node
and its summary, as an agent stores both)
in a private Redis (the bundled redis-server on a free port), plus 50 finished operations, so
the pages and streams have live data.

Measured per page and fleet size:
- server: median time of a few GETs through Django's test client (the whole middleware stack),
  response bytes, database queries (``CaptureQueriesContext``). The dashboard computes its
  frame once per tick (1 s) and view, whoever loads it (``partitions.dashboard.page_frame``):
  ``server_ms`` is a load within a tick another load already paid for, ``cold_server_ms`` one
  that computes the frame (the cache emptied before each GET: the cost of the first viewer,
  and of every load on a fleet whose data changed since);
- WebSocket: for each live stream the console routes (``/ws/telemetry/``, and ``/ws/dashboard/``
  and ``/ws/fleet/`` where they exist; "not present" otherwise), the bytes of the first message
  on connect and of the update after one published sample (``WebsocketCommunicator`` on the
  console's routes);
- Chromium (Playwright, Debian's /usr/bin/chromium) on the real ASGI server (daphne, the redis
  channel layer): DOMContentLoaded, the bytes of every WebSocket frame the page receives, and
  the time from publishing one telemetry sample (``partitions.events.publish_telemetry``) to
  the first DOM mutation the page had not made before (a MutationObserver; its kind is
  reported, so the reader can judge what was detected).

- Chromium, /fleet/ only: the requests the page makes after a fleet-wide change (every node
  published as changed on ``/ws/fleet/``): it refetches only what its page shows.

Baseline: the 10-node fleet measured in the same run (the smallest fleet when 10 is not
measured). The issue asks for growth, so every figure is reported with its ratio to the
baseline's (10 -> 125 -> 1,000 nodes: nodes grow x12.5 and x100); ``targets`` checks the
issue's bound, /fleet/ and /dashboard/ at the largest fleet within 3x their bytes and server
time at 10 nodes.

``--quick``: 10 and 100 nodes only. ``--database-url postgres://...``: run on that (throw-away)
PostgreSQL database instead of a fresh SQLite file; it is created when missing and its fleet
rows are replaced. ``--no-browser``: server and WebSocket figures only. Last stdout line: one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _django import free_port, start_redis  # noqa: E402

PAGES = ("/fleet/", "/dashboard/", "/overview/")
STREAMS = ("ws/telemetry/", "ws/dashboard/", "ws/fleet/")
GPUS_PER_NODE, PARTS_PER_GPU = 8, 8
GIB_MB = 1024
CHROMIUM = os.environ.get("AIM_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "bench-pages-pw"
UPDATE_ACTIVITY = 93.0  # the published sample's activity: a value the seeded snapshots never show


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 100 nodes only")
    parser.add_argument("--database-url", default="", help="a throw-away PostgreSQL database (default: SQLite)")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium measurements")
    parser.add_argument("--nodes", default="", help="comma-separated fleet sizes (overrides the defaults)")
    return parser.parse_args(argv)


def ensure_postgres_database(url: str) -> None:
    """Create the database ``url`` names when it does not exist (connecting to ``postgres``)."""
    from urllib.parse import urlparse

    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin_url = parsed._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(database_url: str, redis_url: str) -> dict[str, str]:
    """Django on a fresh SQLite file (or ``database_url``) and the private Redis; returns the
    environment a console subprocess needs to share both."""
    os.environ["AIM_VAR_DIR"] = tempfile.mkdtemp(prefix="aim-bench-pages-")
    os.environ["REDIS_URL"] = redis_url
    os.environ["AIM_REDIS_KEY_PREFIX"] = "aim:bench-pages:"
    os.environ["DJANGO_SETTINGS_MODULE"] = "aimconsole.settings.local"
    os.environ["DJANGO_DEBUG"] = "False"
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    if database_url:
        ensure_postgres_database(database_url)
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ.pop("DATABASE_URL", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return {key: os.environ[key] for key in ("AIM_VAR_DIR", "REDIS_URL", "AIM_REDIS_KEY_PREFIX", "DJANGO_SETTINGS_MODULE",
                                            "DJANGO_DEBUG", *(["DATABASE_URL"] if database_url else []))}


# --- the fleet ---------------------------------------------------------------------------------

def partition_sample(gpu: int, part: int, activity: float) -> dict[str, Any]:
    return {"index": part, "logical_index": gpu * PARTS_PER_GPU + part, "gfx_activity": activity, "derived": part > 0,
            "vram_used_mb": 12 * GIB_MB, "vram_total_mb": 24 * GIB_MB}


def node_snapshot(name: str, activity: float | None = None) -> dict[str, Any]:
    """One node's telemetry sample, shaped like the agent's (partitions/telemetry.py)."""
    return {"node": name, "ts": time.time(), "interval_s": 1.0, "emulated": True, "gpus": [
        {"index": g, "power_w": 650.0 + g, "temperature_c": 61.0, "mem_temperature_c": 55.0, "gfx_activity": 40.0,
         "ecc_uncorrectable": 0, "partitions": [
             partition_sample(g, p, 40.0 + p if activity is None else activity) for p in range(PARTS_PER_GPU)]}
        for g in range(GPUS_PER_NODE)]}


def build_fleet(nodes_count: int, redis_client: Any) -> list[str]:
    """Replace the fleet with ``nodes_count`` simulated CPX nodes (``simulate_fleet``, a
    quarter of the partitions held) and 50 finished operations; returns the node names."""
    from django.utils import timezone

    from partitions.models import Node, Reconfiguration
    from serving.simulation import remove_simulation, simulate_fleet

    Reconfiguration.objects.all().delete()
    remove_simulation(prefix="sim-", redis_client=redis_client)
    built = simulate_fleet(nodes=nodes_count, prefix="sim-", compute_mode="CPX", occupancy=0.25, redis_client=redis_client)
    nodes = list(Node.objects.filter(name__in=built.node_names).order_by("name"))
    now = timezone.now()
    Reconfiguration.objects.bulk_create([
        Reconfiguration(kind="compute", node=nodes[i % len(nodes)], gpu_index=0, target_compute_mode="CPX",
                        state=("succeeded", "rolled_back", "failed")[i % 3],
                        started_at=now - timezone.timedelta(seconds=60 + i), finished_at=now - timezone.timedelta(seconds=i))
        for i in range(50)])
    refresh(built.node_names, redis_client)
    return built.node_names


def refresh(names: list[str], redis_client: Any) -> None:
    """A live fleet: every agent's heartbeat now and a fresh snapshot of every node (there are
    no agents; without this the pages would show agents down and telemetry stale)."""
    from django.utils import timezone

    from partitions.aggregate import node_summary
    from partitions.models import Node
    from partitions.telemetry_store import snapshot_key, summary_key

    Node.objects.update(agent_heartbeat_at=timezone.now())  # the fleet is exactly these nodes
    pipe = redis_client.pipeline()
    for name in names:
        snapshot = node_snapshot(name)
        pipe.set(snapshot_key(name), json.dumps(snapshot), ex=3600)
        pipe.set(summary_key(name), json.dumps(node_summary(snapshot)), ex=3600)  # as an agent stores both
    pipe.execute()


# --- server side ---------------------------------------------------------------------------------

def measure_server(client: Any, url: str, repeat: int, fresh: Any, cold: Any = None) -> dict[str, Any]:
    """``cold``: called before each of ``repeat`` more GETs, timed apart (``cold_server_ms``)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    fresh()
    client.get(url)  # warm-up
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    queries = len(ctx.captured_queries)  # now: the next request's request_started clears the log
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        client.get(url)
        times.append(time.perf_counter() - start)
    result = {"server_ms": round(statistics.median(times) * 1000, 1), "bytes": len(response.content), "queries": queries}
    if cold is not None:
        cold_times = []
        for _ in range(repeat):
            cold()
            start = time.perf_counter()
            client.get(url)
            cold_times.append(time.perf_counter() - start)
        result["cold_server_ms"] = round(statistics.median(cold_times) * 1000, 1)
    return result


def routed_streams() -> dict[str, bool]:
    """Which of the live streams the console routes (other work may add /ws/dashboard/, /ws/fleet/)."""
    from aimconsole.routing import websocket_urlpatterns

    routes = {str(p.pattern) for p in websocket_urlpatterns}
    return {stream: stream in routes for stream in STREAMS}


async def _stream_sizes(stream: str, user: Any, node: str) -> dict[str, Any]:
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from aimconsole.routing import websocket_urlpatterns
    from partitions import events

    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/" + stream)
    communicator.scope["user"] = user
    connected, code = await communicator.connect(timeout=120)
    if not connected:
        return {"error": f"refused ({code})"}
    result: dict[str, Any] = {}
    try:
        # /ws/fleet/ sends only on a change: nothing on connect is an answer, not a hang.
        if await communicator.receive_nothing(timeout=20):
            result["first_message_bytes"] = None
        else:
            first = await communicator.receive_output(timeout=120)
            if first["type"] == "websocket.close":
                return {"error": f"closed ({first.get('code')})"}
            result["first_message_bytes"] = len(first.get("text") or first.get("bytes") or "")
        await asyncio.sleep(0.6)  # past the stream's coalescing interval
        await asyncio.to_thread(events.publish_telemetry, node, node_snapshot(node, UPDATE_ACTIVITY))
        sizes = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            # receive_output's timeout would cancel the consumer: ask receive_nothing first.
            if await communicator.receive_nothing(timeout=max(0.1, deadline - time.monotonic())):
                break
            message = await communicator.receive_output(timeout=5)
            if message["type"] != "websocket.send":
                break
            sizes.append(len(message.get("text") or message.get("bytes") or ""))
            if len(sizes) >= 3:
                break
        result["update_message_bytes"] = max(sizes) if sizes else None
        result["update_messages"] = len(sizes)
    finally:
        try:
            await communicator.disconnect(timeout=30)
        except (TimeoutError, asyncio.CancelledError):
            result["disconnect"] = "the consumer did not finish within 30 s of the disconnect"
    return result


def measure_streams(user: Any, node: str) -> dict[str, Any]:
    """In a thread of its own: Playwright's sync API keeps an event loop in this one."""
    from django.db import connection

    out: dict[str, Any] = {}

    def run() -> None:
        try:
            for stream, present in routed_streams().items():
                out["/" + stream] = asyncio.run(_stream_sizes(stream, user, node)) if present else "not present"
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out


# --- Chromium ------------------------------------------------------------------------------------

# Runs in every page before its scripts: after DOMContentLoaded, record what each DOM mutation
# looks like (kind, attribute, tag, new value). Until armed, they are the page's own changes;
# after, the first one never seen before is the live update applied.
OBSERVER_SCRIPT = """
(() => {
  const w = window;
  w.__aim = {noise: new Set(), armed: false, armedAt: 0, first: null, count: 0};
  function sig(r) {
    const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
    const tag = el ? el.tagName : "?";
    let value = "";
    if (r.type === "attributes") value = el ? String(el.getAttribute(r.attributeName)) : "";
    else if (r.type === "characterData") value = r.target.data;
    else value = Array.from(r.addedNodes).map((n) => n.textContent || n.nodeName).join("|");
    return r.type + " " + (r.attributeName || "") + " " + tag + " " + value.slice(0, 160);
  }
  document.addEventListener("DOMContentLoaded", () => {
    new MutationObserver((records) => {
      const now = Date.now();
      for (const r of records) {
        w.__aim.count++;
        const s = sig(r);
        if (!w.__aim.armed) w.__aim.noise.add(s);
        else if (w.__aim.first === null && !w.__aim.noise.has(s)) w.__aim.first = {t: now, sig: s};
      }
    }).observe(document.documentElement, {subtree: true, childList: true, attributes: true, characterData: true});
  });
})();
"""


class Console:
    """daphne serving the console's ASGI application on the benchmark's database and Redis."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.handle = open(log, "ab")
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        full_env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "aimconsole.asgi:application"],
            cwd=REPO, env=full_env, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("daphne exited: " + log.read_text(errors="replace")[-2000:])
            try:
                if urllib.request.urlopen(f"{self.url}/healthz", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("daphne did not answer /healthz in 90 s")
            time.sleep(0.2)

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.handle.close()


def publish_in_thread(node: str) -> float:
    """Publish one sample from a thread (Playwright's sync API holds this thread's event loop);
    returns the epoch ms just before publishing."""
    from partitions import events

    box: dict[str, float] = {}

    def run() -> None:
        box["t"] = time.time() * 1000
        events.publish_telemetry(node, node_snapshot(node, UPDATE_ACTIVITY))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return box["t"]


def measure_browser(browser: Any, console: Console, username: str, node: str, repeat: int, fresh: Any) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(OBSERVER_SCRIPT)
    page = context.new_page()
    page.set_default_timeout(180_000)
    page.goto(f"{console.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.url}/fleet/")
    frames: dict[str, list[int]] = {}

    def on_websocket(ws: Any) -> None:
        path = ws.url.split("://", 1)[-1].split("/", 1)[-1].split("?")[0]
        sizes = frames.setdefault("/" + path, [])
        ws.on("framereceived", lambda payload: sizes.append(len(payload)))

    page.on("websocket", on_websocket)
    results: dict[str, Any] = {}
    for url in PAGES:
        dcl, first_update, detected = [], [], ""
        for _ in range(repeat):
            frames.clear()
            fresh()
            page.goto(f"{console.url}{url}", wait_until="load")
            dcl.append(page.evaluate(
                "() => { const n = performance.getEntriesByType('navigation')[0]; return n.domContentLoadedEventEnd - n.startTime; }"))
            # Let the page apply what its streams send on connect, then arm and push one sample.
            settle = time.monotonic() + 60
            # /ws/me/ (notices) sends nothing on connect: wait only for the live streams.
            while time.monotonic() < settle and not all(frames.get("/" + st) for st in STREAMS if "/" + st in frames):
                page.wait_for_timeout(100)  # lets Playwright deliver the frame events
            page.wait_for_timeout(1500)
            page.evaluate("() => { window.__aim.armed = true; window.__aim.armedAt = Date.now(); }")
            published_at = publish_in_thread(node)
            deadline = time.monotonic() + 10
            first = None
            while time.monotonic() < deadline:
                first = page.evaluate("() => window.__aim.first")
                if first:
                    break
                page.wait_for_timeout(50)
            if first:
                first_update.append(max(0.0, first["t"] - published_at))
                detected = first["sig"][:120]
        streams = {path: {"frames": len(sizes), "first_frame_bytes": sizes[0] if sizes else None,
                          "max_frame_bytes": max(sizes) if sizes else None} for path, sizes in frames.items()}
        results[url] = {
            "dom_content_loaded_ms": round(statistics.median(dcl), 1),
            "first_live_update_ms": round(statistics.median(first_update), 1) if first_update else None,
            "first_live_update_seen": f"{len(first_update)} of {repeat}",
            "first_live_update_mutation": detected or "none within 10 s",
            "websocket_frames": streams,
        }
    context.close()
    return results


# --- growth ---------------------------------------------------------------------------------------

def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


BASELINE_NODES = 10
TARGET_RATIO = 3.0  # the bound: /fleet/ and /dashboard/ at 1,000 nodes within 3x of 10 nodes
TARGET_PAGES = ("/fleet/", "/dashboard/")


def baseline(scales: list[dict[str, Any]]) -> dict[str, Any]:
    """The 10-node scale, else the smallest measured."""
    return next((s for s in scales if s["nodes"] == BASELINE_NODES), scales[0])


def growth(scales: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each page's figures divided by the baseline's figure, per larger fleet size."""
    base = baseline(scales)
    ratios: dict[str, dict[str, Any]] = {}
    for page in PAGES:
        base_figures = flatten(base["pages"][page])
        page_ratios: dict[str, Any] = {}
        for scale in (s for s in scales if s["nodes"] > base["nodes"]):
            figures = flatten(scale["pages"][page])
            page_ratios[f"{base['nodes']}->{scale['nodes']}"] = {
                key: round(figures[key] / value, 2) for key, value in base_figures.items() if value and key in figures}
        ratios[page] = page_ratios
    return ratios


def targets(scales: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's bound at the largest fleet against the baseline: bytes and server time of
    /fleet/ and /dashboard/ (the dashboard's both warm and cold) within ``TARGET_RATIO``."""
    base, top = baseline(scales), max(scales, key=lambda s: s["nodes"])
    out: dict[str, Any] = {"from": base["nodes"], "to": top["nodes"], "bound": TARGET_RATIO}
    for page in TARGET_PAGES:
        b, t = base["pages"][page]["server"], top["pages"][page]["server"]
        for key in ("bytes", "server_ms", "cold_server_ms"):
            if b.get(key) and t.get(key) is not None:
                ratio = round(t[key] / b[key], 2)
                out[f"{page} {key}"] = {"ratio": ratio, "met": ratio <= TARGET_RATIO}
    return out


def measure_fleet_wide_change(browser: Any, console: Console, username: str, names: list[str]) -> dict[str, Any]:
    """Open /fleet/, publish every node as changed on /ws/fleet/ and count the requests the
    page makes for it (its cards, or its page's results) within 3 s."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(180_000)
    page.goto(f"{console.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.url}/fleet/")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and page.evaluate("document.getElementById('live-status').dataset.state") != "live":
        page.wait_for_timeout(100)
    page.wait_for_timeout(1500)  # "live" is the first socket's; let /ws/fleet/ join its group too
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url) if "/fleet/" in request.url else None)

    def publish() -> None:
        from django.db import connection

        from partitions import events

        try:
            for name in names:
                events.publish_fleet_changed(name)
        finally:
            connection.close()

    thread = threading.Thread(target=publish)
    thread.start()
    while thread.is_alive():
        page.wait_for_timeout(100)  # lets Playwright deliver the request events
    page.wait_for_timeout(3000)
    context.close()
    return {"nodes_changed": len(names), "requests": len(requests),
            "card_requests": sum("/card/" in url for url in requests),
            "page_requests": sum("/fleet/cards/" in url for url in requests)}


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    sizes = [int(n) for n in args.nodes.split(",")] if args.nodes else ([10, 100] if args.quick else [2, 10, 125, 1000])
    redis_proc, redis_url = start_redis()
    console: Console | None = None
    playwright = browser = None
    try:
        console_env = setup_django(args.database_url, redis_url)
        import redis
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.test import Client, override_settings

        from models.services import load_catalog
        from partitions import dashboard

        load_catalog()
        user_model = get_user_model()
        user_model.objects.filter(username="bench-pages").delete()
        user = user_model.objects.create_user("bench-pages", password=PASSWORD)
        user.groups.add(Group.objects.get(name="viewer"))
        redis_client = redis.Redis.from_url(redis_url)
        if not args.no_browser:
            from playwright.sync_api import sync_playwright

            # Playwright's sync API runs an event loop in this thread; this process's ORM calls
            # are synchronous and safe (the daphne subprocess keeps Django's guard).
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

            console = Console(console_env, Path(os.environ["AIM_VAR_DIR"]) / "daphne.log")
            playwright = sync_playwright().start()
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
        scales = []
        for nodes_count in sizes:
            started = time.perf_counter()
            repeat = 5 if nodes_count <= 2 else (3 if nodes_count <= 125 else 2)
            names = build_fleet(nodes_count, redis_client)
            build_s = time.perf_counter() - started

            def fresh(names: list[str] = names) -> None:
                refresh(names, redis_client)
            pages: dict[str, Any] = {}
            with override_settings(ALLOWED_HOSTS=["testserver", "127.0.0.1", "localhost"]):
                client = Client()
                client.force_login(user)
                for url in PAGES:
                    cold = dashboard._PAGE_FRAMES.clear if url == "/dashboard/" else None
                    pages[url] = {"server": measure_server(client, url, repeat, fresh, cold)}
            streams = measure_streams(user, names[0])
            if browser is not None and console is not None:
                # Chromium's figures: fewer repetitions at the largest fleet (2 cores).
                in_browser = measure_browser(browser, console, "bench-pages", names[0], 2 if nodes_count <= 125 else 1, fresh)
                for url in PAGES:
                    pages[url]["browser"] = in_browser[url]
                pages["/fleet/"]["browser"]["fleet_wide_change"] = measure_fleet_wide_change(
                    browser, console, "bench-pages", names)
            scales.append({"nodes": nodes_count, "gpus": nodes_count * GPUS_PER_NODE,
                           "partitions": nodes_count * GPUS_PER_NODE * PARTS_PER_GPU, "pages": pages, "streams": streams,
                           "build_s": round(build_s, 1), "measure_s": round(time.perf_counter() - started - build_s, 1)})
            for url in PAGES:
                s = pages[url]["server"]
                b = pages[url].get("browser", {})
                cold = f" (cold {s['cold_server_ms']:.1f} ms)" if "cold_server_ms" in s else ""
                print(f"{nodes_count:5d} nodes {url:12s} server {s['server_ms']:9.1f} ms{cold} {s['bytes']:10d} B "
                      f"{s['queries']:4d} queries | DOMContentLoaded {b.get('dom_content_loaded_ms')} ms, "
                      f"first live update {b.get('first_live_update_ms')} ms"
                      + (f", fleet-wide change: {b['fleet_wide_change']}" if "fleet_wide_change" in b else ""), flush=True)
            print(f"{nodes_count:5d} nodes streams: {json.dumps(streams)}", flush=True)
        print(json.dumps({
            "benchmark": "pages", "quick": args.quick, "database": "postgresql" if args.database_url else "sqlite",
            "baseline": f"the {baseline(scales)['nodes']}-node fleet measured in the same run (the issue asks for growth ratios)",
            "streams_routed": {"/" + k: ("present" if v else "not present") for k, v in routed_streams().items()},
            "scales": scales, "growth_vs_baseline": growth(scales) if len(scales) > 1 else {},
            "targets": targets(scales) if len(scales) > 1 else {},
        }))
        if len(scales) > 1:
            for key, value in targets(scales).items():
                if isinstance(value, dict):
                    print(f"target {key}: x{value['ratio']} ({'met' if value['met'] else 'NOT met'}, bound x{TARGET_RATIO})",
                          file=sys.stderr)
    finally:
        if browser is not None:
            browser.close()
        if playwright is not None:
            playwright.stop()
        if console is not None:
            console.stop()
        redis_proc.terminate()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
