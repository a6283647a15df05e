"""The client address: X-Forwarded-For believed only from trusted proxies, the same address for
the login lockout and the audit trail."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.test import RequestFactory

from aimconsole.clientaddr import client_address, parse_address


def _request(peer: str, forwarded: str | None = None):  # type: ignore[no-untyped-def]
    extra = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


@pytest.mark.parametrize("text, expected", [
    ("10.1.2.3", "10.1.2.3"), (" 10.1.2.3 ", "10.1.2.3"), ("10.1.2.3:5678", "10.1.2.3"), ("::1", "::1"),
    ("[2001:db8::1]:443", "2001:db8::1"), ("::ffff:127.0.0.1", "127.0.0.1"), ("unknown", None), ("", None),
    ("10.1.2.300", None),
])
def test_addresses_are_read_as_proxies_write_them(text, expected):
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == expected


def test_without_trusted_proxies_the_header_is_ignored(settings):
    settings.TRUSTED_PROXIES = []
    assert client_address(_request("10.1.2.3", "127.0.0.1")) == "10.1.2.3"


def test_a_trusted_proxy_names_the_client(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/24"]
    assert client_address(_request("10.0.0.5", "203.0.113.7")) == "203.0.113.7"


def test_what_the_client_wrote_left_of_the_proxy_entry_is_ignored(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/24"]
    # The client sent "X-Forwarded-For: 127.0.0.1"; the proxy appended the real address.
    assert client_address(_request("10.0.0.5", "127.0.0.1, 203.0.113.7")) == "203.0.113.7"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/24", "192.168.1.1"]
    assert client_address(_request("10.0.0.5", "127.0.0.1, 198.51.100.9, 192.168.1.1")) == "198.51.100.9"


def test_an_untrusted_peer_cannot_pass_as_a_proxy(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/24"]
    assert client_address(_request("10.9.9.9", "203.0.113.7")) == "10.9.9.9"


def test_garbage_from_a_trusted_proxy_makes_the_client_unknown_not_the_proxy(settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    assert client_address(_request("127.0.0.1", "203.0.113.7, not-an-address")) == ""


# --- the lockout and the audit trail use it --------------------------------------------------------

@pytest.mark.django_db
def test_the_lockout_keys_on_the_peer_whatever_x_forwarded_for_claims(client, viewer, settings):
    settings.TRUSTED_PROXIES = []
    for n in range(settings.AXES_FAILURE_LIMIT):
        # A different claimed address each time must not buy more attempts.
        client.post("/accounts/login/", {"username": "vera", "password": "nope"},
                    REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR=f"127.0.0.{n + 1}")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"10.1.2.3"}
    locked = client.post("/accounts/login/", {"username": "vera", "password": "pw-vera"},
                         REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="127.0.0.99")
    assert locked.status_code == 429 and "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_behind_a_trusted_proxy_the_lockout_keys_on_the_forwarded_client(client, viewer, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.5"]
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "vera", "password": "nope"},
                    REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.7"}
    # Another client behind the same proxy is not locked out by the first one's failures.
    other = client.post("/accounts/login/", {"username": "vera", "password": "pw-vera"},
                        REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="198.51.100.9")
    assert other.status_code == 302


@pytest.mark.django_db
def test_audit_rows_record_the_trusted_client_address(client, viewer, settings):
    from aimconsole.models import AuditEvent

    settings.TRUSTED_PROXIES = ["10.0.0.5"]
    client.post("/accounts/login/", {"username": "vera", "password": "nope"},
                REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="127.0.0.1, 203.0.113.7")
    assert AuditEvent.objects.get(action="auth.login_failed").source_ip == "203.0.113.7"
