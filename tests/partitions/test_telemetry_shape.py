"""Shaping one telemetry sample (partitions/telemetry.py): the VRAM total of a partition."""

from __future__ import annotations

from partitions.backends.types import Metrics
from partitions.telemetry import PartitionRef, shape

GIB = 1024
WHOLE_MB = 192 * GIB  # MI300X: amd-smi's "MB" are MiB


def cpx_gpu(*, secondaries_report_share: bool = True) -> tuple[list[Metrics], list[PartitionRef]]:
    """One MI300X in CPX (8 partitions), as amd-smi >= 6.4.1 reports it: the primary (partition
    0) prints the whole GPU's total, the secondaries their share (device/8)."""
    share = WHOLE_MB // 8
    metrics = [Metrics(logical_index=0, gfx_activity=40.0, gfx_busy_inst={p: (10.0 * p,) for p in range(8)},
                       vram_used_mb=2048, vram_total_mb=WHOLE_MB, power_w=500.0, temperature_hotspot_c=60.0)]
    metrics += [Metrics(logical_index=p, vram_used_mb=1024, vram_total_mb=share if secondaries_report_share else WHOLE_MB)
                for p in range(1, 8)]
    layout = [PartitionRef(gpu_index=0, partition_index=p, logical_index=p) for p in range(8)]
    return metrics, layout


def totals(snapshot: dict) -> list[int]:
    return [p["vram_total_mb"] for p in snapshot["gpus"][0]["partitions"]]


def test_the_primary_partition_of_a_cpx_gpu_reports_its_share_not_the_whole_gpu():
    metrics, layout = cpx_gpu()
    snapshot = shape("emu-1", 1.0, metrics, layout, emulated=True, interval_s=1.0)
    assert totals(snapshot) == [24 * GIB] * 8  # 24 GiB each, as the fleet page says, not 192 on p0


def test_before_rocm_641_every_device_reports_the_whole_gpu_and_each_gets_its_share():
    metrics, layout = cpx_gpu(secondaries_report_share=False)
    snapshot = shape("emu-1", 1.0, metrics, layout, emulated=True, interval_s=1.0)
    assert totals(snapshot) == [24 * GIB] * 8


def test_an_unpartitioned_gpu_keeps_its_whole_total():
    metrics = [Metrics(logical_index=0, gfx_activity=5.0, vram_used_mb=100, vram_total_mb=WHOLE_MB)]
    snapshot = shape("n", 1.0, metrics, [PartitionRef(0, 0, 0)], emulated=False, interval_s=1.0)
    assert totals(snapshot) == [WHOLE_MB]
    assert snapshot["gpus"][0]["partitions"][0]["derived"] is False


def test_only_activity_is_marked_derived():
    metrics, layout = cpx_gpu()
    part = shape("emu-1", 1.0, metrics, layout, emulated=True, interval_s=1.0)["gpus"][0]["partitions"][3]
    assert part["derived"] is True and part["gfx_activity"] == 30.0
    assert part["vram_used_mb"] == 1024  # measured on the device itself
