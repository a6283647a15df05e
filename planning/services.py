"""The fleet as placement sees it, and plans: what-if results kept, then applied.

``fleet_state`` reads the fleet in a fixed number of queries; ``fingerprint`` changes whenever
anything planning looked at changes; a plan keeps the fingerprint of its scope (``plan_scope``:
the GPUs it repartitions or puts replicas on), so a plan whose ground changed is refused
(``StalePlan``) while changes elsewhere leave it applicable; ``replan`` redoes it.
``create_plan`` runs the pure planner (planning/planner.py) and keeps the result; ``apply_plan``
turns it into reconfigurations (partitions) and hands the replicas to the app that runs them
(the ``occupancy`` port: serving creates and moves deployments there).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction
from django.db.models import Prefetch, Q
from django.utils import timezone

from aimconsole import audit, counters
from models.models import ModelProfile
from partitions.models import GPU, Node, Reconfiguration
from partitions.services.reconfiguration import request_reconfiguration
from planning import occupancy, placement, planner
from planning.models import Plan


class StalePlan(Exception):
    """The fleet changed since the plan was made, or the plan was already applied."""


# Demand size limits of one plan (also stated in the API schema): beyond them a what-if plan is
# refused with a message instead of computing for minutes.
MAX_PLAN_DEMANDS = 100
MAX_REPLICAS_PER_DEMAND = 1024
MAX_PLAN_REPLICAS = 4096


def _seconds_setting(name: str, default: float) -> float:
    value = getattr(settings, name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ImproperlyConfigured(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def exact_time_budget_s() -> float:
    """Seconds the exact placement solver may take per decision (setting
    PLACEMENT_EXACT_TIME_BUDGET_S, default 2; 0: heuristic only)."""
    return _seconds_setting("PLACEMENT_EXACT_TIME_BUDGET_S", placement.DEFAULT_TIME_BUDGET_S)


def plan_time_budget_s() -> float:
    """Seconds one what-if plan may take in all (setting PLAN_TIME_BUDGET_S, default 30)."""
    return _seconds_setting("PLAN_TIME_BUDGET_S", 30.0)


# --- the fleet ----------------------------------------------------------------------------------

def _caps(gpu: GPU) -> dict[str, tuple[str, ...]] | None:
    """The hardware's memory caps per compute mode; None (no caps reported): the geometry table."""
    from partitions.geometry import reported_caps  # the one reading of reported caps

    return reported_caps(gpu.accelerator_profiles)


def fleet_state(*, nodes: Iterable[Node] | None = None, node_ids: Sequence[int] | None = None) -> placement.Fleet:
    """Nodes, GPUs (unschedulable when unhealthy, marked so, or under an active operation) and
    the replicas running on them. Each unschedulable node or GPU carries why (``problem``):
    placement leaves it out and reports it (``Placement.excluded``). ``nodes`` or ``node_ids``:
    only those nodes (a snapshot whose cost does not grow with the fleet); neither: all."""
    queryset = Node.objects.prefetch_related(
        Prefetch("gpus", queryset=GPU.objects.order_by("index")),  # type: ignore[arg-type]  # stubs cannot infer Prefetch's generics
    )
    if nodes is not None:
        node_ids = [n.pk for n in nodes]
    if node_ids is not None:
        node_ids = list(node_ids)
        queryset = queryset.filter(pk__in=node_ids)
    # A GPU (or, for an NPS change, a node) under an operation must not get new replicas: its
    # layout is about to change, and the operation may drain what runs there.
    busy_gpus: dict[int, int] = {}
    busy_nodes: dict[int, int] = {}
    for pk, kind, node_id, gpu_id in Reconfiguration.objects.active().values_list("pk", "kind", "node_id", "gpu_id"):
        if kind == Reconfiguration.Kind.MEMORY:
            busy_nodes[node_id] = pk
        elif gpu_id:
            busy_gpus[gpu_id] = pk
    node_states = []
    for node in queryset:
        gpus = tuple(
            placement.GpuState(
                node=node.name, index=gpu.index, gpu_model=gpu.gpu_model, compute_mode=gpu.compute_mode,
                schedulable=not _gpu_problem(gpu, busy_gpus), caps=_caps(gpu), problem=_gpu_problem(gpu, busy_gpus),
            )
            for gpu in node.gpus.all()
        )
        problem = _node_problem(node, busy_nodes)
        node_states.append(placement.NodeState(
            name=node.name, memory_mode=node.memory_mode, gpus=gpus, schedulable=not problem, problem=problem,
        ))
    return placement.Fleet(nodes=tuple(node_states), occupants=occupancy.occupants(node_ids=node_ids))


