"""Plans moved to the planning app and deployments to the serving app (state only).

The tables keep their names (partitions_plan, partitions_deployment, partitions_deploymentslot),
so no data moves and an existing database upgrades in place. Content types move with the
models, so permissions granted to groups and audit rows that name them stay valid.
"""

import django.db.models.deletion
from django.db import migrations, models

MOVED = {"plan": "planning", "deployment": "serving", "deploymentslot": "serving"}


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model, app_label in MOVED.items():
        # A content type created for the new label before this ran (post_migrate of an earlier
        # run) would collide: keep the old row (permissions point at it) and drop the new one.
        ContentType.objects.using(db).filter(app_label=app_label, model=model).delete()
        ContentType.objects.using(db).filter(app_label="partitions", model=model).update(app_label=app_label)


def restore_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model, app_label in MOVED.items():
        ContentType.objects.using(db).filter(app_label=app_label, model=model).update(app_label="partitions")


class Migration(migrations.Migration):

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("partitions", "0003_deployments_and_plans"),
        ("planning", "0001_initial"),
        ("serving", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="reconfiguration",
                    name="plan",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                            related_name="reconfigurations", to="planning.plan"),
                ),
                migrations.DeleteModel(name="DeploymentSlot"),
                migrations.DeleteModel(name="Deployment"),
                migrations.DeleteModel(name="Plan"),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_types, restore_content_types),
    ]
