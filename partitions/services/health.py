"""Clearing an unhealthy GPU: "mark healthy after check", and nothing else.

A failure that leaves a GPU in an unknown state (a hang, a rollback that failed) marks it
unhealthy and unschedulable (``mark_gpus_unhealthy``). It comes back into scheduling only after
a read of the hardware shows it at the layout it is meant to be in:

- an operator asks for it (API ``POST /api/v1/gpus/{id}/mark-healthy/`` or the button on the
  fleet page): ``request_health_check`` records the request and sends it to the node's agent,
  which re-reads the hardware (``check_gpu_health``) and clears the mark only if the GPU reads
  at its expected layout, with no NPS change armed and the partitions geometry says;
- or an operation on the GPU succeeds: its verified read-back shows the requested layout
  (partitions/reconfigure.py).

The check runs on the node's agent, not in the web process: only the agent can run the node's
amd-smi (the web server is usually another machine), and on the node's queue it never overlaps
an operation. Both outcomes are audited.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from aimconsole import audit
from partitions import dispatch, events, operations
from partitions.geometry import GeometryError, get_spec
from partitions.models import GPU, Node, Reconfiguration
from partitions.services.reconfiguration import OperationInProgress, clear_gpus_unhealthy

log = logging.getLogger(__name__)


def expected_layout(gpu: GPU) -> tuple[str, str]:
    """(compute, memory) the GPU is meant to be in: the target of the last operation that
    touched it if it succeeded, the layout before it if it failed or was rolled back, else
    what the inventory says."""
    last = (Reconfiguration.objects.filter(node_id=gpu.node_id, state__in=operations.TERMINAL_STATES)
            .filter(Q(kind=Reconfiguration.Kind.MEMORY) | Q(gpu_index=gpu.index))
            .order_by("-finished_at", "-pk").first())
    if last is None:
        return gpu.compute_mode, gpu.memory_mode
    before = last.previous_layout.get("gpus", {}).get(str(gpu.index)) or {}
    if last.state == operations.SUCCEEDED:
        if last.kind == Reconfiguration.Kind.COMPUTE:
            return last.target_compute_mode, before.get("memory_mode") or gpu.memory_mode
        return last.target_compute_mode or before.get("compute_mode") or gpu.compute_mode, last.target_memory_mode
    if before:
        return before.get("compute_mode") or "", before.get("memory_mode") or ""
    return gpu.compute_mode, gpu.memory_mode


def request_health_check(*, gpu: GPU, requested_by: Any = None) -> GPU:
    """Ask the node's agent to re-read ``gpu`` and clear its unhealthy mark if the read shows
    it at its expected layout. Raises ValidationError when there is nothing to clear or no live
    backend, OperationInProgress while an operation holds the GPU."""
    node = gpu.node
    if gpu.health != GPU.Health.UNHEALTHY:
        raise ValidationError({"health": f"{gpu} is {gpu.health}, not unhealthy: nothing to clear"})
    if node.backend == Node.Backend.IMPORTED:
        raise ValidationError({"node": f"{node.name} was imported from captured output; its hardware cannot be re-read"})
    with transaction.atomic():
        active = (Reconfiguration.objects.active().select_related("node")
                  .filter(Q(gpu=gpu) | Q(node=node, kind=Reconfiguration.Kind.MEMORY)).order_by("created_at").first())
        if active is not None:
            raise OperationInProgress(active)
        now = timezone.now()
        GPU.objects.filter(pk=gpu.pk).update(health_check_requested_at=now)
        gpu.health_check_requested_at = now
        audit.record("gpu.health_check.request", obj=gpu, actor=requested_by,
                     before={"health": gpu.health, "reason": gpu.health_reason[:500]},
                     after={"expected": "+".join(expected_layout(gpu))})
        user_id = requested_by.pk if getattr(requested_by, "pk", None) else None
        transaction.on_commit(lambda: send_health_check(gpu.pk, user_id, node.name))
        events.publish_fleet_changed(node.name, [gpu.index])  # "check pending" on the card
    return gpu


def send_health_check(gpu_id: int, user_id: int | None, node_name: str) -> bool:
    """Never raises: with the broker down the request stays recorded and the agent's sweeper
    sends it later."""
    try:
        dispatch.send_health_check(gpu_id, user_id, node_name=node_name)
    except Exception as exc:  # broker unreachable
        log.warning("could not send the health check of GPU %s (the sweeper retries): %s", gpu_id, exc)
        return False
    return True


def resend_health_checks(*, node: Node, older_than_s: float) -> list[int]:
    """Health checks requested long ago and never answered (message lost): send them again."""
    due = GPU.objects.filter(node=node, health_check_requested_at__lt=timezone.now() - timedelta(seconds=older_than_s))
    return [pk for pk in due.values_list("pk", flat=True) if send_health_check(pk, None, node.name)]


def check_gpu_health(*, gpu: GPU, requested_by: Any = None, backend: Any = None) -> bool:
    """On the node's agent: re-read the hardware; clear ``gpu``'s unhealthy mark if it reads
    at its expected layout (partitions as the geometry says, no NPS change armed). Returns
    whether it was cleared. Safe to deliver twice: a GPU no longer waiting for a check is
    left alone."""
    from partitions.backends.errors import BackendError
    from partitions.services.inventory import backend_for, sync_inventory

    gpu = GPU.objects.select_related("node").get(pk=gpu.pk)
    node = gpu.node
    if gpu.health_check_requested_at is None or gpu.health != GPU.Health.UNHEALTHY:
        GPU.objects.filter(pk=gpu.pk).update(health_check_requested_at=None)
        return False
    expected = expected_layout(gpu)
    active = Reconfiguration.objects.active().filter(Q(gpu=gpu) | Q(node=node, kind=Reconfiguration.Kind.MEMORY)).first()
    finding = ""
    if active is not None:
        finding = f"operation #{active.pk} is in progress; ask again once it has finished"
    else:
        try:
            inventory = (backend or backend_for(node)).inventory()
        except BackendError as exc:
            finding = f"amd-smi could not read the GPU ({exc.code}: {exc.message})"
        else:
            found = next((g for g in inventory.gpus if g.index == gpu.index), None)
            finding = _problem(found, expected)
            sync_inventory(node=node, inventory=inventory)
    if not finding:
        clear_gpus_unhealthy(node=node, gpu_indices=[gpu.index], actor=requested_by,
                             reason=f"health check: the hardware reads {'+'.join(expected)}, the expected layout")
        return True
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
    reason = f"health check {stamp} UTC: still unhealthy, {finding} (was: {gpu.health_reason[:1000]})"
    GPU.objects.filter(pk=gpu.pk).update(health_check_requested_at=None, health_reason=reason[:2000])
    audit.record("gpu.health_check.refused", obj=gpu, actor=requested_by,
                 before={"health": gpu.health}, after={"health": gpu.health, "expected": "+".join(expected), "finding": finding[:500]})
    events.publish_fleet_changed(node.name, [gpu.index])
    return False


def _problem(found: Any, expected: tuple[str, str]) -> str:
    """Why the GPU read does not show the expected layout ("" when it does)."""
    if found is None:
        return "the GPU is missing from what amd-smi reports"
    have = (found.compute_mode or "", found.memory_mode or "")
    if have != expected:
        return f"the hardware reads {'+'.join(have) or '?'}, expected {'+'.join(expected)}"
    pending = getattr(found, "pending_memory_mode", None)
    if pending and pending != found.memory_mode:
        return f"{pending} is armed (pending until the next driver reload)"
    if found.gpu_model:
        try:
            caps = {p.accelerator_type: list(p.memory_caps) for p in found.profiles} or None
            layout = get_spec(found.gpu_model).layout(have[0], have[1], caps=caps)
        except GeometryError as exc:
            return f"{'+'.join(have)} is not a valid layout ({exc})"
        if len(found.partitions) != layout.count:
            return f"{len(found.partitions)} partitions reported, {layout.count} expected in {'+'.join(have)}"
    return ""


__all__ = ["check_gpu_health", "expected_layout", "request_health_check", "resend_health_checks"]
