"""Inventory sync: reconciling vs. a bulk delete + re-create of the node's rows.

One node of 8 MI300X GPUs in CPX (8 GPU rows, 64 partition rows: the largest layout).

- measured: ``partitions.services.sync_inventory`` (reconciles; an unchanged inventory writes
  no GPU or partition row);
- baseline (same run, same inventory): what a user writing a sync without reconciliation would
  pick: in one transaction, lock the node, ``GPU.objects.filter(node=…).delete()`` (cascading
  to partitions), one ``bulk_create`` of the GPUs and one of the partitions from the same row
  values the sync stores (``planned_rows``), and the node's row update: a handful of queries,
  whatever the inventory. (It is no drop-in: it forgets operator-set health and unbinds every
  replica's partitions on each run, which is why the console reconciles.)

Two cases: the inventory unchanged (every heartbeat's sync) and one GPU repartitioned (CPX ->
SPX, 7 partitions gone). The baseline's statements: BEGIN, the node lock, the collector's four
(read the GPUs and the partition ids, delete their slots, un-link reconfigurations), two DELETEs, two INSERTs, the node
UPDATE, COMMIT. Prints times, queries and the ratio; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from _django import start_redis

# A private Redis: a sync that changed something publishes ``fleet.changed``, as on a console.
REDIS_PROC, os.environ["REDIS_URL"] = start_redis()

import _django  # noqa: E402

_django.setup()

from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from partitions.backends.simulated import SimulatedFleet  # noqa: E402
from partitions.models import GPU, Node, Partition  # noqa: E402
from partitions.services import sync_inventory  # noqa: E402
from partitions.services.inventory import planned_rows  # noqa: E402


def bulk_recreate(node: Node, inventory: Any) -> None:
    """The baseline: delete the node's GPUs (and so its partitions) and bulk-insert them again."""
    rows = planned_rows(inventory)
    with transaction.atomic():
        Node.objects.select_for_update().get(pk=node.pk)
        GPU.objects.filter(node=node).delete()
        gpus = GPU.objects.bulk_create([GPU(node=node, index=info.index, **values) for info, values, _ in rows])
        Partition.objects.bulk_create([
            Partition(gpu=gpu, index=part.partition_id, **part_values)
            for gpu, (_, _, parts) in zip(gpus, rows) for part, part_values in parts])
        modes = {g.memory_mode for g in inventory.gpus if g.memory_mode}
        Node.objects.filter(pk=node.pk).update(memory_mode=modes.pop() if len(modes) == 1 else "",
                                               last_synced_at=timezone.now(), sync_error="")


def reconcile(node: Node, inventory: Any) -> None:
    with transaction.atomic():  # as the agent runs it
        sync_inventory(node=node, inventory=inventory)


def measure(fn: Any, repeat: int, before: Any = None) -> tuple[float, int]:
    """Median seconds of ``fn`` and its queries per call (``before`` runs untimed first)."""
    times, queries = [], []
    if before is not None:
        before()
    fn()  # warm-up
    for _ in range(repeat):
        if before is not None:
            before()
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        queries.append(len(ctx.captured_queries))
    return statistics.median(times), int(statistics.median(queries))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeat = 7 if args.quick else 30
    fleet = SimulatedFleet(nodes=1, gpu_count=8)
    backend = fleet.backend("sim-0000")
    backend.set_compute_mode(list(range(8)), "CPX")
    cpx = backend.inventory()
    backend.set_compute_mode([0], "SPX")
    one_spx = backend.inventory()
    node = Node.objects.create(name="bench-node", backend=Node.Backend.SIMULATED, emulated=True)
    reconcile(node, cpx)

    cases: dict[str, Any] = {}
    # Unchanged: both run on the same CPX rows again and again.
    base_s, base_q = measure(lambda: bulk_recreate(node, cpx), repeat)
    sync_s, sync_q = measure(lambda: reconcile(node, cpx), repeat)
    cases["unchanged"] = (base_s, base_q, sync_s, sync_q)
    # One GPU repartitioned: start each run from the CPX rows (untimed), then store one_spx.
    base_s, base_q = measure(lambda: bulk_recreate(node, one_spx), repeat, before=lambda: reconcile(node, cpx))
    sync_s, sync_q = measure(lambda: reconcile(node, one_spx), repeat, before=lambda: reconcile(node, cpx))
    cases["one_gpu_repartitioned"] = (base_s, base_q, sync_s, sync_q)

    result: dict[str, Any] = {"benchmark": "inventory_sync_8xCPX", "repeat": repeat, "quick": args.quick, "cases": {}}
    for name, (base_s, base_q, sync_s, sync_q) in cases.items():
        result["cases"][name] = {
            "baseline_bulk_delete_recreate_ms": round(base_s * 1000, 2), "baseline_queries": base_q,
            "reconcile_ms": round(sync_s * 1000, 2), "reconcile_queries": sync_q,
            "reconcile_over_baseline": round(sync_s / base_s, 2),
        }
        print(f"{name}: bulk delete + re-create {base_s * 1000:.2f} ms ({base_q} queries); "
              f"reconcile {sync_s * 1000:.2f} ms ({sync_q} queries): reconcile/baseline = {sync_s / base_s:.2f}")
    print(json.dumps(result))
    REDIS_PROC.terminate()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
