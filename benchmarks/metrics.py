"""``/metrics`` exposition cost: time per series for fleets of 10, 100 and 1,000 GPUs.

Fleets: MI300X nodes of 8 GPUs (the last node holds the remainder), every GPU in CPX (8
partitions of 24 GiB), a cached telemetry snapshot per node in a real Redis (the bundled
redis-server), a replica on every fourth partition, 10 models with request histograms and
200 finished operations — the database rows and Redis keys a scrape reads.

- measured: ``generate_latest`` of the console's registry (the whole scrape path: 5 aggregate
  queries, one Redis round trip, building and rendering the families);
- baseline (same run): a bare prometheus-client registry holding one Gauge with the same
  number of series (static values, no I/O) — the rendering cost any exporter pays.

Prints time per series for both and their ratio; the last stdout line is one JSON object.
``--quick`` finishes in well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _django import start_redis  # noqa: E402

REDIS_PROC, REDIS_URL = start_redis()
os.environ["REDIS_URL"] = REDIS_URL

import _django  # noqa: E402

_django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402
from prometheus_client import CollectorRegistry, Gauge, generate_latest  # noqa: E402

from aimconsole import counters
from observability import metrics  # noqa: E402
from partitions.models import GPU, Node, Partition, Reconfiguration  # noqa: E402
from partitions.telemetry_store import snapshot_key  # noqa: E402
from serving.models import Deployment, DeploymentSlot  # noqa: E402

GIB_MB = 1024


def build_fleet(gpus: int, profiles: list, client) -> None:  # type: ignore[no-untyped-def]
    """Replace the fleet with ``gpus`` CPX MI300X GPUs (8 per node) and their cached snapshots."""
    Reconfiguration.objects.all().delete()
    Deployment.objects.all().delete()
    Node.objects.all().delete()
    client.flushdb()
    now = timezone.now()
    sizes = [8] * (gpus // 8) + ([gpus % 8] if gpus % 8 else [])
    nodes = Node.objects.bulk_create([
        Node(name=f"bench-{i:04d}", backend=Node.Backend.SIMULATED, emulated=True, memory_mode="NPS1",
             agent_heartbeat_at=now, rocm_version="7.1") for i in range(len(sizes))])
    gpu_rows = GPU.objects.bulk_create([
        GPU(node=node, index=g, gpu_model="MI300X", compute_mode="CPX", memory_mode="NPS1", health="healthy",
            vram_mb=196592, compute_units=304) for node, size in zip(nodes, sizes) for g in range(size)])
    Partition.objects.bulk_create([
        Partition(gpu=gpu, index=p, logical_index=gpu.index * 8 + p, xcds=1, compute_units=38, memory_gb=24.0)
        for gpu in gpu_rows for p in range(8)])
    parts = list(Partition.objects.order_by("pk").values_list("pk", flat=True))
    deployments = Deployment.objects.bulk_create([
        Deployment(name=f"bench-d{i}", profile=profiles[i % len(profiles)], replicas=1, state="running")
        for i in range(0, len(parts), 4)])
    DeploymentSlot.objects.bulk_create([
        DeploymentSlot(deployment=d, replica=0, partition_id=pk, started_at=now) for d, pk in zip(deployments, parts[::4])])
    finished = now
    Reconfiguration.objects.bulk_create([
        Reconfiguration(kind="compute", node=nodes[i % len(nodes)], gpu_index=0, target_compute_mode="CPX",
                        state=("succeeded", "rolled_back", "failed")[i % 3], started_at=finished - timezone.timedelta(seconds=5 + i),
                        finished_at=finished) for i in range(200)])
    ts = time.time()
    pipe = client.pipeline()
    for node, size in zip(nodes, sizes):
        snapshot = {"node": node.name, "ts": ts, "interval_s": 1.0, "emulated": True, "gpus": [
            {"index": g, "power_w": 650.0, "temperature_c": 61.0, "mem_temperature_c": 55.0, "gfx_activity": 40.0,
             "ecc_uncorrectable": 0, "partitions": [
                 {"index": p, "logical_index": g * 8 + p, "gfx_activity": 40.0 + p, "derived": True,
                  "vram_used_mb": 12 * GIB_MB, "vram_total_mb": 196592 if p == 0 else 24 * GIB_MB} for p in range(8)]}
            for g in range(size)]}
        pipe.set(snapshot_key(node.name), json.dumps(snapshot), ex=600)
    pipe.execute()
    for profile in profiles:
        counters.observe_requests(profile.model.hf_id, [0.1, 0.3, 0.7, 1.2], errors=[0.5], tokens=1000, emulated=True, client=client)


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def series_count(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def bare_registry(series: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    gauge = Gauge("bench_series", "A gauge with as many series as the console's scrape.",
                  ["node", "gpu", "partition", "emulated"], registry=registry)
    for i in range(series):
        gauge.labels(f"bench-{i // 64:04d}", str(i // 8 % 8), str(i % 8), "true").set(i * 0.5)
    return registry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from models.models import ModelProfile
    from models.services import default_profiles, load_catalog

    load_catalog()
    profiles = list(ModelProfile.objects.filter(default_profiles(), gpu_model="MI300X",
                                                memory_required_gb__lte=24).select_related("model").order_by("pk")[:10])
    client = counters.redis_client()
    results = []
    for gpus in (10, 100, 1000):
        repeat = (5 if gpus < 1000 else 3) if args.quick else (20 if gpus < 1000 else 8)
        build_fleet(gpus, profiles, client)
        text = generate_latest(metrics.REGISTRY)  # warm-up
        with CaptureQueriesContext(connection) as ctx:
            generate_latest(metrics.REGISTRY)
        queries = len(ctx.captured_queries)
        series = series_count(text)
        console_s = timed(lambda: generate_latest(metrics.REGISTRY), repeat)
        registry = bare_registry(series)
        assert series_count(generate_latest(registry)) == series
        bare_s = timed(lambda registry=registry: generate_latest(registry), repeat)
        row = {
            "gpus": gpus, "partitions": gpus * 8, "series": series, "db_queries": queries,
            "console_ms": round(console_s * 1000, 2), "bare_registry_ms": round(bare_s * 1000, 2),
            "console_us_per_series": round(console_s / series * 1e6, 3),
            "bare_us_per_series": round(bare_s / series * 1e6, 3),
            "ratio": round(console_s / bare_s, 2),
        }
        results.append(row)
        print(f"{gpus:5d} GPUs: {series:6d} series, {queries} queries, console {row['console_ms']} ms "
              f"({row['console_us_per_series']} us/series) vs bare registry {row['bare_registry_ms']} ms "
              f"({row['bare_us_per_series']} us/series): x{row['ratio']}", flush=True)
    print(json.dumps({"benchmark": "metrics_exposition", "quick": args.quick, "fleets": results}))


if __name__ == "__main__":
    try:
        main()
    finally:
        REDIS_PROC.terminate()  # type: ignore[attr-defined]
