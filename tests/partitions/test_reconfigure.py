"""Reconfiguration: request validation, the fenced state machine, drain → apply → verify →
rollback, against the amd-smi emulator through the real backend (no Celery here; the
reliability tests in tests/integration run real workers)."""

from __future__ import annotations

import os

import pytest
from django.core.exceptions import ValidationError

from partitions import operations as ops
from partitions.models import GPU, Node, Reconfiguration
from partitions.reconfigure import run_reconfiguration
from partitions.services.reconfiguration import (
    OperationInProgress,
    StaleClaim,
    claim_reconfiguration,
    request_reconfiguration,
)

pytestmark = pytest.mark.django_db


def no_sleep(seconds: float) -> None:
    pass


def gpu(emulated, index: int = 0) -> GPU:
    return GPU.objects.get(node=emulated.node, index=index)


def actions(op: Reconfiguration) -> list[str]:
    return list(op.steps.order_by("seq").values_list("action", flat=True))


# --- request ---------------------------------------------------------------------------------

def test_request_stores_a_pending_intent_and_enqueues_on_commit(emulated, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: sent.append(pk) or True)
    with django_capture_on_commit_callbacks(execute=True):
        op = request_reconfiguration(gpu=gpu(emulated), compute_mode="cpx", reason="more replicas")
    assert op.state == ops.PENDING and op.target_compute_mode == "CPX"
    assert sent == [op.pk]
    assert actions(op) == [ops.STEP_ENQUEUED]


@pytest.mark.parametrize(
    "kwargs, field, text",
    [
        ({"compute_mode": "TPX"}, "compute_mode", "valid under NPS1: SPX, DPX, QPX, CPX"),
        ({"compute_mode": "XYZ"}, "compute_mode", "not a compute mode"),
        ({"compute_mode": "CPX", "memory_mode": "NPS4"}, "memory_mode", "node-wide"),
    ],
)
def test_invalid_gpu_targets_are_refused_before_anything_is_stored(emulated, kwargs, field, text):
    with pytest.raises(ValidationError) as excinfo:
        request_reconfiguration(gpu=gpu(emulated), **kwargs)
    assert text in str(excinfo.value.message_dict[field])
    assert not Reconfiguration.objects.exists()


def test_spx_under_nps4_names_the_valid_modes(emulated):
    Node.objects.filter(pk=emulated.node.pk).update(memory_mode="NPS4")
    GPU.objects.filter(node=emulated.node).update(memory_mode="NPS4", compute_mode="CPX")
    with pytest.raises(ValidationError, match="valid under NPS4: QPX, CPX"):
        request_reconfiguration(gpu=gpu(emulated), compute_mode="SPX")


def test_nps_change_that_would_leave_an_invalid_compute_mode_asks_for_one(emulated):
    with pytest.raises(ValidationError, match="give compute_mode, one of: QPX, CPX"):
        request_reconfiguration(node=emulated.node, memory_mode="NPS4")
    with pytest.raises(ValidationError, match="supports memory modes: NPS1, NPS4"):
        request_reconfiguration(node=emulated.node, memory_mode="NPS2", compute_mode="DPX")


def test_a_second_request_on_the_same_gpu_or_node_is_refused(emulated):
    first = request_reconfiguration(gpu=gpu(emulated, 0), compute_mode="CPX")
    with pytest.raises(OperationInProgress) as excinfo:
        request_reconfiguration(gpu=gpu(emulated, 0), compute_mode="DPX")
    assert excinfo.value.operation == first
    assert f"operation #{first.pk}" in str(excinfo.value)
    # The other GPU is free, but an NPS change needs the whole node.
    request_reconfiguration(gpu=gpu(emulated, 1), compute_mode="DPX")
    with pytest.raises(OperationInProgress):
        request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="CPX")


def test_the_database_refuses_two_active_operations_on_one_gpu(emulated):
    from django.db import IntegrityError, transaction

    request_reconfiguration(gpu=gpu(emulated), compute_mode="CPX")
    with pytest.raises(IntegrityError), transaction.atomic():
        Reconfiguration.objects.create(kind="compute", node=emulated.node, gpu=gpu(emulated), gpu_index=0,
                                       target_compute_mode="DPX")


# --- running ---------------------------------------------------------------------------------

