"""Layout editors (GPU compute mode, node memory mode) with the what-if plan, and plans (the
list, with its CSV export, and each plan). Thin: parse input, call one service, render."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import FloatField, QuerySet
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from aimconsole.csvexport import csv_response
from aimconsole.text import escape_control
from partitions import workloads
from partitions.geometry import ComputeMode, MemoryMode, get_spec
from partitions.models import GPU, Node
from partitions.services.reconfiguration import OperationInProgress, valid_compute_modes
from planning import planner
from planning.api.serializers import SPREAD_MODES
from planning.models import Plan
from planning.services import MAX_PLAN_DEMANDS, StalePlan, apply_plan, create_plan, fleet_state, is_stale, replan, request_plan


def _can_operate(request: HttpRequest) -> bool:
    return request.user.has_perm("partitions.add_reconfiguration")


def _with_occupants(gpus: list[GPU]) -> None:
    """Attach ``occupant`` (what holds it, or None) to every partition of these GPUs."""
    workloads.attach_occupants([p for gpu in gpus for p in gpu.partitions.all()])


def _listed(modes: Any) -> str:
    return ", ".join(str(m) for m in modes)


def _gpu_memory(gpu: GPU) -> tuple[str, str]:
    """(the memory mode ``gpu``'s compute modes are checked against, or "" with why there is
    none). The node's: the planner checks every change against the node-wide mode."""
    node = gpu.node
    if node.memory_mode:
        return node.memory_mode, ""
    if node.layout_problem:
        return "", f"{node.name} reports no node-wide memory mode: {node.layout_problem}; set one for the whole node first."
    if gpu.memory_mode:
        return "", (f"{node.name} reports no node-wide memory mode (GPU {gpu.index} reports {gpu.memory_mode}); "
                    "sync the node first.")
    return "", (f"GPU {gpu.index} of {node.name} reports no memory mode; its compute modes cannot be checked "
                "until a sync of the node reads one.")


def _pair_refusal(gpu: GPU, compute: str, memory: str) -> str:
    """Why ``gpu`` cannot run ``compute`` under ``memory``, with the compute modes it can run
    there ("" when it can)."""
    spec = get_spec(gpu.gpu_model)
    if compute not in ComputeMode.__members__:
        return f"{compute[:16]!r} is not a compute mode; {spec.model} modes: {_listed(spec.compute_modes)}."
    valid = valid_compute_modes(gpu, memory)
    if compute in valid:
        return ""
    if compute not in spec.compute_modes:
        what = f"{spec.model} has no {compute} mode"
    else:
        what = f"{compute} is not valid under {memory} on {spec.model}"
    if not valid:
        return f"{what}; the hardware reports no compute mode valid under {memory}."
    return f"{what}; compute modes valid under {memory}: {_listed(valid)}."


def _gpu_refusal(gpu: GPU, compute: str) -> str:
    """Why the GPU editor cannot preview ``compute`` for ``gpu`` ("" when it can), checked here
    with the page's own values before the planner, whose sentence has no room for a missing
    memory mode or an empty choice."""
    if not compute:
        return f"Choose a compute mode for GPU {gpu.index} of {gpu.node.name}."
    if compute not in ComputeMode.__members__:
        return _pair_refusal(gpu, compute, "")
    memory, problem = _gpu_memory(gpu)
    return problem or _pair_refusal(gpu, compute, memory)


def _node_refusal(node: Node, memory: str, compute: str) -> str:
    """Why the node editor cannot preview ``memory`` (+ ``compute``) for ``node`` ("" when it can
    or when its GPUs differ in model: the planner then checks GPU by GPU)."""
    if not memory:
        return f"Choose a memory and compute mode pair for {node.name}."
    models = {g.gpu_model for g in node.gpus.all() if g.gpu_model}
    if len(models) != 1:
        return ""
    spec = get_spec(models.pop())
    if memory not in MemoryMode.__members__:
        return f"{memory[:16]!r} is not a memory mode; {spec.model} memory modes: {_listed(spec.memory_modes)}."
    if MemoryMode(memory) not in spec.memory_modes:
        return f"{spec.model} has no {memory} memory mode; its memory modes: {_listed(spec.memory_modes)}."
    if compute:
        for gpu in node.gpus.all():
            problem = _pair_refusal(gpu, compute, memory)
            if problem:
                return problem
    return ""


