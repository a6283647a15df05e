"""WebSocket consumers: live progress of one operation (``/ws/operations/<id>/``), live
telemetry per view (``/ws/telemetry/``), the live fleet (``/ws/fleet/``) and the user's
notices (``/ws/me/``)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from aimconsole.channel_layer import ReleasesChannel
from partitions import events
from partitions.models import GPU, Node, Reconfiguration
from partitions.telemetry_hub import Client, TelemetryHub
from partitions.telemetry_views import InvalidTarget, Target, parse_target, parse_targets

# Close codes (4000-4999 are the application's): the browser learns why it was refused.
CLOSE_BAD_REQUEST = 4400  # a malformed view or message (/ws/telemetry/)
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4408  # the client did not keep up and fell behind (/ws/telemetry/): reconnect


class RefusingConsumer(ReleasesChannel, AsyncJsonWebsocketConsumer):
    # ReleasesChannel: a stopped consumer's channel leaves the layer (aimconsole/channel_layer.py).
    async def refuse(self, code: int) -> None:
        """Accept, then close with an application code: a close before accept reaches the
        browser as a failed handshake (1006), and the page could not tell why."""
        await self.accept()
        await self.close(code=code)

    async def admitted(self, permission: str | None = None) -> bool:
        """Whether the connecting user is signed in and (when ``permission`` is given) holds
        it; refuses the socket with the matching close code otherwise."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return False
        if permission is not None and not await database_sync_to_async(user.has_perm)(permission):
            await self.refuse(CLOSE_FORBIDDEN)
            return False
        return True


