"""Operator pages: fleet overview, GPU/node layout editors with the what-if plan, plans,
operations, deployments. Thin: parse input, call one service or query, render."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from models.models import ModelProfile
from partitions import placement, planner
from partitions.geometry import ComputeMode, MemoryMode, get_spec
from partitions.models import GPU, Deployment, Node, Partition, Plan, Reconfiguration
from partitions.services.deployments import (
    DemandSpec,
    PlacementConflict,
    StalePlan,
    apply_plan,
    create_deployment,
    create_plan,
    stop_deployment,
)
from partitions.services.fleet import fleet_state
from partitions.services.reconfiguration import OperationInProgress, valid_compute_modes


def _can_operate(request: HttpRequest) -> bool:
    return request.user.has_perm("partitions.add_reconfiguration")


# --- fleet overview --------------------------------------------------------------------------

def fleet(request: HttpRequest) -> HttpResponse:
    """Every node → GPU → partition with the model on it; filters by node, GPU model, compute
    mode and free capacity. A fixed number of queries whatever the fleet size."""
    q = request.GET
    partitions = Partition.objects.select_related("slot__deployment").order_by("index")
    gpus = GPU.objects.order_by("index").prefetch_related(Prefetch("partitions", queryset=partitions))
    nodes = Node.objects.order_by("name").prefetch_related(Prefetch("gpus", queryset=gpus))
    if q.get("node"):
        nodes = nodes.filter(name__icontains=q["node"][:63])
    active = list(Reconfiguration.objects.active().select_related("node"))
    busy_gpu = {op.gpu_id: op for op in active if op.gpu_id}
    busy_node = {op.node_id: op for op in active if op.kind == Reconfiguration.Kind.MEMORY}
    try:
        min_free = float(q.get("free") or 0)
    except ValueError:
        min_free = 0.0
    rows = []
    totals = {"gpus": 0, "partitions": 0, "free_gb": 0.0, "used": 0}
    for node in nodes:
        shown = []
        for gpu in node.gpus.all():
            if q.get("gpu_model") and gpu.gpu_model != q["gpu_model"]:
                continue
            if q.get("mode") and gpu.compute_mode != q["mode"]:
                continue
            parts = list(gpu.partitions.all())
            free_gb = sum(p.memory_gb or 0 for p in parts if not hasattr(p, "slot"))
            if free_gb < min_free:
                continue
            shown.append({"gpu": gpu, "partitions": parts, "free_gb": free_gb,
                          "operation": busy_gpu.get(gpu.pk) or busy_node.get(node.pk)})
            totals["gpus"] += 1
            totals["partitions"] += len(parts)
            totals["free_gb"] += free_gb
            totals["used"] += sum(1 for p in parts if hasattr(p, "slot"))
        if shown or not (q.get("gpu_model") or q.get("mode") or min_free):
            rows.append({"node": node, "gpus": shown, "operation": busy_node.get(node.pk)})
    return render(request, "partitions/fleet.html", {
        "rows": rows, "totals": totals, "filters": q, "can_operate": _can_operate(request),
        "gpu_models": sorted({g for g in GPU.objects.values_list("gpu_model", flat=True).distinct() if g}),
        "compute_modes": [m.value for m in ComputeMode],
    })


# --- layout editors and plans ------------------------------------------------------------------

def _gpu_choices(gpu: GPU) -> list[dict[str, Any]]:
    """Every compute mode, enabled only where valid under the node's memory mode."""
    spec = get_spec(gpu.gpu_model)
    memory = gpu.memory_mode or gpu.node.memory_mode
    valid = set(valid_compute_modes(gpu, memory))
    choices = []
    for mode in ComputeMode:
        if mode not in spec.compute_modes:
            reason = f"{spec.model} has no {mode} mode"
        elif mode.value not in valid:
            reason = f"not valid under {memory} (valid: {', '.join(sorted(valid, key=spec.compute_modes.index))})"
        else:
            reason = ""
        count = spec.partition_count(mode) if mode in spec.compute_modes else 0
        choices.append({"mode": mode.value, "enabled": not reason, "reason": reason, "current": mode.value == gpu.compute_mode,
                        "count": count, "memory_gb": spec.smallest_partition_gb(mode) if count else None})
    return choices


def _node_choices(node: Node) -> list[dict[str, Any]]:
    """(memory, compute) pairs for the node's GPU model, invalid ones disabled with the reason."""
    models = {g.gpu_model for g in node.gpus.all() if g.gpu_model}
    if len(models) != 1:
        return []
    spec = get_spec(models.pop())
    valid = {(str(c), str(m)) for c, m in spec.allowed_pairs()}
    choices = []
    for memory in MemoryMode:
        for compute in spec.compute_modes:
            if not spec.memory_switchable and memory.value != node.memory_mode:
                reason = f"{spec.model} cannot switch memory mode"
            elif memory not in spec.memory_modes:
                reason = f"{spec.model} has no {memory}"
            elif (compute.value, memory.value) not in valid:
                reason = f"{compute}+{memory} is not a valid pair on {spec.model}"
            else:
                reason = ""
            choices.append({"value": f"{memory.value}:{compute.value}", "memory": memory.value, "compute": compute.value,
                            "enabled": not reason, "reason": reason})
    return choices


