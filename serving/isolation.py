"""Workload isolation: what a model server on given partitions needs to see only them.

Pure Python. Facts used (ROCm, vLLM):
- ``ROCR_VISIBLE_DEVICES`` selects GPU agents by their index in the node's enumeration — the
  node-global logical index amd-smi prints (a CPX MI300X contributes 8). ``HIP_VISIBLE_DEVICES``
  does the same at the HIP layer, but counts only the devices ROCr left visible: set one of the
  two, not both with global indices (that combination hides every device but the first).
- A container sees a GPU only through ``/dev/kfd`` (compute) and the partition's render node
  ``/dev/dri/renderD<N>``; with only those passed in, the partitions are numbered 0..n-1 inside
  the container, so no visibility variable is needed there.
- vLLM: ``--gpu-memory-utilization`` is the fraction of the device's memory the engine may take
  (weights, KV cache, activations); ``--tensor-parallel-size`` the GPUs one replica spans;
  ``--max-model-len`` the context it reserves KV cache for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# vLLM refuses to start when the requested memory exceeds what is free; leave room for the
# HIP context of other processes on a shared pool.
MAX_GPU_MEMORY_UTILIZATION = 0.95
MIN_GPU_MEMORY_UTILIZATION = 0.05


class IsolationError(ValueError):
    pass


@dataclass(frozen=True)
class DeviceBinding:
    """One partition a replica runs on."""

    node: str
    gpu_index: int
    partition_index: int
    logical_index: int  # node-global (what amd-smi, ROCR_VISIBLE_DEVICES count)
    render_node: str | None  # "renderD130"
    memory_gb: float  # partition memory, GiB


@dataclass(frozen=True)
class WorkloadSpec:
    """Everything a deployer needs to start one replica on its partitions."""

    env: dict[str, str]
    """For a process on the host that can see every GPU."""
    alternative_env: dict[str, str]
    """The same selection at the HIP layer (use instead of ``env``, never both)."""
    devices: tuple[str, ...]
    """Device nodes to pass into a container (only these: then no visibility variable)."""
    args: tuple[str, ...]
    """``vllm serve`` arguments."""
    container: dict[str, Any]
    """A container spec fragment (docker-compose style keys)."""
    notes: tuple[str, ...] = field(default_factory=tuple)


def gpu_memory_utilization(memory_required_gb: float, partition_memory_gb: float) -> float:
    """The vLLM fraction that gives the model what sizing says it needs: need / partition,
    rounded up to 0.01 and capped at 0.95."""
    if memory_required_gb <= 0 or partition_memory_gb <= 0:
        raise IsolationError("memory figures must be positive")
    if memory_required_gb > partition_memory_gb:
        raise IsolationError(
            f"needs {memory_required_gb:.1f} GiB but the partition has {partition_memory_gb:.1f} GiB"
        )
    fraction = math.ceil(memory_required_gb / partition_memory_gb * 100) / 100
    return max(MIN_GPU_MEMORY_UTILIZATION, min(MAX_GPU_MEMORY_UTILIZATION, fraction))


def workload_spec(
    *,
    bindings: Sequence[DeviceBinding],
    model_id: str,
    memory_required_gb: float,
    max_model_len: int,
    served_model_name: str | None = None,
    max_num_seqs: int | None = None,
) -> WorkloadSpec:
    """The isolation settings and serving arguments for one replica on ``bindings``.

    ``memory_required_gb`` is the per-partition need (for tensor parallelism: per GPU).
    ``max_num_seqs``: the sequences served at once that the KV cache was sized for
    (``--max-num-seqs``; None leaves the engine's default). All bindings must be on one node.
    """
    if not bindings:
        raise IsolationError("a replica needs at least one partition")
    nodes = {b.node for b in bindings}
    if len(nodes) != 1:
        raise IsolationError(f"a replica's partitions must be on one node, got {sorted(nodes)}")
    if max_model_len <= 0:
        raise IsolationError("max_model_len must be positive")
    if max_num_seqs is not None and max_num_seqs <= 0:
        raise IsolationError("max_num_seqs must be positive")
    ordered = sorted(bindings, key=lambda b: b.logical_index)
    indices = ",".join(str(b.logical_index) for b in ordered)
    smallest = min(b.memory_gb for b in ordered)
    utilization = gpu_memory_utilization(memory_required_gb, smallest)
    notes = []
    if utilization >= MAX_GPU_MEMORY_UTILIZATION:
        notes.append("tight fit: the model needs at least 95% of the partition's memory")
    missing = [b for b in ordered if not b.render_node]
    if missing:
        notes.append("render node unknown for logical devices "
                     + ", ".join(str(b.logical_index) for b in missing) + " (amd-smi list -e did not report it)")
    args = [
        model_id,
        "--tensor-parallel-size", str(len(ordered)),
        "--gpu-memory-utilization", f"{utilization:.2f}",
        "--max-model-len", str(max_model_len),
    ]
    if max_num_seqs is not None:
        args += ["--max-num-seqs", str(max_num_seqs)]
    if served_model_name:
        args += ["--served-model-name", served_model_name]
    devices = ("/dev/kfd", *(f"/dev/dri/{b.render_node}" for b in ordered if b.render_node))
    container = {
        "command": ["vllm", "serve", *args],
        "devices": list(devices),
        "group_add": ["video", "render"],
        "environment": {},
    }
    return WorkloadSpec(
        env={"ROCR_VISIBLE_DEVICES": indices},
        alternative_env={"HIP_VISIBLE_DEVICES": indices},
        devices=devices,
        args=tuple(args),
        container=container,
        notes=tuple(notes),
    )


DEFAULT_ENGINE_COMMAND = "vllm serve {model}"


def serving_command(template: str, spec: WorkloadSpec, *, model_id: str, host: str, port: str) -> tuple[str, ...]:
    """The argv that starts one replica's server: ``template`` split like a shell would (no
    shell runs it), with ``{model}`` in any word replaced by ``model_id`` after splitting (so a
    model id cannot add words), then the spec's arguments, ``--host`` and ``--port``.

    ``vllm serve {model}`` takes the model as its first argument; a template without
    ``{model}`` (e.g. ``python -m vllm.entrypoints.openai.api_server``) gets ``--model``.
    """
    import shlex

    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise IsolationError(f"serving command {template!r}: {exc}") from None
    if not words:
        raise IsolationError("the serving command is empty")
    named = any("{model}" in w for w in words)
    argv = [w.replace("{model}", model_id) for w in words]
    args = list(spec.args)
    if args and args[0] == model_id:
        args = args[1:]
    if not named:
        argv += ["--model", model_id]
    return (*argv, *args, "--host", host, "--port", port)
