"""Reconciliation sync: the node's agent periodically corrects the inventory from the hardware
and records what it changed.

Why: the inventory can fall behind the hardware — a worker that gave up on a driver reload
that then finished (the database said NPS1, the hardware ended in NPS4), a change made by hand
on the node, an armed NPS change. Every ``AGENT_RECONCILE_S`` the agent sends
``reconcile_node_task`` to its own queue, so the read never overlaps an operation's changes;
it reads the hardware, syncs the inventory, and when anything differed it records the
differences on the node (``reconcile_changes``, in the nodes API) and in an audit row
(``node.reconciled``). Health is not a hardware fact: reconciliation never clears an
unhealthy mark (partitions/services/health.py does, after a check).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from aimconsole import audit
from partitions import operations
from partitions.models import GPU, Node, Reconfiguration
from partitions.services.reconfiguration import pending_memory_modes

log = logging.getLogger(__name__)


def reconcile_interval_s() -> float:
    """``AGENT_RECONCILE_S`` (default 60 s)."""
    return float(getattr(settings, "AGENT_RECONCILE_S", None) or 60.0)


def _snapshot(node: Node) -> dict[str, Any]:
    node = Node.objects.get(pk=node.pk)
    gpus = {}
    for gpu in GPU.objects.filter(node=node).prefetch_related("partitions").order_by("index"):
        gpus[gpu.index] = {"compute_mode": gpu.compute_mode, "memory_mode": gpu.memory_mode,
                           "pending_memory_mode": gpu.pending_memory_mode, "partitions": len(gpu.partitions.all())}
    return {"memory_mode": node.memory_mode, "layout_problem": node.layout_problem, "gpus": gpus}


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changes = []
    if before["memory_mode"] != after["memory_mode"]:
        changes.append(f"node memory mode {before['memory_mode'] or '?'} → {after['memory_mode'] or '?'}")
    if before["layout_problem"] != after["layout_problem"]:
        changes.append(f"layout problem: {after['layout_problem'] or 'none'}")
    for index in sorted(set(before["gpus"]) | set(after["gpus"])):
        old, new = before["gpus"].get(index), after["gpus"].get(index)
        if old is None:
            changes.append(f"GPU {index} appeared ({new['compute_mode']}+{new['memory_mode']})")
        elif new is None:
            changes.append(f"GPU {index} gone")
        else:
            for field, label in (("compute_mode", "compute mode"), ("memory_mode", "memory mode"),
                                 ("pending_memory_mode", "pending memory mode"), ("partitions", "partitions")):
                if old[field] != new[field]:
                    changes.append(f"GPU {index} {label} {old[field] or 'none'} → {new[field] or 'none'}")
    return changes


def reconcile_node(*, node: Node, backend: Any = None) -> list[str] | None:
    """Correct ``node``'s inventory from its hardware; returns what changed (empty: nothing),
    or None when skipped: an operation on the node has started (its own read-back syncs, and a
    sync mid-change would record a transient layout as fact), or it ran moments ago (messages
    queued behind a long operation)."""
    from partitions.backends.errors import BackendError
    from partitions.services.inventory import backend_for, record_sync_error, sync_inventory

    node = Node.objects.get(pk=node.pk)
    if Reconfiguration.objects.active().filter(node=node).exclude(state=operations.PENDING).exists():
        return None
    recent = timezone.now() - timedelta(seconds=reconcile_interval_s() / 2)
    if node.reconciled_at is not None and node.reconciled_at > recent:
        return None
    try:
        inventory = (backend or backend_for(node)).inventory()
    except BackendError as exc:
        record_sync_error(node=node, message=f"{exc.code}: {exc}")
        Node.objects.filter(pk=node.pk).update(reconciled_at=timezone.now())
        return None
    with transaction.atomic():
        before = _snapshot(node)
        sync_inventory(node=node, inventory=inventory)
        if any(hasattr(g, "pending_memory_mode") for g in inventory.gpus):
            pending = pending_memory_modes(inventory)
            for gpu in inventory.gpus:
                GPU.objects.filter(node=node, index=gpu.index).update(pending_memory_mode=pending.get(gpu.index, ""))
        after = _snapshot(node)
        changes = _differences(before, after)
        Node.objects.filter(pk=node.pk).update(reconciled_at=timezone.now(), reconcile_changes=changes)
        if changes:
            log.warning("reconciliation corrected %s: %s", node.name, "; ".join(changes))
            audit.record("node.reconciled", obj=node, actor_name="agent reconciliation",
                         before={k: before[k] for k in ("memory_mode", "layout_problem")} | {"gpus": _plain(before["gpus"])},
                         after={"changes": changes} | {"gpus": _plain(after["gpus"])})
    return changes


def _plain(gpus: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(index): values for index, values in gpus.items()}


__all__ = ["reconcile_interval_s", "reconcile_node"]
