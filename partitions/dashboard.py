"""The utilization dashboard: the fleet (default), one node (``?node=NAME``) or one GPU
(``?node=NAME&gpu=N``); the per-deployment dashboard (observability/deployment_dashboard.py)
reuses its parts.

The page renders the empty Plotly figures (partitions/charts.py), the current bounded frame
(partitions/aggregate.py: aggregated series, top-N, heatmap; also readable without
JavaScript; a large fleet's from the nodes' stored summaries, not every partition's sample)
and, for a node or a GPU, the latest snapshot as a table. static/partitions/dashboard.js
then opens ``/ws/dashboard/`` (partitions/dashboard_consumers.py) and draws one
frame per second into its live window; the 15 min - 24 h ranges come from ``history``
(Prometheus, partitions/history.py) when ``AIM_PROMETHEUS_URL`` is set.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
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
from partitions.dashboard_consumers import OWNERS_TTL_S, TICK_S, fleet_frame, partition_owners
from partitions.models import GPU, Node
from partitions.telemetry_store import key_prefix, read_snapshots_sync

WS_PATH = "/ws/dashboard/"
LATEST_TABLE_MAX_ROWS = 200  # the no-JavaScript table of every partition, only for small views
NODE_SELECT_MAX = 50  # the node picker lists the nodes up to this many; a name field beyond
NAMES_SHOWN = 10  # of the emulated / not-reporting nodes named on the page (then a count)
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
    try:  # a node's or a GPU's view: the owners of that node's partitions only
        owners, hrefs = partition_owners(names if scope.node is not None else None)
    except Exception:  # a provider failing must not take the dashboard down
        owners, hrefs = {}, {}
    return snapshots, build_view(snapshots, scope=scope, deployments=owners, deployment_hrefs=hrefs, now=time.time(),
                                 expected_nodes=len(names))


@dataclass(frozen=True)
class PageFrame:
    """A view's frame for the page, with what the page says around it: the nodes in view,
    the emulated ones (flagged in the inventory or by their snapshot) and the silent ones (no
    snapshot), each as its first ``NAMES_SHOWN`` names and a count; and the snapshots only
    where the page tables every partition (small views)."""

    frame: dict[str, Any]
    in_view: int
    emulated: tuple[str, ...]
    emulated_count: int
    missing: tuple[str, ...]
    missing_count: int
    snapshots: dict[str, Any]


# (Redis key prefix, scope, nodes in the fleet) -> (when computed, its PageFrame), this process's.
_PAGE_FRAMES: dict[tuple[str, str, int], tuple[float, PageFrame]] = {}
_PAGE_FRAMES_LOCK = threading.Lock()
_PAGE_FRAMES_MAX = 64  # views cached at once (each a bounded frame)
# How long a page load reuses a view's frame: the first paint only (the page's socket sends
# the current frame right after), and as old as the deployments the frames name (OWNERS_TTL_S).
PAGE_FRAME_TTL_S = OWNERS_TTL_S


def _compute_page_frame(scope: Scope) -> PageFrame:
    rows = list((Node.objects.filter(name=scope.node) if scope.node else Node.objects.order_by("name"))
                .values_list("name", "emulated"))
    names = [name for name, _ in rows]
    # The fleet of a large fleet from the nodes' summaries; every sample only for small views.
    found = fleet_frame(names, now=time.time()) if scope.level == "fleet" else None
    if found is not None:
        (snapshots, frame), small_view = found, False  # the summaries: who reports, who is emulated
    else:
        snapshots, frame = initial_frame(names, scope)
        small_view = True
    emulated = sorted({name for name, flag in rows if flag}
                      | {name for name, snap in snapshots.items() if isinstance(snap, dict) and snap.get("emulated")})
    missing = [name for name in names if name not in snapshots]
    small = small_view and frame["counts"]["partitions"] <= LATEST_TABLE_MAX_ROWS
    return PageFrame(frame=frame, in_view=len(names), emulated=tuple(emulated[:NAMES_SHOWN]), emulated_count=len(emulated),
                     missing=tuple(missing[:NAMES_SHOWN]), missing_count=len(missing), snapshots=snapshots if small else {})


def page_frame(scope: Scope, *, fleet_size: int) -> PageFrame:
    """The page's frame of ``scope`` (see ``PageFrame``), computed at most every
    ``PAGE_FRAME_TTL_S`` per view and fleet size in this process, whoever loads the page.
    The fleet's frame of a large fleet comes from the nodes' summaries and a few samples
    (partitions/dashboard_consumers.py ``fleet_frame``); a node's, a GPU's or a small
    fleet's from the samples in view."""
    key = (key_prefix(), scope.key, fleet_size)
    with _PAGE_FRAMES_LOCK:  # one computation at a time: concurrent loads wait for it, then share it
        now = time.time()
        cached = _PAGE_FRAMES.get(key)
        if cached is not None and 0 <= now - cached[0] < PAGE_FRAME_TTL_S:
            return cached[1]
        result = _compute_page_frame(scope)
        if len(_PAGE_FRAMES) >= _PAGE_FRAMES_MAX:
            _PAGE_FRAMES.clear()
        _PAGE_FRAMES[key] = (time.time(), result)  # from when it is ready (it took a while on a large fleet)
        return result