def _gpu_choices(gpu: GPU) -> list[dict[str, Any]]:
    """Every compute mode, enabled only where valid under the node's memory mode."""
    spec = get_spec(gpu.gpu_model)
    memory, memory_problem = _gpu_memory(gpu)
    valid = set(valid_compute_modes(gpu, memory)) if memory else set()
    choices = []
    for mode in ComputeMode:
        if mode not in spec.compute_modes:
            reason = f"{spec.model} has no {mode} mode"
        elif memory_problem:
            reason = memory_problem
        elif mode.value not in valid:
            valid_here = ", ".join(sorted(valid, key=spec.compute_modes.index)) or "none reported by the hardware"
            reason = f"not valid under {memory} (valid: {valid_here})"
        else:
            reason = ""
        count = spec.partition_count(mode) if mode in spec.compute_modes else 0
        choices.append({"mode": mode.value, "enabled": not reason, "reason": reason, "current": mode.value == gpu.compute_mode,
                        "count": count, "memory_gb": spec.smallest_partition_gb(mode) if count else None})
    return choices


def _node_choices(node: Node) -> list[dict[str, Any]]:
    """(memory, compute) pairs for the node's GPU model, invalid ones disabled with the reason;
    the node's current pair (its memory mode, the compute mode all its GPUs share) is ``current``."""
    gpus = list(node.gpus.all())
    models = {g.gpu_model for g in gpus if g.gpu_model}
    if len(models) != 1:
        return []
    spec = get_spec(models.pop())
    valid = {(str(c), str(m)) for c, m in spec.allowed_pairs()}
    computes = {g.compute_mode for g in gpus}
    current = (node.memory_mode, computes.pop()) if len(computes) == 1 else None
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
                            "enabled": not reason, "reason": reason, "current": (memory.value, compute.value) == current})
    return choices


def _refused(request: HttpRequest, template: str, context: dict[str, Any], error: str) -> HttpResponse:
    """The editor's refusal: 400, as the fragment for htmx (the editors' script swaps it in:
    htmx drops 4xx answers by default) or the whole page."""
    context["error"] = error
    return render(request, "planning/_plan.html" if request.headers.get("HX-Request") else template, context, status=400)


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
        mode = request.POST.get("compute_mode", "").strip().upper()
        refusal = _gpu_refusal(gpu, mode)
        if refusal:
            return _refused(request, "planning/gpu_editor.html", context, refusal)
        try:
            plan = create_plan(gpu_targets=[planner.GpuTarget(gpu.node.name, gpu.index, mode)], requested_by=request.user)
        except (planner.PlanError, ValidationError) as exc:
            return _refused(request, "planning/gpu_editor.html", context, "; ".join(getattr(exc, "messages", [str(exc)])))
        return _render_plan(request, plan, "planning/gpu_editor.html", context)
    return render(request, "planning/gpu_editor.html", context)


@_post_needs("planning.add_plan")  # POST /api/v1/plans/
def node_editor(request: HttpRequest, name: str) -> HttpResponse:
    node = get_object_or_404(Node.objects.prefetch_related("gpus__partitions"), name=name)
    _with_occupants(list(node.gpus.all()))
    context: dict[str, Any] = {"node": node, "choices": _node_choices(node), "can_operate": _can_operate(request)}
    if request.method == "POST":
        memory, _, compute = (part.strip() for part in request.POST.get("pair", "").upper().partition(":"))
        refusal = _node_refusal(node, memory, compute)
        if refusal:
            return _refused(request, "planning/node_editor.html", context, refusal)
        try:
            plan = create_plan(node_targets=[planner.NodeTarget(node.name, memory, compute or None)],
                               requested_by=request.user)
        except (planner.PlanError, ValidationError) as exc:
            return _refused(request, "planning/node_editor.html", context, "; ".join(getattr(exc, "messages", [str(exc)])))
        return _render_plan(request, plan, "planning/node_editor.html", context)
    return render(request, "planning/node_editor.html", context)


PLANS_PER_PAGE = 50


