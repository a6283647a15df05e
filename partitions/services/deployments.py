"""Model deployments: place, bind partitions, start/stop (through the node agent), plans.

A deployment created directly is placed without repartitioning; when that is impossible the
caller gets the reasons and a suggested plan (``PlacementConflict``). Plans
(``create_plan`` / ``apply_plan``) repartition first and create deployments that wait
(``pending``) until their partitions exist; the node agent's reconciler binds and starts them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from aimconsole import audit
from models.models import ModelProfile
from partitions import metrics, placement, planner
from partitions.models import GPU, Deployment, DeploymentSlot, Node, Partition, Plan, Reconfiguration
from partitions.services.fleet import fingerprint, fleet_state
from partitions.services.reconfiguration import request_reconfiguration

log = logging.getLogger(__name__)


class PlacementConflict(Exception):
    """The demand cannot be placed on the current layout; ``reasons`` per replica and a
    suggested plan (repartitioning) when one would place it."""

    def __init__(self, reasons: list[str], plan: Plan | None = None) -> None:
        self.reasons = reasons
        self.plan = plan
        super().__init__("; ".join(reasons))


class StalePlan(Exception):
    """The fleet changed since the plan was made."""


def check_transition(deployment: Deployment, target: str) -> None:
    if target not in Deployment.TRANSITIONS[deployment.state]:
        allowed = ", ".join(sorted(Deployment.TRANSITIONS[deployment.state])) or "none"
        raise ValidationError(f"deployment {deployment.name} cannot go from {deployment.state} to {target}; allowed: {allowed}")


def _transition(deployment: Deployment, target: str, message: str = "") -> None:
    check_transition(deployment, target)
    before = deployment.state
    deployment.state = target
    deployment.state_message = message[:2000]
    deployment.save(update_fields=["state", "state_message", "updated_at"])
    audit.record(f"deployment.{target}", obj=deployment, before={"state": before}, after={"state": target, "message": message[:500]})


# --- demand ----------------------------------------------------------------------------------

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
        per_replica = self.profile.per_gpu_gb if self.profile.gpus_needed > 1 else self.profile.memory_required_gb
        return placement.Demand(
            key=self.name, memory_gb=per_replica, replicas=self.replicas, priority=self.priority,
            gpu_models=(self.profile.gpu_model,), tensor_parallel=self.profile.gpus_needed,
            pin_node=self.pin_node.name if self.pin_node else None, pin_gpu=self.pin_gpu_index, spread=self.spread,
        )


def validate_demand(spec: DemandSpec) -> None:
    errors: dict[str, str] = {}
    if spec.replicas < 1:
        errors["replicas"] = "must be at least 1"
    if Deployment.objects.active().filter(name=spec.name).exists():
        errors["name"] = f"an active deployment is already called {spec.name!r}"
    if spec.pin_gpu_index is not None and spec.pin_node is None:
        errors["pin_gpu_index"] = "pinning to a GPU needs pin_node"
    if spec.pin_node is not None and spec.pin_gpu_index is not None and not spec.pin_node.gpus.filter(index=spec.pin_gpu_index).exists():
        indices = sorted(spec.pin_node.gpus.values_list("index", flat=True))
        errors["pin_gpu_index"] = f"{spec.pin_node.name} has no GPU {spec.pin_gpu_index}; GPUs: {indices}"
    if errors:
        raise ValidationError(errors)


def _partition(node: str, gpu_index: int, partition_index: int | None) -> Partition:
    return Partition.objects.select_related("gpu__node").get(
        gpu__node__name=node, gpu__index=gpu_index, index=partition_index or 0
    )


# --- direct creation -------------------------------------------------------------------------

def create_deployment(*, spec: DemandSpec, requested_by: Any = None) -> Deployment:
    """Place ``spec`` on the current layout (no repartition) and bind its partitions.

    Raises ValidationError for bad input and PlacementConflict (with a suggested plan when a
    repartition would help) when it does not fit. The node agents start it.
    """
    validate_demand(spec)
    demand = spec.demand()
    with transaction.atomic():
        # One placement decision at a time: placements read the fleet, then bind partitions.
        list(Node.objects.select_for_update().order_by("pk").values_list("pk", flat=True))
        result = placement.place(fleet_state(), [demand], allow_repartition=False)
        metrics.count_placement("deployment", result)
        if result.ok():
            deployment = Deployment.objects.create(
                name=spec.name, profile=spec.profile, replicas=spec.replicas, priority=spec.priority, spread=spec.spread,
                pin_node=spec.pin_node, pin_gpu_index=spec.pin_gpu_index, state=Deployment.State.SCHEDULED,
                state_message="partitions bound; waiting for the node agent to start it",
                requested_by=requested_by if getattr(requested_by, "pk", None) else None,
            )
            try:
                _bind(deployment, result.assignments)
            except IntegrityError:
                metrics.count_placement("deployment", conflict=True)
                raise PlacementConflict(["a partition was taken concurrently; try again"]) from None
            audit.record("deployment.create", obj=deployment, after={
                "profile": spec.profile.pk, "replicas": spec.replicas, "priority": spec.priority,
                "partitions": list(deployment.slots.values_list("partition_id", flat=True))})
            return deployment
    reasons = [u.reason for u in result.unplaced]
    suggestion = None
    try:
        suggestion = create_plan(demands=[spec], requested_by=requested_by)
        if not suggestion.result.get("ok"):
            suggestion.delete()
            suggestion = None
    except planner.PlanError:
        suggestion = None
    raise PlacementConflict(reasons, suggestion)


def _bind(deployment: Deployment, assignments) -> None:  # type: ignore[no-untyped-def]
    with transaction.atomic():
        for assignment in assignments:
            for slot in assignment.slots:
                DeploymentSlot.objects.create(
                    deployment=deployment, replica=assignment.replica,
                    partition=_partition(slot.node, slot.gpu_index, slot.partition_index),
                )


def stop_deployment(*, deployment: Deployment, reason: str = "stopped by request") -> Deployment:
    """Free its partitions (the node agent stops the replicas)."""
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if not deployment.is_active:
            return deployment
        _transition(deployment, Deployment.State.STOPPED, reason)
        deployment.slots.all().delete()
    return deployment


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

    def to_json(self) -> dict:
        return {
            "gpus": [t.__dict__ for t in self.gpu_targets],
            "nodes": [t.__dict__ for t in self.node_targets],
            "demands": [
                {"name": d.name, "profile": d.profile.pk, "replicas": d.replicas, "priority": d.priority, "spread": d.spread,
                 "pin_node": d.pin_node.name if d.pin_node else None, "pin_gpu_index": d.pin_gpu_index}
                for d in self.demands
            ],
        }


def create_plan(*, gpu_targets=(), node_targets=(), demands=(), requested_by: Any = None) -> Plan:  # type: ignore[no-untyped-def]
    """Run the what-if planner on the current fleet and keep the result (no side effects on
    the fleet). Raises planner.PlanError / ValidationError for bad targets or demands."""
    names = [d.name for d in demands]
    if len(names) != len(set(names)):
        raise ValidationError({"demands": "deployment names must be unique within a plan"})
    for spec in demands:
        validate_demand(spec)
    request = PlanRequest(list(gpu_targets), list(node_targets), list(demands))
    fleet = fleet_state()
    result = planner.plan(fleet, gpu_targets=request.gpu_targets, node_targets=request.node_targets,
                          demands=[d.demand() for d in demands], durations=step_durations())
    if demands:
        metrics.count_placement("plan", result)
    return Plan.objects.create(
        request=request.to_json(), result=planner.summary(result), fingerprint=fingerprint(fleet),
        created_by=requested_by if getattr(requested_by, "pk", None) else None,
    )


@dataclass
class AppliedPlan:
    plan: Plan
    reconfigurations: list[Reconfiguration]
    deployments: list[Deployment]


def apply_plan(*, plan: Plan, requested_by: Any = None) -> AppliedPlan:
    """Turn the plan into operations: reconfigurations (with drain: displaced replicas are
    stopped and re-created where the plan put them), then deployments that wait for their
    partitions. All or nothing; StalePlan if the fleet changed since the plan was made."""
    result = plan.result
    user = requested_by if getattr(requested_by, "pk", None) else None
    with transaction.atomic():
        plan = Plan.objects.select_for_update().get(pk=plan.pk)
        if plan.state != Plan.State.DRAFT:
            raise StalePlan(f"plan #{plan.pk} is {plan.state}; make a new plan")
        list(Node.objects.select_for_update().order_by("pk").values_list("pk", flat=True))
        stale = fingerprint(fleet_state()) != plan.fingerprint
        if not stale:
            return _apply(plan, result, user)
    Plan.objects.filter(pk=plan.pk).update(state=Plan.State.STALE)
    raise StalePlan(f"the fleet changed since plan #{plan.pk} was made (modes, health, deployments or operations); make a new plan")


def _apply(plan: Plan, result: dict, user: Any) -> AppliedPlan:
    """apply_plan's writes, inside its transaction."""
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
    deployments = []
    demands = {d["name"]: d for d in plan.request.get("demands", [])}
    by_key: dict[str, list[dict]] = {}
    for assignment in result["assignments"]:
        by_key.setdefault(assignment["deployment"], []).append(assignment)
    for name, assignments in by_key.items():
        d = demands[name]
        deployments.append(Deployment.objects.create(
            name=name, profile_id=d["profile"], replicas=d["replicas"], priority=d["priority"], spread=d["spread"],
            pin_node=Node.objects.filter(name=d["pin_node"]).first() if d["pin_node"] else None,
            pin_gpu_index=d["pin_gpu_index"], plan=plan, requested_by=user,
            planned_slots=[{"replica": a["replica"], "slots": a["slots"]} for a in assignments],
            state_message="waiting for the plan's reconfigurations",
        ))
    for moved in result["displaced"]:
        original = Deployment.objects.filter(name=moved["deployment"]).active().first()
        if original is None:
            continue
        deployments.append(Deployment.objects.create(
            name=f"{original.name}-r{moved['replica']}-p{plan.pk}", profile=original.profile, replicas=1,
            priority=original.priority, plan=plan, requested_by=user,
            planned_slots=[{"replica": 0, "slots": moved["to"]}],
            state_message=f"replica {moved['replica']} of {original.name} moved by plan #{plan.pk}",
        ))
    plan.state = Plan.State.APPLIED
    plan.applied_at = timezone.now()
    plan.save(update_fields=["state", "applied_at"])
    audit.record("plan.apply", obj=plan, actor=user, before={"state": "draft"}, after={
        "reconfigurations": [r.pk for r in reconfigurations], "deployments": [d.pk for d in deployments]})
    return AppliedPlan(plan, reconfigurations, deployments)


