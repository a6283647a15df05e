"""Model deployments: place, bind partitions, start/stop (through the node agent).

A deployment created directly is placed without repartitioning; when that is impossible the
caller gets the reasons and a suggested plan (``PlacementConflict``). Plans
(planning/services.py) repartition first; applying one calls ``DeploymentWorkloads.apply_plan``
here, which creates deployments that wait (``pending``) until their partitions exist and moves
displaced replicas. The node agent's reconciler binds and starts them.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from aimconsole import audit, counters
from partitions.models import Node, Partition
from partitions.workloads import Occupant
from planning import placement, planner
from planning.models import Plan
from planning.services import DemandSpec, create_plan, fleet_state, validate_demands
from serving.models import Deployment, DeploymentSlot

log = logging.getLogger(__name__)


class PlacementConflict(Exception):
    """The demand cannot be placed on the current layout; ``reasons`` per replica and a
    suggested plan (repartitioning) when one would place it."""

    def __init__(self, reasons: list[str], plan: Plan | None = None) -> None:
        self.reasons = reasons
        self.plan = plan
        super().__init__("; ".join(reasons))


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


def _partition(node: str, gpu_index: int, partition_index: int | None) -> Partition:
    return Partition.objects.select_related("gpu__node").get(
        gpu__node__name=node, gpu__index=gpu_index, index=partition_index or 0
    )


def _user(requested_by: Any) -> Any:
    return requested_by if getattr(requested_by, "pk", None) else None


# --- direct creation -------------------------------------------------------------------------

def create_deployment(*, spec: DemandSpec, requested_by: Any = None) -> Deployment:
    """Place ``spec`` on the current layout (no repartition) and bind its partitions.

    Raises ValidationError for bad input and PlacementConflict (with a suggested plan when a
    repartition would help) when it does not fit. The node agents start it.
    """
    validate_demands([spec])
    demand = spec.demand()
    with transaction.atomic():
        # One placement decision at a time: placements read the fleet, then bind partitions.
        list(Node.objects.select_for_update().order_by("pk").values_list("pk", flat=True))
        result = placement.place(fleet_state(), [demand], allow_repartition=False)
        counters.count_placement("deployment", result)
        if result.ok():
            deployment = Deployment.objects.create(
                name=spec.name, profile=spec.profile, replicas=spec.replicas, priority=spec.priority, spread=spec.spread,
                pin_node=spec.pin_node, pin_gpu_index=spec.pin_gpu_index, state=Deployment.State.SCHEDULED,
                state_message="partitions bound; waiting for the node agent to start it",
                requested_by=_user(requested_by),
            )
            try:
                _bind(deployment, result.assignments)
            except IntegrityError:
                counters.count_placement("deployment", conflict=True)
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


def _bind(deployment: Deployment, assignments: Sequence[placement.Assignment]) -> None:
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


# --- applying a plan ---------------------------------------------------------------------------

def apply_plan_deployments(*, plan: Plan, result: dict[str, Any], user: Any) -> list[Deployment]:
    """Inside planning's apply_plan transaction: the plan's new deployments, waiting for their
    partitions, and its displaced replicas re-created where the plan put them."""
    deployments = []
    demands = {d["name"]: d for d in plan.request.get("demands", [])}
    by_key: dict[str, list[dict[str, Any]]] = {}
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
    return deployments


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
    from serving.runtime import emulated as runtime

    schedule_pending_deployments()
    slots = list(DeploymentSlot.objects.filter(partition__gpu__node=node, deployment__state__in=("scheduled", "running"))
                 .select_related("deployment__profile", "partition__gpu"))
    if not runtime.can_run(node):
        Deployment.objects.filter(pk__in={s.deployment_id for s in slots}, state="scheduled").exclude(
            state_message__startswith="scheduled on a node without"
        ).update(state_message="scheduled on a node without a serving runtime: start the replicas with the workload spec")
        return
    runtime.reconcile(node, [
        runtime.ReplicaSlot(s.partition.gpu.index, s.partition.index, s.deployment.profile.replica_memory_gb)
        for s in slots
    ])
    now = timezone.now()
    DeploymentSlot.objects.filter(pk__in=[s.pk for s in slots], started_at__isnull=True).update(started_at=now)
    for deployment in Deployment.objects.filter(state="scheduled", slots__partition__gpu__node=node).distinct():
        if not deployment.slots.filter(started_at__isnull=True).exists():
            with transaction.atomic():
                _transition(deployment, Deployment.State.RUNNING, "all replicas started")


# --- the ports serving implements (registered in serving/apps.py) -----------------------------

class DeploymentWorkloads:
    """Deployments as the workloads on partitions (partitions.workloads) and as the replicas
    placement works around and plans move (planning.occupancy)."""

    # partitions.workloads
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

    def occupants(self, *, partition_ids: list[int]) -> dict[int, Occupant]:
        from django.urls import reverse

        rows = DeploymentSlot.objects.filter(partition_id__in=partition_ids).values_list(
            "partition_id", "deployment_id", "deployment__name", "deployment__state")
        return {pid: Occupant(name=name, state=state, url=reverse("serving:deployment-detail", args=[dep_id]))
                for pid, dep_id, name, state in rows}

    def reconcile(self, *, node: Node) -> None:
        reconcile_node(node=node)

    def after_sample(self, *, node: Node, interval_s: float) -> None:
        from serving.runtime.emulated import feed_emulated_serving

        feed_emulated_serving(node, interval_s=interval_s)

    # planning.occupancy
    def occupants_for_placement(self, *, node_ids: Sequence[int] | None) -> tuple[placement.Occupant, ...]:
        slots = DeploymentSlot.objects.filter(deployment__state__in=("scheduled", "running")).select_related(
            "deployment__profile", "partition__gpu__node"
        )
        if node_ids is not None:
            slots = slots.filter(partition__gpu__node__in=list(node_ids))
        return tuple(
            placement.Occupant(
                deployment=slot.deployment.name, replica=slot.replica, priority=slot.deployment.priority,
                node=slot.partition.gpu.node.name, gpu_index=slot.partition.gpu.index,
                partition_index=slot.partition.index if slot.deployment.profile.gpus_needed == 1 else None,
                memory_gb=slot.deployment.profile.replica_memory_gb,
            )
            for slot in slots
        )

    def check_names(self, *, names: Sequence[str]) -> dict[str, str]:
        taken = sorted(Deployment.objects.active().filter(name__in=list(names)).values_list("name", flat=True))
        return {"name": f"an active deployment is already called {taken[0]!r}"} if taken else {}

    def apply_plan(self, *, plan: Plan, result: dict[str, Any], user: Any) -> list[Deployment]:
        return apply_plan_deployments(plan=plan, result=result, user=user)


def running_replicas_by_model(node: Node) -> list[tuple[str, float, int]]:
    """(model HF id, GiB per replica, started partitions) of the deployments running on a node."""
    rows = (Deployment.objects.filter(state=Deployment.State.RUNNING, slots__partition__gpu__node=node,
                                      slots__started_at__isnull=False)
            .values_list("profile__model__hf_id", "profile__memory_required_gb")
            .annotate(partitions=Count("slots")).order_by())
    return [(model, memory_gb or 0.0, partitions) for model, memory_gb, partitions in rows]