def test_compute_change_is_applied_verified_and_synced(emulated, fast_ops):
    op = request_reconfiguration(gpu=gpu(emulated, 1), compute_mode="CPX")
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.SUCCEEDED
    op.refresh_from_db()
    assert op.state == ops.SUCCEEDED and op.finished_at and op.fencing_token == 1
    assert actions(op) == [ops.STEP_ENQUEUED, ops.STEP_CLAIMED, ops.STEP_DRAIN, ops.STEP_APPLY, ops.STEP_APPLIED, ops.STEP_VERIFIED]
    assert emulated.state.compute_mode(1) == "CPX" and emulated.state.compute_mode(0) == "SPX"
    assert gpu(emulated, 1).partitions.count() == 8
    assert op.previous_layout["gpus"]["1"] == {"compute_mode": "SPX", "memory_mode": "NPS1"}
    sets = emulated.calls("set")
    assert len(sets) == 1 and "CPX" in " ".join(sets[0]["args"]).upper()


def test_already_at_target_succeeds_without_touching_hardware(emulated, fast_ops):
    op = request_reconfiguration(gpu=gpu(emulated), compute_mode="SPX")
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.SUCCEEDED
    assert emulated.calls("set") == []
    assert "hardware not touched" in op.steps.last().message


def test_second_delivery_is_a_noop(emulated, fast_ops):
    op = request_reconfiguration(gpu=gpu(emulated), compute_mode="DPX")
    run_reconfiguration(op.pk, sleep=no_sleep)
    steps = actions(op)
    assert run_reconfiguration(op.pk, sleep=no_sleep) == "skipped"
    assert actions(op) == steps and len(emulated.calls("set")) == 1


def test_a_live_claim_blocks_a_second_worker(emulated, fast_ops):
    op = request_reconfiguration(gpu=gpu(emulated), compute_mode="DPX")
    first = claim_reconfiguration(op.pk, worker="w1")
    first.transition(ops.DRAINING, ops.STEP_CLAIMED, "claimed")
    assert claim_reconfiguration(op.pk, worker="w2") is None


def test_a_stale_worker_cannot_write(emulated, fast_ops):
    op = request_reconfiguration(gpu=gpu(emulated), compute_mode="DPX")
    stale = claim_reconfiguration(op.pk, worker="old")
    Reconfiguration.objects.filter(pk=op.pk).update(lease_expires_at=None)  # lease lapsed
    fresh = claim_reconfiguration(op.pk, worker="new")
    assert fresh.token == stale.token + 1
    with pytest.raises(StaleClaim):
        stale.transition(ops.DRAINING, ops.STEP_CLAIMED, "late")
    with pytest.raises(StaleClaim):
        stale.update(error_message="x")
    fresh.transition(ops.DRAINING, ops.STEP_CLAIMED, "mine")


def test_illegal_transitions_are_refused(emulated):
    op = request_reconfiguration(gpu=gpu(emulated), compute_mode="DPX")
    claim = claim_reconfiguration(op.pk, worker="w")
    with pytest.raises(ops.IllegalTransition, match="cannot go from pending to verifying"):
        claim.transition(ops.VERIFYING, "x", "skip ahead")


def test_busy_gpu_fails_with_the_tools_reason_and_changes_nothing(emulated, fast_ops):
    emulated.state.set_processes(0, 2)
    op = request_reconfiguration(gpu=gpu(emulated), compute_mode="CPX")
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.FAILED
    op.refresh_from_db()
    assert op.error_code == "device_busy" and "busy" in op.error_message.lower()
    assert "nothing changed" in op.steps.last().message
    assert emulated.state.compute_mode(0) == "SPX"
    g = gpu(emulated)
    assert (g.health, g.schedulable) != ("unhealthy", False)


def test_permission_denied_fails_with_the_tools_reason(emulated, fast_ops):
    emulated.state.set_root(False)
    op = request_reconfiguration(gpu=gpu(emulated), compute_mode="CPX")
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.FAILED
    op.refresh_from_db()
    assert op.error_code == "permission_denied" and "elevation" in op.error_message
    assert emulated.state.compute_mode(0) == "SPX"


def test_setting_unavailable_from_the_hardware_fails_cleanly(emulated, fast_ops):
    # The inventory says NPS1 (stale) but the hardware is in NPS4: the tool refuses SPX... so ask
    # for DPX, which the geometry allows under NPS1 but the hardware refuses under NPS4.
    emulated.state.set_modes(compute="CPX", memory="NPS4")
    op = request_reconfiguration(gpu=gpu(emulated), compute_mode="DPX")
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.FAILED
    op.refresh_from_db()
    assert op.error_code == "setting_unavailable"
    assert emulated.state.compute_mode(0) == "CPX"


