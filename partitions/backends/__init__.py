"""Hardware backends: what the console uses to read and change GPU partitioning.

``get_backend(kind, **options)`` returns an object satisfying :class:`Backend`:

* ``"amdsmi"``    - :class:`~partitions.backends.amdsmi.AmdSmiBackend` over the real CLI.
* ``"emulator"``  - the same class pointed at the amd-smi emulator (``python -m
  amdsmi_emulator``); option ``state_file`` sets ``AMD_SMI_EMULATOR_STATE``.
* ``"simulated"`` - an in-process backend (``partitions.backends.simulated``, not part of
  this module; plugged in here when it exists).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

from partitions.backends.types import (
    LogicalDevice,
    Metrics,
    NodeInventory,
    PartitionState,
    StaticInfo,
    ToolVersion,
)


@runtime_checkable
class Backend(Protocol):
    """What every hardware backend offers. Changes return the inventory read back after the
    change (never unverified); failures raise the typed errors of ``errors.py``."""

    def version(self) -> ToolVersion: ...

    def list_devices(self) -> tuple[LogicalDevice, ...]: ...

    def static_info(self) -> tuple[StaticInfo, ...]: ...

    def partition_state(self) -> tuple[PartitionState, ...]: ...

    def metrics(self, logical_indices: Iterable[int] | None = None) -> tuple[Metrics, ...]: ...

    def inventory(self) -> NodeInventory: ...

    def set_compute_mode(self, gpu_indices: list[int], mode: str) -> NodeInventory: ...

    def set_memory_mode(self, mode: str) -> NodeInventory: ...


BACKEND_KINDS = ("amdsmi", "emulator", "simulated")
_REPO_ROOT = Path(__file__).resolve().parents[2]


def emulator_argv() -> list[str]:
    """argv that runs the amd-smi emulator with this interpreter (works without installing
    the console script ``amd-smi-emulator``)."""
    return [sys.executable, "-m", "amdsmi_emulator"]


def get_backend(kind: str, **options) -> Backend:
    """A backend of ``kind`` ("amdsmi", "emulator", "simulated") built from ``options``
    (the constructor arguments of that backend)."""
    if kind == "amdsmi":
        from partitions.backends.amdsmi import AmdSmiBackend

        return AmdSmiBackend(**options)
    if kind == "emulator":
        from partitions.backends.amdsmi import AmdSmiBackend

        env = {str(k): str(v) for k, v in (options.pop("env", None) or {}).items()}
        state_file = options.pop("state_file", None)
        if state_file:
            env["AMD_SMI_EMULATOR_STATE"] = os.fspath(state_file)
        # make `python -m amdsmi_emulator` importable from any working directory
        path = env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), path) if p)
        binary = options.pop("binary", None) or emulator_argv()
        argv = [binary] if isinstance(binary, (str, os.PathLike)) else list(binary)
        reload_command = options.pop("reload_command", None) or [*argv, "emulator", "reload-driver"]
        options.setdefault("emulated", True)
        return AmdSmiBackend(binary=argv, env=env, reload_command=reload_command, **options)
    if kind == "simulated":
        try:
            from partitions.backends.simulated import SimulatedBackend  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ValueError("the simulated backend is not available yet") from exc
        return SimulatedBackend(**options)
    raise ValueError(f"unknown backend kind {kind!r}; expected one of {', '.join(BACKEND_KINDS)}")


__all__ = ["BACKEND_KINDS", "Backend", "emulator_argv", "get_backend"]
