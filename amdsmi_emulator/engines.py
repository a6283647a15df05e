"""Serving processes on emulated GPUs: what an engine records in the state and how amd-smi reads it.

A serving process (``engine_emulator``) that runs on some logical devices records its pid

* in ``gpu["engine_pids"]`` of each physical GPU it uses: a live pid there makes the GPU busy,
  so amd-smi refuses compute/NPS changes and driver reloads (BUSY), as real hardware does with
  a process holding the device open;
* in ``partition["engine_pid"]`` of each partition it uses, together with that partition's
  ``load`` and ``vram_used_mb``.

Only LIVE pids count (``os.kill(pid, 0)``): when the process dies, even by SIGKILL, the kernel
frees its memory and queues, so a dead engine frees the GPU at once. ``reap_dead_engines``
applies that to the data whenever the hive is read (``Hive`` calls it), so nobody has to clean
up after a crash. This sits beside the older ``processes`` counter (processes without a pid:
``set-processes`` and the console's ``emulated`` runtime, ``console_replicas``), which still
counts as before. A reused pid would keep a GPU busy; on a demo node that risk is accepted.
"""

from __future__ import annotations

import os

ENGINE_PIDS = "engine_pids"  # per GPU: pids of engines using it
ENGINE_PID = "engine_pid"  # per partition: the engine whose load/VRAM it shows
ENGINE_NAME = "aim-engine-emulator"  # process name amd-smi lists for an engine
IDLE_LOAD = 0.0
IDLE_VRAM_MB = 283  # VRAM an idle partition shows (what the driver itself holds)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 probes without signalling)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def live_engine_pids(gpu: dict) -> list[int]:
    return [int(pid) for pid in gpu.get(ENGINE_PIDS, []) if pid_alive(int(pid))]


def process_count(gpu: dict) -> int:
    """Processes on one physical GPU: the ``processes`` counter plus live engines."""
    return int(gpu.get("processes", 0)) + len(live_engine_pids(gpu))


def logical_slots(data: dict) -> list[tuple[int, int]]:
    """(gpu, partition) of every logical device, in amd-smi's enumeration order (the order
    of ``Hive.devices()``: GPU by GPU, partitions in order)."""
    return [(g, p) for g, gpu in enumerate(data["gpus"]) for p in range(len(gpu["partitions"]))]


def reap_dead_engines(data: dict) -> bool:
    """Forget engines that are no longer running: their pids leave ``engine_pids`` and the
    partitions they held go back to idle. Returns whether anything changed."""
    changed = False
    for gpu in data.get("gpus", []):
        pids = gpu.get(ENGINE_PIDS)
        if pids:
            live = live_engine_pids(gpu)
            if live != pids:
                gpu[ENGINE_PIDS] = live
                changed = True
        for part in gpu.get("partitions", []):
            pid = part.get(ENGINE_PID)
            if pid is not None and not pid_alive(int(pid)):
                del part[ENGINE_PID]
                part["load"], part["vram_used_mb"] = IDLE_LOAD, IDLE_VRAM_MB
                changed = True
    return changed