class PlanFilterForm(forms.Form):
    """The plans list's filters and sort, from the query string; every value checked."""

    state = forms.ChoiceField(choices=[("", "any state"), *Plan.State.choices], required=False)
    feasible = forms.ChoiceField(choices=[("", "feasible or not"), ("yes", "feasible"), ("no", "not feasible")], required=False)
    by = forms.CharField(max_length=150, required=False, label="Requested by")
    sort = forms.ChoiceField(choices=[("-created", "newest first"), ("created", "oldest first")], required=False)

    def clean_by(self) -> str:
        by: str = self.cleaned_data["by"]
        if escape_control(by) != by:
            raise ValidationError("control characters are not allowed")
        return by

    def plans(self) -> QuerySet[Plan]:
        """The matching plans, in the chosen order; only the summary of each plan's result is
        read (``feasible``, ``eta_s``), not the whole JSON."""
        data = self.cleaned_data
        plans = (Plan.objects.select_related("created_by").defer("request", "result")
                 .annotate(feasible=KeyTransform("ok", "result"), eta_s=Cast(KeyTransform("eta_s", "result"), FloatField())))
        if data["state"]:
            plans = plans.filter(state=data["state"])
        if data["feasible"]:
            plans = plans.filter(result__ok=data["feasible"] == "yes")
        if data["by"]:
            plans = plans.filter(created_by__username=data["by"])
        return plans.order_by(*(("created_at", "id") if data["sort"] == "created" else ("-created_at", "-id")))


def _plans_csv(request: HttpRequest, plans: QuerySet[Plan]) -> StreamingHttpResponse:
    def rows() -> Iterator[list[Any]]:
        yield ["id", "created_at", "requested_by", "state", "feasible", "eta_s", "applied_at", "url"]
        for plan in plans.iterator(chunk_size=500):
            yield [
                plan.pk, plan.created_at.isoformat(), plan.created_by.get_username() if plan.created_by else "", plan.state,
                {True: "yes", False: "no"}.get(plan.feasible, ""),  # type: ignore[attr-defined]
                "" if plan.eta_s is None else plan.eta_s,  # type: ignore[attr-defined]
                plan.applied_at.isoformat() if plan.applied_at else "",
                request.build_absolute_uri(reverse("planning:plan-detail", args=[plan.pk]))]

    return csv_response(rows(), "plans.csv")


def plan_list(request: HttpRequest) -> HttpResponseBase:
    """Plans, newest first, 50 a page, filtered by state, feasibility and who asked; ``?format=csv``
    exports every matching plan (same filters) instead."""
    form = PlanFilterForm(request.GET)
    if not form.is_valid():
        return render(request, "planning/plan_list.html", {"form": form, "page": None}, status=400)
    if request.GET.get("format") == "csv":
        return _plans_csv(request, form.plans())
    page = Paginator(form.plans(), PLANS_PER_PAGE).get_page(request.GET.get("page"))
    drafts = [p.pk for p in page if p.state == Plan.State.DRAFT]
    if drafts:
        fleet = fleet_state()  # one read for the page's drafts; each compares its own scope
        stale = {p.pk for p in Plan.objects.filter(pk__in=drafts).only("pk", "state", "fingerprint", "result")
                 if is_stale(p, fleet)}
        for p in page:
            p.is_stale = p.pk in stale  # type: ignore[attr-defined]
    return render(request, "planning/plan_list.html", {"form": form, "page": page})


def plan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(Plan, pk=pk)
    return render(request, "planning/plan_detail.html", {"plan": plan, "result": plan.result, "can_operate": _can_operate(request),
                                                         "stale": is_stale(plan)})


@require_POST
@permission_required("planning.add_plan", raise_exception=True)  # POST /api/v1/plans/{id}/replan/
def plan_replan(request: HttpRequest, pk: int) -> HttpResponse:
    """One-click re-plan: the same inputs on the fleet as it is now; opens the new plan."""
    plan = get_object_or_404(Plan, pk=pk)
    try:
        new = replan(plan=plan, requested_by=request.user)
    except planner.PlanError as exc:
        messages.error(request, str(exc))
        return redirect("planning:plan-detail", pk=plan.pk)
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
        return redirect("planning:plan-detail", pk=plan.pk)
    messages.success(request, f"Plan #{new.pk}: plan #{plan.pk}'s inputs on the fleet as it is now.")
    return redirect("planning:plan-detail", pk=new.pk)


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


