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

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied

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


# What each role adds, in the words the error pages use ("Operators can …").
ROLE_ABILITIES = {
    VIEWER: "read everything (pages, API, live views)",
    OPERATOR: "repartition GPUs and nodes, run plans and deployments, import inventories",
    ADMIN: "edit the catalog, read the audit trail and manage users and tokens",
}


def lowest_role_for(app_label: str, action: str) -> str | None:
    """The lowest role holding ``action`` ("view", "add", "change", "delete") on the models of
    ``app_label``, or None when no role does."""
    for role in ROLES:
        if action in role_permissions(role, app_label):
            return role
    return None


def denial_message(user: Any, needed: str | None) -> str:
    """Why a signed-in user was refused, naming the role that may: "Operators can repartition
    GPUs …; you are a viewer — ask an admin for the operator role."."""
    have = user_role(user) or "no role"
    article = "an" if have[:1] in "aeiou" else "a"
    you = f"you are {article} {have}" if have != "no role" else "your account has no role"
    if needed is None or needed not in ROLES:
        return f"This needs a role above yours; {you} — ask an admin."
    return f"{needed.capitalize()}s can {ROLE_ABILITIES[needed]}; {you} — ask an admin for the {needed} role."


def lowest_role_with(perm: str) -> str | None:
    """The lowest role granted the permission ``"app_label.action_model"``, or None."""
    app_label, _, codename = perm.partition(".")
    action, _, model = codename.partition("_")
    if model in _VIEW_ONLY_MODELS and action != "view":
        return None
    return lowest_role_for(app_label, action)


class RoleRequired(PermissionDenied):
    """A refusal that knows which role may (the 403 page names it)."""

    def __init__(self, required_role: str | None, message: str = "") -> None:
        super().__init__(message) if message else super().__init__()
        self.required_role = required_role


def permission_required(perm: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like Django's ``permission_required(perm, raise_exception=True)``, but the refusal names
    the lowest role holding ``perm`` (for the 403 page)."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def checked(request: Any, *args: Any, **kwargs: Any) -> Any:
            if not request.user.has_perm(perm):
                raise RoleRequired(lowest_role_with(perm))
            return view(request, *args, **kwargs)

        return checked

    return decorator
