"""Hardware backends: what the console uses to read and change GPU partitioning.

``get_backend(kind=None, **options)`` returns an object satisfying :class:`Backend`:

* ``"amdsmi"``    - :class:`~partitions.backends.amdsmi.AmdSmiBackend` over the real CLI.
* ``"emulator"``  - the same class pointed at the amd-smi emulator (``python -m
  amdsmi_emulator``); option ``state_file`` sets ``AMD_SMI_EMULATOR_STATE``.
* ``"simulated"`` - the in-process :class:`~partitions.backends.simulated.SimulatedBackend`.
* a dotted path ``package.module.Name`` - a class or factory called with ``options`` whose
  result satisfies :class:`Backend`.

Without ``kind`` the setting ``PARTITION_BACKEND`` (one of the above; default "amdsmi")
decides: it is the implementation that drives real-hardware nodes (``partitions.services.
inventory.backend_for``). A value that names no backend raises ImproperlyConfigured.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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


def configured_backend() -> str:
    """The ``PARTITION_BACKEND`` setting (a backend kind or a dotted path)."""
    from django.conf import settings

    return str(getattr(settings, "PARTITION_BACKEND", "amdsmi"))


def get_backend(kind: str | None = None, **options: Any) -> Backend:
    """A backend of ``kind`` ("amdsmi", "emulator", "simulated" or a dotted path) built from
    ``options`` (the constructor arguments of that backend); ``kind=None``: the
    ``PARTITION_BACKEND`` setting, where a bad value raises ImproperlyConfigured."""
    if kind is None:
        from django.core.exceptions import ImproperlyConfigured

        value = configured_backend()
        try:
            return _build(value, options)
        except _BadBackend as exc:
            raise ImproperlyConfigured(f"PARTITION_BACKEND={value!r}: {exc}") from exc
    try:
        return _build(kind, options)
    except _BadBackend as exc:
        raise ValueError(str(exc)) from exc


class _BadBackend(Exception):
    pass


def _build(kind: str, options: dict[str, Any]) -> Backend:
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
        from partitions.backends.simulated import SimulatedBackend

        return SimulatedBackend(**options)
    if "." not in kind.strip(". "):
        raise _BadBackend(f"{kind!r} is not a known backend; expected one of {', '.join(BACKEND_KINDS)} "
                          "or a dotted path to a backend class")
    module_name, _, name = kind.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise _BadBackend(f"{kind!r} cannot be imported ({exc})") from exc
    backend = factory(**options)
    if not isinstance(backend, Backend):
        raise _BadBackend(f"{kind!r} does not implement the Backend protocol "
                          "(version, list_devices, inventory, set_compute_mode, set_memory_mode, ...)")
    return backend


__all__ = ["BACKEND_KINDS", "Backend", "configured_backend", "emulator_argv", "get_backend"]
