"""The fleet as the pure placement/planning modules see it, read from the database in a fixed
number of queries, and a fingerprint that changes whenever anything they depend on changes."""

from __future__ import annotations

import hashlib
import json
from typing import Iterable

from django.db.models import Prefetch

from partitions import placement
from partitions.models import GPU, DeploymentSlot, Node, Reconfiguration


def _caps(gpu: GPU) -> dict[str, tuple[str, ...]] | None:
    caps = {p["accelerator_type"]: tuple(p["memory_caps"]) for p in gpu.accelerator_profiles or [] if p.get("memory_caps")}
    return caps or None


def fleet_state(*, nodes: Iterable[Node] | None = None) -> placement.Fleet:
    """Nodes, GPUs (unschedulable when unhealthy, marked so, or under an active operation) and
    the replicas running on them."""
    queryset = Node.objects.prefetch_related(Prefetch("gpus", queryset=GPU.objects.order_by("index")))
    if nodes is not None:
        queryset = queryset.filter(pk__in=[n.pk for n in nodes])
    busy_gpus = set()
    busy_nodes = set()
    for kind, node_id, gpu_id in Reconfiguration.objects.active().values_list("kind", "node_id", "gpu_id"):
        if kind == Reconfiguration.Kind.MEMORY:
            busy_nodes.add(node_id)
        elif gpu_id:
            busy_gpus.add(gpu_id)
    node_states = []
    for node in queryset:
        gpus = tuple(
            placement.GpuState(
                node=node.name, index=gpu.index, gpu_model=gpu.gpu_model, compute_mode=gpu.compute_mode,
                schedulable=(gpu.schedulable and gpu.health != GPU.Health.UNHEALTHY and bool(gpu.gpu_model)
                             and bool(gpu.compute_mode) and gpu.pk not in busy_gpus),
                caps=_caps(gpu),
            )
            for gpu in node.gpus.all()
        )
        node_states.append(placement.NodeState(
            name=node.name, memory_mode=node.memory_mode, gpus=gpus,
            schedulable=node.schedulable and bool(node.memory_mode) and node.pk not in busy_nodes
            and node.backend != Node.Backend.IMPORTED,
        ))
    slots = DeploymentSlot.objects.filter(deployment__state__in=("scheduled", "running")).select_related(
        "deployment__profile", "partition__gpu__node"
    )
    if nodes is not None:
        slots = slots.filter(partition__gpu__node__in=[n.pk for n in nodes])
    occupants = tuple(
        placement.Occupant(
            deployment=slot.deployment.name, replica=slot.replica, priority=slot.deployment.priority,
            node=slot.partition.gpu.node.name, gpu_index=slot.partition.gpu.index,
            partition_index=slot.partition.index if slot.deployment.profile.gpus_needed == 1 else None,
            memory_gb=slot.deployment.profile.per_gpu_gb or slot.deployment.profile.memory_required_gb,
        )
        for slot in slots
    )
    return placement.Fleet(nodes=tuple(node_states), occupants=occupants)


def fingerprint(fleet: placement.Fleet) -> str:
    """Changes whenever a mode, health, occupant or operation that planning looked at changes."""
    data = {
        "nodes": [
            [n.name, n.memory_mode, n.schedulable, [[g.index, g.gpu_model, g.compute_mode, g.schedulable] for g in n.gpus]]
            for n in sorted(fleet.nodes, key=lambda n: n.name)
        ],
        "occupants": sorted([o.deployment, o.replica, o.node, o.gpu_index, o.partition_index] for o in fleet.occupants),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
