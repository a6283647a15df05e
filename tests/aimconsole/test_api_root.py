"""The API root: /api/v1/ lists every resource with its URL, for any role."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

RESOURCES = ("models", "profiles", "precisions", "gpu-specs", "nodes", "gpus", "partitions", "reconfigurations",
             "telemetry", "plans", "deployments", "tokens", "audit-events")


@pytest.mark.parametrize("role", ["viewer", "operator", "admin_user"])
def test_the_root_lists_every_resource_with_its_url(api_client_for, request, role):
    response = api_client_for(request.getfixturevalue(role)).get("/api/v1/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(RESOURCES) <= set(body)
    assert body["nodes"] == "http://testserver/api/v1/nodes/"
    assert body["audit-events"] == "http://testserver" + reverse("audit-event-list")
    # Only resources: no detail routes or actions.
    assert all(url.startswith("http://testserver/api/v1/") and url.endswith("/") for url in body.values())
    assert not any("{" in key or "apply" in key or "reconfigure" in key for key in body)


def test_every_listed_url_answers(api_client_for, viewer):
    client = api_client_for(viewer)
    body = client.get("/api/v1/").json()
    for key, url in body.items():
        if key in ("audit-events",):  # admins only
            continue
        assert client.get(url).status_code == 200, url


def test_the_root_needs_a_role_and_refuses_anonymous_like_the_rest_of_the_api(api_client_for, norole):
    anonymous = api_client_for().get("/api/v1/")
    assert anonymous.status_code == api_client_for().get("/api/v1/nodes/").status_code
    assert anonymous.status_code in (401, 403)
    assert anonymous.json()["code"] == "not_authenticated"
    assert api_client_for(norole).get("/api/v1/").status_code == 403


def test_a_bad_token_is_401_at_the_root(api_client_for):
    response = api_client_for().get("/api/v1/", HTTP_AUTHORIZATION="Bearer aim_deadbeef_nope")
    assert response.status_code == 401


def test_the_browsable_root_shows_pretty_printed_json(client, viewer):
    client.force_login(viewer)
    response = client.get("/api/v1/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    html = response.content.decode()
    # Pretty-printed: one resource a line, indented (the browsable API links each URL).
    assert '\n  &quot;nodes&quot;: &quot;<a href="http://testserver/api/v1/nodes/"' in html