# --- composing a what-if plan ------------------------------------------------------------------

# Rows of each kind the compose page takes (more are refused with a message, not computed).
MAX_COMPOSE_ROWS = {"gpu": 64, "node": 64, "demand": MAX_PLAN_DEMANDS}
ROW_FIELDS = {
    "gpu": ("gpu", "compute_mode"),
    "node": ("node", "memory_mode", "compute_mode"),
    "demand": ("name", "profile", "replicas", "priority", "spread", "pin_node"),
}
# The fields that make a row count (a demand row with only its default replicas is empty).
ROW_KEYS = {"gpu": ("gpu",), "node": ("node",), "demand": ("name", "profile")}
BODY_KEY = {"gpu": "gpus", "node": "nodes", "demand": "demands"}
MAX_DATALIST_GPUS = 2000


def _row_count(request: HttpRequest, kind: str) -> int:
    raw = request.POST.get(f"{kind}_rows", "")
    count = int(raw) if raw.isdigit() and len(raw) < 5 else (1 if kind == "demand" else 0)
    return max(0, min(count, MAX_COMPOSE_ROWS[kind]))


def _compose_rows(request: HttpRequest) -> dict[str, list[dict[str, Any]]]:
    """The rows as posted (values cut to 200 characters), an empty one added or one removed
    when those buttons were pressed."""
    rows: dict[str, list[dict[str, Any]]] = {}
    remove = request.POST.get("remove", "")
    for kind, fields in ROW_FIELDS.items():
        kept = []
        for i in range(_row_count(request, kind)):
            if remove == f"{kind}-{i}":
                continue
            kept.append({"values": {f: request.POST.get(f"{kind}-{i}-{f}", "").strip()[:200] for f in fields}, "errors": {}})
        if request.POST.get("add") == kind and len(kept) < MAX_COMPOSE_ROWS[kind]:
            kept.append({"values": dict.fromkeys(fields, ""), "errors": {}})
        rows[kind] = kept
    return rows


def _row_body(kind: str, values: dict[str, str]) -> dict[str, Any]:
    """One row in the API's request body (PlanCreateSerializer); empty optional fields absent."""
    if kind == "gpu":
        node, _, index = values["gpu"].rpartition("/")
        body: dict[str, Any] = {"node": node or values["gpu"], "compute_mode": values["compute_mode"]}
        if index:
            body["gpu_index"] = index
        return body
    body = {k: v for k, v in values.items() if v != ""}
    if kind == "demand":
        body.setdefault("replicas", "1")
    return body


def _attach_errors(rows: dict[str, list[dict[str, Any]]], used: dict[str, list[int]], errors: Any) -> list[str]:
    """Put the serializer's errors next to the rows they are about; returns the others."""
    general: list[str] = []
    for kind, key in BODY_KEY.items():
        found = errors.get(key) if isinstance(errors, dict) else None
        if found is None:
            continue
        items = found.items() if isinstance(found, dict) else enumerate(found)
        for index, item in items:
            if isinstance(item, dict) and str(index).isdigit() and int(index) < len(used[kind]):
                row = rows[kind][used[kind][int(index)]]
                for field, messages_ in item.items():
                    row["errors"][field] = " ".join(str(m) for m in messages_)
            else:
                general.append(f"{key}: {' '.join(str(m) for m in (item if isinstance(item, list) else [item]))}")
    for field, messages_ in (errors.items() if isinstance(errors, dict) else []):
        if field not in BODY_KEY.values():
            general.append(" ".join(str(m) for m in messages_))
    return general


def _attach_plan_error(rows: dict[str, list[dict[str, Any]]], message: str) -> bool:
    """A planner refusal names its node (and GPU) first: show it on that row; False if none matches."""
    for kind, field in (("gpu", "gpu"), ("node", "node")):
        for row in rows[kind]:
            name = row["values"][field]
            if name and (message.startswith(f"{name.replace('/', '/gpu')} ") or message.startswith(f"{name}/")
                         or message.startswith(f"{name} ") or f"{name!r}" in message):
                row["errors"]["compute_mode" if kind == "gpu" else "memory_mode"] = message
                return True
    return False


