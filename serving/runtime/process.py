"""The ``process`` runtime: one serving process per replica copy, supervised by the node agent.

The command is the one serving/isolation.py builds (``vllm serve <model> --tensor-parallel-size
… --gpu-memory-utilization … --max-model-len … --served-model-name <deployment> --host … --port
P``), with the partitions' device visibility (``ROCR_VISIBLE_DEVICES``) in its environment and
no shell. ``SERVING_ENGINE_COMMAND`` (or the profile's ``serving_command``) says what runs it.
On emulated nodes the engine emulator (``python -m engine_emulator``, labelled emulated) runs
instead, with the emulated node's amd-smi state file, so its traffic shows in telemetry.

Who supervises: exactly one process per node, the agent's loops process, which owns a
``Supervisor`` (serving/runtime/supervisor.py: start, readiness, restarts with backoff,
graceful stop, adoption after an agent restart) and ticks it every ``SERVING_SUPERVISE_S``
against the database's bound slots. Any other process that reconciles the node (the agent's
Celery worker running a reconfiguration's drain) never starts a copy: it stops the copies that
are no longer bound, through their pid files, and returns when they are gone, so amd-smi never
runs under a live replica. The next tick of the owner sees them gone and not wanted.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from django.conf import settings

from serving.isolation import serving_command, workload_spec
from serving.runtime.base import STARTING, STOPPED, CopySpec, CopyStatus
from serving.runtime.supervisor import ProcessSpec, ProcessStatus, Supervisor, stop_recorded

log = logging.getLogger(__name__)

name = "process"

_SUPERVISORS: dict[str, Supervisor] = {}
_GUARD = threading.Lock()


def root_for(node_name: str) -> Path:
    return Path(settings.SERVING_DIR) / node_name


def supervisor_for(node: object, *, create: bool = False) -> Supervisor | None:
    """This process's supervisor of ``node`` (created, adopting what runs, when ``create``)."""
    node_name = node.name  # type: ignore[attr-defined]
    with _GUARD:
        sup = _SUPERVISORS.get(node_name)
        if sup is None and create:
            root = root_for(node_name)
            root.mkdir(parents=True, exist_ok=True)
            sup = Supervisor(
                root, host=settings.SERVING_HOST, port_range=(settings.SERVING_PORT_MIN, settings.SERVING_PORT_MAX),
                start_timeout_s=settings.SERVING_START_TIMEOUT_S, grace_s=settings.SERVING_STOP_GRACE_S,
                probe_interval_s=settings.SERVING_SUPERVISE_S,
                backoff_base_s=settings.SERVING_BACKOFF_S, backoff_max_s=settings.SERVING_BACKOFF_MAX_S,
                max_crashes=settings.SERVING_MAX_CRASHES, crash_window_s=settings.SERVING_CRASH_WINDOW_S,
            )
            sup.adopt()
            _SUPERVISORS[node_name] = sup
        return sup


def release_supervisor(node_name: str) -> None:
    """Forget this process's supervisor of a node (its processes keep running)."""
    with _GUARD:
        _SUPERVISORS.pop(node_name, None)


def process_spec(node: object, copy: CopySpec) -> ProcessSpec:
    """The argv and environment of one copy on ``node``."""
    spec = workload_spec(bindings=copy.bindings, model_id=copy.model, memory_required_gb=copy.memory_gb,
                         max_model_len=copy.max_model_len, served_model_name=copy.deployment)
    env = dict(spec.env)
    host = settings.SERVING_HOST
    if getattr(node, "emulated", False) and getattr(node, "backend", "") == "emulator":
        argv: tuple[str, ...] = (
            sys.executable, "-m", "engine_emulator", *spec.args, "--host", host, "--port", "{port}",
            "--emulated-params-b", f"{copy.params_b:g}", "--emulated-compute-share", f"{copy.compute_share:.4f}",
            # The whole replica's memory (the need per partition x its partitions).
            "--emulated-memory-gb", f"{copy.memory_gb * len(copy.bindings):.2f}",
            "--time-scale", f"{settings.ENGINE_EMULATOR_TIME_SCALE:g}",
        )
        state_file = (getattr(node, "backend_options", None) or {}).get("state_file")
        if state_file:
            env["AMD_SMI_EMULATOR_STATE"] = str(state_file)
    else:
        argv = serving_command(copy.command or settings.SERVING_ENGINE_COMMAND, spec, model_id=copy.model, host=host, port="{port}")
        env = {**engine_env(settings.SERVING_ENGINE_ENV), **env}  # the console's device visibility wins
    return ProcessSpec(key=copy.key, argv=argv, env=env, served_model=copy.deployment)


