"""The node agent's own ``/metrics``: the per-node, per-GPU and per-partition series of one node.

The console's ``/metrics`` (observability/metrics.py) keeps only fleet aggregates and console
series, so that its size does not grow with the fleet; every series with a ``node`` label comes
from here, one small scrape per node (a CPX MI300X node: ~700 series, ~70 KiB).

``run_agent --metrics-port PORT`` (setting ``AGENT_METRICS_PORT``, environment
``AIM_AGENT_METRICS_PORT``; off by default) starts ``start_exporter`` in the agent's loops
process: prometheus-client's own threaded HTTP server on a daemon thread. A scrape runs on a
thread of that server, never on a loop's (the loops only share the GIL with it: a scrape
takes a few milliseconds every scrape interval), and reads:

* the node's own rows: the node, its GPUs and partitions (3 queries), and what holds each
  partition through the workloads port (one query per provider),
* the node's latest telemetry snapshot, as the sampler cached it in Redis (one GET), so the
  exporter shares no state with the sampler and a scrape never calls the hardware.

Every series has ``node`` and ``emulated`` labels (``emulated="true"`` for emulator and
simulated nodes: their numbers are not real hardware). Names, labels and meanings are the
ones the console exported before (deploy/README.md lists them).

Discovery: while the exporter runs, the agent refreshes ``<prefix>agent-exporter:<node>`` in
Redis (its advertised ``host:port``, expiring after ``REGISTRATION_TTL_S``);
``exporter_targets`` turns those into Prometheus's file/HTTP service-discovery format, served
at the console's ``/metrics/agents`` and written by ``manage.py metrics_targets``.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.utils import timezone
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from partitions import workloads
from partitions.geometry import GeometryError, get_spec
from partitions.models import AGENT_STALE_AFTER, GPU, Node, Partition
from partitions.telemetry_store import key_prefix, snapshot_key

log = logging.getLogger(__name__)

GIB = 2**30
MIB = 2**20
GPU_HEALTH_STATES = tuple(GPU.Health.values)
MEMORY_MODES = ("NPS1", "NPS2", "NPS4")
# The agent re-registers every REGISTRATION_EVERY_S; a dead agent's entry lapses after the TTL
# (and Prometheus also sees its target fail: `up == 0`).
REGISTRATION_EVERY_S = 10.0
REGISTRATION_TTL_S = 45


def _flag(value: bool) -> str:
    return "true" if value else "false"


# --- gathering (one node's rows and snapshot) ---------------------------------------------------

@dataclass
class NodeRows:
    """What one agent scrape reads: the node's rows, occupants and cached snapshot."""

    name: str
    emulated: bool
    backend: str
    memory_mode: str
    rocm_version: str
    heartbeat_at: datetime | None
    layout_problem: str
    now: float
    gpus: list[tuple] = field(default_factory=list)  # (index, gpu_model, compute, memory, health, schedulable, vram_mb)
    partitions: list[tuple] = field(default_factory=list)  # (gpu_index, index, logical_index, memory_gb, model, reserved_gb)
    snapshot: dict[str, Any] | None = None
    redis_ok: bool = True


def gather_node(node_name: str, client: redis.Redis | None) -> NodeRows | None:
    """The rows of ``node_name`` (None when the node is not registered): 3 queries, one
    occupants call and, with ``client``, one Redis GET."""
    row = Node.objects.filter(name=node_name).values_list(
        "pk", "emulated", "backend", "memory_mode", "rocm_version", "agent_heartbeat_at", "layout_problem").first()
    if row is None:
        return None
    pk, emulated, backend, memory_mode, rocm, heartbeat, problem = row
    rows = NodeRows(name=node_name, emulated=emulated, backend=backend, memory_mode=memory_mode or "",
                    rocm_version=rocm or "", heartbeat_at=heartbeat, layout_problem=problem or "", now=time.time())
    rows.gpus = list(GPU.objects.filter(node_id=pk).order_by("index").values_list(
        "index", "gpu_model", "compute_mode", "memory_mode", "health", "schedulable", "vram_mb"))
    parts = list(Partition.objects.filter(gpu__node_id=pk).order_by("gpu__index", "index").values_list(
        "pk", "gpu__index", "index", "logical_index", "memory_gb"))
    held = workloads.occupants(partition_ids=[p[0] for p in parts])
    for part_id, gpu_index, index, logical, memory_gb in parts:
        occupant = held.get(part_id)
        rows.partitions.append((gpu_index, index, logical, memory_gb,
                                occupant.model if occupant else "", (occupant.memory_gb or 0.0) if occupant else 0.0))
    if client is not None:
        try:
            raw = client.get(snapshot_key(node_name))
            rows.snapshot = json.loads(raw) if raw else None  # type: ignore[arg-type]  # sync client: bytes
        except redis.RedisError as exc:
            log.warning("agent metrics: Redis unavailable (%s); serving inventory metrics only", exc)
            rows.redis_ok = False
    return rows


