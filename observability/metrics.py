"""Prometheus metrics: ``/metrics``. A leaf: it reads every app's models, the telemetry store
and the counters (aimconsole/counters.py); nothing imports it but the URLconf.

The scrape path (``ConsoleCollector``) reads only:

* the node agents' cached telemetry snapshots in Redis (``aim:telemetry:<node>``, one MGET),
* the counters below, kept in Redis hashes (two HGETALLs, same round trip),
* five aggregate database queries (nodes, GPUs, partitions with their replica, deployments
  grouped by model and state, reconfigurations grouped by kind and state with duration
  buckets),

whatever the fleet size. It never calls a hardware backend. Every family name carries its
unit; labels are bounded (node, gpu, partition, model, state, kind, result, reason class):
never request ids or user names. Every series with a ``node`` label also has ``emulated``
("true" for emulator/simulated nodes). deploy/README.md lists every metric.

Counters written elsewhere (aimconsole/counters.py, in Redis, so that every process — web,
agents, a gateway — adds to the same series and a console restart does not reset them):

* ``count_placement`` — placement decisions and failures by reason class, called by
  planning and serving where placements are decided.
* ``observe_requests`` — model request counts, latency histogram and generated tokens: the
  emulated serving runtime calls it through ``serving.runtime.emulated.feed_emulated_serving``,
  once per telemetry sample on each emulated node's agent.
* ``record_request_tallies`` — what the inference gateway (serving/gateway/) served, aggregated
  in memory and flushed about once a second: the same request, duration and generated-token
  series plus prompt tokens, time to first token and inter-token latency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from aimconsole.access import metrics_access_required
from aimconsole.counters import (
    GIB,
    GPU_HEALTH_STATES,
    ITL_BUCKETS,
    MIB,
    OPERATION_ACTIVE_STATES,
    OPERATION_BUCKETS,
    OPERATION_KINDS,
    OPERATION_RESULTS,
    PLACEMENT_REASONS,
    PLACEMENT_RESULTS,
    PLACEMENT_SOURCES,
    REQUEST_BUCKETS,
    REQUEST_RESULTS,
    SEP,
    TTFT_BUCKETS,
    placement_key,
    redis_client,
    requests_key,
)
from models.sizing import replica_gb_per_gpu
from serving.models import Deployment, Replica

log = logging.getLogger(__name__)


# --- gathering (the scrape path's I/O) ----------------------------------------------------------

@dataclass
class Gathered:
    """Everything one scrape reads: rows from 6 aggregate queries and one Redis round trip."""

    now: float
    nodes: list[tuple] = field(default_factory=list)
    gpus: list[tuple] = field(default_factory=list)
    partitions: list[tuple] = field(default_factory=list)
    deployments: list[dict] = field(default_factory=list)
    copies: list[dict] = field(default_factory=list)
    operations: list[dict] = field(default_factory=list)
    snapshots: dict[str, dict] = field(default_factory=dict)
    placement: dict[str, str] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)
    redis_ok: bool = True


def _duration() -> ExpressionWrapper:
    return ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())


def operations_query():
    """Reconfigurations grouped by (kind, state): counts, started, oldest creation time, and
    the duration histogram's cumulative buckets (finished ≤ started + le) and sum."""
    from partitions.models import Reconfiguration

    timed = Q(started_at__isnull=False, finished_at__isnull=False)
    buckets = {
        f"le_{i}": Count("pk", filter=timed & Q(finished_at__lte=F("started_at") + timedelta(seconds=le)))
        for i, le in enumerate(OPERATION_BUCKETS)
    }
    return (Reconfiguration.objects.order_by().values("kind", "state").annotate(
        n=Count("pk"), started=Count("pk", filter=Q(started_at__isnull=False)), oldest=Min("created_at"),
        timed=Count("pk", filter=timed), duration_sum=Sum(_duration(), filter=timed), **buckets,
    ))


