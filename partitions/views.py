"""Operator pages of the hardware layer: the fleet overview and an operation's detail.
Thin: parse input, call one service or query, render. What occupies each partition comes from
the workloads port (partitions/workloads.py)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from partitions import workloads
from partitions.geometry import ComputeMode
from partitions.models import GPU, Node, Partition, Reconfiguration
from partitions.services.health import request_health_check
from partitions.services.reconfiguration import OperationInProgress


def _can_operate(request: HttpRequest) -> bool:
    return request.user.has_perm("partitions.add_reconfiguration")


# --- fleet overview --------------------------------------------------------------------------

def _mark_healthy(request: HttpRequest) -> HttpResponse:
    """POST ``gpu=<id>`` from the fleet page: ask the node's agent to check the GPU and clear
    its unhealthy mark (the same service and permission as the API's mark-healthy)."""
    if not request.user.has_perm("partitions.change_gpu"):
        raise PermissionDenied("Marking a GPU healthy needs the operator or admin role.")
    raw = request.POST.get("gpu", "")
    gpu = get_object_or_404(GPU.objects.select_related("node"), pk=int(raw) if raw.isdigit() and len(raw) < 10 else 0)
    try:
        request_health_check(gpu=gpu, requested_by=request.user)
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    except OperationInProgress as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"{gpu}: health check sent to the node's agent; the mark is cleared only if the hardware "
                               "reads at the expected layout (reload the page to see the result)")
    return redirect(f"{request.path}#node-{gpu.node.name}")


def fleet(request: HttpRequest) -> HttpResponse:
    """Every node → GPU → partition with the model on it; filters by node, GPU model, compute
    mode and free capacity. A fixed number of queries whatever the fleet size. POST: the
    "mark healthy after check" button of an unhealthy GPU."""
    if request.method == "POST":
        return _mark_healthy(request)
    q = request.GET
    partitions = Partition.objects.order_by("index")
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
    node_list = list(nodes)
    all_parts = [p for node in node_list for gpu in node.gpus.all() for p in gpu.partitions.all()]
    held = workloads.attach_occupants(all_parts)
    totals: dict[str, float] = {"gpus": 0, "partitions": 0, "free_gb": 0.0, "used": 0}
    for node in node_list:
        shown = []
        for gpu in node.gpus.all():
            if q.get("gpu_model") and gpu.gpu_model != q["gpu_model"]:
                continue
            if q.get("mode") and gpu.compute_mode != q["mode"]:
                continue
            parts = list(gpu.partitions.all())
            free_gb = sum(p.memory_gb or 0.0 for p in parts if p.pk not in held)
            if free_gb < min_free:
                continue
            shown.append({"gpu": gpu, "partitions": parts, "free_gb": free_gb,
                          "operation": busy_gpu.get(gpu.pk) or busy_node.get(node.pk)})
            totals["gpus"] += 1
            totals["partitions"] += len(parts)
            totals["free_gb"] += free_gb
            totals["used"] += sum(1 for p in parts if p.pk in held)
        if shown or not (q.get("gpu_model") or q.get("mode") or min_free):
            rows.append({"node": node, "gpus": shown, "operation": busy_node.get(node.pk)})
    return render(request, "partitions/fleet.html", {
        "rows": rows, "totals": totals, "filters": q, "can_operate": _can_operate(request),
        "can_mark_healthy": request.user.has_perm("partitions.change_gpu"),
        "gpu_models": sorted({g for g in GPU.objects.values_list("gpu_model", flat=True).distinct() if g}),
        "compute_modes": [m.value for m in ComputeMode],
    })


def operation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    op = get_object_or_404(Reconfiguration.objects.with_related(), pk=pk)
    return render(request, "partitions/operation_detail.html", {"op": op, "steps": op.steps.all()})
