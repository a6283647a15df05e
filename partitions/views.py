"""Operator pages of the hardware layer: the fleet overview and an operation's detail.
Thin: parse input, call one service or query, render. What occupies each partition comes from
the workloads port (partitions/workloads.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from partitions import fleetcards, workloads
from partitions.geometry import ComputeMode
from partitions.models import AGENT_STALE_AFTER, GPU, Node, Partition, Reconfiguration
from partitions.services.health import request_health_check
from partitions.services.reconfiguration import (
    NodeRequest,
    OperationInProgress,
    request_node_reconfiguration,
    request_reconfiguration,
)


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


# Nodes per page of the fleet page; the first is the default. A CPX node's card is ~55 KB of
# HTML (64 partitions with their table), so pages stay small and the fleet is paged, not listed.
PAGE_SIZES = (10, 25, 50)
STATES = (
    ("", "any"),
    ("unhealthy", "GPU marked unhealthy"),
    ("unschedulable", "not schedulable"),
    ("agent_down", "agent down"),
    ("operation", "operation running"),
)
GPU_STATES = ("unhealthy", "unschedulable")  # filter GPUs (cards show only those); the others filter nodes


class FleetFilters(forms.Form):
    """The fleet page's search, filters and page; an invalid value is shown inline and that
    filter is not applied (a bad cursor or page size: the first page, the default size).
    Compute modes are validated against every mode the console knows; the page offers only
    those some GPU is in. ``after``/``before``: the keyset cursor (a node name), ``last``:
    the last page."""

    node = forms.CharField(required=False, max_length=63, label="Node")
    gpu_model = forms.CharField(required=False, max_length=64, label="GPU")
    mode = forms.ChoiceField(required=False, label="Mode", choices=[("", "any"), *((m.value, m.value) for m in ComputeMode)])
    free = forms.FloatField(required=False, min_value=0, max_value=100_000, label="Free ≥ (GiB)")
    state = forms.ChoiceField(required=False, label="State", choices=STATES)
    per_page = forms.TypedChoiceField(required=False, label="Per page", coerce=int, empty_value=None,
                                      choices=[(n, n) for n in PAGE_SIZES])
    after = forms.CharField(required=False, max_length=63, label="Page")
    before = forms.CharField(required=False, max_length=63, label="Page")
    last = forms.BooleanField(required=False, label="Page")

    PAGING = ("per_page", "after", "before", "last")

    def applied(self) -> dict[str, Any]:
        """The valid, non-empty filters (paging fields excluded: see ``page``)."""
        self.is_valid()
        return {name: value for name, value in getattr(self, "cleaned_data", {}).items()
                if name not in self.errors and name not in self.PAGING and value not in ("", None, 0, 0.0)}

    def page(self) -> tuple[int, str, str, bool]:
        """(per page, after, before, last) of the valid paging fields."""
        self.is_valid()
        data = {k: v for k, v in getattr(self, "cleaned_data", {}).items() if k not in self.errors}
        return (int(data.get("per_page") or PAGE_SIZES[0]), data.get("after") or "", data.get("before") or "",
                bool(data.get("last")))


def _gpu_filter(applied: dict[str, Any]) -> Q:
    """The GPU-level filters as one condition on GPU rows (free memory: an annotation, see
    ``_matching_gpus``)."""
    q = Q()
    if applied.get("gpu_model"):
        q &= Q(gpu_model=applied["gpu_model"])
    if applied.get("mode"):
        q &= Q(compute_mode=applied["mode"])
    if applied.get("state") == "unhealthy":
        q &= Q(health=GPU.Health.UNHEALTHY)
    if applied.get("state") == "unschedulable":
        q &= Q(schedulable=False) | ~Q(node__layout_problem="")
    return q


def _matching_gpus(applied: dict[str, Any]) -> QuerySet[GPU]:
    """GPUs the GPU-level filters keep, free memory (GiB no workload holds) counted in the
    database through the workloads port's subquery."""
    gpus = GPU.objects.filter(_gpu_filter(applied))
    if applied.get("free"):
        free = Coalesce(Sum("partitions__memory_gb", filter=~workloads.held_filter("partitions__pk")), Value(0.0))
        gpus = gpus.annotate(free_gb=free).filter(free_gb__gte=applied["free"])
    return gpus


