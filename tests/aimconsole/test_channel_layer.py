"""The channel layer forgets a closed socket's channel: replays of live WebSocket load leave
no queue, no group membership and no Redis subscription behind (aimconsole/channel_layer.py)."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
import uuid

import pytest
import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from partitions import events

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), pytest.mark.redis]

SOCKETS = 20


@pytest.fixture
def pubsub_layer(settings, redis_url):  # type: ignore[no-untyped-def]
    """The production channel layer on the test Redis, under a prefix of this test's own."""
    prefix = f"aimtest{uuid.uuid4().hex[:10]}"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "aimconsole.channel_layer.PubSubChannelLayer",
                                           "CONFIG": {"hosts": [redis_url], "prefix": prefix}}}
    return prefix


async def _replay(viewer, layer) -> None:  # type: ignore[no-untyped-def]
    """SOCKETS fleet views connect, take a stream of heartbeats, and all disconnect while
    it still flows (their channels have messages waiting when they stop)."""
    from aimconsole.asgi import application

    sockets = [WebsocketCommunicator(application, "/ws/fleet/", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
               for _ in range(SOCKETS)]
    for ws in sockets:
        ws.scope["user"] = viewer
        connected, _ = await ws.connect(timeout=10)
        assert connected
    flowing = True

    async def heartbeats() -> None:
        while flowing:
            await layer.group_send(events.FLEET_GROUP, {"type": "fleet.heartbeat", "node": "n1", "at": time.time()})
            await asyncio.sleep(0.001)

    flood = asyncio.ensure_future(heartbeats())
    await asyncio.sleep(0.3)
    for ws in sockets:
        await ws.disconnect(timeout=10)
    flowing = False
    await flood


async def _left_behind(layer, prefix: str, client) -> dict[str, int]:  # type: ignore[no-untyped-def]
    await asyncio.sleep(0.3)  # unsubscriptions reach the server
    gc.collect()
    loop_layer = layer._get_layer()
    return {
        "channels": len(loop_layer.channels),
        "group members": sum(len(members) for members in loop_layer.groups.values()),
        "redis subscriptions": len(await client.pubsub_channels(f"{prefix}*")),
        "queues": sum(1 for o in gc.get_objects() if isinstance(o, asyncio.Queue)),
        "traced bytes": tracemalloc.get_traced_memory()[0],
    }


async def test_five_replays_of_live_sockets_leave_nothing_behind(viewer, pubsub_layer, redis_url):
    layer = get_channel_layer()
    client = aioredis.Redis.from_url(redis_url)
    tracemalloc.start()
    try:
        await _replay(viewer, layer)  # warm-up: connections, caches, imports
        after_warmup = await _left_behind(layer, pubsub_layer, client)
        for _ in range(5):
            await _replay(viewer, layer)
        after = await _left_behind(layer, pubsub_layer, client)
    finally:
        tracemalloc.stop()
        await layer.flush()
        await client.aclose()
    assert after_warmup["channels"] == after["channels"] == 0, (after_warmup, after)
    assert after["group members"] == 0 and after["redis subscriptions"] == 0, after
    assert after["queues"] <= after_warmup["queues"], (after_warmup, after)
    # 100 sockets came and went: what stayed is well under one socket's worth each.
    assert after["traced bytes"] - after_warmup["traced bytes"] < 100 * 1024, (after_warmup, after)


async def test_clean_channel_forgets_a_channel_that_is_still_in_a_group(pubsub_layer, redis_url):
    layer = get_channel_layer()
    client = aioredis.Redis.from_url(redis_url)
    try:
        channel = await layer.new_channel()
        await layer.group_add("fleet", channel)
        await layer.group_send("fleet", {"type": "fleet.heartbeat", "node": "n1", "at": 1.0})
        await asyncio.sleep(0.3)  # the message is queued for the channel, never received
        assert len(await client.pubsub_channels(f"{pubsub_layer}*")) == 2  # the channel and the group
        await layer.clean_channel(channel)
        await asyncio.sleep(0.3)
        assert layer._get_layer().channels == {} and layer._get_layer().groups == {}
        assert await client.pubsub_channels(f"{pubsub_layer}*") == []
        await layer.clean_channel(channel)  # twice: nothing left to do
    finally:
        await layer.flush()
        await client.aclose()
