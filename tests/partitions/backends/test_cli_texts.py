"""The backend's parsers on the CLI texts rechecked against AMD's source: literal samples (pure
parsing) and the real AmdSmiBackend against the emulator printing them."""

from __future__ import annotations

import json

import pytest

from amdsmi_emulator.state import EmulatorState
from partitions.backends import get_backend
from partitions.backends.amdsmi import AmdSmiBackend, forget_reload_methods
from partitions.backends.errors import (
    DeviceNotFound,
    InvalidValue,
    MissingGroups,
    PermissionDenied,
    SettingUnavailable,
)
from partitions.backends.parsing import parse_list, parse_set_output, parse_version
from partitions.backends.versions import RELOAD_BACKGROUND, RELOAD_BY_TOOL, RELOAD_MODPROBE, RELOAD_RESET

GROUP_WARNING = "WARNING: User is missing the following required groups: render, video. Please add user to these groups."
BANNER = "\n            ******WARNING******\n\n            After changing memory (NPS) partition modes, users MUST restart\n"


# --- pure parsing of literal samples ------------------------------------------------------------

def test_set_memory_inval_in_json_mode_is_an_invalid_value_naming_the_valid_modes():
    # amdsmi_commands.py set_gpu (7.1 and later): on AMDSMI_STATUS_INVAL it prints
    # f"Valid Memory partition Modes: {caps}\n" before storing and printing the GPU's result.
    block = ('[\n    {\n        "gpu": %d,\n'
             '        "memory_partition": "[AMDSMI_STATUS_INVAL] Unable to set memory partition to NPS2"\n    }\n]\n')
    text = (BANNER + "Do you accept these terms? [Y/N] \n"
            + "".join("Valid Memory partition Modes: NPS1,NPS4\n\n" + block % g for g in range(2)))
    parsed = parse_set_output(text, "set -M")
    assert [e.gpu for e in parsed.failed] == [0, 1]
    with pytest.raises(InvalidValue) as info:
        parsed.raise_for_errors()
    assert "NPS1,NPS4" in info.value.message


def test_list_json_after_missing_group_warnings_is_parsed():
    rows = [{"gpu": g, "bdf": "N/A", "uuid": "N/A", "kfd_id": 1 + g, "node_id": 2 + g, "partition_id": 0}
            for g in range(2)]
    text = (GROUP_WARNING + "\n") * 3 + json.dumps(rows, indent=4) + "\n"
    devices = parse_list(text)
    assert [(d.logical_index, d.bdf) for d in devices] == [(0, None), (1, None)]


def test_version_json_one_element_list_with_the_hsmp_driver_version():
    text = json.dumps([{"tool": "AMDSMI Tool", "version": "26.2.0+021c61fc", "amdsmi_library_version": "26.2.0",
                        "rocm_version": "7.0.2", "amdgpu_version": "6.16.6", "amd_hsmp_driver_version": "N/A"}],
                      indent=4)
    version = parse_version(text)
    assert (version.tool, version.library, version.rocm, version.amdgpu) == (
        "26.2.0+021c61fc", "26.2.0", "7.0.2", "6.16.6")


# --- the backend against the emulator ------------------------------------------------------------

def backend(tmp_path, rocm="7.1.0", gpu="MI300X", count=2, name="state.json", **kw) -> AmdSmiBackend:
    env = {"AMD_SMI_EMULATOR_GPU": gpu, "AMD_SMI_EMULATOR_COUNT": str(count), "AMD_SMI_EMULATOR_ROCM": rocm,
           "AMD_SMI_EMULATOR_CALL_LOG": str(tmp_path / f"{name}.calls")}
    kw.setdefault("timeout", 20)
    kw.setdefault("reload_timeout", 30)
    kw.setdefault("poll_interval", 0.05)
    return get_backend("emulator", state_file=tmp_path / name, env=env, **kw)


def calls(tmp_path, name="state.json") -> list[list[str]]:
    path = tmp_path / f"{name}.calls"
    if not path.exists():
        return []
    return [r["args"] for r in map(json.loads, path.read_text().splitlines()) if r["event"] == "start"]


@pytest.fixture(autouse=True)
def fresh_reload_cache():
    forget_reload_methods()
    yield
    forget_reload_methods()


