"""Deployment pages and the operations list (reconfigurations and deployments together).
Thin: parse input, call one service or query, render."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import CharField, Prefetch, Q, QuerySet, Value
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from rest_framework import serializers as drf_serializers

from aimconsole.csvexport import csv_response
from aimconsole.text import escape_control
from models.models import MAX_CONCURRENT_SEQUENCES, ModelProfile
from models.services import default_profiles
from partitions.models import Node, Reconfiguration
from planning import placement
from planning.placement.reasons import count_reasons
from planning.services import MAX_REPLICAS_PER_DEMAND, DemandSpec, fleet_state
from serving.models import Deployment, DeploymentSlot, ReplicaMove
from serving.services import PlacementConflict, create_deployment, stop_deployment

# --- operations ---------------------------------------------------------------------------------

OPERATIONS_PER_PAGE = 50
DEPLOYMENTS_PER_PAGE = 50
_CSV_CHUNK = 500

_CREATED_SORTS = [("-created", "newest first"), ("created", "oldest first")]
_RECONFIGURATION, _DEPLOYMENT = "reconfiguration", "deployment"


def _no_controls(value: str) -> str:
    if escape_control(value) != value:
        raise ValidationError("control characters are not allowed")
    return value


def _sort_headers(current: str, columns: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """For each sortable column, the ``sort`` its header link asks for (the other way round
    when the list is sorted by it already) and its ``aria-sort`` and arrow ("" when not)."""
    headers = {}
    for column in columns:
        if current == column:
            headers[column] = {"next": f"-{column}", "aria": "ascending", "arrow": " ↑"}
        elif current == f"-{column}":
            headers[column] = {"next": column, "aria": "descending", "arrow": " ↓"}
        else:
            headers[column] = {"next": f"-{column}" if column == "created" else column, "aria": "", "arrow": ""}
    return headers


class OperationFilterForm(forms.Form):
    """The operations list's filters and sort, from the query string; every value checked.

    ``plan`` comes from links on a plan's page: a value that cannot be a plan id matches nothing
    (and is shown as the plan chip), as a plan that is gone does."""

    kind = forms.ChoiceField(choices=[("", "all"), (_RECONFIGURATION, "reconfigurations"), (_DEPLOYMENT, "deployments")],
                             required=False)
    state = forms.ChoiceField(choices=[("", "any"), *((s, s) for s in sorted(set(Reconfiguration.State.values)
                                                                             | set(Deployment.State.values)))],
                              required=False)
    node = forms.ChoiceField(choices=[("", "any")], required=False)
    plan = forms.CharField(required=False, strip=False)
    sort = forms.ChoiceField(choices=_CREATED_SORTS, required=False)

    def __init__(self, data: Any, *, nodes: list[str]) -> None:
        super().__init__(data)
        self.fields["node"].choices = [("", "any"), *((n, n) for n in nodes)]  # type: ignore[attr-defined]

    def clean_plan(self) -> str:
        return _no_controls(self.cleaned_data["plan"])

    def _plan_id(self) -> int | None:
        """The plan id asked for, if the value can be one the database holds (a bigger one
        matches nothing rather than overflowing)."""
        raw: str = self.cleaned_data["plan"]
        return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None

    def reconfigurations(self) -> QuerySet[Reconfiguration]:
        data, ops = self.cleaned_data, Reconfiguration.objects.all()
        if data["state"]:
            ops = ops.filter(state=data["state"])
        if data["node"]:
            ops = ops.filter(node__name=data["node"])
        if data["plan"]:
            plan_id = self._plan_id()
            ops = ops.filter(plan_id=plan_id) if plan_id is not None else ops.none()
        return ops

    def deployments(self) -> QuerySet[Deployment]:
        # Subqueries rather than joins: a deployment with several slots on the node (or several
        # moves of the plan) is listed once, with no DISTINCT inside the UNION.
        data, deployments = self.cleaned_data, Deployment.objects.all()
        if data["state"]:
            deployments = deployments.filter(state=data["state"])
        if data["node"]:
            on_node = DeploymentSlot.objects.filter(partition__gpu__node__name=data["node"]).values("deployment_id")
            deployments = deployments.filter(Q(pk__in=on_node) | Q(pin_node__name=data["node"]))
        if data["plan"]:
            plan_id = self._plan_id()
            if plan_id is None:
                deployments = deployments.none()
            else:
                moved = ReplicaMove.objects.filter(plan_id=plan_id).values("deployment_id")
                deployments = deployments.filter(Q(plan_id=plan_id) | Q(pk__in=moved))
        return deployments

    def timeline(self) -> QuerySet[Any]:
        """``(id, created_at, kind)`` of every matching operation of the kinds asked for, both
        kinds in one ordered query, so that a page (or the count) is one query whatever the kinds."""
        parts: list[QuerySet[Any, tuple[int, Any, str]]] = []
        kind = self.cleaned_data["kind"]
        if kind in ("", _RECONFIGURATION):
            parts.append(self.reconfigurations().order_by()
                         .annotate(op_kind=Value(_RECONFIGURATION, output_field=CharField()))
                         .values_list("id", "created_at", "op_kind"))
        if kind in ("", _DEPLOYMENT):
            parts.append(self.deployments().order_by()
                         .annotate(op_kind=Value(_DEPLOYMENT, output_field=CharField()))
                         .values_list("id", "created_at", "op_kind"))
        rows = parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]
        if self.cleaned_data["sort"] == "created":
            return rows.order_by("created_at", "op_kind", "id")
        return rows.order_by("-created_at", "-op_kind", "-id")


def _operations(rows: Iterable[tuple[int, Any, str]]) -> tuple[list[Reconfiguration], list[Deployment]]:
    """The rows of ``OperationFilterForm.timeline`` as objects, in its order: two queries at most."""
    ids: dict[str, list[int]] = {_RECONFIGURATION: [], _DEPLOYMENT: []}
    for pk, _, kind in rows:
        ids[kind].append(pk)
    ops = Reconfiguration.objects.select_related("node", "requested_by").in_bulk(ids[_RECONFIGURATION]) if ids[_RECONFIGURATION] else {}
    deployments = (Deployment.objects.select_related("profile__model", "requested_by").in_bulk(ids[_DEPLOYMENT])
                   if ids[_DEPLOYMENT] else {})
    return ([ops[pk] for pk in ids[_RECONFIGURATION] if pk in ops],
            [deployments[pk] for pk in ids[_DEPLOYMENT] if pk in deployments])


def _operations_csv(request: HttpRequest, timeline: QuerySet[Any]) -> StreamingHttpResponse:
    def rows() -> Iterator[list[Any]]:
        yield ["kind", "id", "created_at", "target", "state", "requested_by", "message", "url"]
        chunk: list[tuple[int, Any, str]] = []
        for row in chain(timeline.iterator(chunk_size=_CSV_CHUNK), [None]):
            if row is not None:
                chunk.append(row)
                if len(chunk) < _CSV_CHUNK:
                    continue
            ops, deployments = _operations(chunk)
            by_key: dict[tuple[str, int], Reconfiguration | Deployment] = {
                **{(_RECONFIGURATION, op.pk): op for op in ops}, **{(_DEPLOYMENT, d.pk): d for d in deployments}}
            for pk, _, kind in chunk:
                obj = by_key.get((kind, pk))
                if isinstance(obj, Reconfiguration):
                    yield [kind, obj.pk, obj.created_at.isoformat(), obj.describe_target(), obj.state,
                           obj.requested_by.get_username() if obj.requested_by else "", obj.error_message,
                           request.build_absolute_uri(reverse("partitions:operation-detail", args=[obj.pk]))]
                elif isinstance(obj, Deployment):
                    yield [kind, obj.pk, obj.created_at.isoformat(), f"{obj.name} ({obj.profile.model.hf_id})", obj.state,
                           obj.requested_by.get_username() if obj.requested_by else "", obj.state_message,
                           request.build_absolute_uri(reverse("serving:deployment-detail", args=[obj.pk]))]
            chunk = []

    return csv_response(rows(), "operations.csv")


def operation_list(request: HttpRequest) -> HttpResponseBase:
    """Reconfigurations and deployments, newest first, 50 a page across both kinds, filtered by
    kind, state, node and plan; ``?format=csv`` exports every matching operation instead."""
    nodes = list(Node.objects.order_by("name").values_list("name", flat=True))
    form = OperationFilterForm(request.GET, nodes=nodes)
    if not form.is_valid():
        return render(request, "serving/operation_list.html", {"form": form, "page": None}, status=400)
    if request.GET.get("format") == "csv":
        return _operations_csv(request, form.timeline())
    page = Paginator(form.timeline(), OPERATIONS_PER_PAGE).get_page(request.GET.get("page"))
    operations, deployments = _operations(page.object_list)
    return render(request, "serving/operation_list.html", {
        "form": form, "page": page, "operations": operations, "deployments": deployments,
        "sort_headers": _sort_headers(form.cleaned_data["sort"] or "-created", ("created",)),
    })


# --- deployments ---------------------------------------------------------------------------------

class DeploymentFilterForm(forms.Form):
    """The deployments list's filter and sort, from the query string; every value checked."""

    state = forms.ChoiceField(choices=[("", "any"), *((s, s) for s in Deployment.State.values)], required=False)
    sort = forms.ChoiceField(choices=[*_CREATED_SORTS, ("name", "name A-Z"), ("-name", "name Z-A"),
                                      ("state", "state A-Z"), ("-state", "state Z-A")], required=False)

    # Newest first among equals: names repeat across stopped deployments.
    _ORDER = {"-created": ("-created_at", "-id"), "created": ("created_at", "id"),
              "name": ("name", "-created_at", "-id"), "-name": ("-name", "-created_at", "-id"),
              "state": ("state", "-created_at", "-id"), "-state": ("-state", "-created_at", "-id")}

    def deployments(self, queryset: QuerySet[Deployment]) -> QuerySet[Deployment]:
        data = self.cleaned_data
        if data["state"]:
            queryset = queryset.filter(state=data["state"])
        return queryset.order_by(*self._ORDER[data["sort"] or "-created"])


