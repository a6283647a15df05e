"""API token authentication against hashed tokens (aimconsole.models.ApiToken).

Header: ``Authorization: Token <key>`` or ``Authorization: Bearer <key>``; the token must hold
the ``api`` scope (aimconsole/tokens.py does the checking).
"""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions

from aimconsole import tokens
from aimconsole.models import ApiToken, TokenScope

# The challenge sent with a refused token (RFC 6750).
CHALLENGE = 'Bearer realm="api", error="invalid_token"'


class InvalidTokenError(exceptions.AuthenticationFailed):
    """A presented token was refused. Answered 401 with ``WWW-Authenticate: Bearer`` by
    aimconsole.api.exception_handler: DRF itself would turn it into 403, because the first
    authentication class (the session) has no challenge to offer."""


class HashedTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Any) -> tuple[Any, ApiToken] | None:
        try:
            key = tokens.key_from_header(authentication.get_authorization_header(request))
            if key is None:
                return None
            token = tokens.check_key(key, scope=TokenScope.API)
        except tokens.MissingScope as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        except tokens.InvalidToken as exc:
            raise InvalidTokenError(str(exc)) from None
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return CHALLENGE
