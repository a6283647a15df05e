"""Create the viewer / operator / admin groups with their permissions (aimconsole/roles.py)."""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.db import migrations


def create_role_groups(apps, schema_editor):  # type: ignore[no-untyped-def]
    # Permissions are normally created after all migrations (post_migrate); create them now
    # so the groups get their grants in this migration.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    from aimconsole.roles import sync_role_groups

    sync_role_groups(apps)


def remove_role_groups(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("auth", "Group").objects.filter(name__in=("viewer", "operator", "admin")).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("catalog", "0001_initial"),
    ]
    operations = [migrations.RunPython(create_role_groups, remove_role_groups)]
