"""Telemetry through AMD's ``amdsmi`` Python library, in-process: no ``amd-smi`` process per
sample. ROCm ships the library (``/opt/rocm/share/amd_smi``, or ``pip install`` of it); where it
does not import, the backend reads ``amd-smi metric`` as before.

``library``: ``"auto"`` imports ``amdsmi`` from the normal import path (real nodes); a folder
imports the ``amdsmi`` package found there, e.g. the emulator's face
(``amdsmi_emulator/pylib``, :func:`emulator_library_path`). Each (folder, emulator binding) gets
its own module instance, kept under a private name so that it never shadows a real ``amdsmi``.

Calls, names and return shapes: ROCm/amdsmi ``py-interface/amdsmi_interface.py``
(``amdsmi_get_gpu_activity``, ``amdsmi_get_gpu_metrics_info``'s ``xcp_stats.gfx_busy_inst``,
``amdsmi_get_power_info``, ``amdsmi_get_temp_metric``, ``amdsmi_get_gpu_memory_total/usage`` in
bytes, ``amdsmi_get_gpu_total_ecc_count``, ``amdsmi_get_gpu_compute_partition`` to notice a
re-partition), mapped the way the CLI's ``metric`` command maps
them, so both paths give the same :class:`Metrics`. The handles' order is amd-smi's ``gpu``
index. No Django here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from partitions.backends.types import Metrics

log = logging.getLogger(__name__)

AUTO = "auto"
_EMULATOR_ENV_PREFIX = "AMD_SMI_EMULATOR_"
_MODULES: dict[tuple[str, tuple[tuple[str, str], ...]], ModuleType | None] = {}
_LOCK = threading.Lock()  # loading and init touch sys.modules and (emulator) os.environ


def emulator_library_path() -> str:
    """The folder holding the amd-smi emulator's ``amdsmi`` face."""
    return str(Path(__file__).resolve().parents[2] / "amdsmi_emulator" / "pylib")


def forget_libraries() -> None:
    """Drop the loaded library modules (tests)."""
    with _LOCK:
        for name in [n for n in sys.modules if n.startswith("_aim_amdsmi_")]:
            del sys.modules[name]
        _MODULES.clear()


def load_library(library: str, binding: Mapping[str, str] | None = None) -> ModuleType | None:
    """The ``amdsmi`` module for ``library`` ("auto" or a folder), or None when it does not
    import. ``binding``: the emulator environment the module is initialised under (emulated
    nodes; several can share a process, each with its own module instance)."""
    key = (library, tuple(sorted((binding or {}).items())))
    with _LOCK:
        if key in _MODULES:
            return _MODULES[key]
        module = _import(library, key)
        _MODULES[key] = module
        return module


def _import(library: str, key: tuple[object, ...]) -> ModuleType | None:
    try:
        if library == AUTO:
            return importlib.import_module("amdsmi")
        spec = importlib.machinery.PathFinder.find_spec("amdsmi", [library])
        if spec is None or spec.loader is None:
            log.info("no amdsmi package in %s: telemetry reads the amd-smi CLI", library)
            return None
        name = "_aim_amdsmi_" + hashlib.sha256(repr(key).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, spec.origin,
                                                      submodule_search_locations=spec.submodule_search_locations)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    except Exception as exc:  # ImportError, or the C library failing to load (OSError)
        log.info("amdsmi library %s does not import (%s): telemetry reads the amd-smi CLI", library, exc)
        return None


