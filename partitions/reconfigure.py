"""Running one reconfiguration on the node agent: drain → apply → verify → (rollback).

Called by ``partitions.tasks.reconfigure_task``. Safe to run twice for the same operation: the
claim is fenced, the hardware is re-read first, an operation already at its target succeeds
without touching hardware, and an apply that may have happened (worker died mid-change) is
never repeated — the run verifies or rolls back instead. Success is only ever recorded after a
read-back shows the target.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

from django.conf import settings

from partitions import operations as ops
from partitions import workloads
from partitions.backends.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ParseError,
    VerificationFailed,
)
from partitions.backends.types import NodeInventory
from partitions.models import Node, Reconfiguration
from partitions.services.inventory import backend_for, sync_inventory
from partitions.services.reconfiguration import (
    LeaseKeeper,
    OperationClaim,
    StaleClaim,
    claim_reconfiguration,
    mark_gpus_unhealthy,
    worker_identity,
)

log = logging.getLogger(__name__)

# Failures worth reading again after a pause (driver reloading, a hung or garbled call).
TRANSIENT = (BackendTimeout, BackendUnavailable, ParseError)


def layout_of(inventory: NodeInventory) -> dict[str, Any]:
    """The modes that matter for rollback: per GPU compute and memory mode."""
    return {"gpus": {str(g.index): {"compute_mode": g.compute_mode, "memory_mode": g.memory_mode} for g in inventory.gpus}}


def run_reconfiguration(reconfiguration_id: int, *, worker: str | None = None, backend: Any = None,
                        sleep: Callable[[float], None] = time.sleep) -> str:
    """Claim and run the operation; returns the final state, or "skipped"/"stale"."""
    claim = claim_reconfiguration(reconfiguration_id, worker=worker or worker_identity())
    if claim is None:
        return "skipped"
    op = Reconfiguration.objects.select_related("node", "gpu").get(pk=reconfiguration_id)
    try:
        return _Run(op, claim, backend or backend_for(op.node), sleep).execute()
    except StaleClaim as exc:
        log.warning("%s: stopping, %s", op, exc)
        return "stale"


class _Run:
    def __init__(self, op: Reconfiguration, claim: OperationClaim, backend: Any, sleep: Callable[[float], None]) -> None:
        self.op = op
        self.node: Node = op.node
        self.claim = claim
        self.backend = backend
        self.sleep = sleep
        self.affected: list[int] = (
            [op.gpu_index] if op.kind == Reconfiguration.Kind.COMPUTE and op.gpu_index is not None
            else list(self.node.gpus.values_list("index", flat=True))
        )

    # --- the sequence ----------------------------------------------------------------------
    def execute(self) -> str:
        op = self.op
        applied_before = op.steps.filter(action=ops.STEP_APPLY).exists()
        self.claim.transition(ops.DRAINING, ops.STEP_CLAIMED, f"claimed by {self.claim.worker} (attempt {op.attempts})")
        inventory = self.read("read the hardware state")
        if inventory is None:
            return ops.FAILED
        if not op.previous_layout:
            op.previous_layout = layout_of(inventory)
            self.claim.update(previous_layout=op.previous_layout)
        if self.at_target(inventory):
            sync_inventory(node=self.node, inventory=inventory)
            message = ("verified at the target after the previous worker stopped" if applied_before
                       else "already at the target; hardware not touched")
            self.claim.transition(ops.SUCCEEDED, ops.STEP_DONE, message)
            return ops.SUCCEEDED
        if applied_before:
            # The previous worker may have applied (or half-applied) the change: never apply
            # twice. Restore the layout recorded before the first attempt.
            return self.rollback("the worker running this change stopped during apply and the hardware is not at the target")

        refused = self.drain()
        if refused:
            self.claim.transition(ops.FAILED, ops.STEP_DRAIN, refused, ok=False, error_code="workloads_present", error_message=refused)
            return ops.FAILED

        self.claim.transition(ops.APPLYING, ops.STEP_APPLY, self.describe_apply())
        try:
            with LeaseKeeper(self.claim):
                output = self.apply()
        except BackendError as exc:
            return self.after_apply_error(exc)
        self.claim.transition(ops.VERIFYING, ops.STEP_APPLIED, "amd-smi reported the change; reading it back", output=output)
        inventory = self.read("read back the new state")
        if inventory is None:
            return ops.FAILED
        if self.at_target(inventory):
            sync_inventory(node=self.node, inventory=inventory)
            self.claim.transition(ops.SUCCEEDED, ops.STEP_VERIFIED, f"verified: {self.describe_layout(inventory)}")
            return ops.SUCCEEDED
        return self.rollback(f"read-back does not show the target: {self.describe_layout(inventory)}")

    # --- pieces ------------------------------------------------------------------------------
    def desired_compute(self, gpu_index: int) -> str:
        op = self.op
        if op.target_compute_mode:
            return op.target_compute_mode
        previous = op.previous_layout.get("gpus", {}).get(str(gpu_index), {})
        return previous.get("compute_mode") or ""

    def at_target(self, inventory: NodeInventory) -> bool:
        op = self.op
        gpus = {g.index: g for g in inventory.gpus}
        if op.kind == Reconfiguration.Kind.COMPUTE:
            gpu = gpus.get(op.gpu_index)  # type: ignore[arg-type]
            return gpu is not None and gpu.compute_mode == op.target_compute_mode
        if not gpus or set(gpus) != set(self.affected):
            return False
        return all(g.memory_mode == op.target_memory_mode and g.compute_mode == self.desired_compute(g.index)
                   for g in gpus.values())

    def drain(self) -> str | None:
        """Refuse (return the reason) when workloads use the affected partitions, unless the
        request says ``drain``. What runs there comes from the workloads port
        (partitions/workloads.py; model deployments plug in there)."""
        running = workloads.workloads_on(node=self.node, gpu_indices=self.affected)
        if not running:
            self.claim.step(ops.STEP_DRAIN, "no workloads on the affected partitions")
            return None
        names = ", ".join(running)
        if not self.op.drain:
            return f"refused: workloads use the affected partitions ({names}); request again with drain=true to stop them"
        workloads.stop_workloads(node=self.node, gpu_indices=self.affected, reason=f"reconfiguration #{self.op.pk}")
        self.claim.step(ops.STEP_DRAIN, f"stopped workloads: {names}")
        return None

    def describe_apply(self) -> str:
        op = self.op
        if op.kind == Reconfiguration.Kind.COMPUTE:
            return f"amd-smi set -C {op.target_compute_mode} on GPU {op.gpu_index}"
        then = f", then compute mode {op.target_compute_mode}" if op.target_compute_mode else ", then restore each GPU's compute mode"
        return f"amd-smi set -M {op.target_memory_mode} (driver reload for every GPU of {self.node.name}){then}"

    @staticmethod
    def describe_layout(inventory: NodeInventory) -> str:
        return ", ".join(f"GPU {g.index} {g.compute_mode}+{g.memory_mode}" for g in inventory.gpus)

    def apply(self) -> str:
        op = self.op
        if op.kind == Reconfiguration.Kind.COMPUTE:
            self.backend.set_compute_mode([op.gpu_index], op.target_compute_mode)
            return f"GPU {op.gpu_index}: {op.target_compute_mode}"
        inventory = self.backend.set_memory_mode(op.target_memory_mode)
        self.claim.step(ops.STEP_APPLIED, f"memory mode {op.target_memory_mode} verified on every GPU: {self.describe_layout(inventory)}")
        return self.set_compute_modes(inventory, self.desired_compute)

    def set_compute_modes(self, inventory: NodeInventory, desired: Callable[[int], str]) -> str:
        """Re-set compute modes after the driver re-derived them (grouped by mode)."""
        by_mode: dict[str, list[int]] = {}
        for gpu in inventory.gpus:
            want = desired(gpu.index)
            if want and gpu.compute_mode != want:
                by_mode.setdefault(want, []).append(gpu.index)
        done = []
        for mode, indices in sorted(by_mode.items()):
            self.backend.set_compute_mode(indices, mode)
            done.append(f"GPUs {indices}: {mode}")
            self.claim.step(ops.STEP_APPLIED, f"compute mode {mode} verified on GPUs {indices}")
        return "; ".join(done) or "compute modes already as wanted"

    def after_apply_error(self, exc: BackendError) -> str:
        self.claim.step(ops.STEP_ERROR, f"{exc.code}: {exc.message}", output=exc.output, ok=False)
        inventory = self.read("read the state after the failed change")
        if inventory is None:
            return ops.FAILED
        if isinstance(exc, BackendTimeout):
            # The change hung and was killed: whatever the read-back says, the driver may still
            # be mid-change. Keep the GPUs out of scheduling until an operator looks.
            sync_inventory(node=self.node, inventory=inventory)
            return self.fail_unrecoverable(f"amd-smi timed out during the change: {exc.message}", exc.code, gpus=self.affected)
        if layout_of(inventory) == self.op.previous_layout:
            sync_inventory(node=self.node, inventory=inventory)
            self.claim.transition(
                ops.FAILED, ops.STEP_DONE, f"failed, nothing changed: {exc.message}", ok=False,
                error_code=exc.code, error_message=exc.message,
            )
            return ops.FAILED
        return self.rollback(f"{exc.code}: {exc.message}", error_code=exc.code)

    def rollback(self, reason: str, *, error_code: str = "verification_failed") -> str:
        previous = self.op.previous_layout.get("gpus", {})
        self.claim.step(ops.STEP_ROLLBACK, f"restoring the previous layout ({reason})", ok=False)
        try:
            with LeaseKeeper(self.claim):
                inventory = self.backend.inventory()
                memory_modes = {v.get("memory_mode") for v in previous.values()} - {None}
                if len(memory_modes) == 1:
                    (previous_memory,) = memory_modes
                    if any(g.memory_mode != previous_memory for g in inventory.gpus):
                        inventory = self.backend.set_memory_mode(previous_memory)
                self.set_compute_modes(inventory, lambda index: previous.get(str(index), {}).get("compute_mode") or "")
                inventory = self.backend.inventory()
            if layout_of(inventory) != self.op.previous_layout:
                raise VerificationFailed(f"after rollback: {self.describe_layout(inventory)}")
        except BackendError as exc:
            return self.fail_unrecoverable(f"{reason}; rollback failed: {exc.message}", error_code)
        sync_inventory(node=self.node, inventory=inventory)
        self.claim.transition(ops.ROLLED_BACK, ops.STEP_DONE, f"rolled back and verified: {self.describe_layout(inventory)}",
                              ok=False, error_code=error_code, error_message=reason)
        return ops.ROLLED_BACK

    def fail_unrecoverable(self, message: str, error_code: str, *, gpus: list[int] | None = None) -> str:
        """The GPUs are in an unknown or unintended state: take them out of scheduling."""
        bad = list(gpus or self.affected)
        try:
            inventory = self.backend.inventory()
            sync_inventory(node=self.node, inventory=inventory)
            previous = self.op.previous_layout.get("gpus", {})
            mismatched = [g.index for g in inventory.gpus
                          if previous.get(str(g.index)) != {"compute_mode": g.compute_mode, "memory_mode": g.memory_mode}]
            if gpus is None:
                bad = mismatched or bad
        except BackendError:
            pass
        message = f"{message}; GPUs {bad} marked unhealthy and unschedulable"
        mark_gpus_unhealthy(node=self.node, gpu_indices=bad, reason=f"reconfiguration #{self.op.pk}: {message}")
        self.claim.transition(ops.FAILED, ops.STEP_DONE, message, ok=False, error_code=error_code, error_message=message)
        return ops.FAILED

    def read(self, what: str) -> NodeInventory | None:
        """Read the inventory, retrying transient failures with bounded exponential backoff.

        When every try fails the tool cannot be trusted: the affected GPUs are marked
        unhealthy and unschedulable and the operation fails (returns None)."""
        tries = settings.RECONFIGURATION_READ_RETRIES + 1
        for attempt in range(1, tries + 1):
            try:
                return self.backend.inventory()
            except TRANSIENT as exc:
                if attempt == tries:
                    self.claim.step(ops.STEP_ERROR, f"{what}: {exc.code} after {tries} tries: {exc.message}", output=exc.output, ok=False)
                    mark_gpus_unhealthy(node=self.node, gpu_indices=self.affected,
                                        reason=f"reconfiguration #{self.op.pk}: amd-smi failed ({exc.code}): {exc.message}")
                    self.claim.transition(ops.FAILED, ops.STEP_DONE,
                                          f"amd-smi did not answer ({exc.code}); GPUs {self.affected} marked unhealthy and unschedulable",
                                          ok=False, error_code=exc.code, error_message=exc.message)
                    return None
                delay = settings.RECONFIGURATION_RETRY_BACKOFF_S * 2 ** (attempt - 1) * (1 + random.random() / 4)
                self.claim.step(ops.STEP_ERROR, f"{what}: {exc.code} (try {attempt}/{tries}), retrying in {delay:.1f} s",
                                output=exc.output, ok=False)
                self.sleep(delay)
                self.claim.renew()
            except BackendError as exc:
                self.claim.step(ops.STEP_ERROR, f"{what}: {exc.code}: {exc.message}", output=exc.output, ok=False)
                self.claim.transition(ops.FAILED, ops.STEP_DONE, f"cannot read the hardware: {exc.message}", ok=False,
                                      error_code=exc.code, error_message=exc.message)
                return None
        return None  # not reached
