"""A faithful fake ``amd-smi`` for development and tests (no GPU needed).

Modules: ``cli`` (entry point, argument parsing, I/O), ``commands`` (subcommand execution),
``model`` (hive of GPUs and the hardware rules, from ``partitions.geometry``), ``records``
(per-device dicts by amd-smi version), ``render`` (JSON/CSV/human formats and fixed texts),
``errors`` (where and how failures are reported), ``faults`` (fault injection), ``state``
(state file, locking, Python API: ``EmulatorState``).
"""

from .state import EmulatorState

__all__ = ["EmulatorState"]