def _deployments_csv(request: HttpRequest, deployments: QuerySet[Deployment]) -> StreamingHttpResponse:
    def rows() -> Iterator[list[Any]]:
        yield ["id", "name", "model", "precision", "replicas", "priority", "state", "state_message", "partitions",
               "emulated", "requested_by", "created_at", "url"]
        for d in deployments.iterator(chunk_size=_CSV_CHUNK):
            slots = list(d.slots.all())
            yield [d.pk, d.name, d.profile.model.hf_id, d.profile.precision.code, d.replicas, d.priority, d.state,
                   d.state_message,
                   " ".join(f"{s.partition.gpu.node.name}/gpu{s.partition.gpu.index}/p{s.partition.index}" for s in slots),
                   "yes" if any(s.partition.gpu.node.emulated for s in slots) else "no",
                   d.requested_by.get_username() if d.requested_by else "", d.created_at.isoformat(),
                   request.build_absolute_uri(reverse("serving:deployment-detail", args=[d.pk]))]

    return csv_response(rows(), "deployments.csv")


def deployment_list(request: HttpRequest) -> HttpResponseBase:
    """Deployments, newest first (or by name or state), 50 a page, filtered by state;
    ``?format=csv`` exports every matching deployment instead."""
    form = DeploymentFilterForm(request.GET)
    context: dict[str, Any] = {"form": form, "can_operate": request.user.has_perm("serving.add_deployment")}
    if not form.is_valid():
        return render(request, "serving/deployment_list.html", {**context, "page": None}, status=400)
    if request.GET.get("format") == "csv":
        return _deployments_csv(request, form.deployments(Deployment.objects.select_related(
            "profile__model", "profile__precision", "requested_by").prefetch_related(
            Prefetch("slots", queryset=DeploymentSlot.objects.select_related("partition__gpu__node")
                     .order_by("replica", "partition__logical_index")))))
    page = Paginator(form.deployments(Deployment.objects.with_related()), DEPLOYMENTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "serving/deployment_list.html", {
        **context, "page": page, "sort_headers": _sort_headers(form.cleaned_data["sort"] or "-created", ("name", "state", "created")),
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
    for w in workloads:
        if "container" in w:  # shown as JSON (copyable), not a Python repr
            w["container_json"] = json.dumps(w["container"], indent=2, ensure_ascii=False)
    return render(request, "serving/deployment_detail.html", {
        "deployment": deployment, "workloads": workloads, "can_operate": request.user.has_perm("serving.delete_deployment"),
        "can_redeploy": request.user.has_perm("serving.add_deployment") and not deployment.is_active,
        "stop": _stop_summary(deployment) if deployment.is_active else None,
        "traffic": model_traffic(deployment.profile.model.hf_id), **(extra or {}),
    }, status=status)


def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _render_detail(request, get_object_or_404(Deployment.objects.with_related(), pk=pk))


def _profile_groups(extra: ModelProfile | None = None) -> list[dict[str, Any]]:
    """Default profiles of the GPU models in the fleet (and ``extra``, a profile a catalog link
    asked for, when its GPU model is in the fleet), grouped by model, each with where it fits
    right now: ``[{"model": hf_id, "options": [{profile, need, fitting_free}]}]``."""
    fleet = fleet_state()
    used = {(o.node, o.gpu_index, o.partition_index) for o in fleet.occupants}
    free = [s for s in placement.partitions_of(fleet) if (s.node, s.gpu_index, s.partition_index) not in used]
    models_in_fleet = {g.gpu_model for n in fleet.nodes for g in n.gpus if g.gpu_model}
    model_of = {(n.name, g.index): g.gpu_model for n in fleet.nodes for g in n.gpus}
    free_by_model: dict[str, list[float]] = defaultdict(list)
    for slot in free:
        free_by_model[model_of[(slot.node, slot.gpu_index)]].append(slot.memory_gb)
    wanted = default_profiles() | (Q(pk=extra.pk) if extra is not None else Q(pk__in=[]))
    profiles = ModelProfile.objects.with_related().filter(wanted, gpu_model__in=models_in_fleet)
    groups: dict[str, list[dict[str, Any]]] = {}
    for profile in profiles.order_by("model__hf_id", "precision__sort_order", "gpu_model", "context_tokens",
                                     "concurrent_sequences"):
        need = profile.replica_memory_gb
        fitting = sum(1 for gb in free_by_model[profile.gpu_model] if gb >= need)
        groups.setdefault(profile.model.hf_id, []).append({"profile": profile, "need": need, "fitting_free": fitting})
    return [{"model": model, "options": options} for model, options in groups.items()]


# The form's fields, named as in the API's request body (DeploymentCreateSerializer).
FORM_FIELDS = ("name", "profile", "replicas", "priority", "pin_node", "pin_gpu_index", "context_tokens",
               "concurrent_sequences")
# What a link may prefill (catalog rows: profile; GPU cards: pin_node), checked, never trusted.
PREFILL_FIELDS = ("profile", "pin_node", "replicas", "name")


def _form_errors(errors: Any) -> str:
    return "; ".join(f"{field}: {' '.join(str(m) for m in messages_)}" for field, messages_ in errors.items())


def _field_errors(errors: Any) -> dict[str, str]:
    """field -> its messages in one line, for the error shown next to each input."""
    return {str(field): " ".join(str(m) for m in messages_) for field, messages_ in errors.items()}


def _pk(raw: str) -> int | None:
    """``raw`` as a row id the database can hold, or None."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


def _shown(value: str) -> str:
    value = escape_control(value)
    return value if len(value) <= 40 else value[:39] + "…"


def _prefill(query: Any) -> tuple[dict[str, str], list[str], ModelProfile | None]:
    """The form's initial values from a link's query string (``profile``, ``pin_node``,
    ``replicas``, ``name``): each value the form could take is kept, any other is dropped with
    a note saying so. Only prefill: the serializer validates what is submitted."""
    from serving.api.serializers import DeploymentCreateSerializer

    fields = DeploymentCreateSerializer().fields
    values: dict[str, str] = {}
    notes: list[str] = []
    profile = None
    for name in PREFILL_FIELDS:
        raw = query.get(name, "")
        if raw == "":
            continue
        try:
            if name == "profile" and _pk(raw) is None:
                raise ValidationError("not an id")
            value = fields[name].run_validation(raw)
        except (drf_serializers.ValidationError, ValidationError):
            notes.append(f"Ignored {name}={_shown(raw)!r} from the link: not a valid {name.replace('_', ' ')}.")
            continue
        if name == "profile":
            profile = value
            values[name] = str(value.pk)
        elif name == "pin_node":
            values[name] = value.name
        else:
            values[name] = str(value)
    return values, notes, profile


@permission_required("serving.add_deployment", raise_exception=True)
def deployment_create(request: HttpRequest) -> HttpResponse:
    """The deployment form. POST validates with the API's serializer (one validation for pages
    and API) before anything is written, then calls the same service as the API. Errors are
    per field (next to the input, and summed up above the form); a demand that does not fit
    lists each distinct reason once with the number of replicas it concerns.

    GET takes ``profile``, ``pin_node``, ``replicas`` and ``name`` from the query string as
    initial values (the catalog's "Deploy" and the GPU cards link here); a value that is not
    one the form offers is ignored, with a note."""
    from serving.api.serializers import DeploymentCreateSerializer

    notes: list[str] = []
    extra: ModelProfile | None = None
    if request.method == "POST":
        form_values: Any = request.POST
        pk = _pk(request.POST.get("profile", ""))
        extra = ModelProfile.objects.filter(pk=pk).first() if pk is not None else None
    else:
        form_values, notes, extra = _prefill(request.GET)
    groups = _profile_groups(extra)
    offered = {str(o["profile"].pk) for g in groups for o in g["options"]}
    if request.method != "POST" and form_values.get("profile") and form_values["profile"] not in offered:
        notes.append(f"Ignored profile={form_values['profile']} from the link: {escape_control(str(extra))} is not offered here "
                     f"(no {extra.gpu_model if extra else 'such'} GPU in the fleet).")
        form_values.pop("profile")
    context: dict[str, Any] = {"groups": groups, "nodes": Node.objects.order_by("name"), "form": form_values,
                               "max_replicas": MAX_REPLICAS_PER_DEMAND, "max_sequences": MAX_CONCURRENT_SEQUENCES,
                               "field_errors": {}, "prefill_notes": notes}
    if request.method == "POST":
        # Only the serializer's fields (not the CSRF token); empty optional fields are absent.
        data: dict[str, Any] = {k: request.POST[k] for k in FORM_FIELDS if request.POST.get(k, "") != ""}
        data["spread"] = bool(request.POST.get("spread"))
        payload = DeploymentCreateSerializer(data=data)
        try:
            if not payload.is_valid():
                raise ValidationError(payload.errors)
            spec = payload.spec()
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