@contextlib.contextmanager
def _environment(binding: Mapping[str, str]) -> Iterator[None]:
    """Set ``binding`` in os.environ while the emulated library initialises (it reads its state
    file from there, as the CLI emulator does), then restore."""
    saved = {k: os.environ.get(k) for k in binding}
    os.environ.update(binding)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LibraryTelemetry:
    """Metrics of one node through the ``amdsmi`` library.

    Initialised on first use; re-initialised (shut down, init: the device list is fixed at
    init) after a library error, after :meth:`invalidate` (a change through this backend) and
    when a device's compute partition differs from the one seen at init (a re-partition made
    elsewhere), and every ``refresh_s`` in any case. A sample the library cannot give returns
    None: the caller reads the CLI instead."""

    def __init__(self, library: str, *, env: Mapping[str, str] | None = None, emulated: bool = False,
                 refresh_s: float = 60.0) -> None:
        self.library = library
        self.binding = {k: str(v) for k, v in (env or {}).items() if k.startswith(_EMULATOR_ENV_PREFIX)} \
            if emulated else {}
        self.refresh_s = float(refresh_s)
        self._module: ModuleType | None = None
        self._handles: list[Any] | None = None
        self._modes: list[str | None] = []  # each handle's compute partition at init
        self._init_at = 0.0
        self._failed = False

    def available(self) -> bool:
        """Whether the library imports (loads it)."""
        return self._lib() is not None

    def invalidate(self) -> None:
        """The layout may have changed: enumerate the devices again before the next sample."""
        self._shut_down()

    def metrics(self, logical_indices: Iterable[int] | None = None) -> tuple[Metrics, ...] | None:
        lib = self._lib()
        if lib is None:
            return None
        wanted = None if logical_indices is None else {int(i) for i in logical_indices}
        if wanted is not None and not wanted:
            return ()
        for attempt in range(2):
            try:
                handles = self._ensure_handles(lib)
                if wanted is not None and not wanted <= set(range(len(handles))):
                    if attempt == 0:  # devices appeared since init: enumerate again
                        self._shut_down()
                        continue
                    return None  # the CLI names the missing device
                return tuple(_metrics(lib, index, handle) for index, handle in enumerate(handles)
                             if wanted is None or index in wanted)
            except lib.AmdSmiException as exc:
                log.info("amdsmi library call failed (%s): re-initialising", exc)
                self._shut_down()
        return None

    # --- plumbing ------------------------------------------------------------------------
    def _lib(self) -> ModuleType | None:
        if self._module is None and not self._failed:
            self._module = load_library(self.library, self.binding)
            self._failed = self._module is None
        return self._module

    def _ensure_handles(self, lib: ModuleType) -> list[Any]:
        if self._handles is not None and time.monotonic() - self._init_at > self.refresh_s:
            self._shut_down()
        if self._handles is None:
            with _LOCK, _environment(self.binding):
                lib.amdsmi_init(lib.AmdSmiInitFlags.INIT_AMD_GPUS)
            self._handles = list(lib.amdsmi_get_processor_handles())
            self._modes = [_compute_partition(lib, h) for h in self._handles]
            self._init_at = time.monotonic()
        elif [_compute_partition(lib, h) for h in self._handles] != self._modes:
            # Re-partitioned elsewhere (the runner runs in another process): the devices
            # enumerated at init no longer match. In-process calls, no tool started.
            self._shut_down()
            return self._ensure_handles(lib)
        return self._handles

    def _shut_down(self) -> None:
        if self._handles is None or self._module is None:
            self._handles = None
            return
        self._handles = None
        try:
            self._module.amdsmi_shut_down()
        except Exception as exc:  # already down (driver reloaded)
            log.debug("amdsmi_shut_down: %s", exc)


def _metrics(lib: ModuleType, index: int, handle: Any) -> Metrics:
    """One logical device, as ``amd-smi metric -u -m -p -t -e`` reports it: a value the
    library cannot read is None (the CLI prints N/A)."""

    def call(name: str, *args: Any) -> Any:
        try:
            return getattr(lib, name)(handle, *args)
        except lib.AmdSmiLibraryException:
            return None

    activity = call("amdsmi_get_gpu_activity")
    busy: dict[int, tuple[float | None, ...]] = {}
    if activity is not None:  # the CLI reports per-XCP activity inside its usage section
        info = call("amdsmi_get_gpu_metrics_info") or {}
        count = info.get("num_partition")
        if isinstance(count, int):
            rows = info.get("xcp_stats.gfx_busy_inst") or []
            busy = {k: tuple(_number(v) for v in rows[k]) for k in range(min(count, len(rows)))}
    power = call("amdsmi_get_power_info") or {}
    socket = _number(power.get("current_socket_power"))
    if socket is None:
        socket = _number(power.get("average_socket_power"))
    ecc = call("amdsmi_get_gpu_total_ecc_count") or {}
    total = call("amdsmi_get_gpu_memory_total", lib.AmdSmiMemoryType.VRAM)
    used = call("amdsmi_get_gpu_memory_usage", lib.AmdSmiMemoryType.VRAM)
    current = lib.AmdSmiTemperatureMetric.CURRENT
    return Metrics(
        logical_index=index,
        gfx_activity=_number((activity or {}).get("gfx_activity")),
        umc_activity=_number((activity or {}).get("umc_activity")),
        gfx_busy_inst=busy,
        vram_used_mb=None if used is None else int(used) // (1024 * 1024),
        vram_total_mb=None if total is None else int(total) // (1024 * 1024),
        power_w=socket,
        temperature_hotspot_c=_number(call("amdsmi_get_temp_metric", lib.AmdSmiTemperatureType.HOTSPOT, current)),
        temperature_mem_c=_number(call("amdsmi_get_temp_metric", lib.AmdSmiTemperatureType.VRAM, current)),
        ecc_correctable=_int(ecc.get("correctable_count")),
        ecc_uncorrectable=_int(ecc.get("uncorrectable_count")),
        ecc_deferred=_int(ecc.get("deferred_count")),
    )


def _compute_partition(lib: ModuleType, handle: Any) -> str | None:
    try:
        return str(lib.amdsmi_get_gpu_compute_partition(handle))
    except lib.AmdSmiException:
        return None


def _number(value: Any) -> float | None:
    if value is None or value == "N/A" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


__all__ = ["AUTO", "LibraryTelemetry", "emulator_library_path", "forget_libraries", "load_library"]
