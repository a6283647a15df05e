"""WebSocket payloads and their one publisher (channel layer groups).

Groups: ``operations.<id>`` (one operation's steps), ``telemetry.node.<name>`` (a node's
telemetry samples) and ``telemetry.fleet`` (each node's summary of its sample, for the fleet
view). Publishing never raises: a broken channel layer must not fail an operation (the
database row stays the source of truth).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from partitions.telemetry_views import summarize_node

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


class TelemetrySampleEvent(TypedDict):
    """On ``telemetry.node.<name>``: one sample, as the JSON text of the node view's message
    (``node_message_text``), encoded once by the publisher and relayed as is to every client
    of every process; ``ts`` (Unix seconds) orders samples without decoding ``text``."""

    type: Literal["telemetry.sample"]
    node: str
    ts: float
    text: str


class TelemetrySummaryEvent(TypedDict):
    """On ``telemetry.fleet``: the node's share of the fleet view
    (``partitions.telemetry_views.summarize_node``), a few hundred bytes whatever its
    partitions: the fleet group never carries every partition."""

    type: Literal["telemetry.summary"]
    node: str
    summary: dict[str, Any]


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


def encode(payload: Any) -> str:
    """The one JSON encoder of telemetry messages (compact; tests count its calls)."""
    return json.dumps(payload, separators=(",", ":"))


def node_message_text(node_name: str, snapshot_text: str) -> str:
    """The node view's message, ``{"type": "telemetry.node", "node": ..., "snapshot": ...}``,
    built around a snapshot already encoded (the agent's, or the one stored in Redis) without
    decoding it again."""
    return f'{{"type":"telemetry.node","node":{json.dumps(node_name)},"snapshot":{snapshot_text}}}'


def publish_telemetry(node_name: str, snapshot: dict[str, Any], *, snapshot_text: str | None = None,
                      loop: asyncio.AbstractEventLoop | None = None) -> None:
    """One sample of ``node_name``: the node view's message, pre-encoded, to
    ``telemetry.node.<name>`` and the node's summary to ``telemetry.fleet``.
    ``snapshot_text``: ``snapshot`` already encoded (the agent stores that text in Redis too)."""
    text = node_message_text(node_name, snapshot_text if snapshot_text is not None else encode(snapshot))
    sample: TelemetrySampleEvent = {"type": "telemetry.sample", "node": node_name,
                                    "ts": float(snapshot.get("ts") or 0.0), "text": text}
    _send(node_telemetry_group(node_name), dict(sample), loop)
    summary: TelemetrySummaryEvent = {"type": "telemetry.summary", "node": node_name, "summary": summarize_node(snapshot)}
    _send(FLEET_TELEMETRY_GROUP, dict(summary), loop)


# --- the live fleet and per-user notices ------------------------------------------------------
# ``fleet``: "these nodes (GPUs) changed" (layout, operation state, health, occupants); the
# fleet page refetches their server-rendered cards. ``fleet`` also carries agent heartbeats.
# ``user.<id>``: notices for one signed-in user (their operation or deployment finished), shown
# as toasts on every console page. Both are published after the transaction commits (a
# rolled-back change announces nothing) and never raise.

FLEET_GROUP = "fleet"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


class FleetChangedEvent(TypedDict):
    type: Literal["fleet.changed"]
    node: str
    gpus: list[int] | None  # None: the whole node (memory mode, agent, every GPU)


class UserNoticeEvent(TypedDict):
    type: Literal["user.notice"]
    kind: str  # "operation" | "deployment"
    state: str
    level: str  # "ok" | "bad" | "info"
    title: str
    message: str
    url: str


def _after_commit(send: Any) -> None:
    from django.db import transaction

    try:
        transaction.on_commit(send)
    except Exception as exc:  # no database connection usable: send now rather than never
        log.warning("could not defer a fleet event: %s", exc)
        send()


def publish_fleet_changed(node_name: str, gpu_indices: Any = None) -> None:
    """After commit: node ``node_name`` changed (only ``gpu_indices`` of it, when given)."""
    gpus = None if gpu_indices is None else sorted({int(i) for i in gpu_indices})
    event: FleetChangedEvent = {"type": "fleet.changed", "node": node_name, "gpus": gpus}
    _after_commit(lambda: _send(FLEET_GROUP, dict(event)))


def publish_heartbeat(node_name: str, at: float, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """An agent's heartbeat (Unix seconds): the fleet page flips the node to "agent down"
    by itself when the next one is late."""
    _send(FLEET_GROUP, {"type": "fleet.heartbeat", "node": node_name, "at": at}, loop)


NOTICE_LEVELS = {"succeeded": "ok", "running": "ok", "failed": "bad", "rolled_back": "bad", "degraded": "bad"}


def publish_user_notice(user_id: int | None, *, kind: str, state: str, title: str, message: str = "", url: str = "") -> None:
    """After commit: tell user ``user_id`` (nobody when None) that something they started
    reached ``state``."""
    if not user_id:
        return
    event: UserNoticeEvent = {"type": "user.notice", "kind": kind, "state": state,
                              "level": NOTICE_LEVELS.get(state, "info"), "title": title[:200],
                              "message": message[:500], "url": url}
    _after_commit(lambda: _send(user_group(int(user_id)), dict(event)))


def publish_operation_changed(op: Any) -> None:
    """An operation's state changed: the fleet shows it on its GPU (compute) or node (memory);
    a finished one is announced to whoever requested it."""
    gpus = [op.gpu_index] if op.kind == "compute" and op.gpu_index is not None else None
    publish_fleet_changed(op.node.name, gpus)
    if op.is_terminal and getattr(op, "requested_by_id", None):
        from django.urls import reverse

        said = {"succeeded": "succeeded", "failed": "failed", "rolled_back": "was rolled back"}.get(op.state, op.state)
        publish_user_notice(op.requested_by_id, kind="operation", state=op.state,
                            title=f"Operation #{op.pk} {said}", message=op.describe_target() + (
                                f": {op.error_message[:300]}" if op.error_message else ""),
                            url=reverse("partitions:operation-detail", args=[op.pk]))
