"""Running one reconfiguration on the node agent: drain → apply → verify → (rollback).

Called by ``partitions.tasks.reconfigure_task``. Safe to run twice for the same operation: the
claim is fenced, the hardware is re-read first, an operation already at its target succeeds
without touching hardware, and an apply that may have happened (worker died mid-change) is
never repeated — the run verifies or rolls back instead. Success is only ever recorded after a
read-back shows the target on the GPUs it changed and no change on the GPUs it did not mean
to change.

Every hardware call goes through ``_Fenced``: before it, the run checks that its operation
lease was not lost (``LeaseKeeper.lost``) and that its agent still holds the node's lease
(partitions/services/agent_lease.py). Either check failing stops the run before the call.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

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
from partitions.models import GPU, Node, Reconfiguration
from partitions.services.agent_lease import (
    NodeLease,
    NodeLeaseHeld,
    acquire_node_lease,
    holds_node_lease,
    release_node_lease,
    renew_node_lease,
)
from partitions.services.inventory import backend_for, sync_inventory
from partitions.services.reconfiguration import (
    LeaseKeeper,
    OperationClaim,
    StaleClaim,
    claim_reconfiguration,
    clear_gpus_unhealthy,
    mark_gpus_unhealthy,
    pending_memory_modes,
    worker_identity,
)

log = logging.getLogger(__name__)

# Failures worth reading again after a pause (driver reloading, a hung or garbled call).
TRANSIENT = (BackendTimeout, BackendUnavailable, ParseError)
# Longest pause between two reads while waiting for a driver reload to finish.
MAX_RETRY_DELAY_S = 15.0

Modes = tuple[str, str]  # (compute mode, memory mode)


class LeaseLost(StaleClaim):
    """The run's lease on the operation is gone: another worker may be running it."""


class NodeLeaseLost(StaleClaim):
    """This process's agent no longer holds the node: another agent may be using the hardware."""


def layout_of(inventory: NodeInventory) -> dict[str, Any]:
    """The modes that matter for rollback: per GPU compute and memory mode."""
    return {"gpus": {str(g.index): {"compute_mode": g.compute_mode, "memory_mode": g.memory_mode} for g in inventory.gpus}}


def run_reconfiguration(reconfiguration_id: int, *, worker: str | None = None, backend: Any = None,
                        sleep: Callable[[float], None] = time.sleep, node_lease: NodeLease | None = None) -> str:
    """Claim and run the operation; returns the final state, or "skipped" (terminal, or held
    by a live worker), "stale" (another worker took it over), "not_lease_holder" (another agent
    holds the node) or "lease_lost" (this agent lost the node mid-run).

    ``node_lease``: the node lease of the agent running this process (default: the one in the
    environment, set by ``run_agent``). Outside an agent the run takes the node's lease for
    itself, and refuses while an agent holds it.
    """
    worker = worker or worker_identity()
    node = Node.objects.filter(reconfigurations__pk=reconfiguration_id).first()
    if node is None:
        return "skipped"
    lease = node_lease or NodeLease.from_environment(node.name)
    own_lease = lease is None
    if lease is None:
        try:
            lease = acquire_node_lease(node=node, holder=worker, ttl_s=settings.RECONFIGURATION_LEASE_S)
        except NodeLeaseHeld as exc:
            log.warning("reconfiguration #%s not run here: %s", reconfiguration_id, exc)
            return "not_lease_holder"
    elif not holds_node_lease(lease):
        log.warning("reconfiguration #%s not run: this agent no longer holds node %s", reconfiguration_id, node.name)
        return "not_lease_holder"
    try:
        claim = claim_reconfiguration(reconfiguration_id, worker=worker)
        if claim is None:
            return "skipped"
        op = Reconfiguration.objects.select_related("node", "gpu").get(pk=reconfiguration_id)
        run = _Run(op, claim, backend or backend_for(op.node), sleep, lease, own_lease)
        try:
            return run.execute()
        except NodeLeaseLost as exc:
            log.warning("%s: stopping, %s", op, exc)
            run.hand_back(str(exc))
            return "lease_lost"
        except StaleClaim as exc:
            log.warning("%s: stopping, %s", op, exc)
            return "stale"
    finally:
        if own_lease:
            release_node_lease(lease)


