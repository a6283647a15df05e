"""WebSocket consumers: live progress of one operation (``/ws/operations/<id>/``)."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from partitions import events
from partitions.models import Reconfiguration

# Close codes (4000-4999 are the application's): the browser learns why it was refused.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class OperationConsumer(AsyncJsonWebsocketConsumer):
    """Snapshot of the operation and its steps on connect, then every new step."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await database_sync_to_async(user.has_perm)("partitions.view_reconfiguration"):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.operation_id = int(self.scope["url_route"]["kwargs"]["pk"])
        snapshot = await self._snapshot()
        if snapshot is None:
            await self.close(code=CLOSE_NOT_FOUND)
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