def test_silent_noop_is_never_reported_as_success(emulated, fast_ops):
    emulated.state.add_fault({"match": "set -C", "kind": "silent_noop"})
    op = request_reconfiguration(gpu=gpu(emulated), compute_mode="CPX")
    result = run_reconfiguration(op.pk, sleep=no_sleep)
    assert result in (ops.FAILED, ops.ROLLED_BACK)
    op.refresh_from_db()
    assert op.state != ops.SUCCEEDED
    assert op.error_code == "verification_failed"


def test_hang_times_out_marks_the_gpu_unhealthy_and_retries_are_bounded(emulated, fast_ops):
    before = len(emulated.calls())
    emulated.state.add_fault({"match": "any", "kind": "hang"})
    op = request_reconfiguration(gpu=gpu(emulated, 1), compute_mode="CPX")
    slept: list[float] = []
    assert run_reconfiguration(op.pk, sleep=slept.append) == ops.FAILED
    op.refresh_from_db()
    assert op.error_code == "timeout"
    assert len(slept) == 2 and slept[1] > slept[0]  # bounded, exponential backoff
    g = gpu(emulated, 1)
    assert (g.health, g.schedulable) == ("unhealthy", False)
    assert "amd-smi" in g.health_reason
    # Three tries, each hung and killed with its process group (no "end" record, no process).
    hung = emulated.calls()[before:]
    assert len(hung) == 3 and all(call["end"] is None for call in hung)
    for call in hung:
        with pytest.raises(ProcessLookupError):
            os.kill(call["pid"], 0)


def test_nps_change_then_compute_mode_on_every_gpu(emulated, fast_ops):
    op = request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="CPX")
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.SUCCEEDED
    assert emulated.state.memory_modes() == ["NPS4", "NPS4"]
    assert [emulated.state.compute_mode(i) for i in range(2)] == ["CPX", "CPX"]
    node = Node.objects.get(pk=emulated.node.pk)
    assert node.memory_mode == "NPS4" and node.schedulable
    assert GPU.objects.filter(node=node, partitions__isnull=False).distinct().count() == 2
    assert actions(op).count(ops.STEP_APPLY) == 1


def test_partial_nps_change_is_no_success_and_makes_the_node_unschedulable(tmp_path, fast_ops):
    from tests.emulated_nodes import make_emulated_node

    emulated = make_emulated_node(tmp_path, "emu-p", gpus=8, rocm="6.4.1")
    # The change switches only the first 3 GPUs, and the rollback's set -M then fails outright.
    emulated.state.add_fault({"match": "set -M", "kind": "partial", "gpus": 3, "times": 1})
    emulated.state.add_fault({"match": "set -M NPS1", "kind": "fail", "exit": 1, "message": "amdgpu: injected failure"})
    op = request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="CPX")
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.FAILED
    op.refresh_from_db()
    assert "GPUs [0, 1, 2] marked unhealthy" in op.error_message
    node = Node.objects.get(pk=emulated.node.pk)
    assert not node.schedulable
    assert "GPUs [0, 1, 2] in NPS4" in node.layout_problem
    assert set(GPU.objects.filter(node=node, schedulable=False).values_list("index", flat=True)) == {0, 1, 2}
    assert actions(op).count(ops.STEP_APPLY) == 1
    # Once the hardware is back in a valid layout, a sync makes the node schedulable again.
    emulated.state.clear_faults()
    emulated.state.set_modes(memory="NPS1", compute="SPX")
    from partitions.services import sync_node

    sync_node(node=node)
    assert Node.objects.get(pk=node.pk).schedulable


def test_partial_change_that_rolls_back_cleanly_ends_rolled_back(tmp_path, fast_ops):
    from tests.emulated_nodes import make_emulated_node

    emulated = make_emulated_node(tmp_path, "emu-q", gpus=8, rocm="6.4.1")
    emulated.state.add_fault({"match": "set -M", "kind": "partial", "gpus": 3, "times": 1})
    op = request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="CPX")
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.ROLLED_BACK
    assert emulated.state.memory_modes() == ["NPS1"] * 8
    assert Node.objects.get(pk=emulated.node.pk).schedulable


