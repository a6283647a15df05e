"""``manage.py simulate_fleet``'s function: a simulated fleet with deployments on it.

Stable interface (benchmarks call it directly)::

    simulate_fleet(*, nodes, prefix="sim-", gpu_model="MI300X", compute_mode="CPX",
                   memory_mode="NPS1", gpus_per_node=8, occupancy=0.0, replicas=1,
                   telemetry=True, telemetry_ttl_s=3600, redis_client=None) -> SimulatedFleet

Nodes, GPUs and partitions come from ``partitions.simulation`` (bulk rows, backend
``simulated``, labelled emulated). With ``occupancy`` > 0 that share of the partitions is held
by deployments of ``replicas`` replicas each, spread evenly over the fleet, each replica on one
partition. They are bulk rows in the states the real services leave behind once a node agent
ran them: a ``running`` Deployment (with its ``sizing_snapshot``), an ``active`` started
DeploymentSlot per replica, and a ``ready`` Replica copy of the ``emulated`` runtime with no
endpoint (nothing serves it; the gateway routes nowhere). Placement, plans, drains and the
pages read slots of bound deployments as occupancy, so these partitions count as taken
exactly like ones ``create_deployment`` bound. Their ``state_message`` says they are simulated
(and their ``sizing_snapshot`` carries ``"simulated": true``).

``remove_simulation(*, prefix="sim-", telemetry=True, redis_client=None) -> int`` removes it all.

Idempotent per prefix: a rerun replaces the prefix's nodes and its deployments (named
``<prefix>d<digits>``). Refused, with nothing changed (``SimulationError``): bad input, a
non-simulated node named like the prefix's, or another deployment holding partitions of the
prefix's nodes (stop it first). Redis down: the database part rolls back too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import redis
from django.db import transaction
from django.utils import timezone

from models.models import ModelProfile
from models.services import default_profiles
from partitions.models import Partition
from partitions.simulation import (
    DEFAULT_TELEMETRY_TTL_S,
    FleetSpec,
    SimulationError,
    busy_partitions,
    delete_in_bulk,
    delete_simulated_telemetry,
    fleet_spec,
    prefix_nodes,
    remove_simulated_fleet,
    replace_simulated_nodes,
    write_simulated_telemetry,
)
from serving.models import Deployment, DeploymentSlot, Replica, Runtime

SIMULATED_MESSAGE = "simulated by manage.py simulate_fleet: no process serves it"
MAX_REPLICAS = 64
_BATCH = 2000


@dataclass(frozen=True)
class SimulatedFleet:
    """What ``simulate_fleet`` built."""

    spec: FleetSpec
    node_names: list[str]
    gpus: int
    partitions: int
    deployments: int
    occupied_partitions: int
    snapshots: int

    @property
    def prefix(self) -> str:
        return self.spec.prefix


def _named(prefix: str) -> Any:
    return Deployment.objects.filter(name__regex=rf"^{re.escape(prefix)}d[0-9]+$")


def _owned_deployments(prefix: str) -> Any:
    # Marked in the sizing snapshot, which nothing rewrites (the state message changes with
    # the deployment's state).
    return _named(prefix).filter(sizing_snapshot__simulated=True)


def _check_occupancy(occupancy: float, replicas: int) -> None:
    if isinstance(occupancy, bool) or not isinstance(occupancy, (int, float)) or not 0 <= occupancy <= 1:
        raise SimulationError(f"occupancy must be a share of the partitions from 0 to 1, got {occupancy!r}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
        raise SimulationError(f"replicas per deployment must be a whole number from 1 to {MAX_REPLICAS}, got {replicas!r}")


def _profiles(spec: FleetSpec) -> list[ModelProfile]:
    """Single-GPU default profiles of the GPU model that fit one partition of the layout."""
    profiles = list(ModelProfile.objects.filter(default_profiles(), gpu_model=spec.layout.gpu_model, gpus_needed=1,
                                                memory_required_gb__lte=spec.layout.memory_gb)
                    .select_related("model", "precision").order_by("memory_required_gb", "pk")[:10])
    if not profiles:
        raise SimulationError(
            f"no model profile fits one {spec.layout.compute_mode} partition of {spec.layout.gpu_model} "
            f"({spec.layout.memory_gb} GiB): load the catalog first (manage.py load_catalog)")
    return profiles


def _remove_deployments(spec: FleetSpec) -> None:
    """Delete the prefix's simulated deployments; refuse when any other deployment holds a
    partition of the prefix's nodes (removing the nodes would pull it from under it)."""
    ours = _owned_deployments(spec.prefix)
    foreign = sorted(set(DeploymentSlot.objects.filter(partition__gpu__node__in=prefix_nodes(spec.prefix))
                         .exclude(deployment__in=ours).values_list("deployment__name", flat=True)[:50]))
    if foreign:
        raise SimulationError(
            f"deployments {', '.join(foreign[:3])} hold partitions of the {spec.prefix!r} nodes; stop them first")
    clash = list(_named(spec.prefix).active().exclude(pk__in=ours).values_list("name", flat=True)[:3])
    if clash:
        raise SimulationError(f"active deployments {', '.join(clash)} have names the simulation uses; choose another prefix")
    delete_in_bulk(ours)


def _chosen(count: int, occupancy: float) -> list[int]:
    """Indices of ``occupancy`` x ``count`` items spread evenly (0.25: every fourth)."""
    return [i for i in range(count) if int((i + 1) * occupancy) > int(i * occupancy)]


