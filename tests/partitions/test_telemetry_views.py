"""The telemetry views' shapes (partitions/telemetry_views.py): targets, the agent's node
summary, the fleet view merged from summaries, GPU and deployment slices. No database."""

from __future__ import annotations

from typing import Any

import pytest

from partitions.telemetry_views import (
    FLEET,
    GPU_COLUMNS,
    InvalidTarget,
    Target,
    deployment_view,
    fleet_view,
    gpu_view,
    parse_target,
    parse_targets,
    summarize_node,
)


def snapshot(node: str, activities: list[list[float | None]], *, ts: float = 100.0, emulated: bool = True) -> dict[str, Any]:
    """A snapshot in partitions/telemetry.py's shape: ``activities[g][p]`` per partition."""
    return {
        "node": node, "ts": ts, "interval_s": 1.0, "emulated": emulated,
        "gpus": [{"index": g, "power_w": 500.0 + g, "temperature_c": 50.0 + g, "mem_temperature_c": 40.0,
                  "gfx_activity": None, "ecc_uncorrectable": 0,
                  "partitions": [{"index": p, "logical_index": g * len(parts) + p, "gfx_activity": a,
                                  "derived": len(parts) > 1, "vram_used_mb": 1000, "vram_total_mb": 24000}
                                 for p, a in enumerate(parts)]}
                 for g, parts in enumerate(activities)],
    }


@pytest.mark.parametrize(("raw", "expected"), [
    ({}, FLEET),
    ({"node": "n1"}, Target("node", node="n1")),
    ({"node": "n1", "gpu": "3"}, Target("gpu", node="n1", gpu=3)),
    ({"node": "n1", "gpu": 0}, Target("gpu", node="n1", gpu=0)),
    ({"deployment": "chat"}, Target("deployment", deployment="chat")),
])
def test_targets_are_read_from_a_query_or_a_message(raw: dict[str, Any], expected: Target) -> None:
    assert parse_target(raw) == expected


@pytest.mark.parametrize("raw", [
    {"gpu": "1"},  # a GPU needs its node
    {"node": "n1", "gpu": "x"},
    {"node": "n1", "gpu": -1},
    {"node": "n1", "gpu": True},
    {"node": ""},
    {"node": 7},
    {"deployment": "chat", "node": "n1"},
    {"view": "fleet"},  # unknown key
    ["node", "n1"],
])
def test_malformed_targets_are_refused(raw: Any) -> None:
    with pytest.raises(InvalidTarget):
        parse_target(raw)


def test_a_subscription_lists_targets_once_and_is_bounded() -> None:
    assert parse_targets([{}, {"node": "a"}, {"node": "a"}], max_targets=3) == [FLEET, Target("node", node="a")]
    assert parse_targets([], max_targets=3) == []  # nothing on screen: nothing to send
    for bad in (None, "fleet", {"node": "a"}, [{}] * 4):
        with pytest.raises(InvalidTarget):
            parse_targets(bad, max_targets=3)


def test_a_node_summary_aggregates_per_node_and_gpu_and_keeps_its_busiest_partitions() -> None:
    summary = summarize_node(snapshot("n1", [[10.0, 30.0], [90.0, None]]), top_n=2)
    assert summary["partitions"] == 4
    assert summary["activity_mean"] == pytest.approx(43.3) and summary["activity_max"] == 90.0
    assert summary["vram_used_mb"] == 4000 and summary["vram_total_mb"] == 96000
    assert summary["power_w"] == 1001.0 and summary["temperature_c"] == 51.0
    rows = [dict(zip(GPU_COLUMNS, row)) for row in summary["gpus"]]
    assert [(r["index"], r["partitions"], r["activity_mean"], r["activity_max"]) for r in rows] == [(0, 2, 20.0, 30.0), (1, 2, 90.0, 90.0)]
    assert [(t["gpu"], t["partition"], t["activity"]) for t in summary["top"]] == [(1, 0, 90.0), (0, 1, 30.0)]
    assert summary["derived"] is True


