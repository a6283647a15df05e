"""The ``emulated`` runtime: replicas simulated in the amd-smi emulator's state, no process.

A running copy puts load and VRAM use on its partitions in telemetry, and counts as a process
on its GPU, so amd-smi refuses to repartition that GPU (BUSY) exactly as real hardware would.
It has no endpoint (nothing answers requests: the gateway never routes to it); its requests
are synthetic and labelled ``emulated="true"`` in the metrics (``feed_emulated_serving``).
Kept for scale tests and for fleets too large to run a process per replica; the demo's nodes
use the ``process`` runtime with the engine emulator instead, which serves real HTTP.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from django.conf import settings

from aimconsole import counters
from partitions.models import Node
from serving.runtime.base import READY, CopySpec, CopyStatus

log = logging.getLogger(__name__)

name = "emulated"

# Emulated load of a serving replica: steady decode traffic.
EMULATED_LOAD = 0.65


def _emulator(node: Node):
    from amdsmi_emulator.state import EmulatorState

    return EmulatorState.load(node.backend_options["state_file"])


def reconcile(node: Node, copies: Sequence[CopySpec]) -> Mapping[str, CopyStatus]:
    """Make the node run exactly ``copies`` (level-triggered, idempotent): every partition of a
    copy under load, every other partition idle, one process per copy on each of its GPUs.
    Processes the console did not start (``processes`` beyond ``console_replicas``) are kept.
    Every copy is ready at once."""
    if node.backend != Node.Backend.EMULATOR:
        raise RuntimeError(f"{node.name}: the emulated runtime needs an amd-smi emulator node, not {node.backend}")
    wanted = {(b.gpu_index, b.partition_index): c.memory_gb for c in copies for b in c.bindings}
    state = _emulator(node)
    with state.transaction() as data:
        for gpu_index, gpu in enumerate(data["gpus"]):
            replicas = 0
            for part_index, part in enumerate(gpu["partitions"]):
                memory_gb = wanted.get((gpu_index, part_index))
                if memory_gb is None:
                    part["load"], part["vram_used_mb"] = 0.0, 0
                else:
                    part["load"], part["vram_used_mb"] = EMULATED_LOAD, int(memory_gb * 1024)
                    replicas += 1
            external = max(0, int(gpu.get("processes", 0)) - int(gpu.get("console_replicas", 0)))
            gpu["console_replicas"] = replicas
            gpu["processes"] = external + replicas
    now = time.time()
    return {c.key: CopyStatus(key=c.key, state=READY, started_at=now, ready_at=now) for c in copies}


def supervise(node: Node, copies: Sequence[CopySpec]) -> Mapping[str, CopyStatus]:
    """Nothing to watch (no process): when the state file already shows exactly these copies
    (a read, no lock), every copy is ready; otherwise ``reconcile`` writes it."""
    wanted = {(b.gpu_index, b.partition_index): c.memory_gb for c in copies for b in c.bindings}
    data = _emulator(node).data
    for gpu_index, gpu in enumerate(data["gpus"]):
        held = 0
        for part_index, part in enumerate(gpu["partitions"]):
            memory_gb = wanted.pop((gpu_index, part_index), None)
            expected = (0.0, 0) if memory_gb is None else (EMULATED_LOAD, int(memory_gb * 1024))
            held += memory_gb is not None
            if (part.get("load"), part.get("vram_used_mb")) != expected:
                return reconcile(node, copies)
        if int(gpu.get("console_replicas", 0)) != held:
            return reconcile(node, copies)
    if wanted:
        return reconcile(node, copies)  # a copy on a partition the state does not have: reconcile says so
    now = time.time()
    return {c.key: CopyStatus(key=c.key, state=READY, started_at=now, ready_at=now) for c in copies}


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
    if not node.emulated or node.serving_runtime != "emulated" or not getattr(settings, "METRICS_EMULATED_REQUESTS", True):
        return 0  # replicas of the process runtime serve real requests: the gateway counts those
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
