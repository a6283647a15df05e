"""Django admin: changes made here are audited, and the audit trail is readable (not writable).

``AuditedModelAdmin`` records every create, change and delete made through a ModelAdmin with
the fields that changed, before → after. Many-to-many privilege changes (group membership,
permission grants) are recorded by ``audit.record_privilege_m2m`` whatever makes them, so
the admin hooks leave them out. Users and groups are created, changed and deleted under
model signals that record them wherever it happens (aimconsole/audit.py), so their admins
record only password changes here; other apps opt in by deriving their ModelAdmin from ``AuditedModelAdmin`` (the GPU admin does, for health).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from aimconsole import audit
from aimconsole.login import AdminLoginForm
from aimconsole.models import AuditEvent
from aimconsole.text import escape_control


def _changes(obj: models.Model, form: Any, *, created: bool) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(before, after) of the form's changed model fields, JSON-safe. Many-to-many fields are
    left to the m2m audit; password fields are noted, never stored."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name in form.changed_data:
        if "password" in name:
            after["password"] = "set"
            continue
        try:
            field = obj._meta.get_field(name)
        except FieldDoesNotExist:
            continue
        if field.many_to_many:
            continue
        before[name] = _json_value(form.initial.get(name))
        after[name] = _json_value(form.cleaned_data.get(name))
    return (None if created else before), after


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, models.Model):
        return value.pk
    return str(value)


class AuditedModelAdmin(admin.ModelAdmin):
    """A ModelAdmin whose saves and deletes write audit rows ``<app>.<model>.create|update|delete``
    in the admin's transaction. ``audit_saves = False`` where model signals record them already
    (users and groups: aimconsole/audit.py, whatever makes the change)."""

    audit_saves = True

    def _action(self, verb: str) -> str:
        return f"{self.opts.app_label}.{self.opts.model_name}.{verb}"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not self.audit_saves:
            return
        before, after = _changes(obj, form, created=not change)
        if after or not change:
            audit.record(self._action("update" if change else "create"), obj=obj, before=before, after=after)

    def audit_state(self, obj: Any) -> dict[str, Any]:
        """What a delete row keeps of the object."""
        return audit.snapshot(obj)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        if self.audit_saves:
            audit.record(self._action("delete"), obj=obj, before=self.audit_state(obj))
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        if not self.audit_saves:
            # One by one, so each delete sends the post_delete signal the audit listens to.
            for obj in queryset:
                obj.delete()
            return
        for obj in queryset:
            audit.record(self._action("delete"), obj=obj, before=self.audit_state(obj))
        super().delete_queryset(request, queryset)


User = get_user_model()


class AuditedUserAdmin(AuditedModelAdmin, UserAdmin):
    audit_saves = False  # created, changed and deleted users: the model signals (aimconsole/audit.py)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:  # saved (an invalid form re-renders: 200)
            audit.record("auth.user.password_change", obj=self.get_object(request, unquote(id)),
                         after={"password": "set"})
        return response


class AuditedGroupAdmin(AuditedModelAdmin, GroupAdmin):
    audit_saves = False


# Over-long credentials are refused before authenticating, here as on the console's page.
admin.site.login_form = AdminLoginForm

for _model, _admin in ((User, AuditedUserAdmin), (Group, AuditedGroupAdmin)):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _admin)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit trail, read-only. Fields people or outputs wrote are shown through
    escape_control, as on the audit page and in the API."""

    list_display = ("at", "shown_actor", "action", "object_type", "shown_object_id", "shown_object_repr", "source_ip")
    list_filter = ("action",)
    search_fields = ("actor", "action", "object_id", "request_id")
    fields = ("at", "shown_actor", "actor_id", "action", "object_type", "shown_object_id", "shown_object_repr",
              "shown_before", "shown_after", "request_id", "source_ip")
    readonly_fields = fields

    @admin.display(description="actor", ordering="actor")
    def shown_actor(self, event: AuditEvent) -> str:
        return escape_control(event.actor)

    @admin.display(description="object id")
    def shown_object_id(self, event: AuditEvent) -> str:
        return escape_control(event.object_id)

    @admin.display(description="object")
    def shown_object_repr(self, event: AuditEvent) -> str:
        return escape_control(event.object_repr)

    @admin.display(description="before")
    def shown_before(self, event: AuditEvent) -> str:
        return escape_control(event.before)

    @admin.display(description="after")
    def shown_after(self, event: AuditEvent) -> str:
        return escape_control(event.after)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
