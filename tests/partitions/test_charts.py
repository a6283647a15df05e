"""The dashboard's Plotly figures, trace names and table rows (pure functions)."""

from __future__ import annotations

import json

from partitions import charts


def snapshot(node: str = "emu-node-1", ts: float = 1000.0) -> dict:
    return {
        "node": node, "ts": ts, "interval_s": 1.0, "emulated": True,
        "gpus": [
            {"index": 0, "power_w": 512.0, "temperature_c": 71.0, "mem_temperature_c": 60.0, "gfx_activity": 40.0,
             "partitions": [
                 {"index": 0, "logical_index": 0, "gfx_activity": 80.0, "derived": True, "vram_used_mb": 2048, "vram_total_mb": 24576},
                 {"index": 1, "logical_index": 2, "gfx_activity": 0.0, "derived": True, "vram_used_mb": None, "vram_total_mb": 24576},
             ]},
            {"index": 1, "power_w": None, "temperature_c": None, "mem_temperature_c": None, "gfx_activity": None,
             "partitions": [
                 {"index": 0, "logical_index": 1, "gfx_activity": None, "derived": False, "vram_used_mb": 0, "vram_total_mb": 196608},
             ]},
        ],
    }


def test_trace_names():
    assert charts.trace_name("emu-node-1", 0, 3) == "emu-node-1 gpu0/p3"
    assert charts.trace_name("emu-node-1", 0, 3, derived=True) == "emu-node-1 gpu0/p3 (derived)"
    assert charts.trace_name("emu-node-1", 7) == "emu-node-1 gpu7"
    assert charts.trace_key("n", 1, 2) != charts.trace_key("n", 1) != charts.trace_key("n", 12)


def test_four_line_figures_and_a_heatmap_with_units_in_titles_and_axes():
    figs = charts.figures("Europe/Paris")
    assert set(figs) == {*charts.CHARTS, "heatmap"} and set(charts.CHARTS) == {"activity", "vram", "power", "temperature"}
    units = {"activity": "%", "vram": "GiB", "power": "W", "temperature": "°C"}
    for name in charts.CHARTS:
        fig = figs[name]
        assert fig["data"] == []
        layout = fig["layout"]
        assert f"({units[name]})" in layout["title"]["text"]
        assert f"({units[name]})" in layout["yaxis"]["title"]["text"]
        assert layout["xaxis"]["type"] == "date" and layout["xaxis"]["title"]["text"] == "time (Europe/Paris)"
        assert layout["colorway"] == list(charts.PALETTE)  # consistent colors
        assert layout["hovermode"] == "closest" and layout["showlegend"] is False  # legend: a table on the page
    assert "per partition" in figs["activity"]["layout"]["title"]["text"]
    assert "Hotspot" in figs["temperature"]["layout"]["title"]["text"]
    assert figs["heatmap"]["data"][0]["type"] == "heatmap" and figs["heatmap"]["data"][0]["zmax"] == 100
    json.dumps(figs)  # JSON-safe for json_script


def test_threshold_lines():
    def lines(fig):  # type: ignore[no-untyped-def]
        return [(s["y0"], s["label"]["text"]) for s in fig["layout"]["shapes"] if s["type"] == "line"]

    assert lines(charts.activity_figure()) == [(90.0, "busy 90 %")]
    assert lines(charts.temperature_figure()) == [(95.0, "limit 95 °C")]
    assert lines(charts.vram_figure(total_gib=24.0)) == [(24.0, "VRAM total 24 GiB")]
    fleet = charts.figures(level="node")
    assert "% of total" in fleet["vram"]["layout"]["title"]["text"] and lines(fleet["vram"]) == [(90.0, "90 %")]
    assert "per node" in fleet["activity"]["layout"]["title"]["text"]


def test_only_the_activity_chart_says_derived():
    assert "derived from per-XCP busy" in charts.activity_figure()["layout"]["title"]["text"]
    for fig in (charts.vram_figure(), charts.vram_figure(percent=True), charts.power_figure()):
        assert "derived" not in json.dumps(fig)


def test_figures_are_fresh_copies():
    a = charts.figures()
    a["activity"]["data"].append({"x": [1]})
    assert charts.figures()["activity"]["data"] == []


def test_colors_cycle_through_the_palette():
    assert charts.color_for(0) == charts.PALETTE[0]
    assert charts.color_for(len(charts.PALETTE) + 2) == charts.PALETTE[2]
    assert len(set(charts.PALETTE)) == len(charts.PALETTE)
    trace = charts.empty_trace("emu gpu0", charts.color_for(1), key="emu|0")
    assert trace["x"] == [] and trace["y"] == [] and trace["line"]["color"] == charts.PALETTE[1]
    assert trace["name"] == "emu gpu0" and trace["meta"] == {"key": "emu|0"}


def test_latest_rows_in_display_units():
    rows = charts.latest_rows({"b-node": snapshot("b-node", 990.0), "emu-node-1": snapshot()}, now=1001.5)
    assert [r["name"] for r in rows] == [
        "b-node gpu0/p0", "b-node gpu0/p1", "b-node gpu1/p0",
        "emu-node-1 gpu0/p0", "emu-node-1 gpu0/p1", "emu-node-1 gpu1/p0",
    ]  # a row's VRAM is measured: "(derived)" marks its activity cell only
    assert [r["derived"] for r in rows[3:]] == [True, True, False]
    first = rows[3]
    assert first["vram_used_gib"] == 2.0 and first["vram_total_gib"] == 24.0
    assert first["gfx_activity"] == 80.0 and first["power_w"] == 512.0 and first["temperature_c"] == 71.0
    assert first["age_s"] == 1.5 and rows[0]["age_s"] == 11.5
    assert [r["gpu_rows"] for r in rows[3:]] == [2, 0, 1]  # GPU figures span their partitions
    assert rows[4]["vram_used_gib"] is None and rows[5]["gfx_activity"] is None
    assert charts.latest_rows({}) == []