def engine_env(items: Sequence[str]) -> dict[str, str]:
    """``SERVING_ENGINE_ENV``'s KEY=VALUE items as a mapping (a malformed item is refused)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not key.strip().replace("_", "").isalnum():
            raise ValueError(f"AIM_SERVING_ENGINE_ENV: {item!r} is not KEY=VALUE")
        out[key.strip()] = value
    return out


def _status(s: ProcessStatus) -> CopyStatus:
    return CopyStatus(key=s.key, state=s.state, endpoint=s.endpoint, pid=s.pid, port=s.port, restarts=s.restarts,
                      reason=s.reason, log_tail=s.log_tail, started_at=s.started_at, ready_at=s.ready_at)


def supervise(node: object, copies: Sequence[CopySpec]) -> Mapping[str, CopyStatus]:
    """The owner's tick: converge on ``copies``, then probe, restart and fail as needed."""
    sup = supervisor_for(node, create=True)
    assert sup is not None
    sup.converge([process_spec(node, c) for c in copies])
    return {key: _status(s) for key, s in sup.poll().items()}


def reconcile(node: object, copies: Sequence[CopySpec]) -> Mapping[str, CopyStatus]:
    """Make the node run exactly ``copies``. In the owner (the process supervising the node)
    that is a converge and a poll (so a drain waiting for a moved copy sees it become ready);
    anywhere else the copies no longer wanted are stopped through their pid
    files (never started: only the owner starts), and the others are reported as the owner
    last recorded them (``starting`` when unknown)."""
    sup = supervisor_for(node)
    if sup is not None:
        sup.converge([process_spec(node, c) for c in copies])
        return {key: _status(s) for key, s in sup.poll().items()}
    wanted = {c.key for c in copies}
    root = root_for(node.name)  # type: ignore[attr-defined]
    stopped = stop_unwanted(root, wanted, grace_s=settings.SERVING_STOP_GRACE_S)
    statuses: dict[str, CopyStatus] = {key: CopyStatus(key=key, state=STOPPED, reason="its slot was freed") for key in stopped}
    for copy in copies:
        statuses[copy.key] = CopyStatus(key=copy.key, state=STARTING)
    return statuses


def stop_unwanted(root: Path, wanted: set[str], *, grace_s: float) -> list[str]:
    """Outside the owner: stop every recorded copy under ``root`` not in ``wanted``.

    The owner re-reads the slots every tick and stops them with its own grace: give it two
    ticks and a half, then stop what is still recorded through the pid files (SIGTERM to the
    session, SIGKILL after ``grace_s``; a reused pid is never signalled). Returns the keys
    stopped; when it returns, none of them runs."""
    if not root.is_dir():
        return []
    doomed = sorted(p.stem for p in root.glob("*.json") if p.stem not in wanted)
    if not doomed:
        return []
    deadline = time.monotonic() + 2.5 * float(settings.SERVING_SUPERVISE_S)
    while time.monotonic() < deadline and any((root / f"{key}.json").exists() for key in doomed):
        time.sleep(0.1)
    stop_recorded(root, wanted, grace_s=grace_s)
    return doomed
