"""Emulator state file: locking, atomic writes and a small Python API for tests and demos.

State file (JSON, one per emulated node)::

    {
      "format": 1,
      "gpu_model": "MI300X",           # a model of partitions.geometry.SPECS
      "rocm": "7.1",                   # emulated ROCm/amd-smi version
      "root": true,                    # false = amd-smi runs without sudo
      "reloading_until": 0,            # epoch s; while in the future amdgpu is "unloaded"
      "gpus": [                        # physical GPUs, all in one XGMI hive
        {"bus": "0c", "serial": "0x39BC...", "oam_id": 2,
         "compute_mode": "SPX", "memory_mode": "NPS1", "pending_memory_mode": null,
         "processes": 0,               # > 0: GPU busy (compute/NPS changes refused)
         "engine_pids": [],            # live pids of serving processes: busy too (engines.py)
         "ecc": {"correctable": 0, "uncorrectable": 0, "deferred": 0},
         "partitions": [{"load": 0.0, "vram_used_mb": 283}]}   # one per partition
                                       # (+ "engine_pid" while an engine holds it)
      ],
      "faults": [ {fault}, ... ],      # see faults.py
      "env_fault_uses": {},            # use counts of AMD_SMI_EMULATOR_FAULT faults with "times"
      "quirks": [],                    # opt-in real bugs, e.g. "argparse_char_choices" (6.4.0)
      "extra_pairs": [],               # opt-in firmware pairs, e.g. [["DPX", "NPS2"]]
      "missing_groups": [],            # non-root user lacks these of render, video
      "background_reload": null        # 6.1/6.2 set -M: {"at": epoch s, "seconds": s} (see commands.py)
    }

A missing file is created from the environment: ``AMD_SMI_EMULATOR_GPU`` (MI300X),
``AMD_SMI_EMULATOR_COUNT`` (8), ``AMD_SMI_EMULATOR_ROCM`` (7.1), ``AMD_SMI_EMULATOR_NONROOT=1``.
Every read-modify-write holds an exclusive ``fcntl.flock`` on ``<file>.lock`` and replaces the
file atomically (temp file + ``os.replace``); that plumbing lives in ``statefile.py`` so that the
engine emulator can share the lock without importing the hive model.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .model import Hive, new_hive, resize_partitions
from .statefile import locked, read, write

__all__ = ["EmulatorState", "default_path", "locked", "read", "read_or_create", "write"]

ENV_STATE = "AMD_SMI_EMULATOR_STATE"
DEFAULT_GPU = "MI300X"
DEFAULT_COUNT = 8
DEFAULT_ROCM = "7.1"


def _env_defaults() -> dict:
    return {
        "gpu_model": os.environ.get("AMD_SMI_EMULATOR_GPU", DEFAULT_GPU),
        "count": int(os.environ.get("AMD_SMI_EMULATOR_COUNT", DEFAULT_COUNT)),
        "rocm": os.environ.get("AMD_SMI_EMULATOR_ROCM", DEFAULT_ROCM),
        "root": os.environ.get("AMD_SMI_EMULATOR_NONROOT", "") not in ("1", "true", "yes"),
    }


def default_path() -> Path:
    return Path(os.environ.get(ENV_STATE) or Path(tempfile.gettempdir()) / "amd-smi-emulator.json")


def read_or_create(path: Path) -> dict:
    """Call with the lock held."""
    data = read(path)
    if data is None:
        env = _env_defaults()
        data = new_hive(env["gpu_model"], env["count"], env["rocm"], env["root"])
        write(path, data)
    return data


class EmulatorState:
    """Handle on one state file. Mutators lock, re-read, change and write the file; readers
    always read the file afresh, so a handle never goes stale."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, path, gpu_model: str = DEFAULT_GPU, count: int = DEFAULT_COUNT,
               rocm: str = DEFAULT_ROCM, root: bool = True, **extra) -> EmulatorState:
        state = cls(path)
        data = new_hive(gpu_model, count, rocm, root)
        data.update(extra)
        with locked(state.path):
            write(state.path, data)
        return state

    @classmethod
    def load(cls, path) -> EmulatorState:
        """Open an existing state file, or create it from the environment if missing."""
        state = cls(path)
        with locked(state.path):
            read_or_create(state.path)
        return state

    # -- plumbing -----------------------------------------------------------------------
    @property
    def data(self) -> dict:
        data = read(self.path)
        if data is None:
            raise FileNotFoundError(self.path)
        return data

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict]:
        with locked(self.path):
            data = read_or_create(self.path)
            yield data
            write(self.path, data)

    def hive(self) -> Hive:
        return Hive(self.data)

    # -- queries ------------------------------------------------------------------------
    def compute_mode(self, gpu: int) -> str:
        return self.hive().compute_mode(gpu)

    def memory_mode(self) -> str:
        """Current NPS mode of the hive (that of GPU 0)."""
        return self.hive().memory_mode(0)

    def memory_modes(self) -> list[str]:
        return [g["memory_mode"] for g in self.data["gpus"]]

    def pending_memory_mode(self) -> str | None:
        return self.hive().pending_memory_mode(0)

    def logical_count(self) -> int:
        return len(self.hive().devices())

    def devices(self):
        return self.hive().devices()

    def faults(self) -> list[dict]:
        return list(self.data.get("faults", []))

    # -- mutators -----------------------------------------------------------------------
    def set_load(self, gpu: int, partition: int, load: float, vram_used_mb: int | None = None) -> None:
        if not 0.0 <= float(load) <= 1.0:
            raise ValueError("load must be within 0..1")
        with self.transaction() as data:
            part = data["gpus"][gpu]["partitions"][partition]
            part["load"] = float(load)
            if vram_used_mb is not None:
                part["vram_used_mb"] = int(vram_used_mb)

    def set_processes(self, gpu: int, n: int) -> None:
        with self.transaction() as data:
            data["gpus"][gpu]["processes"] = int(n)

    def set_ecc(self, gpu: int, correctable: int = 0, uncorrectable: int = 0, deferred: int = 0) -> None:
        with self.transaction() as data:
            data["gpus"][gpu]["ecc"] = {"correctable": int(correctable),
                                        "uncorrectable": int(uncorrectable),
                                        "deferred": int(deferred)}

    def add_fault(self, fault: dict) -> None:
        from .faults import validate

        validate(fault)
        with self.transaction() as data:
            data.setdefault("faults", []).append(dict(fault))

    def clear_faults(self) -> None:
        with self.transaction() as data:
            data["faults"] = []

    def set_root(self, root: bool) -> None:
        with self.transaction() as data:
            data["root"] = bool(root)

    def set_missing_groups(self, groups: list[str]) -> None:
        """The (non-root) user is not in these groups of render, video."""
        with self.transaction() as data:
            data["missing_groups"] = [str(g) for g in groups]

    def set_modes(self, compute: str | None = None, memory: str | None = None) -> None:
        """Force modes directly (test setup; no rules applied beyond geometry's pair check)."""
        with self.transaction() as data:
            hive = Hive(data)
            for g in data["gpus"]:
                if memory:
                    g["memory_mode"] = memory
                    g["pending_memory_mode"] = None
                mode = compute or hive.derived_compute(g["memory_mode"])
                if (mode, g["memory_mode"]) not in hive.allowed_pairs():
                    raise ValueError(f"{hive.spec.model} cannot run {mode}+{g['memory_mode']}")
                g["compute_mode"] = mode
                resize_partitions(g, hive.spec)

    def reload_driver(self) -> None:
        with self.transaction() as data:
            Hive(data).reload_driver()