def test_resume_after_a_worker_died_mid_apply_never_applies_twice(emulated, fast_ops):
    op = request_reconfiguration(gpu=gpu(emulated), compute_mode="CPX")
    dead = claim_reconfiguration(op.pk, worker="dead")
    dead.transition(ops.DRAINING, ops.STEP_CLAIMED, "claimed")
    dead.update(previous_layout={"gpus": {"0": {"compute_mode": "SPX", "memory_mode": "NPS1"},
                                          "1": {"compute_mode": "SPX", "memory_mode": "NPS1"}}})
    dead.transition(ops.APPLYING, ops.STEP_APPLY, "amd-smi set -C CPX on GPU 0")
    emulated.state.set_modes(compute="CPX")  # the change landed on both GPUs... then the worker died
    Reconfiguration.objects.filter(pk=op.pk).update(lease_expires_at=None)
    result = run_reconfiguration(op.pk, sleep=no_sleep)
    op.refresh_from_db()
    # GPU 0 is at its target, but GPU 1 changed too: a collateral change is no success.
    assert result == ops.ROLLED_BACK, op.error_message
    assert "GPU 1" in op.error_message and "only targets GPU 0" in op.error_message
    assert [emulated.state.compute_mode(i) for i in range(2)] == ["SPX", "SPX"]
    assert actions(op).count(ops.STEP_APPLY) == 1


class SetAlsoHitsGpu:
    """The emulator backend, plus what a second agent on the node did in the field: its
    ``set -C`` also switched another GPU (stale logical ids). Everything else is the real
    backend against the emulator."""

    def __init__(self, backend, state, other: int) -> None:
        self.backend, self.state, self.other = backend, state, other

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.backend, name)

    def set_compute_mode(self, gpu_indices, mode):  # type: ignore[no-untyped-def]
        from amdsmi_emulator.model import Hive

        inventory = self.backend.set_compute_mode(gpu_indices, mode)
        if self.other not in gpu_indices:
            with self.state.transaction() as data:
                Hive(data).set_compute(self.other, mode)
            self.other = -1  # once
        return inventory


def test_a_compute_change_that_also_changed_another_gpu_fails_and_is_rolled_back(emulated, fast_ops):
    from partitions.services import backend_for

    op = request_reconfiguration(gpu=gpu(emulated, 0), compute_mode="CPX")
    backend = SetAlsoHitsGpu(backend_for(emulated.node), emulated.state, other=1)
    assert run_reconfiguration(op.pk, sleep=no_sleep, backend=backend) == ops.ROLLED_BACK
    op.refresh_from_db()
    assert op.error_code == "verification_failed"
    assert "GPU 1 SPX+NPS1 → CPX+NPS1" in op.error_message
    assert [emulated.state.compute_mode(i) for i in range(2)] == ["SPX", "SPX"]
    assert [g.compute_mode for g in GPU.objects.filter(node=emulated.node).order_by("index")] == ["SPX", "SPX"]


def test_the_rollback_is_verified_by_reading_the_hardware_back(emulated, fast_ops):
    # Before: DPX under NPS1. The NPS change lands (the reload leaves CPX), then setting QPX
    # fails: the rollback must restore NPS1 (the reload leaves SPX) and then DPX, and the
    # inventory must show DPX.
    emulated.state.set_modes(compute="DPX")
    from partitions.services import sync_node

    sync_node(node=emulated.node)
    emulated.state.add_fault({"match": "set -C", "kind": "fail", "exit": 1, "message": "injected", "times": 1})
    op = request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="QPX")
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.ROLLED_BACK, Reconfiguration.objects.get(pk=op.pk).error_message
    assert emulated.state.memory_modes() == ["NPS1", "NPS1"]
    assert [emulated.state.compute_mode(i) for i in range(2)] == ["DPX", "DPX"]
    rows = GPU.objects.filter(node=emulated.node).order_by("index")
    assert [(g.compute_mode, g.memory_mode, g.partitions.count()) for g in rows] == [("DPX", "NPS1", 2)] * 2
    assert "rolled back and verified: GPU 0 DPX+NPS1, GPU 1 DPX+NPS1" in op.steps.last().message


def test_each_claim_counts_an_attempt(emulated, fast_ops, api_client_for, viewer):
    op = request_reconfiguration(gpu=gpu(emulated), compute_mode="CPX")
    first = claim_reconfiguration(op.pk, worker="first")
    assert Reconfiguration.objects.get(pk=op.pk).attempts == 1
    first.transition(ops.DRAINING, ops.STEP_CLAIMED, "claimed by first (attempt 1)")
    Reconfiguration.objects.filter(pk=op.pk).update(lease_expires_at=None)  # it died before touching anything
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.SUCCEEDED
    op.refresh_from_db()
    assert op.attempts == 2 and op.fencing_token == 2
    assert "(attempt 2)" in op.steps.filter(action=ops.STEP_CLAIMED).last().message
    assert api_client_for(viewer).get(f"/api/v1/reconfigurations/{op.pk}/").json()["attempts"] == 2