def gather(client: redis.Redis | None = None) -> Gathered:
    """Read what one scrape needs: 6 database queries and one Redis pipeline."""
    from partitions.models import GPU, Node, Partition
    from partitions.telemetry_store import snapshot_key

    data = Gathered(now=time.time())
    data.nodes = list(Node.objects.order_by("name").values_list(
        "pk", "name", "emulated", "backend", "memory_mode", "agent_heartbeat_at", "layout_problem", "rocm_version"))
    data.gpus = list(GPU.objects.order_by().values_list(
        "node_id", "index", "gpu_model", "compute_mode", "memory_mode", "health", "schedulable", "vram_mb"))
    data.partitions = list(Partition.objects.order_by().values_list(
        "gpu__node_id", "gpu__index", "index", "logical_index", "memory_gb",
        "slot__deployment__state", "slot__deployment__profile__model__hf_id",
        "slot__deployment__profile__memory_required_gb", "slot__deployment__profile__per_gpu_gb",
        "slot__deployment__profile__gpus_needed", "slot__started_at"))
    data.deployments = list(Deployment.objects.order_by().values("state", "profile__model__hf_id").annotate(
        n=Count("pk"), replicas=Sum("replicas")))
    data.copies = list(Replica.objects.order_by().values("deployment__profile__model__hf_id", "runtime", "state", "node__emulated")
                       .annotate(n=Count("pk"), restarts=Sum("restarts")))
    data.operations = list(operations_query())
    names = [row[1] for row in data.nodes]
    try:
        client = client or redis_client()
        pipe = client.pipeline(transaction=False)
        if names:
            pipe.mget([snapshot_key(name) for name in names])
        pipe.hgetall(placement_key())
        pipe.hgetall(requests_key())
        results = pipe.execute()
        raws = results.pop(0) if names else []
        import json

        data.snapshots = {name: json.loads(raw) for name, raw in zip(names, raws) if raw is not None}
        data.placement = {k.decode(): v.decode() for k, v in results[0].items()}
        data.requests = {k.decode(): v.decode() for k, v in results[1].items()}
    except redis.RedisError as exc:
        log.warning("metrics: Redis unavailable (%s); serving database metrics only", exc)
        data.redis_ok = False
    return data


# --- building the families (pure) ---------------------------------------------------------------

def _flag(value: bool) -> str:
    return "true" if value else "false"


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _secs(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value) / 1e6  # SQLite may hand back microseconds


def build(data: Gathered) -> Iterator[Metric]:
    """The metric families for one scrape, from ``gather``'s rows."""
    yield from _node_families(data)
    yield from _deployment_families(data)
    yield from _copy_families(data)
    yield from _operation_families(data)
    yield from _placement_families(data)
    yield from _request_families(data)
    up = GaugeMetricFamily("aim_metrics_redis_up", "1 when the console read Redis (snapshots and counters) for this scrape.")
    up.add_metric([], 1.0 if data.redis_ok else 0.0)
    yield up


