"""Shaping one telemetry sample: per GPU and per partition. Pure Python.

amd-smi reports per logical device, and on a partitioned GPU (ROCm >= 6.4.1) only the
primary partition carries power, temperature and activity — its ``gfx_activity`` is the
whole GPU's. Per-partition activity is therefore **derived** from the primary's per-XCP
``gfx_busy_inst`` (the mean of the XCCs in that partition's XCP) and marked ``derived``.
Only activity is derived: VRAM used is measured on each logical device.

VRAM total: on a partitioned GPU the primary partition prints the **whole GPU's** total (and,
before ROCm 6.4.1, so does every partition), the secondaries their share. A partition's
total is therefore its share: what it reports when that is below the whole GPU's, else the
whole GPU's total divided by the partition count (as the fleet page's geometry says).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from partitions.backends.types import Metrics


@dataclass(frozen=True)
class PartitionRef:
    """Where a logical device sits (from the inventory)."""

    gpu_index: int
    partition_index: int
    logical_index: int


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 1) if present else None


def _partition_total(reported: int | None, whole: int | None, share: int | None) -> int | None:
    """A partition's VRAM total: its own figure unless it is the whole GPU's (see above)."""
    if share is None:  # unpartitioned, or the primary reports no total
        return reported
    if reported is None or (whole is not None and reported >= whole):
        return share
    return reported


def shape(node: str, ts: float, metrics: Sequence[Metrics], layout: Sequence[PartitionRef], *,
          emulated: bool, interval_s: float) -> dict[str, Any]:
    """A JSON-safe snapshot: ``gpus[].partitions[]`` with activity (derived where needed),
    VRAM, and per-GPU power/temperature. Logical devices missing from ``layout`` (inventory
    not synced yet) are reported under their own index as single-partition GPUs."""
    by_logical = {m.logical_index: m for m in metrics}
    known = {ref.logical_index for ref in layout}
    refs = list(layout) + [PartitionRef(gpu_index=-1 - m.logical_index, partition_index=0, logical_index=m.logical_index)
                           for m in metrics if m.logical_index not in known]
    gpus: dict[int, list[PartitionRef]] = {}
    for ref in refs:
        gpus.setdefault(ref.gpu_index, []).append(ref)
    out = []
    for gpu_index, parts in sorted(gpus.items()):
        parts.sort(key=lambda r: r.partition_index)
        primary = by_logical.get(parts[0].logical_index)
        partitioned = len(parts) > 1
        whole = primary.vram_total_mb if primary is not None else None
        share = whole // len(parts) if whole is not None and partitioned else None
        shaped = []
        for ref in parts:
            m = by_logical.get(ref.logical_index)
            activity: float | None = None
            derived = False
            if primary is not None and partitioned and primary.gfx_busy_inst:
                activity = _mean(primary.gfx_busy_inst.get(ref.partition_index, ()))
                derived = activity is not None
            elif m is not None:
                activity = m.gfx_activity
            shaped.append({
                "index": ref.partition_index,
                "logical_index": ref.logical_index,
                "gfx_activity": activity,
                "derived": derived,
                "vram_used_mb": m.vram_used_mb if m else None,
                "vram_total_mb": _partition_total(m.vram_total_mb if m else None, whole, share),
            })
        out.append({
            "index": gpu_index,
            "power_w": primary.power_w if primary else None,
            "temperature_c": primary.temperature_hotspot_c if primary else None,
            "mem_temperature_c": primary.temperature_mem_c if primary else None,
            "gfx_activity": primary.gfx_activity if primary else None,
            "ecc_uncorrectable": primary.ecc_uncorrectable if primary else None,
            "partitions": shaped,
        })
    return {"node": node, "ts": ts, "interval_s": interval_s, "emulated": emulated, "gpus": out}
