"""What every serving runtime offers the node agent: run exactly these replica copies, and say
how each one is doing. Plain Python (no Django): the runtimes' Django side (which reads the
bound slots and writes ``Replica`` rows, serving/services.py) passes these dataclasses in.

A *copy* is one running instance of a deployment's replica on its partitions (a replica moving
make-before-break has two for a while). Its ``key`` is stable for as long as it keeps those
partitions, so a runtime can tell "already running" from "new".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from serving.isolation import DeviceBinding

STARTING, READY, RESTARTING, FAILED, STOPPED = "starting", "ready", "restarting", "failed", "stopped"
LIVE_STATES = (STARTING, READY, RESTARTING)


@dataclass(frozen=True)
class CopySpec:
    """One replica copy the node should run."""

    key: str
    deployment: str  # the deployment's name: what the copy's server answers to
    replica: int
    model: str  # the catalog model id (Hugging Face id)
    bindings: tuple[DeviceBinding, ...]
    memory_gb: float  # what the replica needs on each of its partitions (GiB)
    max_model_len: int
    params_b: float  # model size (billions of parameters), for the engine emulator's timing
    compute_share: float  # the partition's share of its GPU's compute (1/8 for an MI300X CPX partition)
    command: str = ""  # a per-profile override of the serving command ("" = the setting's default)


@dataclass(frozen=True)
class CopyStatus:
    """How one copy is doing, as its runtime sees it."""

    key: str
    state: str  # STARTING | READY | RESTARTING | FAILED | STOPPED
    endpoint: str = ""  # base URL of its OpenAI-compatible server ("" when it has none)
    pid: int | None = None
    port: int | None = None
    restarts: int = 0
    reason: str = ""
    log_tail: str = ""
    started_at: float | None = None  # epoch seconds
    ready_at: float | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


class Runtime(Protocol):
    name: str

    def reconcile(self, node: object, copies: Sequence[CopySpec]) -> Mapping[str, CopyStatus]:
        """Make ``node`` run exactly ``copies`` (level-triggered, idempotent) and return the
        status of each of them. Copies not listed are stopped before this returns (a
        reconfiguration relies on it before it changes their GPU)."""
        ...

    def supervise(self, node: object, copies: Sequence[CopySpec]) -> Mapping[str, CopyStatus]:
        """One supervision tick on the node's agent (about every second): ``reconcile`` plus
        readiness probes, restarts and failure detection where the runtime has processes."""
        ...
