"""The overview at fleet scale: free partitions counted by GPU model and size, and telemetry
read from the nodes' summaries, give the numbers that listing every partition and reading
every sample gave."""

from __future__ import annotations

from dataclasses import replace

import pytest

from observability.overview import FreePartitions, PartitionFacts, snapshot_facts, summarize, summary_facts
from partitions.aggregate import node_summary
from tests.observability.test_overview import inputs
from tests.partitions.fleetsnapshots import snapshot


def free(index: int, memory_gb: float | None, gpu_model: str = "MI300X") -> PartitionFacts:
    return PartitionFacts(node="n1", gpu_index=1, index=index, gpu_model=gpu_model, memory_gb=memory_gb, holder="",
                          reserved_gb=0.0)


def test_free_partitions_counted_by_model_and_size_summarize_as_listed_one_by_one():
    held = inputs().partitions[0]
    listed = (free(0, 96.0), free(1, 96.0), free(2, 8.0), free(3, None), free(4, 24.0, "MI325X"), free(5, 24.0, "MI325X"))
    one_by_one = summarize(inputs(partitions=(held, *listed)))
    grouped = summarize(inputs(partitions=(held,), free_groups=(
        FreePartitions("MI300X", 96.0, 2), FreePartitions("MI300X", 8.0, 1), FreePartitions("MI300X", None, 1),
        FreePartitions("MI325X", 24.0, 2), FreePartitions("MI250X", 64.0, 0))))
    assert grouped == one_by_one
    assert grouped.stranded.partitions == 3 and grouped.stranded.no_profile_models == ("MI325X",)


def test_a_nodes_summary_gives_the_facts_of_its_sample():
    snap = snapshot("n1", gpus=3, partitions=4, ts=100.0)
    snap["gpus"][2]["partitions"][1]["gfx_activity"] = None
    assert summary_facts("n1", node_summary(snap), now=104.0) == snapshot_facts("n1", snap, now=104.0)


@pytest.mark.parametrize("summary", [{}, {"ts": "x", "activity": "no"}, {"ts": 1.0, "activity": [[0, True, 1.0], [0], "x"]}])
def test_malformed_summaries_read_as_old_or_empty(summary):
    facts = summary_facts("n1", summary, now=10.0)
    assert facts.activity == () and facts.age_s in (float("inf"), 9.0)


@pytest.mark.django_db
@pytest.mark.redis
def test_the_view_reads_summaries_and_no_sample_when_every_node_has_one(redis_url, monkeypatch):
    import redis

    from observability import views
    from partitions.simulation import delete_simulated_telemetry, fleet_spec, replace_simulated_nodes, write_simulated_telemetry
    from partitions.telemetry_store import summary_key

    client = redis.Redis.from_url(redis_url)
    spec = fleet_spec(nodes=3, prefix="ov-")
    replace_simulated_nodes(spec)
    write_simulated_telemetry(spec, client=client)
    samples_read: list[list[str]] = []
    real = views.read_snapshots_sync
    monkeypatch.setattr(views, "read_snapshots_sync", lambda names: samples_read.append(names) or real(names))
    try:
        gathered = views.gather()
        client.delete(summary_key("ov-0001"))  # that node's agent is of an older version: its sample, alone
        fallback = views.gather()
    finally:
        delete_simulated_telemetry("ov-", client=client)
    assert samples_read == [["ov-0001"]]
    assert gathered.snapshots is not None and len(gathered.snapshots) == 3
    assert sum(len(s.activity) for s in gathered.snapshots) == 3 * spec.partitions_per_node
    assert {replace(s, age_s=0.0) for s in fallback.snapshots or ()} == {replace(s, age_s=0.0) for s in gathered.snapshots}
    assert summarize(gathered).allocation.partitions == 3 * spec.partitions_per_node
