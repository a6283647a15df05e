"""DRF permission: signed-in users read what their role may view; writes need the model
permission for the action (see aimconsole/roles.py)."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission, DjangoModelPermissions


class RolePermission(DjangoModelPermissions):
    perms_map = {
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "POST": ["%(app_label)s.add_%(model_name)s"],
        "PUT": ["%(app_label)s.change_%(model_name)s"],
        "PATCH": ["%(app_label)s.change_%(model_name)s"],
        "DELETE": ["%(app_label)s.delete_%(model_name)s"],
    }


class HasRole(BasePermission):
    """Any of the three roles (used for the OpenAPI schema and Swagger UI)."""

    def has_permission(self, request, view):
        from aimconsole.roles import user_role

        return user_role(request.user) is not None


class ReadOnlyForRole(BasePermission):
    """For resources without a model (gpu-specs, telemetry): users with a role may read."""

    def has_permission(self, request, view):
        from aimconsole.roles import user_role

        return request.method in SAFE_METHODS and user_role(request.user) is not None
