"""Reconfiguration operations: request, claim with a fencing token, record steps, finish.

The request side (``request_reconfiguration``) validates the target against geometry, stores
the intent in one transaction (the database refuses a second active operation on the same GPU
or node) and enqueues on commit. The worker side (``partitions.reconfigure``) claims the row,
and every write it makes goes through ``OperationClaim``, which checks the fencing token so a
stale worker cannot change anything.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from aimconsole import audit
from aimconsole.text import storable
from partitions import dispatch, events, operations
from partitions.geometry import ComputeMode, GeometryError, get_spec
from partitions.models import GPU, Node, Reconfiguration, ReconfigurationStep
from partitions.services.agent_lease import renew_node_lease

log = logging.getLogger(__name__)


class OperationInProgress(Exception):
    """Another active operation holds the GPU or node; ``operation`` names it."""

    def __init__(self, operation: Reconfiguration) -> None:
        self.operation = operation
        super().__init__(
            f"operation #{operation.pk} ({operation.describe_target()}, {operation.state}) is in progress"
        )


class StaleClaim(Exception):
    """The fencing token was superseded: this worker must stop writing."""


# --- request ---------------------------------------------------------------------------------

def _gpu_spec(gpu: GPU):
    if not gpu.gpu_model:
        raise ValidationError({"gpu": f"{gpu} has an unrecognised GPU model ({gpu.market_name!r}); it cannot be repartitioned"})
    return get_spec(gpu.gpu_model)


def _caps(gpu: GPU) -> dict[str, tuple[str, ...]] | None:
    """The hardware's memory caps per compute mode; None (no caps reported): the geometry table."""
    from partitions.geometry import reported_caps  # the one reading of reported caps

    return reported_caps(gpu.accelerator_profiles)


def valid_compute_modes(gpu: GPU, memory_mode: str) -> list[str]:
    """Compute modes ``gpu`` can run under ``memory_mode`` (the hardware's caps when known)."""
    spec = _gpu_spec(gpu)
    return [str(c) for c, m in spec.allowed_pairs(_caps(gpu)) if m == memory_mode]


def _check_pair(gpu: GPU, compute: str, memory: str) -> None:
    spec = _gpu_spec(gpu)
    try:
        ComputeMode(compute)
    except ValueError:
        raise ValidationError({"compute_mode": f"{compute!r} is not a compute mode; {spec.model} modes: {', '.join(spec.compute_modes)}"}) from None
    try:
        spec.layout(compute, memory, caps=_caps(gpu))
    except GeometryError:
        # Say what is wrong with the values at hand: no memory mode read, a memory mode the
        # model lacks, or no compute mode the hardware reports under it (never an empty list).
        valid = valid_compute_modes(gpu, memory) if memory else []
        if not memory:
            message = (f"GPU {gpu.index} of {gpu.node.name} reports no memory mode; its compute modes cannot be "
                       "checked until a sync of the node reads one")
        elif memory not in spec.memory_modes:
            message = f"{spec.model} has no {memory} memory mode; its memory modes: {', '.join(spec.memory_modes)}"
        else:
            what = (f"{spec.model} has no {compute} mode" if compute not in spec.compute_modes
                    else f"{compute} is not valid under {memory} on {spec.model}")
            message = (f"{what}; compute modes valid under {memory}: {', '.join(valid)}" if valid
                       else f"{what}; the hardware reports no compute mode valid under {memory}")
        raise ValidationError({"compute_mode": message}) from None


def _active_conflict(node: Node, gpu: GPU | None) -> Reconfiguration | None:
    """An active operation that blocks a new one (same GPU; or any on the node for NPS)."""
    active = Reconfiguration.objects.active().select_related("node")
    if gpu is None:
        return active.filter(node=node).order_by("created_at").first()
    return active.filter(Q(gpu=gpu) | Q(node=node, kind=Reconfiguration.Kind.MEMORY)).order_by("created_at").first()


