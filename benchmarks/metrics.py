"""``/metrics`` at 10, 100 and 1,000 nodes: the console's scrape stays flat; per-node series come
from each node agent's exporter.

Fleets: MI300X nodes of 8 GPUs, every GPU in CPX (8 partitions of 24 GiB: 64 partitions per
node), a heartbeat and a cached telemetry snapshot per node in a real Redis (the bundled
redis-server), a replica on every fourth partition (10 models), 200 finished operations and
request histograms for the 10 models: the rows and keys a scrape reads.

Measured, per fleet size:

- console: ``GET /metrics`` through Django's test client (the whole server side: middleware,
  the access check, the operations query, one Redis round trip with the cached fleet
  aggregates, building and rendering), in its steady state (the aggregates cached: default
  ``METRICS_FLEET_REFRESH_S``);
- what the cache moves off the scrape path, reported beside it: one refresh of the fleet
  aggregates (``fleet_rows``, 6 GROUP BY queries: once per refresh interval for the whole
  console) and a scrape computing them itself (``METRICS_FLEET_REFRESH_S=0``);
- agent: one node's exporter scrape (partitions/exporter.py: the node's rows, its occupants,
  its snapshot from Redis, building and rendering);
- baseline for each, in the same run: the same series set (same names, labels, values, parsed
  back from the scrape) pre-built in a bare prometheus-client registry and rendered with
  ``generate_latest``: what any exporter pays to serve those series with no I/O at all.

Prints bytes, series, median server time and the ratio to the baseline for each fleet, then
the 1,000-node / 10-node ratios of the console's bytes and time (target: ≤ 3×; the series count
is flat). The last stdout line is one JSON object. ``--quick`` finishes in about a minute on 2
cores.
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
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from aimconsole import counters  # noqa: E402
from observability import metrics  # noqa: E402
from partitions.exporter import node_registry  # noqa: E402
from partitions.models import GPU, Node, Partition, Reconfiguration  # noqa: E402
from partitions.telemetry_store import snapshot_key  # noqa: E402
from serving.models import Deployment, DeploymentSlot  # noqa: E402

GIB_MB = 1024
GPUS_PER_NODE = 8


def build_fleet(nodes: int, profiles: list, client) -> list[str]:  # type: ignore[no-untyped-def]
    """Replace the fleet with ``nodes`` CPX MI300X nodes and their cached snapshots; node names."""
    Reconfiguration.objects.all().delete()
    Deployment.objects.all().delete()
    Node.objects.all().delete()
    client.flushdb()
    now = timezone.now()
    node_rows = Node.objects.bulk_create([
        Node(name=f"bench-{i:04d}", backend=Node.Backend.SIMULATED, emulated=True, memory_mode="NPS1",
             agent_heartbeat_at=now, rocm_version="7.1") for i in range(nodes)])
    gpu_rows = GPU.objects.bulk_create([
        GPU(node=node, index=g, gpu_model="MI300X", compute_mode="CPX", memory_mode="NPS1", health="healthy",
            vram_mb=196592, compute_units=304) for node in node_rows for g in range(GPUS_PER_NODE)], batch_size=2000)
    Partition.objects.bulk_create([
        Partition(gpu=gpu, index=p, logical_index=gpu.index * 8 + p, xcds=1, compute_units=38, memory_gb=24.0)
        for gpu in gpu_rows for p in range(8)], batch_size=5000)
    parts = list(Partition.objects.order_by("pk").values_list("pk", flat=True))
    deployments = Deployment.objects.bulk_create([
        Deployment(name=f"bench-d{i}", profile=profiles[i % len(profiles)], replicas=1, state="running")
        for i in range(0, len(parts), 4)], batch_size=2000)
    DeploymentSlot.objects.bulk_create([
        DeploymentSlot(deployment=d, replica=0, partition_id=pk, started_at=now) for d, pk in zip(deployments, parts[::4])],
        batch_size=2000)
    Reconfiguration.objects.bulk_create([
        Reconfiguration(kind="compute", node=node_rows[i % len(node_rows)], gpu_index=0, target_compute_mode="CPX",
                        state=("succeeded", "rolled_back", "failed")[i % 3], started_at=now - timezone.timedelta(seconds=5 + i),
                        finished_at=now) for i in range(200)])
    ts = time.time()
    pipe = client.pipeline()
    for node in node_rows:
        snapshot = {"node": node.name, "ts": ts, "interval_s": 1.0, "emulated": True, "gpus": [
            {"index": g, "power_w": 650.0, "temperature_c": 61.0, "mem_temperature_c": 55.0, "gfx_activity": 40.0,
             "ecc_uncorrectable": 0, "partitions": [
                 {"index": p, "logical_index": g * 8 + p, "gfx_activity": 40.0 + p, "derived": True,
                  "vram_used_mb": 12 * GIB_MB, "vram_total_mb": 196592 if p == 0 else 24 * GIB_MB} for p in range(8)]}
            for g in range(GPUS_PER_NODE)]}
        pipe.set(snapshot_key(node.name), json.dumps(snapshot), ex=600)
    pipe.execute()
    for profile in profiles:
        counters.observe_requests(profile.model.hf_id, [0.1, 0.3, 0.7, 1.2], errors=[0.5], tokens=1000, emulated=True, client=client)
    return [n.name for n in node_rows]


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def series_count(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


class Prebuilt:
    """A collector handing out families built once: the baseline does no I/O and no building."""

    def __init__(self, families: list) -> None:  # type: ignore[type-arg]
        self.families = families

    def collect(self):  # type: ignore[no-untyped-def]
        return self.families


def bare_registry(text: bytes) -> CollectorRegistry:
    """The same series set (names, help, types, labels, values) pre-built in a bare registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Prebuilt(list(text_string_to_metric_families(text.decode()))))  # type: ignore[arg-type]
    return registry


