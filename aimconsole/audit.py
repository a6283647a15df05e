"""The audit trail: ``record()`` is called by services inside the transaction that makes the
change, so the change and its audit row commit (or roll back) together.

The request id and source address come from ``RequestContextMiddleware`` through a context
variable (works for sync and async views); outside a request (agents, commands) they are empty
and the actor is "system" unless given.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable

from django.core.serializers.json import DjangoJSONEncoder
from django.forms.models import model_to_dict
from django.http import HttpRequest, HttpResponse

from aimconsole.models import AuditEvent


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
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy sets it;
    # deployments behind a proxy configure the server (daphne --proxy-headers) to rewrite it.
    return request.META.get("REMOTE_ADDR") or None


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
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder, default=str))


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


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u0080-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape_control(value: Any) -> str:
    """Control and bidi characters shown as visible escapes (``\\x1b``) instead of acting."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", str(value))