def test_a_resumed_worker_waits_for_the_reload_until_its_deadline(emulated, fast_ops):
    """The worker died inside the driver reload; the reload outlasts the read retries. The
    next worker must wait for it (up to the deadline stored when the apply started), then
    verify and leave the inventory matching the hardware."""
    import time

    from django.utils import timezone

    op = request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="CPX")
    dead = claim_reconfiguration(op.pk, worker="dead")
    dead.transition(ops.DRAINING, ops.STEP_CLAIMED, "claimed")
    dead.update(previous_layout={"gpus": {"0": {"compute_mode": "SPX", "memory_mode": "NPS1"},
                                          "1": {"compute_mode": "SPX", "memory_mode": "NPS1"}}})
    dead.transition(ops.APPLYING, ops.STEP_APPLY, "amd-smi set -M NPS4",
                    apply_deadline_at=timezone.now() + timezone.timedelta(seconds=600))
    emulated.state.set_modes(compute="CPX", memory="NPS4")  # where the hardware ends up...
    with emulated.state.transaction() as data:
        data["reloading_until"] = time.time() + 3600  # ...once the reload it is in finishes
    Reconfiguration.objects.filter(pk=op.pk).update(lease_expires_at=None)

    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 5:  # more than READ_RETRIES (2) allow without a deadline
            with emulated.state.transaction() as data:
                data["reloading_until"] = 0

    assert run_reconfiguration(op.pk, sleep=sleep) == ops.SUCCEEDED, Reconfiguration.objects.get(pk=op.pk).error_message
    assert len(slept) == 5
    node = Node.objects.get(pk=emulated.node.pk)
    assert node.memory_mode == "NPS4"
    assert set(GPU.objects.filter(node=node).values_list("compute_mode", "memory_mode")) == {("CPX", "NPS4")}


def test_a_resumed_worker_past_the_reload_deadline_gives_up_after_the_bounded_retries(emulated, fast_ops):
    import time

    from django.utils import timezone

    op = request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="CPX")
    dead = claim_reconfiguration(op.pk, worker="dead")
    dead.transition(ops.DRAINING, ops.STEP_CLAIMED, "claimed")
    dead.update(previous_layout={"gpus": {"0": {"compute_mode": "SPX", "memory_mode": "NPS1"},
                                          "1": {"compute_mode": "SPX", "memory_mode": "NPS1"}}})
    dead.transition(ops.APPLYING, ops.STEP_APPLY, "amd-smi set -M NPS4",
                    apply_deadline_at=timezone.now() - timezone.timedelta(seconds=1))
    with emulated.state.transaction() as data:
        data["reloading_until"] = time.time() + 3600
    Reconfiguration.objects.filter(pk=op.pk).update(lease_expires_at=None)
    slept: list[float] = []
    assert run_reconfiguration(op.pk, sleep=slept.append) == ops.FAILED
    assert len(slept) == 2  # READ_RETRIES


def test_the_apply_of_an_nps_change_stores_the_reload_deadline(emulated, fast_ops):
    from django.utils import timezone

    before = timezone.now()
    op = request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="CPX")
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.SUCCEEDED
    op.refresh_from_db()
    apply_step = op.steps.get(action=ops.STEP_APPLY)
    assert op.apply_deadline_at is not None
    budget = (op.apply_deadline_at - apply_step.created_at).total_seconds()
    assert budget >= fast_ops.AMD_SMI_RELOAD_TIMEOUT_S and op.apply_deadline_at > before


def test_resume_with_hardware_not_at_target_rolls_back(emulated, fast_ops):
    op = request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="CPX")
    dead = claim_reconfiguration(op.pk, worker="dead")
    dead.transition(ops.DRAINING, ops.STEP_CLAIMED, "claimed")
    dead.update(previous_layout={"gpus": {"0": {"compute_mode": "SPX", "memory_mode": "NPS1"},
                                          "1": {"compute_mode": "SPX", "memory_mode": "NPS1"}}})
    dead.transition(ops.APPLYING, ops.STEP_APPLY, "amd-smi set -M NPS4")
    emulated.state.set_modes(compute="QPX", memory="NPS4")  # NPS landed, compute not yet re-set
    Reconfiguration.objects.filter(pk=op.pk).update(lease_expires_at=None)
    assert run_reconfiguration(op.pk, sleep=no_sleep) == ops.ROLLED_BACK
    assert emulated.state.memory_modes() == ["NPS1", "NPS1"]
    assert [emulated.state.compute_mode(i) for i in range(2)] == ["SPX", "SPX"]
    assert actions(Reconfiguration.objects.get(pk=op.pk)).count(ops.STEP_APPLY) == 1