def measure(render, repeat: int) -> dict:  # type: ignore[no-untyped-def]
    """Bytes, series and median time of ``render`` against the bare registry of its output."""
    text = render()  # warm-up, and the series set for the baseline
    bare = bare_registry(text)
    same = generate_latest(bare)
    assert series_count(same) == series_count(text), (series_count(same), series_count(text))
    took = timed(render, repeat)
    bare_took = timed(lambda: generate_latest(bare), repeat)
    return {"bytes": len(text), "series": series_count(text), "ms": round(took * 1000, 2),
            "bare_ms": round(bare_took * 1000, 2), "x_bare": round(took / bare_took, 2)}


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
    http = Client(REMOTE_ADDR="127.0.0.1")

    def console() -> bytes:
        response = http.get("/metrics", HTTP_HOST="127.0.0.1")
        assert response.status_code == 200, response.status_code
        return response.content

    results = []
    for nodes in (10, 100, 1000):
        repeat = 7 if args.quick else 25
        names = build_fleet(nodes, profiles, client)
        console()  # the first scrape computes the fleet aggregates and caches them
        with CaptureQueriesContext(connection) as ctx:
            console()
        row = {"nodes": nodes, "gpus": nodes * GPUS_PER_NODE, "partitions": nodes * GPUS_PER_NODE * 8,
               "console_queries": len(ctx.captured_queries), "console": measure(console, repeat)}
        # What the cache moves off the scrape path: one refresh (for the whole console, at most
        # every METRICS_FLEET_REFRESH_S), and a scrape that computes them itself (setting 0).
        row["fleet_refresh_ms"] = round(timed(metrics.fleet_rows, repeat) * 1000, 2)
        with override_settings(METRICS_FLEET_REFRESH_S=0):
            row["console_uncached_ms"] = round(timed(console, repeat) * 1000, 2)
        agent = node_registry(names[-1], client)
        row["agent"] = measure(lambda agent=agent: generate_latest(agent), repeat)
        row["agents_bytes_total"] = row["agent"]["bytes"] * nodes  # every node's exporter, scraped separately
        results.append(row)
        c, a = row["console"], row["agent"]
        print(f"{nodes:5d} nodes: console {c['bytes'] / 1024:7.1f} KiB {c['series']:5d} series {row['console_queries']} queries "
              f"{c['ms']:7.2f} ms (bare registry, same series: {c['bare_ms']} ms, x{c['x_bare']}) | one agent "
              f"{a['bytes'] / 1024:6.1f} KiB {a['series']} series {a['ms']:6.2f} ms (bare {a['bare_ms']} ms, x{a['x_bare']}) | "
              f"fleet refresh (off the scrape path) {row['fleet_refresh_ms']} ms, uncached scrape {row['console_uncached_ms']} ms",
              flush=True)
    small, large = results[0]["console"], results[-1]["console"]
    growth = {"bytes": round(large["bytes"] / small["bytes"], 2), "ms": round(large["ms"] / small["ms"], 2),
              "series": round(large["series"] / small["series"], 2)}
    print(f"console /metrics, 1,000 vs 10 nodes: bytes x{growth['bytes']}, server time x{growth['ms']}, "
          f"series x{growth['series']} (target: <= 3x)", flush=True)
    print(json.dumps({"benchmark": "metrics", "quick": args.quick, "fleets": results, "console_1000_vs_10": growth}))


if __name__ == "__main__":
    try:
        main()
    finally:
        REDIS_PROC.terminate()  # type: ignore[attr-defined]
