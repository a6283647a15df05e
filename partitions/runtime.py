"""Starting and stopping model replicas on a node (called on that node's agent).

On emulated nodes a running replica is simulated in the amd-smi emulator's state: its
partition shows load and VRAM use in telemetry, and its GPU has a process, so amd-smi refuses
to repartition that GPU (BUSY) exactly as real hardware would. On real nodes the console has no
serving runtime of its own yet (the KServe integration comes later): replicas stay
``scheduled`` and the workload spec (partitions/isolation.py) tells a deployer how to start them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from partitions.models import Node

# Emulated load of a serving replica: steady decode traffic.
EMULATED_LOAD = 0.65


@dataclass(frozen=True)
class ReplicaSlot:
    gpu_index: int
    partition_index: int
    memory_gb: float  # what the replica uses (GiB)


def can_run(node: Node) -> bool:
    """Whether the console can start replicas on this node itself."""
    return node.backend == Node.Backend.EMULATOR


def _emulator(node: Node):  # type: ignore[no-untyped-def]
    from partitions.emulator.state import EmulatorState

    return EmulatorState.load(node.backend_options["state_file"])


def reconcile(node: Node, slots: Sequence[ReplicaSlot]) -> None:
    """Make the node run exactly ``slots`` (level-triggered, idempotent): every listed
    partition under load, every other partition idle, one process per replica on each GPU.
    Processes the console did not start (``processes`` beyond ``console_replicas``) are kept."""
    if not can_run(node):
        raise RuntimeError(f"{node.name}: no serving runtime for backend {node.backend}")
    wanted = {(s.gpu_index, s.partition_index): s for s in slots}
    state = _emulator(node)
    with state.transaction() as data:
        for gpu_index, gpu in enumerate(data["gpus"]):
            replicas = 0
            for part_index, part in enumerate(gpu["partitions"]):
                slot = wanted.get((gpu_index, part_index))
                if slot is None:
                    part["load"], part["vram_used_mb"] = 0.0, 0
                else:
                    part["load"], part["vram_used_mb"] = EMULATED_LOAD, int(slot.memory_gb * 1024)
                    replicas += 1
            external = max(0, int(gpu.get("processes", 0)) - int(gpu.get("console_replicas", 0)))
            gpu["console_replicas"] = replicas
            gpu["processes"] = external + replicas
