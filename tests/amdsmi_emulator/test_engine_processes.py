"""Serving processes recorded by pid (amdsmi_emulator/engines.py): a live engine makes its GPU
busy and shows in amd-smi's process table; a dead one frees the GPU, even after a SIGKILL."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from amdsmi_emulator.engines import ENGINE_PID, ENGINE_PIDS, IDLE_VRAM_MB, reap_dead_engines
from amdsmi_emulator.model import Hive
from amdsmi_emulator.state import EmulatorState

from .conftest import make_state


@pytest.fixture
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: no process has this pid any more
    return proc.pid


def hold(state: EmulatorState, pid: int, gpu: int, partition: int, vram_mb: int = 20480, load: float = 0.5) -> None:
    """What engine_emulator/smi.py records for a replica on (gpu, partition)."""
    with state.transaction() as data:
        data["gpus"][gpu].setdefault(ENGINE_PIDS, []).append(pid)
        part = data["gpus"][gpu]["partitions"][partition]
        part[ENGINE_PID], part["vram_used_mb"], part["load"] = pid, vram_mb, load


def test_a_live_engine_pid_makes_its_gpu_busy(state_path, emu, live_pid):
    state = make_state(state_path)
    hold(state, live_pid, gpu=2, partition=0)
    assert Hive(state.data).busy(2) and not Hive(state.data).busy(1)
    res = emu("set", "-C", "CPX", "-g", "2")
    assert res.returncode == 1
    assert "AMDSMI_STATUS_BUSY" in res.stderr
    assert state.compute_mode(2) == "SPX"
    assert emu("set", "-C", "CPX", "-g", "1").returncode == 0  # other GPUs are free


def test_a_dead_engine_pid_frees_the_gpu_and_its_partition(state_path, emu, dead_pid):
    state = make_state(state_path)
    hold(state, dead_pid, gpu=2, partition=0)
    assert not Hive(state.data).busy(2)
    assert emu("set", "-C", "CPX", "-g", "2").returncode == 0
    assert state.compute_mode(2) == "CPX"
    gpu = state.data["gpus"][2]
    assert gpu[ENGINE_PIDS] == []  # the reaping was saved with the change


def test_reaping_resets_only_partitions_of_dead_engines(state_path, live_pid, dead_pid):
    state = make_state(state_path, compute="CPX")
    hold(state, live_pid, gpu=0, partition=1)
    hold(state, dead_pid, gpu=0, partition=2)
    data = state.data
    assert reap_dead_engines(data) is True
    parts = data["gpus"][0]["partitions"]
    assert parts[1][ENGINE_PID] == live_pid and parts[1]["vram_used_mb"] == 20480
    assert ENGINE_PID not in parts[2] and (parts[2]["load"], parts[2]["vram_used_mb"]) == (0.0, IDLE_VRAM_MB)
    assert data["gpus"][0][ENGINE_PIDS] == [live_pid]
    assert reap_dead_engines(data) is False


def test_telemetry_of_a_killed_engine_is_idle(state_path, emu, dead_pid):
    state = make_state(state_path)
    hold(state, dead_pid, gpu=0, partition=0, vram_mb=40960, load=0.9)
    res = emu("metric", "--mem-usage", "--usage", "--json", "-g", "0")
    assert res.returncode == 0, res.stderr
    [rec] = json.loads(res.stdout)["gpu_data"]
    assert rec["mem_usage"]["used_vram"]["value"] == IDLE_VRAM_MB
    assert rec["usage"]["gfx_activity"]["value"] == 0


def test_the_process_table_lists_live_engines(state_path, emu, live_pid, dead_pid):
    state = make_state(state_path)
    hold(state, live_pid, gpu=1, partition=0, vram_mb=20480, load=0.25)
    hold(state, dead_pid, gpu=3, partition=0)
    res = emu()
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if "aim-engine-emulator" in line]
    assert rows == [f"|    1{live_pid:>11}  aim-engine-emulator    2.0 MB   20.0 GB    20.5 GB   25.0 % |"]
    assert len(rows[0]) == 80  # the width of the real table
    assert "No running processes found" not in res.stdout


def test_an_idle_node_still_has_no_processes(state_path, emu):
    make_state(state_path)
    assert "No running processes found" in emu().stdout


def test_the_processes_counter_still_counts_beside_engines(state_path, emu, dead_pid):
    state = make_state(state_path, processes={2: 1})
    hold(state, dead_pid, gpu=2, partition=0)
    assert Hive(state.data).busy(2)
    assert emu("set", "-C", "CPX", "-g", "2").returncode == 1
