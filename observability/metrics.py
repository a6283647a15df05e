"""Prometheus metrics: ``/metrics``. A leaf: it reads every app's models and the counters
(aimconsole/counters.py); nothing imports it but the URLconf.

The console exports **fleet-level aggregates and console series only**, so a scrape's size
does not grow with the fleet: nodes, GPUs and partitions counted by GPU model, compute and
memory mode, health, agent state and ``emulated``; deployments, replicas and reserved memory by
model and state; operations; placement decisions; model requests. Every series with a
``node`` label comes from the node agents' own exporters (partitions/exporter.py, scraped per
node; the console lists them for discovery at ``/metrics/agents``).

The scrape path (``ConsoleCollector``) reads only:

* the counters below, kept in Redis hashes, and the cached fleet aggregates (one round trip),
* no database query while the cached fleet aggregates are fresh,

whatever the fleet size. The fleet aggregates (``fleet_rows``: nodes, GPUs and partitions
grouped by their facts, partitions held by replicas grouped by model, deployments grouped by
model and state, replica copies, reconfigurations grouped by kind and state with their
duration buckets) are seven GROUP BY queries whose answers are small but whose
cost grows with the tables they scan; they are refreshed off the scrape path, at most every
``METRICS_FLEET_REFRESH_S`` seconds for the whole console (see ``gather``). The console reads
no telemetry snapshot and never calls a hardware backend. Every family name carries its unit;
labels are bounded (model, GPU model, mode, state, kind, result, reason class): never node
names, request ids or user names. Every series counting hardware also has ``emulated``
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

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from aimconsole.access import metrics_access_required
from aimconsole.counters import (
    GIB,
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
from partitions.exporter import exporter_targets
from serving.models import Deployment, DeploymentSlot, Replica

log = logging.getLogger(__name__)


# --- gathering (the scrape path's I/O) ----------------------------------------------------------

@dataclass
class Gathered:
    """Everything one scrape reads: the fleet aggregates (``fleet_rows``, cached or not), the
    operations and the Redis counters."""

    now: float
    nodes: list[dict] = field(default_factory=list)
    gpus: list[dict] = field(default_factory=list)
    partitions: list[dict] = field(default_factory=list)
    held: list[dict] = field(default_factory=list)
    deployments: list[dict] = field(default_factory=list)
    copies: list[dict] = field(default_factory=list)
    operations: list[dict] = field(default_factory=list)
    placement: dict[str, str] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)
    redis_ok: bool = True
    fleet_age_s: float = 0.0  # age of the fleet aggregates (0: computed for this scrape)


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


FLEET_ROWS = ("nodes", "gpus", "partitions", "held", "deployments", "copies", "operations")
# A cached copy older than this is not served (its refresher died): the scrape recomputes.
FLEET_MAX_AGE_S = 120


def fleet_key() -> str:
    """The Redis key of the cached fleet aggregates, under the console's key prefix."""
    return f"{settings.REDIS_KEY_PREFIX}metrics:fleet"


