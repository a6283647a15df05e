"""Workloads on a node's GPUs, for the drain step of a reconfiguration.

Apps that run workloads on partitions register a provider (``register``) in their
``AppConfig.ready``: model deployments do so once they exist. Independently of what the console
knows, the hardware refuses to repartition a GPU that has processes (amd-smi reports BUSY),
and that refusal ends the operation as failed with nothing changed.
"""

from __future__ import annotations

from typing import Any, Protocol


class WorkloadProvider(Protocol):
    def workloads_on(self, *, node: Any, gpu_indices: list[int]) -> list[str]:
        """Names of workloads using partitions of these GPUs."""

    def stop_workloads(self, *, node: Any, gpu_indices: list[int], reason: str) -> list[str]:
        """Stop them (recording why); returns the names stopped."""


_PROVIDERS: list[WorkloadProvider] = []


def register(provider: WorkloadProvider) -> None:
    if provider not in _PROVIDERS:
        _PROVIDERS.append(provider)


def workloads_on(*, node: Any, gpu_indices: list[int]) -> list[str]:
    return [name for p in _PROVIDERS for name in p.workloads_on(node=node, gpu_indices=gpu_indices)]


def stop_workloads(*, node: Any, gpu_indices: list[int], reason: str) -> list[str]:
    return [name for p in _PROVIDERS for name in p.stop_workloads(node=node, gpu_indices=gpu_indices, reason=reason)]
