"""Simulated fleets in the database: N nodes x 8 GPUs registered in bulk, for benchmarks and
for trying the console at scale. The hardware half of ``manage.py simulate_fleet``.

Stable interface (benchmarks call it directly; the command is a thin edge over it):

- ``fleet_spec(nodes=, prefix="sim-", gpu_model="MI300X", compute_mode="CPX", memory_mode="NPS1",
  gpus_per_node=8) -> FleetSpec``: the validated request (``SimulationError`` with an operator's
  message for bad input; nothing is written).
- ``replace_simulated_nodes(spec) -> list[Node]``: deletes the nodes named ``<prefix><digits>``
  (only simulated ones: a real node with such a name is refused), then bulk-creates
  ``<prefix>0000`` .. : Node (backend ``simulated``, ``emulated=True``, runtime ``emulated``),
  GPU and Partition rows in the geometry's layout for the mode. A fixed number of queries per
  batch, whatever the fleet size.
- ``write_simulated_telemetry(spec, names, busy=) -> int``: one snapshot per node in the
  telemetry store (the agent's shape, partitions/telemetry.py ``shape``; ``emulated: true``) and
  its summary (partitions/aggregate.py ``node_summary``, as an agent stores it),
  expiring after ``ttl_s`` (an hour by default: there is no agent to renew it).
- ``refresh_simulated_fleet(spec, busy=)``: heartbeats now and fresh snapshots (a benchmark's
  "the agents are alive" between measurements).
- ``remove_simulated_fleet(prefix) -> int`` and ``delete_simulated_telemetry(prefix) -> int``.

Deployments on these nodes are placed by ``serving.simulation.simulate_fleet``, the whole
command's function (partitions must not import serving).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from partitions.aggregate import node_summary
from partitions.geometry import GeometryError, PartitionLayout, get_spec
from partitions.models import GPU, Node, Partition, Reconfiguration
from partitions.telemetry_store import snapshot_key, summary_key

# Bounds of one simulated fleet: 5,000 nodes x 16 GPUs is 80k GPUs (640k partitions in CPX),
# already far past the fleets the console is measured at (1,000 nodes).
MAX_NODES = 5000
MAX_GPUS_PER_NODE = 16
# Node names are <prefix><4+ digits>, within a Kubernetes node name's 63 characters.
# A prefix never ends with a digit, so no prefix owns another's nodes ("sim-" owns sim-0001,
# not sim-a-0001; "sim-1" would own sim-10001, a node of "sim-").
PREFIX_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z-])?$")
# Snapshots of simulated nodes: no agent renews them, so they last longer than an agent's
# (SNAPSHOT_TTL_S); a page opened an hour later shows the nodes' telemetry as missing.
DEFAULT_TELEMETRY_TTL_S = 3600
_BATCH = 2000

# (node name, GPU index) -> partition indices that hold a replica: busy partitions show load.
Busy = Mapping[str, Mapping[int, set[int]]]


class SimulationError(ValueError):
    """A simulated fleet that cannot be built; the message is meant for an operator."""


@dataclass(frozen=True)
class FleetSpec:
    """A validated simulated fleet: ``nodes`` nodes named ``<prefix>0000``... of
    ``gpus_per_node`` GPUs of ``gpu_model``, every GPU in ``layout`` (compute + memory mode)."""

    nodes: int
    prefix: str
    gpus_per_node: int
    layout: PartitionLayout

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}{i:04d}" for i in range(self.nodes)]

    @property
    def partitions_per_node(self) -> int:
        return self.gpus_per_node * self.layout.count


def fleet_spec(*, nodes: int, prefix: str = "sim-", gpu_model: str = "MI300X", compute_mode: str = "CPX",
               memory_mode: str = "NPS1", gpus_per_node: int = 8) -> FleetSpec:
    """Check a simulated fleet request; raises ``SimulationError`` naming what is wrong."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise SimulationError(f"nodes must be a whole number from 1 to {MAX_NODES}, got {nodes!r}")
    if isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int) or not 1 <= gpus_per_node <= MAX_GPUS_PER_NODE:
        raise SimulationError(f"GPUs per node must be a whole number from 1 to {MAX_GPUS_PER_NODE}, got {gpus_per_node!r}")
    if not isinstance(prefix, str) or not PREFIX_PATTERN.match(prefix):
        raise SimulationError(
            f"prefix {prefix!r} is not usable: 1 to 40 lower-case letters, digits and '-', "
            "starting with a letter or digit and not ending with a digit (e.g. 'sim-')")
    try:
        layout = get_spec(gpu_model).layout(compute_mode, memory_mode)
    except GeometryError as exc:
        raise SimulationError(str(exc)) from None
    return FleetSpec(nodes=nodes, prefix=prefix, gpus_per_node=gpus_per_node, layout=layout)