class _Fenced:
    """The backend, with the run's lease checks before every call (see the module docstring)."""

    def __init__(self, backend: Any, check: Callable[[str], None]) -> None:
        self._backend = backend
        self._check = check

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._backend, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._check(name)
            return attr(*args, **kwargs)

        return call


class _Run:
    def __init__(self, op: Reconfiguration, claim: OperationClaim, backend: Any, sleep: Callable[[float], None],
                 node_lease: NodeLease, own_lease: bool) -> None:
        self.op = op
        self.node: Node = op.node
        self.claim = claim
        self.sleep = sleep
        self.node_lease = node_lease
        self.own_lease = own_lease
        self.keepers: list[LeaseKeeper] = []
        self.backend = _Fenced(backend, self.check_leases)
        self.affected: list[int] = (
            [op.gpu_index] if op.kind == Reconfiguration.Kind.COMPUTE and op.gpu_index is not None
            else list(self.node.gpus.values_list("index", flat=True))
        )
        self.pending_reported: dict[int, str] | None = None

    # --- leases ------------------------------------------------------------------------------
    def check_leases(self, call: str) -> None:
        """Before every hardware call: stop unless this run still holds the operation and its
        agent still holds the node."""
        for keeper in self.keepers:
            if keeper.lost:
                raise LeaseLost(f"reconfiguration #{self.op.pk}: lease lost ({keeper.why}); not running amd-smi ({call})")
        # A run outside an agent holds the node for itself and keeps it alive here; an agent's
        # lease is renewed by its heartbeat, so the run only checks it.
        held = renew_node_lease(self.node_lease, ttl_s=settings.RECONFIGURATION_LEASE_S) if self.own_lease \
            else holds_node_lease(self.node_lease)
        if not held:
            raise NodeLeaseLost(f"agent {self.node_lease.holder} no longer holds node {self.node.name} "
                                f"(lease token {self.node_lease.token}); not running amd-smi ({call})")

    def keep_lease(self) -> LeaseKeeper:
        keeper = LeaseKeeper(self.claim, node_lease=self.node_lease if self.own_lease else None)
        self.keepers.append(keeper)
        return keeper

    def hand_back(self, why: str) -> None:
        """The node is another agent's now: record why this run stopped and let the lease
        lapse at once, so the holder's sweeper re-sends the operation."""
        try:
            self.claim.step(ops.STEP_ERROR, f"stopped before touching the hardware: {why}", ok=False)
            self.claim.update(lease_expires_at=timezone.now())
        except StaleClaim:
            pass

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
            message = ("verified at the target after the previous worker stopped" if applied_before
                       else "already at the target; hardware not touched")
            return self.succeed(inventory, ops.STEP_DONE, message)
        if applied_before:
            # The previous worker may have applied (or half-applied) the change: never apply
            # twice. Restore the layout recorded before the first attempt.
            return self.rollback("the worker running this change stopped during apply and the hardware is not at the target: "
                                 + self.describe_mismatch(inventory))
        pending = pending_memory_modes(inventory)
        if pending and op.kind == Reconfiguration.Kind.COMPUTE:
            message = (f"an NPS change is armed in the hardware ({self.describe_pending(pending)}) and takes effect on the "
                       f"next driver reload; complete or cancel it first with a node request "
                       f"(POST /api/v1/nodes/{self.node.name}/reconfigure/ with the memory mode wanted)")
            sync_inventory(node=self.node, inventory=inventory)
            self.claim.transition(ops.FAILED, ops.STEP_DONE, f"refused, nothing changed: {message}", ok=False,
                                  error_code="pending_memory_mode", error_message=message)
            return ops.FAILED

        refused = self.drain()
        if refused:
            self.claim.transition(ops.FAILED, ops.STEP_DRAIN, refused, ok=False, error_code="workloads_present", error_message=refused)
            return ops.FAILED

        deadline = None
        if op.kind == Reconfiguration.Kind.MEMORY:
            # The reload may outlive this worker: a resumed one waits for the GPUs until then.
            deadline = timezone.now() + timedelta(
                seconds=settings.AMD_SMI_RELOAD_TIMEOUT_S + settings.AMD_SMI_TIMEOUT_S)
        self.claim.transition(ops.APPLYING, ops.STEP_APPLY, self.describe_apply(), apply_deadline_at=deadline)
        op.apply_deadline_at = deadline
        try:
            with self.keep_lease():
                output = self.apply()
        except BackendError as exc:
            return self.after_apply_error(exc)
        self.claim.transition(ops.VERIFYING, ops.STEP_APPLIED, "amd-smi reported the change; reading it back", output=output)
        inventory = self.read("read back the new state")
        if inventory is None:
            return ops.FAILED
        if self.at_target(inventory):
            return self.succeed(inventory, ops.STEP_VERIFIED, f"verified: {self.describe_layout(inventory)}")
        return self.rollback(f"read-back does not show the target: {self.describe_mismatch(inventory)}")

    def succeed(self, inventory: NodeInventory, action: str, message: str) -> str:
        """Record success after a read that shows the target; the GPUs this operation set are
        at the layout requested, so a mark "unhealthy" left by an earlier failure is cleared."""
        sync_inventory(node=self.node, inventory=inventory)
        self.record_pending(inventory)
        cleared = clear_gpus_unhealthy(node=self.node, gpu_indices=self.affected, actor_name=f"agent {self.claim.worker}",
                                       reason=f"reconfiguration #{self.op.pk} read the GPU back at the requested layout")
        if cleared:
            message += f"; GPUs {cleared} healthy again (the read-back shows the requested layout)"
        self.claim.transition(ops.SUCCEEDED, action, message)
        return ops.SUCCEEDED

    # --- expected layouts ------------------------------------------------------------------
    def baseline(self) -> dict[int, Modes]:
        """Each GPU's modes had this operation never run: the layout read before its first
        attempt, except GPUs that other operations set since this one started applying (they
        ran while this one waited to resume; their read-back synced the inventory rows)."""
        previous = {int(i): (v.get("compute_mode") or "", v.get("memory_mode") or "")
                    for i, v in self.op.previous_layout.get("gpus", {}).items()}
        apply_step = self.op.steps.filter(action=ops.STEP_APPLY).order_by("seq").first()
        if apply_step is None:
            return previous
        later = (Reconfiguration.objects.filter(node=self.node, finished_at__gt=apply_step.created_at)
                 .exclude(pk=self.op.pk).values_list("kind", "gpu_index"))
        touched: set[int] = set()
        for kind, index in later:
            if kind == Reconfiguration.Kind.MEMORY:
                touched |= set(previous)
            elif index is not None:
                touched.add(index)
        for index, compute, memory in GPU.objects.filter(node=self.node, index__in=touched).values_list(
                "index", "compute_mode", "memory_mode"):
            previous[index] = (compute, memory)
        return previous

    def desired_compute(self, gpu_index: int) -> str:
        op = self.op
        if op.target_compute_mode:
            return op.target_compute_mode
        previous = op.previous_layout.get("gpus", {}).get(str(gpu_index), {})
        return previous.get("compute_mode") or ""

    def expected(self) -> dict[int, Modes]:
        """What every GPU of the node must read after a successful change. A compute change
        could have touched any GPU (logical ids renumber after each change), so the GPUs it did
        not target must read as before it."""
        op = self.op
        if op.kind == Reconfiguration.Kind.COMPUTE:
            expected = self.baseline()
            memory = expected.get(op.gpu_index, ("", ""))[1] if op.gpu_index is not None else ""
            expected[op.gpu_index] = (op.target_compute_mode, memory)  # type: ignore[index]
            return expected
        return {index: (self.desired_compute(index), op.target_memory_mode) for index in self.affected}

    def mismatches(self, inventory: NodeInventory, expected: dict[int, Modes]) -> list[str]:
        """How ``inventory`` differs from ``expected`` (empty: it matches), naming each GPU."""
        found = {g.index: g for g in inventory.gpus}
        problems = []
        for index in sorted(set(expected) | set(found)):
            if index not in found:
                problems.append(f"GPU {index} missing")
                continue
            if index not in expected:
                problems.append(f"GPU {index} appeared")
                continue
            gpu = found[index]
            want, have = expected[index], (gpu.compute_mode or "", gpu.memory_mode or "")
            if want != have:
                problems.append(f"GPU {index} {'+'.join(want)} → {'+'.join(have)}")
        pending = pending_memory_modes(inventory)
        for index, mode in sorted(pending.items()):
            if mode != expected.get(index, ("", ""))[1]:
                problems.append(f"GPU {index} has {mode} armed (pending until the next driver reload)")
        return problems

    def at_target(self, inventory: NodeInventory) -> bool:
        return not self.mismatches(inventory, self.expected())

    def describe_mismatch(self, inventory: NodeInventory) -> str:
        problems = self.mismatches(inventory, self.expected())
        text = f"{self.describe_layout(inventory)} ({'; '.join(problems)})"
        op = self.op
        if op.kind == Reconfiguration.Kind.COMPUTE:
            collateral = [p for p in problems if not p.startswith(f"GPU {op.gpu_index} ")]
            if collateral:
                text += f"; {', '.join(collateral)} although this operation only targets GPU {op.gpu_index}"
        return text

    def record_pending(self, inventory: NodeInventory) -> None:
        """Keep the inventory's pending NPS modes as the hardware reports them, so requests see
        an armed change (partitions.services.reconfiguration.memory_change_needed)."""
        if not any(hasattr(g, "pending_memory_mode") for g in inventory.gpus):
            return  # this backend does not report pending modes
        pending = pending_memory_modes(inventory)
        for gpu in inventory.gpus:
            GPU.objects.filter(node=self.node, index=gpu.index).exclude(pending_memory_mode=pending.get(gpu.index, "")).update(
                pending_memory_mode=pending.get(gpu.index, ""))

    # --- pieces ------------------------------------------------------------------------------
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
        stopped = workloads.stop_workloads(node=self.node, gpu_indices=self.affected, reason=f"reconfiguration #{self.op.pk}")
        self.claim.step(ops.STEP_DRAIN, f"stopped workloads: {', '.join(stopped) or names}")
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

    @staticmethod
    def describe_pending(pending: dict[int, str]) -> str:
        by_mode: dict[str, list[int]] = {}
        for index, mode in sorted(pending.items()):
            by_mode.setdefault(mode, []).append(index)
        return "; ".join(f"{mode} on GPUs {indices}" for mode, indices in sorted(by_mode.items()))

    def apply(self) -> str:
        # The backend checks the change against this run's last read (the same phase: nothing
        # changed since), reads back in full after it, and execute() then reads once more on
        # its own: 6 amd-smi runs for a compute change (tests/partitions/test_amdsmi_invocations.py).
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
            self.record_pending(inventory)
            return self.fail_unrecoverable(f"amd-smi timed out during the change: {exc.message}", exc.code, gpus=self.affected)
        if not self.mismatches(inventory, self.baseline()):
            sync_inventory(node=self.node, inventory=inventory)
            self.record_pending(inventory)
            self.claim.transition(
                ops.FAILED, ops.STEP_DONE, f"failed, nothing changed: {exc.message}", ok=False,
                error_code=exc.code, error_message=exc.message,
            )
            return ops.FAILED
        return self.rollback(f"{exc.code}: {exc.message}", error_code=exc.code)

    def rollback(self, reason: str, *, error_code: str = "verification_failed") -> str:
        """Restore every GPU to the baseline (the layout before this operation, with what later
        operations set) and verify it by reading the hardware back."""
        baseline = self.baseline()
        self.claim.step(ops.STEP_ROLLBACK, f"restoring the previous layout ({reason})", ok=False)
        try:
            with self.keep_lease():
                inventory = self.backend.inventory()
                memory_modes = {memory for _, memory in baseline.values()} - {""}
                if len(memory_modes) == 1:
                    (previous_memory,) = memory_modes
                    if (any(g.memory_mode != previous_memory for g in inventory.gpus)
                            or any(m != previous_memory for m in pending_memory_modes(inventory).values())):
                        inventory = self.backend.set_memory_mode(previous_memory)
                self.set_compute_modes(inventory, lambda index: baseline.get(index, ("", ""))[0])
                inventory = self.backend.inventory()
            problems = self.mismatches(inventory, baseline)
            if problems:
                raise VerificationFailed(f"after rollback: {self.describe_layout(inventory)} ({'; '.join(problems)})")
        except BackendError as exc:
            return self.fail_unrecoverable(f"{reason}; rollback failed: {exc.message}", error_code)
        sync_inventory(node=self.node, inventory=inventory)
        self.record_pending(inventory)
        self.claim.transition(ops.ROLLED_BACK, ops.STEP_DONE, f"rolled back and verified: {self.describe_layout(inventory)}",
                              ok=False, error_code=error_code, error_message=reason)
        return ops.ROLLED_BACK

    def fail_unrecoverable(self, message: str, error_code: str, *, gpus: list[int] | None = None) -> str:
        """The GPUs are in an unknown or unintended state: take them out of scheduling."""
        bad = list(gpus or self.affected)
        try:
            inventory = self.backend.inventory()
            sync_inventory(node=self.node, inventory=inventory)
            self.record_pending(inventory)
            baseline = self.baseline()
            mismatched = [g.index for g in inventory.gpus
                          if baseline.get(g.index) != (g.compute_mode or "", g.memory_mode or "")]
            if gpus is None:
                bad = mismatched or bad
        except BackendError:
            pass
        message = f"{message}; GPUs {bad} marked unhealthy and unschedulable"
        mark_gpus_unhealthy(node=self.node, gpu_indices=bad, reason=f"reconfiguration #{self.op.pk}: {message}")
        self.claim.transition(ops.FAILED, ops.STEP_DONE, message, ok=False, error_code=error_code, error_message=message)
        return ops.FAILED

    def read(self, what: str) -> NodeInventory | None:
        """Read the inventory, retrying transient failures with exponential backoff.

        Bounded by READ_RETRIES, or, while an NPS change may still be reloading the driver, by
        the reload's deadline stored when the apply started (a worker resuming after a crash
        must not give up on a reload that is allowed to take AMD_SMI_RELOAD_TIMEOUT_S). When
        every try fails the tool cannot be trusted: the affected GPUs are marked unhealthy and
        unschedulable and the operation fails (returns None)."""
        tries = settings.RECONFIGURATION_READ_RETRIES + 1
        deadline = self.op.apply_deadline_at
        # The budget is counted in the pauses asked for, as well as on the clock, so a run with
        # an injected sleep ends as surely as a real one.
        budget = max(0.0, (deadline - timezone.now()).total_seconds()) if deadline else 0.0
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                inventory: NodeInventory = self.backend.inventory()
            except TRANSIENT as exc:
                waiting = attempt >= tries and deadline is not None and waited < budget and timezone.now() < deadline
                if attempt >= tries and not waiting:
                    self.claim.step(ops.STEP_ERROR, f"{what}: {exc.code} after {attempt} tries: {exc.message}", output=exc.output, ok=False)
                    mark_gpus_unhealthy(node=self.node, gpu_indices=self.affected,
                                        reason=f"reconfiguration #{self.op.pk}: amd-smi failed ({exc.code}): {exc.message}")
                    self.claim.transition(ops.FAILED, ops.STEP_DONE,
                                          f"amd-smi did not answer ({exc.code}); GPUs {self.affected} marked unhealthy and unschedulable",
                                          ok=False, error_code=exc.code, error_message=exc.message)
                    return None
                base = settings.RECONFIGURATION_RETRY_BACKOFF_S
                # Capped so the lease, renewed after each pause, never lapses while waiting.
                cap = max(base, min(MAX_RETRY_DELAY_S, settings.RECONFIGURATION_LEASE_S / 2))
                delay = min(base * 2 ** (attempt - 1), cap) * (1 + random.random() / 4)
                if waiting:
                    delay = min(delay, max(budget - waited, 0.0)) or base
                    note = f"waiting for the driver reload until {deadline:%H:%M:%S} UTC"
                else:
                    note = f"try {attempt}/{tries}"
                self.claim.step(ops.STEP_ERROR, f"{what}: {exc.code} ({note}), retrying in {delay:.1f} s",
                                output=exc.output, ok=False)
                self.sleep(delay)
                waited += delay
                if not self.claim.renew():
                    raise StaleClaim(f"reconfiguration #{self.op.pk}: token {self.claim.token} superseded while waiting") from exc
            except BackendError as exc:
                self.claim.step(ops.STEP_ERROR, f"{what}: {exc.code}: {exc.message}", output=exc.output, ok=False)
                self.claim.transition(ops.FAILED, ops.STEP_DONE, f"cannot read the hardware: {exc.message}", ok=False,
                                      error_code=exc.code, error_message=exc.message)
                return None
            else:
                self.note_pending(inventory)
                return inventory

    def note_pending(self, inventory: NodeInventory) -> None:
        """Every read: an NPS change armed in the hardware is recorded (once per state seen),
        so it can never hide behind an "already at the target"."""
        pending = pending_memory_modes(inventory)
        if pending and pending != self.pending_reported:
            self.claim.step(ops.STEP_READ, f"pending NPS change in the hardware: {self.describe_pending(pending)} "
                                           "(takes effect on the next driver reload)", ok=False)
        self.pending_reported = pending
