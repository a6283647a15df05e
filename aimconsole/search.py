"""Global search (the header's search box): nodes, GPUs, deployments, catalog models and
operations whose name or id contains the words typed, each linking to its page."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import CharField, Q, QuerySet, Value
from django.db.models.functions import Cast, Concat
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from aimconsole.text import escape_control

MAX_Q = 100
PER_KIND = 20
# Refused in q, beyond what escape_control makes visible: tab and newline (nothing searched for
# holds them, and a pasted one would only hide what is being searched).
_CONTROL = re.compile(r"[\t\n]")


@dataclass(frozen=True)
class Hit:
    url: str
    label: str
    detail: str = ""


@dataclass(frozen=True)
class Group:
    """One kind's results on the page: its first hits and how many more matched."""

    key: str
    title: str
    hits: list[Hit]
    more: int


@dataclass(frozen=True)
class Kind:
    """One kind of result: the matching rows for q (ordered), and how each is shown."""

    key: str
    title: str
    rows: Callable[[str], QuerySet[Any]]
    hit: Callable[[Any], Hit]


def _kinds() -> list[Kind]:
    # Imported here: search reads every app's objects, and the apps import aimconsole.
    from models.models import InferenceModel
    from partitions.models import GPU, Node, Reconfiguration
    from serving.models import Deployment

    def gpus(q: str) -> QuerySet[Any]:
        index = Cast("index", CharField())
        return (GPU.objects.select_related("node")
                .annotate(label=Concat("node__name", Value(" GPU "), index), short=Concat("node__name", Value("/gpu"), index))
                .filter(Q(label__icontains=q) | Q(short__icontains=q) | Q(bdf__icontains=q)).order_by("node__name", "index"))

    def operations(q: str) -> QuerySet[Any]:
        raw = q.removeprefix("#")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
            return Reconfiguration.objects.none()
        return Reconfiguration.objects.select_related("node").filter(pk=int(raw))

    return [
        Kind("nodes", "Nodes", lambda q: Node.objects.filter(name__icontains=q).order_by("name"),
             lambda n: Hit(reverse("planning:node-editor", args=[n.name]), n.name, n.get_backend_display())),
        Kind("gpus", "GPUs", gpus,
             lambda g: Hit(reverse("planning:gpu-editor", args=[g.pk]), f"{g.node.name} GPU {g.index}",
                           " · ".join(x for x in (g.gpu_model, g.bdf) if x))),
        Kind("deployments", "Deployments", lambda q: Deployment.objects.filter(name__icontains=q).order_by("-created_at", "-id"),
             lambda d: Hit(reverse("serving:deployment-detail", args=[d.pk]), d.name, d.get_state_display())),
        Kind("models", "Catalog models",
             lambda q: InferenceModel.objects.filter(Q(hf_id__icontains=q) | Q(name__icontains=q)).order_by("hf_id"),
             lambda m: Hit(reverse("catalog:model-detail", args=[m.pk]), m.hf_id, m.name)),
        Kind("operations", "Operations", operations,
             lambda r: Hit(reverse("partitions:operation-detail", args=[r.pk]), f"operation #{r.pk}",
                           f"{r.get_kind_display()} on {r.node.name} · {r.get_state_display()}")),
    ]


def check_q(q: str) -> str:
    """Why q cannot be searched for, or "" when it can."""
    if len(q) > MAX_Q:
        return f"Search for at most {MAX_Q} characters (this is {len(q)})."
    if escape_control(q) != q or _CONTROL.search(q):
        return "Search text cannot hold control characters (including tab, newline and bidi controls)."
    return ""


def search(request: HttpRequest) -> HttpResponse:
    """Every kind's first PER_KIND matches and how many more there are: two queries a kind."""
    q = request.GET.get("q", "").strip()
    error = check_q(q)
    if error:
        # Shown through escape_control: the refused text must not act on the page.
        return render(request, "aimconsole/search.html", {"q": escape_control(q[:MAX_Q]), "error": error, "groups": []}, status=400)
    groups: list[Group] = []
    if q:
        for kind in _kinds():
            rows = kind.rows(q)
            hits = [kind.hit(row) for row in rows[:PER_KIND]]
            total = rows.count()  # counted even when few match: the same queries whatever matches
            groups.append(Group(kind.key, kind.title, hits, total - len(hits)))
    return render(request, "aimconsole/search.html", {"q": q, "groups": groups,
                                                      "found": sum(len(g.hits) + g.more for g in groups)})
