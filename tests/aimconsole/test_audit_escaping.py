"""Control characters in audit rows (a username typed at a failed sign-in, an object's name) are
shown as visible escapes on the audit page, in the API and in Django admin."""

from __future__ import annotations

import pytest

from aimconsole.audit import record

pytestmark = pytest.mark.django_db

RAW = ("\x1b", "\r", "\u202e")


@pytest.fixture
def hostile_event(django_user_model):  # type: ignore[no-untyped-def]
    target = django_user_model.objects.create_user(username="mal\x1b[2J\rlory\u202e")
    return record("test.hostile", obj=target, actor_name="anonymous (ev\x1b[31mil\r)",
                  after={"username": "ev\x1b[31mil\r"})


def _assert_escaped(text: str) -> None:
    for char in RAW:
        assert char not in text, repr(char)
    assert "ev\\x1b[31mil\\x0d" in text  # the actor
    assert "mal\\x1b[2J\\x0dlory\\u202e" in text  # the object


def test_the_audit_page_escapes_actor_and_object(client, admin_user, hostile_event):
    client.force_login(admin_user)
    _assert_escaped(client.get("/audit/").content.decode())


def test_the_api_escapes_actor_and_object(api_client_for, admin_user, hostile_event):
    response = api_client_for(admin_user).get(f"/api/v1/audit-events/{hostile_event.pk}/")
    assert response.status_code == 200
    body = response.json()
    _assert_escaped(body["actor"] + " " + body["object_repr"])
    listed = api_client_for(admin_user).get("/api/v1/audit-events/", {"action": "test.hostile"}).json()["results"][0]
    _assert_escaped(listed["actor"] + " " + listed["object_repr"])
    # On the wire JSON carries no raw control character anywhere (values included).
    assert not any(char.encode() in response.content for char in RAW)


def test_django_admin_escapes_actor_and_object(client, admin_user, hostile_event):
    client.force_login(admin_user)
    listing = client.get("/admin/aimconsole/auditevent/")
    assert listing.status_code == 200
    _assert_escaped(listing.content.decode())
    detail = client.get(f"/admin/aimconsole/auditevent/{hostile_event.pk}/change/")
    assert detail.status_code == 200
    _assert_escaped(detail.content.decode())


def test_django_admin_shows_the_audit_trail_read_only(client, admin_user, hostile_event):
    from aimconsole.models import AuditEvent

    client.force_login(admin_user)
    assert client.get("/admin/aimconsole/auditevent/add/").status_code == 403
    assert client.post(f"/admin/aimconsole/auditevent/{hostile_event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=hostile_event.pk).exists()
