"""The live utilization dashboard: GFX activity and VRAM per partition, power and hotspot
temperature per GPU, for the fleet (default) or one node (``?node=NAME``).

The page renders the empty Plotly figures (partitions/charts.py) and the latest snapshot of
every node in view as a table (readable without JavaScript); static/partitions/dashboard.js
then opens ``/ws/telemetry/`` and draws the live series.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import redis
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from partitions import charts
from partitions.models import Node
from partitions.telemetry_store import read_snapshots_sync

WS_PATH = "/ws/telemetry/"


def websocket_path(node: str | None) -> str:
    return WS_PATH + (f"?{urlencode({'node': node})}" if node else "")


def dashboard(request: HttpRequest) -> HttpResponse:
    # Same permission as the telemetry WebSocket (which would refuse with 4403).
    if not request.user.has_perm("partitions.view_node"):
        raise PermissionDenied
    nodes = list(Node.objects.order_by("name").only("name", "emulated", "backend"))
    selected = request.GET.get("node") or None
    if selected is not None:
        in_view = [get_object_or_404(Node.objects.only("name", "emulated", "backend"), name=selected)]
    else:
        in_view = nodes
    snapshots = latest_snapshots([node.name for node in in_view])
    emulated = [node.name for node in in_view if node.emulated]
    emulated += [name for name, snap in snapshots.items() if snap.get("emulated") and name not in emulated]
    now = time.time()
    live = {
        "ws_path": websocket_path(selected),
        "node": selected,
        "interval_s": settings.TELEMETRY_INTERVAL_S,
        "stale_after_intervals": charts.STALE_AFTER_INTERVALS,
        "max_points": charts.MAX_POINTS,
        "palette": list(charts.PALETTE),
        "plotly_config": charts.PLOTLY_CONFIG,
        "trace": charts.empty_trace("", charts.color_for(0)),
        "server_time": now,
    }
    return render(request, "partitions/dashboard.html", {
        "nodes": nodes,
        "selected": selected,
        "in_view": in_view,
        "emulated_nodes": sorted(emulated),
        "figures": charts.figures(),
        "chart_ids": charts.CHARTS,
        "live": live,
        "rows": charts.latest_rows(snapshots, now=now),
        "missing": [node.name for node in in_view if node.name not in snapshots],
        "derived_note": charts.DERIVED_NOTE,
    })


def latest_snapshots(names: list[str]) -> dict[str, Any]:
    """Latest snapshots for a sync view: Redis being down leaves the page readable, just
    without the table."""
    try:
        return read_snapshots_sync(names)
    except redis.RedisError:
        return {}
