"""Inventory sync: reconciling an unchanged inventory vs. the naive delete-and-recreate.

Baseline (measured in the same run): delete every GPU/partition row of the node and insert
them again — what a sync without reconciliation would do on every agent heartbeat.
Measured: ``partitions.services.sync_inventory`` with an unchanged inventory (writes nothing).
Prints rows written and queries as well as times; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _django

_django.setup()

from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from partitions.backends.simulated import SimulatedFleet  # noqa: E402
from partitions.models import GPU, Node  # noqa: E402
from partitions.services import sync_inventory  # noqa: E402


def naive_sync(node: Node, inventory) -> None:  # type: ignore[no-untyped-def]
    with transaction.atomic():
        GPU.objects.filter(node=node).delete()
        sync_inventory(node=node, inventory=inventory)


def measure(fn, repeat: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    times = []
    with CaptureQueriesContext(connection) as ctx:
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times), len(ctx.captured_queries) // repeat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeat = 5 if args.quick else 20
    fleet = SimulatedFleet(nodes=1, gpu_count=8)
    backend = fleet.backend("sim-0000")
    backend.set_compute_mode(list(range(8)), "CPX")  # 64 partitions: the largest layout
    inventory = backend.inventory()
    node = Node.objects.create(name="bench-node", backend=Node.Backend.SIMULATED, emulated=True)
    sync_inventory(node=node, inventory=inventory)

    baseline_s, baseline_q = measure(lambda: naive_sync(node, inventory), repeat)
    sync_s, sync_q = measure(lambda: sync_inventory(node=node, inventory=inventory), repeat)
    result = {
        "benchmark": "inventory_sync_unchanged_8xCPX",
        "baseline_delete_recreate_ms": round(baseline_s * 1000, 2),
        "reconcile_ms": round(sync_s * 1000, 2),
        "speedup": round(baseline_s / sync_s, 2),
        "baseline_queries": baseline_q,
        "reconcile_queries": sync_q,
        "repeat": repeat,
    }
    print(f"delete+recreate: {result['baseline_delete_recreate_ms']} ms, {baseline_q} queries")
    print(f"reconcile:       {result['reconcile_ms']} ms, {sync_q} queries  (x{result['speedup']} faster)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
