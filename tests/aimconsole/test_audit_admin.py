"""Privilege changes leave audit rows: users' staff/superuser/active flags and passwords made in
Django admin, group membership and permission grants however they are made, and a GPU's
health flipped in Django admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission

from aimconsole.models import AuditEvent
from tests.aimconsole.adminforms import post_change_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(viewer, admin_user):  # type: ignore[no-untyped-def]
    """Audit rows written by the test itself (not by making the users it starts with)."""
    start = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def written(action: str) -> list[AuditEvent]:
        return list(AuditEvent.objects.filter(action=action, id__gt=start).order_by("id"))

    return written


def test_making_a_user_superuser_in_admin_is_audited(events, client, admin_user, viewer):
    client.force_login(admin_user)
    response = post_change_form(client, f"/admin/auth/user/{viewer.pk}/change/", is_staff="on", is_superuser="on")
    assert response.status_code == 302, response.content[:2000]
    viewer.refresh_from_db()
    assert viewer.is_superuser and viewer.is_staff
    (event,) = events("auth.user.update")
    assert (event.actor, event.object_id, event.object_repr) == ("ada", str(viewer.pk), "vera")
    assert event.before == {"is_staff": False, "is_superuser": False}
    assert event.after == {"is_staff": True, "is_superuser": True}


def test_deactivating_a_user_in_admin_is_audited(events, client, admin_user, viewer):
    client.force_login(admin_user)
    post_change_form(client, f"/admin/auth/user/{viewer.pk}/change/", is_active=None)
    (event,) = events("auth.user.update")
    assert event.before == {"is_active": True} and event.after == {"is_active": False}


def test_a_password_set_in_admin_is_audited_without_the_password(events, client, admin_user, viewer):
    client.force_login(admin_user)
    response = client.post(f"/admin/auth/user/{viewer.pk}/password/",
                           {"password1": "a-new-Passw0rd!", "password2": "a-new-Passw0rd!", "usable_password": "true"})
    assert response.status_code == 302
    (event,) = events("auth.user.password_change")
    assert event.actor == "ada" and event.object_repr == "vera"
    assert "a-new-Passw0rd!" not in str(event.before) + str(event.after)


def test_creating_and_deleting_users_in_admin_is_audited(events, client, admin_user):
    from django.contrib.auth import get_user_model

    client.force_login(admin_user)
    created = client.post("/admin/auth/user/add/", {"username": "newbie", "password1": "a-new-Passw0rd!",
                                                    "password2": "a-new-Passw0rd!", "usable_password": "true"})
    assert created.status_code == 302
    user = get_user_model().objects.get(username="newbie")
    (event,) = events("auth.user.create")
    assert event.object_repr == "newbie" and "a-new-Passw0rd!" not in str(event.after)
    client.post(f"/admin/auth/user/{user.pk}/delete/", {"post": "yes"})
    (deleted,) = events("auth.user.delete")
    assert deleted.object_id == str(user.pk) and deleted.before["username"] == "newbie"


def test_group_membership_changed_in_the_user_form_is_audited(events, client, admin_user, viewer):
    operator_group = Group.objects.get(name="operator")
    client.force_login(admin_user)
    viewer_group = Group.objects.get(name="viewer")
    response = post_change_form(client, f"/admin/auth/user/{viewer.pk}/change/",
                                groups=[str(viewer_group.pk), str(operator_group.pk)])
    assert response.status_code == 302
    (added,) = events("auth.user.groups.add")
    assert added.actor == "ada" and added.object_repr == "vera" and added.after == {"added": ["operator"]}
    post_change_form(client, f"/admin/auth/user/{viewer.pk}/change/", groups=[str(operator_group.pk)])
    (removed,) = events("auth.user.groups.remove")
    assert removed.after == {"removed": ["viewer"]}


def test_group_permissions_changed_in_admin_are_audited(events, client, admin_user):
    group = Group.objects.create(name="auditors")
    perm = Permission.objects.get(codename="view_auditevent")
    client.force_login(admin_user)
    response = post_change_form(client, f"/admin/auth/group/{group.pk}/change/", permissions=[str(perm.pk)])
    assert response.status_code == 302
    (event,) = events("auth.group.permissions.add")
    assert event.actor == "ada" and event.object_repr == "auditors"
    assert event.after == {"added": ["aimconsole.view_auditevent"]}


def test_changes_made_outside_admin_are_audited_too_from_either_side(events, viewer, django_user_model):
    operator_group = Group.objects.get(name="operator")
    operator_group.user_set.add(viewer)  # the reverse side: recorded against the user
    (event,) = events("auth.user.groups.add")
    assert (event.actor, event.object_repr, event.after) == ("system", "vera", {"added": ["operator"]})
    viewer.user_permissions.add(Permission.objects.get(codename="add_apitoken"))
    viewer.user_permissions.clear()
    assert events("auth.user.permissions.add")[0].after == {"added": ["aimconsole.add_apitoken"]}
    assert events("auth.user.permissions.clear")[0].after == {"removed": ["aimconsole.add_apitoken"]}


def test_a_gpu_marked_healthy_in_admin_is_audited(events, client, admin_user):
    from partitions.models import GPU, Node

    node = Node.objects.create(name="n1", backend=Node.Backend.SIMULATED, emulated=True)
    gpu = GPU.objects.create(node=node, index=0, gpu_model="MI300X", health=GPU.Health.UNHEALTHY,
                             health_reason="hung reload")
    client.force_login(admin_user)
    response = post_change_form(client, f"/admin/partitions/gpu/{gpu.pk}/change/", health="healthy")
    assert response.status_code == 302, response.content[:3000]
    (event,) = events("partitions.gpu.update")
    assert event.actor == "ada" and event.object_id == str(gpu.pk)
    assert event.before == {"health": "unhealthy"} and event.after == {"health": "healthy"}


def test_users_created_changed_and_deleted_outside_admin_are_audited(events, django_user_model):
    user = django_user_model.objects.create_user(username="shelly", password="pw-shelly", email="s@example.com")
    (created,) = events("auth.user.create")
    assert (created.actor, created.object_id, created.object_repr) == ("system", str(user.pk), "shelly")
    assert created.after["is_superuser"] is False and "password" not in created.after and "pw-shelly" not in str(created.after)
    user.is_staff = True
    user.is_superuser = True
    user.save()
    (promoted,) = events("auth.user.update")
    assert promoted.before == {"is_staff": False, "is_superuser": False}
    assert promoted.after == {"is_staff": True, "is_superuser": True}
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert events("auth.user.update")[-1].after == {"is_active": False}
    pk = user.pk
    user.delete()
    (deleted,) = events("auth.user.delete")
    assert deleted.object_id == str(pk) and deleted.before["username"] == "shelly" and deleted.before["is_staff"] is True


def test_a_superuser_made_by_createsuperuser_is_audited(events, django_user_model):
    from django.core.management import call_command

    call_command("createsuperuser", "--noinput", "--username", "root2", "--email", "r@example.com")
    (created,) = events("auth.user.create")
    assert created.object_repr == "root2" and created.after["is_superuser"] is True


def test_a_sign_in_and_a_save_that_changes_nothing_leave_no_update_row(events, client, viewer):
    client.force_login(viewer)  # saves last_login only
    viewer.save()
    assert events("auth.user.update") == []


def test_groups_created_renamed_and_deleted_are_audited(events):
    group = Group.objects.create(name="night-shift")
    group.name = "night-operators"
    group.save()
    group.delete()
    assert events("auth.group.create")[0].after == {"name": "night-shift"}
    (renamed,) = events("auth.group.update")
    assert renamed.before == {"name": "night-shift"} and renamed.after == {"name": "night-operators"}
    assert events("auth.group.delete")[0].before == {"name": "night-operators"}


def test_changes_through_a_request_name_the_signed_in_actor(events, client, admin_user, viewer):
    client.force_login(admin_user)
    post_change_form(client, f"/admin/auth/user/{viewer.pk}/change/", email="vera@example.com", is_staff="on")
    (event,) = events("auth.user.update")  # one row for the whole form, not one per mechanism
    assert event.actor == "ada" and event.actor_id == admin_user.pk
    assert event.after == {"email": "vera@example.com", "is_staff": True}


def test_deleting_users_with_the_admin_bulk_action_is_audited(events, client, admin_user, django_user_model):
    doomed = [django_user_model.objects.create_user(username=f"temp{i}") for i in range(2)]
    client.force_login(admin_user)
    response = client.post("/admin/auth/user/", {"action": "delete_selected", "post": "yes",
                                                "_selected_action": [str(u.pk) for u in doomed]})
    assert response.status_code == 302
    assert sorted(e.before["username"] for e in events("auth.user.delete")) == ["temp0", "temp1"]
    assert {e.actor for e in events("auth.user.delete")} == {"ada"}
