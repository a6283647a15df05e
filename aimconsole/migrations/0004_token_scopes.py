"""API tokens get scopes; tokens that exist keep working on the REST API (scope "api")."""

from __future__ import annotations

from django.db import migrations, models

import aimconsole.models


class Migration(migrations.Migration):
    dependencies = [("aimconsole", "0003_audit_append_only")]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="scopes",
            field=models.JSONField(default=aimconsole.models.default_token_scopes,
                                   help_text="TokenScope values this token is accepted for."),
        ),
    ]