def _matching_nodes(applied: dict[str, Any]) -> QuerySet[Node]:
    """The nodes the search and filters keep (a node matches a GPU-level filter when one of
    its GPUs does), unordered. Everything in SQL: cost independent of the rows skipped."""
    nodes = Node.objects.all()
    if applied.get("node"):
        nodes = nodes.filter(name__icontains=applied["node"])
    if applied.get("state") == "agent_down":
        nodes = nodes.filter(Q(agent_heartbeat_at__isnull=True) | Q(agent_heartbeat_at__lte=timezone.now() - AGENT_STALE_AFTER))
    if applied.get("state") == "operation":
        nodes = nodes.filter(Exists(Reconfiguration.objects.active().filter(node=OuterRef("pk"))))
    if any(applied.get(k) for k in ("gpu_model", "mode", "free")) or applied.get("state") in GPU_STATES:
        nodes = nodes.filter(Exists(_matching_gpus(applied).filter(node=OuterRef("pk"))))
    return nodes


@dataclass(frozen=True)
class FleetPage:
    """One page of matching nodes in name order (keyset on the unique, indexed name: the
    same cost on the first and the last page). ``is_first``/``is_last``: the page is the
    first / last one; the cursors of the neighbouring pages are the first and last names."""

    names: list[str]
    is_first: bool
    is_last: bool


def _page_of(nodes: QuerySet[Node], *, per_page: int, after: str, before: str, last: bool) -> FleetPage:
    names = nodes.values_list("name", flat=True)
    if after:
        got = list(names.filter(name__gt=after).order_by("name")[:per_page + 1])
        return FleetPage(got[:per_page], False, len(got) <= per_page)
    if before or last:
        got = list((names.filter(name__lt=before) if before else names).order_by("-name")[:per_page + 1])
        return FleetPage(sorted(got[:per_page]), len(got) <= per_page, not before)
    got = list(names.order_by("name")[:per_page + 1])
    return FleetPage(got[:per_page], True, len(got) <= per_page)


def _fleet_totals(nodes: QuerySet[Node], applied: dict[str, Any]) -> dict[str, Any]:
    """The matching fleet's aggregates, in four queries whatever its size: nodes (agents
    down, emulated), GPUs the filters keep (marked unhealthy, per compute mode), their
    partitions (held by a workload, memory, free memory)."""
    stale = timezone.now() - AGENT_STALE_AFTER
    node_totals = nodes.aggregate(
        nodes=Count("pk"), emulated=Count("pk", filter=Q(emulated=True)),
        agents_down=Count("pk", filter=Q(agent_heartbeat_at__isnull=True) | Q(agent_heartbeat_at__lte=stale)))
    gpus = _matching_gpus(applied).filter(node__in=nodes.values("pk"))
    by_mode = dict(GPU.objects.filter(pk__in=gpus.values("pk")).values_list("compute_mode").annotate(n=Count("pk"))
                   .order_by("compute_mode").values_list("compute_mode", "n"))
    held = workloads.held_filter("pk")
    parts = Partition.objects.filter(gpu__in=gpus.values("pk")).aggregate(
        partitions=Count("pk"), used=Count("pk", filter=held), memory=Coalesce(Sum("memory_gb"), Value(0.0)),
        free=Coalesce(Sum("memory_gb", filter=~held), Value(0.0)))
    unhealthy = GPU.objects.filter(pk__in=gpus.values("pk"), health=GPU.Health.UNHEALTHY).count()
    return {**node_totals, "partitions": parts["partitions"], "used": parts["used"], "memory_gb": parts["memory"],
            "free_gb": parts["free"], "gpus": sum(by_mode.values()), "unhealthy": unhealthy,
            "by_mode": [{"mode": mode or "?", "gpus": n} for mode, n in by_mode.items()]}


def _snapshots(names: list[str]) -> dict[str, Any] | None:
    """The nodes' latest telemetry; None when Redis cannot be read."""
    from partitions.telemetry_store import read_snapshots_sync

    try:
        return read_snapshots_sync(names)
    except redis.RedisError:
        return None


