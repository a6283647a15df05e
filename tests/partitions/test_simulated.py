"""The in-process simulated fleet: hardware rules, scale, and sync into the inventory."""

from __future__ import annotations

import pytest

from partitions.backends import get_backend
from partitions.backends.errors import DeviceBusy, InvalidValue, SettingUnavailable
from partitions.backends.simulated import SimulatedBackend, SimulatedFleet


def test_a_fleet_of_1000_nodes_by_8_gpus_reports_8000_gpus():
    fleet = SimulatedFleet(nodes=1000, gpu_count=8)
    inventories = [fleet.backend(name).inventory() for name in fleet.nodes]
    assert sum(len(inv.gpus) for inv in inventories) == 8000
    assert all(inv.emulated for inv in inventories)
    assert {g.compute_mode for inv in inventories for g in inv.gpus} == {"SPX"}


def test_compute_change_renumbers_logical_devices():
    backend = SimulatedBackend(gpu_count=2)
    inventory = backend.set_compute_mode([0], "CPX")
    assert [len(g.partitions) for g in inventory.gpus] == [8, 1]
    assert [p.logical_index for p in inventory.gpus[1].partitions] == [8]
    assert {p.memory_mb for p in inventory.gpus[0].partitions} == {24576}


def test_compute_mode_incompatible_with_nps_is_refused():
    backend = SimulatedBackend(gpu_count=2)
    backend.set_memory_mode("NPS4")
    with pytest.raises(SettingUnavailable):
        backend.set_compute_mode([0], "SPX")
    assert backend.inventory().gpus[0].compute_mode == "CPX"


def test_an_unavailable_mode_is_refused_as_such_even_on_a_busy_gpu():
    # the driver validates the mode before it locks KFD (aqua_vanjaram_switch_partition_mode)
    backend = SimulatedBackend(gpu_count=1)
    backend.set_memory_mode("NPS4")
    backend.state.busy_gpus.add(0)
    with pytest.raises(SettingUnavailable):
        backend.set_compute_mode([0], "SPX")


def test_nps_change_is_node_wide_and_rederives_compute_mode():
    backend = SimulatedBackend(gpu_count=4)
    backend.set_compute_mode([1], "CPX")
    inventory = backend.set_memory_mode("NPS4")
    # the driver's auto mode after a reload into NPS4 on an 8-XCD dGPU is CPX (aqua_vanjaram.c)
    assert {(g.compute_mode, g.memory_mode) for g in inventory.gpus} == {("CPX", "NPS4")}


def test_busy_gpus_refuse_changes():
    fleet = SimulatedFleet(nodes=1)
    backend = fleet.backend("sim-0000")
    backend.state.busy_gpus.add(3)
    with pytest.raises(DeviceBusy):
        backend.set_compute_mode([3], "CPX")
    with pytest.raises(DeviceBusy):
        backend.set_memory_mode("NPS4")
    assert backend.set_compute_mode([2], "DPX").gpus[2].compute_mode == "DPX"


@pytest.mark.parametrize("model, mode", [("MI300A", "DPX"), ("MI355X", "TPX")])
def test_modes_a_gpu_model_lacks_are_refused(model, mode):
    with pytest.raises(Exception) as excinfo:
        SimulatedBackend(gpu_model=model, gpu_count=1).set_compute_mode([0], mode)
    assert mode in str(excinfo.value)


def test_mi300a_memory_mode_is_not_switchable():
    with pytest.raises(InvalidValue):
        SimulatedBackend(gpu_model="MI300A", gpu_count=1).set_memory_mode("NPS4")


def test_metrics_follow_load_and_only_primaries_report_power():
    backend = get_backend("simulated", gpu_count=1)
    backend.set_compute_mode([0], "QPX")
    backend.state.load[(0, 1)] = 1.0
    metrics = {m.logical_index: m for m in backend.metrics()}
    assert metrics[0].power_w is not None and metrics[1].power_w is None
    assert metrics[1].vram_used_mb > metrics[2].vram_used_mb
    assert metrics[0].gfx_busy_inst[1][0] > 90 and metrics[0].gfx_busy_inst[2][0] == 0


@pytest.mark.django_db
def test_simulated_inventory_syncs_and_is_marked_emulated():
    from partitions.models import Node, Partition
    from partitions.services import sync_inventory

    fleet = SimulatedFleet(nodes=3)
    for name in fleet.nodes:
        node = Node.objects.create(name=name, backend=Node.Backend.SIMULATED, emulated=True)
        sync_inventory(node=node, inventory=fleet.backend(name).inventory())
    assert Partition.objects.filter(gpu__node__emulated=True).count() == 24
