"""Show the engine on the emulated node's GPUs: pid, load and VRAM in the amd-smi emulator's state.

Active when the environment has ``AMD_SMI_EMULATOR_STATE`` (the state file) and
``ROCR_VISIBLE_DEVICES`` (comma-separated logical device indices as amd-smi numbers them). Then
the engine

* on start records its pid in ``engine_pids`` of every physical GPU it uses and in
  ``engine_pid`` of every partition (``amdsmi_emulator/engines.py``): amd-smi counts a live pid
  as a process, so it refuses to repartition those GPUs (BUSY) while the engine runs, and
  forgets the pid once the process is gone, even after a SIGKILL;
* sets each partition's ``vram_used_mb`` to its share of the replica's memory
  (``memory_gb x 1024 / tensor_parallel_size``) and its ``load`` from batch occupancy::

      load = LOAD_IDLE_FLOOR + (1 - LOAD_IDLE_FLOOR) * running / max_num_seqs   (2 decimals)

  written at most every ``UPDATE_INTERVAL_S`` and only when the value changed;
* on exit sets them back to idle and removes its pid.

All changes go through the state file's lock (``amdsmi_emulator.statefile``) in a worker
thread, so a slow amd-smi invocation holding the lock never stalls the event loop. The engine
imports only the state plumbing and the engine-process records of the amd-smi emulator, not
its hive model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from amdsmi_emulator import engines, statefile

ENV_STATE = "AMD_SMI_EMULATOR_STATE"
ENV_DEVICES = "ROCR_VISIBLE_DEVICES"
LOAD_IDLE_FLOOR = 0.03  # a loaded model's housekeeping kernels
UPDATE_INTERVAL_S = 0.25  # at most 4 writes a second


def occupancy_load(running: int, max_num_seqs: int) -> float:
    """Partition load (0..1) for ``running`` sequences in a batch of at most ``max_num_seqs``."""
    share = min(1.0, max(0, running) / max(1, max_num_seqs))
    return round(LOAD_IDLE_FLOOR + (1 - LOAD_IDLE_FLOOR) * share, 2)


def parse_devices(text: str) -> list[int]:
    return [int(part) for part in text.replace(" ", "").split(",") if part != ""]


@dataclass
class GpuPresence:
    """This engine's footprint on the emulated GPUs (see the module docstring)."""

    path: str
    devices: list[int]
    vram_mb_per_device: int
    max_num_seqs: int
    pid: int
    slots: list[tuple[int, int]] | None = None  # (gpu, partition) per device, once registered
    _load: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, memory_gb: float, tensor_parallel_size: int,
                 max_num_seqs: int) -> GpuPresence | None:
        path, devices = env.get(ENV_STATE), env.get(ENV_DEVICES)
        if not path or not devices:
            return None
        return cls(path=path, devices=parse_devices(devices),
                   vram_mb_per_device=int(memory_gb * 1024 / max(1, tensor_parallel_size)),
                   max_num_seqs=max_num_seqs, pid=os.getpid())

    # -- synchronous state changes (run in a worker thread) ------------------------------
    def register(self) -> None:
        with statefile.update(self.path) as data:
            engines.reap_dead_engines(data)
            logical = engines.logical_slots(data)
            slots = []
            for index in self.devices:
                if not 0 <= index < len(logical):
                    print(f"WARNING: {ENV_DEVICES} lists device {index}; the node has {len(logical)}",
                          file=sys.stderr, flush=True)
                    continue
                slots.append(logical[index])
            for g, p in slots:
                gpu = data["gpus"][g]
                pids = gpu.setdefault(engines.ENGINE_PIDS, [])
                if self.pid not in pids:
                    pids.append(self.pid)
                part = gpu["partitions"][p]
                part[engines.ENGINE_PID] = self.pid
                part["vram_used_mb"] = self.vram_mb_per_device
                part["load"] = occupancy_load(0, self.max_num_seqs)
            self.slots = slots
            self._load = occupancy_load(0, self.max_num_seqs)

    def set_load(self, load: float) -> None:
        if self.slots is None or load == self._load:
            return
        with statefile.update(self.path) as data:
            for part in self._owned(data):
                part["load"] = load
        self._load = load

    def unregister(self) -> None:
        if self.slots is None:
            return
        with statefile.update(self.path) as data:
            for part in self._owned(data):
                del part[engines.ENGINE_PID]
                part["load"], part["vram_used_mb"] = engines.IDLE_LOAD, engines.IDLE_VRAM_MB
            for gpu in data["gpus"]:
                if self.pid in gpu.get(engines.ENGINE_PIDS, []):
                    gpu[engines.ENGINE_PIDS] = [p for p in gpu[engines.ENGINE_PIDS] if p != self.pid]
        self.slots = None

    def _owned(self, data: dict) -> list[dict]:
        """Our partitions that still are ours (a partition re-created by a repartition is not)."""
        out = []
        for g, p in self.slots or []:
            parts = data["gpus"][g]["partitions"] if g < len(data["gpus"]) else []
            if p < len(parts) and parts[p].get(engines.ENGINE_PID) == self.pid:
                out.append(parts[p])
        return out

    # -- asyncio side ------------------------------------------------------------------
    async def follow(self, running: asyncio.Queue[int]) -> None:
        """Write the load for the latest running count the engine reports, rate-limited."""
        latest = 0
        while True:
            latest = await running.get()
            while not running.empty():  # only the newest value matters
                latest = running.get_nowait()
            try:
                await asyncio.to_thread(self.set_load, occupancy_load(latest, self.max_num_seqs))
            except OSError as err:  # a broken state file must not take serving down
                print(f"WARNING: cannot update {self.path}: {err}", file=sys.stderr, flush=True)
            await asyncio.sleep(UPDATE_INTERVAL_S)


class Reporter:
    """Feeds the engine's running count to a ``GpuPresence`` from the loop's callbacks."""

    def __init__(self, presence: GpuPresence) -> None:
        self.presence = presence
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._last: int | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.presence.register)
        self._task = asyncio.get_running_loop().create_task(self.presence.follow(self.queue))

    def report(self, running: int) -> None:
        if running != self._last:
            self._last = running
            self.queue.put_nowait(running)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.presence.unregister)
