"""Telemetry fan-out through the channel layer, on a real Redis and the real layer.

1. Latency (publish -> receipt) for 100 subscribed consumers: 100 channels in the fleet
   telemetry group, one ``group_send`` at a time (the next once all 100 have it) carrying a
   ``time.perf_counter()`` stamp. Baseline, same run, same payload size and count: raw Redis
   pub/sub with redis.asyncio, 100 subscriber connections on one Redis channel.
   Both sides share one event loop with the publisher and decode the same msgpack payload, so
   the ratio isolates the layer's own path (one subscription per process, then in-process
   queues per channel) against Redis writing to 100 sockets.
2. Messages per second per dashboard: the real ``TelemetryConsumer`` (``/ws/telemetry/`` via
   ``aimconsole.asgi.application``, a superuser) while a publisher sends node snapshots for
   NODES x PARTITIONS partition samples per second (125 nodes x 8 partitions at 1 Hz = 1,000/s)
   to ``telemetry.node.<name>`` and ``telemetry.fleet`` like ``events.publish_telemetry``.
   Counts WebSocket messages per dashboard per second (the consumer promises at most 2), the
   smallest gap between two of them, and checks that the dashboard's merged view (snapshot,
   then each update applied in order, as the page does) ends with the latest sample of every
   node: coalesced, nothing lost, never older than what it replaced.

Redis: ``REDIS_URL`` when set, else a bundled redis-server (``aimconsole.embedded``) on a free
port, stopped at the end. The layer gets its own key prefix so a shared Redis's live
dashboards never see benchmark traffic. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aimconsole import embedded  # noqa: E402  (stdlib only at import: no Django settings yet)

HEADERS = [(b"origin", b"http://localhost"), (b"host", b"localhost")]


# --- redis --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_redis(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- payloads -----------------------------------------------------------------------------

def node_name(i: int) -> str:
    return f"bench-{i:04d}"


def snapshot(node: str, seq: int, partitions: int) -> dict[str, Any]:
    """A snapshot shaped like ``partitions.telemetry.shape`` (one partition per GPU)."""
    rnd = random.random
    return {
        "node": node, "ts": time.time(), "seq": seq, "interval_s": 1.0, "emulated": True,
        "gpus": [
            {
                "index": g, "power_w": round(300 + 400 * rnd(), 1), "temperature_c": round(40 + 40 * rnd(), 1),
                "mem_temperature_c": round(40 + 30 * rnd(), 1), "gfx_activity": round(100 * rnd(), 1),
                "ecc_uncorrectable": 0,
                "partitions": [{"index": 0, "logical_index": g, "gfx_activity": round(100 * rnd(), 1),
                                "derived": False, "vram_used_mb": int(192000 * rnd()), "vram_total_mb": 196592}],
            }
            for g in range(partitions)
        ],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# --- 1. latency: channel layer vs raw pub/sub ---------------------------------------------

async def _closed_loop(publish, consumers: int, count: int, warmup: int, counter: dict[str, Any]) -> None:
    """Publish one message at a time; the next once all ``consumers`` received the last."""
    for i in range(warmup + count):
        counter["left"] = consumers
        counter["done"] = asyncio.Event()
        counter["record"] = i >= warmup
        await publish()
        await asyncio.wait_for(counter["done"].wait(), timeout=10)


def _received(counter: dict[str, Any], latencies: list[float], sent_at: float) -> None:
    now = time.perf_counter()
    if counter["record"]:
        latencies.append(now - sent_at)
    counter["left"] -= 1
    if counter["left"] == 0:
        counter["done"].set()


async def layer_latency(layer: Any, group: str, consumers: int, count: int, warmup: int, partitions: int) -> dict[str, Any]:
    channels = [await layer.new_channel() for _ in range(consumers)]
    for channel in channels:
        await layer.group_add(group, channel)
    latencies: list[float] = []
    counter: dict[str, Any] = {}
    base = {"type": "telemetry.snapshot", "node": node_name(0), "snapshot": snapshot(node_name(0), 0, partitions)}

    async def receive(channel: str) -> None:
        while True:
            message = await layer.receive(channel)
            _received(counter, latencies, message["snapshot"]["t"])

    async def publish() -> None:
        base["snapshot"]["t"] = time.perf_counter()
        await layer.group_send(group, base)

    tasks = [asyncio.ensure_future(receive(channel)) for channel in channels]
    try:
        await _closed_loop(publish, consumers, count, warmup, counter)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await layer.group_discard(group, channel)
    base["snapshot"]["t"] = time.perf_counter()
    return {"latencies": latencies, "payload_bytes": len(layer.serialize(base)), "message": base}


async def raw_latency(url: str, consumers: int, count: int, warmup: int, message: dict[str, Any]) -> dict[str, Any]:
    import msgpack
    import redis.asyncio as aioredis

    channel = f"aimbench-raw-{uuid.uuid4().hex}"
    publisher = aioredis.Redis.from_url(url)
    clients = [aioredis.Redis.from_url(url) for _ in range(consumers)]
    pubsubs = [client.pubsub() for client in clients]
    for pubsub in pubsubs:
        await pubsub.subscribe(channel)
    latencies: list[float] = []
    counter: dict[str, Any] = {}

    async def receive(pubsub: Any) -> None:
        while True:  # the same read loop as channels_redis' RedisSingleShardConnection
            raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if raw is not None:
                _received(counter, latencies, msgpack.unpackb(raw["data"])["snapshot"]["t"])

    payload_bytes = 0

    async def publish() -> None:
        nonlocal payload_bytes
        message["snapshot"]["t"] = time.perf_counter()
        data = msgpack.packb(message)
        payload_bytes = len(data)
        await publisher.publish(channel, data)

    tasks = [asyncio.ensure_future(receive(pubsub)) for pubsub in pubsubs]
    try:
        await _closed_loop(publish, consumers, count, warmup, counter)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pubsub in pubsubs:
            await pubsub.aclose()
        for client in [publisher, *clients]:
            await client.aclose()
    return {"latencies": latencies, "payload_bytes": payload_bytes}


async def raw_shared_latency(url: str, consumers: int, count: int, warmup: int, message: dict[str, Any]) -> dict[str, Any]:
    """Second baseline: ONE raw subscriber connection handing each message to ``consumers``
    in-process queues (what the layer does, without its code): the floor for the layer."""
    import msgpack
    import redis.asyncio as aioredis

    channel = f"aimbench-raw-{uuid.uuid4().hex}"
    publisher, client = aioredis.Redis.from_url(url), aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    queues: list[asyncio.Queue[bytes]] = [asyncio.Queue() for _ in range(consumers)]
    latencies: list[float] = []
    counter: dict[str, Any] = {}

    async def reader() -> None:
        while True:
            raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if raw is not None:
                for queue in queues:
                    queue.put_nowait(raw["data"])

    async def receive(queue: asyncio.Queue[bytes]) -> None:
        while True:
            _received(counter, latencies, msgpack.unpackb(await queue.get())["snapshot"]["t"])

    async def publish() -> None:
        message["snapshot"]["t"] = time.perf_counter()
        await publisher.publish(channel, msgpack.packb(message))

    tasks = [asyncio.ensure_future(reader())] + [asyncio.ensure_future(receive(queue)) for queue in queues]
    try:
        await _closed_loop(publish, consumers, count, warmup, counter)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pubsub.aclose()
        for c in (publisher, client):
            await c.aclose()
    return {"latencies": latencies}


# --- 2. dashboards under 1,000 partition samples per second -------------------------------

async def dashboards_under_load(layer: Any, user: Any, dashboards: int, nodes: int, partitions: int,
                                samples_per_s: float, seconds: float) -> dict[str, Any]:
    from channels.testing import WebsocketCommunicator

    from aimconsole.asgi import application
    from partitions import events

    comms, logs = [], []
    for _ in range(dashboards):
        comm = WebsocketCommunicator(application, "/ws/telemetry/", headers=HEADERS)
        comm.scope["user"] = user
        connected, code = await comm.connect(timeout=10)
        if not connected:
            raise RuntimeError(f"/ws/telemetry/ refused the dashboard (close code {code})")
        first = await comm.receive_json_from(timeout=10)
        if first.get("type") != "telemetry.snapshot":
            raise RuntimeError(f"expected the snapshot first, got {first.get('type')!r}")
        comms.append(comm)
        logs.append([(time.time(), first)])

    stop = asyncio.Event()

    async def collect(comm: Any, log: list[tuple[float, dict[str, Any]]]) -> None:
        # receive_nothing() polls without cancelling the app (receive_* with a timeout would).
        while True:
            if await comm.receive_nothing(timeout=0.05, interval=0.002):
                if stop.is_set():
                    return
                continue
            log.append((time.time(), await comm.receive_json_from()))

    collectors = [asyncio.ensure_future(collect(comm, log)) for comm, log in zip(comms, logs)]
    snapshots_per_s = samples_per_s / partitions
    interval = 1.0 / snapshots_per_s
    total = int(round(seconds * snapshots_per_s))
    last_seq: dict[str, int] = {}
    started = time.perf_counter()
    for k in range(total):
        delay = started + k * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        name = node_name(k % nodes)
        seq = k // nodes
        event = {"type": "telemetry.snapshot", "node": name, "snapshot": snapshot(name, seq, partitions)}
        # What events.publish_telemetry sends, on this loop's layer (it is sync: async_to_sync).
        await layer.group_send(events.node_telemetry_group(name), dict(event))
        await layer.group_send(events.FLEET_TELEMETRY_GROUP, dict(event))
        last_seq[name] = seq
    published_s = time.perf_counter() - started
    published_end = time.time()
    await asyncio.sleep(2 * 0.5 + 0.5)  # the last coalescing window, with room to spare
    stop.set()
    await asyncio.gather(*collectors)
    for comm in comms:
        await comm.disconnect()

    per_dashboard, staleness, all_latest, in_order = [], [], True, True
    for log in logs:
        merged: dict[str, dict[str, Any]] = dict(log[0][1]["nodes"])
        updates = [(at, msg) for at, msg in log[1:] if msg.get("type") == "telemetry.update"]
        delivered = 0
        for at, msg in updates:
            for name, snap in msg["nodes"].items():
                if name in merged and snap["seq"] <= merged[name]["seq"]:
                    in_order = False
                merged[name] = snap
                staleness.append(at - snap["ts"])
                delivered += 1
        all_latest &= all(merged.get(name, {}).get("seq") == seq for name, seq in last_seq.items())
        arrivals = [at for at, _ in updates]
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
        in_window = [at for at in arrivals if at <= published_end]
        per_dashboard.append({
            "messages": len(updates),
            # between the first and the last message sent during the load (no connect/tail edges)
            "msgs_per_s": (len(in_window) - 1) / (in_window[-1] - in_window[0]) if len(in_window) > 1 else float("nan"),
            "msgs_per_load_s": len(in_window) / published_s,
            "min_gap_s": min(gaps) if gaps else float("nan"),
            "delivered_fraction": delivered / total,
            "bytes_per_s": sum(len(json.dumps(msg)) for _, msg in updates) / published_s,
            "nodes_in_last": len(updates[-1][1]["nodes"]) if updates else 0,
        })
    return {
        "dashboards": per_dashboard,
        "published": total,
        "published_s": published_s,
        "achieved_samples_per_s": total * partitions / published_s,
        "latest_delivered": all_latest and in_order,
        "in_order": in_order,
        "staleness": staleness,
    }


# --- the sync publisher the agent uses ----------------------------------------------------

def sync_publish_cost(url: str, partitions: int, calls: int) -> tuple[float, float]:
    """Median seconds of one ``events.publish_telemetry`` call from sync code (the agent's
    sampler thread), and the Redis connections it opens per call (from ``INFO stats``;
    exact on the benchmark's own Redis, approximate on a shared one)."""
    import redis

    from partitions import events

    client = redis.Redis.from_url(url)
    before = client.info("stats")["total_connections_received"]
    times = []
    for i in range(calls):
        snap = snapshot(node_name(0), i, partitions)
        start = time.perf_counter()
        events.publish_telemetry(node_name(0), snap)
        times.append(time.perf_counter() - start)
    opened = client.info("stats")["total_connections_received"] - before
    client.close()
    return statistics.median(times), opened / calls


# --- main ---------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, shorter load (about 10 s; 20 s without)")
    parser.add_argument("--consumers", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=125)
    parser.add_argument("--partitions", type=int, default=8, help="partitions per node snapshot")
    parser.add_argument("--samples-per-s", type=float, default=1000.0, help="partition samples per second")
    args = parser.parse_args()
    count, warmup = (200, 20) if args.quick else (1000, 50)
    seconds = 4.0 if args.quick else 10.0
    dashboards = 3 if args.quick else 10

    proc, redis_dir = None, None
    url = os.environ.get("REDIS_URL", "")
    try:
        if not url:
            redis_dir = Path(tempfile.mkdtemp(prefix="aim-bench-redis-"))
            port = free_port()
            proc = embedded.start_redis(port, redis_dir)
            url = f"redis://127.0.0.1:{port}/0"
            os.environ["REDIS_URL"] = url  # read by the settings at import (and the Celery broker)
        wait_for_redis(url, proc)
        return run(args, url, count, warmup, seconds, dashboards, own_redis=proc is not None)
    finally:
        if proc is not None:
            stop_redis(proc)
        if redis_dir is not None:
            shutil.rmtree(redis_dir, ignore_errors=True)


def run(args: argparse.Namespace, url: str, count: int, warmup: int, seconds: float, dashboards: int,
        own_redis: bool) -> int:
    import _django

    _django.setup()
    from django.conf import settings

    # The production layer (same backend and options) on this Redis, under a prefix of its own.
    layers = json.loads(json.dumps(settings.CHANNEL_LAYERS))
    layers["default"]["CONFIG"]["hosts"][0]["address"] = url
    layers["default"]["CONFIG"]["prefix"] = f"aimbench{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = layers
    settings.REDIS_URL = url
    from channels.layers import channel_layers, get_channel_layer
    channel_layers.backends.clear()
    assert layers["default"]["BACKEND"] == "channels_redis.pubsub.RedisPubSubChannelLayer", layers["default"]["BACKEND"]

    from django.contrib.auth import get_user_model

    from partitions import events
    from partitions.models import Node

    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password")
    Node.objects.bulk_create([Node(name=node_name(i), emulated=True) for i in range(args.nodes)])
    publish_sync_s, publish_sync_conns = sync_publish_cost(url, args.partitions, 20 if args.quick else 50)

    async def body() -> tuple[dict[str, Any], ...]:
        layer = get_channel_layer()
        try:
            lay = await layer_latency(layer, events.FLEET_TELEMETRY_GROUP, args.consumers, count, warmup, args.partitions)
            raw = await raw_latency(url, args.consumers, count, warmup, lay["message"])
            shared = await raw_shared_latency(url, args.consumers, count, warmup, lay["message"])
            dash = await dashboards_under_load(layer, user, dashboards, args.nodes, args.partitions,
                                               args.samples_per_s, seconds)
        finally:
            await layer.flush()
        return lay, raw, shared, dash

    lay, raw, shared, dash = asyncio.run(body())
    ms = 1000.0
    layer_p50, layer_p99 = percentile(lay["latencies"], 50) * ms, percentile(lay["latencies"], 99) * ms
    raw_p50, raw_p99 = percentile(raw["latencies"], 50) * ms, percentile(raw["latencies"], 99) * ms
    shared_p50, shared_p99 = percentile(shared["latencies"], 50) * ms, percentile(shared["latencies"], 99) * ms
    rates = [d["msgs_per_s"] for d in dash["dashboards"]]
    min_gap = min(d["min_gap_s"] for d in dash["dashboards"])
    result = {
        "benchmark": "fanout",
        "consumers": args.consumers,
        "messages": count,
        "payload_bytes": lay["payload_bytes"],
        "layer_p50_ms": round(layer_p50, 3),
        "layer_p99_ms": round(layer_p99, 3),
        "raw_p50_ms": round(raw_p50, 3),
        "raw_p99_ms": round(raw_p99, 3),
        "layer_over_raw_p50": round(layer_p50 / raw_p50, 2),
        "layer_over_raw_p99": round(layer_p99 / raw_p99, 2),
        "raw_shared_p50_ms": round(shared_p50, 3),
        "raw_shared_p99_ms": round(shared_p99, 3),
        "layer_over_raw_shared_p50": round(layer_p50 / shared_p50, 2),
        "dashboards": dashboards,
        "nodes": args.nodes,
        "partitions_per_node": args.partitions,
        "partition_samples_per_s": round(dash["achieved_samples_per_s"], 1),
        "load_seconds": round(dash["published_s"], 2),
        "dashboard_msgs_per_s": round(max(rates), 2),
        "dashboard_msgs_per_load_s": round(max(d["msgs_per_load_s"] for d in dash["dashboards"]), 2),
        "dashboard_min_gap_ms": round(min_gap * ms, 1),
        "dashboard_kb_per_s": round(max(d["bytes_per_s"] for d in dash["dashboards"]) / 1024, 1),
        "samples_delivered_fraction": round(min(d["delivered_fraction"] for d in dash["dashboards"]), 4),
        "staleness_p50_ms": round(percentile(dash["staleness"], 50) * ms, 1),
        "staleness_max_ms": round(max(dash["staleness"]) * ms, 1),
        "latest_delivered": dash["latest_delivered"],
        "publish_telemetry_sync_ms": round(publish_sync_s * ms, 2),
        "publish_telemetry_redis_connections_per_call": round(publish_sync_conns, 2),
        "redis": "embedded" if own_redis else "REDIS_URL",
    }
    print(f"redis: {result['redis']}; layer {layers['default']['BACKEND']}; payload {lay['payload_bytes']} B "
          f"(raw {raw['payload_bytes']} B), {count} messages x {args.consumers} consumers")
    print(f"channel layer group_send -> 100 channels: p50 {layer_p50:.3f} ms  p99 {layer_p99:.3f} ms")
    print(f"raw redis pub/sub -> 100 subscribers:     p50 {raw_p50:.3f} ms  p99 {raw_p99:.3f} ms")
    print(f"raw, 1 connection -> 100 queues:          p50 {shared_p50:.3f} ms  p99 {shared_p99:.3f} ms")
    print(f"layer / raw: p50 x{result['layer_over_raw_p50']}  p99 x{result['layer_over_raw_p99']}; "
          f"layer / raw 1-connection: p50 x{result['layer_over_raw_shared_p50']}")
    print(f"load: {args.nodes} nodes x {args.partitions} partitions, {result['partition_samples_per_s']} partition "
          f"samples/s for {result['load_seconds']} s, {dashboards} dashboards on /ws/telemetry/")
    for i, d in enumerate(dash["dashboards"]):
        print(f"  dashboard {i}: {d['messages']} messages, {d['msgs_per_s']:.2f}/s "
              f"({d['msgs_per_load_s']:.2f}/s counted over the whole load, connect edge included), min gap {d['min_gap_s'] * ms:.0f} ms, "
              f"{d['bytes_per_s'] / 1024:.1f} KiB/s, {d['nodes_in_last']} nodes in the last, "
              f"{d['delivered_fraction']:.1%} of samples delivered")
    print(f"sample age on arrival: p50 {result['staleness_p50_ms']} ms, max {result['staleness_max_ms']} ms; "
          f"latest sample of every node delivered: {result['latest_delivered']} (in order: {dash['in_order']})")
    print(f"events.publish_telemetry from sync code (agent path): {result['publish_telemetry_sync_ms']} ms per call, "
          f"{result['publish_telemetry_redis_connections_per_call']} new Redis connections per call")
    print(json.dumps(result))
    return 0 if result["latest_delivered"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
