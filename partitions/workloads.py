"""The workloads that run on partitions, as the hardware layer sees them: a port.

The partitions app knows nodes, GPUs and partitions, not what runs on them. Apps that run
workloads on partitions (model deployments, ``serving``) register a provider in their
``AppConfig.ready``. The hardware layer calls it to:

- drain: list and stop the workloads on GPUs a reconfiguration will change;
- show: name what occupies each partition on the fleet page and in the API;
- reconcile: on a node's agent, after an operation and on every sweep, make the node run what
  the database says;
- supervise: on a node's agent, about every second, watch what runs there (the serving
  runtime's processes: readiness, restarts) and record it;
- sample: on a node's agent, after every telemetry sample (the emulated serving runtime feeds
  its synthetic request metrics there).

Independently of what the console knows, the hardware refuses to repartition a GPU that has
processes (amd-smi reports BUSY), and that refusal ends the operation as failed with nothing
changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from django.db.models import Q


@dataclass(frozen=True)
class Occupant:
    """What holds one partition, for display."""

    name: str
    state: str
    url: str = ""
    memory_gb: float | None = None  # what the replica holds there (its profile's per-device share); None: unknown
    model: str = ""  # the catalog model it serves (Hugging Face id), for metrics by model; "": not a model


@dataclass(frozen=True)
class Holding:
    """A workload and the partitions it holds, as (node name, GPU index, partition index)."""

    name: str
    url: str
    partitions: tuple[tuple[str, int, int], ...]


class WorkloadProvider(Protocol):
    def workloads_on(self, *, node: Any, gpu_indices: list[int]) -> list[str]:
        """Names of workloads using partitions of these GPUs."""

    def stop_workloads(self, *, node: Any, gpu_indices: list[int], reason: str) -> list[str]:
        """Stop them (recording why); returns the names stopped."""

    def occupants(self, *, partition_ids: list[int]) -> dict[int, Occupant]:
        """What occupies each of these partitions (absent: free), in a fixed number of queries."""

    def largest_holders(self, *, limit: int) -> tuple[int, list[Holding]]:
        """How many workloads hold partitions, and the ``limit`` holding the most (then by
        name), each with its partitions: a grouped count, whatever the fleet size."""

    def held_partitions(self) -> Any:
        """The ids of every partition this provider's workloads hold, as a queryset of one
        column (``values("partition_id")``) the hardware layer uses as a subquery, so fleet-wide
        counts and filters stay in the database."""

    def reconcile(self, *, node: Any) -> None:
        """On the node's agent: start and stop what the database says should run there."""

    def supervise(self, *, node: Any) -> None:
        """On the node's agent, about every second: supervise what runs there (readiness,
        restarts) and record it."""

    def after_sample(self, *, node: Any, interval_s: float) -> None:
        """On the node's agent, after each telemetry sample."""

    def shut_down(self, *, node: Any, reason: str) -> None:
        """On the node's agent when it stops for good: stop what runs there (the database keeps
        what should run, so the next agent starts it again)."""


_PROVIDERS: list[WorkloadProvider] = []


def register(provider: WorkloadProvider) -> None:
    if provider not in _PROVIDERS:
        _PROVIDERS.append(provider)


def workloads_on(*, node: Any, gpu_indices: list[int]) -> list[str]:
    return [name for p in _PROVIDERS for name in p.workloads_on(node=node, gpu_indices=gpu_indices)]


def stop_workloads(*, node: Any, gpu_indices: list[int], reason: str) -> list[str]:
    return [name for p in _PROVIDERS for name in p.stop_workloads(node=node, gpu_indices=gpu_indices, reason=reason)]


def occupants(*, partition_ids: list[int]) -> dict[int, Occupant]:
    found: dict[int, Occupant] = {}
    for provider in _PROVIDERS:
        found.update(provider.occupants(partition_ids=partition_ids))
    return found


def largest_holders(*, limit: int) -> tuple[int, list[Holding]]:
    """How many workloads hold partitions, and the ``limit`` holding the most (all providers)."""
    total, found = 0, []
    for provider in _PROVIDERS:
        count, holders = provider.largest_holders(limit=limit)
        total += count
        found += holders
    return total, sorted(found, key=lambda h: (-len(h.partitions), h.name))[:limit]


def held_filter(field: str = "pk") -> Q:
    """``Q`` matching rows whose ``field`` (a partition id) some workload holds; ``~`` it for
    free partitions. One subquery per provider, nothing read into Python."""
    q = Q(**{f"{field}__in": []})  # no provider: nothing is held
    for provider in _PROVIDERS:
        q |= Q(**{f"{field}__in": provider.held_partitions()})
    return q


def attach_occupants(partitions: list[Any]) -> dict[int, Occupant]:
    """For pages: set ``occupant`` (an Occupant, or None when free) on each partition row, in
    one call to the providers; returns the occupants by partition id."""
    held = occupants(partition_ids=[p.pk for p in partitions])
    for part in partitions:
        part.occupant = held.get(part.pk)
    return held


def reconcile(*, node: Any) -> None:
    for provider in _PROVIDERS:
        provider.reconcile(node=node)


def supervise(*, node: Any) -> None:
    for provider in _PROVIDERS:
        provider.supervise(node=node)


def shut_down(*, node: Any, reason: str) -> None:
    for provider in _PROVIDERS:
        provider.shut_down(node=node, reason=reason)


def after_sample(*, node: Any, interval_s: float) -> None:
    for provider in _PROVIDERS:
        provider.after_sample(node=node, interval_s=interval_s)