def dashboard(request: HttpRequest) -> HttpResponse:
    """The fleet, a node or a GPU: the current frame's aggregates (bounded whatever the fleet
    size), the figures the page draws its live window into, and for small views the latest
    sample of every partition. The node picker is a list up to ``NODE_SELECT_MAX`` nodes, a
    name field beyond; long name lists (emulated, not reporting) show their first
    ``NAMES_SHOWN`` and a count."""
    # Same permission as the dashboard WebSocket (which would refuse with 4403).
    if not request.user.has_perm("partitions.view_node"):
        raise PermissionDenied
    scope = scope_from(request)
    fleet_size = Node.objects.count()
    current = page_frame(scope, fleet_size=fleet_size)
    frame, snapshots = current.frame, current.snapshots  # shared: read only
    gpus: list[int] = []
    if scope.node is not None:
        gpus = sorted({g["index"] for g in (snapshots.get(scope.node) or {}).get("gpus") or () if isinstance(g.get("index"), int)})
        if not gpus:
            gpus = list(GPU.objects.filter(node__name=scope.node).order_by("index").values_list("index", flat=True))
    if scope.gpu is not None:
        snapshots = {scope.node: {**snapshots[scope.node], "gpus": [g for g in snapshots[scope.node].get("gpus") or ()
                                                                   if g.get("index") == scope.gpu]}} if scope.node in snapshots else {}
    partitions = frame["counts"]["partitions"]
    # The table of every partition only for small views (a fleet's would be every sample).
    rows = charts.latest_rows(snapshots) if partitions <= LATEST_TABLE_MAX_ROWS else []
    query = {k: v for k, v in (("node", scope.node), ("gpu", scope.gpu)) if v is not None}
    history_url = reverse("dashboard:history") + (f"?{urlencode(query)}" if query else "")
    total_gib = None
    if scope.level == "gpu" and rows:
        total_gib = rows[0]["vram_total_gib"]
    nodes = None
    if fleet_size <= NODE_SELECT_MAX:
        nodes = [{"name": name, "emulated": flag} for name, flag in Node.objects.order_by("name").values_list("name", "emulated")]
    return render(request, "partitions/dashboard.html", {
        "nodes": nodes,
        "node_count": fleet_size,
        "selected": scope.node,
        "scope": scope,
        "gpus": gpus,
        "in_view_count": current.in_view,
        "emulated_nodes": current.emulated,
        "emulated_more": max(0, current.emulated_count - len(current.emulated)),
        "figures": charts.figures(timezone.get_current_timezone_name(), level=frame["series"]["level"],
                                  vram_total_gib=total_gib),
        "chart_ids": charts.CHARTS,
        "live": live_settings(scope, history_url=history_url),
        "frame": frame,
        "rows": rows,
        "rows_hidden": partitions if partitions > LATEST_TABLE_MAX_ROWS else 0,
        "missing": current.missing,
        "missing_more": max(0, current.missing_count - len(current.missing)),
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