def _gpu_problem(gpu: GPU, busy: dict[int, int]) -> str:
    """Why placement must not use this GPU ("" when it may)."""
    if gpu.pk in busy:
        return f"reconfiguration #{busy[gpu.pk]} is in progress on it"
    if gpu.health == GPU.Health.UNHEALTHY:
        return "unhealthy" + (f": {gpu.health_reason}" if gpu.health_reason else "")
    if not gpu.schedulable:
        return "marked unschedulable"
    if not gpu.gpu_model:
        return "GPU model not recognised"
    if not gpu.compute_mode:
        return "compute mode unknown"
    return ""


def _node_problem(node: Node, busy: dict[int, int]) -> str:
    """Why placement must not use this node ("" when it may)."""
    if node.layout_problem:
        return node.layout_problem
    if node.pk in busy:
        return f"memory-mode change (reconfiguration #{busy[node.pk]}) in progress"
    if not node.memory_mode:
        return "memory mode unknown"
    if node.backend == Node.Backend.IMPORTED:
        return "imported from captured output (no agent)"
    return ""


def fingerprint(fleet: placement.Fleet, scope: dict[str, Any] | None = None) -> str:
    """Changes whenever a mode, capability, health, occupant (or where it runs) or operation that
    planning looked at changes. With ``scope`` (``plan_scope``): only on the scope's GPUs and
    their nodes (a GPU that disappeared counts as a change)."""
    gpus = None if scope is None else {(node, index) for node, index in scope.get("gpus", [])}
    names = None if gpus is None else {node for node, _ in gpus}
    nodes = [n for n in sorted(fleet.nodes, key=lambda n: n.name) if names is None or n.name in names]
    data = {
        "nodes": [
            [n.name, n.memory_mode, n.schedulable, [
                [g.index, g.gpu_model, g.compute_mode, g.schedulable, sorted((k, list(v)) for k, v in (g.caps or {}).items())]
                for g in n.gpus if gpus is None or (n.name, g.index) in gpus]]
            for n in nodes
        ],
        "occupants": sorted([o.deployment, o.replica, o.node, o.gpu_index, o.partition_index, o.priority, o.memory_gb]
                            for o in fleet.occupants if gpus is None or (o.node, o.gpu_index) in gpus),
    }
    if gpus is not None:
        data["scope"] = sorted(gpus)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def plan_scope(result: dict[str, Any]) -> dict[str, Any]:
    """What a plan (its ``planner.summary``) stands on: the GPUs it repartitions (every GPU of a
    node whose memory mode changes), the GPUs its replicas go to and the GPUs they leave. The plan
    stays valid while those GPUs, their nodes' memory modes and the replicas on them stay as
    they were; a change elsewhere does not invalidate it (it may make a better plan possible:
    re-plan to find out)."""
    gpus: set[tuple[str, int]] = set()
    for nc in result.get("node_changes", []):
        gpus.update((nc["node"], i) for i in nc["gpus_touched"])
    gpus.update((c["node"], c["gpu_index"]) for c in result.get("gpu_changes", []))
    for a in result.get("assignments", []):
        gpus.update((s["node"], s["gpu_index"]) for s in a["slots"])
    for d in result.get("displaced", []):
        gpus.add((d["node"], d["gpu_index"]))
        gpus.update((s["node"], s["gpu_index"]) for s in d.get("to") or [])
    return {"gpus": [list(g) for g in sorted(gpus)]}