def _compose_choices() -> dict[str, Any]:
    """What the compose page's pickers offer: nodes, GPUs (as node/index), modes and the
    catalog's default profiles of the GPU models in the fleet, grouped by model."""
    from models.models import ModelProfile
    from models.services import default_profiles

    gpus = list(GPU.objects.select_related("node").order_by("node__name", "index")[:MAX_DATALIST_GPUS])
    models_in_fleet = set(GPU.objects.exclude(gpu_model="").values_list("gpu_model", flat=True).distinct())
    profiles = (ModelProfile.objects.with_related().filter(default_profiles(), gpu_model__in=models_in_fleet)
                .order_by("model__hf_id", "precision__sort_order", "gpu_model"))
    groups: dict[str, list[Any]] = {}
    for profile in profiles:
        groups.setdefault(profile.model.hf_id, []).append(profile)
    return {
        "nodes": list(Node.objects.order_by("name").values_list("name", flat=True)),
        "gpus": gpus, "gpus_cut": len(gpus) == MAX_DATALIST_GPUS,
        "compute_modes": [m.value for m in ComputeMode], "memory_modes": [m.value for m in MemoryMode],
        "profile_groups": sorted(groups.items()), "spread_modes": SPREAD_MODES,
    }


@_post_needs("planning.add_plan")  # POST /api/v1/plans/
def plan_compose(request: HttpRequest) -> HttpResponse:
    """Compose a what-if plan over several GPUs, nodes and new demands (the API's request body
    as rows). "Preview" validates the rows with the API's serializer and makes the plan through
    the same service (a draft, kept, applicable from here or its page); errors go next to the row
    that caused them. Without JS, "Add a … row" buttons post the form back with one more row."""
    from planning.api.serializers import PlanCreateSerializer, plan_inputs

    context: dict[str, Any] = {"can_operate": _can_operate(request), "max_rows": MAX_COMPOSE_ROWS, **_compose_choices()}
    if request.method != "POST":
        context["rows"] = {"gpu": [], "node": [], "demand": [{"values": dict.fromkeys(ROW_FIELDS["demand"], ""), "errors": {}}]}
        return render(request, "planning/compose.html", context)
    rows = _compose_rows(request)
    context["rows"] = rows
    if request.POST.get("add") or request.POST.get("remove"):
        return render(request, "planning/compose.html", context)
    used: dict[str, list[int]] = {kind: [] for kind in ROW_FIELDS}
    body: dict[str, list[dict[str, Any]]] = {key: [] for key in BODY_KEY.values()}
    for kind, kind_rows in rows.items():
        for i, row in enumerate(kind_rows):
            if any(row["values"][k] for k in ROW_KEYS[kind]):
                used[kind].append(i)
                body[BODY_KEY[kind]].append(_row_body(kind, row["values"]))
    payload = PlanCreateSerializer(data=body)
    errors: list[str] = []
    if not payload.is_valid():
        errors = _attach_errors(rows, used, payload.errors)
    else:
        try:
            plan = request_plan(**plan_inputs(payload.validated_data), requested_by=request.user)
        except planner.PlanError as exc:
            if not _attach_plan_error(rows, str(exc)):
                errors = [str(exc)]
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for field, messages_ in exc.message_dict.items():
                    targets = [rows["demand"][i] for i in used["demand"]] if field in ROW_FIELDS["demand"] else []
                    for row in targets[:1] if field != "name" else targets:
                        row["errors"][field] = " ".join(messages_)
                    if not targets:
                        errors.append(f"{field}: {' '.join(messages_)}")
            else:
                errors = list(exc.messages)
        else:
            if plan.state == Plan.State.PLANNING:  # a large fleet: a worker fills it in
                return redirect("planning:plan-detail", pk=plan.pk)
            context.update(plan=plan, result=plan.result)
            return render(request, "planning/compose.html", context)
    context["errors"] = errors or ["Some rows cannot be planned; see the messages next to them."]
    return render(request, "planning/compose.html", context, status=400)
