"""The dashboard's bounded view (partitions/aggregate.py, pure): aggregates, top-N, heatmap
bucketing, short labels, and a payload that does not grow with the fleet."""

from __future__ import annotations

import json

from partitions.aggregate import MAX_ROWS, Scope, build_view, short_names
from tests.partitions.fleetsnapshots import fleet, snapshot


def test_node_aggregates_are_mean_and_max_of_their_partitions_and_sums_of_their_gpus():
    snaps = {"n1": snapshot("n1", gpus=2, partitions=2)}
    parts = [p for g in snaps["n1"]["gpus"] for p in g["partitions"]]
    activities = [p["gfx_activity"] for p in parts]
    view = build_view(snaps, now=1001.0)
    (node,) = view["series"]["items"]
    assert view["series"]["level"] == "node" and node["key"] == "n1" and node["href"] == "?node=n1"
    assert node["activity_mean"] == round(sum(activities) / 4, 1) and node["activity_max"] == max(activities)
    assert node["vram_used_gib"] == 1 + 2 + 1 + 2 and node["vram_total_gib"] == 4 * 24
    assert node["vram_pct"] == round(100 * 6 / 96, 1)
    assert node["power_w"] == 300.0 + 301.0 and node["temperature_c"] == 51.0
    assert view["counts"] == {"nodes": 1, "expected_nodes": 1, "gpus": 2, "partitions": 4}


def test_node_view_has_one_line_per_gpu_and_gpu_view_one_per_partition():
    snaps = fleet(3, gpus=2, partitions=4)
    node = build_view(snaps, scope=Scope(node="sim-node-2"), now=0)
    assert node["series"]["level"] == "gpu"
    assert [s["key"] for s in node["series"]["items"]] == ["sim-node-2|0", "sim-node-2|1"]
    gpu = build_view(snaps, scope=Scope(node="sim-node-2", gpu=1), now=0)
    assert gpu["series"]["level"] == "partition"
    assert [s["label"] for s in gpu["series"]["items"]] == [f"sim-node-2 g1/p{p}" for p in range(4)]
    assert all(s["href"] == "?node=sim-node-2&gpu=1" for s in gpu["series"]["items"])
    assert gpu["counts"]["partitions"] == 4


def test_top_busy_and_idle_are_the_ten_extremes_of_all_partitions():
    snaps = fleet(4)
    every = sorted(((p["gfx_activity"], n, g["index"], p["index"]) for n, s in snaps.items()
                    for g in s["gpus"] for p in g["partitions"]))
    view = build_view(snaps, now=0)
    assert len(view["top_busy"]) == 10 and len(view["top_idle"]) == 10
    assert [t["activity"] for t in view["top_busy"]] == [a for a, *_ in sorted(every, key=lambda e: -e[0])[:10]]
    assert [t["activity"] for t in view["top_idle"]] == [a for a, *_ in every[:10]]
    top = view["top_busy"][0]
    assert top["href"] == f"?node={top['node']}&gpu={top['gpu']}" and top["label"].startswith(top["node"])


def test_heatmap_rows_are_partitions_then_gpus_then_nodes_then_groups_of_nodes():
    assert build_view(fleet(3), now=0)["heatmap"]["level"] == "partition"  # 192 partitions
    gpus = build_view(fleet(20), now=0)["heatmap"]  # 1280 partitions, 160 GPUs
    assert gpus["level"] == "gpu" and len(gpus["labels"]) == 160 and gpus["hrefs"][9] == "?node=sim-node-10&gpu=1"
    nodes = build_view(fleet(100), now=0)["heatmap"]
    assert nodes["level"] == "node" and len(nodes["values"]) == 100 and "nodes" in nodes["rows_are"]
    groups = build_view(fleet(450, gpus=1, partitions=1), now=0)["heatmap"]
    assert groups["level"] == "nodes" and len(groups["values"]) <= MAX_ROWS


def test_series_keep_the_busiest_twelve_nodes_and_say_how_many_there_are():
    view = build_view(fleet(30, gpus=1, partitions=2), now=0)
    assert view["series"]["total"] == 30 and len(view["series"]["items"]) == 12
    kept = [s["activity_mean"] for s in view["series"]["items"]]
    dropped = [s for s in build_view(fleet(30, gpus=1, partitions=2), now=0, max_series=30)["series"]["items"]
               if s["activity_mean"] not in kept]
    assert all(d["activity_mean"] <= min(kept) for d in dropped)


def test_deployment_aggregates_and_deployment_scope():
    snaps = fleet(2, gpus=2, partitions=2)
    owners = {("sim-node-1", 0, 0): "llama", ("sim-node-1", 0, 1): "llama", ("sim-node-2", 1, 1): "llama",
              ("sim-node-2", 0, 0): "qwen"}
    view = build_view(snaps, deployments=owners, now=0)
    rows = {d["key"]: d for d in view["deployments"]["items"]}
    assert set(rows) == {"llama", "qwen"} and rows["llama"]["partitions"] == 3 and rows["llama"]["nodes"] == 2
    assert rows["llama"]["vram_used_gib"] == 1 + 2 + 2
    scoped = build_view(snaps, deployments=owners, scope=Scope(deployment="llama"), now=0)
    assert scoped["series"]["level"] == "partition" and scoped["counts"]["partitions"] == 3
    assert {s["key"] for s in scoped["series"]["items"]} == {"sim-node-1|0|0", "sim-node-1|0|1", "sim-node-2|1|1"}
    assert {t["deployment"] for t in scoped["top_busy"]} == {"llama"}


def test_short_names_are_unambiguous():
    names = short_names(["n1", "emu-node-1", "rack12-chassis4-node-0007", "rack12-chassis9-node-0007",
                         "datacenter-east-node-0001"])
    assert names["n1"] == "n1" and names["emu-node-1"] == "emu-node-1"
    assert names["datacenter-east-node-0001"] == "datace…e-0001"
    # two long names sharing the short form keep their full names
    assert names["rack12-chassis4-node-0007"] == "rack12-chassis4-node-0007"
    assert len(set(names.values())) == len(names)


def test_missing_values_and_junk_are_skipped_not_crashed_on():
    snaps = {"n1": {"node": "n1", "ts": 5, "gpus": [{"index": 0, "power_w": None, "partitions": [
        {"index": 0, "gfx_activity": None, "vram_used_mb": "x"}, "junk"]}, {"index": "bad"}]}, "n2": "junk"}
    view = build_view(snaps, now=0)  # type: ignore[arg-type]
    assert view["counts"]["partitions"] == 1 and view["top_busy"] == []
    assert view["series"]["items"][0]["activity_mean"] is None


def test_payload_is_bounded_whatever_the_fleet_size():
    small = len(json.dumps(build_view(fleet(2), now=0)))
    large = len(json.dumps(build_view(fleet(100), now=0)))
    huge = len(json.dumps(build_view(fleet(1000, gpus=8, partitions=1), now=0)))
    assert large < 2 * small and huge < 2 * small, (small, large, huge)
    assert large < 40_000