def _scoped_fleet(scope: dict[str, Any] | None) -> placement.Fleet:
    if scope is None:
        return fleet_state()
    return fleet_state(nodes=Node.objects.filter(name__in={node for node, _ in scope.get("gpus", [])}))


def is_stale(plan: Plan, fleet: placement.Fleet | None = None) -> bool:
    """Whether what ``plan`` stands on changed since it was made (or it is no longer a draft).
    Plans made before scopes were kept compare the whole fleet. ``fleet``: a fleet read once
    for several plans (else the plan's nodes are read)."""
    if plan.state != Plan.State.DRAFT:
        return plan.state == Plan.State.STALE
    scope = (plan.result or {}).get("scope")
    return fingerprint(fleet if fleet is not None else _scoped_fleet(scope), scope) != plan.fingerprint


def lock_gpus(gpus: Iterable[tuple[str, int]] | None) -> list[int]:
    """Inside a transaction: lock these GPUs' rows ((node name, index); None: every GPU, for
    plans made before scopes were kept), in primary-key order so two lockers never deadlock,
    and return the ids of their nodes. Whoever commits a decision about a GPU (a placement, a
    plan's operations) holds its row meanwhile; Node rows are never locked here."""
    queryset = GPU.objects.select_for_update(of=("self",)).order_by("pk")
    if gpus is not None:
        chosen = Q(pk__in=[])
        for node, index in sorted(set(gpus)):
            chosen |= Q(node__name=node, index=index)
        queryset = queryset.filter(chosen)
    return list(queryset.values_list("node_id", flat=True))


# --- demands ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemandSpec:
    """A validated request for one deployment."""

    name: str
    profile: ModelProfile
    replicas: int
    priority: int = 0
    spread: bool = False
    """Hard spread (one replica per GPU); True also when ``spread_mode`` is "hard"."""
    pin_node: Node | None = None
    pin_gpu_index: int | None = None
    spread_mode: str = ""
    """"none", "soft" (different GPUs while there are some, then sharing) or "hard"; "": from ``spread``."""

    @property
    def spread_choice(self) -> str:
        return self.spread_mode or ("hard" if self.spread else "none")

    def demand(self) -> placement.Demand:
        return placement.Demand(
            key=self.name, memory_gb=self.profile.replica_memory_gb, replicas=self.replicas, priority=self.priority,
            gpu_models=(self.profile.gpu_model,), tensor_parallel=self.profile.gpus_needed,
            pin_node=self.pin_node.name if self.pin_node else None, pin_gpu=self.pin_gpu_index,
            spread=self.spread_choice == "hard", soft_spread=self.spread_choice == "soft",
        )


def validate_demands(specs: Sequence[DemandSpec]) -> None:
    """Raise ValidationError (field -> message) for demands that cannot be placed as asked."""
    errors: dict[str, str] = {}
    names = [s.name for s in specs]
    if len(names) != len(set(names)):
        errors["name"] = "deployment names must be unique within a plan"
    if len(specs) > MAX_PLAN_DEMANDS:
        errors["demands"] = f"at most {MAX_PLAN_DEMANDS} demands per plan, got {len(specs)}"
    if sum(s.replicas for s in specs) > MAX_PLAN_REPLICAS:
        errors["demands"] = f"at most {MAX_PLAN_REPLICAS} replicas per plan in all, got {sum(s.replicas for s in specs)}"
    for spec in specs:
        if spec.replicas < 1:
            errors["replicas"] = "must be at least 1"
        if spec.replicas > MAX_REPLICAS_PER_DEMAND:
            errors["replicas"] = f"at most {MAX_REPLICAS_PER_DEMAND} per demand"
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
            # Both are set: the filter above excludes rows without them.
            measured[attr] = round(median((end - start).total_seconds() for start, end in rows if start and end), 1)
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
                {"name": d.name, "profile": d.profile.pk, "replicas": d.replicas, "priority": d.priority, "spread": d.spread_choice,
                 "pin_node": d.pin_node.name if d.pin_node else None, "pin_gpu_index": d.pin_gpu_index}
                for d in self.demands
            ],
        }


