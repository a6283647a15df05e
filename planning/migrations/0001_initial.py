"""The Plan model, moved here from the partitions app with its table (partitions_plan).

State only: the table already exists (created by partitions 0003 under this name), so
upgrading moves no data. See partitions 0004 for the other half of the move.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('partitions', '0003_deployments_and_plans'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Plan',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('request', models.JSONField(help_text='What was asked: target layouts and/or demands.')),
                        ('result', models.JSONField(help_text='The plan: changes, displaced deployments, capacity, steps, ETA.')),
                        ('fingerprint', models.CharField(max_length=64)),
                        ('state', models.CharField(choices=[('draft', 'Draft'), ('applied', 'Applied'), ('stale', 'Stale')], default='draft', max_length=8)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('applied_at', models.DateTimeField(blank=True, null=True)),
                        ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'partitions_plan',
                        'ordering': ('-created_at', '-id'),
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
