"""/api/v1/telemetry/: a page of nodes with each one's latest snapshot, filtered in the
database, with only the page's snapshots read from Redis."""

from __future__ import annotations

import pytest
import redis

from partitions.models import GPU, Node
from partitions.simulation import fleet_spec, replace_simulated_nodes, write_simulated_telemetry
from partitions.telemetry_store import snapshot_key

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture
def fleet(redis_url):  # type: ignore[no-untyped-def]
    spec = fleet_spec(nodes=6, gpus_per_node=2, prefix="tel-")
    replace_simulated_nodes(spec)
    write_simulated_telemetry(spec)
    redis.Redis.from_url(redis_url).delete(snapshot_key("tel-0005"))  # its agent is down
    GPU.objects.filter(node__name="tel-0001").update(gpu_model="MI325X", compute_mode="SPX")
    Node.objects.filter(name="tel-0002").update(memory_mode="NPS4")
    return spec


def names(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.content
    return [row["node"] for row in response.json()["results"]]


@pytest.mark.parametrize(("query", "expected"), [
    ({}, ["tel-0000", "tel-0001", "tel-0002", "tel-0003", "tel-0004", "tel-0005"]),
    ({"node": "tel-0003,tel-0001"}, ["tel-0001", "tel-0003"]),
    ({"node_prefix": "tel-000"}, ["tel-0000", "tel-0001", "tel-0002", "tel-0003", "tel-0004", "tel-0005"]),
    ({"gpu_model": "MI325X"}, ["tel-0001"]),
    ({"compute_mode": "SPX"}, ["tel-0001"]),
    ({"memory_mode": "NPS4"}, ["tel-0002"]),
    ({"emulated": "false"}, []),
    ({"backend": "simulated", "limit": 2, "offset": 4}, ["tel-0004", "tel-0005"]),
])
def test_it_filters_in_the_database(api_client_for, viewer, fleet, query, expected):
    assert names(api_client_for(viewer).get("/api/v1/telemetry/", query)) == expected


def test_a_node_without_a_live_sample_is_listed_as_not_live(api_client_for, viewer, fleet):
    rows = {r["node"]: r for r in api_client_for(viewer).get("/api/v1/telemetry/").json()["results"]}
    assert rows["tel-0005"] == {"node": "tel-0005", "emulated": True, "live": False, "ts": None, "age_s": None,
                                "interval_s": None, "gpus": []}
    live = rows["tel-0000"]
    assert live["live"] and live["emulated"] and len(live["gpus"]) == 2 and live["age_s"] >= 0


def test_gpu_index_keeps_one_gpu_of_each_snapshot(api_client_for, viewer, fleet):
    rows = api_client_for(viewer).get("/api/v1/telemetry/", {"gpu_index": 1, "node": "tel-0000"}).json()["results"]
    assert [g["index"] for g in rows[0]["gpus"]] == [1]
    assert api_client_for(viewer).get("/api/v1/telemetry/", {"gpu_index": "x"}).status_code == 400


def test_a_page_reads_only_its_own_snapshots(api_client_for, viewer, fleet, monkeypatch):
    asked: list[list[str]] = []
    from partitions import telemetry_store

    real = telemetry_store.read_snapshots_sync
    monkeypatch.setattr(telemetry_store, "read_snapshots_sync", lambda names: asked.append(names) or real(names))
    body = api_client_for(viewer).get("/api/v1/telemetry/", {"limit": 2}).json()
    assert asked == [["tel-0000", "tel-0001"]] and body["count"] == 6
    second = api_client_for(viewer).get(body["next"]).json()
    assert asked[-1] == ["tel-0002", "tel-0003"] and [r["node"] for r in second["results"]] == asked[-1]