def _user(requested_by: Any) -> Any:
    return requested_by if getattr(requested_by, "pk", None) else None


def create_plan(*, gpu_targets: Sequence[planner.GpuTarget] = (), node_targets: Sequence[planner.NodeTarget] = (),
                demands: Sequence[DemandSpec] = (), requested_by: Any = None) -> Plan:
    """Run the what-if planner on the current fleet and keep the result (no side effects on
    the fleet). Raises planner.PlanError / ValidationError for bad targets or demands (sizes
    beyond MAX_PLAN_DEMANDS, MAX_REPLICAS_PER_DEMAND, MAX_PLAN_REPLICAS included), and
    planner.PlanTimeout (a PlanError; nothing stored) past ``plan_time_budget_s()``."""
    validate_demands(demands)
    request = PlanRequest(list(gpu_targets), list(node_targets), list(demands))
    result, fp = _run_planner(request)
    return Plan.objects.create(request=request.to_json(), result=result, fingerprint=fp, created_by=_user(requested_by))


def _run_planner(request: PlanRequest) -> tuple[dict[str, Any], str]:
    """The planner on a fresh read of the whole fleet: (the plan's summary with its scope, the
    scope's fingerprint). Holds no lock and writes nothing but the placement counters."""
    deadline = time.monotonic() + plan_time_budget_s()
    fleet = fleet_state()
    result = planner.plan(fleet, gpu_targets=request.gpu_targets, node_targets=request.node_targets,
                          demands=[d.demand() for d in request.demands], durations=step_durations(),
                          exact_time_budget_s=exact_time_budget_s(), deadline=deadline)
    if request.demands:
        counters.count_placement("plan", result)
    summary = planner.summary(result)
    summary["scope"] = plan_scope(summary)
    return summary, fingerprint(fleet, summary["scope"])


# A plan over a fleet of at least this many GPUs is computed by a worker (setting
# PLAN_ASYNC_MIN_GPUS; 0: always): the request returns the plan row at once, in state planning.
PLAN_ASYNC_MIN_GPUS = 512


