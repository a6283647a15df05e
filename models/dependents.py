"""What depends on the catalog's sizing: a port.

The catalog knows models, precisions and their sized profiles, not what serves them. Apps that
place replicas by a profile's sizing (model deployments, ``serving``) register a provider in
their ``AppConfig.ready``. The catalog calls it after a save changed profiles (in Django admin
and through the catalog API), inside the save's transaction, so that what runs is re-checked
against the new sizing at once (a deployment whose partitions are now too small is marked
degraded by its provider), and the catalog can warn whoever saved:
"1 running deployment no longer fits: demo-chat (needs 96 GiB, its partitions have 24 GiB)".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Misfit:
    """One running workload that its profile's current sizing no longer fits."""

    name: str
    need_gb: float
    """What one replica needs now (per GPU or partition), GiB."""
    have_gb: float
    """The smallest partition (or GPU share) it holds, GiB."""
    detail: str = ""
    """Anything else that no longer holds (e.g. it now needs more GPUs per replica)."""

    def describe(self) -> str:
        text = f"{self.name} (needs {self.need_gb:.4g} GiB, its partitions have {self.have_gb:.4g} GiB"
        return text + (f"; {self.detail})" if self.detail else ")")


class DependentsProvider(Protocol):
    def profiles_changed(self, *, profile_ids: Sequence[int]) -> list[Misfit]:
        """Re-check what runs with these profiles against their current sizing (marking what
        no longer fits); returns those that do not fit."""


_PROVIDERS: list[DependentsProvider] = []


def register(provider: DependentsProvider) -> None:
    if provider not in _PROVIDERS:
        _PROVIDERS.append(provider)


def profiles_changed(*, profile_ids: Sequence[int]) -> list[Misfit]:
    ids = sorted(set(profile_ids))
    if not ids:
        return []
    return [m for p in _PROVIDERS for m in p.profiles_changed(profile_ids=ids)]


def warning(misfits: Sequence[Misfit]) -> str | None:
    """One line for whoever saved, or None when everything still fits."""
    if not misfits:
        return None
    n = len(misfits)
    shown = "; ".join(m.describe() for m in misfits[:5])
    more = f"; and {n - 5} more" if n > 5 else ""
    return f"{n} running deployment{'s' if n != 1 else ''} no longer fit{'s' if n == 1 else ''}: {shown}{more}"
