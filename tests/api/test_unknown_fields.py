"""Unknown fields on any write are a 400 naming the field, and nothing changes.

A misspelt field (``replica`` for ``replicas``, ``drian`` for ``drain``) silently dropped would
turn a request into something the client did not ask for.
"""

from __future__ import annotations

import pytest

from partitions.models import GPU, Reconfiguration
from planning.models import Plan
from serving.models import Deployment


@pytest.fixture
def fleet(emulated):  # type: ignore[no-untyped-def]
    return emulated


def _refused(response, field: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 400, response.content
    assert field in response.json()["detail"], response.json()
    assert field in response.json()["message"]


@pytest.mark.django_db
def test_plans_refuse_unknown_fields_at_every_level(api_client_for, operator, fleet, catalog) -> None:
    client = api_client_for(operator)
    gpu = GPU.objects.get(node=fleet.node, index=0)
    _refused(client.post("/api/v1/plans/", {"gpus": [{"gpu": gpu.pk, "compute_mode": "CPX"}], "dry": True},
                         format="json"), "dry")
    response = client.post("/api/v1/plans/", {"gpus": [{"gpu": gpu.pk, "compute_mode": "CPX", "force": True}]},
                           format="json")
    assert response.status_code == 400 and "force" in str(response.json()["detail"])
    assert not Plan.objects.exists()


@pytest.mark.django_db
def test_deployments_refuse_unknown_fields(api_client_for, operator, fleet, catalog) -> None:
    from models.models import ModelProfile

    profile = ModelProfile.objects.filter(gpu_model="MI300X").order_by("memory_required_gb").first()
    body = {"name": "typo", "profile": profile.pk, "replicas": 1, "replica": 2}
    _refused(api_client_for(operator).post("/api/v1/deployments/", body, format="json"), "replica")
    assert not Deployment.objects.exists()


@pytest.mark.django_db
def test_reconfigure_actions_refuse_unknown_fields(api_client_for, operator, fleet) -> None:
    client = api_client_for(operator)
    gpu = GPU.objects.get(node=fleet.node, index=0)
    _refused(client.post(f"/api/v1/gpus/{gpu.pk}/reconfigure/", {"compute_mode": "CPX", "drian": True}, format="json"),
             "drian")
    _refused(client.post(f"/api/v1/nodes/{fleet.node.name}/reconfigure/", {"memory_mode": "NPS4", "now": 1},
                         format="json"), "now")
    assert not Reconfiguration.objects.exists()


@pytest.mark.django_db
def test_import_refuses_unknown_fields(api_client_for, operator, fleet) -> None:
    response = api_client_for(operator).post(f"/api/v1/nodes/{fleet.node.name}/import-amdsmi/",
                                             {"outputs": [], "overwrite": True}, format="json")
    _refused(response, "overwrite")
