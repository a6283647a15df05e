"""The live fleet's sockets: ``/ws/fleet/`` (what changed, coalesced) and ``/ws/me/`` (the
signed-in user's notices, for toasts)."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from partitions import events
from tests.wsutil import outcome

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def communicator(path: str, user):  # type: ignore[no-untyped-def]
    from channels.testing import WebsocketCommunicator

    from aimconsole.asgi import application

    c = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
    if user is not None:
        c.scope["user"] = user
    return c


async def test_fleet_changes_are_merged_into_few_messages(viewer):
    ws = communicator("/ws/fleet/", viewer)
    connected, _ = await ws.connect()
    assert connected
    layer = get_channel_layer()
    for i in range(30):
        await layer.group_send(events.FLEET_GROUP, {"type": "fleet.changed", "node": "n1", "gpus": [i % 3]})
        await layer.group_send(events.FLEET_GROUP, {"type": "fleet.heartbeat", "node": "n2", "at": float(i)})
    await layer.group_send(events.FLEET_GROUP, {"type": "fleet.changed", "node": "n3", "gpus": None})
    await layer.group_send(events.FLEET_GROUP, {"type": "fleet.changed", "node": "n3", "gpus": [5]})  # absorbed
    received = []
    while not await ws.receive_nothing(timeout=1.0):
        received.append(await ws.receive_json_from())
    assert 1 <= len(received) <= 2, received
    nodes: dict = {}
    beats: dict = {}
    for message in received:
        assert message["type"] == "fleet.update"
        for name, change in message["nodes"].items():
            nodes[name] = None if change["gpus"] is None or nodes.get(name, []) is None else sorted(
                set(nodes.get(name, [])) | set(change["gpus"]))
        beats.update(message["heartbeats"])
    assert nodes == {"n1": [0, 1, 2], "n3": None}
    assert beats == {"n2": 29.0}  # the latest heartbeat only
    await ws.disconnect()


async def test_fleet_socket_refuses_anonymous_and_role_less_users(norole):
    from django.contrib.auth.models import AnonymousUser

    assert await outcome(communicator("/ws/fleet/", AnonymousUser())) == 4401
    assert await outcome(communicator("/ws/fleet/", norole)) == 4403


async def test_notices_reach_only_their_user(viewer, operator):
    mine, theirs = communicator("/ws/me/", operator), communicator("/ws/me/", viewer)
    assert (await mine.connect())[0] and (await theirs.connect())[0]
    layer = get_channel_layer()
    await layer.group_send(events.user_group(operator.pk), {
        "type": "user.notice", "kind": "operation", "state": "succeeded", "level": "ok",
        "title": "Operation #3 succeeded", "message": "emu-a/gpu0 → CPX \u202eexe.png", "url": "/operations/3/"})
    notice = await mine.receive_json_from(timeout=3)
    assert notice["title"] == "Operation #3 succeeded" and notice["url"] == "/operations/3/"
    assert "\u202e" not in notice["message"] and "exe.png" in notice["message"]  # bidi shown as an escape
    assert await theirs.receive_nothing(timeout=0.3)
    await mine.disconnect()
    await theirs.disconnect()


async def test_me_socket_refuses_anonymous_users():
    from django.contrib.auth.models import AnonymousUser

    assert await outcome(communicator("/ws/me/", AnonymousUser())) == 4401


async def test_a_service_change_reaches_an_open_fleet_socket(viewer):
    """The publisher and the consumer agree on the group and the event type."""
    from asgiref.sync import sync_to_async

    ws = communicator("/ws/fleet/", viewer)
    assert (await ws.connect())[0]
    await sync_to_async(events.publish_fleet_changed)("emu-z", [2])
    message = await ws.receive_json_from(timeout=3)
    assert message["nodes"] == {"emu-z": {"gpus": [2]}}
    await asyncio.sleep(0)
    await ws.disconnect()
