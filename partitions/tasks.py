"""Celery tasks of the node agent (queue ``node.<name>``). Thin: ids in, call the code."""

from __future__ import annotations

from celery import shared_task

from partitions import dispatch, workloads
from partitions.models import Node


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