def request_reconfiguration(
    *,
    gpu: GPU | None = None,
    node: Node | None = None,
    compute_mode: str | None = None,
    memory_mode: str | None = None,
    drain: bool = False,
    reason: str = "",
    requested_by: Any = None,
    plan: Any = None,
) -> Reconfiguration:
    """Store a reconfiguration intent and enqueue it once the transaction commits.

    ``gpu`` + ``compute_mode``: change one GPU's compute mode (``memory_mode``, if given, must be
    the node's current one). ``node`` + ``memory_mode`` (+ optional ``compute_mode`` for every
    GPU afterwards): change the node's NPS mode. Raises ValidationError for an invalid target
    (naming the valid choices) and OperationInProgress when one is already active.
    """
    if gpu is not None:
        node = gpu.node
    if node is None:
        raise ValidationError("give a GPU or a node")
    compute_mode = (compute_mode or "").upper() or None
    memory_mode = (memory_mode or "").upper() or None
    gpus = list(node.gpus.all()) if gpu is None else [gpu]
    if not gpus:
        raise ValidationError({"node": f"{node.name} has no GPUs in the inventory"})
    if node.backend == Node.Backend.IMPORTED:
        raise ValidationError({"node": f"{node.name} was imported from captured output and has no live backend"})

    if gpu is not None:
        kind = Reconfiguration.Kind.COMPUTE
        if not compute_mode:
            raise ValidationError({"compute_mode": "required"})
        current_memory = gpu.memory_mode or node.memory_mode
        if memory_mode and memory_mode != current_memory:
            raise ValidationError({"memory_mode": (
                f"memory (NPS) mode is node-wide ({node.name} is in {current_memory}); "
                f"change it with POST /api/v1/nodes/{node.name}/reconfigure/"
            )})
        _check_pair(gpu, compute_mode, current_memory)
    else:
        kind = Reconfiguration.Kind.MEMORY
        if not memory_mode:
            raise ValidationError({"memory_mode": "required"})
        if not memory_change_needed(node, memory_mode):
            raise ValidationError({"memory_mode": (
                f"{node.name} is already in {memory_mode}: there is no memory (NPS) change to make; "
                "request compute-mode changes per GPU (request_node_reconfiguration)"
            )})
        for each in gpus:
            spec = _gpu_spec(each)
            if not spec.memory_switchable or memory_mode not in spec.memory_modes:
                modes = ", ".join(spec.memory_modes) if spec.memory_switchable else "none (not switchable)"
                raise ValidationError({"memory_mode": f"{spec.model} supports memory modes: {modes}"})
            wanted = compute_mode or each.compute_mode
            if wanted not in valid_compute_modes(each, memory_mode):
                valid = ", ".join(valid_compute_modes(each, memory_mode))
                field = "compute_mode"
                raise ValidationError({field: (
                    f"{each} would be in {wanted or '?'}, which {spec.model} cannot run under {memory_mode}; "
                    f"give compute_mode, one of: {valid}"
                )})

    with transaction.atomic():
        # Serialise requests per node (row lock on PostgreSQL, write lock on SQLite), then let
        # the partial unique indexes refuse anything that slipped through.
        node = Node.objects.select_for_update().get(pk=node.pk)
        conflict = _active_conflict(node, gpu)
        if conflict is not None:
            raise OperationInProgress(conflict)
        try:
            with transaction.atomic():
                op = Reconfiguration.objects.create(
                    kind=kind, node=node, gpu=gpu, gpu_index=gpu.index if gpu else None,
                    target_compute_mode=compute_mode or "", target_memory_mode=memory_mode or "",
                    drain=drain, reason=reason[:500], requested_by=requested_by if getattr(requested_by, "pk", None) else None,
                    plan=plan,
                )
        except IntegrityError:
            conflict = _active_conflict(node, gpu)
            if conflict is None:
                raise
            raise OperationInProgress(conflict) from None
        _add_step(op, op.fencing_token, operations.STEP_ENQUEUED, f"requested: {op.describe_target()}"
                  + (f" ({reason})" if reason else ""))
        audit.record("reconfiguration.request", obj=op, actor=requested_by,
                     before={"compute_mode": gpu.compute_mode} if gpu else {"memory_mode": node.memory_mode},
                     after={"compute_mode": op.target_compute_mode or None, "memory_mode": op.target_memory_mode or None,
                            "drain": drain, "reason": reason})
        transaction.on_commit(lambda: enqueue(op.pk))
        events.publish_operation_changed(op)
    return op


def memory_change_needed(node: Node, memory_mode: str) -> bool:
    """Whether a node request for ``memory_mode`` needs ``set -M`` and a driver reload: the node
    is in another mode (or in none: GPUs in different modes), or an NPS change to another mode
    is armed in the hardware (pending until the next reload; ``set -M`` to the current mode
    cancels it)."""
    if node.memory_mode != memory_mode:
        return True
    return node.gpus.exclude(pending_memory_mode="").exclude(pending_memory_mode=memory_mode).exists()


