"""Starting and stopping model replicas on a node (called on that node's agent).

On emulated nodes a running replica is simulated in the amd-smi emulator's state: its
partition shows load and VRAM use in telemetry, and its GPU has a process, so amd-smi refuses
to repartition that GPU (BUSY) exactly as real hardware would. On real nodes the console has no
serving runtime of its own yet (the KServe integration comes later): replicas stay
``scheduled`` and the workload spec (serving/isolation.py) tells a deployer how to start them.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from aimconsole import counters
from partitions.models import Node

log = logging.getLogger(__name__)

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


def _emulator(node: Node):
    from amdsmi_emulator.state import EmulatorState

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


# Synthetic traffic of one emulated replica (serving/runtime/emulated.py puts EMULATED_LOAD on it).
EMULATED_REQUESTS_PER_S = 4.0
EMULATED_ERROR_RATIO = 0.005


def emulated_traffic(memory_gb: float, replicas: int, interval_s: float, rng: random.Random) -> tuple[list[float], list[float], int]:
    """Requests one emulated deployment served on a node in ``interval_s``: (ok durations,
    failed durations, tokens). Latency grows with the model's size (median ~0.3 s for an
    8 B fp16 model, ~0.55 s for 70 B int4), log-normal."""
    expected = EMULATED_REQUESTS_PER_S * replicas * interval_s
    n = max(0, int(rng.gauss(expected, math.sqrt(expected)) + 0.5)) if expected > 0 else 0
    median = 0.08 + 0.012 * max(memory_gb, 0.0)
    ok: list[float] = []
    failed: list[float] = []
    tokens = 0
    for _ in range(n):
        duration = rng.lognormvariate(math.log(median), 0.45)
        if rng.random() < EMULATED_ERROR_RATIO:
            failed.append(duration)
        else:
            ok.append(duration)
            tokens += rng.randint(64, 512)
    return ok, failed, tokens


def feed_emulated_serving(node: Any, client: redis.Redis | None = None, interval_s: float | None = None,
                          rng: random.Random | None = None) -> int:
    """On an emulated node's agent, once per telemetry sample: add the synthetic requests its
    running emulated replicas served to the request metrics (labelled ``emulated="true"``).
    Real nodes are fed by their serving runtime/gateway instead. Returns requests recorded.
    Never raises (telemetry must go on)."""
    if not node.emulated or not getattr(settings, "METRICS_EMULATED_REQUESTS", True):
        return 0
    from serving.services import running_replicas_by_model

    interval = interval_s if interval_s is not None else settings.TELEMETRY_INTERVAL_S
    rng = rng or random.Random()
    recorded = 0
    try:
        for model, memory_gb, partitions in running_replicas_by_model(node):
            ok, failed, tokens = emulated_traffic(memory_gb, partitions, interval, rng)
            counters.observe_requests(model, ok, errors=failed, tokens=tokens, emulated=True, client=client)
            recorded += len(ok) + len(failed)
    except Exception:  # noqa: BLE001 — the sampler must survive a metrics failure
        log.exception("emulated request metrics failed on %s", node.name)
    return recorded
