"""The telemetry WebSocket: snapshot on connect, coalesced updates (at most 2 per second)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from partitions import events

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def communicator(path: str, user):  # type: ignore[no-untyped-def]
    from aimconsole.asgi import application

    c = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
    c.scope["user"] = user
    return c


@pytest.mark.redis
async def test_snapshot_on_connect_then_coalesced_updates(viewer, redis_url):
    from asgiref.sync import sync_to_async

    from partitions.models import Node
    from partitions.telemetry_store import snapshot_key

    await sync_to_async(Node.objects.create)(name="n1", emulated=True)
    await sync_to_async(Node.objects.create)(name="n2", emulated=True)
    client = redis.Redis.from_url(redis_url)
    client.set(snapshot_key("n1"), json.dumps({"node": "n1", "ts": 1.0, "devices": []}), ex=30)
    ws = communicator("/ws/telemetry/", viewer)
    connected, _ = await ws.connect()
    assert connected
    first = await ws.receive_json_from(timeout=5)
    assert first["type"] == "telemetry.snapshot" and set(first["nodes"]) == {"n1"}

    layer = get_channel_layer()
    started = time.monotonic()
    for i in range(40):  # 20 samples per node within ~0.4 s
        for node in ("n1", "n2"):
            await layer.group_send(events.FLEET_TELEMETRY_GROUP,
                                   {"type": "telemetry.snapshot", "node": node, "snapshot": {"node": node, "ts": i}})
        await asyncio.sleep(0.01)
    received = []
    while not await ws.receive_nothing(timeout=1.2):
        received.append(await ws.receive_json_from())
    elapsed = time.monotonic() - started
    assert 1 <= len(received) <= 2 * elapsed + 1, (len(received), elapsed)
    last = received[-1]["nodes"]
    assert last["n1"]["ts"] == 39 and last["n2"]["ts"] == 39  # nothing lost: the latest of each node
    await ws.disconnect()


async def test_node_view_refuses_unknown_nodes_and_anonymous_users(viewer):
    from django.contrib.auth.models import AnonymousUser

    from tests.wsutil import outcome

    assert await outcome(communicator("/ws/telemetry/?node=nope", viewer)) == 4404
    assert await outcome(communicator("/ws/telemetry/", AnonymousUser())) == 4401


async def test_consumer_tests_run_with_djangos_async_safety_guard_on():
    """A sync ORM call in a consumer fails these tests as it fails under daphne: nothing in
    the run (the browser tests' conftest included) switches Django's guard off here."""
    from django.core.exceptions import SynchronousOnlyOperation

    from partitions.models import Node

    with pytest.raises(SynchronousOnlyOperation):
        Node.objects.count()
