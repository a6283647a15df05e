"""The telemetry WebSocket (``/ws/telemetry/``): one view per target (fleet aggregates, a
node, a GPU, a deployment), each message encoded once per process, bounded coalescing
outboxes, slow clients closed with 4408, Redis reads on pooled connections."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from partitions import events
from partitions.telemetry_hub import MAX_DROPPED, TelemetryHub
from partitions.telemetry_views import GPU_COLUMNS
from tests.wsutil import outcome

STORED_TS = 1e11  # the stored snapshot's time; live samples are later (1e12 + i)
pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), pytest.mark.redis]


class Browser(WebsocketCommunicator):
    """A communicator whose connect waits longer than 1 s (a loaded CI machine)."""

    async def connect(self, timeout: float = 10) -> Any:
        return await super().connect(timeout)


def communicator(path: str, user):  # type: ignore[no-untyped-def]
    from aimconsole.asgi import application

    c = Browser(application, path, headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
    c.scope["user"] = user
    return c


class StalledBrowser(Browser):
    """A browser that stopped reading: once ``window`` frames wait unread, the server's next
    send blocks (as a full TCP window blocks uvicorn's)."""

    window = 1

    @property
    def output_queue(self) -> asyncio.Queue[Any]:
        if self._output_queue is None:
            self._output_queue = asyncio.Queue(maxsize=self.window)
        return self._output_queue


def sample(node: str, ts: float, activities: list[list[float]]) -> dict[str, Any]:
    return {"node": node, "ts": ts, "interval_s": 1.0, "emulated": True,
            "gpus": [{"index": g, "power_w": 500.0, "temperature_c": 60.0, "mem_temperature_c": 50.0,
                      "gfx_activity": None, "ecc_uncorrectable": 0,
                      "partitions": [{"index": p, "logical_index": g * 8 + p, "gfx_activity": a, "derived": True,
                                      "vram_used_mb": 100, "vram_total_mb": 24000} for p, a in enumerate(parts)]}
                     for g, parts in enumerate(activities)]}


async def publish(node: str, ts: float, activities: list[list[float]] | None = None) -> None:
    """What an agent's sampler publishes (partitions/events.py), from a sync thread."""
    await sync_to_async(events.publish_telemetry)(node, sample(node, ts, activities or [[10.0, 20.0], [30.0, 90.0]]))


async def receive(ws: Browser) -> dict[str, Any]:
    return await ws.receive_json_from(timeout=5)


async def drain(ws: Browser) -> list[dict[str, Any]]:
    out = []
    while not await ws.receive_nothing(timeout=0.3):
        out.append(await ws.receive_json_from())
    return out


@pytest.fixture
def fleet(db, redis_url):  # type: ignore[no-untyped-def]
    """Nodes n1 and n2 with GPUs 0 and 1 each; n1's snapshot stored in Redis."""
    from partitions.models import GPU, Node
    from partitions.telemetry_store import snapshot_key

    for name in ("n1", "n2"):
        node = Node.objects.create(name=name, emulated=True)
        for index in (0, 1):
            GPU.objects.create(node=node, index=index, gpu_model="MI300X", compute_mode="SPX", memory_mode="NPS1")
    client = redis.Redis.from_url(redis_url)
    client.set(snapshot_key("n1"), json.dumps(sample("n1", STORED_TS, [[5.0], [6.0]])), ex=30)
    client.close()


@pytest.fixture
def manual_ticks(monkeypatch):  # type: ignore[no-untyped-def]
    """The fleet view is sent when the test calls ``hub.tick()``, not on a timer."""
    monkeypatch.setattr(TelemetryHub, "fleet_interval_s", 3600.0)


async def test_the_fleet_view_gets_aggregates_per_node_and_gpu_never_every_partition(viewer, fleet, manual_ticks):
    ws = communicator("/ws/telemetry/", viewer)
    assert (await ws.connect())[0]
    first = await receive(ws)
    assert first["type"] == "telemetry.fleet" and set(first["nodes"]) == {"n1"}  # from the stored snapshot
    for ts in (2.0, 3.0, 4.0):
        await publish("n1", 1e12 + ts)
        await publish("n2", 1e12 + ts)
    await asyncio.sleep(0.05)  # the in-memory layer hands the events over
    assert await ws.receive_nothing(timeout=0.2)  # nothing between ticks
    await TelemetryHub.current().tick()
    [view] = await drain(ws)  # one tick, one message, for six samples
    assert view["type"] == "telemetry.fleet" and set(view["nodes"]) == {"n1", "n2"}
    n2 = view["nodes"]["n2"]
    assert n2["ts"] == 1e12 + 4.0 and n2["activity_max"] == 90.0 and n2["partitions"] == 4
    assert [dict(zip(view["gpu_columns"], row))["activity_mean"] for row in n2["gpus"]] == [15.0, 60.0]
    assert view["gpu_columns"] == list(GPU_COLUMNS)
    assert [(t["node"], t["activity"]) for t in view["top"][:2]] == [("n1", 90.0), ("n2", 90.0)]
    assert "snapshot" not in view and all("top" not in n for n in view["nodes"].values())
    await ws.disconnect()


async def test_each_view_gets_only_what_it_watches(viewer, fleet, monkeypatch):
    monkeypatch.setattr("partitions.telemetry_hub.load_holdings",
                        lambda names: {"chat": {"n2": frozenset({(1, 0)})}} if "chat" in set(names) else {})
    node_view = communicator("/ws/telemetry/?node=n1", viewer)
    gpu_view = communicator("/ws/telemetry/?node=n2&gpu=1", viewer)
    deployment = communicator("/ws/telemetry/?deployment=chat", viewer)
    for ws in (node_view, gpu_view, deployment):
        assert (await ws.connect())[0]
    current = await receive(node_view)  # n1's stored snapshot, relayed
    assert current["type"] == "telemetry.node" and current["snapshot"]["ts"] == STORED_TS
    await publish("n1", 1e12 + 1)
    await publish("n2", 1e12 + 1)

    n1 = await receive(node_view)
    assert n1["type"] == "telemetry.node" and n1["node"] == "n1" and n1["snapshot"]["ts"] == 1e12 + 1
    gpu = await receive(gpu_view)
    assert gpu["type"] == "telemetry.gpu" and gpu["node"] == "n2" and gpu["gpu"]["index"] == 1
    assert [p["gfx_activity"] for p in gpu["gpu"]["partitions"]] == [30.0, 90.0]
    held = await receive(deployment)
    assert held["type"] == "telemetry.deployment" and held["deployment"] == "chat" and held["node"] == "n2"
    assert [(p["gpu"], p["index"], p["gfx_activity"]) for p in held["partitions"]] == [(1, 0, 30.0)]
    for ws in (node_view, gpu_view, deployment):
        assert await drain(ws) == []  # nothing of the other node, GPU or partitions
        await ws.disconnect()


async def test_a_page_may_connect_watching_nothing_until_it_subscribes(viewer, fleet, manual_ticks):
    ws = communicator("/ws/telemetry/?subscribe", viewer)
    assert (await ws.connect())[0]
    await publish("n1", 1e12)
    await TelemetryHub.current().tick()
    assert await ws.receive_nothing(timeout=0.3)
    await ws.send_json_to({"type": "subscribe", "targets": [{"node": "n1"}, {}]})
    received = {m["type"]: m for m in [await receive(ws), await receive(ws)]}
    # the current state of each new target: the stored snapshot (the sample before went nowhere)
    assert received["telemetry.node"]["snapshot"]["ts"] == STORED_TS
    assert received["telemetry.fleet"]["nodes"]["n1"]["ts"] == STORED_TS
    await ws.disconnect()


async def test_a_deployment_view_follows_the_partitions_its_slots_hold(viewer, fleet, catalog):
    from models.models import ModelProfile
    from partitions.models import GPU, Partition
    from serving.models import Deployment, DeploymentSlot

    def place() -> None:
        profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                           gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
        deployment = Deployment.objects.create(name="chat", profile=profile, replicas=1)
        gpu = GPU.objects.get(node__name="n2", index=1)
        for index in (0, 1):
            part = Partition.objects.create(gpu=gpu, index=index, logical_index=8 + index)
            if index == 1:
                DeploymentSlot.objects.create(deployment=deployment, replica=0, partition=part)

    await sync_to_async(place)()
    ws = communicator("/ws/telemetry/?deployment=chat", viewer)
    assert (await ws.connect())[0]
    await publish("n1", 1e12)
    await publish("n2", 1e12)
    message = await receive(ws)
    assert message["type"] == "telemetry.deployment" and message["node"] == "n2"
    assert [(p["gpu"], p["index"], p["gfx_activity"]) for p in message["partitions"]] == [(1, 1, 90.0)]
    assert await drain(ws) == []  # n1 holds none of it
    await ws.disconnect()


async def test_a_subscribe_message_replaces_what_the_connection_watches(viewer, fleet, manual_ticks):
    ws = communicator("/ws/telemetry/", viewer)
    assert (await ws.connect())[0]
    assert (await receive(ws))["type"] == "telemetry.fleet"
    await ws.send_json_to({"type": "subscribe", "targets": [{"node": "n2"}]})
    await asyncio.sleep(0.05)
    await publish("n1", 1e12)
    await publish("n2", 1e12)
    await asyncio.sleep(0.05)
    await TelemetryHub.current().tick()
    received = await drain(ws)
    assert [(m["type"], m.get("node")) for m in received] == [("telemetry.node", "n2")]  # no fleet, no n1
    await ws.disconnect()


async def test_messages_are_encoded_once_per_process_not_once_per_client(viewer, fleet, manual_ticks, monkeypatch):
    socks = [communicator(path, viewer) for path in ["/ws/telemetry/"] * 3 + ["/ws/telemetry/?node=n2&gpu=0"] * 3
             + ["/ws/telemetry/?node=n2"] * 3]
    for ws in socks:
        assert (await ws.connect())[0]
    for ws in socks[:3]:
        await receive(ws)  # the fleet view's current state
    encoded = []
    real_encode = events.encode
    monkeypatch.setattr(events, "encode", lambda payload: encoded.append(payload.get("type")) or real_encode(payload))
    layer = get_channel_layer()
    snap = sample("n2", 1e12, [[1.0], [2.0]])
    text = events.node_message_text("n2", json.dumps(snap))  # as the agent sends it: encoded there
    await layer.group_send(events.node_telemetry_group("n2"), {"type": "telemetry.sample", "node": "n2", "ts": 1e12, "text": text})
    for ws in socks[3:]:
        message = await receive(ws)
        assert message["node"] == "n2" and message["ts" if message["type"] == "telemetry.gpu" else "snapshot"]
    await layer.group_send(events.FLEET_TELEMETRY_GROUP, {"type": "telemetry.summary", "node": "n2",
                                                          "summary": {"node": "n2", "ts": 1e12, "partitions": 2}})
    await asyncio.sleep(0.05)
    await TelemetryHub.current().tick()
    for ws in socks[:3]:
        assert set((await receive(ws))["nodes"]) >= {"n2"}
    # one GPU slice for three GPU clients, one fleet view for three fleet clients, nothing for node views
    assert sorted(encoded) == ["telemetry.fleet", "telemetry.gpu"]
    for ws in socks:
        await ws.disconnect()


async def test_a_stalled_client_never_delays_the_others_and_is_closed_with_4408(viewer, fleet):
    from aimconsole.asgi import application

    slow = StalledBrowser(application, "/ws/telemetry/?node=n2", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
    slow.scope["user"] = viewer
    fast = communicator("/ws/telemetry/?node=n2", viewer)
    connected = await slow.connect()  # reads the accept: the window is free again
    assert connected[0] and (await fast.connect())[0]
    for i in range(MAX_DROPPED + 3):  # one frame waits unread, one send blocks, then the outbox drops
        await publish("n2", 1e12 + i)
        message = await receive(fast)
        assert message["snapshot"]["ts"] == 1e12 + i  # the fast client gets every sample, at once
    first = await slow.receive_output(timeout=5)
    assert json.loads(first["text"])["snapshot"]["ts"] == 1e12  # what it had read before stalling
    closed = await slow.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4408}
    await publish("n2", 2e12)
    assert (await receive(fast))["snapshot"]["ts"] == 2e12  # the others go on
    await fast.disconnect()


async def test_a_slow_client_gets_the_newest_sample_of_each_key_not_a_backlog(viewer, fleet):
    ws = communicator("/ws/telemetry/?node=n2", viewer)
    assert (await ws.connect())[0]
    hub = TelemetryHub.current()
    [client] = [c for c in hub.clients]
    for i in range(5):  # the outbox coalesces while the sender is busy: queue them directly
        hub.dispatch({"type": "telemetry.sample", "node": "n2", "ts": 1e12 + i,
                      "text": events.node_message_text("n2", json.dumps({"ts": 1e12 + i}))})
    assert len(client.queue) <= 1
    received = await drain(ws)
    assert received[-1]["snapshot"]["ts"] == 1e12 + 4 and len(received) <= 2
    await ws.disconnect()


@pytest.mark.parametrize(("path", "code"), [
    ("/ws/telemetry/?node=nope", 4404),
    ("/ws/telemetry/?node=n1&gpu=7", 4404),
    ("/ws/telemetry/?deployment=ghost", 4404),
    ("/ws/telemetry/?gpu=1", 4400),
    ("/ws/telemetry/?node=n1&gpu=x", 4400),
    ("/ws/telemetry/?colour=red", 4400),
    ("/ws/telemetry/?node=n1", "accept"),
    ("/ws/telemetry/?node=n1&gpu=1", "accept"),
])
async def test_unknown_targets_are_404_and_malformed_ones_400(viewer, fleet, path, code):
    assert await outcome(communicator(path, viewer)) == code


@pytest.mark.parametrize(("message", "code"), [
    ({"type": "subscribe", "targets": [{"node": "nope"}]}, 4404),
    ({"type": "subscribe", "targets": [{"gpu": 1}]}, 4400),
    ({"type": "subscribe", "targets": None}, 4400),
    ({"type": "subscribe", "targets": [{"node": f"n{i}"} for i in range(65)]}, 4400),
    ({"type": "unsubscribe"}, 4400),
    ("not json", 4400),
])
async def test_a_bad_subscribe_message_closes_with_a_clear_code(viewer, fleet, manual_ticks, message, code):
    ws = communicator("/ws/telemetry/", viewer)
    assert (await ws.connect())[0]
    await receive(ws)
    if isinstance(message, str):
        await ws.send_to(text_data=message)
    else:
        await ws.send_json_to(message)
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": code}


async def test_anonymous_users_are_refused(fleet):
    from django.contrib.auth.models import AnonymousUser

    assert await outcome(communicator("/ws/telemetry/", AnonymousUser())) == 4401


async def test_connects_reuse_pooled_redis_connections(viewer, fleet, monkeypatch):
    import redis.asyncio.connection as aioconnection

    opened = []
    real_connect = aioconnection.AbstractConnection.connect

    async def counting_connect(self):  # type: ignore[no-untyped-def]
        if not self.is_connected:
            opened.append(self)
        await real_connect(self)

    monkeypatch.setattr(aioconnection.AbstractConnection, "connect", counting_connect)
    for _ in range(5):
        ws = communicator("/ws/telemetry/?node=n1", viewer)
        assert (await ws.connect())[0]
        assert (await receive(ws))["snapshot"]["ts"] == STORED_TS  # read from Redis on connect
        await ws.disconnect()
    assert len(opened) == 1


async def test_consumer_tests_run_with_djangos_async_safety_guard_on():
    """A sync ORM call in a consumer fails these tests as it fails under daphne: nothing in
    the run (the browser tests' conftest included) switches Django's guard off here."""
    from django.core.exceptions import SynchronousOnlyOperation

    from partitions.models import Node

    with pytest.raises(SynchronousOnlyOperation):
        Node.objects.count()
