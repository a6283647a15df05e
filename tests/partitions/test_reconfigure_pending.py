"""An NPS change armed in the hardware (amd-smi 7.x ``set -M`` is two-phase: pending until the
driver reloads) must never hide behind an "already at the target".

The amd-smi backend does not report pending modes yet (see the hardware notes); until it does,
``ReportsPending`` stands in for that part of it: the real backend against the emulator, whose
state knows the pending mode, with ``pending_memory_mode`` added to each GPU it returns. The
runner and services are the production code, unchanged."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from partitions import operations as ops
from partitions.backends.types import GpuInfo, NodeInventory
from partitions.models import GPU, Reconfiguration
from partitions.reconfigure import run_reconfiguration
from partitions.services import backend_for
from partitions.services.reconfiguration import request_node_reconfiguration, request_reconfiguration

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class GpuWithPending(GpuInfo):
    pending_memory_mode: str | None = None


class ReportsPending:
    def __init__(self, backend, state) -> None:  # type: ignore[no-untyped-def]
        self.backend, self.state = backend, state

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.backend, name)

    def _with_pending(self, inventory: NodeInventory) -> NodeInventory:
        gpus = self.state.data["gpus"]
        return NodeInventory(inventory.version, tuple(
            GpuWithPending(**{f.name: getattr(g, f.name) for f in fields(GpuInfo)},
                           pending_memory_mode=gpus[g.index].get("pending_memory_mode"))
            for g in inventory.gpus), inventory.emulated)

    def inventory(self) -> NodeInventory:
        return self._with_pending(self.backend.inventory())

    def set_compute_mode(self, gpu_indices, mode):  # type: ignore[no-untyped-def]
        return self._with_pending(self.backend.set_compute_mode(gpu_indices, mode))

    def set_memory_mode(self, mode):  # type: ignore[no-untyped-def]
        return self._with_pending(self.backend.set_memory_mode(mode))


def hung_reload(emulated, fast_ops) -> Reconfiguration:  # type: ignore[no-untyped-def]
    """NPS4 requested; ``set -M`` arms it, then the driver reload hangs and is killed."""
    fast_ops.AMD_SMI_RELOAD_TIMEOUT_S = 2
    emulated.state.add_fault({"match": "reset -r", "kind": "hang", "times": 1})
    op = request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="CPX")
    backend = ReportsPending(backend_for(emulated.node), emulated.state)
    assert run_reconfiguration(op.pk, sleep=lambda s: None, backend=backend) == ops.FAILED
    op.refresh_from_db()
    assert op.error_code == "timeout"
    assert emulated.state.memory_modes() == ["NPS1", "NPS1"] and emulated.state.pending_memory_mode() == "NPS4"
    return op


def test_after_a_hung_reload_the_armed_nps_change_is_recorded_and_cancelled_by_a_node_request(emulated, fast_ops):
    failed = hung_reload(emulated, fast_ops)
    assert "pending NPS change in the hardware: NPS4 on GPUs [0, 1]" in " ".join(failed.steps.values_list("message", flat=True))
    assert set(GPU.objects.filter(node=emulated.node).values_list("pending_memory_mode", flat=True)) == {"NPS4"}

    # The node reads NPS1/SPX, which is what is asked for: but NPS4 is armed, so this is an
    # NPS change (re-arm NPS1 and reload), not an "already at the target".
    outcome = request_node_reconfiguration(node=emulated.node, memory_mode="NPS1", compute_mode="SPX")
    assert outcome.memory_change
    (op,) = outcome.operations
    backend = ReportsPending(backend_for(emulated.node), emulated.state)
    assert run_reconfiguration(op.pk, sleep=lambda s: None, backend=backend) == ops.SUCCEEDED
    op.refresh_from_db()
    assert "hardware not touched" not in op.steps.last().message
    assert emulated.state.pending_memory_mode() is None and emulated.state.memory_modes() == ["NPS1", "NPS1"]
    rows = GPU.objects.filter(node=emulated.node)
    assert set(rows.values_list("pending_memory_mode", "health", "schedulable")) == {("", "healthy", True)}


def test_an_already_at_target_nps_request_does_not_hide_an_armed_change(emulated, fast_ops):
    """Even a request made while the inventory did not know of the pending mode."""
    emulated.state.set_modes(compute="SPX", memory="NPS1")
    with emulated.state.transaction() as data:
        for g in data["gpus"]:
            g["pending_memory_mode"] = "NPS4"
    op = Reconfiguration.objects.create(kind="memory", node=emulated.node, target_memory_mode="NPS1", target_compute_mode="SPX")
    backend = ReportsPending(backend_for(emulated.node), emulated.state)
    assert run_reconfiguration(op.pk, sleep=lambda s: None, backend=backend) == ops.SUCCEEDED
    assert emulated.calls("reset") != []  # re-armed NPS1 and reloaded
    assert emulated.state.pending_memory_mode() is None


def test_a_compute_change_is_refused_while_an_nps_change_is_armed(emulated, fast_ops):
    with emulated.state.transaction() as data:
        for g in data["gpus"]:
            g["pending_memory_mode"] = "NPS4"
    op = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=0), compute_mode="CPX")
    backend = ReportsPending(backend_for(emulated.node), emulated.state)
    assert run_reconfiguration(op.pk, sleep=lambda s: None, backend=backend) == ops.FAILED
    op.refresh_from_db()
    assert op.error_code == "pending_memory_mode" and "NPS4 on GPUs [0, 1]" in op.error_message
    assert emulated.calls("set") == []
