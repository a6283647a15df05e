"""Sending the partitions app's Celery tasks, by name: services never import tasks.

Each node's agent consumes its own queue, ``node.<name>`` (concurrency 1), so everything that
touches a node's hardware runs there, one at a time.
"""

from __future__ import annotations

from aimconsole.celery import app

RECONFIGURE = "partitions.reconfigure"
SYNC_NODE = "partitions.sync_node"
RECONCILE_NODE = "partitions.reconcile_node"
CHECK_GPU_HEALTH = "partitions.check_gpu_health"


def node_queue(node_name: str) -> str:
    return f"node.{node_name}"


def send_reconfiguration(reconfiguration_id: int, *, node_name: str) -> None:
    """Raise what the broker raises when it is unreachable (callers keep the intent)."""
    app.send_task(RECONFIGURE, args=[reconfiguration_id], queue=node_queue(node_name), retry=False)


def send_sync(node_name: str) -> None:
    app.send_task(SYNC_NODE, args=[node_name], queue=node_queue(node_name), retry=False)


def send_reconcile(node_name: str) -> None:
    """The periodic reconciliation sync, queued behind the node's operations."""
    app.send_task(RECONCILE_NODE, args=[node_name], queue=node_queue(node_name), retry=False)


def send_health_check(gpu_id: int, user_id: int | None, *, node_name: str) -> None:
    """An operator's "mark healthy after check": the agent re-reads the GPU."""
    app.send_task(CHECK_GPU_HEALTH, args=[gpu_id, user_id], queue=node_queue(node_name), retry=False)
