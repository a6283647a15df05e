from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles(sender, **kwargs):  # type: ignore[no-untyped-def]
    from aimconsole.roles import sync_role_groups

    sync_role_groups()


class AimConsoleConfig(AppConfig):
    name = "aimconsole"
    verbose_name = "AIM Console"

    def ready(self) -> None:
        # New models get permissions after every migrate; keep the role groups' grants in line.
        post_migrate.connect(_sync_roles, dispatch_uid="aimconsole.sync_roles")