def fleet_rows() -> dict[str, list[dict]]:
    """The fleet aggregates: 7 GROUP BY queries whose answers are bounded by the distinct GPU
    models, modes, states and models (not the fleet), but whose cost grows with the tables
    they scan (64,000 partitions at 1,000 CPX nodes). JSON-safe rows."""
    from partitions.models import AGENT_STALE_AFTER, GPU, Node, Partition

    fresh = Q(agent_heartbeat_at__gte=timezone.now() - AGENT_STALE_AFTER)
    rows: dict[str, Any] = {}
    rows["nodes"] = Node.objects.order_by().values("emulated", "backend", "memory_mode").annotate(
        n=Count("pk"), agent_up=Count("pk", filter=fresh), valid_layout=Count("pk", filter=Q(layout_problem="")))
    rows["gpus"] = GPU.objects.order_by().values(
        "node__emulated", "gpu_model", "compute_mode", "memory_mode", "health", "schedulable").annotate(
        n=Count("pk"), vram_mb=Sum("vram_mb"))
    rows["partitions"] = Partition.objects.order_by().values(
        "gpu__node__emulated", "gpu__gpu_model", "gpu__compute_mode").annotate(
        n=Count("pk"), memory_gb=Sum("memory_gb"), held=Count("slot"))
    rows["held"] = DeploymentSlot.objects.order_by().filter(deployment__state__in=Deployment.ACTIVE_STATES).values(
        "deployment__profile__model__hf_id", "deployment__profile__memory_required_gb",
        "deployment__profile__gpus_needed", "deployment__profile__per_gpu_gb").annotate(
        n=Count("pk"), started=Count("pk", filter=Q(started_at__isnull=False)))
    rows["deployments"] = Deployment.objects.order_by().values("state", "profile__model__hf_id").annotate(
        n=Count("pk"), replicas=Sum("replicas"))
    rows["copies"] = Replica.objects.order_by().values(
        "deployment__profile__model__hf_id", "runtime", "state", "node__emulated").annotate(n=Count("pk"), restarts=Sum("restarts"))
    # JSON-safe: the oldest creation time as a Unix timestamp, the duration sum in seconds.
    rows["operations"] = [{**r, "oldest": r["oldest"].timestamp() if r["oldest"] else None, "duration_sum": _secs(r["duration_sum"])}
                          for r in operations_query()]
    return {name: list(rows[name]) for name in FLEET_ROWS}


def refresh_fleet_rows(client: redis.Redis) -> dict[str, list[dict]]:
    """Recompute the fleet aggregates and cache them (``{"ts", "rows"}``, expiring after
    FLEET_MAX_AGE_S)."""
    rows = fleet_rows()
    client.set(fleet_key(), json.dumps({"ts": time.time(), "rows": rows}), ex=FLEET_MAX_AGE_S)
    return rows


def _refresh_in_background(client: redis.Redis) -> None:
    """Refresh the cached aggregates on a daemon thread, unless another process or thread is
    already at it (a Redis lock, so N console replicas and HA Prometheus pairs refresh once)."""
    lock = fleet_key() + ":refreshing"
    if not client.set(lock, "1", nx=True, ex=60):
        return

    def run() -> None:
        from django.db import close_old_connections, connection

        close_old_connections()
        try:
            refresh_fleet_rows(client)
        except Exception:  # the next scrape tries again; the cached copy keeps serving meanwhile
            log.exception("metrics: refreshing the fleet aggregates failed")
        finally:
            connection.close()
            try:
                client.delete(lock)
            except redis.RedisError:
                pass  # it expires

    threading.Thread(target=run, name="metrics-fleet-refresh", daemon=True).start()


def _cached(raw: bytes | None, now: float) -> tuple[dict[str, list[dict]], float] | None:
    if not raw:
        return None
    try:
        entry = json.loads(raw)
        age = now - float(entry["ts"])
        rows = entry["rows"]
    except (ValueError, KeyError, TypeError):
        return None
    if age > FLEET_MAX_AGE_S or not all(name in rows for name in FLEET_ROWS):
        return None
    return rows, max(0.0, age)  # another replica's clock may run a little ahead