def _node_families(data: Gathered) -> Iterator[Metric]:
    from partitions.geometry import GeometryError, get_spec
    from partitions.models import AGENT_STALE_AFTER

    now_dt = timezone.now()
    N = ["node", "emulated"]
    G = ["node", "gpu", "emulated"]
    P = ["node", "gpu", "partition", "emulated"]
    node_info = GaugeMetricFamily("aim_node_info", "Node facts (value 1): backend, ROCm version; emulated=\"true\" for emulator/simulated nodes.",
                                  labels=N + ["backend", "rocm_version"])
    agent_up = GaugeMetricFamily("aim_node_agent_up", "1 when the node agent's heartbeat is fresher than 30 s.", labels=N)
    heartbeat_age = GaugeMetricFamily("aim_node_agent_heartbeat_age_seconds", "Seconds since the node agent's last heartbeat (absent: never seen).", labels=N)
    schedulable = GaugeMetricFamily("aim_node_schedulable", "1 when new replicas may be placed on the node (valid layout).", labels=N)
    nps = GaugeMetricFamily("aim_node_memory_mode", "Node memory (NPS) mode as a state set: 1 for the current mode, 0 for the others.", labels=N + ["mode"])
    tele_up = GaugeMetricFamily("aim_node_telemetry_available", "1 when a telemetry snapshot of the node is cached (the agent sampled within 30 s).", labels=N)
    tele_age = GaugeMetricFamily("aim_node_telemetry_snapshot_age_seconds", "Age of the node's cached telemetry snapshot.", labels=N)
    gpu_info = GaugeMetricFamily(
        "aim_gpu_info",
        "GPU facts (value 1): model, current compute and memory mode.",
        labels=G + ["gpu_model", "compute_mode", "memory_mode"],
    )
    gpu_mode = GaugeMetricFamily(
        "aim_gpu_compute_mode",
        "GPU compute mode as a state set: 1 for the current mode, 0 for the other modes of its model.",
        labels=G + ["mode"],
    )
    gpu_health = GaugeMetricFamily("aim_gpu_health", "GPU health as a state set (healthy, unhealthy, unknown).", labels=G + ["state"])
    gpu_sched = GaugeMetricFamily("aim_gpu_schedulable", "1 when the GPU may receive new replicas.", labels=G)
    gpu_mem_total = GaugeMetricFamily("aim_gpu_memory_total_bytes", "GPU VRAM from the inventory.", labels=G)
    gpu_mem_used = GaugeMetricFamily("aim_gpu_memory_used_bytes", "VRAM in use on the GPU (sum of its partitions), from telemetry.", labels=G)
    gpu_power = GaugeMetricFamily("aim_gpu_power_watts", "GPU package power, from telemetry.", labels=G)
    gpu_temp = GaugeMetricFamily("aim_gpu_temperature_celsius", "GPU temperature (sensor: hotspot or memory), from telemetry.", labels=G + ["sensor"])
    gpu_act = GaugeMetricFamily("aim_gpu_gfx_activity_ratio", "Whole-GPU GFX activity, 0-1, from telemetry.", labels=G)
    gpu_ecc = CounterMetricFamily("aim_gpu_ecc_uncorrectable_errors", "Uncorrectable ECC errors the GPU reports (cumulative, from telemetry).", labels=G)
    part_info = GaugeMetricFamily(
        "aim_partition_info",
        "Partition facts (value 1): logical index on the node, compute mode of its GPU.",
        labels=P + ["logical_index", "compute_mode"],
    )
    part_total = GaugeMetricFamily("aim_partition_memory_total_bytes", "Partition memory (nominal share from the geometry).", labels=P)
    part_used = GaugeMetricFamily("aim_partition_memory_used_bytes", "VRAM in use on the partition, from telemetry.", labels=P)
    part_act = GaugeMetricFamily(
        "aim_partition_gfx_activity_ratio",
        "Partition GFX activity, 0-1, from telemetry; derived=\"true\" where it is derived from the primary partition's per-XCP busy counters.",
        labels=P + ["derived"],
    )
    part_reserved = GaugeMetricFamily(
        "aim_partition_memory_reserved_bytes",
        "Memory the replica bound to the partition needs (0: free), by model.",
        labels=P + ["model"],
    )

    nodes: dict[int, tuple[str, str]] = {}
    for pk, name, emulated, backend, memory_mode, heartbeat, layout_problem, rocm in data.nodes:
        flag = _flag(emulated)
        nodes[pk] = (name, flag)
        node_info.add_metric([name, flag, backend, rocm or ""], 1.0)
        alive = heartbeat is not None and now_dt - heartbeat < AGENT_STALE_AFTER
        agent_up.add_metric([name, flag], 1.0 if alive else 0.0)
        if heartbeat is not None:
            heartbeat_age.add_metric([name, flag], max(0.0, (now_dt - heartbeat).total_seconds()))
        schedulable.add_metric([name, flag], 0.0 if layout_problem else 1.0)
        for mode in ("NPS1", "NPS2", "NPS4"):
            nps.add_metric([name, flag, mode], 1.0 if memory_mode == mode else 0.0)
        snap = data.snapshots.get(name)
        tele_up.add_metric([name, flag], 1.0 if snap else 0.0)
        if snap:
            tele_age.add_metric([name, flag], max(0.0, data.now - float(snap.get("ts") or 0.0)))

    gpu_modes: dict[tuple[int, int], str] = {}
    for node_id, index, gpu_model, compute, memory, health, sched, vram_mb in data.gpus:
        name, flag = nodes.get(node_id, ("", ""))
        if not name:
            continue
        labels = [name, str(index), flag]
        gpu_modes[(node_id, index)] = compute or ""
        gpu_info.add_metric(labels + [gpu_model or "", compute or "", memory or ""], 1.0)
        try:
            modes = [str(m) for m in get_spec(gpu_model).compute_modes] if gpu_model else []
        except GeometryError:
            modes = []
        for mode in modes or ([compute] if compute else []):
            gpu_mode.add_metric(labels + [mode], 1.0 if mode == compute else 0.0)
        for state in GPU_HEALTH_STATES:
            gpu_health.add_metric(labels + [state], 1.0 if health == state else 0.0)
        gpu_sched.add_metric(labels, 1.0 if sched else 0.0)
        if vram_mb:
            gpu_mem_total.add_metric(labels, float(vram_mb) * MIB)

    for node_id, gpu_index, index, logical, memory_gb, state, model, required_gb, per_gpu_gb, gpus_needed, _started in data.partitions:
        name, flag = nodes.get(node_id, ("", ""))
        if not name:
            continue
        labels = [name, str(gpu_index), str(index), flag]
        part_info.add_metric(labels + [str(logical), gpu_modes.get((node_id, gpu_index), "")], 1.0)
        if memory_gb:
            part_total.add_metric(labels, float(memory_gb) * GIB)
        if state in Deployment.ACTIVE_STATES and model:
            need = replica_gb_per_gpu(required_gb or 0.0, gpus_needed or 1, per_gpu_gb or 0.0)
            part_reserved.add_metric(labels + [model], float(need or 0.0) * GIB)

    for name, flag in nodes.values():
        snap = data.snapshots.get(name)
        if not snap:
            continue
        for gpu in snap.get("gpus", ()):
            if gpu.get("index", -1) < 0:  # a device the inventory does not know yet
                continue
            labels = [name, str(gpu["index"]), flag]
            if gpu.get("power_w") is not None:
                gpu_power.add_metric(labels, float(gpu["power_w"]))
            for sensor, key in (("hotspot", "temperature_c"), ("memory", "mem_temperature_c")):
                if gpu.get(key) is not None:
                    gpu_temp.add_metric(labels + [sensor], float(gpu[key]))
            if gpu.get("gfx_activity") is not None:
                gpu_act.add_metric(labels, float(gpu["gfx_activity"]) / 100.0)
            if gpu.get("ecc_uncorrectable") is not None:
                gpu_ecc.add_metric(labels, float(gpu["ecc_uncorrectable"]))
            used = [p["vram_used_mb"] for p in gpu.get("partitions", ()) if p.get("vram_used_mb") is not None]
            if used:
                gpu_mem_used.add_metric(labels, float(sum(used)) * MIB)
            for part in gpu.get("partitions", ()):
                plabels = [name, str(gpu["index"]), str(part["index"]), flag]
                if part.get("vram_used_mb") is not None:
                    part_used.add_metric(plabels, float(part["vram_used_mb"]) * MIB)
                if part.get("gfx_activity") is not None:
                    part_act.add_metric(plabels + [_flag(bool(part.get("derived")))], float(part["gfx_activity"]) / 100.0)

    yield from (node_info, agent_up, heartbeat_age, schedulable, nps, tele_up, tele_age,
                gpu_info, gpu_mode, gpu_health, gpu_sched, gpu_mem_total, gpu_mem_used, gpu_power, gpu_temp,
                gpu_act, gpu_ecc, part_info, part_total, part_used, part_act, part_reserved)


