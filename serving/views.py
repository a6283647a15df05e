"""Deployment pages and the operations list (reconfigurations and deployments together).
Thin: parse input, call one service or query, render."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from models.models import ModelProfile
from models.services import default_profiles
from partitions.models import Node, Reconfiguration
from planning import placement
from planning.placement.reasons import count_reasons
from planning.services import MAX_REPLICAS_PER_DEMAND, DemandSpec, fleet_state
from serving.models import Deployment
from serving.services import PlacementConflict, create_deployment, stop_deployment

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
        # A plan id the database can hold (a bigger one matches nothing rather than overflowing).
        raw = q["plan"]
        plan_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None
        ops = ops.filter(plan_id=plan_id) if plan_id is not None else ops.none()
        deployments = (deployments.filter(Q(plan_id=plan_id) | Q(moves__plan_id=plan_id)).distinct() if plan_id is not None
                       else deployments.none())
    kind = q.get("kind", "")
    return render(request, "serving/operation_list.html", {
        "operations": ops[:200] if kind in ("", "reconfiguration") else [],
        "deployments": deployments[:200] if kind in ("", "deployment") else [],
        "filters": q, "states": sorted(set(Reconfiguration.State.values) | set(Deployment.State.values)),
        "nodes": Node.objects.order_by("name").values_list("name", flat=True),
    })


# --- deployments ---------------------------------------------------------------------------------

def deployment_list(request: HttpRequest) -> HttpResponse:
    deployments = Deployment.objects.with_related().order_by("-created_at")
    if request.GET.get("state"):
        deployments = deployments.filter(state=request.GET["state"])
    return render(request, "serving/deployment_list.html", {
        "deployments": deployments[:500], "can_operate": request.user.has_perm("serving.add_deployment"),
        "states": Deployment.State.values, "filters": request.GET,
    })


def _stop_summary(deployment: Deployment) -> dict[str, Any]:
    """What "Stop" stops, for its confirmation: how many replicas hold partitions and on which
    nodes (where a plan put them, for a deployment still waiting for its partitions)."""
    slots = list(deployment.slots.all())
    if slots:
        return {"replicas": len({s.replica for s in slots}), "nodes": sorted({s.partition.gpu.node.name for s in slots}),
                "planned": False}
    planned = deployment.planned_slots or []
    return {"replicas": len(planned), "planned": True,
            "nodes": sorted({str(s.get("node")) for p in planned for s in p.get("slots", []) if s.get("node")})}


def _render_detail(request: HttpRequest, deployment: Deployment, extra: dict[str, Any] | None = None,
                   status: int = 200) -> HttpResponse:
    from serving.api.serializers import DeploymentSerializer
    from serving.traffic import model_traffic

    workloads = DeploymentSerializer(context={"request": request}).get_workloads(deployment)
    return render(request, "serving/deployment_detail.html", {
        "deployment": deployment, "workloads": workloads, "can_operate": request.user.has_perm("serving.delete_deployment"),
        "can_redeploy": request.user.has_perm("serving.add_deployment") and not deployment.is_active,
        "stop": _stop_summary(deployment) if deployment.is_active else None,
        "traffic": model_traffic(deployment.profile.model.hf_id), **(extra or {}),
    }, status=status)


def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _render_detail(request, get_object_or_404(Deployment.objects.with_related(), pk=pk))


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
    profiles = ModelProfile.objects.with_related().filter(default_profiles(), gpu_model__in=models_in_fleet)
    for profile in profiles.order_by("model__hf_id", "precision__sort_order", "gpu_model"):
        need = profile.replica_memory_gb
        fitting = sum(1 for gb in free_by_model[profile.gpu_model] if gb >= need)
        options.append({"profile": profile, "need": need, "fitting_free": fitting})
    return options


# The form's fields, named as in the API's request body (DeploymentCreateSerializer).
FORM_FIELDS = ("name", "profile", "replicas", "priority", "pin_node", "pin_gpu_index")


def _form_errors(errors: Any) -> str:
    return "; ".join(f"{field}: {' '.join(str(m) for m in messages_)}" for field, messages_ in errors.items())


def _field_errors(errors: Any) -> dict[str, str]:
    """field -> its messages in one line, for the error shown next to each input."""
    return {str(field): " ".join(str(m) for m in messages_) for field, messages_ in errors.items()}


@permission_required("serving.add_deployment", raise_exception=True)
def deployment_create(request: HttpRequest) -> HttpResponse:
    """The deployment form. POST validates with the API's serializer (one validation for pages
    and API) before anything is written, then calls the same service as the API. Errors are
    per field (next to the input, and summed up above the form); a demand that does not fit
    lists each distinct reason once with the number of replicas it concerns."""
    from serving.api.serializers import DeploymentCreateSerializer

    context: dict[str, Any] = {"options": _profile_options(), "nodes": Node.objects.order_by("name"), "form": request.POST,
                               "max_replicas": MAX_REPLICAS_PER_DEMAND, "field_errors": {}}
    if request.method == "POST":
        # Only the serializer's fields (not the CSRF token); empty optional fields are absent.
        data: dict[str, Any] = {k: request.POST[k] for k in FORM_FIELDS if request.POST.get(k, "") != ""}
        data["spread"] = bool(request.POST.get("spread"))
        payload = DeploymentCreateSerializer(data=data)
        try:
            if not payload.is_valid():
                raise ValidationError(payload.errors)
            spec = DemandSpec(**payload.validated_data)
            deployment = create_deployment(spec=spec, requested_by=request.user)
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                context["error"] = _form_errors(exc.message_dict)
                context["field_errors"] = _field_errors(exc.message_dict)
            else:
                context["error"] = "; ".join(exc.messages)
        except PlacementConflict as exc:
            context["conflict"] = exc
            context["reasons"] = count_reasons(exc.reasons, of=spec.replicas)
        else:
            messages.success(request, f"Deployment {deployment.name} scheduled on {deployment.slots.count()} partition(s).")
            return redirect("serving:deployment-detail", pk=deployment.pk)
        return render(request, "serving/deployment_form.html", context, status=400 if "error" in context else 409)
    return render(request, "serving/deployment_form.html", context)


@require_POST
@permission_required("serving.delete_deployment", raise_exception=True)
def deployment_stop(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment, pk=pk)
    stop_deployment(deployment=deployment, reason=f"stopped by {request.user.get_username()}")
    messages.success(request, f"Deployment {deployment.name} stopped; its partitions are free.")
    return redirect("serving:deployment-detail", pk=pk)


@require_POST
@permission_required("serving.add_deployment", raise_exception=True)
def deployment_redeploy(request: HttpRequest, pk: int) -> HttpResponse:
    """A new deployment like a stopped (or failed) one: same name, profile, replicas, priority,
    spread and pins, placed through the same service as the form. A name taken meanwhile or a
    pin that no longer exists is refused with the service's message; a demand that no longer
    fits shows the conflict on the old deployment's page, as the form shows it."""
    old = get_object_or_404(Deployment.objects.with_related(), pk=pk)
    if old.is_active:
        messages.error(request, f"Deployment {old.name} is still {old.state}: only a stopped or failed deployment is redeployed.")
        return redirect("serving:deployment-detail", pk=old.pk)
    spec = DemandSpec(name=old.name, profile=old.profile, replicas=old.replicas, priority=old.priority, spread=old.spread,
                      pin_node=old.pin_node, pin_gpu_index=old.pin_gpu_index)
    try:
        new = create_deployment(spec=spec, requested_by=request.user)
    except ValidationError as exc:
        messages.error(request, f"Cannot redeploy {old.name}: "
                                + (_form_errors(exc.message_dict) if hasattr(exc, "error_dict") else "; ".join(exc.messages)))
        return redirect("serving:deployment-detail", pk=old.pk)
    except PlacementConflict as exc:
        return _render_detail(request, old, {"conflict": exc, "reasons": count_reasons(exc.reasons, of=spec.replicas)}, status=409)
    messages.success(request, f"Deployment {new.name} redeployed (like #{old.pk}) on {new.slots.count()} partition(s).")
    return redirect("serving:deployment-detail", pk=new.pk)
