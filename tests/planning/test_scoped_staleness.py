"""Plan staleness scoped to what the plan touches, one-click re-plan, spread modes in the API."""

from __future__ import annotations

import pytest
from django.urls import reverse

from partitions.models import GPU, Node
from planning.models import Plan
from planning.services import is_stale
from tests.planning.test_services import LLAMA8_FP16, profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows(db):  # type: ignore[no-untyped-def]
    nodes = []
    for name in ("n1", "n2"):
        node = Node.objects.create(name=name, backend=Node.Backend.SIMULATED, emulated=True, memory_mode="NPS1")
        for i in range(2):
            GPU.objects.create(node=node, index=i, gpu_model="MI300X", compute_mode="SPX", memory_mode="NPS1",
                               health=GPU.Health.HEALTHY)
        nodes.append(node)
    return nodes


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)


def make_plan(client, body) -> Plan:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/plans/", body, format="json")
    assert response.status_code == 201, response.content
    return Plan.objects.get(pk=response.json()["id"])


def test_a_change_on_an_untouched_node_leaves_the_plan_fresh(rows, api_client_for, operator):
    client = api_client_for(operator)
    plan = make_plan(client, {"gpus": [{"node": "n1", "gpu_index": 0, "compute_mode": "CPX"}]})
    GPU.objects.filter(node__name="n2", index=1).update(compute_mode="CPX", health=GPU.Health.UNHEALTHY)
    Node.objects.filter(name="n2").update(memory_mode="NPS4")
    assert not is_stale(plan)
    response = client.post(f"/api/v1/plans/{plan.pk}/apply/")
    assert response.status_code == 202, response.content


def test_a_change_on_a_touched_gpu_makes_it_stale(rows, api_client_for, operator):
    client = api_client_for(operator)
    plan = make_plan(client, {"gpus": [{"node": "n1", "gpu_index": 0, "compute_mode": "CPX"}]})
    GPU.objects.filter(node__name="n1", index=0).update(health=GPU.Health.UNHEALTHY)
    assert is_stale(plan)
    assert client.post(f"/api/v1/plans/{plan.pk}/apply/").status_code == 409


def test_a_plan_is_stale_when_a_gpu_it_places_on_changes_not_when_another_does(rows, catalog, api_client_for, operator):
    client = api_client_for(operator)
    plan = make_plan(client, {"demands": [{"name": "small", "profile": profile(*LLAMA8_FP16).pk, "replicas": 1}]})
    (slot,) = plan.result["assignments"][0]["slots"]
    other = GPU.objects.exclude(node__name=slot["node"], index=slot["gpu_index"]).first()
    GPU.objects.filter(pk=other.pk).update(health=GPU.Health.UNHEALTHY)
    assert not is_stale(plan)
    GPU.objects.filter(node__name=slot["node"], index=slot["gpu_index"]).update(compute_mode="QPX")
    assert is_stale(plan)


def test_the_stale_plan_page_drops_feasible_and_replan_makes_a_new_plan_with_the_same_inputs(rows, client, operator):
    client.force_login(operator)
    from rest_framework.test import APIClient
    api = APIClient()
    api.force_authenticate(operator)
    plan = make_plan(api, {"gpus": [{"node": "n1", "gpu_index": 0, "compute_mode": "CPX"}]})
    html = client.get(reverse("planning:plan-detail", args=[plan.pk])).content.decode()
    assert "feasible" in html and "stale — re-plan" not in html
    GPU.objects.filter(node__name="n1", index=0).update(compute_mode="DPX")
    html = client.get(reverse("planning:plan-detail", args=[plan.pk])).content.decode()
    assert "stale — re-plan" in html and 'class="badge ok">feasible' not in html and 'id="apply-plan"' not in html
    listing = client.get(reverse("planning:plan-list")).content.decode()
    assert "stale — re-plan" in listing
    response = client.post(reverse("planning:plan-replan", args=[plan.pk]))
    new = Plan.objects.exclude(pk=plan.pk).get()
    assert response.status_code == 302 and response["Location"] == reverse("planning:plan-detail", args=[new.pk])
    assert new.request == plan.request
    assert new.result["gpu_changes"][0]["from_compute"] == "DPX"
    plan.refresh_from_db()
    assert plan.state == Plan.State.STALE


def test_spread_modes_are_accepted_and_true_means_hard(rows, catalog, api_client_for, operator):
    client = api_client_for(operator)
    pk = profile(*LLAMA8_FP16).pk
    for given, kept in ((True, "hard"), (False, "none"), ("soft", "soft"), ("hard", "hard")):
        plan = make_plan(client, {"demands": [{"name": "s", "profile": pk, "replicas": 6, "spread": given}]})
        assert plan.request["demands"][0]["spread"] == kept
        placed = len(plan.result["assignments"])
        assert placed == (4 if kept == "hard" else 6), (given, plan.result["unplaced_summary"])
    response = client.post("/api/v1/plans/", {"demands": [{"name": "s", "profile": pk, "replicas": 1, "spread": "wide"}]},
                           format="json")
    assert response.status_code == 400 and "spread" in str(response.json())
