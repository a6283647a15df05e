"""What the emulator prints where the real CLI's texts were rechecked against AMD's source
(docs/hardware/amd-smi.md, "Sources of the hardware facts"), run as a subprocess."""

from __future__ import annotations

import json
import time

import pytest

from amdsmi_emulator.state import EmulatorState
from partitions.backends.parsing import parse_default_view

from .conftest import make_state, parse_concat, run_emulator

GROUP_WARNING = "WARNING: User is missing the following required groups: render, video. Please add user to these groups."


def modes(state_path) -> set[tuple[str, str]]:
    rows = json.loads(run_emulator(state_path, "partition", "-c", "--json").stdout)["current_partition"]
    return {(r["accelerator_type"], r["memory"]) for r in rows}


# -- version, default view, reset --help ---------------------------------------------------------

def test_version_json_is_a_one_element_list_with_the_hsmp_driver_version(state_path, emu):
    make_state(state_path, rocm="7.1")
    res = emu("version", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert isinstance(data, list) and len(data) == 1
    assert list(data[0]) == ["tool", "version", "amdsmi_library_version", "rocm_version", "amdgpu_version",
                             "amd_hsmp_driver_version"]
    assert data[0]["tool"] == "AMDSMI Tool" and data[0]["amd_hsmp_driver_version"] == "N/A"


def test_version_json_before_6_4_has_no_driver_fields(state_path, emu):
    make_state(state_path, rocm="6.2")
    data = json.loads(emu("version", "--json").stdout)
    assert list(data[0]) == ["tool", "version", "amdsmi_library_version", "rocm_version"]


def test_bare_amd_smi_on_rocm_7_prints_the_default_view(state_path, emu):
    make_state(state_path, rocm="7.1", count=2, compute="DPX")
    res = emu()
    assert res.returncode == 0, res.stderr
    view = parse_default_view(res.stdout)
    assert view.tool and view.tool.startswith("26.1.0") and view.rocm == "7.1.0"
    assert [(r.logical_index, r.bdf, r.compute_mode, r.memory_mode) for r in view.rows] == [
        (0, "0000:0c:00.0", "DPX", "NPS1"), (1, "0000:0c:00.1", "DPX", "NPS1"),
        (2, "0000:22:00.0", "DPX", "NPS1"), (3, "0000:22:00.1", "DPX", "NPS1")]
    primary, secondary = view.rows[0], view.rows[1]
    assert primary.vram_total_mb == 196592 and primary.power_w is not None
    assert secondary.vram_total_mb == 196592 // 2 and secondary.power_w is None  # secondaries: N/A


def test_bare_amd_smi_before_rocm_7_prints_the_usage(state_path, emu):
    make_state(state_path, rocm="6.4")
    res = emu()
    assert res.returncode == 0 and res.stdout.startswith("usage: amd-smi")


@pytest.mark.parametrize("rocm, has_reload", [("6.2", False), ("6.4", False), ("7.0", True), ("7.1", True),
                                              ("7.12", False), ("7.13", False)])
def test_reset_help_lists_the_reload_only_where_the_tool_has_it(state_path, emu, rocm, has_reload):
    # rocm-systems projects/amdsmi/CHANGELOG.md, "amd_smi_lib for ROCm 7.12.0", Removed:
    # "amd-smi reset --reload-driver and amd-smi reset -r option from CLI only".
    make_state(state_path, rocm=rocm)
    res = emu("reset", "--help")
    assert res.returncode == 0
    assert ("--reload-driver" in res.stdout) is has_reload


# -- memory (NPS) changes ---------------------------------------------------------------------------

def test_an_invalid_memory_mode_prints_the_valid_modes_before_each_gpu_in_json_mode_too(state_path, emu):
    make_state(state_path, rocm="7.1", count=2)
    res = emu("set", "-M", "NPS2", "--json", stdin="y\n")
    assert res.returncode == 0
    body = res.stdout.split("[Y/N] ", 1)[1]
    chunks = body.split("Valid Memory partition Modes: NPS1,NPS4\n\n")
    assert chunks[0].strip() == "" and len(chunks) == 3  # one line before each GPU's result
    docs = [parse_concat(c)[0] for c in chunks[1:]]
    assert docs == [[{"gpu": g, "memory_partition": "[AMDSMI_STATUS_INVAL] Unable to set memory partition to NPS2"}]
                    for g in (0, 1)]


def test_an_invalid_memory_mode_in_human_mode_has_a_blank_line_after_the_valid_modes(state_path, emu):
    make_state(state_path, rocm="7.1", count=1)
    res = emu("set", "-M", "NPS2", stdin="y\n")
    assert ("Valid Memory partition Modes: NPS1,NPS4\n\nGPU: 0\n"
            "    MEMORY_PARTITION: [AMDSMI_STATUS_INVAL] Unable to set memory partition to NPS2") in res.stdout


@pytest.mark.parametrize("fmt, block", [
    ("human", "GPU: 0\n    MEMORY_PARTITION: [AMDSMI_STATUS_NO_PERM] Command requires elevation\n\n"),
    ("json", '[\n    {\n        "gpu": 0,\n        "memory_partition": "[AMDSMI_STATUS_NO_PERM] Command requires elevation"\n    }\n]\n'),
])
def test_nonroot_set_memory_prints_a_no_perm_result_block_then_the_permission_error(state_path, emu, fmt, block):
    make_state(state_path, rocm="7.1", count=2, root=False)
    args = ["set", "-M", "NPS4"] + (["--json"] if fmt == "json" else [])
    res = emu(*args, stdin="y\n")
    assert res.returncode == 1
    assert "Do you accept these terms? [Y/N] " in res.stdout  # the banner comes first
    assert res.stdout.endswith(block)
    assert res.stderr.rstrip().endswith("PermissionError: Command requires elevation")
    assert "10 | AMDSMI_STATUS_NO_PERM" in res.stderr
    assert EmulatorState(state_path).pending_memory_mode() is None


def test_a_reload_into_nps4_leaves_the_driver_default_cpx(state_path, emu):
    # Kernel aqua_vanjaram.c __aqua_vanjaram_get_auto_mode: memory partitions == XCCs / 2 on a
    # dGPU -> CPX (was QPX in older kernels).
    make_state(state_path, rocm="7.1", count=2)
    assert emu("set", "-M", "NPS4", stdin="y\n").returncode == 0
    assert emu("reset", "-r", stdin="y\n").returncode == 0
    assert modes(state_path) == {("CPX", "NPS4")}
    assert len(json.loads(emu("list", "--json").stdout)) == 16


def test_rocm_6_2_set_memory_reloads_the_driver_in_the_background(state_path, emu):
    # rocm_smi.cc (6.1.2, 6.2.2) rsmi_dev_memory_partition_set -> restartAMDGpuDriver():
    # "modprobe -r amdgpu && modprobe amdgpu&": the CLI returns while the reload runs.
    make_state(state_path, rocm="6.2", count=2)
    EmulatorState(state_path).add_fault({"match": "set -M", "kind": "slow_reload", "seconds": 3})
    started = time.monotonic()
    res = emu("set", "-M", "NPS4", "-g", "all")
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - started < 2.5  # no progress bar, no waiting
    assert "MEMORYPARTITION: Successfully set memory partition to NPS4" in res.stdout
    seen_gone = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        res = emu("static", "-p", "--json")
        if res.returncode != 0:
            assert "is not supported on the system" in res.stderr
            seen_gone = True
        elif {(r["partition"]["compute_partition"], r["partition"]["memory_partition"])
              for r in json.loads(res.stdout)} == {("CPX", "NPS4")}:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the devices never came back in NPS4")
    assert seen_gone


# -- compute changes -----------------------------------------------------------------------------

def test_availability_is_checked_before_busy(state_path, emu):
    # Kernel aqua_vanjaram_switch_partition_mode: the mode is validated before KFD is locked.
    make_state(state_path, rocm="7.1", count=1, compute="CPX", memory="NPS4", processes={0: 1})
    res = emu("set", "-C", "SPX")
    assert res.returncode == 1
    assert "AMDSMI_STATUS_SETTING_UNAVAILABLE" in res.stderr and "BUSY" not in res.stderr


@pytest.mark.parametrize("rocm", ["6.1", "6.2", "6.3"])
def test_6x_compute_errors_are_a_chained_value_error(state_path, emu, rocm):
    # amdsmi_commands.py set_gpu (rocm-6.2.2, amd-staging 2024-10): any library error ->
    # raise ValueError(f"Unable to set compute partition to {X} on {gpu_string}") from e
    make_state(state_path, rocm=rocm, count=2, compute="CPX", memory="NPS4")
    res = emu("set", "-C", "SPX", "-g", "0")
    assert res.returncode == 1 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert "55 | AMDSMI_STATUS_SETTING_UNAVAILABLE - Setting is not available" in res.stderr
    assert "The above exception was the direct cause of the following exception:" in res.stderr
    assert lines[-1] == "ValueError: Unable to set compute partition to SPX on GPU ID: 0 BDF:0000:0c:00.0"
    EmulatorState(state_path).set_modes(compute="CPX", memory="NPS1")
    EmulatorState(state_path).set_processes(0, 1)
    res = emu("set", "-C", "DPX", "-g", "0")
    assert res.returncode == 1 and "30 | AMDSMI_STATUS_BUSY - Device busy" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("ValueError: Unable to set compute partition to DPX")


# -- ROCm 7.13+ --------------------------------------------------------------------------------------

def test_rocm_7_13_prints_cli_errors_to_stdout_with_exit_abs_code(state_path, emu):
    make_state(state_path, rocm="7.13", count=1)
    res = emu("list", "-g", "9")
    assert res.returncode == 3 and res.stderr == ""
    assert res.stdout.strip() == ("amdsmi_cli_exceptions.AmdSmiDeviceNotFoundException: Can not find a device: "
                                  "GPU '9' Error code: -3")
    EmulatorState(state_path).set_root(False)
    res = emu("set", "-C", "CPX")
    assert res.returncode == 11 and "AmdSmiPermissionDeniedException" in res.stdout and res.stderr == ""


def test_rocm_7_13_reports_compute_failures_in_band(state_path, emu):
    make_state(state_path, rocm="7.13", count=2, compute="CPX", memory="NPS4", processes={1: 1})
    res = emu("set", "-C", "SPX", "--json")
    assert res.returncode == 0, res.stderr
    docs = parse_concat(res.stdout)
    refused = "[AMDSMI_STATUS_SETTING_UNAVAILABLE] Unable to set accelerator partition to SPX (profile #0)"
    assert docs == [[{"gpu": 0, "accelerator_partition": refused}], [{"gpu": 1, "accelerator_partition": refused}]]
    res = emu("set", "-C", "QPX", "-g", "8")  # GPU 1's primary; QPX+NPS4 is valid but the GPU is busy
    assert res.returncode == 0
    assert "ACCELERATOR_PARTITION: [AMDSMI_STATUS_BUSY] Unable to set accelerator partition to QPX (profile #2)" in res.stdout


# -- users without the render and video groups ---------------------------------------------------

def test_list_by_a_user_missing_groups_warns_once_per_device_and_once_more(state_path, emu):
    make_state(state_path, rocm="7.1", count=2, root=False)
    EmulatorState(state_path).set_missing_groups(["video", "render"])
    res = emu("list", "--json")
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert lines[:3] == [GROUP_WARNING] * 3 and lines[3] == "["
    rows = json.loads("\n".join(lines[3:]))
    assert [r["gpu"] for r in rows] == [0, 1] and {r["bdf"] for r in rows} == {"N/A"}
    res = emu("static", "--json")
    assert res.returncode == 1
    assert res.stderr.strip() == f"RuntimeError: {GROUP_WARNING}"
