"""Plans over large fleets are computed by a worker: the API answers 202 with the plan row in
state planning, the task fills it in (draft, or failed with the reason); small fleets keep the
synchronous 201. Bad input is refused at once either way and stores nothing."""

from __future__ import annotations

from typing import Any

import pytest

from models.models import ModelProfile
from planning import dispatch
from planning.models import Plan
from planning.tasks import compute_plan_task
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db

LLAMA8_FP16 = ("meta-llama/Llama-3.1-8B-Instruct", "fp16")


def llama8() -> ModelProfile:
    return ModelProfile.objects.get(model__hf_id=LLAMA8_FP16[0], precision__code=LLAMA8_FP16[1], gpu_model="MI300X",
                                    context_tokens=8192, concurrent_sequences=1)


@pytest.fixture
def fleet(tmp_path, catalog):  # type: ignore[no-untyped-def]
    return [make_emulated_node(tmp_path, "emu-1", gpus=4)]


@pytest.fixture
def sent(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """Plan ids sent to the worker queue (no broker in these tests)."""
    ids: list[int] = []
    monkeypatch.setattr(dispatch, "send_compute_plan", ids.append)
    return ids


def client_page(user: Any) -> Any:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def demand_body(name: str = "chat", replicas: int = 2) -> dict[str, Any]:
    return {"demands": [{"name": name, "profile": llama8().pk, "replicas": replicas}]}


def test_a_small_fleet_gets_its_plan_at_once(api_client_for, operator, fleet, sent, settings):
    settings.PLAN_ASYNC_MIN_GPUS = 5  # the fleet has 4 GPUs
    response = api_client_for(operator).post("/api/v1/plans/", demand_body(), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["state"] == "draft" and response.json()["result"]["ok"]
    assert sent == []


def test_a_large_fleet_gets_202_and_a_plan_the_worker_fills_in(api_client_for, operator, fleet, sent, settings,
                                                                django_capture_on_commit_callbacks):
    settings.PLAN_ASYNC_MIN_GPUS = 4
    client = api_client_for(operator)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/plans/", demand_body(), format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["state"] == "planning" and body["result"] == {} and response["Location"] == body["url"]
    assert sent == [body["id"]]  # enqueued once, after the commit
    assert compute_plan_task(body["id"]) == "draft"
    done = client.get(body["url"]).json()
    assert done["state"] == "draft" and done["result"]["ok"] and done["fingerprint"]
    assert [a["deployment"] for a in done["result"]["assignments"]] == ["chat", "chat"]
    # A second delivery changes nothing.
    before = Plan.objects.get(pk=body["id"])
    assert compute_plan_task(body["id"]) == "draft"
    after = Plan.objects.get(pk=body["id"])
    assert (after.state, after.result, after.fingerprint) == (before.state, before.result, before.fingerprint)


def test_the_async_plan_is_the_plan_the_synchronous_path_makes(api_client_for, operator, fleet, sent, settings):
    client = api_client_for(operator)
    settings.PLAN_ASYNC_MIN_GPUS = 5
    direct = client.post("/api/v1/plans/", demand_body(replicas=3), format="json").json()
    settings.PLAN_ASYNC_MIN_GPUS = 0
    queued = client.post("/api/v1/plans/", demand_body(replicas=3), format="json").json()
    compute_plan_task(queued["id"])
    filled = Plan.objects.get(pk=queued["id"])
    assert filled.result["assignments"] == direct["result"]["assignments"]
    assert filled.fingerprint == direct["fingerprint"]


def test_bad_input_is_refused_at_once_and_stores_nothing(api_client_for, operator, fleet, sent, settings):
    settings.PLAN_ASYNC_MIN_GPUS = 0
    client = api_client_for(operator)
    bad_mode = client.post("/api/v1/plans/", {"nodes": [{"node": fleet[0].node.pk, "memory_mode": "NPS8"}]}, format="json")
    too_many = client.post("/api/v1/plans/", demand_body(replicas=5000), format="json")
    assert bad_mode.status_code == 400 and too_many.status_code == 400, (bad_mode.json(), too_many.json())
    assert not Plan.objects.exists() and sent == []


def test_inputs_gone_by_the_time_the_worker_runs_make_a_failed_plan(api_client_for, operator, fleet, sent, settings):
    settings.PLAN_ASYNC_MIN_GPUS = 0
    client = api_client_for(operator)
    body = client.post("/api/v1/plans/", demand_body(), format="json").json()
    Plan.objects.filter(pk=body["id"]).update(request={"demands": [{"name": "chat", "profile": 999999, "replicas": 2}]})
    assert compute_plan_task(body["id"]) == "failed"
    failed = client.get(body["url"]).json()
    assert failed["state"] == "failed" and "no longer valid" in failed["result"]["error"]
    page = client_page(operator).get(f"/plans/{body['id']}/")
    assert page.status_code == 200 and b'id="plan-failed"' in page.content


def test_a_plan_still_planning_cannot_be_applied(api_client_for, operator, fleet, sent, settings):
    settings.PLAN_ASYNC_MIN_GPUS = 0
    client = api_client_for(operator)
    body = client.post("/api/v1/plans/", demand_body(), format="json").json()
    response = client.post(f"/api/v1/plans/{body['id']}/apply/")
    assert response.status_code == 409 and "still being computed" in response.json()["message"]
    assert Plan.objects.get(pk=body["id"]).state == "planning"
    page = client_page(operator).get(f"/plans/{body['id']}/")
    assert page.status_code == 200 and b'id="plan-planning"' in page.content


def test_without_a_broker_the_plan_is_computed_in_the_request(api_client_for, operator, fleet, monkeypatch, settings,
                                                              django_capture_on_commit_callbacks):
    settings.PLAN_ASYNC_MIN_GPUS = 0

    def unreachable(plan_id: int) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(dispatch, "send_compute_plan", unreachable)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for(operator).post("/api/v1/plans/", demand_body(), format="json")
    # The commit hook that could not enqueue computed the plan itself: nothing is left planning.
    plan = Plan.objects.get(pk=response.json()["id"])
    assert plan.state == "draft" and plan.result["ok"] and plan.fingerprint


def test_a_gone_plan_is_a_noop_for_the_task(fleet):
    assert compute_plan_task(424242) == "gone"


def test_the_compose_page_opens_a_plan_still_planning(client, operator, fleet, sent, settings):
    settings.PLAN_ASYNC_MIN_GPUS = 0
    client.force_login(operator)
    response = client.post("/plans/new/", {"gpu_rows": "0", "node_rows": "0", "demand_rows": "1", "demand-0-name": "chat",
                                           "demand-0-profile": llama8().pk, "demand-0-replicas": "2"})
    plan = Plan.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/plans/{plan.pk}/")
    assert plan.state == "planning"


def test_a_replan_on_a_large_fleet_is_planned_by_the_worker_too(api_client_for, operator, fleet, sent, settings):
    client = api_client_for(operator)
    settings.PLAN_ASYNC_MIN_GPUS = 5
    first = client.post("/api/v1/plans/", demand_body(), format="json").json()
    settings.PLAN_ASYNC_MIN_GPUS = 0
    response = client.post(f"/api/v1/plans/{first['id']}/replan/")
    assert response.status_code == 202 and response.json()["state"] == "planning", response.json()
    assert Plan.objects.get(pk=first["id"]).state == "stale"
    assert compute_plan_task(response.json()["id"]) == "draft"
