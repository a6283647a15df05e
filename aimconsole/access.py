"""Who may read ``/metrics``: the one rule, for whichever app serves the view.

In order:
1. A request carrying ``Authorization: Bearer <key>`` (or ``Token``) is judged on that token
   alone: it must be a usable token holding the ``metrics`` scope, of a user who still holds a
   role. A bad key is 401, a good key of another scope (an ``api`` token) or of a user without
   a role is 403. Credentials that fail are never rescued by the rules below.
2. A client whose trusted address (aimconsole/clientaddr.py: proxy headers only from
   ``AIM_TRUSTED_PROXIES``) is in ``AIM_METRICS_ALLOWED_CIDRS``. Production settings list no
   network unless the admin does; elsewhere loopback, for a Prometheus on the same host.
3. A signed-in console user holding a role (a person looking at the numbers).
Anything else is 401 with a Bearer challenge (403 for a signed-in user without a role).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from aimconsole import tokens
from aimconsole.clientaddr import client_ip, in_networks
from aimconsole.models import TokenScope
from aimconsole.roles import user_role

REALM = 'Bearer realm="aim-metrics"'


@dataclass(frozen=True)
class Decision:
    """``status`` is 200 when allowed, else 401 or 403; ``reason`` is for the refusal text."""

    allowed: bool
    status: int
    reason: str
    challenge: str = ""  # WWW-Authenticate value for a 401


def metrics_access(request: HttpRequest) -> Decision:
    """The decision for one request to /metrics (see the module doc)."""
    try:
        key = tokens.key_from_header(request.META.get("HTTP_AUTHORIZATION", ""))
        if key is not None:
            token = tokens.check_key(key, scope=TokenScope.METRICS)
            if user_role(token.user) is None:
                return Decision(False, 403, f"the token's user {token.user.get_username()} has no role")
            return Decision(True, 200, f"metrics token aim_{token.prefix}_")
    except tokens.InvalidToken as exc:
        return Decision(False, 401, str(exc), f'{REALM}, error="invalid_token"')
    except tokens.MissingScope as exc:
        return Decision(False, 403, f"{exc} Create one with `manage.py create_token USER --scope metrics`.")
    if in_networks(client_ip(request), settings.METRICS_ALLOWED_CIDRS):
        return Decision(True, 200, "client network allowed by AIM_METRICS_ALLOWED_CIDRS")
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        if user_role(user) is not None:
            return Decision(True, 200, f"signed in as {user.get_username()}")
        return Decision(False, 403, "signed in without a role")
    return Decision(False, 401, "send a metrics-scoped token: Authorization: Bearer <key>", REALM)


def metrics_access_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Decorator for the /metrics view: refuses (text/plain 401/403) unless ``metrics_access``
    allows the request."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        decision = metrics_access(request)
        if not decision.allowed:
            response = HttpResponse(f"metrics: not authorized: {decision.reason}\n", status=decision.status,
                                    content_type="text/plain; charset=utf-8")
            if decision.challenge:
                response["WWW-Authenticate"] = decision.challenge
            return response
        return view(request, *args, **kwargs)

    return guarded