def _place(spec: FleetSpec, occupancy: float, replicas: int) -> list[tuple[str, int, int]]:
    """Bulk-create the deployments; returns the (node, GPU index, partition index) they hold."""
    profiles = _profiles(spec)
    parts = list(Partition.objects.filter(gpu__node__in=prefix_nodes(spec.prefix))
                 .order_by("gpu__node__name", "gpu__index", "index")
                 .values_list("pk", "gpu__node_id", "gpu__node__name", "gpu__index", "index", "logical_index"))
    chosen = [parts[i] for i in _chosen(len(parts), occupancy)]
    chosen = chosen[:len(chosen) // replicas * replicas]
    if not chosen:
        return []
    now = timezone.now()
    groups = [chosen[i:i + replicas] for i in range(0, len(chosen), replicas)]
    sizings = [{**_sizing(p), "simulated": True} for p in profiles]
    deployments = Deployment.objects.bulk_create([
        Deployment(name=f"{spec.prefix}d{i:05d}", profile=profiles[i % len(profiles)], replicas=replicas,
                   state=Deployment.State.RUNNING, state_message=SIMULATED_MESSAGE, runtime=Runtime.EMULATED,
                   sizing_snapshot=sizings[i % len(profiles)])
        for i in range(len(groups))], batch_size=_BATCH)
    DeploymentSlot.objects.bulk_create([
        DeploymentSlot(deployment=dep, replica=r, partition_id=part[0], started_at=now)
        for dep, group in zip(deployments, groups) for r, part in enumerate(group)], batch_size=_BATCH)
    Replica.objects.bulk_create([
        Replica(deployment=dep, replica=r, node_id=part[1], key=f"d{dep.pk}-r{r}-p{part[0]}", runtime=Runtime.EMULATED,
                state=Replica.State.READY, served_model=dep.name, started_at=now, ready_at=now,
                partitions=[{"gpu_index": part[3], "partition_index": part[4], "logical_index": part[5]}])
        for dep, group in zip(deployments, groups) for r, part in enumerate(group)], batch_size=_BATCH)
    return [(part[2], part[3], part[4]) for part in chosen]


def _sizing(profile: ModelProfile) -> dict[str, Any]:
    from serving.services import sizing_snapshot  # the one place a deployment's sizing is written

    return sizing_snapshot(profile)


def simulate_fleet(*, nodes: int, prefix: str = "sim-", gpu_model: str = "MI300X", compute_mode: str = "CPX",
                   memory_mode: str = "NPS1", gpus_per_node: int = 8, occupancy: float = 0.0, replicas: int = 1,
                   telemetry: bool = True, telemetry_ttl_s: int = DEFAULT_TELEMETRY_TTL_S,
                   redis_client: redis.Redis | None = None) -> SimulatedFleet:
    """Build (or rebuild) the simulated fleet of ``prefix``; see the module docstring.
    ``occupancy``: share of the partitions held by simulated deployments (0: none; the
    command's ``--deployments`` is 0.25). ``telemetry``: write a snapshot per node into the
    telemetry store (needs Redis). Raises ``SimulationError`` for anything it refuses."""
    spec = fleet_spec(nodes=nodes, prefix=prefix, gpu_model=gpu_model, compute_mode=compute_mode,
                      memory_mode=memory_mode, gpus_per_node=gpus_per_node)
    _check_occupancy(occupancy, replicas)
    if telemetry and (isinstance(telemetry_ttl_s, bool) or not isinstance(telemetry_ttl_s, int) or telemetry_ttl_s < 1):
        raise SimulationError(f"the telemetry lifetime must be a whole number of seconds >= 1, got {telemetry_ttl_s!r}")
    with transaction.atomic():
        _remove_deployments(spec)
        if occupancy:
            _profiles(spec)  # refuse before replacing anything
        node_rows = replace_simulated_nodes(spec)
        held = _place(spec, occupancy, replicas) if occupancy else []
        snapshots = 0
        if telemetry:
            # Inside the transaction: if Redis is down, the rows roll back with a clear error.
            try:
                snapshots = write_simulated_telemetry(spec, busy=busy_partitions(held), ttl_s=telemetry_ttl_s,
                                                      client=redis_client)
            except redis.RedisError as exc:
                raise SimulationError(f"cannot write the telemetry snapshots to Redis ({exc}); nothing was changed") from exc
    return SimulatedFleet(
        spec=spec, node_names=[n.name for n in node_rows], gpus=spec.nodes * spec.gpus_per_node,
        partitions=spec.nodes * spec.partitions_per_node, deployments=len(held) // replicas,
        occupied_partitions=len(held), snapshots=snapshots,
    )


def remove_simulation(*, prefix: str = "sim-", telemetry: bool = True, redis_client: redis.Redis | None = None) -> int:
    """Remove the simulated fleet of ``prefix``: its deployments, nodes and snapshots (refused
    like ``simulate_fleet``: a foreign deployment on its nodes, a non-simulated node of its
    names). Returns how many nodes it removed."""
    spec = fleet_spec(nodes=1, prefix=prefix)  # validates the prefix
    with transaction.atomic():
        _remove_deployments(spec)
        removed = remove_simulated_fleet(spec.prefix)
        if telemetry:
            try:
                delete_simulated_telemetry(spec.prefix, client=redis_client)
            except redis.RedisError as exc:
                raise SimulationError(f"cannot delete the telemetry snapshots in Redis ({exc}); nothing was changed") from exc
    return removed
