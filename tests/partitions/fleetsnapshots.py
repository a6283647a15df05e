"""Synthetic telemetry snapshots (partitions/telemetry.py's shape) for dashboard tests: any
number of nodes x GPUs x partitions, with deterministic, distinct activity."""

from __future__ import annotations

from typing import Any

GIB_MB = 1024


def snapshot(node: str, *, gpus: int = 8, partitions: int = 8, ts: float = 1000.0, emulated: bool = True,
             seed: int = 0) -> dict[str, Any]:
    out = []
    for g in range(gpus):
        parts = []
        for p in range(partitions):
            activity = float((seed * 37 + g * 11 + p * 7) % 101)
            parts.append({"index": p, "logical_index": g * partitions + p, "gfx_activity": activity,
                          "derived": partitions > 1, "vram_used_mb": 1024 * (1 + p), "vram_total_mb": 24 * GIB_MB})
        out.append({"index": g, "power_w": 300.0 + g, "temperature_c": 50.0 + g, "mem_temperature_c": 40.0,
                    "gfx_activity": 50.0, "ecc_uncorrectable": 0, "partitions": parts})
    return {"node": node, "ts": ts, "interval_s": 1.0, "emulated": emulated, "gpus": out}


def fleet(nodes: int, *, gpus: int = 8, partitions: int = 8, prefix: str = "sim-node-") -> dict[str, dict[str, Any]]:
    return {f"{prefix}{i + 1}": snapshot(f"{prefix}{i + 1}", gpus=gpus, partitions=partitions, seed=i) for i in range(nodes)}
