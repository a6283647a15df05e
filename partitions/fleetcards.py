"""Pure rules of the fleet page's GPU cards: a GPU's health, and its memory bars (allocated
versus used). No Django: the views hand in what they read.

Health is one of ``healthy``, ``unknown`` or ``unhealthy``, with the reasons that decided it:

- ``unhealthy``: marked so in the inventory (a failed operation left it in an unknown state,
  or a health check found it off its expected layout), or its fresh telemetry reports
  uncorrectable ECC (RAS) errors or a hotspot at or above ``HOT_C``;
- ``unknown``: nothing fresh to judge by: the node's agent is down, there is no telemetry
  snapshot, the snapshot is stale, or it has no sample of this GPU;
- ``healthy``: otherwise (an agent alive, a fresh sample, nothing wrong in it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HEALTHY, UNKNOWN, UNHEALTHY = "healthy", "unknown", "unhealthy"
# Hotspot temperature (°C) at or above which a GPU counts as unhealthy: MI300-class parts
# throttle at about 105 °C hotspot; 100 leaves the operator a margin to act.
HOT_C = 100.0


@dataclass(frozen=True)
class Health:
    state: str
    reasons: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


def gpu_health(*, marked: str, marked_reason: str = "", agent_alive: bool, snapshot_age_s: float | None,
               stale_after_s: float, sample: Mapping[str, Any] | None) -> Health:
    """The health of one GPU. ``marked``: the inventory's health field; ``snapshot_age_s``:
    age of the node's latest telemetry snapshot (None: none); ``sample``: this GPU's entry of
    that snapshot (None: absent)."""
    if marked == UNHEALTHY:
        return Health(UNHEALTHY, (f"marked unhealthy: {marked_reason}" if marked_reason else "marked unhealthy",))
    if not agent_alive:
        return Health(UNKNOWN, ("the node's agent is down",))
    if snapshot_age_s is None:
        return Health(UNKNOWN, ("no telemetry from the node",))
    if snapshot_age_s > stale_after_s:
        return Health(UNKNOWN, (f"telemetry is stale ({snapshot_age_s:.0f} s old)",))
    if sample is None:
        return Health(UNKNOWN, ("no telemetry sample of this GPU",))
    problems = []
    ecc = sample.get("ecc_uncorrectable")
    if isinstance(ecc, int | float) and ecc > 0:
        problems.append(f"{ecc:.0f} uncorrectable ECC error{'s' if ecc != 1 else ''}")
    temperature = sample.get("temperature_c")
    if isinstance(temperature, int | float) and temperature >= HOT_C:
        problems.append(f"hotspot {temperature:.0f} °C (≥ {HOT_C:.0f} °C)")
    if problems:
        return Health(UNHEALTHY, tuple(problems))
    return Health(HEALTHY, ("agent alive, fresh telemetry, no ECC errors or overheating",))


@dataclass(frozen=True)
class Memory:
    """One bar: ``total_gb`` of memory, ``allocated_gb`` held by replicas placed there,
    ``used_gb`` read by telemetry (None: no reading). Percentages are of ``total_gb``, clamped
    to 0..100 for the bar (the numbers stay as they are)."""

    total_gb: float
    allocated_gb: float
    used_gb: float | None

    @property
    def allocated_pct(self) -> int:
        return _pct(self.allocated_gb, self.total_gb)

    @property
    def used_pct(self) -> int | None:
        return None if self.used_gb is None else _pct(self.used_gb, self.total_gb)

    @property
    def over_allocated(self) -> bool:
        return self.allocated_gb > self.total_gb + 1e-9


def _pct(value: float, total: float) -> int:
    if total <= 0:
        return 0
    return int(round(min(100.0, max(0.0, 100.0 * value / total))))


def partition_memory(*, total_gb: float | None, allocated_gb: float | None, used_mb: float | None) -> Memory:
    return Memory(total_gb=float(total_gb or 0.0), allocated_gb=float(allocated_gb or 0.0),
                  used_gb=None if used_mb is None else round(float(used_mb) / 1024, 1))


def gpu_memory(parts: Sequence[Memory]) -> Memory:
    """The GPU's bar: the sums of its partitions' (used: of those with a reading; None when
    none has one)."""
    used = [p.used_gb for p in parts if p.used_gb is not None]
    return Memory(total_gb=round(sum(p.total_gb for p in parts), 1), allocated_gb=round(sum(p.allocated_gb for p in parts), 1),
                  used_gb=round(sum(used), 1) if used else None)
