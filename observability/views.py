"""The overview page: the fleet's KPIs on one screen, each linking to where to act.

Thin: a fixed number of aggregate queries and one Redis round trip, whatever the fleet size,
shaped into frozen rows for ``observability.overview.summarize`` (pure), rendered. Rows are
read one by one only for held partitions (each may be idle); free ones are counted by GPU
model and size in the database, and telemetry comes from the nodes' summaries, not from
every partition's sample.
"""

from __future__ import annotations

import time
from datetime import timedelta

import redis
from django.db.models import Count, Min, Q
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from models.models import ModelProfile
from models.services import default_profiles
from models.sizing import replica_gb_per_gpu
from observability.overview import (
    FreePartitions,
    GpuFacts,
    NodeFacts,
    OverviewInputs,
    PartitionFacts,
    SnapshotFacts,
    snapshot_facts,
    summarize,
    summary_facts,
)
from partitions.context_processors import telemetry_stale_after_s
from partitions.models import AGENT_STALE_AFTER, GPU, Node, Partition, Reconfiguration
from partitions.telemetry_store import read_snapshots_sync, read_summaries_sync
from serving.models import Deployment, Replica

FAILED_WINDOW = timedelta(hours=24)


def gather() -> OverviewInputs:
    """Read the overview's rows: 7 queries and one Redis MGET (two where some node has no
    summary yet)."""
    now_dt, now = timezone.now(), time.time()
    nodes = tuple(
        NodeFacts(name=name, emulated=emulated, heartbeat_age_s=None if hb is None else (now_dt - hb).total_seconds())
        for name, emulated, hb in Node.objects.order_by("name").values_list("name", "emulated", "agent_heartbeat_at")
    )
    gpus = tuple(
        GpuFacts(node=node, index=index, gpu_model=model or "", unhealthy=health == GPU.Health.UNHEALTHY)
        for node, index, model, health in GPU.objects.order_by("node__name", "index")
        .values_list("node__name", "index", "gpu_model", "health")
    )
    # Held: a slot of a deployment in an active state (a stopped one's slot frees nothing yet
    # but holds no capacity either: it counts as free, as before).
    held = Q(slot__deployment__state__in=Deployment.ACTIVE_STATES)
    free_groups = tuple(
        FreePartitions(gpu_model=row["gpu__gpu_model"] or "", memory_gb=row["memory_gb"], count=row["n"])
        for row in Partition.objects.exclude(held).order_by().values("gpu__gpu_model", "memory_gb").annotate(n=Count("pk")))
    partitions = []
    for node, gpu_index, index, model, memory_gb, holder, required, gpus_needed, per_gpu in (
        Partition.objects.filter(held).order_by("gpu__node__name", "gpu__index", "index").values_list(
            "gpu__node__name", "gpu__index", "index", "gpu__gpu_model", "memory_gb", "slot__deployment__name",
            "slot__deployment__profile__memory_required_gb",
            "slot__deployment__profile__gpus_needed", "slot__deployment__profile__per_gpu_gb")
    ):
        partitions.append(PartitionFacts(
            node=node, gpu_index=gpu_index, index=index, gpu_model=model or "", memory_gb=memory_gb,
            holder=holder, reserved_gb=replica_gb_per_gpu(required or 0.0, gpus_needed or 1, per_gpu or 0.0),
        ))
    needs = tuple(
        (row["gpu_model"], float(row["need"])) for row in ModelProfile.objects.order_by()
        .filter(default_profiles(), computed_at__isnull=False, memory_required_gb__gt=0)
        .values("gpu_model").annotate(need=Min("memory_required_gb"))
    )
    # A failure refused before any work has no finished_at: its creation time dates it.
    recent = Q(state__in=(Reconfiguration.State.FAILED, Reconfiguration.State.ROLLED_BACK)) & Q(
        done_at__gte=now_dt - FAILED_WINDOW)
    operations = tuple(
        (row["state"], row["n"], row["recent"]) for row in Reconfiguration.objects.order_by()
        .annotate(done_at=Coalesce("finished_at", "created_at"))
        .values("state").annotate(n=Count("pk"), recent=Count("pk", filter=recent))
    )
    replicas = tuple((row["state"], row["n"]) for row in Replica.objects.order_by().values("state").annotate(n=Count("pk")))
    snapshots: tuple[SnapshotFacts, ...] | None
    names = [n.name for n in nodes]
    try:
        summaries = read_summaries_sync(names)
        missing = [name for name in names if name not in summaries]  # an agent of an older version
        raw = read_snapshots_sync(missing) if missing else {}
    except redis.RedisError:
        snapshots = None
    else:
        snapshots = tuple([summary_facts(name, s, now) for name, s in summaries.items() if isinstance(s, dict)]
                          + [snapshot_facts(name, snap, now) for name, snap in raw.items() if isinstance(snap, dict)])
    return OverviewInputs(
        nodes=nodes, gpus=gpus, partitions=tuple(partitions), smallest_need_gb=needs, operation_states=operations,
        replica_states=replicas, snapshots=snapshots, free_groups=free_groups, agent_stale_after_s=AGENT_STALE_AFTER.total_seconds(),
        telemetry_stale_after_s=telemetry_stale_after_s(),
    )


def overview(request: HttpRequest) -> HttpResponse:
    """The overview page (viewer and up, as every page)."""
    inputs = gather()
    return render(request, "observability/overview.html", {
        "o": summarize(inputs), "agent_stale_after_s": inputs.agent_stale_after_s,
        "telemetry_stale_after_s": inputs.telemetry_stale_after_s,
    })
