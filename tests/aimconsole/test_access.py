"""The /metrics access rule (aimconsole/access.py), through a stand-in view: a metrics-scoped
token, an explicitly allowed network (judged on the trusted client address) or a signed-in
user with a role."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from django.utils import timezone

from aimconsole.access import metrics_access, metrics_access_required
from aimconsole.models import ApiToken
from aimconsole.services import create_token, revoke_token

pytestmark = pytest.mark.django_db


@metrics_access_required
def scrape(request: HttpRequest) -> HttpResponse:
    return HttpResponse("aim_up 1\n", content_type="text/plain")


def _get(peer: str = "10.1.2.3", *, key: str | None = None, user=None, **meta):  # type: ignore[no-untyped-def]
    if key is not None:
        meta["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    request = RequestFactory().get("/metrics", REMOTE_ADDR=peer, **meta)
    request.user = user or AnonymousUser()
    return request


@pytest.fixture
def loopback_only(settings):  # type: ignore[no-untyped-def]
    settings.METRICS_ALLOWED_CIDRS = ["127.0.0.0/8", "::1/128"]
    settings.TRUSTED_PROXIES = []


def test_a_spoofed_forwarded_loopback_address_gets_no_access(loopback_only):
    """The reported defect: X-Forwarded-For: 127.0.0.1 from elsewhere read /metrics."""
    response = scrape(_get("10.1.2.3", HTTP_X_FORWARDED_FOR="127.0.0.1"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_the_real_loopback_peer_is_allowed_where_loopback_is_listed(loopback_only):
    assert scrape(_get("127.0.0.1")).status_code == 200
    assert scrape(_get("::ffff:127.0.0.1")).status_code == 200


def test_no_network_is_allowed_when_none_is_listed(settings):
    settings.METRICS_ALLOWED_CIDRS = []
    assert scrape(_get("127.0.0.1")).status_code == 401


def test_a_client_behind_a_trusted_proxy_is_judged_on_its_own_address(settings):
    settings.METRICS_ALLOWED_CIDRS = ["192.0.2.0/24"]
    settings.TRUSTED_PROXIES = ["10.0.0.5"]
    assert scrape(_get("10.0.0.5", HTTP_X_FORWARDED_FOR="192.0.2.10")).status_code == 200
    assert scrape(_get("10.0.0.5", HTTP_X_FORWARDED_FOR="192.0.2.10, 198.51.100.1")).status_code == 401


def test_a_metrics_scoped_token_reads_metrics_from_anywhere(viewer, settings):
    settings.METRICS_ALLOWED_CIDRS = []
    _, key = create_token(user=viewer, name="prometheus", scopes=["metrics"])
    assert scrape(_get("203.0.113.7", key=key)).status_code == 200
    assert metrics_access(_get("203.0.113.7", key=key)).reason.startswith("metrics token")


def test_an_api_token_is_refused_at_metrics(viewer, settings):
    settings.METRICS_ALLOWED_CIDRS = []
    _, key = create_token(user=viewer, name="ci")
    response = scrape(_get(key=key))
    assert response.status_code == 403 and b"--scope metrics" in response.content


def test_a_token_with_both_scopes_works_at_both(viewer, settings, catalog):
    from rest_framework.test import APIClient

    settings.METRICS_ALLOWED_CIDRS = []
    _, key = create_token(user=viewer, name="both", scopes=["api", "metrics"])
    assert scrape(_get(key=key)).status_code == 200
    assert APIClient().get("/api/v1/models/", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200


def test_a_bad_token_is_401_even_from_an_allowed_network(viewer, loopback_only):
    response = scrape(_get("127.0.0.1", key="aim_deadbeef_nope"))
    assert response.status_code == 401 and 'error="invalid_token"' in response["WWW-Authenticate"]


def test_revoked_and_expired_metrics_tokens_are_401(viewer, settings):
    settings.METRICS_ALLOWED_CIDRS = []
    revoked, revoked_key = create_token(user=viewer, name="old", scopes=["metrics"])
    revoke_token(token=revoked)
    expired, expired_key = create_token(user=viewer, name="expired", scopes=["metrics"])
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert scrape(_get(key=revoked_key)).status_code == 401
    assert scrape(_get(key=expired_key)).status_code == 401


def test_a_token_whose_user_lost_the_role_is_refused(viewer, settings):
    settings.METRICS_ALLOWED_CIDRS = []
    _, key = create_token(user=viewer, name="prometheus", scopes=["metrics"])
    viewer.groups.clear()
    assert scrape(_get(key=key)).status_code == 403


def test_signed_in_users_with_a_role_read_metrics(viewer, norole, settings):
    settings.METRICS_ALLOWED_CIDRS = []
    assert scrape(_get(user=viewer)).status_code == 200
    assert scrape(_get(user=norole)).status_code == 403