def _copy_families(data: Gathered) -> Iterator[Metric]:
    """Running copies of replicas as the nodes' runtimes report them (serving.Replica)."""
    L = ["model", "runtime", "state", "emulated"]
    copies = GaugeMetricFamily("aim_replica_copies", "Replica copies by model, runtime, state (starting, ready, restarting, "
                               "failed, stopped) and whether their node is emulated.", labels=L)
    restarts = GaugeMetricFamily("aim_replica_copy_restarts", "Restarts of the current replica copies (their supervisor "
                                 "restarted a crashed or unresponsive process), by model, runtime, state and emulated.", labels=L)
    for row in sorted(data.copies, key=lambda r: (r["deployment__profile__model__hf_id"], r["runtime"], r["state"], r["node__emulated"])):
        labels = [row["deployment__profile__model__hf_id"], row["runtime"], row["state"], _flag(row["node__emulated"])]
        copies.add_metric(labels, float(row["n"]))
        restarts.add_metric(labels, float(row["restarts"] or 0))
    yield from (copies, restarts)


def _deployment_families(data: Gathered) -> Iterator[Metric]:
    deployments = GaugeMetricFamily("aim_deployments", "Deployments by model and state.", labels=["model", "state"])
    replicas = GaugeMetricFamily("aim_deployment_replicas", "Replicas requested by deployments, by model and state.", labels=["model", "state"])
    bound = GaugeMetricFamily("aim_deployment_partitions_bound", "Partitions held by active deployments' replicas, by model.", labels=["model"])
    started = GaugeMetricFamily("aim_deployment_partitions_started", "Held partitions whose replica the node agent has started, by model.", labels=["model"])
    reserved = GaugeMetricFamily("aim_deployment_memory_reserved_bytes", "Memory reserved on partitions by active deployments, by model.", labels=["model"])

    counts: dict[tuple[str, str], tuple[int, int]] = {}
    models: set[str] = set()
    for row in data.deployments:
        model = row["profile__model__hf_id"]
        models.add(model)
        counts[(model, row["state"])] = (row["n"], row["replicas"] or 0)
    per_model: dict[str, list[float]] = {}
    for _n, _g, _i, _l, _m, state, model, required_gb, per_gpu_gb, gpus_needed, started_at in data.partitions:
        if model is None or state not in Deployment.ACTIVE_STATES:
            continue
        models.add(model)
        need = replica_gb_per_gpu(required_gb or 0.0, gpus_needed or 1, per_gpu_gb or 0.0)
        acc = per_model.setdefault(model, [0, 0, 0.0])
        acc[0] += 1
        acc[1] += 1 if started_at is not None else 0
        acc[2] += float(need or 0.0) * GIB
    for model in sorted(models):
        for state in Deployment.State.values:
            n, r = counts.get((model, state), (0, 0))
            deployments.add_metric([model, state], float(n))
            replicas.add_metric([model, state], float(r))
        acc = per_model.get(model, [0, 0, 0.0])
        bound.add_metric([model], float(acc[0]))
        started.add_metric([model], float(acc[1]))
        reserved.add_metric([model], acc[2])
    yield from (deployments, replicas, bound, started, reserved)


