"""Console-wide records: the audit trail and API tokens."""

from __future__ import annotations

import functools
import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from aimconsole.text import escape_control


class AppendOnlyError(RuntimeError):
    pass


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs):
        raise AppendOnlyError("audit events cannot be changed")

    def delete(self):
        raise AppendOnlyError("audit events cannot be deleted")


class AuditEvent(models.Model):
    """One state change: who did what, to which object, before → after, when (UTC), from
    which request and address. Append-only: the application refuses updates and deletes, and
    on PostgreSQL a trigger refuses them in the database too (migration 0003)."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_id = models.IntegerField(null=True, blank=True, help_text="User id (no foreign key: rows outlive users).")
    actor = models.CharField(max_length=150, help_text="Username at the time, or 'system' / an agent name.")
    action = models.CharField(max_length=64, db_index=True)  # e.g. "catalog.model.update"
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ("-at", "-id")

    def __str__(self) -> str:
        # Shown by Django admin (titles, breadcrumbs): the actor and id may hold control characters.
        return escape_control(f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type} {self.object_id}")

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise AppendOnlyError("audit events cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("audit events cannot be deleted")


TOKEN_PREFIX_LENGTH = 8


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class TokenScope(models.TextChoices):
    """What a token may be used for. A token is accepted only where one of its scopes is:
    ``api`` for /api/v1/, ``metrics`` for /metrics (so the credential a Prometheus server
    holds cannot change the fleet), ``inference`` for the inference gateway's /v1/ (so an
    application calling models cannot change the fleet or read the metrics either; the
    gateway caches a verdict for up to 30 s, so a revoked token stops working there within
    that)."""

    API = "api", "REST API"
    METRICS = "metrics", "Prometheus /metrics"
    INFERENCE = "inference", "Inference gateway /v1/"


ISSUABLE_SCOPES = (TokenScope.API, TokenScope.METRICS, TokenScope.INFERENCE)


def default_token_scopes() -> list[str]:
    return [TokenScope.API.value]


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def usable(self) -> ApiTokenQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class ApiToken(models.Model):
    """An API token. Only its SHA-256 is stored; the key is shown once when created.

    Keys look like ``aim_<8-char prefix>_<secret>``; the prefix identifies the token in lists
    and logs without revealing it. Rotation: create a new token, switch the automation to it,
    revoke the old one (``DELETE /api/v1/tokens/<id>/``).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=TOKEN_PREFIX_LENGTH, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    scopes = models.JSONField(default=default_token_scopes, help_text="TokenScope values this token is accepted for.")

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.name} (aim_{self.prefix}_…)"

    @classmethod
    def new_key(cls) -> tuple[str, str]:
        """(full key, prefix)."""
        prefix = secrets.token_hex(TOKEN_PREFIX_LENGTH // 2)
        return f"aim_{prefix}_{secrets.token_urlsafe(32)}", prefix

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or ())

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())


@functools.cache
def known_timezones() -> frozenset[str]:
    """The IANA zone names this server knows (``zoneinfo.available_timezones()``, read once)."""
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def validate_timezone(value: str) -> None:
    """An IANA zone name the server knows, or empty (the server's ``TIME_ZONE``)."""
    from django.core.exceptions import ValidationError

    if value and value not in known_timezones():
        raise ValidationError(f"{value!r} is not a known timezone: use an IANA name such as Europe/Paris or UTC.",
                              code="invalid_timezone")


class Theme(models.TextChoices):
    AUTO = "auto", "Auto (follow the system)"
    LIGHT = "light", "Light"
    DARK = "dark", "Dark"


class UserPreference(models.Model):
    """How the console shows things to one user: the timezone of every time on the pages
    (empty: ``settings.TIME_ZONE``) and the colour theme."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference")
    timezone = models.CharField(max_length=64, blank=True, validators=[validate_timezone],
                                help_text="IANA timezone for times on the pages, e.g. Europe/Paris; empty: the server's.")
    theme = models.CharField(max_length=8, choices=Theme.choices, default=Theme.AUTO)

    def __str__(self) -> str:
        return f"preferences of {self.user}"
