"""The compose page (/plans/new/): rows of GPU, node and demand changes, previewed through the
API's serializer and service; errors next to their row; rows added without JavaScript."""

from __future__ import annotations

import pytest
from django.urls import reverse

from partitions.models import GPU, Node
from planning.models import Plan
from tests.planning.test_services import LLAMA8_FP16, profile

pytestmark = pytest.mark.django_db
URL = "/plans/new/"


@pytest.fixture
def rows(db):  # type: ignore[no-untyped-def]
    for name in ("n1", "n2"):
        node = Node.objects.create(name=name, backend=Node.Backend.SIMULATED, emulated=True, memory_mode="NPS1")
        for i in range(2):
            GPU.objects.create(node=node, index=i, gpu_model="MI300X", compute_mode="SPX", memory_mode="NPS1",
                               health=GPU.Health.HEALTHY)


def test_the_url_and_the_empty_form(rows, catalog, client, operator):
    assert reverse("planning:plan-compose") == URL
    client.force_login(operator)
    html = client.get(URL).content.decode()
    assert 'name="demand-0-profile"' in html and "<optgroup" in html and 'id="row-template-gpu"' in html
    assert 'value="n1/0"' in html  # the GPU picker


def test_add_a_row_without_javascript_keeps_what_was_typed(rows, client, operator):
    client.force_login(operator)
    response = client.post(URL, {"gpu_rows": "1", "gpu-0-gpu": "n1/0", "gpu-0-compute_mode": "CPX", "demand_rows": "0",
                                 "add": "gpu"})
    html = response.content.decode()
    assert response.status_code == 200 and Plan.objects.count() == 0
    assert 'name="gpu-1-gpu"' in html and 'value="n1/0"' in html and 'name="gpu_rows" value="2"' in html


def test_preview_plans_gpus_nodes_and_demands_together(rows, catalog, client, operator):
    client.force_login(operator)
    response = client.post(URL, {
        "gpu_rows": "1", "gpu-0-gpu": "n1/1", "gpu-0-compute_mode": "CPX",
        "node_rows": "1", "node-0-node": "n2", "node-0-memory_mode": "NPS4", "node-0-compute_mode": "CPX",
        "demand_rows": "2", "demand-0-name": "small", "demand-0-profile": str(profile(*LLAMA8_FP16).pk),
        "demand-0-replicas": "3", "demand-0-spread": "soft", "demand-1-name": "", "demand-1-profile": "",
        "preview": "1"})
    html = response.content.decode()
    assert response.status_code == 200, html
    plan = Plan.objects.get()
    assert plan.request["gpus"] == [{"node": "n1", "gpu_index": 1, "compute_mode": "CPX"}]
    assert plan.request["nodes"][0]["memory_mode"] == "NPS4"
    assert plan.request["demands"][0]["spread"] == "soft" and plan.request["demands"][0]["replicas"] == 3
    assert f"What-if plan #{plan.pk}" in html and "NPS1 → NPS4" in html
    assert len(plan.result["assignments"]) == 3


def test_an_invalid_row_shows_its_error_next_to_it_and_plans_nothing(rows, catalog, client, operator):
    client.force_login(operator)
    response = client.post(URL, {
        "gpu_rows": "2", "gpu-0-gpu": "n1/0", "gpu-0-compute_mode": "CPX", "gpu-1-gpu": "n1/7", "gpu-1-compute_mode": "CPX",
        "demand_rows": "1", "demand-0-name": "bad name", "demand-0-profile": str(profile(*LLAMA8_FP16).pk),
        "demand-0-replicas": "100000", "preview": "1"})
    html = response.content.decode()
    assert response.status_code == 400 and Plan.objects.count() == 0
    row = html.split('data-row="gpu-1"')[1].split('data-row=')[0]
    assert "n1 has no GPU 7" in row
    assert "n1 has no GPU" not in html.split('data-row="gpu-0"')[1].split('data-row="gpu-1"')[0]
    demand = html.split('data-row="demand-0"')[1]
    assert "name:" in demand and "replicas:" in demand


def test_a_planner_refusal_lands_on_its_row(rows, client, operator):
    client.force_login(operator)
    response = client.post(URL, {"gpu_rows": "1", "gpu-0-gpu": "n1/0", "gpu-0-compute_mode": "SPX", "node_rows": "1",
                                 "node-0-node": "n1", "node-0-memory_mode": "NPS4", "preview": "1", "demand_rows": "0"})
    html = response.content.decode()
    assert response.status_code == 400
    assert "cannot run SPX under NPS4" in html.split('data-row="node-0"')[1] or \
        "cannot run SPX under NPS4" in html.split('data-row="gpu-0"')[1]


def test_row_counts_are_bounded(rows, client, operator):
    client.force_login(operator)
    response = client.post(URL, {"demand_rows": "99999999", "gpu_rows": "-3", "add": "demand"})
    assert response.status_code == 200
    assert response.content.decode().count('name="demand-') <= 100 * 6 + 6


def test_viewers_may_look_but_not_plan(rows, client, viewer):
    client.force_login(viewer)
    assert client.get(URL).status_code == 200
    assert client.post(URL, {"preview": "1"}).status_code == 403