# --- building the families ------------------------------------------------------------------------

def node_families(rows: NodeRows) -> Iterator[Metric]:
    """The node's metric families: node facts, GPUs and partitions (inventory and telemetry)."""
    name, flag = rows.name, _flag(rows.emulated)
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
    gpu_info = GaugeMetricFamily("aim_gpu_info", "GPU facts (value 1): model, current compute and memory mode.",
                                 labels=G + ["gpu_model", "compute_mode", "memory_mode"])
    gpu_mode = GaugeMetricFamily("aim_gpu_compute_mode", "GPU compute mode as a state set: 1 for the current mode, 0 for the other modes of its model.",
                                 labels=G + ["mode"])
    gpu_health = GaugeMetricFamily("aim_gpu_health", "GPU health as a state set (healthy, unhealthy, unknown).", labels=G + ["state"])
    gpu_sched = GaugeMetricFamily("aim_gpu_schedulable", "1 when the GPU may receive new replicas.", labels=G)
    gpu_mem_total = GaugeMetricFamily("aim_gpu_memory_total_bytes", "GPU VRAM from the inventory.", labels=G)
    gpu_mem_used = GaugeMetricFamily("aim_gpu_memory_used_bytes", "VRAM in use on the GPU (sum of its partitions), from telemetry.", labels=G)
    gpu_power = GaugeMetricFamily("aim_gpu_power_watts", "GPU package power, from telemetry.", labels=G)
    gpu_temp = GaugeMetricFamily("aim_gpu_temperature_celsius", "GPU temperature (sensor: hotspot or memory), from telemetry.", labels=G + ["sensor"])
    gpu_act = GaugeMetricFamily("aim_gpu_gfx_activity_ratio", "Whole-GPU GFX activity, 0-1, from telemetry.", labels=G)
    gpu_ecc = CounterMetricFamily("aim_gpu_ecc_uncorrectable_errors", "Uncorrectable ECC errors the GPU reports (cumulative, from telemetry).", labels=G)
    part_info = GaugeMetricFamily("aim_partition_info", "Partition facts (value 1): logical index on the node, compute mode of its GPU.",
                                  labels=P + ["logical_index", "compute_mode"])
    part_total = GaugeMetricFamily("aim_partition_memory_total_bytes", "Partition memory (nominal share from the geometry).", labels=P)
    part_used = GaugeMetricFamily("aim_partition_memory_used_bytes", "VRAM in use on the partition, from telemetry.", labels=P)
    part_act = GaugeMetricFamily(
        "aim_partition_gfx_activity_ratio",
        "Partition GFX activity, 0-1, from telemetry; derived=\"true\" where it is derived from the primary partition's per-XCP busy counters.",
        labels=P + ["derived"])
    part_reserved = GaugeMetricFamily("aim_partition_memory_reserved_bytes", "Memory the replica bound to the partition needs (0: free), by model.",
                                      labels=P + ["model"])

    now_dt = timezone.now()
    node_info.add_metric([name, flag, rows.backend, rows.rocm_version], 1.0)
    alive = rows.heartbeat_at is not None and now_dt - rows.heartbeat_at < AGENT_STALE_AFTER
    agent_up.add_metric([name, flag], 1.0 if alive else 0.0)
    if rows.heartbeat_at is not None:
        heartbeat_age.add_metric([name, flag], max(0.0, (now_dt - rows.heartbeat_at).total_seconds()))
    schedulable.add_metric([name, flag], 0.0 if rows.layout_problem else 1.0)
    for mode in MEMORY_MODES:
        nps.add_metric([name, flag, mode], 1.0 if rows.memory_mode == mode else 0.0)
    snap = rows.snapshot
    tele_up.add_metric([name, flag], 1.0 if snap else 0.0)
    if snap:
        tele_age.add_metric([name, flag], max(0.0, rows.now - float(snap.get("ts") or 0.0)))

    modes_of: dict[int, str] = {}
    for index, gpu_model, compute, memory, health, sched, vram_mb in rows.gpus:
        labels = [name, str(index), flag]
        modes_of[index] = compute or ""
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

    for gpu_index, index, logical, memory_gb, model, reserved_gb in rows.partitions:
        labels = [name, str(gpu_index), str(index), flag]
        part_info.add_metric(labels + [str(logical), modes_of.get(gpu_index, "")], 1.0)
        if memory_gb:
            part_total.add_metric(labels, float(memory_gb) * GIB)
        if model:
            part_reserved.add_metric(labels + [model], float(reserved_gb) * GIB)

    for gpu in (snap or {}).get("gpus", ()):
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