def _fleet_rows(nodes: list[Node], applied: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Each node's row with its shown GPU cards: partitions with occupant and memory bars, the
    GPU's health and operation; and the shown GPUs' totals. A fixed number of queries (and one
    Redis MGET)."""
    from partitions.context_processors import telemetry_stale_after_s

    active = list(Reconfiguration.objects.active().filter(node__in=[n.pk for n in nodes]).select_related("node"))
    busy_gpu = {op.gpu_id: op for op in active if op.gpu_id}
    busy_node = {op.node_id: op for op in active if op.kind == Reconfiguration.Kind.MEMORY}
    all_parts = [p for node in nodes for gpu in node.gpus.all() for p in gpu.partitions.all()]
    held = workloads.attach_occupants(all_parts)
    snapshots = _snapshots([n.name for n in nodes])
    now, stale_after = time.time(), telemetry_stale_after_s()
    filtering = any(applied.get(k) for k in ("gpu_model", "mode", "free")) or applied.get("state") in GPU_STATES
    # The GPUs shown: those the filters keep (the same query that picks the nodes).
    kept = set(_matching_gpus(applied).filter(node__in=[n.pk for n in nodes]).values_list("pk", flat=True)) if filtering else None
    totals: dict[str, float] = {"gpus": 0, "partitions": 0, "free_gb": 0.0, "used": 0, "allocated_gb": 0.0, "memory_gb": 0.0}
    rows = []
    for node in nodes:
        snapshot = (snapshots or {}).get(node.name)
        ts = snapshot.get("ts") if isinstance(snapshot, dict) else None
        age = now - ts if isinstance(ts, int | float) else None
        samples = {g.get("index"): g for g in (snapshot or {}).get("gpus") or [] if isinstance(g, dict)}
        shown = []
        for gpu in node.gpus.all():
            if kept is not None and gpu.pk not in kept:
                continue
            parts: list[Any] = list(gpu.partitions.all())  # rows carrying ``occupant`` and ``memory`` for the template
            free_gb = sum(p.memory_gb or 0.0 for p in parts if p.pk not in held)
            sample = samples.get(gpu.index)
            readings = {p.get("index"): p for p in (sample or {}).get("partitions") or [] if isinstance(p, dict)}
            fresh = age is not None and age <= stale_after
            for part in parts:
                used_mb = (readings.get(part.index) or {}).get("vram_used_mb") if fresh else None
                part.memory = fleetcards.partition_memory(
                    total_gb=part.memory_gb, allocated_gb=part.occupant.memory_gb if part.occupant else 0.0,
                    used_mb=used_mb if isinstance(used_mb, int | float) else None)
            memory = fleetcards.gpu_memory([p.memory for p in parts])
            health = fleetcards.gpu_health(marked=gpu.health, marked_reason=gpu.health_reason, agent_alive=node.agent_alive,
                                           snapshot_age_s=age, stale_after_s=stale_after, sample=sample)
            shown.append({"gpu": gpu, "partitions": parts, "free_gb": free_gb, "memory": memory, "health": health,
                          "cpx": len(parts) > 2, "operation": busy_gpu.get(gpu.pk) or busy_node.get(node.pk)})
            totals["gpus"] += 1
            totals["partitions"] += len(parts)
            totals["free_gb"] += free_gb
            totals["used"] += sum(1 for p in parts if p.pk in held)
            totals["allocated_gb"] += memory.allocated_gb
            totals["memory_gb"] += memory.total_gb
        if shown or not filtering:
            rows.append({"node": node, "gpus": shown, "operation": busy_node.get(node.pk),
                         "heartbeat": node.agent_heartbeat_at.timestamp() if node.agent_heartbeat_at else "",
                         "telemetry_unavailable": snapshots is None})
    return rows, totals


def _fleet_nodes(names: list[str]) -> list[Node]:
    """These nodes, in name order, with their GPUs and partitions (three queries)."""
    partitions = Partition.objects.order_by("index")
    gpus = GPU.objects.order_by("index").prefetch_related(Prefetch("partitions", queryset=partitions))
    return list(Node.objects.filter(name__in=names).order_by("name").prefetch_related(Prefetch("gpus", queryset=gpus)))


def _card_context(request: HttpRequest) -> dict[str, Any]:
    return {"can_operate": _can_operate(request), "can_mark_healthy": request.user.has_perm("partitions.change_gpu"),
            "can_deploy": request.user.has_perm("serving.add_deployment"), "AGENT_STALE_S": int(AGENT_STALE_AFTER.total_seconds())}


def _page_links(request: HttpRequest, page: FleetPage, per_page: int) -> dict[str, str]:
    """The pager's URLs: the search and filters kept, the cursor replaced."""
    def link(**cursor: str) -> str:
        query = request.GET.copy()
        for key in ("after", "before", "last", "per_page"):
            query.pop(key, None)
        if per_page != PAGE_SIZES[0]:
            query["per_page"] = str(per_page)
        query.update(cursor)
        return f"?{query.urlencode()}" if query else "?"
    links = {}
    if not page.is_first:
        links["first"] = link()
        if page.names:
            links["previous"] = link(before=page.names[0])
    if not page.is_last and page.names:
        links["next"], links["last"] = link(after=page.names[-1]), link(last="1")
    return links


def _fleet_context(request: HttpRequest) -> dict[str, Any]:
    """What the fleet page and its page fragment render: the matching fleet's aggregates and
    one page of node cards. A fixed number of queries whatever the fleet size."""
    form = FleetFilters(request.GET)
    applied = form.applied()
    per_page, after, before, last = form.page()
    matching = _matching_nodes(applied)
    page = _page_of(matching, per_page=per_page, after=after, before=before, last=last)
    rows, shown = _fleet_rows(_fleet_nodes(page.names), applied)
    return {"rows": rows, "shown": shown, "totals": _fleet_totals(matching, applied), "page": page,
            "links": _page_links(request, page, per_page), "per_page": per_page, "page_sizes": PAGE_SIZES,
            "filters": request.GET, "form": form, "filtered": bool(applied) or bool(form.errors), **_card_context(request)}


def fleet(request: HttpRequest) -> HttpResponse:
    """The matching fleet's aggregates and one page of its nodes → GPUs → partitions with the
    model on each; search by node name, filters by GPU model, compute mode, free capacity and
    state, paged by node name (the query string keeps all of it). A fixed number of queries
    and a bounded page whatever the fleet size. POST: the "mark healthy after check" button of
    an unhealthy GPU. The cards are the same templates the live update fetches
    (``fleet_page_cards``, ``fleet_node_card``, ``fleet_gpu_card``)."""
    if request.method == "POST":
        return _mark_healthy(request)
    modes = set(GPU.objects.exclude(compute_mode="").values_list("compute_mode", flat=True).distinct())
    return render(request, "partitions/fleet.html", {
        **_fleet_context(request),
        "gpu_models": sorted({g for g in GPU.objects.values_list("gpu_model", flat=True).distinct() if g}),
        "compute_modes": [m.value for m in ComputeMode if m.value in modes], "states": STATES[1:],
    })


def fleet_page_cards(request: HttpRequest) -> HttpResponse:
    """The fleet page's results (aggregates, pager and this page's node cards; HTML fragment,
    the page's query string in the query): what the page swaps in when paging or searching
    with JavaScript, or when many of its cards changed at once."""
    return render(request, "partitions/_fleet_page.html", _fleet_context(request))


def fleet_node_card(request: HttpRequest, name: str) -> HttpResponse:
    """One node's section of the fleet page (HTML fragment, the page's filters in the query),
    for the live update; empty when the node is gone or no longer matches."""
    applied = FleetFilters(request.GET).applied()
    if not _matching_nodes(applied).filter(name=name).exists():
        return HttpResponse("")
    rows, _ = _fleet_rows(_fleet_nodes([name]), applied)
    if not rows:
        return HttpResponse("")
    return render(request, "partitions/_node_card.html", {"row": rows[0], **_card_context(request)})


def fleet_gpu_card(request: HttpRequest, name: str, index: int) -> HttpResponse:
    """One GPU's card of the fleet page (HTML fragment), as ``fleet_node_card``."""
    applied = FleetFilters(request.GET).applied()
    rows, _ = _fleet_rows(_fleet_nodes([name]), applied)
    cell = next((c for row in rows for c in row["gpus"] if c["gpu"].index == index), None)
    if cell is None:
        return HttpResponse("")
    return render(request, "partitions/_gpu_card.html", {"row": rows[0], "cell": cell, **_card_context(request)})


def operation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    op = get_object_or_404(Reconfiguration.objects.with_related(), pk=pk)
    can_operate = _can_operate(request)
    can_retry_drain = can_operate and _refused_for_workloads(op)
    return render(request, "partitions/operation_detail.html", {
        "op": op, "steps": op.steps.all(), "can_operate": can_operate, "can_retry_drain": can_retry_drain,
        "draining": _workloads_in_the_way(op) if can_retry_drain else [], "restore": _restore_of(op) if can_operate else None,
        "layout_rows": _layout_rows(op),
    })


def _layout_rows(op: Reconfiguration) -> list[dict[str, Any]]:
    """Per GPU the operation touches: its layout before (``previous_layout``; blank until the
    run read it), the target, and now (the inventory)."""
    previous = (op.previous_layout or {}).get("gpus") or {}
    gpus = {g.index: g for g in op.node.gpus.prefetch_related("partitions")}
    indices = [op.gpu_index] if op.kind == Reconfiguration.Kind.COMPUTE and op.gpu_index is not None \
        else sorted(set(gpus) | {int(i) for i in previous if str(i).isdigit()})
    rows = []
    for index in indices:
        before = previous.get(str(index)) or {}
        gpu = gpus.get(index)
        rows.append({
            "index": index, "gpu": gpu,
            "before_compute": before.get("compute_mode") or "", "before_memory": before.get("memory_mode") or "",
            "target_compute": op.target_compute_mode or (before.get("compute_mode") or (gpu.compute_mode if gpu else "")),
            "target_memory": op.target_memory_mode or (before.get("memory_mode") or (gpu.memory_mode if gpu else "") or op.node.memory_mode),
            "keeps_compute": not op.target_compute_mode,
            "now_compute": gpu.compute_mode if gpu else "", "now_memory": (gpu.memory_mode or op.node.memory_mode) if gpu else "",
            "partitions": len(gpu.partitions.all()) if gpu else 0,
        })
    return rows


# --- recovery actions: retry with drain, restore the previous layout ---------------------------
# Both request a new operation through the request services, so validation and conflicts (an
# operation in flight on the GPU or node) are theirs; the page only says what it will ask for.

# The drain step's refusal when workloads use the affected partitions (partitions/reconfigure.py).
WORKLOADS_PRESENT = "workloads_present"


def _refused_for_workloads(op: Reconfiguration) -> bool:
    return op.state == Reconfiguration.State.FAILED and op.error_code == WORKLOADS_PRESENT and not op.drain


def _workloads_in_the_way(op: Reconfiguration) -> list[str]:
    """What a retry with drain would stop now: the workloads on the partitions op changes."""
    indices = [op.gpu_index] if op.kind == Reconfiguration.Kind.COMPUTE and op.gpu_index is not None \
        else list(op.node.gpus.values_list("index", flat=True))
    return workloads.workloads_on(node=op.node, gpu_indices=indices)


@dataclass(frozen=True)
class _Restore:
    """What restoring an operation's previous layout asks for: a GPU's compute mode (compute
    operations) or the node's memory mode, with every GPU's compute mode when they all had the
    same one (node operations). ``current``: the hardware is there already (nothing to do)."""

    memory_mode: str | None
    compute_mode: str | None
    describe: str
    current: bool


def _restore_of(op: Reconfiguration) -> _Restore | None:
    """None: the operation has not finished, or recorded no previous layout to go back to."""
    previous = (op.previous_layout or {}).get("gpus") or {}
    if not op.is_terminal or not previous:
        return None
    if op.kind == Reconfiguration.Kind.COMPUTE:
        compute = (previous.get(str(op.gpu_index)) or {}).get("compute_mode") or ""
        if op.gpu is None or not compute:
            return None
        return _Restore(None, compute, compute, op.gpu.compute_mode == compute)
    memories = {v.get("memory_mode") or "" for v in previous.values()}
    computes = {v.get("compute_mode") or "" for v in previous.values()}
    if len(memories) != 1 or "" in memories:
        return None  # GPUs were in different NPS modes: no single node mode to go back to
    memory = memories.pop()
    compute = computes.pop() if len(computes) == 1 and "" not in computes else None
    gpus = list(op.node.gpus.all())
    current = op.node.memory_mode == memory and all(g.pending_memory_mode in ("", memory) for g in gpus) and (
        compute is None or all(g.compute_mode == compute for g in gpus))
    return _Restore(memory, compute, memory + (f" with {compute} on every GPU" if compute else ""), current)


def _to_new_operations(request: HttpRequest, op: Reconfiguration, made: list[Reconfiguration], what: str) -> HttpResponse:
    if not made:
        return redirect("partitions:operation-detail", pk=op.pk)
    messages.success(request, f"{what}: operation{'s' if len(made) > 1 else ''} {', '.join(f'#{o.pk}' for o in made)} requested.")
    if len(made) == 1:
        return redirect("partitions:operation-detail", pk=made[0].pk)
    return redirect(f"{reverse('serving:operation-list')}?node={op.node.name}")


def _request(request: HttpRequest, op: Reconfiguration, *, memory_mode: str | None, compute_mode: str | None,
             drain: bool, reason: str) -> list[Reconfiguration] | None:
    """One request through the services for op's GPU (compute) or node (memory); None when
    refused (the reason is in the messages)."""
    try:
        if op.kind == Reconfiguration.Kind.COMPUTE:
            if op.gpu is None:
                raise ValidationError(f"GPU {op.gpu_index} of {op.node.name} is no longer in the inventory")
            return [request_reconfiguration(gpu=op.gpu, compute_mode=compute_mode, drain=drain, reason=reason,
                                            requested_by=request.user)]
        made: NodeRequest = request_node_reconfiguration(node=op.node, memory_mode=memory_mode or "", compute_mode=compute_mode,
                                                         drain=drain, reason=reason, requested_by=request.user)
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
        return None
    except OperationInProgress as exc:
        text = str(exc)
        messages.error(request, f"{text[:1].upper()}{text[1:]}: wait for it to finish, then try again.")
        return None
    if not made.operations:
        messages.info(request, made.message)
    return made.operations


@require_POST
@permission_required("partitions.add_reconfiguration", raise_exception=True)
def operation_retry_drain(request: HttpRequest, pk: int) -> HttpResponse:
    """The same change again, with drain: stop the workloads on the affected partitions instead
    of refusing. Only for an operation refused because workloads were there."""
    op = get_object_or_404(Reconfiguration.objects.select_related("node", "gpu"), pk=pk)
    if not _refused_for_workloads(op):
        messages.error(request, f"Operation #{op.pk} was not refused because workloads use its partitions: "
                                "there is nothing to retry with drain.")
        return redirect("partitions:operation-detail", pk=op.pk)
    made = _request(request, op, memory_mode=op.target_memory_mode or None, compute_mode=op.target_compute_mode or None,
                    drain=True, reason=f"retry of #{op.pk} with drain")
    return _to_new_operations(request, op, made or [], f"Retrying #{op.pk} with drain")


@require_POST
@permission_required("partitions.add_reconfiguration", raise_exception=True)
def operation_restore(request: HttpRequest, pk: int) -> HttpResponse:
    """Request the layout a finished operation found before it ran: the GPU's previous compute
    mode, or the node's previous memory mode. Refused when the hardware is there already."""
    op = get_object_or_404(Reconfiguration.objects.select_related("node", "gpu"), pk=pk)
    if not op.is_terminal:
        messages.error(request, f"Operation #{op.pk} has not finished: restore its previous layout once it has.")
        return redirect("partitions:operation-detail", pk=op.pk)
    restore = _restore_of(op)
    if restore is None:
        messages.error(request, f"Operation #{op.pk} recorded no previous layout to restore.")
        return redirect("partitions:operation-detail", pk=op.pk)
    target = f"{op.node.name}/gpu{op.gpu_index}" if op.kind == Reconfiguration.Kind.COMPUTE else op.node.name
    if restore.current:
        messages.error(request, f"{target} is already in {restore.describe}, its layout before operation #{op.pk}: "
                                "nothing to restore.")
        return redirect("partitions:operation-detail", pk=op.pk)
    made = _request(request, op, memory_mode=restore.memory_mode, compute_mode=restore.compute_mode, drain=False,
                    reason=f"restore the layout before #{op.pk}")
    return _to_new_operations(request, op, made or [], f"Restoring {target} to {restore.describe}")
