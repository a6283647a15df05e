"""Pure helpers shaping catalog data for the pages (no queries here)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from partitions.geometry import GpuSpec


@dataclass(frozen=True)
class FitCell:
    precision: str
    memory_gb: float | None
    smallest_partition: str | None
    gpus_needed: int | None
    partition_gb: float | None

    @property
    def css(self) -> str:
        if self.memory_gb is None:
            return "fit-none"
        if self.smallest_partition:
            return f"fit-{self.smallest_partition.lower()}"
        return "fit-multi"

    @property
    def label(self) -> str:
        if self.memory_gb is None:
            return "—"
        if self.smallest_partition:
            return self.smallest_partition
        return f"{self.gpus_needed}× GPU"


@dataclass(frozen=True)
class FitRow:
    model: Any
    cells: tuple[FitCell, ...]


def fit_matrix(models: Sequence[Any], precisions: Sequence[Any], profiles: Iterable[Any], spec: GpuSpec) -> list[FitRow]:
    """Rows of (model, one cell per precision) from default profiles of one GPU model."""
    by_key = {(p.model_id, p.precision.code): p for p in profiles}
    rows = []
    for model in models:
        cells = []
        for precision in precisions:
            profile = by_key.get((model.pk, precision.code))
            mode = profile.smallest_partition if profile else None
            cells.append(
                FitCell(
                    precision=precision.code,
                    memory_gb=profile.memory_required_gb if profile else None,
                    smallest_partition=mode,
                    gpus_needed=profile.gpus_needed if profile else None,
                    partition_gb=spec.smallest_partition_gb(mode) if mode else None,
                )
            )
        rows.append(FitRow(model=model, cells=tuple(cells)))
    return rows
