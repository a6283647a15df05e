"""The audit trail: ``record()`` is called by services inside the transaction that makes the
change, so the change and its audit row commit (or roll back) together.

The request id and source address come from ``RequestContextMiddleware`` through a context
variable (works for sync and async views); outside a request (agents, commands) they are empty
and the actor is "system" unless given.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.forms.models import model_to_dict
from django.http import HttpRequest, HttpResponse

from aimconsole.clientaddr import client_address
from aimconsole.models import AuditEvent
from aimconsole.text import escape_control as escape_control  # re-exported: pages and the API import it from here


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    source_ip: str | None
    request: Any = None

    @property
    def user(self) -> Any:
        # Read at record time: DRF authenticates (session or token) inside the view and sets
        # the user on the underlying request then.
        return getattr(self.request, "user", None)


_current: ContextVar[RequestContext | None] = ContextVar("aim_request_context", default=None)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def client_ip(request: HttpRequest) -> str | None:
    """The source address audit rows store: the trusted client address (aimconsole/clientaddr.py)."""
    return client_address(request) or None


class RequestContextMiddleware:
    """Give every request an id (a valid incoming ``X-Request-ID`` or a new UUID), echo it in
    the response, and make it and the client address available to ``record()``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        token = _current.set(RequestContext(request_id, client_ip(request), request))
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response["X-Request-ID"] = request_id
        return response


def current() -> RequestContext | None:
    return _current.get()


def snapshot(instance: Any, fields: list[str] | None = None) -> dict[str, Any]:
    """JSON-safe field values of a model instance (for before/after)."""
    import json

    data = model_to_dict(instance, fields=fields)
    safe: dict[str, Any] = json.loads(json.dumps(data, cls=DjangoJSONEncoder, default=str))
    return safe


def record(action: str, *, obj: Any = None, object_type: str = "", object_id: Any = "", before: Any = None,
           after: Any = None, actor: Any = None, actor_name: str | None = None) -> AuditEvent:
    """Append one audit event. ``actor``: a user (default: the request's user, else system)."""
    context = current()
    if actor is None and context is not None:
        actor = context.user
    authenticated = actor is not None and getattr(actor, "is_authenticated", False)
    if obj is not None:
        object_type = object_type or f"{obj._meta.app_label}.{obj._meta.model_name}"
        object_id = object_id or obj.pk
    return AuditEvent.objects.create(
        actor_id=actor.pk if authenticated else None,
        actor=actor_name or (actor.get_username() if authenticated else "system"),
        action=action, object_type=object_type, object_id=str(object_id or "")[:64],
        object_repr=str(obj)[:300] if obj is not None else "",
        before=before, after=after,
        request_id=context.request_id if context else "",
        source_ip=context.source_ip if context else None,
    )



# --- privilege changes: group membership and permission grants --------------------------------

# m2m relation (owner model's field) -> audit action prefix. Rows are always recorded against
# the owner (the user, or the group for its permissions), whichever side made the change.
_PRIVILEGE_RELATIONS = {"groups": "auth.user.groups", "user_permissions": "auth.user.permissions",
                        "permissions": "auth.group.permissions"}


def _label(obj: Any) -> str:
    from django.contrib.auth.models import Permission

    if isinstance(obj, Permission):
        return f"{obj.content_type.app_label}.{obj.codename}"
    return str(getattr(obj, "name", None) or obj)


def privilege_relations() -> dict[Any, tuple[Any, str]]:
    """through model -> (owner model, field name), for the m2m_changed receivers."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model()
    return {user.groups.through: (user, "groups"), user.user_permissions.through: (user, "user_permissions"),
            Group.permissions.through: (Group, "permissions")}


def record_privilege_m2m(sender: Any, instance: Any, action: str, reverse: bool, model: Any, pk_set: set[Any] | None,
                         **kwargs: Any) -> None:
    """m2m_changed receiver: one audit row per owner whose groups or permissions changed, by
    admin, API, shell or migration alike (the actor is the request's user, else "system")."""
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    owner_model, field = privilege_relations()[sender]
    verb = {"post_add": "add", "post_remove": "remove", "pre_clear": "clear"}[action]
    key = "added" if verb == "add" else "removed"
    if action == "pre_clear":  # pk_set is None: read what is about to go
        related = list(getattr(instance, field).all()) if not reverse else list(owner_model.objects.filter(**{field: instance}))
    else:
        if not pk_set:
            return
        related = list(model.objects.filter(pk__in=pk_set))
    if not reverse:
        if related:
            record(f"{_PRIVILEGE_RELATIONS[field]}.{verb}", obj=instance, after={key: sorted(_label(r) for r in related)})
        return
    for owner in related:  # the reverse side: e.g. group.user_set.add(user) is a change to each user
        record(f"{_PRIVILEGE_RELATIONS[field]}.{verb}", obj=owner, after={key: [_label(instance)]})


# --- users and groups: created, changed, deleted ------------------------------------------------
# Recorded from the model signals, so Django admin, the shell, ``createsuperuser`` and any
# service alike leave a row (bulk ``QuerySet.update`` sends no signal: nothing in the console
# changes users that way). Passwords are never read here: Django admin's password form
# records ``auth.user.password_change`` itself.

_AUDITED_FIELDS = {"auth.user": ("username", "first_name", "last_name", "email", "is_active", "is_staff", "is_superuser"),
                   "auth.group": ("name",)}
_SKIP = object()


def _audited_fields(instance: Any) -> tuple[str, ...]:
    return _AUDITED_FIELDS.get(instance._meta.label_lower, ())


def _values(instance: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(instance, name) for name in fields}


def remember_account_state(sender: Any, instance: Any, raw: bool = False, update_fields: Any = None,
                           **kwargs: Any) -> None:
    """pre_save: keep the audited fields as stored, to diff after the save (one query, skipped
    for saves that touch none of them, such as ``last_login`` on sign-in)."""
    fields = _audited_fields(instance)
    if raw or instance._state.adding or instance.pk is None:
        instance._audit_before = None
    elif update_fields is not None and not set(update_fields) & set(fields):
        instance._audit_before = _SKIP
    else:
        instance._audit_before = type(instance)._base_manager.filter(pk=instance.pk).values(*fields).first()


def record_account_saved(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """post_save: ``auth.user.create`` / ``auth.group.create`` with the audited fields, or
    ``….update`` with the ones that changed, before → after."""
    if raw:
        return
    fields = _audited_fields(instance)
    label = instance._meta.label_lower
    before = getattr(instance, "_audit_before", None)
    instance._audit_before = _SKIP
    if created:
        record(f"{label}.create", obj=instance, after=_values(instance, fields))
        return
    if before is _SKIP or before is None:
        return
    now = _values(instance, fields)
    changed = [name for name in fields if before.get(name) != now[name]]
    if changed:
        record(f"{label}.update", obj=instance, before={n: before.get(n) for n in changed},
               after={n: now[n] for n in changed})


def record_account_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_delete: ``auth.user.delete`` / ``auth.group.delete`` with what the row held."""
    record(f"{instance._meta.label_lower}.delete", obj=instance, before=_values(instance, _audited_fields(instance)))


def account_models() -> tuple[Any, ...]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    return (get_user_model(), Group)