def _render_plan(request: HttpRequest, plan: Plan, template: str, extra: dict | None = None) -> HttpResponse:
    context = {"plan": plan, "result": plan.result, "can_operate": _can_operate(request), **(extra or {})}
    if request.headers.get("HX-Request"):
        return render(request, "partitions/_plan.html", context)
    return render(request, template, context)


def gpu_editor(request: HttpRequest, pk: int) -> HttpResponse:
    gpu = get_object_or_404(GPU.objects.select_related("node").prefetch_related("partitions__slot__deployment"), pk=pk)
    if not gpu.gpu_model:
        raise Http404("unrecognised GPU model")
    context: dict[str, Any] = {"gpu": gpu, "node": gpu.node, "choices": _gpu_choices(gpu), "can_operate": _can_operate(request)}
    if request.method == "POST":
        mode = request.POST.get("compute_mode", "")
        try:
            plan = create_plan(gpu_targets=[planner.GpuTarget(gpu.node.name, gpu.index, mode.upper())], requested_by=request.user)
        except (planner.PlanError, ValidationError) as exc:
            context["error"] = "; ".join(getattr(exc, "messages", [str(exc)]))
            return render(request, "partitions/_plan.html" if request.headers.get("HX-Request") else "partitions/gpu_editor.html",
                          context, status=400)
        return _render_plan(request, plan, "partitions/gpu_editor.html", context)
    return render(request, "partitions/gpu_editor.html", context)


def node_editor(request: HttpRequest, name: str) -> HttpResponse:
    node = get_object_or_404(Node.objects.prefetch_related("gpus__partitions__slot__deployment"), name=name)
    context: dict[str, Any] = {"node": node, "choices": _node_choices(node), "can_operate": _can_operate(request)}
    if request.method == "POST":
        memory, _, compute = request.POST.get("pair", "").partition(":")
        try:
            plan = create_plan(node_targets=[planner.NodeTarget(node.name, memory.upper(), compute.upper() or None)],
                               requested_by=request.user)
        except (planner.PlanError, ValidationError) as exc:
            context["error"] = "; ".join(getattr(exc, "messages", [str(exc)]))
            return render(request, "partitions/_plan.html" if request.headers.get("HX-Request") else "partitions/node_editor.html",
                          context, status=400)
        return _render_plan(request, plan, "partitions/node_editor.html", context)
    return render(request, "partitions/node_editor.html", context)


def plan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(Plan, pk=pk)
    return render(request, "partitions/plan_detail.html", {"plan": plan, "result": plan.result, "can_operate": _can_operate(request)})


