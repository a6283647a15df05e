"""The engine on an emulated node: its pid, load and VRAM in the amd-smi emulator's state while
it runs (amd-smi refuses to repartition its GPU), and idle again once it is gone."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from amdsmi_emulator.engines import ENGINE_PID, ENGINE_PIDS, IDLE_VRAM_MB
from amdsmi_emulator.state import EmulatorState
from tests.amdsmi_emulator.conftest import run_emulator

from .conftest import EngineProcess, Launcher, wait_until

# 2 x MI300X in CPX: logical devices 0-7 are GPU 0, 8-15 GPU 1; devices 9,10 = GPU 1 partitions 1,2


def cpx_node(tmp_path: Path) -> EmulatorState:
    state = EmulatorState.create(tmp_path / "node.json", "MI300X", 2, "7.1")
    state.set_modes(compute="CPX")
    return state


def start_on(start_engine: Launcher, state: EmulatorState, *args: str) -> EngineProcess:
    return start_engine("--tensor-parallel-size", "2", "--emulated-memory-gb", "40", "--max-num-seqs", "4", *args,
                        env={"AMD_SMI_EMULATOR_STATE": str(state.path), "ROCR_VISIBLE_DEVICES": "9,10"})


def held(state: EmulatorState) -> list[tuple[int, float, int | None]]:
    """(vram_used_mb, load, engine_pid) of GPU 1 partitions 1 and 2."""
    parts = state.data["gpus"][1]["partitions"]
    return [(p["vram_used_mb"], p["load"], p.get(ENGINE_PID)) for p in parts[1:3]]


def test_a_running_engine_holds_its_partitions_and_makes_the_gpu_busy(tmp_path, start_engine: Launcher):
    state = cpx_node(tmp_path)
    engine = start_on(start_engine, state)
    pid = engine.proc.pid
    assert held(state) == [(20480, 0.03, pid)] * 2  # 40 GiB over TP 2, idle floor
    assert state.data["gpus"][1][ENGINE_PIDS] == [pid]
    others = state.data["gpus"][1]["partitions"]
    assert [p.get(ENGINE_PID) for p in others] == [None, pid, pid, None, None, None, None, None]

    res = run_emulator(state.path, "set", "-C", "SPX", "-g", "8")
    assert res.returncode == 1 and "AMDSMI_STATUS_BUSY" in res.stderr
    assert state.compute_mode(1) == "CPX"
    assert run_emulator(state.path, "set", "-C", "SPX", "-g", "0").returncode == 0  # GPU 0 is free

    engine.signal(signal.SIGTERM)
    assert engine.wait() == 0
    assert held(state) == [(IDLE_VRAM_MB, 0.0, None)] * 2
    assert state.data["gpus"][1][ENGINE_PIDS] == []
    assert run_emulator(state.path, "set", "-C", "SPX", "-g", "8").returncode == 0


def test_load_follows_the_running_batch(tmp_path, start_engine: Launcher):
    state = cpx_node(tmp_path)
    engine = start_on(start_engine, state)  # real time: 300 tokens take ~4 s
    streams = []

    def stream() -> None:
        with engine.client() as c, c.stream("POST", "/v1/completions",
                                            json={"prompt": "x", "max_tokens": 300, "stream": True}) as r:
            for n, _ in enumerate(r.iter_lines()):
                if n > 4 and stop.is_set():
                    return

    stop = threading.Event()
    for _ in range(2):
        streams.append(threading.Thread(target=stream))
        streams[-1].start()
    # 2 of 4 slots: 0.03 + 0.97 / 2
    wait_until(lambda: {load for _, load, _ in held(state)} == {0.52})
    stop.set()
    for t in streams:
        t.join(30)
    wait_until(lambda: {load for _, load, _ in held(state)} == {0.03})


def test_a_killed_engine_frees_the_gpu(tmp_path, start_engine: Launcher):
    state = cpx_node(tmp_path)
    engine = start_on(start_engine, state)
    engine.signal(signal.SIGKILL)
    engine.wait()
    # nothing cleaned up after it: amd-smi sees the pid is gone
    assert run_emulator(state.path, "set", "-C", "SPX", "-g", "8").returncode == 0
    assert state.compute_mode(1) == "SPX"


def test_without_visible_devices_it_just_serves(tmp_path, start_engine: Launcher):
    state = cpx_node(tmp_path)
    before = state.data
    engine = start_engine("--time-scale", "0.05", env={"AMD_SMI_EMULATOR_STATE": str(state.path)})
    with engine.client() as c:
        assert c.post("/v1/completions", json={"prompt": "x"}).status_code == 200
    assert state.data == before
