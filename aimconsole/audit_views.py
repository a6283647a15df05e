"""The audit trail page (admins): entries link the object they changed to its page."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from aimconsole.models import AuditEvent
from aimconsole.roles import permission_required


@dataclass(frozen=True)
class ObjectLink:
    """The page of an entry's object and the name to show for it (``url`` empty: it is gone)."""

    url: str
    label: str


@dataclass(frozen=True)
class _Kind:
    rows: Callable[[], QuerySet[Any]]  # the objects, with what the label needs joined in
    link: Callable[[Any], ObjectLink]


def _kinds() -> dict[str, _Kind]:
    # Imported here: the audit page reads every app's objects, and the apps import aimconsole.
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from models.models import InferenceModel
    from partitions.models import GPU, Node, Reconfiguration
    from planning.models import Plan
    from serving.models import Deployment

    user = get_user_model()
    return {
        # Users and groups decide who may repartition GPUs: their entries open them in Django admin.
        "auth.user": _Kind(lambda: user.objects.only(user.USERNAME_FIELD),
                           lambda u: ObjectLink(reverse("admin:auth_user_change", args=[u.pk]), u.get_username())),
        "auth.group": _Kind(lambda: Group.objects.only("name"),
                            lambda g: ObjectLink(reverse("admin:auth_group_change", args=[g.pk]), g.name)),
        "partitions.node": _Kind(lambda: Node.objects.only("name"),
                                 lambda n: ObjectLink(reverse("planning:node-editor", args=[n.name]), n.name)),
        "partitions.gpu": _Kind(lambda: GPU.objects.select_related("node").only("index", "node__name"),
                                lambda g: ObjectLink(reverse("planning:gpu-editor", args=[g.pk]), f"{g.node.name} GPU {g.index}")),
        "partitions.reconfiguration": _Kind(lambda: Reconfiguration.objects.only("pk"),
                                            lambda r: ObjectLink(reverse("partitions:operation-detail", args=[r.pk]), f"operation #{r.pk}")),
        "planning.plan": _Kind(lambda: Plan.objects.only("pk"),
                               lambda p: ObjectLink(reverse("planning:plan-detail", args=[p.pk]), f"plan #{p.pk}")),
        "serving.deployment": _Kind(lambda: Deployment.objects.only("name"),
                                    lambda d: ObjectLink(reverse("serving:deployment-detail", args=[d.pk]), d.name)),
        "catalog.inferencemodel": _Kind(lambda: InferenceModel.objects.only("hf_id"),
                                        lambda m: ObjectLink(reverse("catalog:model-detail", args=[m.pk]), m.hf_id)),
    }


def _as_pk(object_id: str) -> int | None:
    # Object ids are text (some entries name files); only a plausible integer key is looked up.
    return int(object_id) if object_id.isascii() and object_id.isdigit() and len(object_id) <= 18 else None


def attach_links(events: Iterable[AuditEvent]) -> None:
    """Give every event ``link``: an ObjectLink for the kinds that have a page (an empty url when
    the object no longer exists), else None. One query per kind on the page, whatever the rows."""
    events = list(events)
    kinds = _kinds()
    wanted: dict[str, set[int]] = defaultdict(set)
    for event in events:
        pk = _as_pk(event.object_id)
        if event.object_type in kinds and pk is not None:
            wanted[event.object_type].add(pk)
    found = {object_type: kinds[object_type].rows().in_bulk(pks) for object_type, pks in wanted.items()}
    for event in events:
        pk = _as_pk(event.object_id)
        link = None
        if event.object_type in found and pk is not None:
            obj = found[event.object_type].get(pk)
            link = kinds[event.object_type].link(obj) if obj is not None else ObjectLink("", "")
        event.link = link  # type: ignore[attr-defined]


@permission_required("aimconsole.view_auditevent")
def audit_log(request: HttpRequest) -> HttpResponse:
    events = AuditEvent.objects.all()
    if request.GET.get("action"):
        events = events.filter(action__startswith=request.GET["action"][:64])
    if request.GET.get("actor"):
        events = events.filter(actor=request.GET["actor"][:150])
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    attach_links(page.object_list)
    return render(request, "aimconsole/audit_log.html", {"page": page, "filters": request.GET})
