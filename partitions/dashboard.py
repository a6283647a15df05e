"""The utilization dashboard: the fleet (default), one node (``?node=NAME``) or one GPU
(``?node=NAME&gpu=N``); the per-deployment dashboard (observability/deployment_dashboard.py)
reuses its parts.

The page renders the empty Plotly figures (partitions/charts.py), the current bounded frame
(partitions/aggregate.py: aggregated series, top-N, heatmap; also readable without
JavaScript) and, for a node or a GPU, the latest snapshot as a table. static/partitions/
dashboard.js then opens ``/ws/dashboard/`` (partitions/dashboard_consumers.py) and draws one
frame per second into its live window; the 15 min - 24 h ranges come from ``history``
(Prometheus, partitions/history.py) when ``AIM_PROMETHEUS_URL`` is set.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import redis
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone

from aimconsole.staticfinders import NAME as PLOTLY_JS
from partitions import charts, history
from partitions.aggregate import Scope, build_view
from partitions.dashboard_consumers import TICK_S, partition_owners
from partitions.models import Node
from partitions.telemetry_store import read_snapshots_sync

WS_PATH = "/ws/dashboard/"
LATEST_TABLE_MAX_ROWS = 200  # the no-JavaScript table of every partition, only for small views
HISTORY_UNAVAILABLE = "history unavailable: set AIM_PROMETHEUS_URL"

# The Grafana dashboards of deploy/grafana/ (their "uid"; tests check the files agree).
GRAFANA_DASHBOARDS = {
    "utilization": ("aim-partition-utilization", "Partition utilization"),
    "node": ("aim-node-health", "Node health"),
    "model": ("aim-model-performance", "Model performance"),
    "operations": ("aim-scheduler-operations", "Scheduler and operations"),
}


def grafana_links(*kinds: str) -> dict[str, Any]:
    """Links to the Grafana dashboards (``<AIM_GRAFANA_URL>/d/<uid>``), or where to import
    them from when the setting is empty."""
    base = str(getattr(settings, "GRAFANA_URL", "") or "")
    if not base:
        return {"configured": False, "links": [], "where": "deploy/grafana/"}
    return {"configured": True, "where": "deploy/grafana/",
            "links": [{"title": GRAFANA_DASHBOARDS[k][1], "url": f"{base}/d/{GRAFANA_DASHBOARDS[k][0]}"} for k in kinds]}


def websocket_path(scope: Scope) -> str:
    query = {k: v for k, v in (("node", scope.node), ("gpu", scope.gpu), ("deployment", scope.deployment)) if v is not None}
    return WS_PATH + (f"?{urlencode(query)}" if query else "")


def ranges() -> list[dict[str, Any]]:
    available = bool(getattr(settings, "PROMETHEUS_URL", ""))
    return [{"key": "live", "label": "live", "enabled": True}] + [
        {"key": key, "label": key.replace("m", " min").replace("h", " h"), "enabled": available} for key in history.RANGES]


def scope_from(request: HttpRequest) -> Scope:
    """The view asked for (404: an unknown node, a GPU that is not an integer)."""
    node = request.GET.get("node") or None
    gpu_text = request.GET.get("gpu") or None
    if gpu_text is not None and (node is None or not gpu_text.isdigit()):
        raise Http404("GPU needs a node and an integer index")
    if node is not None:
        get_object_or_404(Node.objects.only("name"), name=node)
    return Scope(node=node, gpu=None if gpu_text is None else int(gpu_text))


def live_settings(scope: Scope, *, history_url: str) -> dict[str, Any]:
    """What dashboard.js needs (json_script): socket, window, palette, thresholds, timezone."""
    return {
        "ws_path": websocket_path(scope),
        "scope": {"level": scope.level, "node": scope.node, "gpu": scope.gpu, "deployment": scope.deployment},
        "interval_s": settings.TELEMETRY_INTERVAL_S,
        "tick_s": TICK_S,
        "stale_after_intervals": charts.STALE_AFTER_INTERVALS,
        "max_points": charts.MAX_POINTS,
        "palette": list(charts.PALETTE),
        "plotly_config": charts.PLOTLY_CONFIG,
        "server_time": time.time(),
        "timezone": timezone.get_current_timezone_name(),
        "ranges": ranges(),
        "history_url": history_url,
        "history_unavailable": "" if getattr(settings, "PROMETHEUS_URL", "") else HISTORY_UNAVAILABLE,
        "thresholds": {"activity": charts.ACTIVITY_BUSY_PCT, "vram_pct": charts.VRAM_FULL_PCT,
                       "temperature": charts.TEMPERATURE_LIMIT_C},
    }


def initial_frame(names: list[str], scope: Scope) -> tuple[dict[str, Any], dict[str, Any]]:
    """The snapshots in view and their frame, for the first paint and the no-JavaScript page."""
    snapshots = latest_snapshots(names)
    try:
        owners, hrefs = partition_owners()
    except Exception:  # a provider failing must not take the dashboard down
        owners, hrefs = {}, {}
    return snapshots, build_view(snapshots, scope=scope, deployments=owners, deployment_hrefs=hrefs, now=time.time(),
                                 expected_nodes=len(names))


def dashboard(request: HttpRequest) -> HttpResponse:
    # Same permission as the dashboard WebSocket (which would refuse with 4403).
    if not request.user.has_perm("partitions.view_node"):
        raise PermissionDenied
    scope = scope_from(request)
    nodes = list(Node.objects.order_by("name").only("name", "emulated", "backend"))
    in_view = [n for n in nodes if n.name == scope.node] if scope.node else nodes
    snapshots, frame = initial_frame([n.name for n in in_view], scope)
    emulated = [node.name for node in in_view if node.emulated]
    emulated += [name for name, snap in snapshots.items() if snap.get("emulated") and name not in emulated]
    gpus: list[int] = []
    if scope.node is not None:
        gpus = sorted({g["index"] for g in (snapshots.get(scope.node) or {}).get("gpus") or () if isinstance(g.get("index"), int)})
        if not gpus:
            gpus = list(in_view[0].gpus.order_by("index").values_list("index", flat=True))
    if scope.gpu is not None:
        snapshots = {scope.node: {**snapshots[scope.node], "gpus": [g for g in snapshots[scope.node].get("gpus") or ()
                                                                   if g.get("index") == scope.gpu]}} if scope.node in snapshots else {}
    rows = charts.latest_rows(snapshots)
    query = {k: v for k, v in (("node", scope.node), ("gpu", scope.gpu)) if v is not None}
    history_url = reverse("dashboard:history") + (f"?{urlencode(query)}" if query else "")
    total_gib = None
    if scope.level == "gpu" and rows:
        total_gib = rows[0]["vram_total_gib"]
    return render(request, "partitions/dashboard.html", {
        "nodes": nodes,
        "selected": scope.node,
        "scope": scope,
        "gpus": gpus,
        "in_view": in_view,
        "emulated_nodes": sorted(emulated),
        "figures": charts.figures(timezone.get_current_timezone_name(), level=frame["series"]["level"],
                                  vram_total_gib=total_gib),
        "chart_ids": charts.CHARTS,
        "live": live_settings(scope, history_url=history_url),
        "frame": frame,
        "rows": rows if len(rows) <= LATEST_TABLE_MAX_ROWS else [],
        "rows_hidden": len(rows) if len(rows) > LATEST_TABLE_MAX_ROWS else 0,
        "missing": [node.name for node in in_view if node.name not in snapshots],
        "derived_note": charts.DERIVED_NOTE,
        "plotly_js": PLOTLY_JS,
        "grafana": grafana_links("utilization", "node"),
        "history_unavailable": "" if getattr(settings, "PROMETHEUS_URL", "") else HISTORY_UNAVAILABLE,
        "timezone_name": timezone.get_current_timezone_name(),
    })


def history_view(request: HttpRequest) -> JsonResponse:
    """``GET /dashboard/history/?range=1h[&node=…[&gpu=…]]``: the charts' series from
    Prometheus (bounded: aggregated by node, GPU or partition, top 12, at most 240 steps)."""
    if not request.user.has_perm("partitions.view_node"):
        raise PermissionDenied
    base = str(getattr(settings, "PROMETHEUS_URL", "") or "")
    if not base:
        return JsonResponse({"error": HISTORY_UNAVAILABLE}, status=503)
    range_name = request.GET.get("range", "")
    if range_name not in history.RANGES:
        return JsonResponse({"error": f"range must be one of {', '.join(history.RANGES)}"}, status=400)
    scope = scope_from(request)
    try:
        answer = history.history(base, scope, range_name, now=time.time())
    except history.HistoryError as exc:
        return JsonResponse({"error": str(exc)}, status=502)
    return JsonResponse(answer)


def latest_snapshots(names: list[str]) -> dict[str, Any]:
    """Latest snapshots for a sync view: Redis being down leaves the page readable, just
    without the data."""
    try:
        return read_snapshots_sync(names)
    except redis.RedisError:
        return {}