def agent_families(rows: NodeRows | None, took_s: float) -> Iterator[Metric]:
    """The exporter's own series (no node labels: the target labels name the node)."""
    redis_up = GaugeMetricFamily("aim_agent_metrics_redis_up", "1 when the agent's exporter read the node's telemetry snapshot from Redis.")
    redis_up.add_metric([], 1.0 if rows is not None and rows.redis_ok else 0.0)
    took = GaugeMetricFamily("aim_agent_metrics_collect_duration_seconds", "Time the agent's exporter took to gather and build this scrape.")
    took.add_metric([], took_s)
    yield from (redis_up, took)


class NodeCollector:
    """The collector behind an agent's ``/metrics``: ``gather_node`` then ``node_families``.

    ``own_connection``: the exporter's server answers each scrape on a thread of its own
    (prometheus-client's threaded WSGI server), whose database connection is closed after the
    scrape so none lingers; never set it on a thread whose connection someone else manages."""

    def __init__(self, node_name: str, client: redis.Redis | None, *, own_connection: bool = False) -> None:
        self.node_name = node_name
        self.client = client
        self.own_connection = own_connection

    def collect(self) -> Iterable[Metric]:
        from django.db import close_old_connections, connection

        started = time.perf_counter()
        if self.own_connection:
            close_old_connections()
        try:
            rows = gather_node(self.node_name, self.client)
        finally:
            if self.own_connection:
                connection.close()
        if rows is not None:
            yield from node_families(rows)
        yield from agent_families(rows, time.perf_counter() - started)


def node_registry(node_name: str, client: redis.Redis | None, *, own_connection: bool = False) -> CollectorRegistry:
    """A registry holding only ``node_name``'s collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node_name, client, own_connection=own_connection))  # type: ignore[arg-type]  # by protocol
    return registry


# --- serving and discovery -----------------------------------------------------------------------

def exporter_key(node_name: str) -> str:
    """Where a running agent exporter advertises its address (``exporter_key("*")``: all)."""
    return f"{key_prefix()}agent-exporter:{node_name}"


def advertised_address(addr: str, port: int) -> str:
    """``host:port`` Prometheus should scrape: ``AGENT_METRICS_ADVERTISE`` when set (a name
    Prometheus resolves), else the bound address, else this host's name."""
    if settings.AGENT_METRICS_ADVERTISE:
        host = settings.AGENT_METRICS_ADVERTISE
    elif addr not in ("", "0.0.0.0", "::"):
        host = addr
    else:
        host = socket.getfqdn()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Exporter:
    """A running agent exporter: its HTTP server and the address it advertises."""

    def __init__(self, node_name: str, *, port: int, addr: str, client: redis.Redis) -> None:
        self.node_name = node_name
        self.client = client
        registry = node_registry(node_name, client, own_connection=True)
        self.server, self.thread = start_http_server(port, addr=addr, registry=registry)
        self.port = int(self.server.server_address[1])  # port 0: the one the OS picked
        self.address = advertised_address(addr, self.port)

    def register(self) -> None:
        """Advertise this exporter for service discovery (called every REGISTRATION_EVERY_S)."""
        emulated = Node.objects.filter(name=self.node_name).values_list("emulated", flat=True).first()
        entry = {"address": self.address, "node": self.node_name, "emulated": bool(emulated)}
        self.client.set(exporter_key(self.node_name), json.dumps(entry), ex=REGISTRATION_TTL_S)

    def stop(self) -> None:
        try:
            self.client.delete(exporter_key(self.node_name))
        except redis.RedisError:
            pass  # the entry lapses by itself
        self.server.shutdown()
        self.server.server_close()


def start_exporter(node_name: str, *, port: int, addr: str = "") -> Exporter:
    """Serve ``node_name``'s metrics on ``addr:port`` (port 0: any free port) on a daemon thread."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    exporter = Exporter(node_name, port=port, addr=addr or settings.AGENT_METRICS_ADDR, client=client)
    log.info("agent metrics for %s on http://%s/metrics", node_name, exporter.address)
    return exporter


def exporter_targets(client: redis.Redis) -> list[dict[str, Any]]:
    """The running agent exporters in Prometheus's file_sd / http_sd format, one group per node,
    labelled ``node`` and ``emulated`` (with ``honor_labels: true`` these are the same values the
    exporter puts on its series; ``up`` gets them too). Registered nodes only, in name order:
    one query and one MGET."""
    names = list(Node.objects.order_by("name").values_list("name", flat=True))
    if not names:
        return []
    raws: list[bytes | None] = client.mget([exporter_key(n) for n in names])  # type: ignore[assignment]  # sync client
    groups = []
    for raw in raws:
        if raw is None:
            continue
        entry = json.loads(raw)
        groups.append({"targets": [entry["address"]],
                       "labels": {"node": entry["node"], "emulated": _flag(bool(entry.get("emulated")))}})
    return groups
