"""Layout editors (GPU compute mode, node memory mode) with the what-if plan, and plans.
Thin: parse input, call one service, render."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from partitions import workloads
from partitions.geometry import ComputeMode, MemoryMode, get_spec
from partitions.models import GPU, Node
from partitions.services.reconfiguration import OperationInProgress, valid_compute_modes
from planning import planner
from planning.models import Plan
from planning.services import StalePlan, apply_plan, create_plan


def _can_operate(request: HttpRequest) -> bool:
    return request.user.has_perm("partitions.add_reconfiguration")


def _with_occupants(gpus: list[GPU]) -> None:
    """Attach ``occupant`` (what holds it, or None) to every partition of these GPUs."""
    workloads.attach_occupants([p for gpu in gpus for p in gpu.partitions.all()])


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
        return render(request, "planning/_plan.html", context)
    return render(request, template, context)


def _post_needs(perm: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """A POST to the page needs ``perm``, the permission the API route that does the same
    checks (403 otherwise, nothing changed); every role may still GET it."""
    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method == "POST" and not request.user.has_perm(perm):
                raise PermissionDenied("This needs the operator or admin role.")
            return view(request, *args, **kwargs)
        return checked
    return decorate


@_post_needs("planning.add_plan")  # POST /api/v1/plans/
def gpu_editor(request: HttpRequest, pk: int) -> HttpResponse:
    gpu = get_object_or_404(GPU.objects.select_related("node").prefetch_related("partitions"), pk=pk)
    if not gpu.gpu_model:
        raise Http404("unrecognised GPU model")
    _with_occupants([gpu])
    context: dict[str, Any] = {"gpu": gpu, "node": gpu.node, "choices": _gpu_choices(gpu), "can_operate": _can_operate(request)}
    if request.method == "POST":
        mode = request.POST.get("compute_mode", "")
        try:
            plan = create_plan(gpu_targets=[planner.GpuTarget(gpu.node.name, gpu.index, mode.upper())], requested_by=request.user)
        except (planner.PlanError, ValidationError) as exc:
            context["error"] = "; ".join(getattr(exc, "messages", [str(exc)]))
            return render(request, "planning/_plan.html" if request.headers.get("HX-Request") else "planning/gpu_editor.html",
                          context, status=400)
        return _render_plan(request, plan, "planning/gpu_editor.html", context)
    return render(request, "planning/gpu_editor.html", context)


@_post_needs("planning.add_plan")  # POST /api/v1/plans/
def node_editor(request: HttpRequest, name: str) -> HttpResponse:
    node = get_object_or_404(Node.objects.prefetch_related("gpus__partitions"), name=name)
    _with_occupants(list(node.gpus.all()))
    context: dict[str, Any] = {"node": node, "choices": _node_choices(node), "can_operate": _can_operate(request)}
    if request.method == "POST":
        memory, _, compute = request.POST.get("pair", "").partition(":")
        try:
            plan = create_plan(node_targets=[planner.NodeTarget(node.name, memory.upper(), compute.upper() or None)],
                               requested_by=request.user)
        except (planner.PlanError, ValidationError) as exc:
            context["error"] = "; ".join(getattr(exc, "messages", [str(exc)]))
            return render(request, "planning/_plan.html" if request.headers.get("HX-Request") else "planning/node_editor.html",
                          context, status=400)
        return _render_plan(request, plan, "planning/node_editor.html", context)
    return render(request, "planning/node_editor.html", context)


def plan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(Plan, pk=pk)
    return render(request, "planning/plan_detail.html", {"plan": plan, "result": plan.result, "can_operate": _can_operate(request)})


@require_POST
@permission_required("planning.change_plan", raise_exception=True)
def plan_apply(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(Plan, pk=pk)
    try:
        applied = apply_plan(plan=plan, requested_by=request.user)
    except (StalePlan, OperationInProgress) as exc:
        messages.error(request, str(exc))
        return redirect("planning:plan-detail", pk=plan.pk)
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
        return redirect("planning:plan-detail", pk=plan.pk)
    messages.success(request, f"Plan #{plan.pk} applied: {len(applied.reconfigurations)} reconfiguration(s), "
                              f"{len(applied.deployments)} deployment(s).")
    if len(applied.reconfigurations) == 1:
        return redirect("partitions:operation-detail", pk=applied.reconfigurations[0].pk)
    return redirect(f"{reverse('serving:operation-list')}?plan={plan.pk}")