def test_a_summary_of_a_malformed_snapshot_is_empty_not_an_error() -> None:
    summary = summarize_node({"node": "n1", "gpus": [{"index": "0"}, "x", {"index": 1, "partitions": [{"gfx_activity": 5}]}]})
    assert summary["partitions"] == 0 and summary["activity_mean"] is None and summary["top"] == []


def test_the_fleet_view_holds_per_node_and_gpu_figures_and_the_fleet_top_never_every_partition() -> None:
    summaries = {name: summarize_node(snapshot(name, [[float(i * 10 + p) for p in range(8)] for _ in range(8)]), top_n=3)
                 for i, name in enumerate(["a", "b", "c"])}
    view = fleet_view(summaries, now=101.0, max_age_s=30, top_n=3)
    assert view["counts"] == {"nodes": 3, "stale": 0, "partitions": 192, "gpus": 24}
    assert set(view["nodes"]) == {"a", "b", "c"} and all(len(n["gpus"]) == 8 for n in view["nodes"].values())
    assert all("top" not in n for n in view["nodes"].values())
    # the fleet's busiest from the nodes' own top lists equal the ranking of every partition
    assert [(t["node"], t["activity"]) for t in view["top"]] == [("c", 27.0), ("c", 27.0), ("c", 27.0)]
    assert view["fleet"]["activity_mean"] == pytest.approx(13.5)
    # partitions are counted, never listed: a node is scalars and GPU rows of scalars
    for node in view["nodes"].values():
        assert isinstance(node["partitions"], int)
        assert all(not isinstance(v, list | dict) for k, v in node.items() if k != "gpus")
        assert all(not isinstance(cell, list | dict) for row in node["gpus"] for cell in row)


def test_the_fleet_top_is_the_true_top_across_nodes() -> None:
    summaries = {"a": summarize_node(snapshot("a", [[95.0, 1.0], [80.0, 2.0]]), top_n=2),
                 "b": summarize_node(snapshot("b", [[90.0, 85.0]]), top_n=2)}
    top = fleet_view(summaries, now=100.0, max_age_s=30, top_n=3)["top"]
    assert [(t["node"], t["gpu"], t["partition"]) for t in top] == [("a", 0, 0), ("b", 0, 0), ("b", 0, 1)]


def test_stale_summaries_are_named_and_left_out_of_the_figures() -> None:
    summaries = {"fresh": summarize_node(snapshot("fresh", [[50.0]], ts=100.0)),
                 "old": summarize_node(snapshot("old", [[100.0]], ts=50.0)),
                 "never": summarize_node({"node": "never"})}
    view = fleet_view(summaries, now=100.0, max_age_s=30)
    assert set(view["nodes"]) == {"fresh"} and view["stale"] == ["never", "old"]
    assert view["fleet"]["activity_max"] == 50.0 and view["counts"]["stale"] == 2


def test_an_empty_fleet_has_a_view_with_nothing_in_it() -> None:
    view = fleet_view({}, now=1.0, max_age_s=30)
    assert view["nodes"] == {} and view["top"] == [] and view["fleet"]["activity_mean"] is None


def test_a_gpu_view_is_that_gpu_only() -> None:
    view = gpu_view(snapshot("n1", [[1.0], [2.0, 3.0]]), 1)
    assert view is not None and view["gpu"]["index"] == 1 and len(view["gpu"]["partitions"]) == 2
    assert view["node"] == "n1" and view["emulated"] is True
    assert gpu_view(snapshot("n1", [[1.0]]), 5) is None


def test_a_deployment_view_is_the_partitions_it_holds() -> None:
    view = deployment_view(snapshot("n1", [[1.0, 2.0], [3.0, 4.0]]), "chat", {(0, 1), (1, 0)})
    assert view is not None
    assert [(p["gpu"], p["index"], p["gfx_activity"]) for p in view["partitions"]] == [(0, 1, 2.0), (1, 0, 3.0)]
    assert deployment_view(snapshot("n1", [[1.0]]), "chat", {(3, 0)}) is None