def gather(client: redis.Redis | None = None) -> Gathered:
    """Read what one scrape needs: one Redis pipeline (the counters and the cached fleet
    aggregates), and no database query while the cached copy is fresh.

    The fleet aggregates (``fleet_rows``) are computed off the scrape path once the console
    caches them (setting ``METRICS_FLEET_REFRESH_S`` > 0): a scrape serves the cached copy and,
    when it is older than that many seconds, starts one background refresh for the whole
    console (stale-while-revalidate), so a scrape's cost does not grow with the fleet and
    ``aim_fleet_aggregates_age_seconds`` says how old the numbers are. Without a cached copy
    (the first scrape, Redis flushed) or with the setting at 0 the scrape computes them."""
    data = Gathered(now=time.time())
    refresh_s = float(settings.METRICS_FLEET_REFRESH_S)
    rows: dict[str, list[dict]] | None = None
    try:
        client = client or redis_client()
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(placement_key())
        pipe.hgetall(requests_key())
        if refresh_s > 0:
            pipe.get(fleet_key())
        results = pipe.execute()
        data.placement = {k.decode(): v.decode() for k, v in results[0].items()}
        data.requests = {k.decode(): v.decode() for k, v in results[1].items()}
        if refresh_s > 0:
            cached = _cached(results[2], data.now)
            if cached is None:
                rows = refresh_fleet_rows(client)
            else:
                rows, data.fleet_age_s = cached
                if data.fleet_age_s > refresh_s:
                    _refresh_in_background(client)
    except redis.RedisError as exc:
        log.warning("metrics: Redis unavailable (%s); serving database metrics only", exc)
        data.redis_ok = False
    if rows is None:
        rows = fleet_rows()
    for name in FLEET_ROWS:
        setattr(data, name, rows[name])
    return data


# --- building the families (pure) ---------------------------------------------------------------

def _flag(value: bool) -> str:
    return "true" if value else "false"


def _secs(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value) / 1e6  # SQLite may hand back microseconds


def build(data: Gathered) -> Iterator[Metric]:
    """The metric families for one scrape, from ``gather``'s rows."""
    yield from _fleet_families(data)
    yield from _deployment_families(data)
    yield from _copy_families(data)
    yield from _operation_families(data)
    yield from _placement_families(data)
    yield from _request_families(data)
    up = GaugeMetricFamily("aim_metrics_redis_up", "1 when the console read Redis (counters, cached aggregates) for this scrape.")
    up.add_metric([], 1.0 if data.redis_ok else 0.0)
    age = GaugeMetricFamily("aim_fleet_aggregates_age_seconds",
                            "Age of the aim_fleet_*, aim_deployment* and aim_replica_* numbers (0: computed for this scrape).")
    age.add_metric([], data.fleet_age_s)
    yield from (up, age)


