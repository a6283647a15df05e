"""The per-deployment dashboard: its replicas' partitions (activity, VRAM; power and hotspot
temperature of their GPUs), live, plus the gateway's request metrics for its model.

It lives here, not in partitions/, because it reads serving's rows (import direction: catalog
<- partitions <- planning <- serving; observability reads all). The live part is the
utilization dashboard's: the same bounded frames (partitions/aggregate.py) over
``/ws/dashboard/?deployment=NAME`` (the partitions its slots occupy, named through the
workloads port) and the same static/partitions/dashboard.js.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from partitions import charts
from partitions.aggregate import Scope
from partitions.dashboard import PLOTLY_JS, grafana_links, initial_frame, live_settings
from serving.models import Deployment


def deployment_dashboard(request: HttpRequest, pk: int) -> HttpResponse:
    if not request.user.has_perm("partitions.view_node"):
        raise PermissionDenied
    from serving.traffic import model_traffic

    deployment = get_object_or_404(Deployment.objects.select_related("profile__model"), pk=pk)
    slots = list(deployment.slots.select_related("partition__gpu__node").order_by(
        "partition__gpu__node__name", "partition__gpu__index", "partition__index"))
    nodes = sorted({s.partition.gpu.node.name for s in slots})
    emulated = sorted({s.partition.gpu.node.name for s in slots if s.partition.gpu.node.emulated})
    scope = Scope(deployment=deployment.name)
    _, frame = initial_frame(nodes, scope)
    live = live_settings(scope, history_url="")
    live["history_unavailable"] = "history per deployment: use Grafana's model dashboard"
    live["ranges"] = [r for r in live["ranges"] if r["key"] == "live"]
    return render(request, "observability/deployment_dashboard.html", {
        "deployment": deployment,
        "slots": slots,
        "emulated_nodes": emulated,
        "figures": charts.figures(timezone.get_current_timezone_name(), level=frame["series"]["level"]),
        "chart_ids": charts.CHARTS,
        "live": live,
        "frame": frame,
        "traffic": model_traffic(deployment.profile.model.hf_id),
        "plotly_js": PLOTLY_JS,
        "grafana": grafana_links("model", "utilization"),
        "timezone_name": timezone.get_current_timezone_name(),
    })
