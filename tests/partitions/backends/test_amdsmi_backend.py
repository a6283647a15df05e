"""The real AmdSmiBackend against the amd-smi emulator, run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from partitions.backends import Backend, get_backend
from partitions.backends.amdsmi import AmdSmiBackend, detect
from partitions.backends.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    DeviceBusy,
    DeviceNotFound,
    DriverReloadFailed,
    InvalidValue,
    ParseError,
    PermissionDenied,
    SettingUnavailable,
    ToolMissing,
    VerificationFailed,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]


def backend(tmp_path, rocm="7.1.0", gpu="MI300X", count=2, fault=None, nonroot=False, **kw) -> AmdSmiBackend:
    env = {"AMD_SMI_EMULATOR_GPU": gpu, "AMD_SMI_EMULATOR_COUNT": str(count), "AMD_SMI_EMULATOR_ROCM": rocm}
    if fault is not None:
        env["AMD_SMI_EMULATOR_FAULT"] = json.dumps(fault)
    if nonroot:
        env["AMD_SMI_EMULATOR_NONROOT"] = "1"
    kw.setdefault("timeout", 20)
    kw.setdefault("reload_timeout", 30)
    kw.setdefault("poll_interval", 0.05)
    return get_backend("emulator", state_file=tmp_path / "state.json", env=env, **kw)


def modes(inv):
    return [(g.compute_mode, g.memory_mode, len(g.partitions)) for g in inv.gpus]


# --- process-group helpers ---------------------------------------------------------------------

def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid`` (a /proc scan)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            out.append(int(entry.name))
    return out


@pytest.fixture
def spawned(monkeypatch):
    """Records the pid (= process group id, start_new_session) of every child started."""
    pids: list[int] = []
    real = subprocess.Popen

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            pids.append(self.pid)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    return pids


def assert_no_leftovers(pids):
    deadline = time.monotonic() + 3
    left = {p: group_members(p) for p in pids}
    while any(left.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {p: group_members(p) for p in pids}
    assert not any(left.values()), f"processes left behind: {left}"


# --- reading -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rocm", ["6.3.2", "6.4.1", "7.1.0", "7.13.0"])
def test_inventory(tmp_path, rocm):
    b = backend(tmp_path, rocm=rocm)
    assert isinstance(b, Backend)
    inv = b.inventory()
    assert inv.emulated is True
    assert inv.version is not None and inv.version.rocm_tuple[:2] == tuple(int(x) for x in rocm.split(".")[:2])
    assert modes(inv) == [("SPX", "NPS1", 1)] * 2
    g = inv.gpus[0]
    assert (g.gpu_model, g.market_name, g.gfx_target) == ("MI300X", "AMD Instinct MI300X", "gfx942")
    assert g.compute_units == 304 and g.vram_mb == 196592
    assert g.memory_caps == ("NPS1", "NPS4")
    assert [p.accelerator_type for p in g.profiles] == ["SPX", "DPX", "QPX", "CPX"]
    assert g.bdf and g.bdf.endswith(".0") and g.partitions[0].memory_mb == 196592
    assert inv.to_json()["gpus"][0]["gpu_model"] == "MI300X"


def test_reads_and_metrics(tmp_path):
    b = backend(tmp_path, rocm="7.1.0", gpu="MI355X", count=2)
    assert len(b.list_devices()) == 2
    assert [s.market_name for s in b.static_info()] == ["AMD Instinct MI355X"] * 2
    assert [s.memory_mode for s in b.partition_state()] == ["NPS1"] * 2
    (m,) = b.metrics([1])
    assert m.logical_index == 1 and m.vram_total_mb and m.power_w is not None
    assert len(b.metrics()) == 2
    assert b.metrics([]) == ()
    assert b.inventory().gpus[0].gpu_model == "MI355X"
    with pytest.raises(DeviceNotFound):
        b.metrics([9])


# --- compute changes -------------------------------------------------------------------------

@pytest.mark.parametrize("rocm", ["6.4.1", "7.1.0", "7.13.0"])
def test_set_compute_mode_renumbers_and_verifies(tmp_path, rocm):
    b = backend(tmp_path, rocm=rocm)
    inv = b.set_compute_mode([0, 1], "CPX")
    assert modes(inv) == [("CPX", "NPS1", 8)] * 2
    assert [p.logical_index for p in inv.gpus[1].partitions] == list(range(8, 16))
    assert [p.partition_id for p in inv.gpus[1].partitions] == list(range(8))
    # GPU 1's primary is now logical device 8: the backend must map it
    inv = b.set_compute_mode([1], "SPX")
    assert modes(inv) == [("CPX", "NPS1", 8), ("SPX", "NPS1", 1)]
    inv = b.set_compute_mode([0], "dpx")
    assert modes(inv) == [("DPX", "NPS1", 2), ("SPX", "NPS1", 1)]


def test_set_compute_mode_by_profile_index(tmp_path):
    b = backend(tmp_path, rocm="7.1.0")
    inv = b.set_compute_mode([1], "3")
    assert modes(inv)[1] == ("CPX", "NPS1", 8)


def test_set_compute_mode_rejects_bad_input(tmp_path):
    b = backend(tmp_path)
    with pytest.raises(InvalidValue):
        b.set_compute_mode([0], "XPX")
    with pytest.raises(DeviceNotFound):
        b.set_compute_mode([5], "CPX")
    with pytest.raises(InvalidValue):
        b.set_memory_mode("NPS3")


def test_compute_mode_incompatible_with_nps(tmp_path):
    b = backend(tmp_path, rocm="7.1.0")
    b.set_memory_mode("NPS4")
    with pytest.raises(SettingUnavailable) as info:
        b.set_compute_mode([0], "SPX")
    assert "SETTING_UNAVAILABLE" in info.value.message


# --- memory changes ----------------------------------------------------------------------------

@pytest.mark.parametrize("rocm", ["6.4.1", "7.1.0", "7.13.0"])
def test_set_memory_mode_with_reload(tmp_path, rocm):
    b = backend(tmp_path, rocm=rocm)
    inv = b.set_memory_mode("NPS4")
    assert [g.memory_mode for g in inv.gpus] == ["NPS4", "NPS4"]
    # after the reload the driver re-derives the compute mode; it must be a valid NPS4 partner
    assert all(g.compute_mode in ("QPX", "CPX", "TPX") for g in inv.gpus)
    inv = b.set_memory_mode("NPS1")
    assert [g.memory_mode for g in inv.gpus] == ["NPS1", "NPS1"]


def test_713_uses_the_injected_reload_command(tmp_path):
    failing = [sys.executable, "-c", "import sys; print('modprobe: FATAL: Module amdgpu is in use.', "
                                     "file=sys.stderr); sys.exit(1)"]
    b = backend(tmp_path, rocm="7.13.0", reload_command=failing)
    with pytest.raises(DriverReloadFailed) as info:
        b.set_memory_mode("NPS4")
    assert "Module amdgpu is in use" in info.value.message


def test_71_uses_reset_not_modprobe(tmp_path):
    failing = [sys.executable, "-c", "import sys; sys.exit(1)"]
    b = backend(tmp_path, rocm="7.1.0", reload_command=failing)
    assert [g.memory_mode for g in b.set_memory_mode("NPS4").gpus] == ["NPS4", "NPS4"]


def test_slow_reload_is_waited_for(tmp_path):
    b = backend(tmp_path, rocm="7.1.0", fault={"match": "reset -r", "kind": "slow_reload", "seconds": 1.5})
    t0 = time.monotonic()
    inv = b.set_memory_mode("NPS4")
    assert [g.memory_mode for g in inv.gpus] == ["NPS4", "NPS4"]
    assert time.monotonic() - t0 >= 1.0


def test_slow_reload_beyond_the_limit(tmp_path):
    b = backend(tmp_path, rocm="7.13.0", reload_timeout=1,
                fault={"match": "any", "kind": "slow_reload", "seconds": 5})
    with pytest.raises((BackendTimeout, BackendUnavailable)):
        b.set_memory_mode("NPS4")


# --- faults --------------------------------------------------------------------------------------

def test_fault_fail(tmp_path):
    b = backend(tmp_path, fault={"match": "set -C", "kind": "fail", "exit": 1, "message": "Injected failure"})
    with pytest.raises(BackendError) as info:
        b.set_compute_mode([0], "CPX")
    assert "Injected failure" in info.value.message
    assert info.value.exit_status == 1


def test_fault_fail_with_a_status_text_is_typed(tmp_path):
    msg = ("amdsmi.amdsmi_exception.AmdSmiLibraryException: Error code:\n\t30 | AMDSMI_STATUS_BUSY - Device busy")
    b = backend(tmp_path, fault={"match": "set -C", "kind": "fail", "exit": 1, "message": msg})
    with pytest.raises(DeviceBusy):
        b.set_compute_mode([0], "CPX")


def test_fault_busy(tmp_path):
    b = backend(tmp_path, fault={"match": "set -C", "kind": "busy"})
    with pytest.raises(DeviceBusy) as info:
        b.set_compute_mode([0], "CPX")
    assert "BUSY" in info.value.message or "busy" in info.value.message


def test_fault_busy_memory(tmp_path):
    b = backend(tmp_path, rocm="7.1.0", fault={"match": "any", "kind": "busy"})
    with pytest.raises((DeviceBusy, DriverReloadFailed)):
        b.set_memory_mode("NPS4")


def test_fault_partial_compute(tmp_path):
    # "partial" = a multi-GPU set changes the first k GPUs, then fails. The backend runs one
    # set -C per GPU, so with k=1 every call succeeds and the (verified) result is true...
    b = backend(tmp_path, rocm="6.4.1", fault={"match": "set -C", "kind": "partial", "gpus": 1})
    assert modes(b.set_compute_mode([0, 1], "CPX")) == [("CPX", "NPS1", 8)] * 2
    # ...and with k=0 the failure is reported as the tool's error
    b = backend(tmp_path / "k0", rocm="6.4.1", fault={"match": "set -C", "kind": "partial", "gpus": 0})
    with pytest.raises(BackendError) as info:
        b.set_compute_mode([0, 1], "CPX")
    assert "Unable to set" in info.value.message


@pytest.mark.parametrize("rocm", ["6.4.1", "7.1.0"])
def test_fault_partial_memory(tmp_path, rocm):
    b = backend(tmp_path, rocm=rocm, fault={"match": "set -M", "kind": "partial", "gpus": 1})
    with pytest.raises((VerificationFailed, BackendError)) as info:
        b.set_memory_mode("NPS4")
    assert info.value.message


@pytest.mark.parametrize("match,call", [("set -C", "compute"), ("set -M", "memory")])
def test_fault_silent_noop(tmp_path, match, call):
    b = backend(tmp_path, rocm="7.1.0", fault={"match": match, "kind": "silent_noop"})
    with pytest.raises(VerificationFailed) as info:
        if call == "compute":
            b.set_compute_mode([0], "CPX")
        else:
            b.set_memory_mode("NPS4")
    assert "expected" in info.value.message and "observed" in info.value.message


def test_fault_hang_kills_the_process_group(tmp_path, spawned):
    b = backend(tmp_path, timeout=2, fault={"match": "list", "kind": "hang"})
    t0 = time.monotonic()
    with pytest.raises(BackendTimeout):
        b.inventory()
    assert time.monotonic() - t0 < 10
    assert spawned
    assert_no_leftovers(spawned)


def test_timeout_kills_grandchildren(spawned):
    b = AmdSmiBackend(["sh", "-c", "sleep 60 & sleep 60 & wait"], timeout=1)
    with pytest.raises(BackendTimeout):
        b.version()
    assert_no_leftovers(spawned)


def test_fault_garbage(tmp_path):
    b = backend(tmp_path, fault={"match": "list", "kind": "garbage"})
    with pytest.raises(ParseError) as info:
        b.inventory()
    assert "list" in info.value.message
    assert info.value.command and "list" in info.value.command


def test_nonroot(tmp_path):
    b = backend(tmp_path, nonroot=True)
    inv = b.inventory()  # reading works; accelerator profiles are N/A without root
    assert modes(inv) == [("SPX", "NPS1", 1)] * 2
    assert inv.gpus[0].profiles == ()
    with pytest.raises(PermissionDenied) as info:
        b.set_compute_mode([0], "CPX")
    assert "elevation" in info.value.message
    with pytest.raises(PermissionDenied):
        b.set_memory_mode("NPS4")


def test_tool_missing(tmp_path):
    b = AmdSmiBackend(str(tmp_path / "no-such-amd-smi"))
    with pytest.raises(ToolMissing):
        b.version()
    with pytest.raises(ToolMissing):
        b.inventory()
    assert detect(str(tmp_path / "no-such-amd-smi")) is False


def test_detect(tmp_path):
    env = {"AMD_SMI_EMULATOR_STATE": str(tmp_path / "s.json"), "PYTHONPATH": str(REPO)}
    assert detect([sys.executable, "-m", "amdsmi_emulator"], env=env) is True
    assert detect([sys.executable, "-c", "print('hello')"]) is False


def test_get_backend_kinds(tmp_path):
    b = get_backend("amdsmi", binary="/opt/rocm/bin/amd-smi", sudo=True)
    assert isinstance(b, AmdSmiBackend) and b.binary == ["/opt/rocm/bin/amd-smi"] and b.sudo
    e = get_backend("emulator", state_file=tmp_path / "x.json")
    assert e.binary[-2:] == ["-m", "amdsmi_emulator"]
    assert e.reload_command[-2:] == ["emulator", "reload-driver"]
    assert e.extra_env["AMD_SMI_EMULATOR_STATE"] == str(tmp_path / "x.json")
    with pytest.raises(ValueError):
        get_backend("nvidia")


def test_sudo_prefix(tmp_path, spawned, monkeypatch):
    seen = []
    real_run = AmdSmiBackend.run_argv

    def spy(self, argv, **kw):
        seen.append(argv)
        return real_run(self, argv[2:] if argv[:2] == ["sudo", "-n"] else argv, **kw)

    monkeypatch.setattr(AmdSmiBackend, "run_argv", spy)
    b = backend(tmp_path, sudo=True)
    b.version()
    assert seen[0][:2] == ["sudo", "-n"] and seen[0][-1] == "version"


def test_working_directory_independent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert backend(tmp_path).version().rocm == "7.1.0"
    assert os.getcwd() == str(tmp_path)
