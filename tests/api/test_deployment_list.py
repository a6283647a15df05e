"""The deployments list's read path (values() rows, workloads through the serializer's own
function) answers exactly the JSON DeploymentSerializer gives, for deployments in every shape:
bound by placement, simulated and running with copies, pinned, stopped, moving, with filters."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from models.models import ModelProfile
from partitions.models import Node
from planning.services import DemandSpec
from serving.models import Deployment, ReplicaMove
from serving.services import create_deployment, stop_deployment
from serving.simulation import simulate_fleet

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def profile(hf_id: str, precision: str) -> ModelProfile:
    return ModelProfile.objects.get(model__hf_id=hf_id, precision__code=precision, gpu_model="MI300X",
                                    context_tokens=8192, concurrent_sequences=1)


@pytest.fixture
def deployments(redis_url, catalog):  # type: ignore[no-untyped-def]
    simulate_fleet(nodes=2, gpus_per_node=4, compute_mode="QPX", occupancy=0.25)
    qwen = profile("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "fp16")
    placed = create_deployment(spec=DemandSpec(name="placed", profile=qwen, replicas=3, spread=True))
    node = Node.objects.get(name="sim-0001")
    create_deployment(spec=DemandSpec(name="pinned", profile=qwen, replicas=1, pin_node=node, pin_gpu_index=3))
    gone = create_deployment(spec=DemandSpec(name="gone", profile=qwen, replicas=1))
    stop_deployment(deployment=gone, reason="test")
    ReplicaMove.objects.create(deployment=placed, replica=0, strategy="make_before_break", state="starting",
                               source=[{"node": "sim-0000", "gpu_index": 0, "partition_index": 1}], target=[], message="m")
    return Deployment.objects.all()


@pytest.mark.parametrize("query", [{}, {"state": "running"}, {"node": "sim-0001"}, {"ordering": "name"}, {"limit": 3, "offset": 2}])
def test_each_row_of_the_list_is_the_serializers_json(api_client_for, viewer, deployments, query):
    client = api_client_for(viewer)
    body = client.get("/api/v1/deployments/", query).json()
    assert body["results"]
    for row in body["results"]:
        serialized = client.get(f"/api/v1/deployments/{row['id']}/").json()
        assert json.dumps(row) == json.dumps(serialized), row["name"]


def test_the_list_has_every_kind_of_deployment(api_client_for, viewer, deployments):
    rows = {r["name"]: r for r in api_client_for(viewer).get("/api/v1/deployments/", {"limit": 1000}).json()["results"]}
    assert rows["placed"]["moves"] and len(rows["placed"]["workloads"]) == 3
    assert rows["pinned"]["pin_node"] == "sim-0001" and rows["gone"]["state"] == "stopped" and not rows["gone"]["slots"]
    simulated = rows["sim-d00000"]
    assert simulated["copies"] and simulated["emulated"] and simulated["state"] == "running"


@pytest.mark.skipif(connection.vendor != "sqlite", reason="counts SQLite VM steps; PostgreSQL plans tiny tables as seq scans")
def test_a_deep_cursor_page_of_deployments_costs_what_the_first_page_costs(redis_url, catalog, api_client_for, viewer):
    """Newest first (created_at, id) on an index: the last page's rows are a seek, not a sort
    of every deployment, and the cursor pages list the same rows as offset pages."""
    from aimconsole.api import encode_cursor
    from tests.partitions.test_list_fast_paths import _page_query_work

    simulate_fleet(nodes=25, gpus_per_node=8, compute_mode="CPX", occupancy=0.5, telemetry=False)
    client = api_client_for(viewer)
    url = "/api/v1/deployments/"
    total = client.get(url, {"limit": 1}).json()["count"]
    assert total >= 500

    def cursor_after(offset: int) -> str:
        row = client.get(url, {"limit": 1, "offset": offset}).json()["results"][0]
        return encode_cursor([row["created_at"], row["id"]])

    first = client.get(url, {"limit": 20}).json()
    assert "cursor=" in first["next"] and "offset=" not in first["next"]
    assert client.get(first["next"]).json()["results"] == client.get(url, {"limit": 20, "offset": 20}).json()["results"]
    early = _page_query_work(client, f"{url}?limit=20&cursor={cursor_after(20)}")
    deep = _page_query_work(client, f"{url}?limit=20&cursor={cursor_after(total - 21)}")  # the last 20
    by_offset = _page_query_work(client, f"{url}?limit=20&offset={total - 20}")
    assert client.get(url, {"limit": 20, "cursor": cursor_after(total - 21)}).json()["results"] == client.get(
        url, {"limit": 20, "offset": total - 20}).json()["results"]
    assert deep <= early * 1.1, (early, deep, by_offset)
    assert by_offset > deep * 2, (early, deep, by_offset)