def _operation_families(data: Gathered) -> Iterator[Metric]:
    requested = CounterMetricFamily(
        "aim_operations_requested",
        "Reconfigurations requested, by kind (compute: a GPU's mode; memory: a node's NPS mode).",
        labels=["kind"],
    )
    started = CounterMetricFamily("aim_operations_started", "Reconfigurations a node agent started, by kind.", labels=["kind"])
    finished = CounterMetricFamily(
        "aim_operations_finished",
        "Reconfigurations finished, by kind and result (succeeded, failed, rolled_back).",
        labels=["kind", "result"],
    )
    pending = GaugeMetricFamily("aim_operations_pending", "Reconfigurations waiting for a node agent (queue depth), by kind.", labels=["kind"])
    running = GaugeMetricFamily(
        "aim_operations_in_progress",
        "Reconfigurations being run, by kind and state (draining, applying, verifying).",
        labels=["kind", "state"],
    )
    oldest = GaugeMetricFamily(
        "aim_operations_oldest_active_age_seconds",
        "Age of the oldest unfinished reconfiguration, by kind (0 when none).",
        labels=["kind"],
    )
    duration = HistogramMetricFamily(
        "aim_operation_duration_seconds",
        "Time from start to finish of reconfigurations, by kind and result (from the operation rows).",
        labels=["kind", "result"],
    )

    rows = {(r["kind"], r["state"]): r for r in data.operations}
    now_dt = timezone.now()
    for kind in OPERATION_KINDS:
        kind_rows = [r for (k, _s), r in rows.items() if k == kind]
        requested.add_metric([kind], float(sum(r["n"] for r in kind_rows)))
        started.add_metric([kind], float(sum(r["started"] for r in kind_rows)))
        for result in OPERATION_RESULTS:
            r = rows.get((kind, result))
            finished.add_metric([kind, result], float(r["n"] if r else 0))
            buckets = [(floatToGoString(le), float(r[f"le_{i}"] if r else 0)) for i, le in enumerate(OPERATION_BUCKETS)]
            buckets.append(("+Inf", float(r["timed"] if r else 0)))
            duration.add_metric([kind, result], buckets, _secs(r["duration_sum"]) if r else 0.0)
        p = rows.get((kind, "pending"))
        pending.add_metric([kind], float(p["n"] if p else 0))
        for state in OPERATION_ACTIVE_STATES:
            r = rows.get((kind, state))
            running.add_metric([kind, state], float(r["n"] if r else 0))
        active = [r["oldest"] for (k, s), r in rows.items() if k == kind and s in ("pending", *OPERATION_ACTIVE_STATES) and r["oldest"]]
        oldest.add_metric([kind], max(0.0, (now_dt - min(active)).total_seconds()) if active else 0.0)
    yield from (requested, started, finished, pending, running, oldest, duration)


