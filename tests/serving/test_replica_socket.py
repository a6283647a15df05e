"""The deployment page's WebSocket (/ws/deployments/<id>/): a snapshot of its copies on
connect, a fresh one when a node agent records a change, refusals with application codes."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from models.models import ModelProfile
from planning.services import DemandSpec
from serving.services import create_deployment, reconcile_node, stop_deployment

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def communicator(path: str, user=None):  # type: ignore[no-untyped-def]
    from aimconsole.asgi import application

    c = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
    if user is not None:
        c.scope["user"] = user
    return c


def deploy(node):  # type: ignore[no-untyped-def]
    profile = ModelProfile.objects.filter(model__hf_id="Qwen/Qwen2.5-0.5B-Instruct", gpu_model="MI300X").first()
    deployment = create_deployment(spec=DemandSpec(name="chat", profile=profile, replicas=2))
    reconcile_node(node=node)  # the emulated runtime: copies ready at once, recorded as Replica rows
    return deployment


async def test_a_snapshot_on_connect_then_the_copies_as_the_agent_records_them(emulated, catalog, viewer):
    deployment = await sync_to_async(deploy)(emulated.node)
    socket = communicator(f"/ws/deployments/{deployment.pk}/", viewer)
    connected, _ = await socket.connect()
    assert connected
    first = await socket.receive_json_from(timeout=5)
    assert first["type"] == "deployment.snapshot" and first["deployment"]["state"] == "running"
    assert sorted((c["replica"], c["state"], c["runtime"], c["emulated"]) for c in first["copies"]) == [
        (0, "ready", "emulated", True), (1, "ready", "emulated", True)]

    def stop() -> None:
        stop_deployment(deployment=deployment)
        reconcile_node(node=emulated.node)

    await sync_to_async(stop)()
    update = await socket.receive_json_from(timeout=5)
    assert update["deployment"]["state"] == "stopped"
    assert {c["state"] for c in update["copies"]} == {"stopped"}
    await socket.disconnect()


async def test_refusals_say_why(emulated, catalog, django_user_model):
    from tests.wsutil import outcome

    deployment = await sync_to_async(deploy)(emulated.node)
    assert await outcome(communicator(f"/ws/deployments/{deployment.pk}/")) == 4401
    nobody = await sync_to_async(django_user_model.objects.create_user)("nobody", password="x")
    assert await outcome(communicator(f"/ws/deployments/{deployment.pk}/", nobody)) == 4403
    admin = await sync_to_async(django_user_model.objects.create_superuser)("root", password="x")
    assert await outcome(communicator("/ws/deployments/999999/", admin)) == 4404


@pytest.mark.redis
async def test_replica_copies_appear_in_the_metrics(emulated, catalog, redis_url, settings):
    from observability.metrics import ConsoleCollector

    settings.REDIS_URL = redis_url
    await sync_to_async(deploy)(emulated.node)
    families = {f.name: f for f in await sync_to_async(lambda: list(ConsoleCollector().collect()))()}
    (sample,) = families["aim_replica_copies"].samples
    assert sample.labels == {"model": "Qwen/Qwen2.5-0.5B-Instruct", "runtime": "emulated", "state": "ready", "emulated": "true"}
    assert sample.value == 2.0