@dataclass(frozen=True)
class NodeRequest:
    """What a node request became: one NPS change, or compute-mode changes per GPU."""

    operations: list[Reconfiguration]
    memory_change: bool
    message: str


def request_node_reconfiguration(
    *,
    node: Node,
    memory_mode: str,
    compute_mode: str | None = None,
    drain: bool = False,
    reason: str = "",
    requested_by: Any = None,
    plan: Any = None,
) -> NodeRequest:
    """A node request (``memory_mode`` + optional ``compute_mode`` for every GPU).

    When the node already runs ``memory_mode`` (and no other NPS mode is armed), there is
    nothing for ``set -M`` to do, and a driver reload of every GPU would be pure damage: the
    request becomes one compute-mode change per GPU not yet in ``compute_mode`` (none when
    every GPU is), exactly as the planner plans it. All or nothing: an invalid mode for any
    GPU or an operation in progress on any of them refuses the whole request.
    """
    compute_mode = (compute_mode or "").upper() or None
    memory_mode = (memory_mode or "").upper()
    if not memory_mode:
        raise ValidationError({"memory_mode": "required"})
    if memory_change_needed(node, memory_mode):
        op = request_reconfiguration(node=node, memory_mode=memory_mode, compute_mode=compute_mode, drain=drain,
                                     reason=reason, requested_by=requested_by, plan=plan)
        return NodeRequest([op], True, f"memory mode {memory_mode} on {node.name}: the driver reloads for every GPU")
    gpus = list(node.gpus.order_by("index"))
    if node.backend == Node.Backend.IMPORTED:
        raise ValidationError({"node": f"{node.name} was imported from captured output and has no live backend"})
    if compute_mode:
        for each in gpus:
            _check_pair(each, compute_mode, memory_mode)
    changing = [g for g in gpus if compute_mode and g.compute_mode != compute_mode]
    if not changing:
        return NodeRequest([], False, f"{node.name} is already in {memory_mode}"
                           + (f" with every GPU in {compute_mode}" if compute_mode else "") + ": nothing to change")
    with transaction.atomic():
        operations_ = [
            request_reconfiguration(gpu=g, compute_mode=compute_mode, drain=drain, reason=reason,
                                    requested_by=requested_by, plan=plan)
            for g in changing
        ]
    indices = [g.index for g in changing]
    return NodeRequest(operations_, False, (
        f"{node.name} is already in {memory_mode}: compute mode {compute_mode} on GPUs {indices}, "
        "no memory change and no driver reload"
    ))


# --- dispatch --------------------------------------------------------------------------------

def enqueue(reconfiguration_id: int) -> bool:
    """Send the operation to its node's queue. Never raises: with the broker down the intent
    stays pending (``enqueued_at`` unset) and the sweeper sends it once Redis is back."""
    op = Reconfiguration.objects.select_related("node").filter(pk=reconfiguration_id).first()
    if op is None or op.is_terminal:
        return False
    try:
        dispatch.send_reconfiguration(op.pk, node_name=op.node.name)
    except Exception as exc:  # broker unreachable: kombu raises OperationalError and friends
        log.warning("could not enqueue reconfiguration #%s (will retry from the sweeper): %s", op.pk, exc)
        return False
    Reconfiguration.objects.filter(pk=op.pk).update(enqueued_at=timezone.now())
    return True


def sweep_reconfigurations(*, node: Node | None = None) -> list[int]:
    """Re-enqueue operations whose message may be lost: pending ones never (or long ago) sent,
    and started ones whose worker's lease expired. Claiming is fenced, so a duplicate message
    is harmless. Returns the ids sent."""
    now = timezone.now()
    resend_before = now - timedelta(seconds=settings.RECONFIGURATION_RESEND_AFTER_S)
    ops = Reconfiguration.objects.active()
    if node is not None:
        ops = ops.filter(node=node)
    due = ops.filter(
        Q(state=operations.PENDING, enqueued_at__isnull=True)
        | Q(state=operations.PENDING, enqueued_at__lt=resend_before)
        | (~Q(state=operations.PENDING) & Q(lease_expires_at__lt=now) & Q(enqueued_at__lt=resend_before))
    )
    return [pk for pk in due.values_list("pk", flat=True) if enqueue(pk)]


# --- worker side: claim and fenced writes ----------------------------------------------------

