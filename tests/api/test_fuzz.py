"""Schemathesis against the live OpenAPI schema, in-process (WSGI), as each role: no 5xx,
responses conform to the schema (body and status code)."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ROLE_TOKENS: dict[str, str] = {}
# No 5xx; every response conforms to the schema: body, status code, content type, headers.
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance,
          response_headers_conformance]


@pytest.fixture
def api_schema(db, catalog, viewer, operator, admin_user, tmp_path, monkeypatch, redis_url):  # type: ignore[no-untyped-def]
    from drf_spectacular.generators import SchemaGenerator

    from aimconsole.services import create_token
    from tests.emulated_nodes import make_emulated_node

    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)
    make_emulated_node(tmp_path)
    for user in (viewer, operator, admin_user):
        ROLE_TOKENS[user.username] = create_token(user=user, name="fuzz")[1]
    document = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(document)
    schema.app = get_wsgi_application()
    # As Django's test client does: keep the test's database connection open across requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schema
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hsettings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):  # type: ignore[no-untyped-def]
    for username in ("vera", "otto", "ada"):  # viewer, operator, admin
        case.call_and_validate(headers={"Authorization": f"Token {ROLE_TOKENS[username]}"}, checks=CHECKS)


def test_stateful_create_read_delete_sequences(api_schema):  # type: ignore[no-untyped-def]
    """Links inferred from the schema (POST → GET/DELETE by id) drive call sequences as an admin."""
    from hypothesis import settings as state_settings

    token = ROLE_TOKENS["ada"]

    class Workflow(api_schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case):  # type: ignore[no-untyped-def]
            return {"headers": {"Authorization": f"Token {token}"}}

        def validate_response(self, response, case, additional_checks=(), **kwargs):  # type: ignore[no-untyped-def]
            case.validate_response(response, checks=CHECKS)

    Workflow.run(settings=state_settings(max_examples=15, stateful_step_count=5, deadline=None,
                                         suppress_health_check=list(HealthCheck)))