@require_POST
@permission_required("partitions.change_plan", raise_exception=True)
def plan_apply(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(Plan, pk=pk)
    try:
        applied = apply_plan(plan=plan, requested_by=request.user)
    except (StalePlan, OperationInProgress) as exc:
        messages.error(request, str(exc))
        return redirect("partitions:plan-detail", pk=plan.pk)
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
        return redirect("partitions:plan-detail", pk=plan.pk)
    messages.success(request, f"Plan #{plan.pk} applied: {len(applied.reconfigurations)} reconfiguration(s), "
                              f"{len(applied.deployments)} deployment(s).")
    if len(applied.reconfigurations) == 1:
        return redirect("partitions:operation-detail", pk=applied.reconfigurations[0].pk)
    return redirect(f"{reverse('partitions:operation-list')}?plan={plan.pk}")


# --- operations --------------------------------------------------------------------------------

def operation_list(request: HttpRequest) -> HttpResponse:
    q = request.GET
    ops = Reconfiguration.objects.select_related("node", "requested_by").order_by("-created_at")
    deployments = Deployment.objects.select_related("profile__model", "requested_by").order_by("-created_at")
    if q.get("state"):
        ops = ops.filter(state=q["state"])
        deployments = deployments.filter(state=q["state"])
    if q.get("node"):
        ops = ops.filter(node__name=q["node"])
        deployments = deployments.filter(Q(slots__partition__gpu__node__name=q["node"]) | Q(pin_node__name=q["node"])).distinct()
    if q.get("plan"):
        ops = ops.filter(plan_id=q["plan"]) if q["plan"].isdigit() else ops.none()
        deployments = deployments.filter(plan_id=q["plan"]) if q["plan"].isdigit() else deployments.none()
    kind = q.get("kind", "")
    return render(request, "partitions/operation_list.html", {
        "operations": ops[:200] if kind in ("", "reconfiguration") else [],
        "deployments": deployments[:200] if kind in ("", "deployment") else [],
        "filters": q, "states": sorted(set(Reconfiguration.State.values) | set(Deployment.State.values)),
        "nodes": Node.objects.order_by("name").values_list("name", flat=True),
    })


def operation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    op = get_object_or_404(Reconfiguration.objects.with_related(), pk=pk)
    return render(request, "partitions/operation_detail.html", {"op": op, "steps": op.steps.all()})


# --- deployments ---------------------------------------------------------------------------------

def deployment_list(request: HttpRequest) -> HttpResponse:
    deployments = Deployment.objects.with_related().order_by("-created_at")
    if request.GET.get("state"):
        deployments = deployments.filter(state=request.GET["state"])
    return render(request, "partitions/deployment_list.html", {
        "deployments": deployments[:500], "can_operate": request.user.has_perm("partitions.add_deployment"),
        "states": Deployment.State.values, "filters": request.GET,
    })


def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    from partitions.api.serializers import DeploymentSerializer

    deployment = get_object_or_404(Deployment.objects.with_related(), pk=pk)
    workloads = DeploymentSerializer(context={"request": request}).get_workloads(deployment)
    return render(request, "partitions/deployment_detail.html", {
        "deployment": deployment, "workloads": workloads, "can_operate": request.user.has_perm("partitions.delete_deployment"),
    })


def _profile_options() -> list[dict[str, Any]]:
    """Default profiles of the GPU models in the fleet, each with where it fits right now."""
    fleet = fleet_state()
    used = {(o.node, o.gpu_index, o.partition_index) for o in fleet.occupants}
    free = [s for s in placement.partitions_of(fleet) if (s.node, s.gpu_index, s.partition_index) not in used]
    models_in_fleet = {g.gpu_model for n in fleet.nodes for g in n.gpus if g.gpu_model}
    model_of = {(n.name, g.index): g.gpu_model for n in fleet.nodes for g in n.gpus}
    free_by_model: dict[str, list[float]] = defaultdict(list)
    for slot in free:
        free_by_model[model_of[(slot.node, slot.gpu_index)]].append(slot.memory_gb)
    options = []
    profiles = ModelProfile.objects.with_related().filter(gpu_model__in=models_in_fleet, context_tokens=8192, concurrent_sequences=1)
    for profile in profiles.order_by("model__hf_id", "precision__sort_order", "gpu_model"):
        need = profile.per_gpu_gb if profile.gpus_needed > 1 else profile.memory_required_gb
        fitting = sum(1 for gb in free_by_model[profile.gpu_model] if gb >= need)
        options.append({"profile": profile, "need": need, "fitting_free": fitting})
    return options


@permission_required("partitions.add_deployment", raise_exception=True)
def deployment_create(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {"options": _profile_options(), "nodes": Node.objects.order_by("name"), "form": request.POST}
    if request.method == "POST":
        try:
            profile = ModelProfile.objects.with_related().get(pk=int(request.POST.get("profile", "0")))
            spec = DemandSpec(
                name=request.POST.get("name", "").strip(), profile=profile,
                replicas=int(request.POST.get("replicas", "1")), priority=int(request.POST.get("priority", "0") or 0),
                spread=bool(request.POST.get("spread")),
                pin_node=Node.objects.filter(name=request.POST.get("pin_node", "")).first() if request.POST.get("pin_node") else None,
            )
            if not spec.name:
                raise ValidationError({"name": "required"})
            deployment = create_deployment(spec=spec, requested_by=request.user)
        except (ValueError, ModelProfile.DoesNotExist):
            context["error"] = "choose a profile and give whole numbers for replicas and priority"
        except ValidationError as exc:
            context["error"] = "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.message_dict.items()) if hasattr(exc, "error_dict") else "; ".join(exc.messages)
        except PlacementConflict as exc:
            context["conflict"] = exc
        else:
            messages.success(request, f"Deployment {deployment.name} scheduled on {deployment.slots.count()} partition(s).")
            return redirect("partitions:deployment-detail", pk=deployment.pk)
        return render(request, "partitions/deployment_form.html", context, status=400 if "error" in context else 409)
    return render(request, "partitions/deployment_form.html", context)


@require_POST
@permission_required("partitions.delete_deployment", raise_exception=True)
def deployment_stop(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment, pk=pk)
    stop_deployment(deployment=deployment, reason=f"stopped by {request.user.get_username()}")
    messages.success(request, f"Deployment {deployment.name} stopped; its partitions are free.")
    return redirect("partitions:deployment-detail", pk=pk)
