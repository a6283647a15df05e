"""Console-wide state changes: API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from aimconsole import audit
from aimconsole.models import ApiToken, hash_token


@transaction.atomic
def create_token(*, user: Any, name: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns (row, key). The key is not stored and is shown once."""
    key, prefix = ApiToken.new_key()
    token = ApiToken.objects.create(user=user, name=name, prefix=prefix, key_hash=hash_token(key), expires_at=expires_at)
    audit.record("token.create", obj=token, after={"user": user.get_username(), "name": name, "prefix": prefix,
                                                  "expires_at": expires_at.isoformat() if expires_at else None})
    return token, key


@transaction.atomic
def revoke_token(*, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record("token.revoke", obj=token, before={"revoked_at": None}, after={"revoked_at": token.revoked_at.isoformat()})
    return token
