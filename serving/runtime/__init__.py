"""Serving runtimes: how a node starts and stops model replicas (serving/runtime/base.py).

- ``emulated``: replicas simulated in the amd-smi emulator's state (no process; scale tests);
- ``process``: one supervised serving process per replica copy under the node agent (vLLM on
  real nodes, the engine emulator on emulated ones);
- ``kubernetes``: KServe InferenceServices (the Kubernetes serving issue).

A node's ``serving_runtime`` (its ``runtime`` setting, or its backend's default) picks one.
"""

from __future__ import annotations

from typing import Any


def runtime_for(node: Any) -> Any | None:
    """The runtime module that runs ``node``'s replicas, or None when the console cannot
    (an imported node; a Kubernetes node until that runtime exists; the emulated runtime on a
    node that is not an amd-smi emulator)."""
    kind = node.serving_runtime
    if kind == "process" and node.backend in ("amdsmi", "emulator"):
        from serving.runtime import process

        return process
    if kind == "emulated" and node.backend == "emulator":
        from serving.runtime import emulated

        return emulated
    return None
