"""The audit trail page (admins)."""

from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from aimconsole.models import AuditEvent


@permission_required("aimconsole.view_auditevent", raise_exception=True)
def audit_log(request: HttpRequest) -> HttpResponse:
    events = AuditEvent.objects.all()
    if request.GET.get("action"):
        events = events.filter(action__startswith=request.GET["action"][:64])
    if request.GET.get("actor"):
        events = events.filter(actor=request.GET["actor"][:150])
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    return render(request, "aimconsole/audit_log.html", {"page": page, "filters": request.GET})
