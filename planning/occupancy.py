"""The replicas that placement must work around, and what applying a plan does to them: a port.

Planning knows the fleet (nodes, GPUs, modes, operations) and the pure placement rules, not
deployments. The app that runs replicas (``serving``) registers a provider in its
``AppConfig.ready``; without one the fleet is empty of replicas and plans only repartition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from planning import placement


class ReplicaProvider(Protocol):
    def occupants_for_placement(self, *, node_ids: Sequence[int] | None) -> tuple[placement.Occupant, ...]:
        """Replicas holding partitions (of these nodes; all when None)."""

    def check_names(self, *, names: Sequence[str]) -> dict[str, str]:
        """Errors for demand names that cannot be used (e.g. an active deployment has it)."""

    def apply_plan(self, *, plan: Any, result: dict[str, Any], user: Any) -> list[Any]:
        """Inside apply_plan's transaction: create the plan's new deployments and move its
        displaced replicas. Returns the deployments created or changed."""


_PROVIDERS: list[ReplicaProvider] = []


def register(provider: ReplicaProvider) -> None:
    if provider not in _PROVIDERS:
        _PROVIDERS.append(provider)


def occupants(*, node_ids: Sequence[int] | None = None) -> tuple[placement.Occupant, ...]:
    return tuple(o for p in _PROVIDERS for o in p.occupants_for_placement(node_ids=node_ids))


def check_names(*, names: Sequence[str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for provider in _PROVIDERS:
        errors.update(provider.check_names(names=names))
    return errors


def apply_plan(*, plan: Any, result: dict[str, Any], user: Any) -> list[Any]:
    return [d for p in _PROVIDERS for d in p.apply_plan(plan=plan, result=result, user=user)]