# --- the node agent's reconciler ------------------------------------------------------------

def schedule_pending_deployments() -> list[Deployment]:
    """Bind pending deployments whose planned partitions now exist (after the plan's
    reconfigurations); fail those whose plan's reconfigurations failed."""
    scheduled = []
    for pk in list(Deployment.objects.filter(state=Deployment.State.PENDING).values_list("pk", flat=True)):
        with transaction.atomic():
            # Every agent runs this: lock the row and re-check, so one of them binds it.
            deployment = (Deployment.objects.select_for_update(of=("self",))
                          .filter(pk=pk, state=Deployment.State.PENDING).select_related("plan").first())
            if deployment is None:
                continue
            ops = list(deployment.plan.reconfigurations.all()) if deployment.plan else []
            broken = [op for op in ops if op.state in ("failed", "rolled_back")]
            if broken:
                _transition(deployment, Deployment.State.FAILED,
                            "; ".join(f"reconfiguration #{op.pk} {op.state}: {op.error_message}" for op in broken))
                continue
            if any(not op.is_terminal for op in ops):
                continue
            try:
                with transaction.atomic():
                    for entry in deployment.planned_slots:
                        for slot in entry["slots"]:
                            part = _partition(slot["node"], slot["gpu_index"], slot["partition_index"])
                            if part.gpu.compute_mode != slot["compute_mode"]:
                                raise Partition.DoesNotExist(f"{part.gpu} is {part.gpu.compute_mode}, planned {slot['compute_mode']}")
                            DeploymentSlot.objects.create(deployment=deployment, replica=entry["replica"], partition=part)
            except (Partition.DoesNotExist, IntegrityError) as exc:
                _transition(deployment, Deployment.State.FAILED, f"planned partitions not available: {exc}")
                continue
            _transition(deployment, Deployment.State.SCHEDULED, "partitions bound; waiting for the node agent to start it")
            scheduled.append(deployment)
    return scheduled


