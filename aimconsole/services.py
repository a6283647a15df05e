"""Console-wide state changes: API tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from aimconsole import audit
from aimconsole.models import ISSUABLE_SCOPES, ApiToken, TokenScope, hash_token
from aimconsole.roles import user_role


class TokenNotAllowed(PermissionDenied):
    """The user may not hold an API token (no role)."""


def check_scopes(scopes: Sequence[str]) -> list[str]:
    """The scopes a new token may be given: known, issuable, no repeats, at least one."""
    if not scopes:
        raise ValidationError({"scopes": "give at least one scope: " + ", ".join(ISSUABLE_SCOPES)})
    if len(set(scopes)) != len(scopes):
        raise ValidationError({"scopes": "a scope is listed twice"})
    for scope in scopes:
        if scope not in ISSUABLE_SCOPES:
            raise ValidationError({"scopes": f"unknown scope {scope!r}; choose from " + ", ".join(ISSUABLE_SCOPES)})
    return [str(scope) for scope in scopes]


@transaction.atomic
def create_token(*, user: Any, name: str, expires_at: datetime | None = None,
                 scopes: Sequence[str] = (TokenScope.API,)) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns (row, key). The key is not stored and is shown once.

    Only users holding a role get one: a token acts as its user, and a user without a role may
    do nothing, so its token would only be a credential waiting for a role to be granted.
    """
    if user_role(user) is None:
        raise TokenNotAllowed(f"{user.get_username()} has no role (viewer, operator or admin): "
                              "only users with a role may hold API tokens")
    scopes = check_scopes(scopes)
    key, prefix = ApiToken.new_key()
    token = ApiToken.objects.create(user=user, name=name, prefix=prefix, key_hash=hash_token(key), expires_at=expires_at,
                                    scopes=scopes)
    audit.record("token.create", obj=token, after={"user": user.get_username(), "name": name, "prefix": prefix,
                                                  "scopes": scopes,
                                                  "expires_at": expires_at.isoformat() if expires_at else None})
    return token, key


@transaction.atomic
def revoke_token(*, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record("token.revoke", obj=token, before={"revoked_at": None}, after={"revoked_at": token.revoked_at.isoformat()})
    return token


# --- user preferences (timezone, theme) --------------------------------------------------------

def save_preferences(*, user: Any, timezone: str | None = None, theme: str | None = None) -> Any:
    """Set the user's timezone and/or theme (None: keep). Validated by the model (a known IANA
    zone, a known theme): ValidationError names the field and nothing is saved."""
    from aimconsole.models import UserPreference

    pref = UserPreference.objects.filter(user=user).first() or UserPreference(user=user)
    if timezone is not None:
        pref.timezone = timezone.strip()
    if theme is not None:
        pref.theme = theme
    pref.full_clean(exclude=["user"])
    pref.save()
    return pref