def _placement_families(data: Gathered) -> Iterator[Metric]:
    decisions = CounterMetricFamily(
        "aim_placement_decisions",
        "Placement decisions by source (deployment, plan) and result (placed, unplaced, conflict).",
        labels=["source", "result"],
    )
    failures = CounterMetricFamily("aim_placement_failures", "Replicas that could not be placed, by source and reason class.", labels=["source", "reason"])
    for source in PLACEMENT_SOURCES:
        for result in PLACEMENT_RESULTS:
            decisions.add_metric([source, result], float(data.placement.get(f"d{SEP}{source}{SEP}{result}", 0)))
        for reason in PLACEMENT_REASONS:
            failures.add_metric([source, reason], float(data.placement.get(f"f{SEP}{source}{SEP}{reason}", 0)))
    yield from (decisions, failures)


def _histogram(entry: dict[str, float], kind: str, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Cumulative Prometheus buckets from per-bucket counts ``<kind>\t<i>`` (i = len(bounds): +Inf)."""
    cumulative = 0.0
    buckets = []
    for i, le in enumerate(bounds):
        cumulative += entry.get(f"{kind}{SEP}{i}", 0.0)
        buckets.append((floatToGoString(le), cumulative))
    cumulative += entry.get(f"{kind}{SEP}{len(bounds)}", 0.0)
    buckets.append(("+Inf", cumulative))
    return buckets


def _request_families(data: Gathered) -> Iterator[Metric]:
    L = ["model", "emulated"]
    requests = CounterMetricFamily(
        "aim_model_requests",
        "Inference requests served, by model and result (ok, error, cancelled: the client went away); "
        "emulated=\"true\" for replicas on emulated nodes (and the synthetic traffic of emulated replicas).",
        labels=L + ["result"],
    )
    tokens = CounterMetricFamily("aim_model_generated_tokens", "Tokens generated, by model (throughput: rate of this).", labels=L)
    prompt = CounterMetricFamily("aim_model_prompt_tokens", "Prompt tokens of requests served through the gateway, by model.", labels=L)
    latency = HistogramMetricFamily("aim_model_request_duration_seconds",
                                    "Request latency from arrival to the last byte, by model (ok and error requests).", labels=L)
    ttft = HistogramMetricFamily("aim_model_time_to_first_token_seconds",
                                 "Streamed requests through the gateway: arrival to the first token sent, by model.", labels=L)
    itl = HistogramMetricFamily("aim_model_inter_token_latency_seconds",
                                "Streamed requests through the gateway: time between consecutive tokens, by model.", labels=L)
    series: dict[tuple[str, str], dict[str, float]] = {}
    for name, value in data.requests.items():
        parts = name.split(SEP)
        if len(parts) < 3:
            continue
        kind, model, flag, rest = parts[0], parts[1], parts[2], parts[3:]
        entry = series.setdefault((model, flag), {})
        key = kind + (SEP + rest[0] if rest else "")
        entry[key] = float(value)
    for (model, flag), entry in sorted(series.items()):
        labels = [model, flag]
        for result in REQUEST_RESULTS:
            requests.add_metric(labels + [result], entry.get(f"n{SEP}{result}", 0.0))
        tokens.add_metric(labels, entry.get("t", 0.0))
        latency.add_metric(labels, _histogram(entry, "b", REQUEST_BUCKETS), entry.get("s", 0.0))
        if any(k.startswith(("fb", "ib", "p")) for k in entry):  # series the gateway feeds (not the emulated runtime's)
            prompt.add_metric(labels, entry.get("p", 0.0))
            ttft.add_metric(labels, _histogram(entry, "fb", TTFT_BUCKETS), entry.get("fs", 0.0))
            itl.add_metric(labels, _histogram(entry, "ib", ITL_BUCKETS), entry.get("is", 0.0))
    yield from (requests, tokens, prompt, latency, ttft, itl)


class ConsoleCollector:
    """The custom collector behind ``/metrics``: ``gather`` then ``build`` on each scrape."""

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        yield from build(gather(self.client))
        took = GaugeMetricFamily("aim_metrics_collect_duration_seconds", "Time the console took to gather and build this scrape's metrics.")
        took.add_metric([], time.perf_counter() - started)
        yield took


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(ConsoleCollector())  # type: ignore[arg-type]  # a collector by protocol (collect()), not by subclass


# --- the view -------------------------------------------------------------------------------------

@require_GET
@login_not_required
@metrics_access_required
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics``: Prometheus text format (see the module doc and deploy/README.md); who may
    read it is decided in aimconsole/access.py."""
    response = HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
