"""The deployments list's keyset (newest first) on an index: a deep page is a seek."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("serving", "0004_deployment_sizing_snapshot"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="deployment",
            index=models.Index(fields=["-created_at", "-id"], name="deployment_newest_first"),
        ),
    ]
