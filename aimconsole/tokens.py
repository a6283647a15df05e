"""Checking a presented API token: the one place both the REST API (authentication.py) and
/metrics (access.py) ask "is this key good, and good for this?".

Header forms: ``Authorization: Bearer <key>`` (what Prometheus sends) or ``Token <key>``.
Plain exceptions, so each edge answers in its own shape: the API with its JSON error and
/metrics with text, both 401 for a bad key and 403 for a good key of the wrong scope.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from aimconsole.models import ApiToken, hash_token

KEYWORDS = ("token", "bearer")
# last_used_at is informational: write it at most once a minute per token.
_TOUCH_EVERY = timedelta(minutes=1)


class TokenRefused(Exception):
    """The credentials were presented and are not accepted here."""


class InvalidToken(TokenRefused):
    """Unknown, malformed, revoked or expired key, or an inactive user: 401."""


class MissingScope(TokenRefused):
    """A good key whose scopes do not include the one asked for: 403."""


def key_from_header(header: str | bytes) -> str | None:
    """The key of an ``Authorization: Token|Bearer <key>`` header; None for other schemes
    (or no header), InvalidToken when the header is one of ours but malformed."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    parts = header.split()
    if not parts or parts[0].lower() not in KEYWORDS:
        return None
    if len(parts) != 2:
        raise InvalidToken("Invalid token header: send 'Authorization: Bearer <key>'.")
    return parts[1]


def check_key(key: str, *, scope: str) -> ApiToken:
    """The usable token for ``key`` if it holds ``scope`` (and notes its use)."""
    token = ApiToken.objects.usable().select_related("user").filter(key_hash=hash_token(key)).first()
    if token is None or not token.user.is_active:
        raise InvalidToken("Invalid, revoked or expired token.")
    if not token.has_scope(scope):
        held = ", ".join(token.scopes or ()) or "none"
        raise MissingScope(f"This token is not valid for {scope} (its scopes: {held}).")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > _TOUCH_EVERY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token
