"""Deployment create at fleet scale: the cost of ``create_deployment`` at 10, 100 and 1,000 nodes.

Fleets (simulated, built here with bulk inserts): MI300X nodes of 8 GPUs in CPX (8 partitions of
24 GiB), NPS1, a replica on every fourth partition. Each measured create places a 2-replica
deployment of a ~19.5 GiB model (Llama-3.1-8B fp16) on the current layout, binds it, and is then
stopped again so every create sees the same fleet.

Per fleet size: queries per create (counted) and wall time per create (median of ``--repeat``), and
their ratios to the 10-node fleet measured in the same run (the issue's target: 1,000 nodes <= 3x
10 nodes). A heartbeat thread updates one node's row (what an agent's heartbeat writes), on its
own connection, all the time the creates run; ``heartbeats`` counts those written (it shares the
process's interpreter lock with the creates, so its pace says nothing about database locks).

Locks: on PostgreSQL (``--database-url postgres://...``, a database the benchmark may empty) the
statements each create sends are searched for ``FOR UPDATE`` on the node table: ``node_locks`` is
how many such statements ran (0: no fleet-wide lock, nor any Node row lock). SQLite has no row
locks (one writer at a time), so there the column reads "n/a".

``--quick``: 10 and 1,000 nodes, 5 creates each (well under 2 minutes on 2 cores). The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GPUS_PER_NODE = 8
PARTS_PER_GPU = 8
REDIS_PROC: Any = None


def setup(database_url: str | None) -> None:
    from _django import start_redis

    global REDIS_PROC
    REDIS_PROC, os.environ["REDIS_URL"] = start_redis()  # events and counters go somewhere real
    os.environ.setdefault("AIM_VAR_DIR", tempfile.mkdtemp(prefix="aim-bench-"))
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ.pop("DATABASE_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "aimconsole.settings.local"
    os.environ["DJANGO_DEBUG"] = "False"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def build_fleet(nodes_count: int) -> None:
    """Replace the fleet with ``nodes_count`` simulated CPX nodes named sim-0000… (``simulate_fleet``),
    a replica on every fourth partition."""
    from partitions.models import Reconfiguration
    from serving.models import Deployment
    from serving.simulation import simulate_fleet

    Reconfiguration.objects.all().delete()
    Deployment.objects.all().delete()  # the last fleet's measured creates: simulate_fleet refuses foreign ones
    _profile()  # the catalog, loaded
    simulate_fleet(nodes=nodes_count, prefix="sim-", compute_mode="CPX", gpus_per_node=GPUS_PER_NODE, occupancy=0.25,
                   telemetry=False)


def _profile() -> Any:
    from models.models import InferenceModel, ModelProfile
    from models.services import load_catalog

    if not InferenceModel.objects.exists():
        load_catalog()
    return ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                    gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)


class Heartbeats(threading.Thread):
    """What an agent's heartbeat writes, over and over, on its own connection."""

    def __init__(self, node_name: str) -> None:
        super().__init__(daemon=True)
        self.node_name = node_name
        self.stop = threading.Event()
        self.written = 0

    def run(self) -> None:
        from django.db import connection
        from django.utils import timezone

        from partitions.models import Node

        try:
            while not self.stop.is_set():
                self.written += Node.objects.filter(name=self.node_name).update(agent_heartbeat_at=timezone.now())
                time.sleep(0.01)
        finally:
            connection.close()


def locks_nodes(sql: str) -> bool:
    """Whether a statement locks Node rows: a SELECT ... FOR UPDATE that reads the node table,
    unless its ``FOR UPDATE OF`` names other tables only (PostgreSQL then locks only those)."""
    upper = sql.upper()
    if not upper.lstrip().startswith("SELECT") or " FOR UPDATE" not in upper or '"PARTITIONS_NODE"' not in upper:
        return False
    clause = upper.rsplit(" FOR UPDATE", 1)[1]
    return not clause.lstrip().startswith("OF ") or '"PARTITIONS_NODE"' in clause


def measure(nodes_count: int, repeat: int, vendor: str) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from planning.services import DemandSpec
    from serving.models import Deployment
    from serving.services import create_deployment, stop_deployment

    build_fleet(nodes_count)
    profile = _profile()

    def once(name: str) -> tuple[float, list[dict[str, Any]]]:
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            deployment = create_deployment(spec=DemandSpec(name=name, profile=profile, replicas=2))
            elapsed = time.perf_counter() - start
        assert deployment.slots.count() == 2
        stop_deployment(deployment=deployment)
        Deployment.objects.filter(pk=deployment.pk).delete()
        return elapsed, list(ctx.captured_queries)

    once("warm-up")
    beats = Heartbeats("sim-0000")
    beats.start()
    times, queries, node_locks = [], [], 0
    for i in range(repeat):
        elapsed, captured = once(f"bench-{i}")
        times.append(elapsed)
        queries.append(len(captured))
        node_locks += sum(1 for q in captured if locks_nodes(q["sql"]))
    beats.stop.set()
    beats.join()
    return {"nodes": nodes_count, "gpus": nodes_count * GPUS_PER_NODE,
            "partitions": nodes_count * GPUS_PER_NODE * PARTS_PER_GPU,
            "queries": max(queries), "create_ms": round(statistics.median(times) * 1000, 1),
            "node_locks": node_locks if vendor == "postgresql" else "n/a",
            "heartbeats": beats.written}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=0, help="creates measured per fleet size")
    parser.add_argument("--database-url", default=None, help="e.g. postgres://user@host/db (emptied!); default: a throw-away SQLite")
    args = parser.parse_args()
    setup(args.database_url)
    from django.db import connection

    sizes = [10, 1000] if args.quick else [10, 100, 1000]
    repeat = args.repeat or (5 if args.quick else 15)
    try:
        rows = [measure(n, repeat, connection.vendor) for n in sizes]
    finally:
        REDIS_PROC.terminate()
    base = rows[0]
    print(f"database: {connection.vendor}; {repeat} creates per size (2 replicas each), median time")
    print("nodes  partitions  queries  create_ms  x_time  x_queries  node_locks  heartbeats")
    for r in rows:
        r["time_ratio"] = round(r["create_ms"] / base["create_ms"], 2)
        r["query_ratio"] = round(r["queries"] / base["queries"], 2)
        print(f"{r['nodes']:5} {r['partitions']:11} {r['queries']:8} {r['create_ms']:10} {r['time_ratio']:7} "
              f"{r['query_ratio']:10} {r['node_locks']!s:>11} {r['heartbeats']:11}")
    largest = rows[-1]
    print(json.dumps({
        "benchmark": "deployment_create", "database": connection.vendor, "repeat": repeat, "rows": rows,
        "time_ratio_1000_over_10": largest["time_ratio"], "query_ratio_1000_over_10": largest["query_ratio"],
        "target_met": largest["time_ratio"] <= 3 and largest["query_ratio"] <= 3
        and all(r["node_locks"] in (0, "n/a") for r in rows),
        "quick": args.quick,
    }))


if __name__ == "__main__":
    main()
