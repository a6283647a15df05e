"""Celery tasks of the node agent (queue ``node.<name>``). Thin: ids in, call the code."""

from __future__ import annotations

from celery import shared_task

from partitions import dispatch, workloads
from partitions.models import GPU, Node


@shared_task(name=dispatch.RECONFIGURE, acks_late=True, reject_on_worker_lost=True)
def reconfigure_task(reconfiguration_id: int) -> str:
    """Run one reconfiguration (idempotent: fenced claim, re-reads hardware first)."""
    from partitions.reconfigure import run_reconfiguration

    result = run_reconfiguration(reconfiguration_id)
    node = Node.objects.filter(reconfigurations__pk=reconfiguration_id).first()
    if node is not None:
        workloads.reconcile(node=node)  # start what waited for this change without waiting for the sweeper
    return result


@shared_task(name=dispatch.SYNC_NODE, acks_late=True)
def sync_node_task(node_name: str) -> str:
    """Re-read a node's hardware into the inventory."""
    from partitions.services import sync_node

    node = Node.objects.filter(name=node_name).first()
    if node is None:
        return "gone"
    result = sync_node(node=node)
    return f"{result.created} created, {result.updated} updated, {result.deleted} deleted"


@shared_task(name=dispatch.RECONCILE_NODE, acks_late=True)
def reconcile_node_task(node_name: str) -> str:
    """Correct the node's inventory from its hardware (the agent's periodic reconciliation)."""
    from partitions.services.reconciliation import reconcile_node

    node = Node.objects.filter(name=node_name).first()
    if node is None:
        return "gone"
    changes = reconcile_node(node=node)
    return "skipped" if changes is None else ("; ".join(changes) or "unchanged")


@shared_task(name=dispatch.CHECK_GPU_HEALTH, acks_late=True)
def check_gpu_health_task(gpu_id: int, user_id: int | None = None) -> str:
    """Re-read the GPU and clear its unhealthy mark if it reads at its expected layout."""
    from django.contrib.auth import get_user_model

    from partitions.services.health import check_gpu_health

    gpu = GPU.objects.filter(pk=gpu_id).first()
    if gpu is None:
        return "gone"
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    return "cleared" if check_gpu_health(gpu=gpu, requested_by=user) else "not cleared"
