"""Plotly figures of the utilization dashboard. Pure Python (no Django): figure dicts the page
hands to Plotly.js through ``json_script``, the palette and thresholds shared with
``static/partitions/dashboard.js``, and the rows of the page's no-JavaScript table.

The page draws bounded frames (partitions/aggregate.py): one line per node (fleet), per GPU
(a node) or per partition (one GPU, a deployment), at most ``aggregate.MAX_SERIES`` per chart,
plus a heatmap of activity (rows: partitions grouped by node and GPU, or coarser at scale;
columns: time). Legends are HTML tables beside the charts (last, mean, max), tooltips show only
the trace near the cursor, and thresholds are Plotly shapes.

On a partitioned GPU only the primary partition reports activity, so a secondary partition's
activity is derived from the primary's per-XCP busy (partitions/telemetry.py): only activity
carries ``(derived)``; VRAM is measured on each partition.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

MIB_PER_GIB = 1024  # amd-smi's "MB" are MiB; the console shows GiB (2**30 bytes)
MAX_POINTS = 300  # per trace and heatmap columns, kept by the page (the live window)
STALE_AFTER_INTERVALS = 3  # no new sample for 3 x interval_s: the view is stale

# Thresholds drawn as dashed lines.
ACTIVITY_BUSY_PCT = 90.0
VRAM_FULL_PCT = 90.0
TEMPERATURE_LIMIT_C = 95.0  # MI300X hotspot: throttling starts around 100 °C

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


def threshold(y: float, label: str, color: str = "#c0392b") -> dict[str, Any]:
    """A dashed horizontal line across the plot at ``y`` (a Plotly shape), labelled."""
    return {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": y, "y1": y,
            "line": {"color": color, "width": 1, "dash": "dash"},
            "label": {"text": label, "textposition": "end", "font": {"size": 10, "color": color}}}


def time_title(tz_name: str) -> str:
    return f"time ({tz_name})"


def _layout(title: str, y_title: str, *, y_range: list[float] | None = None,
            legend_title: str = "", subtitle: str = "", tz_name: str = "UTC",
            shapes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    text = title + (f"<br><sub>{subtitle}</sub>" if subtitle else "")
    yaxis: dict[str, Any] = {"title": {"text": y_title}, "zeroline": True, "rangemode": "tozero",
                             "gridcolor": "#e6e9ef"}
    if y_range is not None:
        yaxis["range"] = y_range
        yaxis.pop("rangemode")
    layout: dict[str, Any] = {
        "title": {"text": text, "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        "xaxis": {"title": {"text": time_title(tz_name)}, "type": "date", "gridcolor": "#e6e9ef",
                  "tickformat": "%H:%M:%S", "nticks": 6, "tickangle": 0, "automargin": True},
        "yaxis": yaxis,
        "colorway": list(PALETTE),
        "showlegend": False,  # the legend is a table beside the chart (last, mean, max)
        "shapes": shapes or [],
        "margin": {"l": 60, "r": 10, "t": 72 if subtitle else 44, "b": 44},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, Helvetica Neue, Arial, sans-serif",
                 "color": "#1d2330"},
        "hovermode": "closest",  # only the trace near the cursor
        "hoverlabel": {"namelength": -1},
        "uirevision": "live",  # keep the user's zoom while points are appended
    }
    del legend_title  # legends are tables on the page
    return layout


def activity_figure(tz_name: str = "UTC", subject: str = "per partition") -> dict[str, Any]:
    return {"data": [], "layout": _layout(
        f"GFX activity {subject} (%)", "GFX activity (%)", y_range=[0, 105], subtitle=DERIVED_NOTE, tz_name=tz_name,
        shapes=[threshold(ACTIVITY_BUSY_PCT, f"busy {ACTIVITY_BUSY_PCT:.0f} %")])}


def vram_figure(tz_name: str = "UTC", *, percent: bool = False, total_gib: float | None = None,
                subject: str = "per partition") -> dict[str, Any]:
    """VRAM used: GiB per partition (the partition's total as a threshold when known), or
    percent of the total for aggregated lines (nodes, GPUs)."""
    if percent:
        return {"data": [], "layout": _layout(
            f"VRAM used {subject} (% of total)", "VRAM used (%)", y_range=[0, 105], tz_name=tz_name,
            shapes=[threshold(VRAM_FULL_PCT, f"{VRAM_FULL_PCT:.0f} %")])}
    shapes = [threshold(total_gib, f"VRAM total {total_gib:g} GiB")] if total_gib else []
    return {"data": [], "layout": _layout(f"VRAM used {subject} (GiB)", "VRAM used (GiB)", tz_name=tz_name, shapes=shapes)}


def power_figure(tz_name: str = "UTC", subject: str = "per GPU") -> dict[str, Any]:
    return {"data": [], "layout": _layout(f"Power {subject} (W)", "power (W)", tz_name=tz_name)}


def temperature_figure(tz_name: str = "UTC", subject: str = "per GPU") -> dict[str, Any]:
    return {"data": [], "layout": _layout(
        f"Hotspot temperature {subject} (°C)", "hotspot temperature (°C)", tz_name=tz_name,
        shapes=[threshold(TEMPERATURE_LIMIT_C, f"limit {TEMPERATURE_LIMIT_C:.0f} °C")])}


# What one line is, per series level of the frames (partitions/aggregate.py).
SUBJECTS = {
    "node": ("mean per node", "per node", "per node (sum of GPUs)", "per node (max of GPUs)"),
    "gpu": ("mean per GPU", "per GPU", "per GPU", "per GPU"),
    "partition": ("per partition", "per partition", "per GPU", "per GPU"),
}


def figures(tz_name: str = "UTC", *, level: str = "partition", vram_total_gib: float | None = None) -> dict[str, dict[str, Any]]:
    """The four initial (empty) line figures, keyed as in CHARTS, plus the heatmap, for a view
    whose lines are ``level`` (node, gpu or partition)."""
    activity, vram, power, temperature = SUBJECTS.get(level, SUBJECTS["partition"])
    return {
        "activity": activity_figure(tz_name, activity),
        "vram": vram_figure(tz_name, percent=level != "partition", total_gib=vram_total_gib, subject=vram),
        "power": power_figure(tz_name, power),
        "temperature": temperature_figure(tz_name, temperature),
        "heatmap": heatmap_figure(tz_name),
    }


def heatmap_figure(tz_name: str = "UTC") -> dict[str, Any]:
    layout = _layout("GFX activity heatmap (%)", "", tz_name=tz_name)
    layout["yaxis"] = {"autorange": "reversed", "type": "category", "automargin": True, "tickfont": {"size": 9}}
    layout["margin"] = {"l": 110, "r": 10, "t": 44, "b": 44}
    return {"data": [{"type": "heatmap", "x": [], "y": [], "z": [], "zmin": 0, "zmax": 100, "colorscale": "Viridis",
                      "hoverongaps": False, "colorbar": {"title": {"text": "%"}, "thickness": 12},
                      "hovertemplate": "%{y}<br>%{x}<br>%{z:.1f} %<extra></extra>"}],
            "layout": layout}


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
                    "name": trace_name(node, gpu["index"], part["index"]),
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
