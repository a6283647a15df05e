from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles(sender, **kwargs):
    from aimconsole.roles import sync_role_groups

    sync_role_groups()


def _audit_login(sender, request, user, **kwargs):
    from aimconsole import audit

    audit.record("auth.login", obj=user, actor=user, after={"backend": getattr(user, "backend", "")})


def _audit_login_failed(sender, credentials, request=None, **kwargs):
    from aimconsole import audit

    username = str(credentials.get("username", ""))[:150]
    audit.record("auth.login_failed", object_type="auth.user", object_id="", after={"username": username},
                 actor_name=f"anonymous ({username[:100]})")


class AimConsoleConfig(AppConfig):
    name = "aimconsole"
    verbose_name = "AIM Console"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_login_failed

        from aimconsole import schema  # noqa: F401 - registers the OpenAPI auth extension

        # New models get permissions after every migrate; keep the role groups' grants in line.
        post_migrate.connect(_sync_roles, dispatch_uid="aimconsole.sync_roles")
        user_logged_in.connect(_audit_login, dispatch_uid="aimconsole.audit_login")
        from aimconsole.preferences import on_login

        user_logged_in.connect(on_login, dispatch_uid="aimconsole.preferences_login")
        user_login_failed.connect(_audit_login_failed, dispatch_uid="aimconsole.audit_login_failed")
        # Group membership and permission grants are privilege changes, however they are made.
        from django.db.models.signals import m2m_changed

        from aimconsole.audit import privilege_relations, record_privilege_m2m

        for through in privilege_relations():
            m2m_changed.connect(record_privilege_m2m, sender=through, dispatch_uid=f"aimconsole.audit_m2m.{through._meta.label}")
        # So are users and groups created, changed (staff, superuser, active…) and deleted.
        from django.db.models.signals import post_delete, post_save, pre_save

        from aimconsole.audit import account_models, record_account_deleted, record_account_saved, remember_account_state

        for model in account_models():
            uid = model._meta.label_lower
            pre_save.connect(remember_account_state, sender=model, dispatch_uid=f"aimconsole.audit_pre_save.{uid}")
            post_save.connect(record_account_saved, sender=model, dispatch_uid=f"aimconsole.audit_save.{uid}")
            post_delete.connect(record_account_deleted, sender=model, dispatch_uid=f"aimconsole.audit_delete.{uid}")
