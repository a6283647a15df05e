"""The emulator's ``amdsmi`` Python-library face: the real library's names and return shapes
(ROCm/amdsmi py-interface/amdsmi_interface.py), backed by the emulator's state file."""

from __future__ import annotations

import time

import pytest

from partitions.backends.amdsmi_library import emulator_library_path, forget_libraries, load_library

from .conftest import make_state


@pytest.fixture
def lib(state_path, monkeypatch):
    monkeypatch.setenv("AMD_SMI_EMULATOR_STATE", str(state_path))
    forget_libraries()
    module = load_library(emulator_library_path(), {"AMD_SMI_EMULATOR_STATE": str(state_path)})
    assert module is not None
    yield module
    forget_libraries()


def test_it_is_labelled_emulated_and_never_shadows_a_real_amdsmi(lib):
    import sys

    assert lib.AMDSMI_EMULATED is True
    assert "amdsmi" not in sys.modules or not getattr(sys.modules["amdsmi"], "AMDSMI_EMULATED", False)


def test_calls_before_init_fail_as_in_the_library(lib, state_path):
    make_state(state_path)
    with pytest.raises(lib.AmdSmiLibraryException) as excinfo:
        lib.amdsmi_get_processor_handles()
    assert excinfo.value.get_error_code() == lib.AMDSMI_STATUS_NOT_INIT


def test_shapes_and_units_follow_the_real_library(lib, state_path):
    state = make_state(state_path, count=2, compute="DPX")
    state.set_load(0, 0, 0.5, vram_used_mb=4096)
    lib.amdsmi_init(lib.AmdSmiInitFlags.INIT_AMD_GPUS)
    handles = lib.amdsmi_get_processor_handles()
    assert len(handles) == 4 and lib.amdsmi_get_gpu_device_bdf(handles[1]).endswith(".1")
    primary, secondary = handles[0], handles[1]
    assert set(lib.amdsmi_get_gpu_activity(primary)) == {"gfx_activity", "umc_activity", "mm_activity"}
    assert lib.amdsmi_get_gpu_memory_usage(primary, lib.AmdSmiMemoryType.VRAM) == 4096 * 1024 * 1024  # bytes
    assert lib.amdsmi_get_gpu_memory_total(primary, lib.AmdSmiMemoryType.VRAM) % (1024 * 1024) == 0
    info = lib.amdsmi_get_gpu_metrics_info(primary)
    assert info["num_partition"] == 2 and len(info["xcp_stats.gfx_busy_inst"][0]) == 8
    assert set(lib.amdsmi_get_gpu_total_ecc_count(primary)) == {"correctable_count", "uncorrectable_count", "deferred_count"}
    assert lib.amdsmi_get_power_info(secondary)["current_socket_power"] == "N/A"  # 7.1: secondaries N/A
    with pytest.raises(lib.AmdSmiLibraryException):
        lib.amdsmi_get_temp_metric(secondary, lib.AmdSmiTemperatureType.HOTSPOT, lib.AmdSmiTemperatureMetric.CURRENT)
    with pytest.raises(lib.AmdSmiParameterException):
        lib.amdsmi_get_gpu_memory_total(primary, "VRAM")
    assert lib.amdsmi_get_gpu_compute_partition(primary) == "DPX"


def test_handles_are_fixed_at_init_and_go_stale_after_a_repartition(lib, state_path):
    state = make_state(state_path, count=1, compute="CPX")
    lib.amdsmi_init(lib.AmdSmiInitFlags.INIT_AMD_GPUS)
    handles = lib.amdsmi_get_processor_handles()
    state.set_modes(compute="SPX")
    assert len(lib.amdsmi_get_processor_handles()) == 8  # as enumerated at init
    with pytest.raises(lib.AmdSmiLibraryException) as excinfo:
        lib.amdsmi_get_gpu_activity(handles[3])
    assert excinfo.value.get_error_code() == lib.AMDSMI_STATUS_NOT_FOUND
    lib.amdsmi_shut_down()
    lib.amdsmi_init(lib.AmdSmiInitFlags.INIT_AMD_GPUS)
    assert len(lib.amdsmi_get_processor_handles()) == 1


def test_a_reloading_driver_fails_every_call(lib, state_path):
    state = make_state(state_path, count=1)
    lib.amdsmi_init(lib.AmdSmiInitFlags.INIT_AMD_GPUS)
    (handle,) = lib.amdsmi_get_processor_handles()
    with state.transaction() as data:
        data["reloading_until"] = time.time() + 60
    with pytest.raises(lib.AmdSmiLibraryException) as excinfo:
        lib.amdsmi_get_gpu_activity(handle)
    assert excinfo.value.get_error_code() == lib.AMDSMI_STATUS_DRIVER_NOT_LOADED
