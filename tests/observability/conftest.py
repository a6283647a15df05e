"""Fixtures for the observability tests: Prometheus's own tools (Debian's ``prometheus``
package, installed by ``make test`` when missing), simulated fleets with cached telemetry,
and clean metric keys in Redis."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULE_FILES = sorted((DEPLOY / "prometheus").glob("*rules*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))


def _tool(name: str) -> str:
    path = os.environ.get(f"AIM_{name.upper()}") or shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).exists():
        pytest.fail(f"{name} not found: run `make test` (installs Debian's prometheus package) or set AIM_{name.upper()}")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _tool("prometheus")


def run_promtool(promtool: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], input=stdin, capture_output=True, timeout=60)


@pytest.fixture
def clean_metrics(redis_url):  # type: ignore[no-untyped-def]
    """Remove the metric counters and telemetry snapshots before and after the test."""
    import redis

    from aimconsole import counters
    from partitions.telemetry_store import snapshot_key

    client = redis.Redis.from_url(redis_url)

    def clean() -> None:
        from observability.metrics import fleet_key
        from partitions.exporter import exporter_key

        keys = [counters.placement_key(), counters.requests_key(), fleet_key(), fleet_key() + ":refreshing",
                *client.keys(snapshot_key("*")), *client.keys(exporter_key("*"))]
        client.delete(*keys)
        counters._down_until = 0.0

    clean()
    yield client
    clean()


def build_sim_fleet(nodes: int, gpus: int, *, compute: str = "CPX", prefix: str = "sim-", client=None) -> list:  # type: ignore[no-untyped-def]
    """Simulated nodes with their inventory synced, a fresh heartbeat and (with ``client``) a
    telemetry snapshot cached in Redis exactly as a node agent stores it."""
    from django.utils import timezone

    from partitions.agent import build_snapshot
    from partitions.backends.simulated import SimulatedFleet
    from partitions.models import Node
    from partitions.services import sync_inventory
    from partitions.telemetry_store import SNAPSHOT_TTL_S, snapshot_key

    fleet = SimulatedFleet(nodes=nodes, gpu_count=gpus, prefix=prefix)
    created = []
    for name in fleet.nodes:
        backend = fleet.backend(name)
        if compute != "SPX":
            backend.set_compute_mode(list(range(gpus)), compute)
        node = Node.objects.create(name=name, backend=Node.Backend.SIMULATED, emulated=True,
                                   agent_heartbeat_at=timezone.now())
        sync_inventory(node=node, inventory=backend.inventory())
        node.refresh_from_db()
        if client is not None:
            snapshot = build_snapshot(node, backend.metrics(), time.time())
            client.set(snapshot_key(name), json.dumps(snapshot), ex=SNAPSHOT_TTL_S)
        created.append(node)
    return created


def bulk_fleet(nodes: int, *, gpus: int = 8, prefix: str = "bulk-") -> list:  # type: ignore[no-untyped-def]
    """``nodes`` simulated CPX MI300X nodes (``gpus`` GPUs of 8 partitions each) as bulk rows,
    with a fresh heartbeat: the shape of a large fleet, in a few queries."""
    from django.utils import timezone

    from partitions.models import GPU, Node, Partition

    created = Node.objects.bulk_create([
        Node(name=f"{prefix}{i:04d}", backend=Node.Backend.SIMULATED, emulated=True, memory_mode="NPS1",
             agent_heartbeat_at=timezone.now()) for i in range(nodes)])
    gpu_rows = GPU.objects.bulk_create([
        GPU(node=node, index=g, gpu_model="MI300X", compute_mode="CPX", memory_mode="NPS1", health="healthy",
            vram_mb=196592, compute_units=304) for node in created for g in range(gpus)])
    Partition.objects.bulk_create([
        Partition(gpu=gpu, index=p, logical_index=gpu.index * 8 + p, xcds=1, compute_units=38, memory_gb=24.0)
        for gpu in gpu_rows for p in range(8)])
    return created
