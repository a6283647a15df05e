"""Editing a model's sizing under running deployments (issue 13, 5): a deployment keeps the
sizing it was placed with; saving a model or profile whose new sizing no longer fits the
partitions of its running deployments warns in the admin and the API, and marks them degraded
with the numbers, until the sizing fits again."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from models.models import InferenceModel, ModelProfile
from partitions.models import Partition
from serving.models import Deployment, DeploymentSlot
from serving.services import settle_deployments
from tests.emulated_nodes import make_emulated_node
from tests.models.test_admin import _form_data

pytestmark = pytest.mark.django_db

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture
def profile(catalog):  # type: ignore[no-untyped-def]
    return ModelProfile.objects.get(model__hf_id=LLAMA, precision__code="fp16", gpu_model="MI300X",
                                    context_tokens=8192, concurrent_sequences=1)


@pytest.fixture
def running(tmp_path, profile, api_client_for, operator):  # type: ignore[no-untyped-def]
    """demo-chat, placed through the API on one partition, started, on a 24 GiB partition (a
    CPX partition of an MI300X)."""
    make_emulated_node(tmp_path, "emu-1", gpus=1)
    response = api_client_for(operator).post("/api/v1/deployments/", {"name": "demo-chat", "profile": profile.pk, "replicas": 1},
                                             format="json")
    assert response.status_code == 201, response.json()
    deployment = Deployment.objects.get(pk=response.json()["id"])
    Partition.objects.filter(slot__deployment=deployment).update(memory_gb=24.0)
    DeploymentSlot.objects.filter(deployment=deployment).update(started_at=timezone.now())
    settle_deployments()
    deployment.refresh_from_db()
    assert deployment.state == "running", deployment.state_message
    return deployment


def _etag(client, url):  # type: ignore[no-untyped-def]
    return client.get(url)["ETag"]


def test_a_deployment_keeps_the_sizing_it_was_placed_with(running, profile):
    snapshot = running.sizing_snapshot
    assert snapshot["memory_required_gb"] == pytest.approx(profile.memory_required_gb)
    assert snapshot["replica_memory_gb"] == pytest.approx(19.45, abs=0.01)
    assert (snapshot["model"], snapshot["precision"], snapshot["total_params_b"]) == (LLAMA, "fp16", 8.03)
    assert (snapshot["context_tokens"], snapshot["concurrent_sequences"], snapshot["gpus_needed"]) == (8192, 1, 1)
    InferenceModel.objects.filter(hf_id=LLAMA).update(total_params_b=16.06)
    running.refresh_from_db()
    assert running.sizing_snapshot == snapshot


def test_the_api_warns_and_marks_the_deployment_degraded_with_the_numbers(running, api_client_for, admin_user):
    client = api_client_for(admin_user)
    model = InferenceModel.objects.get(hf_id=LLAMA)
    url = f"/api/v1/models/{model.pk}/"
    response = client.patch(url, {"total_params_b": 16.06}, format="json", HTTP_IF_MATCH=_etag(client, url))
    assert response.status_code == 200, response.json()
    warnings = response.json()["warnings"]
    assert len(warnings) == 1
    assert warnings[0].startswith("1 running deployment no longer fits: demo-chat (needs 35.91 GiB")
    assert "its partitions have 24 GiB" in warnings[0]
    running.refresh_from_db()
    assert running.state == "degraded"
    assert "no longer fits its partitions" in running.state_message
    assert "needs 35.91 GiB" in running.state_message and "24 GiB" in running.state_message
    assert "placed for 19.45 GiB" in running.state_message
    # The agents' settling keeps it degraded while the sizing does not fit ...
    settle_deployments()
    running.refresh_from_db()
    assert running.state == "degraded"
    # ... and the API shows it.
    body = client.get(f"/api/v1/deployments/{running.pk}/").json()
    assert body["state"] == "degraded" and "24 GiB" in body["state_message"]
    # Undoing the edit: no warning, and running again.
    response = client.patch(url, {"total_params_b": 8.03}, format="json", HTTP_IF_MATCH=_etag(client, url))
    assert response.json()["warnings"] == []
    running.refresh_from_db()
    assert running.state == "running", running.state_message
    assert "no longer fits" not in running.state_message


def test_a_change_that_still_fits_gives_no_warning(running, api_client_for, admin_user):
    client = api_client_for(admin_user)
    model = InferenceModel.objects.get(hf_id=LLAMA)
    url = f"/api/v1/models/{model.pk}/"
    response = client.patch(url, {"total_params_b": 9.0}, format="json", HTTP_IF_MATCH=_etag(client, url))
    assert response.json()["warnings"] == []
    running.refresh_from_db()
    assert running.state == "running"


def test_the_profile_api_warns_too(running, api_client_for, admin_user):
    client = api_client_for(admin_user)
    url = f"/api/v1/profiles/{running.profile_id}/"
    # 8 concurrent sequences at 8192 tokens: 8 GiB of KV cache more.
    response = client.patch(url, {"concurrent_sequences": 8}, format="json", HTTP_IF_MATCH=_etag(client, url))
    assert response.status_code == 200, response.json()
    assert response.json()["warnings"][0].startswith("1 running deployment no longer fits: demo-chat (needs 26.")
    running.refresh_from_db()
    assert running.state == "degraded"


def test_the_admin_warns_on_save_and_the_pages_show_degraded(running, client, admin_user):
    client.force_login(admin_user)
    model = InferenceModel.objects.get(hf_id=LLAMA)
    response = client.post(f"/admin/catalog/inferencemodel/{model.pk}/change/", _form_data(model, total_params_b="16.06"))
    assert response.status_code == 302, response.content.decode()[:2000]
    shown = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    warnings = [text for level, text in shown if level == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("1 running deployment no longer fits: demo-chat (needs 35.91 GiB")
    assert "its partitions have 24 GiB" in warnings[0]
    running.refresh_from_db()
    assert running.state == "degraded"
    page = client.get(f"/deployments/{running.pk}/").content.decode()
    assert 'id="deployment-state">degraded<' in page
    assert "no longer fits its partitions" in page and "24 GiB" in page
    listing = client.get("/deployments/").content.decode()
    row = listing[listing.index(">demo-chat</a>"):]
    row = row[:row.index("</tr>")]
    assert "degraded" in row and "no longer fits" in row


def test_the_admin_profile_change_warns(running, client, admin_user, profile):
    client.force_login(admin_user)
    response = client.post(f"/admin/catalog/modelprofile/{profile.pk}/change/", {
        "model": profile.model_id, "precision": profile.precision_id, "gpu_model": "MI300X",
        "context_tokens": 8192, "concurrent_sequences": 8})
    assert response.status_code == 302, response.content.decode()[:3000]
    warnings = [str(m) for m in get_messages(response.wsgi_request) if m.level_tag == "warning"]
    assert len(warnings) == 1 and "demo-chat" in warnings[0]
    running.refresh_from_db()
    assert running.state == "degraded"


def test_a_deployment_counts_its_replicas_by_the_gpus_it_was_placed_with(running, api_client_for, admin_user):
    """Sizing that now needs two GPUs per replica does not make the agents read the replica as
    gone (and fail the deployment, freeing its partition): it stays, degraded, saying why."""
    client = api_client_for(admin_user)
    model = InferenceModel.objects.get(hf_id=LLAMA)
    url = f"/api/v1/models/{model.pk}/"
    response = client.patch(url, {"total_params_b": 120.0}, format="json", HTTP_IF_MATCH=_etag(client, url))
    assert response.status_code == 200, response.json()
    assert "needs 2 GPUs per replica" in response.json()["warnings"][0]
    settle_deployments()
    running.refresh_from_db()
    assert running.state == "degraded"
    assert running.slots.count() == 1


def test_the_migrations_backfill_matches_the_services_snapshot(profile):
    """Rows placed before snapshots existed are backfilled from their profile, with the same
    figures a new deployment records."""
    import importlib

    from serving.services import sizing_snapshot

    migration = importlib.import_module("serving.migrations.0004_deployment_sizing_snapshot")
    backfilled = migration.snapshot_of(profile)
    assert backfilled.pop("backfilled") is True
    assert backfilled == sizing_snapshot(profile)
