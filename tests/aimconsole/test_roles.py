"""Role groups from the data migration and what each may do."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from aimconsole.roles import user_role

pytestmark = pytest.mark.django_db


def test_the_three_role_groups_exist_after_migrate():
    assert set(Group.objects.values_list("name", flat=True)) >= {"viewer", "operator", "admin"}


def test_viewer_reads_but_cannot_change_the_catalog(viewer):
    assert viewer.has_perm("catalog.view_inferencemodel")
    assert not viewer.has_perm("catalog.change_inferencemodel")
    assert not viewer.has_perm("aimconsole.view_apitoken")
    assert not viewer.has_perm("aimconsole.view_auditevent")


def test_operator_cannot_change_the_catalog(operator):
    assert operator.has_perm("catalog.view_modelprofile")
    assert not operator.has_perm("catalog.add_modelprofile")


def test_admin_changes_the_catalog(admin_user):
    for action in ("add", "change", "delete", "view"):
        assert admin_user.has_perm(f"catalog.{action}_inferencemodel")


def test_nobody_holds_a_permission_to_change_the_audit_trail(admin_user):
    assert admin_user.has_perm("aimconsole.view_auditevent")
    assert not admin_user.has_perm("aimconsole.change_auditevent")
    assert not admin_user.has_perm("aimconsole.delete_auditevent")


def test_user_role_is_the_highest_group(viewer, admin_user, norole, django_user_model):
    assert user_role(viewer) == "viewer"
    assert user_role(admin_user) == "admin"
    assert user_role(norole) is None
    admin_user.groups.add(Group.objects.get(name="viewer"))
    assert user_role(admin_user) == "admin"
    root = django_user_model.objects.create_superuser("root", password="x")
    assert user_role(root) == "admin"
