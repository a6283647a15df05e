"""API tokens: scopes (api, metrics, inference), who may hold one, and how a refused
token is answered (401 with WWW-Authenticate, 403 for a token of the wrong scope)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from aimconsole.models import ApiToken, AuditEvent
from aimconsole.services import create_token

pytestmark = pytest.mark.django_db


def _bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


# --- who may hold a token --------------------------------------------------------------------------

def test_a_user_without_a_role_cannot_create_a_token_through_the_api(api_client_for, norole):
    response = api_client_for(norole).post("/api/v1/tokens/", {"name": "mine"}, format="json")
    assert response.status_code == 403
    assert "role" in response.json()["message"]
    assert not ApiToken.objects.exists() and not AuditEvent.objects.filter(action="token.create").exists()


def test_an_admin_cannot_give_a_token_to_a_user_without_a_role(api_client_for, admin_user, norole):
    response = api_client_for(admin_user).post("/api/v1/tokens/", {"name": "for-nora", "user": "nora"}, format="json")
    assert response.status_code == 403 and "nora" in response.json()["message"]
    assert not ApiToken.objects.exists()


def test_the_command_refuses_a_user_without_a_role(norole):
    with pytest.raises(CommandError, match="role"):
        call_command("create_token", "nora", stdout=StringIO())
    assert not ApiToken.objects.exists()


# --- scopes ----------------------------------------------------------------------------------------

def test_the_command_creates_a_metrics_scoped_token(viewer):
    out = StringIO()
    call_command("create_token", "vera", "--scope", "metrics", "--name", "prometheus", stdout=out)
    key = out.getvalue().strip()
    token = ApiToken.objects.get()
    assert key.startswith(f"aim_{token.prefix}_") and token.scopes == ["metrics"] and token.name == "prometheus"


def test_tokens_default_to_the_api_scope(viewer):
    call_command("create_token", "vera", stdout=StringIO())
    assert ApiToken.objects.get().scopes == ["api"]


def test_inference_tokens_are_issued_by_the_command_and_the_api_and_refused_by_the_api(viewer, api_client_for):
    out = StringIO()
    call_command("create_token", "vera", "--scope", "inference", stdout=out)
    key = out.getvalue().strip()
    assert ApiToken.objects.get().scopes == ["inference"]
    response = api_client_for(viewer).post("/api/v1/tokens/", {"name": "gw", "scopes": ["inference"]}, format="json")
    assert response.status_code == 201 and response.json()["scopes"] == ["inference"]
    # A gateway credential is not an API credential.
    refused = APIClient().get("/api/v1/nodes/", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert refused.status_code == 403


def test_the_api_creates_tokens_with_the_scopes_asked_for(viewer, api_client_for):
    response = api_client_for(viewer).post("/api/v1/tokens/", {"name": "both", "scopes": ["api", "metrics"]}, format="json")
    assert response.status_code == 201 and response.json()["scopes"] == ["api", "metrics"]
    assert ApiToken.objects.get().scopes == ["api", "metrics"]


@pytest.mark.parametrize("scopes", [[], ["api", "api"], ["everything"], "api"])
def test_bad_scope_lists_are_refused(viewer, api_client_for, scopes):
    response = api_client_for(viewer).post("/api/v1/tokens/", {"name": "x", "scopes": scopes}, format="json")
    assert response.status_code == 400 and response.json()["message"].startswith("scopes")
    assert not ApiToken.objects.exists()


def test_a_metrics_token_cannot_use_the_rest_api(viewer, catalog):
    _, key = create_token(user=viewer, name="prom", scopes=["metrics"])
    response = _bearer(key).get("/api/v1/models/")
    assert response.status_code == 403 and "metrics" in response.json()["message"]


def test_an_api_token_reads_the_rest_api(viewer, catalog):
    _, key = create_token(user=viewer, name="ci")
    assert _bearer(key).get("/api/v1/models/").status_code == 200


# --- refused tokens are 401 with a challenge ---------------------------------------------------------

@pytest.mark.parametrize("header", ["Bearer aim_nothing_here", "Token aim_nothing_here", "Bearer", "Bearer a b"])
def test_a_bad_token_gets_401_with_a_bearer_challenge(header, catalog):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/models/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == "authentication_failed"


def test_an_expired_token_gets_401(viewer, catalog):
    token, key = create_token(user=viewer, name="old", expires_at=timezone.now() + timedelta(minutes=5))
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _bearer(key).get("/api/v1/models/")
    assert response.status_code == 401 and "expired" in response.json()["message"]
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_a_request_without_credentials_is_still_403(catalog):
    """Unchanged: anonymous API requests are refused with 403 (session authentication first)."""
    assert APIClient().get("/api/v1/models/").status_code == 403
