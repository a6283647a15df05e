"""WebSocket of one deployment's page (``/ws/deployments/<id>/``): its state and its copies.

On connect: a snapshot (the deployment's state and message, and every copy's state, endpoint,
restarts and reason). Then, whenever a node agent records a change of its copies
(serving/events.py), a fresh snapshot, coalesced to at most two a second. Authenticated and
origin-checked like every socket; viewers may watch.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels.db import database_sync_to_async

from aimconsole.templatetags.console_tags import visible_controls
from partitions.consumers import CLOSE_NOT_FOUND, RefusingConsumer
from serving import events
from serving.models import Deployment

MIN_INTERVAL_S = 0.5


class DeploymentConsumer(RefusingConsumer):
    async def connect(self) -> None:
        if not await self.admitted("serving.view_deployment"):
            return
        self.deployment_id = int(self.scope["url_route"]["kwargs"]["pk"])
        self.last_sent = 0.0
        self.pending: asyncio.Task[None] | None = None
        snapshot = await self._snapshot()
        if snapshot is None:
            await self.refuse(CLOSE_NOT_FOUND)
            return
        self.group = events.deployment_group(self.deployment_id)
        await self.channel_layer.group_add(self.group, self.channel_name)  # before the snapshot: nothing falls between
        await self.accept()
        await self._send(snapshot)

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if getattr(self, "pending", None) is not None:
            self.pending.cancel()  # type: ignore[union-attr]

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass  # read-only stream

    async def replicas_changed(self, event: dict[str, Any]) -> None:
        if self.pending is None or self.pending.done():
            self.pending = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(max(0.0, self.last_sent + MIN_INTERVAL_S - time.monotonic()))
        snapshot = await self._snapshot()
        if snapshot is not None:
            await self._send(snapshot)

    async def _send(self, snapshot: dict[str, Any]) -> None:
        self.last_sent = time.monotonic()
        await self.send_json({"type": "deployment.snapshot", **snapshot})

    @database_sync_to_async
    def _snapshot(self) -> dict[str, Any] | None:
        deployment = Deployment.objects.filter(pk=self.deployment_id).first()
        if deployment is None:
            return None
        copies = deployment.copies.select_related("node", "deployment").order_by("replica", "key")
        # Text goes out with control/bidi characters as visible escapes, as the pages show it.
        shown = visible_controls
        return {
            "deployment": {"id": deployment.pk, "name": shown(deployment.name), "state": deployment.state,
                           "state_message": shown(deployment.state_message)},
            "copies": [{**events.payload(c), "node": shown(c.node.name), "reason": shown(c.reason[:500]),
                        "emulated": c.node.emulated, "log_tail": shown(c.log_tail[-4000:])} for c in copies],
        }
