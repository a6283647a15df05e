"""WebSocket payloads and their one publisher (channel layer groups).

Groups: ``operations.<id>`` (one operation's steps), ``telemetry.node.<name>`` and
``telemetry.fleet`` (latest telemetry snapshots). Publishing never raises: a broken channel
layer must not fail an operation (the database row stays the source of truth).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


class StepPayload(TypedDict):
    seq: int
    state: str
    action: str
    message: str
    output: str
    ok: bool
    created_at: str


class OperationPayload(TypedDict):
    id: int
    state: str
    kind: str
    target: str
    node: str
    gpu_index: int | None
    error_code: str
    error_message: str
    finished: bool


class OperationStepEvent(TypedDict):
    type: Literal["operation.step"]
    operation: OperationPayload
    step: StepPayload


class TelemetryEvent(TypedDict):
    type: Literal["telemetry.snapshot"]
    node: str
    snapshot: dict[str, Any]


def operation_group(reconfiguration_id: int) -> str:
    return f"operations.{reconfiguration_id}"


def node_telemetry_group(node_name: str) -> str:
    return f"telemetry.node.{node_name}"


FLEET_TELEMETRY_GROUP = "telemetry.fleet"


def operation_payload(op: Any) -> OperationPayload:
    return {
        "id": op.pk,
        "state": op.state,
        "kind": op.kind,
        "target": op.describe_target(),
        "node": op.node.name,
        "gpu_index": op.gpu_index,
        "error_code": op.error_code,
        "error_message": op.error_message,
        "finished": op.is_terminal,
    }


def step_payload(step: Any) -> StepPayload:
    return {
        "seq": step.seq,
        "state": step.state,
        "action": step.action,
        "message": step.message,
        "output": step.output,
        "ok": step.ok,
        "created_at": step.created_at.isoformat(),
    }


def _send(group: str, event: dict[str, Any], loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Send to a group. ``loop``: a long-lived event loop of the caller's thread, so the layer
    keeps its Redis connections (``async_to_sync`` runs each call on a fresh loop, which makes
    the layer connect anew every time)."""
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        if loop is not None:
            loop.run_until_complete(layer.group_send(group, event))
        else:
            async_to_sync(layer.group_send)(group, event)
    except Exception as exc:  # the layer's Redis may be down; the row is the record
        log.warning("could not publish %s to %s: %s", event.get("type"), group, exc)


def publish_operation_step(op: Any, step: Any) -> None:
    event: OperationStepEvent = {"type": "operation.step", "operation": operation_payload(op), "step": step_payload(step)}
    _send(operation_group(op.pk), dict(event))


def publish_telemetry(node_name: str, snapshot: dict[str, Any], *, loop: asyncio.AbstractEventLoop | None = None) -> None:
    event: TelemetryEvent = {"type": "telemetry.snapshot", "node": node_name, "snapshot": snapshot}
    _send(node_telemetry_group(node_name), dict(event), loop)
    _send(FLEET_TELEMETRY_GROUP, dict(event), loop)