def _fleet_families(data: Gathered) -> Iterator[Metric]:
    """Nodes, GPUs and partitions counted by their facts (the per-node series: the agents)."""
    NL = ["emulated", "backend", "memory_mode"]
    nodes = GaugeMetricFamily("aim_fleet_nodes", "Registered nodes, by backend and memory (NPS) mode; emulated=\"true\" for emulator/simulated nodes.",
                              labels=NL)
    agents = GaugeMetricFamily("aim_fleet_nodes_agent_up", "Nodes whose agent's heartbeat is fresher than 30 s.", labels=NL)
    sched = GaugeMetricFamily("aim_fleet_nodes_schedulable", "Nodes with a valid layout (new replicas may be placed there).", labels=NL)
    for row in sorted(data.nodes, key=lambda r: (r["emulated"], r["backend"], r["memory_mode"] or "")):
        labels = [_flag(row["emulated"]), row["backend"], row["memory_mode"] or ""]
        nodes.add_metric(labels, float(row["n"]))
        agents.add_metric(labels, float(row["agent_up"]))
        sched.add_metric(labels, float(row["valid_layout"]))

    GL = ["emulated", "gpu_model", "compute_mode", "memory_mode", "health", "schedulable"]
    gpus = GaugeMetricFamily("aim_fleet_gpus", "GPUs by model, current compute and memory mode, health and schedulability.", labels=GL)
    vram: dict[tuple[str, str], float] = {}
    for row in sorted(data.gpus, key=lambda r: tuple(str(r[k]) for k in ("node__emulated", "gpu_model", "compute_mode", "memory_mode", "health"))):
        flag, model = _flag(row["node__emulated"]), row["gpu_model"] or ""
        gpus.add_metric([flag, model, row["compute_mode"] or "", row["memory_mode"] or "", row["health"] or "",
                         _flag(row["schedulable"])], float(row["n"]))
        vram[(flag, model)] = vram.get((flag, model), 0.0) + float(row["vram_mb"] or 0) * MIB
    gpu_mem = GaugeMetricFamily("aim_fleet_gpu_memory_total_bytes", "VRAM of the fleet's GPUs (inventory), by GPU model.",
                                labels=["emulated", "gpu_model"])
    for (flag, model), total in sorted(vram.items()):
        gpu_mem.add_metric([flag, model], total)

    PL = ["emulated", "gpu_model", "compute_mode"]
    parts = GaugeMetricFamily("aim_fleet_partitions", "Partitions (logical devices), by GPU model and compute mode.", labels=PL)
    held = GaugeMetricFamily("aim_fleet_partitions_held", "Partitions holding a replica, by GPU model and compute mode.", labels=PL)
    part_mem = GaugeMetricFamily("aim_fleet_partition_memory_total_bytes", "Nominal memory of the partitions, by GPU model and compute mode.",
                                 labels=PL)
    for row in sorted(data.partitions, key=lambda r: (r["gpu__node__emulated"], r["gpu__gpu_model"] or "", r["gpu__compute_mode"] or "")):
        labels = [_flag(row["gpu__node__emulated"]), row["gpu__gpu_model"] or "", row["gpu__compute_mode"] or ""]
        parts.add_metric(labels, float(row["n"]))
        held.add_metric(labels, float(row["held"]))
        part_mem.add_metric(labels, float(row["memory_gb"] or 0.0) * GIB)
    yield from (nodes, agents, sched, gpus, gpu_mem, parts, held, part_mem)


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
    for row in data.held:  # one row per (model, sizing): the per-partition share is the sizing's
        model = row["deployment__profile__model__hf_id"]
        models.add(model)
        need = replica_gb_per_gpu(row["deployment__profile__memory_required_gb"] or 0.0, row["deployment__profile__gpus_needed"] or 1,
                                  row["deployment__profile__per_gpu_gb"] or 0.0)
        acc = per_model.setdefault(model, [0, 0, 0.0])
        acc[0] += row["n"]
        acc[1] += row["started"]
        acc[2] += float(need or 0.0) * GIB * row["n"]
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
    for kind in OPERATION_KINDS:
        kind_rows = [r for (k, _s), r in rows.items() if k == kind]
        requested.add_metric([kind], float(sum(r["n"] for r in kind_rows)))
        started.add_metric([kind], float(sum(r["started"] for r in kind_rows)))
        for result in OPERATION_RESULTS:
            r = rows.get((kind, result))
            finished.add_metric([kind, result], float(r["n"] if r else 0))
            buckets = [(floatToGoString(le), float(r[f"le_{i}"] if r else 0)) for i, le in enumerate(OPERATION_BUCKETS)]
            buckets.append(("+Inf", float(r["timed"] if r else 0)))
            duration.add_metric([kind, result], buckets, float(r["duration_sum"]) if r else 0.0)
        p = rows.get((kind, "pending"))
        pending.add_metric([kind], float(p["n"] if p else 0))
        for state in OPERATION_ACTIVE_STATES:
            r = rows.get((kind, state))
            running.add_metric([kind, state], float(r["n"] if r else 0))
        active = [r["oldest"] for (k, s), r in rows.items() if k == kind and s in ("pending", *OPERATION_ACTIVE_STATES) and r["oldest"]]
        oldest.add_metric([kind], max(0.0, data.now - min(active)) if active else 0.0)
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


@require_GET
@login_not_required
@metrics_access_required
def agent_targets_view(request: HttpRequest) -> HttpResponse:
    """``/metrics/agents``: the node agents' exporters in Prometheus's HTTP service-discovery
    format (the same JSON as a file_sd file): one target group per running exporter, labelled
    ``node`` and ``emulated``. Same access rule as ``/metrics``; 503 while Redis is down (the
    agents advertise themselves there), so Prometheus keeps its last good list."""
    try:
        groups = exporter_targets(redis_client())
    except redis.RedisError as exc:
        return JsonResponse({"error": f"Redis unavailable: {exc}"}, status=503)
    response = JsonResponse(groups, safe=False)
    response["Cache-Control"] = "no-store"
    return response
