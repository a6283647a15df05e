"""Hardware rules, version behaviour and fault injection of the emulator (run as a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from amdsmi_emulator.state import EmulatorState

from .conftest import REPO, make_state, parse_concat, run_emulator


def devices(state_path, *extra) -> list[dict]:
    res = run_emulator(state_path, "list", "--json", *extra)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def current(state_path) -> list[dict]:
    res = run_emulator(state_path, "partition", "-c", "--json")
    assert res.returncode == 0, res.stderr
    return parse_concat(res.stdout.split("Legend:")[0])[0]["current_partition"]  # 6.4: trailing text


# -- state file --------------------------------------------------------------------------
def test_missing_state_created_from_env(tmp_path):
    path = tmp_path / "new.json"
    res = run_emulator(path, "static", "-a", "--json",
                       env={"AMD_SMI_EMULATOR_GPU": "MI355X", "AMD_SMI_EMULATOR_COUNT": "2",
                            "AMD_SMI_EMULATOR_ROCM": "6.4.2"})
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert isinstance(data, list) and len(data) == 2  # 6.x: list envelope
    assert data[0]["asic"]["device_id"] == "0x75a3"
    saved = json.loads(path.read_text())
    assert saved["gpu_model"] == "MI355X" and saved["rocm"] == "6.4.2"
    assert [g["compute_mode"] + g["memory_mode"] for g in saved["gpus"]] == ["SPXNPS1"] * 2


def test_state_env_var_and_concurrent_writers(tmp_path):
    path = tmp_path / "s.json"
    make_state(path, compute="CPX")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AMD_SMI")},
           "AMD_SMI_EMULATOR_STATE": str(path), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "amdsmi_emulator", "emulator", "set-load",
                               "0", str(p), "0.5", str(1000 + p)], env=env, cwd=REPO)
             for p in range(8)]
    assert [p.wait(30) for p in procs] == [0] * 8
    parts = json.loads(path.read_text())["gpus"][0]["partitions"]
    assert [p["vram_used_mb"] for p in parts] == [1000 + p for p in range(8)]  # no lost update


# -- enumeration -------------------------------------------------------------------------
def test_ids_renumber_bdf_function_and_uuids_by_version(tmp_path):
    for rocm, distinct in (("6.4.1", False), ("7.1", True)):
        path = tmp_path / f"{rocm}.json"
        make_state(path, rocm=rocm)
        assert run_emulator(path, "set", "-C", "CPX", "-g", "1").returncode == 0
        devs = devices(path, "-e") if rocm >= "6.4" else devices(path)
        assert [d["gpu"] for d in devs] == list(range(15))  # 7 x SPX + 1 x CPX, renumbered
        gpu1 = devs[1:9]
        assert [d["bdf"] for d in gpu1] == [f"0000:22:00.{p}" for p in range(8)]
        assert [d["partition_id"] for d in gpu1] == list(range(8))
        assert (len({d["uuid"] for d in gpu1}) == 8) is distinct
        assert [d["render"] for d in devs] == [f"renderD{128 + i}" for i in range(15)]
        assert [d["node_id"] for d in devs] == [2 + i for i in range(15)]
        assert devs[9]["bdf"] == "0000:38:00.0"


def test_gpu_selection_by_index_bdf_uuid_and_unknown(state_path, emu):
    make_state(state_path, compute="DPX")
    devs = devices(state_path)
    picked = json.loads(emu("list", "--json", "-g", "3", devs[5]["bdf"], devs[7]["uuid"]).stdout)
    assert [d["gpu"] for d in picked] == [3, 5, 7]
    res = emu("static", "-g", "99")
    assert res.returncode == 1 and res.stdout == ""
    assert "AmdSmiDeviceNotFoundException: Can not find a device: GPU '99' Error code: -3" in res.stderr


# -- compute changes ---------------------------------------------------------------------
def test_compute_by_profile_index_and_type(state_path, emu):
    make_state(state_path)
    assert emu("set", "-C", "3", "-g", "0").returncode == 0
    assert emu("set", "-C", "dpx", "-g", "8").returncode == 0  # 6.4+: case-insensitive
    state = EmulatorState(state_path)
    assert [state.compute_mode(i) for i in range(3)] == ["CPX", "DPX", "SPX"]
    assert len(devices(state_path)) == 8 + 1 + 6 + 1


def test_compute_incompatible_with_nps_is_setting_unavailable(state_path, emu):
    make_state(state_path, compute="CPX", memory="NPS4")
    res = emu("set", "-C", "SPX")
    assert res.returncode == 1
    assert "55 | AMDSMI_STATUS_SETTING_UNAVAILABLE - Setting is not available" in res.stderr
    assert res.stderr.rstrip().endswith(
        "ValueError: [AMDSMI_STATUS_SETTING_UNAVAILABLE] Unable to set accelerator partition to SPX "
        "on GPU ID: 0 BDF:0000:0c:00.0")
    assert "Attempted to set accelerator partition to SPX (profile #0) on GPU ID: 0" in res.stdout
    state = EmulatorState(state_path)
    assert {state.compute_mode(g) for g in range(8)} == {"CPX"}
    assert emu("set", "-C", "QPX").returncode == 0  # QPX+NPS4 is valid


def test_busy_gpu_stops_the_set_at_that_gpu(state_path, emu):
    make_state(state_path, processes={3: 1})
    res = emu("set", "-C", "CPX")
    assert res.returncode == 1
    assert res.stdout.count("Successfully set accelerator partition to CPX (profile #3)") == 3
    assert "30 | AMDSMI_STATUS_BUSY - Device busy" in res.stderr
    assert "ValueError: Unable to set accelerator partition to CPX on GPU ID: 3 BDF:0000:5c:00.0" in res.stderr
    state = EmulatorState(state_path)
    assert [state.compute_mode(g) for g in range(5)] == ["CPX", "CPX", "CPX", "SPX", "SPX"]


def test_invalid_compute_type_per_version(tmp_path):
    path = tmp_path / "a.json"
    make_state(path, rocm="7.1")
    res = run_emulator(path, "set", "-C", "TPX")
    assert (res.returncode, res.stdout) == (1, "Valid inputs are SPX, DPX, QPX, CPX, 0, 1, 2, 3\n")
    path = tmp_path / "b.json"
    make_state(path, rocm="6.2")
    res = run_emulator(path, "set", "-C", "XPX")
    assert res.returncode == 2 and "amd-smi set: error: argument -C/--compute-partition" in res.stderr
    res = run_emulator(path, "set", "-C", "CPX", "--json")  # 6.1/6.2: one array, old key name
    assert res.returncode == 0
    assert json.loads(res.stdout)[7] == {"gpu": 7, "computepartition": "Successfully set compute partition to CPX"}


def test_nonroot_permissions_per_version(tmp_path):
    path = tmp_path / "7.json"
    make_state(path, rocm="7.1", root=False)
    for argv in (["set", "-C", "CPX"], ["reset", "-r"]):
        res = run_emulator(path, *argv, stdin="y\n")
        assert res.returncode == 1 and "Error code: -11" in res.stderr and res.stdout == ""
    # -M is not checked while parsing: banner, prompt, the GPU's NO_PERM result, PermissionError
    res = run_emulator(path, "set", "-M", "NPS4", stdin="y\n")
    assert res.returncode == 1 and "MEMORY_PARTITION: [AMDSMI_STATUS_NO_PERM] Command requires elevation" in res.stdout
    assert res.stderr.rstrip().endswith("PermissionError: Command requires elevation")
    part = json.loads(run_emulator(path, "partition", "--json").stdout)
    assert part["current_partition"][0]["accelerator_type"] == "SPX"
    assert {v for row in part["partition_profiles"] for k, v in row.items()
            if k not in ("gpu_id", "partition_id")} == {"N/A"}
    path = tmp_path / "6.json"
    make_state(path, rocm="6.4", root=False)
    res = run_emulator(path, "set", "-M", "NPS4", stdin="y\n")  # banner first, then NO_PERM
    assert res.returncode == 1 and "Do you accept these terms? [Y/N] " in res.stdout
    assert res.stderr.rstrip().endswith("PermissionError: Command requires elevation")
    assert "** WARNING:" in run_emulator(path, "partition", "-a").stdout


# -- memory changes ----------------------------------------------------------------------
def test_nps_is_pending_until_reload_in_7x_and_hive_wide(state_path, emu):
    make_state(state_path, rocm="7.1", compute="CPX")
    res = emu("set", "-M", "NPS4", "-g", "0", stdin="y\n")  # one GPU named, whole hive changes
    assert res.returncode == 0 and "reload driver when ready" in res.stdout
    state = EmulatorState(state_path)
    assert state.memory_mode() == "NPS1" and state.pending_memory_mode() == "NPS4"
    assert {r["memory"] for r in current(state_path)} == {"NPS1"}
    res = emu("reset", "-r", stdin="yes\n")
    assert res.returncode == 0 and "RELOAD_DRIVER: Successfully reloaded driver" in res.stdout
    assert state.memory_modes() == ["NPS4"] * 8 and state.pending_memory_mode() is None
    rows = current(state_path)
    # the driver's auto mode after a reload into NPS4 on an 8-XCD dGPU is CPX (aqua_vanjaram.c)
    assert len(rows) == 64 and {(r["memory"], r["accelerator_type"]) for r in rows} == {("NPS4", "CPX")}


def test_nps_reload_rederives_compute_and_busy_blocks_reload(state_path, emu):
    make_state(state_path, rocm="7.1", compute="CPX", memory="NPS4", processes={5: 1})
    assert emu("set", "-M", "NPS1", stdin="Y\n").returncode == 0
    res = emu("reset", "-r", stdin="y\n")
    assert "[AMDSMI_STATUS_AMDGPU_RESTART_ERR] Unable to successfully restart driver" in res.stdout
    state = EmulatorState(state_path)
    assert state.memory_mode() == "NPS4" and state.pending_memory_mode() == "NPS1"
    state.set_processes(5, 0)
    assert emu("reset", "-r", stdin="y\n").returncode == 0
    assert {state.compute_mode(g) for g in range(8)} == {"SPX"} and state.memory_mode() == "NPS1"


def test_nps_applies_at_once_in_6x(state_path, emu):
    make_state(state_path, rocm="6.4")
    res = emu("set", "-M", "NPS4", stdin="y\n")
    assert res.returncode == 0 and "secs remain" in res.stdout
    assert "MEMORY_PARTITION: Successfully set memory partition to NPS4\n" in res.stdout
    assert {(r["memory"], r["accelerator_type"]) for r in current(state_path)} == {("NPS4", "CPX")}
    assert emu("reset", "-r").returncode == 2  # no reset -r before 7.0


def test_declined_confirmation_changes_nothing(state_path, emu):
    make_state(state_path, rocm="7.1")
    res = emu("set", "-M", "NPS4", stdin="no\n")
    assert res.returncode == 1
    assert res.stdout.endswith("Do you accept these terms? [Y/N] Confirmation not given. Exiting without setting value\n")
    assert EmulatorState(state_path).pending_memory_mode() is None


def test_rocm_7_13_has_no_reset_r_but_modprobe_reload(state_path, emu):
    make_state(state_path, gpu="MI355X", count=2, rocm="7.13")
    assert emu("set", "-M", "NPS2", stdin="y\n").returncode == 0
    res = emu("reset", "-r", stdin="y\n")
    assert res.returncode == 2 and "unrecognized arguments: -r" in res.stderr
    assert emu("emulator", "reload-driver").returncode == 0
    state = EmulatorState(state_path)
    assert state.memory_mode() == "NPS2" and state.compute_mode(0) == "DPX"
    assert emu("set", "-C", "QPX").returncode == 0


def test_gc_950_runs_qpx_and_cpx_under_nps2(state_path, emu):
    # amdgpu "Update supported modes for GC v9.5.0": QPX and CPX gain NPS2 on MI350X/MI355X
    make_state(state_path, gpu="MI355X", count=2, rocm="7.1", compute="DPX", memory="NPS2")
    assert emu("set", "-C", "QPX", "-g", "0").returncode == 0
    assert emu("set", "-C", "CPX").returncode == 0
    profiles = json.loads(emu("partition", "-a", "--json").stdout)["partition_profiles"]
    assert {r["accelerator_type"].rstrip("*"): r["memory_partition_caps"] for r in profiles
            if r["profile_index"] != ""} == {"SPX": "NPS1", "DPX": "NPS1,NPS2", "QPX": "NPS1,NPS2", "CPX": "NPS1,NPS2"}
    res = emu("set", "-C", "SPX")
    assert res.returncode == 1 and "SETTING_UNAVAILABLE" in res.stderr


def test_invalid_and_unsupported_nps(tmp_path):
    path = tmp_path / "x.json"
    make_state(path, rocm="7.1")
    res = run_emulator(path, "set", "-M", "NPS2", "-g", "0", stdin="y\n")
    assert res.returncode == 0
    assert ("Valid Memory partition Modes: NPS1,NPS4\n\nGPU: 0\n"
            "    MEMORY_PARTITION: [AMDSMI_STATUS_INVAL] Unable to set memory partition to NPS2") in res.stdout
    res = run_emulator(path, "set", "-M", "NPS3")
    assert res.returncode == 2 and "invalid choice: 'NPS3'" in res.stderr
    path = tmp_path / "apu.json"
    make_state(path, gpu="MI300A", count=4, rocm="7.1")
    res = run_emulator(path, "set", "-M", "NPS4", stdin="y\n")
    assert res.returncode == 0 and res.stdout.count("[AMDSMI_STATUS_NOT_SUPPORTED]") == 4
    assert EmulatorState(path).pending_memory_mode() is None
    caps = json.loads(run_emulator(path, "partition", "-m", "--json").stdout)["memory_partition"]
    assert {r["memory_partition_caps"] for r in caps} == {"N/A"}


# -- metrics -----------------------------------------------------------------------------
def test_metrics_follow_load_and_secondaries_are_na(state_path, emu):
    make_state(state_path, rocm="7.1", compute="DPX")
    state = EmulatorState(state_path)
    state.set_load(0, 0, 0.9, 60000)
    state.set_load(0, 1, 0.5, 12000)
    data = json.loads(emu("metric", "-u", "-p", "-t", "-m", "--json", "-g", "0", "1", "2").stdout)["gpu_data"]
    busy, idle = data[0], data[2]
    assert busy["usage"]["gfx_activity"]["value"] >= 60 and idle["usage"]["gfx_activity"]["value"] == 0
    assert busy["power"]["socket_power"]["value"] > idle["power"]["socket_power"]["value"] + 300
    assert busy["temperature"]["hotspot"]["value"] > idle["temperature"]["hotspot"]["value"]
    xcp = busy["usage"]["gfx_busy_inst"]
    assert list(xcp) == ["xcp_0", "xcp_1"] and xcp["xcp_0"][4] == "N/A"
    assert 85 <= xcp["xcp_0"][0]["value"] <= 95 and 45 <= xcp["xcp_1"][0]["value"] <= 55
    assert busy["mem_usage"]["total_vram"]["value"] == 196592 and busy["mem_usage"]["used_vram"]["value"] == 60000
    secondary = data[1]
    assert secondary["usage"] == "N/A" and secondary["power"]["socket_power"] == "N/A"
    assert secondary["temperature"] == {"edge": "N/A", "hotspot": "N/A", "mem": "N/A"}
    assert secondary["mem_usage"]["total_vram"]["value"] == 98296
    assert secondary["mem_usage"]["free_vram"]["value"] == 98296 - 12000


def test_before_641_every_partition_reports_device_values(state_path, emu):
    make_state(state_path, rocm="6.3", compute="QPX")
    data = json.loads(emu("metric", "-p", "-m", "--json", "-g", "1").stdout)
    assert isinstance(data, list)
    assert data[0]["power"]["socket_power"] != "N/A" and data[0]["mem_usage"]["total_vram"]["value"] == 196592


def test_partition_json_quirks_by_version(tmp_path):
    p63, p64 = tmp_path / "63.json", tmp_path / "64.json"
    make_state(p63, rocm="6.3", compute="CPX")
    make_state(p64, rocm="6.4")
    out = run_emulator(p63, "partition", "--json").stdout
    docs = parse_concat(out)
    assert [list(d) for d in docs] == [["current_partition"], ["memory_partition"], ["partition_profiles"],
                                       ["partition_resources"]]
    assert docs[0]["current_partition"][0]["partition_id"] == "0,1,2,3,4,5,6,7"
    assert docs[0]["current_partition"][1]["partition_id"] == "N/A"
    out = run_emulator(p64, "partition", "--json").stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)
    first, end = json.JSONDecoder().raw_decode(out)
    assert set(first) == {"current_partition", "memory_partition", "partition_profiles", "partition_resources"}
    assert out[end:].strip().startswith("Legend:")


# -- faults ------------------------------------------------------------------------------
def test_fault_fail_times_and_removal(state_path, emu):
    state = make_state(state_path)
    state.add_fault({"match": "list", "kind": "fail", "exit": 3, "message": "boom", "times": 1})
    res = emu("list")
    assert (res.returncode, res.stdout, res.stderr) == (3, "", "boom\n")
    assert emu("list").returncode == 0 and state.faults() == []


def test_fault_match_uses_subcommand_words(state_path, emu):
    state = make_state(state_path)
    state.add_fault({"match": "set -M", "kind": "fail", "exit": 4})
    assert emu("set", "-C", "CPX", "-g", "0").returncode == 0
    assert emu("set", "--memory-partition", "NPS4").returncode == 4
    assert emu("metric").returncode == 0


def test_fault_hang_is_killed_by_timeout(state_path):
    state = make_state(state_path)
    state.add_fault({"match": "metric", "kind": "hang"})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "amdsmi_emulator", "--state", str(state_path),
                             "metric", "--json"], stdout=subprocess.PIPE, env=env, cwd=REPO)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=1.5)
    proc.kill()
    assert proc.wait(timeout=5) == -9
    assert run_emulator(state_path, "list").returncode == 0  # no lock left behind


def test_fault_busy(state_path, emu):
    make_state(state_path).add_fault({"match": "set -C", "kind": "busy", "times": 1})
    res = emu("set", "-C", "CPX")
    assert res.returncode == 1 and "AMDSMI_STATUS_BUSY" in res.stderr
    assert emu("set", "-C", "CPX").returncode == 0


def test_fault_partial(state_path, emu):
    state = make_state(state_path)
    state.add_fault({"match": "set -C", "kind": "partial", "gpus": 2})
    res = emu("set", "-C", "CPX")
    assert res.returncode == 1 and res.stdout.count("Successfully") == 2
    assert "ValueError: Unable to set accelerator partition to CPX on GPU ID: 2" in res.stderr
    assert [state.compute_mode(g) for g in range(4)] == ["CPX", "CPX", "SPX", "SPX"]


def test_fault_partial_nps_leaves_hive_inconsistent(state_path, emu):
    state = make_state(state_path, rocm="6.4")
    state.add_fault({"match": "set -M", "kind": "partial", "gpus": 3})
    res = emu("set", "-M", "NPS4", stdin="y\n")
    assert res.returncode == 1
    assert state.memory_modes() == ["NPS4"] * 3 + ["NPS1"] * 5


def test_fault_slow_reload_hides_devices_meanwhile(state_path):
    state = make_state(state_path, rocm="7.1")
    assert run_emulator(state_path, "set", "-M", "NPS4", stdin="y\n").returncode == 0
    state.add_fault({"match": "reset -r", "kind": "slow_reload", "seconds": 2})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "amdsmi_emulator", "--state", str(state_path),
                             "reset", "-r"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=REPO)
    proc.stdin.write(b"y\n")
    proc.stdin.close()
    time.sleep(0.8)
    during = run_emulator(state_path, "list")
    assert during.returncode == 1 and "Error code: -7" in during.stderr
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - start >= 2
    assert len(devices(state_path)) == 64  # back in NPS4, the driver's default CPX


def test_fault_garbage(state_path, emu):
    make_state(state_path).add_fault({"match": "list", "kind": "garbage"})
    res = emu("list", "--json")
    assert res.returncode == 0 and res.stdout.startswith("[")
    with pytest.raises(json.JSONDecodeError):
        json.loads(res.stdout)


def test_fault_silent_noop(state_path, emu):
    state = make_state(state_path)
    state.add_fault({"match": "set -C", "kind": "silent_noop", "times": 1})
    res = emu("set", "-C", "CPX")
    assert res.returncode == 0 and res.stdout.count("Successfully set accelerator partition to CPX") == 8
    assert len(devices(state_path)) == 8 and state.compute_mode(0) == "SPX"


def test_env_fault_applies_to_every_invocation_with_times(state_path, emu):
    make_state(state_path)
    env = {"AMD_SMI_EMULATOR_FAULT": json.dumps({"match": "any", "kind": "fail", "exit": 5, "times": 2})}
    assert [emu("list", env=env).returncode for _ in range(3)] == [5, 5, 0]
    env = {"AMD_SMI_EMULATOR_FAULT": json.dumps([{"match": "metric", "kind": "fail", "exit": 6}])}
    assert [emu("metric", env=env).returncode for _ in range(2)] == [6, 6]
    assert emu("list", env=env).returncode == 0