def prefix_nodes(prefix: str) -> Any:
    """The nodes a simulation with ``prefix`` owns: named ``<prefix><digits>``."""
    return Node.objects.filter(name__regex=rf"^{re.escape(prefix)}[0-9]+$")


@transaction.atomic
def remove_simulated_fleet(prefix: str) -> int:
    """Delete the simulated nodes of ``prefix`` (their GPUs, partitions and operation rows);
    returns how many. Refuses (``SimulationError``, nothing deleted) when a node of that name
    is not simulated: a real or emulated node is never removed by a simulation."""
    nodes = prefix_nodes(prefix)
    foreign = list(nodes.exclude(backend=Node.Backend.SIMULATED).values_list("name", flat=True)[:3])
    if foreign:
        raise SimulationError(
            f"nodes {', '.join(foreign)} match the prefix {prefix!r} but are not simulated; choose another prefix")
    ids = list(nodes.values_list("pk", flat=True))
    if not ids:
        return 0
    Reconfiguration.objects.filter(node_id__in=ids).delete()  # PROTECTs the node; few rows
    delete_in_bulk(Partition.objects.filter(gpu__node_id__in=ids))
    delete_in_bulk(GPU.objects.filter(node_id__in=ids))
    delete_in_bulk(Node.objects.filter(pk__in=ids))
    return len(ids)


def delete_in_bulk(queryset: QuerySet[Any]) -> None:
    """``queryset.delete()`` in a few set-based statements: rows that CASCADE from it are
    deleted (recursively) and SET_NULL references cleared by subquery, then the rows
    themselves in one DELETE. Django's collector would instead load every row (64k partitions
    at 1,000 CPX nodes) to cascade. No signals are sent (these models have no delete
    handlers); PROTECT and other rules raise, so the caller deletes those rows first."""
    pks = queryset.values("pk")
    # Every reverse one-to-one and many-to-one relation, hidden ones ("+") included: what
    # Django's collector cascades over.
    relations = [f for f in queryset.model._meta.get_fields(include_hidden=True)
                 if f.auto_created and not f.concrete and (f.one_to_one or f.one_to_many)]
    for rel in relations:
        related = rel.related_model._base_manager.filter(**{f"{rel.field.name}__in": pks})
        if rel.on_delete is models.CASCADE:
            delete_in_bulk(related)
        elif rel.on_delete is models.SET_NULL:
            related.update(**{rel.field.name: None})
        elif related.exists():
            raise SimulationError(f"{related.model._meta.verbose_name} rows refer to the {queryset.model._meta.verbose_name} rows to delete")
    queryset._raw_delete(queryset.db)


@transaction.atomic
def replace_simulated_nodes(spec: FleetSpec) -> list[Node]:
    """Replace the prefix's simulated nodes with ``spec``'s (see the module docstring)."""
    remove_simulated_fleet(spec.prefix)
    now = timezone.now()
    gpu_spec = get_spec(spec.layout.gpu_model)
    layout = spec.layout
    nodes = Node.objects.bulk_create([
        Node(name=name, backend=Node.Backend.SIMULATED, emulated=True, runtime=Node.ServingRuntime.EMULATED,
             memory_mode=layout.memory_mode, rocm_version="7.1.0", amd_smi_version="simulated",
             agent_heartbeat_at=now, last_synced_at=now)
        for name in spec.names], batch_size=_BATCH)
    memory_caps = sorted({str(m) for c, m in gpu_spec.valid_pairs if c == layout.compute_mode})
    vram_mb = gpu_spec.vram_mb_reported or gpu_spec.memory_gb * 1024
    gpus = GPU.objects.bulk_create([
        GPU(node=node, index=g, gpu_model=gpu_spec.model, market_name=f"AMD Instinct {gpu_spec.model}",
            gfx_target=gpu_spec.gfx_target, compute_mode=layout.compute_mode, memory_mode=layout.memory_mode,
            memory_caps=memory_caps, compute_units=gpu_spec.cus, vram_mb=vram_mb, health=GPU.Health.HEALTHY,
            uuid=f"sim-{n:04d}-{g:02d}", bdf=f"0000:{n % 256:02x}:{g:02x}.0")
        for n, node in enumerate(nodes) for g in range(spec.gpus_per_node)], batch_size=_BATCH)
    Partition.objects.bulk_create([
        Partition(gpu=gpu, index=p, logical_index=gpu.index * layout.count + p, xcds=layout.xcds,
                  compute_units=layout.cus, memory_gb=layout.memory_gb)
        for gpu in gpus for p in range(layout.count)], batch_size=_BATCH)
    analyze(Node, GPU, Partition)
    return nodes