def reconcile_node(*, node: Node) -> None:
    """Make the node's running replicas match the database (on its agent): start bound
    replicas, stop freed ones, and mark deployments running once every replica started."""
    from partitions import runtime

    schedule_pending_deployments()
    slots = list(DeploymentSlot.objects.filter(partition__gpu__node=node, deployment__state__in=("scheduled", "running"))
                 .select_related("deployment__profile", "partition__gpu"))
    if not runtime.can_run(node):
        Deployment.objects.filter(pk__in={s.deployment_id for s in slots}, state="scheduled").exclude(
            state_message__startswith="scheduled on a node without"
        ).update(state_message="scheduled on a node without a serving runtime: start the replicas with the workload spec")
        return
    runtime.reconcile(node, [
        runtime.ReplicaSlot(s.partition.gpu.index, s.partition.index,
                            s.deployment.profile.per_gpu_gb or s.deployment.profile.memory_required_gb)
        for s in slots
    ])
    now = timezone.now()
    DeploymentSlot.objects.filter(pk__in=[s.pk for s in slots], started_at__isnull=True).update(started_at=now)
    for deployment in Deployment.objects.filter(state="scheduled", slots__partition__gpu__node=node).distinct():
        if not deployment.slots.filter(started_at__isnull=True).exists():
            with transaction.atomic():
                _transition(deployment, Deployment.State.RUNNING, "all replicas started")


class DeploymentWorkloads:
    """Drain provider (partitions/drain.py): deployments are the workloads on partitions."""

    def workloads_on(self, *, node: Node, gpu_indices: list[int]) -> list[str]:
        return sorted(set(Deployment.objects.filter(
            state__in=("scheduled", "running"), slots__partition__gpu__node=node, slots__partition__gpu__index__in=gpu_indices,
        ).values_list("name", flat=True)))

    def stop_workloads(self, *, node: Node, gpu_indices: list[int], reason: str) -> list[str]:
        names = self.workloads_on(node=node, gpu_indices=gpu_indices)
        for deployment in Deployment.objects.filter(name__in=names).active():
            stop_deployment(deployment=deployment, reason=f"drained by {reason}")
        reconcile_node(node=node)  # on the agent: the replicas stop before amd-smi set runs
        return names
