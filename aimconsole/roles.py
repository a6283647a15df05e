"""The three roles and what each may do — the one place that defines them.

Roles are Django groups (created by a data migration, kept in sync after every migrate):
- ``viewer``: read everything.
- ``operator``: viewer + run the fleet (reconfigurations, deployments, plans).
- ``admin``: operator + edit the catalog, specs and nodes; read the audit trail; manage every
  user's API tokens; user management in Django admin.

Permissions are ordinary Django model permissions granted to the groups, so the API, pages and
Django admin check the same thing (``user.has_perm``). Superusers hold every permission.
"""

from __future__ import annotations

from typing import Any

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)

# Which apps each role reads and which it changes. Operators change fleet state
# (partitions, qos); the catalog and API tokens of other users are admin's.
_READ_APPS = ("catalog", "partitions", "planning", "serving", "qos")
_OPERATOR_APPS = ("partitions", "planning", "serving", "qos")
_ADMIN_APPS = ("catalog", "partitions", "planning", "serving", "qos", "aimconsole", "auth", "axes")
# Models nobody may change through permissions (the application refuses anyway).
_VIEW_ONLY_MODELS = ("auditevent",)
_ALL_ACTIONS = ("view", "add", "change", "delete")


def role_permissions(role: str, app_label: str) -> tuple[str, ...]:
    """Actions ("view", "add", "change", "delete") ``role`` holds on every model of ``app_label``."""
    if role == ADMIN and app_label in _ADMIN_APPS:
        return _ALL_ACTIONS
    if role == OPERATOR and app_label in _OPERATOR_APPS:
        return _ALL_ACTIONS
    if role in ROLES and app_label in _READ_APPS:
        return ("view",)
    return ()


def sync_role_groups(apps: Any = None) -> None:
    """Create the role groups and grant them exactly the permissions above (idempotent).

    Works inside a migration (``apps`` = historical registry) and after migrate.
    """
    if apps is None:
        from django.apps import apps as global_apps

        apps = global_apps
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    perms = list(Permission.objects.select_related("content_type"))
    for role in ROLES:
        group, _ = Group.objects.get_or_create(name=role)
        wanted = [
            p
            for p in perms
            if p.codename.split("_", 1)[0] in role_permissions(role, p.content_type.app_label)
            and (p.content_type.model not in _VIEW_ONLY_MODELS or p.codename.startswith("view_"))
        ]
        group.permissions.set(wanted)


def user_role(user: Any) -> str | None:
    """The highest role the user holds (superusers are admins), or None."""
    if not getattr(user, "is_authenticated", False):
        return None
    if user.is_superuser:
        return ADMIN
    names = {g.name for g in user.groups.all()}
    for role in reversed(ROLES):
        if role in names:
            return role
    return None


def role_context(request: Any) -> dict[str, Any]:
    """Template context processor: ``user_role`` for the navigation bar."""
    return {"user_role": user_role(getattr(request, "user", None))}
