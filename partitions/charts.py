"""Plotly figures of the live utilization dashboard. Pure Python (no Django): figure dicts the
page hands to Plotly.js through ``json_script``, trace names and colors shared with
``static/partitions/dashboard.js`` (which adds one trace per partition or GPU it sees and
extends it with every telemetry update), and the rows of the page's no-JavaScript table.

Series: GFX activity (%) and VRAM used (GiB) per partition; power (W) and hotspot temperature
(°C) per GPU. On a partitioned GPU only the primary partition reports activity, so a secondary
partition's activity is derived from the primary's per-XCP busy (partitions/telemetry.py);
such traces are named ``... (derived)``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

MIB_PER_GIB = 1024  # amd-smi's "MB" are MiB; the console shows GiB (2**30 bytes)
MAX_POINTS = 300  # per trace, kept by the page (extendTraces' maxPoints)
STALE_AFTER_INTERVALS = 3  # no new sample for 3 x interval_s: the view is stale

# One color per series, in the order the page discovers them: a partition gets the same color
# in the activity and VRAM charts, a GPU the same color in the power and temperature charts.
# Colorblind-safe (Okabe-Ito), then Tableau 10 for larger views.
PALETTE = (
    "#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#8c564b", "#000000",
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
)

DERIVED_NOTE = "secondary partitions' activity is derived from per-XCP busy"

CHARTS = ("activity", "vram", "power", "temperature")

# Plotly.js config shared by every chart (no logo link, no cloud/editing buttons).
PLOTLY_CONFIG: dict[str, Any] = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["lasso2d", "select2d", "sendDataToCloud"],
}


def color_for(position: int) -> str:
    """The color of the ``position``-th series of a chart (cycles through PALETTE)."""
    return PALETTE[position % len(PALETTE)]


def trace_name(node: str, gpu: int, partition: int | None = None, *, derived: bool = False) -> str:
    """``"emu-node-1 gpu0/p3"`` for a partition (``+ " (derived)"``), ``"emu-node-1 gpu0"``
    for a GPU."""
    name = f"{node} gpu{gpu}" + ("" if partition is None else f"/p{partition}")
    return name + (" (derived)" if derived else "")


def trace_key(node: str, gpu: int, partition: int | None = None) -> str:
    """Identity of a series across updates (its name may change: derived or not)."""
    return f"{node}|{gpu}" + ("" if partition is None else f"|{partition}")


def empty_trace(name: str, color: str, *, key: str = "") -> dict[str, Any]:
    """A line trace with no points yet (the page appends them)."""
    trace: dict[str, Any] = {
        "type": "scatter",
        "mode": "lines",
        "name": name,
        "x": [],
        "y": [],
        "line": {"color": color, "width": 2},
        "connectgaps": False,
    }
    if key:
        trace["meta"] = {"key": key}
    return trace


def _layout(title: str, y_title: str, *, y_range: list[float] | None = None,
            legend_title: str = "", subtitle: str = "") -> dict[str, Any]:
    text = title + (f"<br><sub>{subtitle}</sub>" if subtitle else "")
    yaxis: dict[str, Any] = {"title": {"text": y_title}, "zeroline": True, "rangemode": "tozero",
                             "gridcolor": "#e6e9ef"}
    if y_range is not None:
        yaxis["range"] = y_range
        yaxis.pop("rangemode")
    layout: dict[str, Any] = {
        "title": {"text": text, "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        "xaxis": {"title": {"text": "time (local)"}, "type": "date", "gridcolor": "#e6e9ef",
                  "tickformat": "%H:%M:%S", "nticks": 6, "tickangle": 0, "automargin": True},
        "yaxis": yaxis,
        "colorway": list(PALETTE),
        "showlegend": True,
        "legend": {"orientation": "v", "font": {"size": 11}},
        "margin": {"l": 60, "r": 10, "t": 72 if subtitle else 44, "b": 44},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, Helvetica Neue, Arial, sans-serif",
                 "color": "#1d2330"},
        "hovermode": "x unified",
        "uirevision": "live",  # keep the user's zoom while points are appended
    }
    if legend_title:
        layout["legend"]["title"] = {"text": legend_title}
    return layout


def activity_figure() -> dict[str, Any]:
    return {"data": [], "layout": _layout(
        "GFX activity per partition (%)", "GFX activity (%)", y_range=[0, 100],
        subtitle=DERIVED_NOTE, legend_title="(derived): from per-XCP busy")}


def vram_figure() -> dict[str, Any]:
    return {"data": [], "layout": _layout("VRAM used per partition (GiB)", "VRAM used (GiB)")}


def power_figure() -> dict[str, Any]:
    return {"data": [], "layout": _layout("Power per GPU (W)", "power (W)")}


def temperature_figure() -> dict[str, Any]:
    return {"data": [], "layout": _layout("Hotspot temperature per GPU (°C)", "hotspot temperature (°C)")}


def figures() -> dict[str, dict[str, Any]]:
    """The four initial (empty) figures, keyed as in CHARTS."""
    return {
        "activity": activity_figure(),
        "vram": vram_figure(),
        "power": power_figure(),
        "temperature": temperature_figure(),
    }


def mib_to_gib(value: float | None) -> float | None:
    return None if value is None else round(value / MIB_PER_GIB, 2)


def latest_rows(snapshots: Mapping[str, Mapping[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
    """One row per partition of the latest snapshots (nodes by name, then GPU, partition),
    in display units, for the page's server-side table."""
    now = time.time() if now is None else now
    rows: list[dict[str, Any]] = []
    for node in sorted(snapshots):
        snapshot = snapshots[node]
        ts = snapshot.get("ts")
        age = None if ts is None else max(0.0, round(now - float(ts), 1))
        gpus: Iterable[Mapping[str, Any]] = snapshot.get("gpus") or ()
        for gpu in gpus:
            parts = list(gpu.get("partitions") or ())
            for position, part in enumerate(parts):
                rows.append({
                    "name": trace_name(node, gpu["index"], part["index"], derived=bool(part.get("derived"))),
                    "node": node,
                    "gpu": gpu["index"],
                    "partition": part["index"],
                    "logical_index": part.get("logical_index"),
                    "gfx_activity": part.get("gfx_activity"),
                    "derived": bool(part.get("derived")),
                    "vram_used_gib": mib_to_gib(part.get("vram_used_mb")),
                    "vram_total_gib": mib_to_gib(part.get("vram_total_mb")),
                    "power_w": gpu.get("power_w"),
                    "temperature_c": gpu.get("temperature_c"),
                    "age_s": age,
                    "emulated": bool(snapshot.get("emulated")),
                    # the GPU's figures span its partitions' rows in the table
                    "gpu_rows": len(parts) if position == 0 else 0,
                })
    return rows