class OperationConsumer(RefusingConsumer):
    """Snapshot of the operation and its steps on connect, then every new step."""

    async def connect(self) -> None:
        if not await self.admitted("partitions.view_reconfiguration"):
            return
        self.operation_id = int(self.scope["url_route"]["kwargs"]["pk"])
        snapshot = await self._snapshot()
        if snapshot is None:
            await self.refuse(CLOSE_NOT_FOUND)
            return
        self.group = events.operation_group(self.operation_id)
        # Join before sending the snapshot so no step falls between the two.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "operation.snapshot", **snapshot})

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass  # read-only stream

    async def operation_step(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    @database_sync_to_async
    def _snapshot(self) -> dict[str, Any] | None:
        op = Reconfiguration.objects.select_related("node").prefetch_related("steps").filter(pk=self.operation_id).first()
        if op is None:
            return None
        return {
            "operation": events.operation_payload(op),
            "steps": [events.step_payload(step) for step in op.steps.all()],
        }


class TelemetryConsumer(RefusingConsumer):
    """Live telemetry of what the page shows (``/ws/telemetry/``).

    The view comes from the query string: none for the fleet view (aggregates per node and
    GPU and the top partitions, at most 2 messages per second), ``?node=NAME``, ``?node=NAME&gpu=N``
    or ``?deployment=NAME``. A page that shows more (the fleet page: the aggregates and the
    nodes on screen) sends ``{"type": "subscribe", "targets": [{}, {"node": "n1"}, ...]}``,
    which replaces what the connection watches (at most ``MAX_TARGETS``); it may connect with
    ``?subscribe`` to watch nothing until then. Each new target's current state comes first,
    then its updates (partitions/telemetry_views.py gives every message's shape). The fan-out,
    encoding once and the bounded outbox are the process's ``TelemetryHub``'s
    (partitions/telemetry_hub.py); this consumer checks, subscribes and sends.

    Closes: 4400 malformed target or message, 4404 unknown node, GPU or deployment,
    4408 the client did not keep up with its views (the page reconnects).
    """

    MAX_TARGETS = 64

    async def connect(self) -> None:
        if not await self.admitted("partitions.view_node"):
            return
        query = parse_qs(self.scope.get("query_string", b"").decode(errors="replace"), keep_blank_values=True)
        try:
            # ``?subscribe``: nothing until the page's subscribe message (no view sent for nothing)
            targets = [] if set(query) == {"subscribe"} else [parse_target({name: values[-1] for name, values in query.items()})]
        except InvalidTarget:
            await self.refuse(CLOSE_BAD_REQUEST)
            return
        self.hub = TelemetryHub.current()
        if not await self._known(targets):
            await self.refuse(CLOSE_NOT_FOUND)
            return
        self.client = Client(self._stalled)
        # Subscribed (groups joined, current state queued) before the socket opens: nothing
        # published after the open is missed.
        await self.hub.subscribe(self.client, targets)
        await self.accept()
        self.sender: asyncio.Task[None] | None = asyncio.ensure_future(self._send_forever())

    async def disconnect(self, code: int) -> None:
        await self._leave()

    async def decode_json(self, text_data: str) -> Any:
        try:
            return json.loads(text_data)
        except ValueError:
            return None  # receive_json refuses it

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not hasattr(self, "client") or self.client.stalled:
            return
        if not isinstance(content, dict) or content.get("type") != "subscribe":
            await self._close_with(CLOSE_BAD_REQUEST)
            return
        try:
            targets = parse_targets(content.get("targets"), max_targets=self.MAX_TARGETS)
        except InvalidTarget:
            await self._close_with(CLOSE_BAD_REQUEST)
            return
        if not await self._known(targets):
            await self._close_with(CLOSE_NOT_FOUND)
            return
        await self.hub.subscribe(self.client, targets)

    async def _send_forever(self) -> None:
        while True:
            _, text = await self.client.queue.get()
            await self.send(text_data=text)  # encoded once for every client: sent as is

    def _stalled(self) -> None:
        self.closing = asyncio.ensure_future(self._close_with(CLOSE_TOO_SLOW))  # held: a task is weakly referenced

    async def _close_with(self, code: int) -> None:
        await self._leave()
        await self.close(code=code)

    async def _leave(self) -> None:
        sender = getattr(self, "sender", None)
        if sender is not None:
            sender.cancel()
            self.sender = None
        client = getattr(self, "client", None)
        if client is not None:
            client.stalled = True  # nothing more is queued for it
            await self.hub.unsubscribe(client)

    async def _known(self, targets: list[Target]) -> bool:
        """Whether every node, GPU and deployment named exists (deployments: occupy partitions)."""
        nodes = {t.node for t in targets if t.kind == "node" and t.node}
        gpus = {(t.node, t.gpu) for t in targets if t.kind == "gpu"}
        deployments = {t.deployment for t in targets if t.kind == "deployment" and t.deployment}

        def missing_hardware() -> bool:
            if nodes and Node.objects.filter(name__in=nodes).count() != len(nodes):
                return True
            if gpus:
                found = set(GPU.objects.filter(node__name__in={n for n, _ in gpus}).values_list("node__name", "index"))
                return not gpus <= found
            return False

        if (nodes or gpus) and await database_sync_to_async(missing_hardware)():
            return False
        return not deployments or await self.hub.known_deployments(deployments) == deployments


class FleetConsumer(RefusingConsumer):
    """What changed in the fleet (``/ws/fleet/``): ``{"type": "fleet.update", "nodes": {name:
    {"gpus": [indices] | null}}, "heartbeats": {name: unix seconds}}``. The page refetches the
    named cards (null: the whole node). Coalesced per connection: at
    most one message per ``MIN_INTERVAL_S``, merging the GPUs named per node (a whole-node
    change absorbs its GPUs) and keeping the latest heartbeat."""

    MIN_INTERVAL_S = 0.5

    async def connect(self) -> None:
        if not await self.admitted("partitions.view_node"):
            return
        self.nodes: dict[str, set[int] | None] = {}
        self.beats: dict[str, float] = {}
        self.flush_task: asyncio.Task | None = None
        self.last_sent = 0.0
        self.group = events.FLEET_GROUP
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        task = getattr(self, "flush_task", None)
        if task is not None:
            task.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass  # read-only stream

    async def fleet_changed(self, event: dict[str, Any]) -> None:
        node, gpus = str(event.get("node", "")), event.get("gpus")
        if node in self.nodes and self.nodes[node] is None:
            pass  # the whole node is due already
        elif gpus is None:
            self.nodes[node] = None
        else:
            self.nodes.setdefault(node, set()).update(int(i) for i in gpus)  # type: ignore[union-attr]
        self._schedule()

    async def fleet_heartbeat(self, event: dict[str, Any]) -> None:
        self.beats[str(event.get("node", ""))] = float(event.get("at") or 0.0)
        self._schedule()

    def _schedule(self) -> None:
        if self.flush_task is None or self.flush_task.done():
            self.flush_task = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(max(0.0, self.last_sent + self.MIN_INTERVAL_S - time.monotonic()))
        nodes, beats = self.nodes, self.beats
        self.nodes, self.beats = {}, {}
        if nodes or beats:
            self.last_sent = time.monotonic()
            await self.send_json({"type": "fleet.update",
                                  "nodes": {name: {"gpus": None if gpus is None else sorted(gpus)} for name, gpus in nodes.items()},
                                  "heartbeats": beats})


class UserConsumer(RefusingConsumer):
    """The signed-in user's notices (``/ws/me/``): an operation or deployment they started
    reached a final state. Each notice is sent as it comes (they are rare), for toasts."""

    async def connect(self) -> None:
        if not await self.admitted():
            return
        self.group = events.user_group(self.scope["user"].pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass

    async def user_notice(self, event: dict[str, Any]) -> None:
        from aimconsole.templatetags.console_tags import visible_controls

        await self.send_json({**event, "title": visible_controls(event.get("title", "")),
                              "message": visible_controls(event.get("message", ""))})