def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class OperationClaim:
    """A worker's right to change one operation; every write checks ``token``."""

    reconfiguration_id: int
    token: int
    worker: str

    def lease_until(self) -> Any:
        return timezone.now() + timedelta(seconds=settings.RECONFIGURATION_LEASE_S)

    def renew(self) -> bool:
        """Extend the lease; False if the token was superseded."""
        return Reconfiguration.objects.filter(pk=self.reconfiguration_id, fencing_token=self.token).update(
            lease_expires_at=self.lease_until()
        ) == 1

    def transition(self, state: str, action: str, message: str, *, output: str = "", ok: bool = True,
                   **fields: Any) -> Reconfiguration:
        """Move to ``state`` (checked against the state machine), record a step, publish it."""
        with transaction.atomic():
            op = Reconfiguration.objects.select_for_update().get(pk=self.reconfiguration_id)
            if op.fencing_token != self.token:
                raise StaleClaim(f"reconfiguration #{op.pk}: token {self.token} superseded by {op.fencing_token}")
            if state != op.state:
                operations.check_transition(op.state, state)
            values = {"state": state, "lease_expires_at": self.lease_until(), **fields}
            if operations.is_terminal(state):
                values["finished_at"] = timezone.now()
                values["lease_expires_at"] = None
            Reconfiguration.objects.filter(pk=op.pk).update(**values)
            for name, value in values.items():
                setattr(op, name, value)
            _add_step(op, self.token, action, message, output=output, ok=ok)
            if operations.is_terminal(state):
                audit.record(f"reconfiguration.{state}", obj=op, actor_name=f"agent {self.worker}",
                             after={"state": state, "error_code": op.error_code, "message": message[:500]})
            events.publish_operation_changed(op)  # after commit: the fleet's cards, the requester's toast
        return op

    def step(self, action: str, message: str, *, output: str = "", ok: bool = True) -> None:
        """Record a step without changing state."""
        with transaction.atomic():
            op = Reconfiguration.objects.select_for_update().get(pk=self.reconfiguration_id)
            if op.fencing_token != self.token:
                raise StaleClaim(f"reconfiguration #{op.pk}: token {self.token} superseded")
            Reconfiguration.objects.filter(pk=op.pk).update(lease_expires_at=self.lease_until())
            _add_step(op, self.token, action, message, output=output, ok=ok)

    def update(self, **fields: Any) -> None:
        fields = {name: storable(value) if isinstance(value, str) else value for name, value in fields.items()}
        if not Reconfiguration.objects.filter(pk=self.reconfiguration_id, fencing_token=self.token).update(**fields):
            raise StaleClaim(f"reconfiguration #{self.reconfiguration_id}: token {self.token} superseded")


def claim_reconfiguration(reconfiguration_id: int, *, worker: str) -> OperationClaim | None:
    """Take the operation for ``worker`` (increments the fencing token).

    None when it is gone, terminal, or held by another worker whose lease is still live — so a
    second delivery of the same message changes nothing.
    """
    now = timezone.now()
    with transaction.atomic():
        op = Reconfiguration.objects.select_for_update().filter(pk=reconfiguration_id).first()
        if op is None or op.is_terminal:
            return None
        if op.state != operations.PENDING and op.lease_expires_at and op.lease_expires_at > now:
            return None  # a live worker holds it (possibly this very message, delivered twice)
        token = op.fencing_token + 1
        claim = OperationClaim(reconfiguration_id=op.pk, token=token, worker=worker)
        Reconfiguration.objects.filter(pk=op.pk).update(
            fencing_token=token, worker=worker, lease_expires_at=claim.lease_until(),
            attempts=op.attempts + 1, started_at=op.started_at or now,
        )
    return claim


