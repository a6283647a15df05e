"""The fleet as placement sees it, and plans: what-if results kept, then applied.

``fleet_state`` reads the fleet in a fixed number of queries; ``fingerprint`` changes whenever
anything planning looked at changes, so a plan made on an old fleet is refused (``StalePlan``).
``create_plan`` runs the pure planner (planning/planner.py) and keeps the result; ``apply_plan``
turns it into reconfigurations (partitions) and hands the replicas to the app that runs them
(the ``occupancy`` port: serving creates and moves deployments there).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Iterable, Sequence

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone

from aimconsole import audit, counters
from models.models import ModelProfile
from partitions.models import GPU, Node, Reconfiguration
from partitions.services.reconfiguration import request_reconfiguration
from planning import occupancy, placement, planner
from planning.models import Plan


class StalePlan(Exception):
    """The fleet changed since the plan was made, or the plan was already applied."""


# --- the fleet ----------------------------------------------------------------------------------

def _caps(gpu: GPU) -> dict[str, tuple[str, ...]] | None:
    caps = {p["accelerator_type"]: tuple(p["memory_caps"]) for p in gpu.accelerator_profiles or [] if p.get("memory_caps")}
    return caps or None


def fleet_state(*, nodes: Iterable[Node] | None = None) -> placement.Fleet:
    """Nodes, GPUs (unschedulable when unhealthy, marked so, or under an active operation) and
    the replicas running on them."""
    queryset = Node.objects.prefetch_related(Prefetch("gpus", queryset=GPU.objects.order_by("index")))
    node_ids = None
    if nodes is not None:
        node_ids = [n.pk for n in nodes]
        queryset = queryset.filter(pk__in=node_ids)
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
    return placement.Fleet(nodes=tuple(node_states), occupants=occupancy.occupants(node_ids=node_ids))


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


# --- demands ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemandSpec:
    """A validated request for one deployment."""

    name: str
    profile: ModelProfile
    replicas: int
    priority: int = 0
    spread: bool = False
    pin_node: Node | None = None
    pin_gpu_index: int | None = None

    def demand(self) -> placement.Demand:
        return placement.Demand(
            key=self.name, memory_gb=self.profile.replica_memory_gb, replicas=self.replicas, priority=self.priority,
            gpu_models=(self.profile.gpu_model,), tensor_parallel=self.profile.gpus_needed,
            pin_node=self.pin_node.name if self.pin_node else None, pin_gpu=self.pin_gpu_index, spread=self.spread,
        )


def validate_demands(specs: Sequence[DemandSpec]) -> None:
    """Raise ValidationError (field -> message) for demands that cannot be placed as asked."""
    errors: dict[str, str] = {}
    names = [s.name for s in specs]
    if len(names) != len(set(names)):
        errors["name"] = "deployment names must be unique within a plan"
    for spec in specs:
        if spec.replicas < 1:
            errors["replicas"] = "must be at least 1"
        if spec.pin_gpu_index is not None and spec.pin_node is None:
            errors["pin_gpu_index"] = "pinning to a GPU needs pin_node"
        if spec.pin_node is not None and spec.pin_gpu_index is not None and not spec.pin_node.gpus.filter(index=spec.pin_gpu_index).exists():
            indices = sorted(spec.pin_node.gpus.values_list("index", flat=True))
            errors["pin_gpu_index"] = f"{spec.pin_node.name} has no GPU {spec.pin_gpu_index}; GPUs: {indices}"
    errors.update(occupancy.check_names(names=names))
    if errors:
        raise ValidationError(errors)


# --- plans -------------------------------------------------------------------------------------

def step_durations() -> planner.StepDurations:
    """Medians of the last 50 succeeded operations of each kind; defaults where none exist."""
    defaults = planner.StepDurations()
    measured: dict[str, float] = {}
    for kind, attr in ((Reconfiguration.Kind.COMPUTE, "compute_change_s"), (Reconfiguration.Kind.MEMORY, "memory_change_s")):
        rows = list(
            Reconfiguration.objects.filter(kind=kind, state="succeeded", started_at__isnull=False, finished_at__isnull=False)
            .order_by("-finished_at").values_list("started_at", "finished_at")[:50]
        )
        if rows:
            measured[attr] = round(median((end - start).total_seconds() for start, end in rows), 1)
    if not measured:
        return defaults
    return planner.StepDurations(
        compute_change_s=measured.get("compute_change_s", defaults.compute_change_s),
        memory_change_s=measured.get("memory_change_s", defaults.memory_change_s),
        deploy_s=defaults.deploy_s, stop_s=defaults.stop_s,
        source="median of past operations (" + ", ".join(sorted(measured)) + "), defaults for the rest",
    )


@dataclass
class PlanRequest:
    gpu_targets: list[planner.GpuTarget] = field(default_factory=list)
    node_targets: list[planner.NodeTarget] = field(default_factory=list)
    demands: list[DemandSpec] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "gpus": [t.__dict__ for t in self.gpu_targets],
            "nodes": [t.__dict__ for t in self.node_targets],
            "demands": [
                {"name": d.name, "profile": d.profile.pk, "replicas": d.replicas, "priority": d.priority, "spread": d.spread,
                 "pin_node": d.pin_node.name if d.pin_node else None, "pin_gpu_index": d.pin_gpu_index}
                for d in self.demands
            ],
        }


def _user(requested_by: Any) -> Any:
    return requested_by if getattr(requested_by, "pk", None) else None


def create_plan(*, gpu_targets: Sequence[planner.GpuTarget] = (), node_targets: Sequence[planner.NodeTarget] = (),
                demands: Sequence[DemandSpec] = (), requested_by: Any = None) -> Plan:
    """Run the what-if planner on the current fleet and keep the result (no side effects on
    the fleet). Raises planner.PlanError / ValidationError for bad targets or demands."""
    validate_demands(demands)
    request = PlanRequest(list(gpu_targets), list(node_targets), list(demands))
    fleet = fleet_state()
    result = planner.plan(fleet, gpu_targets=request.gpu_targets, node_targets=request.node_targets,
                          demands=[d.demand() for d in demands], durations=step_durations())
    if demands:
        counters.count_placement("plan", result)
    return Plan.objects.create(
        request=request.to_json(), result=planner.summary(result), fingerprint=fingerprint(fleet),
        created_by=_user(requested_by),
    )


@dataclass
class AppliedPlan:
    plan: Plan
    reconfigurations: list[Reconfiguration]
    deployments: list[Any]


def apply_plan(*, plan: Plan, requested_by: Any = None) -> AppliedPlan:
    """Turn the plan into operations: reconfigurations (with drain), then the replicas it
    places or moves (handed to the occupancy provider). All or nothing; StalePlan if the fleet
    changed since the plan was made."""
    user = _user(requested_by)
    with transaction.atomic():
        plan = Plan.objects.select_for_update().get(pk=plan.pk)
        if plan.state != Plan.State.DRAFT:
            raise StalePlan(f"plan #{plan.pk} is {plan.state}; make a new plan")
        list(Node.objects.select_for_update().order_by("pk").values_list("pk", flat=True))
        stale = fingerprint(fleet_state()) != plan.fingerprint
        if not stale:
            return _apply(plan, user)
    Plan.objects.filter(pk=plan.pk).update(state=Plan.State.STALE)
    raise StalePlan(f"the fleet changed since plan #{plan.pk} was made (modes, health, deployments or operations); make a new plan")


def _apply(plan: Plan, user: Any) -> AppliedPlan:
    """apply_plan's writes, inside its transaction."""
    result = plan.result
    if not result.get("ok"):
        raise ValidationError("this plan leaves replicas without a partition; it cannot be applied")
    reconfigurations = []
    node_targets = {t["node"]: t for t in plan.request.get("nodes", [])}
    for change in result["node_changes"]:
        node = Node.objects.get(name=change["node"])
        compute = (node_targets.get(change["node"]) or {}).get("compute_mode")
        reconfigurations.append(request_reconfiguration(
            node=node, memory_mode=change["to_memory"], compute_mode=compute, drain=True,
            reason=f"plan #{plan.pk}", requested_by=user, plan=plan,
        ))
    memory_nodes = {c["node"] for c in result["node_changes"]}
    for change in result["gpu_changes"]:
        if change["node"] in memory_nodes and change["reason"] == "memory mode change":
            continue
        gpu = GPU.objects.select_related("node").get(node__name=change["node"], index=change["gpu_index"])
        reconfigurations.append(request_reconfiguration(
            gpu=gpu, compute_mode=change["to_compute"], drain=True, reason=f"plan #{plan.pk}",
            requested_by=user, plan=plan,
        ))
    deployments = occupancy.apply_plan(plan=plan, result=result, user=user)
    plan.state = Plan.State.APPLIED
    plan.applied_at = timezone.now()
    plan.save(update_fields=["state", "applied_at"])
    audit.record("plan.apply", obj=plan, actor=user, before={"state": "draft"}, after={
        "reconfigurations": [r.pk for r in reconfigurations], "deployments": [d.pk for d in deployments]})
    return AppliedPlan(plan, reconfigurations, deployments)
