"""The fleet's frame from the nodes' summaries (partitions/aggregate.py ``build_fleet_view``)
is the frame ``build_view`` makes from every partition's sample, reading the samples of only
the few nodes whose partitions it names."""

from __future__ import annotations

import pytest

from partitions.aggregate import MAX_ROWS, TOP_N, build_fleet_view, build_view, node_summary, top_nodes, triples
from tests.partitions.fleetsnapshots import fleet, snapshot


def owners_on(snapshots: dict, count: int) -> dict:
    """``count`` deployments, each on two partitions of one node (nodes spread over the fleet)."""
    names = sorted(snapshots)
    step = max(1, len(names) // count)
    out = {}
    for d in range(count):
        node = names[(d * step) % len(names)]
        out[(node, d % 8, 1)] = out[(node, (d + 3) % 8, 2)] = f"dep-{d:02d}"
    return out


@pytest.mark.parametrize(("nodes", "heatmap"), [(4, "gpu"), (30, "node"), (250, "nodes")])
def test_it_matches_the_frame_of_every_sample_reading_only_a_few(nodes, heatmap):
    snapshots = fleet(nodes)
    owners = owners_on(snapshots, 5)
    summaries = {name: node_summary(snap) for name, snap in snapshots.items()}
    wanted = top_nodes(summaries) | {node for node, _, _ in owners}
    detail = {name: snapshots[name] for name in wanted}
    hrefs = {"dep-01": "/d/1/"}

    frame = build_fleet_view(summaries, detail=detail, deployments=owners, shown_deployments=sorted(set(owners.values())),
                             deployments_total=5, deployment_hrefs=hrefs, now=2000.0, expected_nodes=nodes + 1)
    every = build_view(snapshots, deployments=owners, deployment_hrefs=hrefs, now=2000.0, expected_nodes=nodes + 1)

    assert len(wanted) <= 2 * TOP_N + 5
    assert frame["heatmap"]["level"] == heatmap
    assert frame["deployments"].pop("ranked_by") == "partitions"
    assert every["deployments"].pop("ranked_by") == "activity"
    for key in every:
        assert frame[key] == every[key], key


def test_top_nodes_name_the_nodes_of_the_fleets_busiest_and_idlest_partitions():
    snapshots = {"a": snapshot("a", seed=1), "b": snapshot("b", seed=2), "c": snapshot("c", seed=3)}
    for name, activity in (("a", 50.0), ("b", 100.0), ("c", 0.0)):  # b: every busiest partition, c: every idlest
        for g in snapshots[name]["gpus"]:
            for p in g["partitions"]:
                p["gfx_activity"] = activity
    assert top_nodes({n: node_summary(s) for n, s in snapshots.items()}) == {"b", "c"}


def test_a_node_summary_carries_exact_sums_its_busiest_idlest_and_every_partitions_activity():
    snap = snapshot("n1", gpus=2, partitions=2)
    snap["gpus"][1]["partitions"][1]["gfx_activity"] = None  # N/A on one partition
    summary = node_summary(snap, top_n=2)
    assert summary["measured"] == 3 and summary["activity_sum"] == 0.0 + 7.0 + 11.0
    assert triples(summary["activity"]) == [(0, 0, 0.0), (0, 1, 7.0), (1, 0, 11.0), (1, 1, None)]
    assert triples(summary["idlest"]) == [(0, 0, 0.0), (0, 1, 7.0)]
    assert triples(summary["busiest"]) == [(1, 0, 11.0), (0, 1, 7.0)]
    assert "top" not in summary and [row[0] for row in summary["gpus"]] == [0, 1]


def test_malformed_triples_are_skipped():
    assert triples("x") == [] and triples([0, 1]) == []
    assert triples([0, True, 5.0, 1, 2, "x", 3]) == [(1, 2, None)]


def test_a_summary_without_exact_sums_falls_back_to_its_mean():
    snapshots = fleet(4)
    summaries = {n: node_summary(s) for n, s in snapshots.items()}
    for s in summaries.values():
        del s["activity_sum"], s["measured"]
    frame = build_fleet_view(summaries, detail={}, deployments={}, shown_deployments=[], deployments_total=0, now=0.0)
    assert frame["counts"]["partitions"] == 4 * 64 > MAX_ROWS
    assert frame["fleet"]["activity_mean"] == build_view(snapshots, now=0.0)["fleet"]["activity_mean"]
    assert frame["top_busy"] == [] and frame["deployments"]["items"] == []