class LeaseKeeper:
    """Renews a claim's lease in the background while a long hardware call runs.

    ``lost`` turns True when a renewal finds the token superseded (another worker claimed the
    operation) or when renewals kept failing until the lease ran out (the sweeper may re-send
    it at any moment). The run checks it before every hardware call (partitions/reconfigure.py)
    and stops: the lease is what keeps two workers off the same GPUs. ``node_lease``, when
    given, is renewed too (a run outside an agent holds the node for itself).
    """

    def __init__(self, claim: OperationClaim, *, node_lease: Any = None) -> None:
        self.claim = claim
        self.node_lease = node_lease
        self._stop = threading.Event()
        self.lost = False
        self.why = ""
        self._thread = threading.Thread(target=self._run, name=f"lease-{claim.reconfiguration_id}", daemon=True)

    def _run(self) -> None:
        from django.db import connection

        interval = max(0.5, settings.RECONFIGURATION_LEASE_S / 3)
        valid_until = time.monotonic() + settings.RECONFIGURATION_LEASE_S
        try:
            while not self._stop.wait(interval):
                try:
                    renewed = self.claim.renew()
                    if renewed and self.node_lease is not None and not renew_node_lease(
                            self.node_lease, ttl_s=settings.RECONFIGURATION_LEASE_S):
                        self.why = f"the lease on node {self.node_lease.node_name} was taken over"
                        self.lost = True
                        return
                except Exception as exc:  # database unreachable: keep trying until the lease runs out
                    log.warning("renewing the lease of reconfiguration #%s failed: %s", self.claim.reconfiguration_id, exc)
                    connection.close()
                    if time.monotonic() >= valid_until:
                        self.why = f"the lease could not be renewed before it expired ({exc})"
                        self.lost = True
                        return
                    continue
                if not renewed:
                    self.why = "another worker claimed the operation"
                    self.lost = True
                    return
                valid_until = time.monotonic() + settings.RECONFIGURATION_LEASE_S
        finally:
            connection.close()

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _add_step(op: Reconfiguration, token: int, action: str, message: str, *, output: str = "", ok: bool = True) -> ReconfigurationStep:
    seq = (op.steps.aggregate(m=Max("seq"))["m"] or 0) + 1
    step = ReconfigurationStep.objects.create(
        reconfiguration=op, seq=seq, state=op.state, action=action, message=storable(message)[:4000],
        output=storable(output)[-20000:], ok=ok, fencing_token=token,
    )
    transaction.on_commit(lambda: events.publish_operation_step(op, step))
    return step


def clear_gpus_unhealthy(*, node: Node, gpu_indices: list[int], reason: str, actor: Any = None,
                         actor_name: str | None = None) -> list[int]:
    """Put GPUs marked unhealthy back into scheduling after a read of the hardware showed them
    at the layout they were meant to be in (an operation's verified read-back, or an operator's
    health check). Audited; returns the indices cleared."""
    rows = list(GPU.objects.filter(node=node, index__in=gpu_indices, health=GPU.Health.UNHEALTHY).order_by("index"))
    if not rows:
        return []
    GPU.objects.filter(pk__in=[g.pk for g in rows]).update(
        health=GPU.Health.HEALTHY, schedulable=True, health_reason="", health_check_requested_at=None)
    for gpu in rows:
        audit.record("gpu.mark_healthy", obj=gpu, actor=actor, actor_name=actor_name,
                     before={"health": GPU.Health.UNHEALTHY, "schedulable": gpu.schedulable, "reason": gpu.health_reason[:500]},
                     after={"health": GPU.Health.HEALTHY, "schedulable": True, "reason": reason[:500]})
    events.publish_fleet_changed(node.name, [g.index for g in rows])
    return [g.index for g in rows]


def pending_memory_modes(inventory: Any) -> dict[int, str]:
    """GPUs with an NPS change armed that the next driver reload would apply (amd-smi 7.x
    ``set -M`` is two-phase). Reported only by backends that read it (``pending_memory_mode``
    on the GPU; absent or None: not reported)."""
    pending = {}
    for gpu in inventory.gpus:
        mode = getattr(gpu, "pending_memory_mode", None)
        if mode and mode != gpu.memory_mode:
            pending[gpu.index] = mode
    return pending


def mark_gpus_unhealthy(*, node: Node, gpu_indices: list[int], reason: str) -> None:
    """Take GPUs out of scheduling after a failure that left them in an unknown state."""
    GPU.objects.filter(node=node, index__in=gpu_indices).update(
        health=GPU.Health.UNHEALTHY, schedulable=False, health_reason=reason[:2000]
    )
    audit.record("gpu.unhealthy", object_type="partitions.node", object_id=node.pk,
                 after={"gpus": list(gpu_indices), "reason": reason[:500]})
    events.publish_fleet_changed(node.name, gpu_indices)


__all__ = [
    "LeaseKeeper", "NodeRequest", "OperationClaim", "OperationInProgress", "StaleClaim", "claim_reconfiguration",
    "clear_gpus_unhealthy", "enqueue", "mark_gpus_unhealthy", "memory_change_needed", "pending_memory_modes",
    "request_node_reconfiguration", "request_reconfiguration", "sweep_reconfigurations", "valid_compute_modes",
    "worker_identity",
]
