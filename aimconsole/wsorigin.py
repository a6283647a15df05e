"""WebSocket Origin check: the page that opens a socket must come from the console's own origin
(scheme, host and port), or from one listed in ``CSRF_TRUSTED_ORIGINS``.

Browsers send cookies with a WebSocket handshake whatever page opens it, and there is no CSRF
token on a socket: the Origin header is the only defence. Channels' AllowedHostsOriginValidator
compares host names only, so another service on another port of the same host (a different
origin, e.g. a notebook on :8888) could open sockets as the signed-in user.

The console's own origin is the request's Host header, which must itself be in ALLOWED_HOSTS.
Behind a TLS-terminating proxy the page is ``https://console.example.com`` and the Host has no
port: an origin without an explicit port matches a Host without one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_parts(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, effective port) of an origin, or None if it is not an http(s) origin."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:  # a port out of range or not a number
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme]


def origin_allowed(origin: str | None, host: str | None, *, allowed_hosts: Sequence[str],
                   trusted_origins: Sequence[str]) -> bool:
    """Whether a socket opened by a page from ``origin`` to ``host`` (the Host header) is
    accepted (see the module doc)."""
    parsed = _origin_parts(origin) if origin else None
    if parsed is None:
        return False
    if any(_origin_parts(trusted) == parsed for trusted in trusted_origins):
        return True
    domain, port = split_domain_port(host or "")
    if not domain or not validate_host(domain, list(allowed_hosts)):
        return False
    scheme, origin_host, origin_port = parsed
    if domain.strip("[]") != origin_host:
        return False
    if port:
        return int(port) == origin_port
    return origin_port == _DEFAULT_PORTS[scheme]


def _allowed_hosts() -> list[str]:
    # As Django's HttpRequest.get_host: DEBUG with no ALLOWED_HOSTS means local names.
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [".localhost", "127.0.0.1", "[::1]"]
    return list(settings.ALLOWED_HOSTS)


class SameOriginValidator:
    """ASGI middleware for the websocket router: refuses the handshake (HTTP 403) unless
    ``origin_allowed``."""

    def __init__(self, application: Callable[..., Awaitable[None]]) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            headers = {name.lower(): value.decode("latin-1") for name, value in scope.get("headers", ())}
            if not origin_allowed(headers.get(b"origin"), headers.get(b"host"), allowed_hosts=_allowed_hosts(),
                                  trusted_origins=list(getattr(settings, "CSRF_TRUSTED_ORIGINS", ()))):
                denier = WebsocketDenier()
                await denier(scope, receive, send)
                return
        await self.application(scope, receive, send)