@pytest.mark.slow
def test_an_invalid_memory_mode_is_an_invalid_value_not_a_parse_error(tmp_path):
    b = backend(tmp_path)
    b.inventory()
    with pytest.raises(InvalidValue) as info:
        b.set_memory_mode("NPS2")
    assert "NPS1,NPS4" in info.value.message
    assert EmulatorState(tmp_path / "state.json").pending_memory_mode() is None


@pytest.mark.slow
def test_a_user_missing_the_render_and_video_groups_is_told_to_add_them(tmp_path):
    b = backend(tmp_path)
    b.version()
    state = EmulatorState(tmp_path / "state.json")
    state.set_root(False)
    state.set_missing_groups(["render", "video"])
    with pytest.raises(MissingGroups) as info:
        b.inventory()
    assert isinstance(info.value, PermissionDenied)
    assert "add the user to the render and video groups" in info.value.message


@pytest.mark.slow
@pytest.mark.parametrize("rocm, method", [("6.2.0", RELOAD_BACKGROUND), ("6.4.1", RELOAD_BY_TOOL),
                                          ("7.1.0", RELOAD_RESET), ("7.12.0", RELOAD_MODPROBE),
                                          ("7.13.0", RELOAD_MODPROBE)])
def test_the_reload_method_follows_what_the_installed_tool_accepts(tmp_path, rocm, method):
    assert backend(tmp_path, rocm=rocm).reload_method() == method


@pytest.mark.slow
def test_the_reload_method_is_probed_once_per_node(tmp_path):
    assert backend(tmp_path, rocm="7.1.0").reload_method() == RELOAD_RESET
    assert backend(tmp_path, rocm="7.1.0").reload_method() == RELOAD_RESET  # a new backend, same node
    assert [c for c in calls(tmp_path) if c[:1] == ["reset"]] == [["reset", "--help"]]
    assert backend(tmp_path, rocm="7.1.0", name="other.json").reload_method() == RELOAD_RESET
    assert [c for c in calls(tmp_path, "other.json") if c[:1] == ["reset"]] == [["reset", "--help"]]


@pytest.mark.slow
def test_rocm_7_12_reloads_with_modprobe_because_reset_r_is_gone(tmp_path):
    b = backend(tmp_path, rocm="7.12.0")
    inv = b.set_memory_mode("NPS4")
    assert [g.memory_mode for g in inv.gpus] == ["NPS4", "NPS4"]
    assert ["emulator", "reload-driver"] in calls(tmp_path)
    assert not [c for c in calls(tmp_path) if c[:2] == ["reset", "-r"]]


@pytest.mark.slow
def test_rocm_6_2_memory_change_waits_for_the_background_reload_and_does_not_reload_twice(tmp_path):
    b = backend(tmp_path, rocm="6.2.0")
    b.inventory()
    EmulatorState(tmp_path / "state.json").add_fault({"match": "set -M", "kind": "slow_reload", "seconds": 1.5})
    inv = b.set_memory_mode("NPS4")
    assert [(g.compute_mode, g.memory_mode) for g in inv.gpus] == [("CPX", "NPS4")] * 2
    assert ["emulator", "reload-driver"] not in calls(tmp_path)
    assert not [c for c in calls(tmp_path) if c[:1] == ["reset"] and c != ["reset", "--help"]]


@pytest.mark.slow
@pytest.mark.parametrize("rocm", ["6.2.0", "7.13.0"])
def test_compute_refused_under_nps4_is_setting_unavailable_on_old_and_new_clis(tmp_path, rocm):
    b = backend(tmp_path, rocm=rocm, count=1)
    EmulatorState.load(tmp_path / "state.json").set_modes(compute="CPX", memory="NPS4")
    with pytest.raises(SettingUnavailable):
        b.set_compute_mode([0], "SPX")


@pytest.mark.slow
def test_rocm_7_13_errors_on_stdout_with_exit_abs_code_are_typed(tmp_path):
    b = backend(tmp_path, rocm="7.13.0", count=1)
    with pytest.raises(DeviceNotFound) as info:
        b.metrics([9])
    assert info.value.exit_status == 3


@pytest.mark.slow
def test_nonroot_memory_change_is_permission_denied(tmp_path):
    b = backend(tmp_path)
    b.inventory()
    EmulatorState(tmp_path / "state.json").set_root(False)
    with pytest.raises(PermissionDenied):
        b.set_memory_mode("NPS4")
