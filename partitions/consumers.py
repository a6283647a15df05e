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


class OperationConsumer(RefusingConsumer):
    """Snapshot of the operation and its steps on connect, then every new step."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        if not await database_sync_to_async(user.has_perm)("partitions.view_reconfiguration"):
            await self.refuse(CLOSE_FORBIDDEN)
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
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        if not await database_sync_to_async(user.has_perm)("partitions.view_node"):
            await self.refuse(CLOSE_FORBIDDEN)
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
