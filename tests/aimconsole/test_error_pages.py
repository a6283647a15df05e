"""Console-styled error pages with DEBUG off: 404 says what is missing, 403 names the role that
may and the one you have, 500 renders without the database; API paths keep JSON."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_debug(settings):  # type: ignore[no-untyped-def]
    settings.DEBUG = False


def test_a_missing_page_gets_the_styled_404(client, viewer):
    client.force_login(viewer)
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert 'class="topbar"' in body and "Not found" in body and "/no-such-page/" in body
    assert "Page not found at" not in body  # not Django's technical page


def test_a_missing_object_says_what_is_missing(client, viewer):
    client.force_login(viewer)
    response = client.get("/operations/999999/")
    assert response.status_code == 404
    assert "No Reconfiguration matches the given query" in response.content.decode()


def test_a_missing_api_resource_stays_json(client, viewer):
    client.force_login(viewer)
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404 and response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "not_found"


def test_a_viewer_posting_an_operator_action_gets_the_styled_403_naming_the_role(client, viewer):
    client.force_login(viewer)
    response = client.post("/operations/1/restore/")
    assert response.status_code == 403
    body = response.content.decode()
    assert 'class="topbar"' in body and "Not allowed" in body
    assert "Operators can repartition GPUs" in body
    assert "you are a viewer — ask an admin for the operator role" in body


def test_an_operator_refused_the_audit_trail_is_told_it_needs_admin(client, operator):
    client.force_login(operator)
    response = client.get("/audit/")
    assert response.status_code == 403
    body = response.content.decode()
    assert "Admins can" in body and "read the audit trail" in body and "you are an operator" in body


def test_a_service_reason_is_shown_on_the_403(client, viewer):
    client.force_login(viewer)
    from partitions.models import GPU, Node

    node = Node.objects.create(name="n1", backend=Node.Backend.SIMULATED, emulated=True)
    gpu = GPU.objects.create(node=node, index=0, gpu_model="MI300X", health=GPU.Health.UNHEALTHY)
    response = client.post("/fleet/", {"gpu": str(gpu.pk)})
    assert response.status_code == 403
    assert "Marking a GPU healthy needs the operator or admin role." in response.content.decode()


@pytest.mark.urls("tests.aimconsole.error_urls")
def test_a_view_that_raises_gets_the_styled_500_without_touching_the_database(viewer):
    client = Client(raise_request_exception=False)
    client.force_login(viewer)
    with CaptureQueriesContext(connection) as working:
        assert client.get("/fine/").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/broken/")
    assert response.status_code == 500
    body = response.content.decode()
    assert 'class="topbar"' in body and "Server error" in body
    assert "boom" not in body and "Traceback" not in body
    assert response["X-Request-ID"] in body
    # The session and user are read before the view runs; the 500 page itself adds no query.
    assert len(queries.captured_queries) == len(working.captured_queries)


@pytest.mark.urls("tests.aimconsole.error_urls")
def test_an_api_path_that_raises_answers_json_500(viewer):
    client = Client(raise_request_exception=False)
    client.force_login(viewer)
    response = client.get("/api/v1/broken/")
    assert response.status_code == 500 and response.json()["code"] == "server_error"
