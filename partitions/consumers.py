"""WebSocket consumers: live progress of one operation (``/ws/operations/<id>/``) and live
telemetry (``/ws/telemetry/``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from partitions import events
from partitions.models import Node, Reconfiguration

# Close codes (4000-4999 are the application's): the browser learns why it was refused.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class RefusingConsumer(AsyncJsonWebsocketConsumer):
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
    """Live telemetry for the fleet (``/ws/telemetry/``) or one node (``?node=NAME``).

    On connect: the latest snapshot of every node in view (from Redis). Then updates, coalesced
    per connection: whatever arrives within ``MIN_INTERVAL_S`` is merged (latest per node) and
    sent as one message, so a view gets at most 2 messages per second however many nodes report.
    """

    MIN_INTERVAL_S = 0.5

    async def connect(self) -> None:
        if not await self.admitted("partitions.view_node"):
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.node = (query.get("node") or [None])[0]
        if self.node is not None and not await database_sync_to_async(Node.objects.filter(name=self.node).exists)():
            await self.refuse(CLOSE_NOT_FOUND)
            return
        self.group = events.node_telemetry_group(self.node) if self.node else events.FLEET_TELEMETRY_GROUP
        self.pending: dict[str, Any] = {}
        self.flush_task: asyncio.Task | None = None
        self.last_sent = 0.0
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "telemetry.snapshot", "nodes": await self._snapshots()})
        self.last_sent = time.monotonic()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        task = getattr(self, "flush_task", None)
        if task is not None:
            task.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass

    async def telemetry_snapshot(self, event: dict[str, Any]) -> None:
        self.pending[event["node"]] = event["snapshot"]
        if self.flush_task is None or self.flush_task.done():
            self.flush_task = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(max(0.0, self.last_sent + self.MIN_INTERVAL_S - time.monotonic()))
        nodes, self.pending = self.pending, {}
        if nodes:
            self.last_sent = time.monotonic()
            await self.send_json({"type": "telemetry.update", "nodes": nodes})

    async def _snapshots(self) -> dict[str, Any]:
        from partitions.telemetry_store import read_snapshots

        names = [self.node] if self.node else await database_sync_to_async(lambda: list(Node.objects.values_list("name", flat=True)))()
        return await read_snapshots(names)


class FleetConsumer(RefusingConsumer):
    """What changed in the fleet (``/ws/fleet/``): ``{"type": "fleet.update", "nodes": {name:
    {"gpus": [indices] | null}}, "heartbeats": {name: unix seconds}}``. The page refetches the
    named cards (null: the whole node). Coalesced per connection like TelemetryConsumer: at
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