def plan_async_min_gpus() -> int:
    value = getattr(settings, "PLAN_ASYNC_MIN_GPUS", PLAN_ASYNC_MIN_GPUS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ImproperlyConfigured(f"PLAN_ASYNC_MIN_GPUS must be a whole number >= 0, got {value!r}")
    return value


def request_plan(*, gpu_targets: Sequence[planner.GpuTarget] = (), node_targets: Sequence[planner.NodeTarget] = (),
                 demands: Sequence[DemandSpec] = (), requested_by: Any = None) -> Plan:
    """A what-if plan as the API and the compose page ask for one: on a fleet of fewer than
    ``plan_async_min_gpus()`` GPUs, ``create_plan`` at once (a draft); on a larger one, a plan
    row in state ``planning`` returned at once, which a worker fills in (``compute_plan``:
    draft, or failed with the reason). Either way the input is checked first (demands, and the
    targets against the nodes they name), so bad input gets its error now and stores nothing.
    When the broker cannot take the task, the plan is computed here instead."""
    if GPU.objects.count() < plan_async_min_gpus():
        return create_plan(gpu_targets=gpu_targets, node_targets=node_targets, demands=demands, requested_by=requested_by)
    validate_demands(demands)
    request = PlanRequest(list(gpu_targets), list(node_targets), list(demands))
    if not (gpu_targets or node_targets or demands):
        raise planner.PlanError("give target layouts (gpus/nodes) or demands")
    if gpu_targets or node_targets:
        named = {t.node for t in gpu_targets} | {t.node for t in node_targets}
        scoped = fleet_state(node_ids=list(Node.objects.filter(name__in=named).values_list("pk", flat=True)))
        planner.plan(scoped, gpu_targets=gpu_targets, node_targets=node_targets, exact_time_budget_s=0)  # raises PlanError
    with transaction.atomic():
        plan = Plan.objects.create(request=request.to_json(), result={}, fingerprint="", state=Plan.State.PLANNING,
                                   created_by=_user(requested_by))
        transaction.on_commit(lambda: _enqueue_plan(plan.pk))
    plan.refresh_from_db()
    return plan


def _enqueue_plan(plan_id: int) -> None:
    from planning import dispatch

    try:
        dispatch.send_compute_plan(plan_id)
    except Exception:  # broker unreachable: compute it here rather than leave it planning
        compute_plan(plan_id=plan_id)


def compute_plan(*, plan_id: int) -> Plan | None:
    """Fill in a plan left ``planning`` by ``request_plan``: run the planner on the fleet as it
    is now, with the plan's stored inputs (checked again: a profile may have gone since), and
    make it a draft; or ``failed`` with the reason in ``result["error"]``. Safe to run twice: a
    plan no longer planning (or gone) is left as it is, and only a plan still planning is
    written (a conditional update). Returns the plan, or None when it is gone."""
    from planning.api.serializers import PlanCreateSerializer, plan_inputs  # the one validation path

    plan = Plan.objects.filter(pk=plan_id).first()
    if plan is None or plan.state != Plan.State.PLANNING:
        return plan
    values: dict[str, Any]
    payload = PlanCreateSerializer(data=plan.request)
    try:
        if not payload.is_valid():
            raise ValidationError(f"the plan's inputs are no longer valid: {payload.errors}")
        inputs = plan_inputs(payload.validated_data)
        validate_demands(inputs.get("demands", ()))
        result, fp = _run_planner(PlanRequest(list(inputs.get("gpu_targets", ())), list(inputs.get("node_targets", ())),
                                              list(inputs.get("demands", ()))))
        values = {"state": Plan.State.DRAFT, "result": result, "fingerprint": fp}
    except (planner.PlanError, ValidationError) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        values = {"state": Plan.State.FAILED, "result": {"error": message[:2000]}}
    Plan.objects.filter(pk=plan_id, state=Plan.State.PLANNING).update(**values)
    return Plan.objects.filter(pk=plan_id).first()


def replan(*, plan: Plan, requested_by: Any = None) -> Plan:
    """A new plan with ``plan``'s inputs, on the fleet as it is now (through the API's
    serializer: inputs that are no longer valid, such as a profile since deleted, are refused the
    same way; on a large fleet computed by a worker, as ``request_plan`` does). The old plan, if
    still a draft, becomes stale once the new one is made."""
    from planning.api.serializers import PlanCreateSerializer, plan_inputs  # the one validation path

    payload = PlanCreateSerializer(data=plan.request)
    if not payload.is_valid():
        raise ValidationError({"request": f"plan #{plan.pk}'s inputs are no longer valid: {payload.errors}"})
    new = request_plan(**plan_inputs(payload.validated_data), requested_by=requested_by)
    Plan.objects.filter(pk=plan.pk, state=Plan.State.DRAFT).update(state=Plan.State.STALE)
    return new


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
        if plan.state == Plan.State.PLANNING:
            raise StalePlan(f"plan #{plan.pk} is still being computed; apply it once it is a draft")
        if plan.state != Plan.State.DRAFT:
            raise StalePlan(f"plan #{plan.pk} is {plan.state}; make a new plan")
        # The GPUs the plan stands on, not the fleet: applies and creates elsewhere go on, and
        # no Node row is locked (agents' heartbeats and syncs write those).
        scope = (plan.result or {}).get("scope")
        lock_gpus(None if scope is None else [(node, index) for node, index in scope.get("gpus", [])])
        stale = is_stale(plan)
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
        # As asked in the request's node target, else the compute mode a suggested change chose.
        compute = (node_targets.get(change["node"]) or {}).get("compute_mode") or change.get("compute_mode")
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
