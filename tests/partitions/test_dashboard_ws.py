"""The dashboard WebSocket (partitions/dashboard_consumers.py): bounded frames, one per tick,
shared across connections; scopes and refusals."""

from __future__ import annotations

import json

import pytest
import redis
from channels.testing import WebsocketCommunicator

from tests.partitions.fleetsnapshots import fleet

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def communicator(path: str, user):  # type: ignore[no-untyped-def]
    from aimconsole.asgi import application

    c = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
    c.scope["user"] = user
    return c


async def seed(redis_url: str, nodes: int, prefix: str) -> list[str]:
    from asgiref.sync import sync_to_async

    from partitions.models import Node
    from partitions.telemetry_store import snapshot_key

    snaps = fleet(nodes, prefix=prefix)
    await sync_to_async(Node.objects.bulk_create)([Node(name=n, emulated=True) for n in snaps])
    client = redis.Redis.from_url(redis_url)
    client.mset({snapshot_key(n): json.dumps(s) for n, s in snaps.items()})
    return list(snaps)


async def frame_bytes(user, path: str = "/ws/dashboard/") -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    ws = communicator(path, user)
    connected, _ = await ws.connect()
    assert connected
    message = await ws.receive_output(timeout=10)
    await ws.disconnect()
    assert message["type"] == "websocket.send", message
    return len(message["text"].encode()), json.loads(message["text"])


@pytest.mark.redis
async def test_frame_size_stays_within_a_constant_factor_from_2_to_100_nodes(viewer, redis_url):
    """2 vs 100 simulated nodes x 8 GPUs x 8 partitions (128 vs 6,400 partitions)."""
    from partitions import dashboard_consumers

    dashboard_consumers._FRAMES.clear()
    await seed(redis_url, 2, "small-")
    small, frame = await frame_bytes(viewer)
    assert frame["type"] == "dashboard.frame" and frame["counts"]["partitions"] == 128
    assert frame["heatmap"]["level"] == "partition" and len(frame["heatmap"]["values"]) == 128
    await seed(redis_url, 98, "large-")
    dashboard_consumers._FRAMES.clear()
    large, frame = await frame_bytes(viewer)
    assert frame["counts"]["partitions"] == 6400 and frame["heatmap"]["level"] == "node"
    assert len(frame["series"]["items"]) == 12 and frame["series"]["total"] == 100
    assert large <= 2 * small, (small, large)  # bytes: 6,400 partitions cost no more than 2x 128
    assert large < 40_000


@pytest.mark.redis
async def test_one_frame_per_tick_shared_by_connections_and_scoped_views(viewer, redis_url, monkeypatch):
    from partitions import dashboard_consumers

    dashboard_consumers._FRAMES.clear()
    await seed(redis_url, 3, "scoped-")
    computed: list[str] = []
    real = dashboard_consumers.compute_frame

    async def counting(scope):  # type: ignore[no-untyped-def]
        computed.append(scope.key)
        return await real(scope)

    monkeypatch.setattr(dashboard_consumers, "compute_frame", counting)
    a, b = communicator("/ws/dashboard/", viewer), communicator("/ws/dashboard/", viewer)
    assert (await a.connect())[0] and (await b.connect())[0]
    received = [await a.receive_json_from(timeout=5), await b.receive_json_from(timeout=5)]
    for _ in range(2):  # the next ticks
        received += [await a.receive_json_from(timeout=3), await b.receive_json_from(timeout=3)]
    await a.disconnect()
    await b.disconnect()
    assert len(computed) <= 3 + 1, computed  # once per tick for both connections (a tick may split the first pair)
    assert len({m["ts"] for m in received}) <= 4

    _, gpu = await frame_bytes(viewer, "/ws/dashboard/?node=scoped-2&gpu=3")
    assert gpu["scope"] == {"level": "gpu", "node": "scoped-2", "gpu": 3, "deployment": None}
    assert [s["key"] for s in gpu["series"]["items"]] == [f"scoped-2|3|{p}" for p in range(8)]


async def test_refusals(viewer, norole):
    from django.contrib.auth.models import AnonymousUser

    from tests.wsutil import outcome

    assert await outcome(communicator("/ws/dashboard/", AnonymousUser())) == 4401
    assert await outcome(communicator("/ws/dashboard/", norole)) == 4403
    assert await outcome(communicator("/ws/dashboard/?node=nope", viewer)) == 4404
    assert await outcome(communicator("/ws/dashboard/?gpu=x", viewer)) == 4404