def analyze(*tables: type[models.Model]) -> None:
    """Refresh the planner's statistics of these tables, as after any bulk load: without them
    SQLite plans the inventory lists' joins as a sort of every row (PostgreSQL's autovacuum
    would get there later on its own)."""
    with connection.cursor() as cursor:
        for model in tables:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def node_snapshot(spec: FleetSpec, name: str, *, seed: int, busy: Mapping[int, set[int]] | None = None,
                  ts: float | None = None, interval_s: float = 1.0) -> dict[str, Any]:
    """One node's telemetry sample in the agent's shape (partitions/telemetry.py ``shape``),
    marked ``emulated``: deterministic activity from ``seed``; partitions in ``busy``
    (GPU index -> partition indices) show a replica's load and memory, the others idle."""
    layout = spec.layout
    share_mb = int(layout.memory_gb * 1024)
    busy = busy or {}
    gpus = []
    for g in range(spec.gpus_per_node):
        held = busy.get(g, set())
        parts = []
        for p in range(layout.count):
            wobble = (seed * 37 + g * 11 + p * 7) % 31
            loaded = p in held
            parts.append({
                "index": p, "logical_index": g * layout.count + p,
                "gfx_activity": float(55 + wobble) if loaded else float(wobble % 4),
                "derived": layout.count > 1,
                "vram_used_mb": int(share_mb * (0.6 + wobble / 100)) if loaded else 256,
                "vram_total_mb": share_mb,
            })
        activities = [part["gfx_activity"] for part in parts]
        gpus.append({
            "index": g, "power_w": round(160.0 + 5.5 * sum(activities) / len(activities), 1),
            "temperature_c": 40.0 + len(held) * 4 + g % 3, "mem_temperature_c": 38.0 + len(held) * 2,
            "gfx_activity": round(sum(activities) / len(activities), 1), "ecc_uncorrectable": 0, "partitions": parts,
        })
    return {"node": name, "ts": time.time() if ts is None else ts, "interval_s": interval_s, "emulated": True, "gpus": gpus}


def _redis(client: redis.Redis | None) -> redis.Redis:
    return client if client is not None else redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=10)


def _owned_keys(conn: redis.Redis, prefix: str) -> list[bytes]:
    """The telemetry store's keys (snapshots and summaries) of the nodes ``prefix`` owns
    (``<prefix><digits>``)."""
    keys = []
    for key_of in (snapshot_key, summary_key):
        owned = re.compile(re.escape(key_of(prefix)).encode() + rb"[0-9]+")
        keys += [key for key in conn.scan_iter(match=key_of(f"{prefix}*"), count=1000) if owned.fullmatch(key)]
    return keys


def write_simulated_telemetry(spec: FleetSpec, *, busy: Busy | None = None, ttl_s: int = DEFAULT_TELEMETRY_TTL_S,
                              client: redis.Redis | None = None) -> int:
    """Replace the prefix's snapshots in the telemetry store with one per node of ``spec``, and
    each with its summary as an agent stores it (``node_summary``), in one Redis transaction
    (readers see the old set or the new one); returns how many snapshots."""
    busy = busy or {}
    conn = _redis(client)
    try:
        pipe = conn.pipeline(transaction=True)
        for key in _owned_keys(conn, spec.prefix):
            pipe.delete(key)
        for seed, name in enumerate(spec.names):
            snapshot = node_snapshot(spec, name, seed=seed, busy=busy.get(name))
            pipe.set(snapshot_key(name), json.dumps(snapshot), ex=ttl_s)
            pipe.set(summary_key(name), json.dumps(node_summary(snapshot)), ex=ttl_s)
        pipe.execute()
    finally:
        if client is None:
            conn.close()
    return spec.nodes


def delete_simulated_telemetry(prefix: str, *, client: redis.Redis | None = None) -> int:
    """Delete the snapshots (and summaries) of the nodes ``prefix`` owns; returns how many
    snapshots there were."""
    conn = _redis(client)
    try:
        keys = _owned_keys(conn, prefix)
        if keys:
            conn.delete(*keys)
    finally:
        if client is None:
            conn.close()
    summaries = re.compile(re.escape(summary_key(prefix)).encode())
    return sum(1 for key in keys if not summaries.match(key))


def refresh_simulated_fleet(spec: FleetSpec, *, busy: Busy | None = None, client: redis.Redis | None = None,
                            ttl_s: int = DEFAULT_TELEMETRY_TTL_S) -> None:
    """Heartbeats now and fresh snapshots for the prefix's nodes: without agents, pages show
    a simulated fleet's agents down 30 s after it was built (which is the truth)."""
    prefix_nodes(spec.prefix).filter(backend=Node.Backend.SIMULATED).update(agent_heartbeat_at=timezone.now())
    write_simulated_telemetry(spec, busy=busy, ttl_s=ttl_s, client=client)


def busy_partitions(rows: Sequence[tuple[str, int, int]]) -> dict[str, dict[int, set[int]]]:
    """``Busy`` from (node name, GPU index, partition index) rows."""
    out: dict[str, dict[int, set[int]]] = {}
    for node, gpu, part in rows:
        out.setdefault(node, {}).setdefault(gpu, set()).add(part)
    return out
