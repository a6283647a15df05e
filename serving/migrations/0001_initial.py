"""Deployment and DeploymentSlot, moved here from the partitions app with their tables.

State only: the table already exists (created by partitions 0003 under this name), so
upgrading moves no data. See partitions 0004 for the other half of the move.
"""

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('catalog', '0002_profile_per_gpu_gb'),
        ('partitions', '0003_deployments_and_plans'),
        ('planning', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Deployment',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.SlugField(max_length=63)),
                        ('replicas', models.PositiveSmallIntegerField(validators=[django.core.validators.MinValueValidator(1)])),
                        ('priority', models.SmallIntegerField(default=0, help_text='Higher runs first and is never moved for a lower one.')),
                        ('spread', models.BooleanField(default=False, help_text='Replicas on different GPUs (and nodes when possible).')),
                        ('pin_gpu_index', models.PositiveSmallIntegerField(blank=True, null=True)),
                        ('state', models.CharField(choices=[('pending', 'Pending'), ('scheduled', 'Scheduled'), ('running', 'Running'), ('stopped', 'Stopped'), ('failed', 'Failed')], default='pending', max_length=10)),
                        ('state_message', models.TextField(blank=True)),
                        ('planned_slots', models.JSONField(blank=True, default=list, help_text='Where a plan puts the replicas before the partitions exist.')),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('pin_node', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='partitions.node')),
                        ('profile', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='deployments', to='catalog.modelprofile')),
                        ('plan', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='deployments', to='planning.plan')),
                        ('requested_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'constraints': [
                            models.UniqueConstraint(condition=models.Q(('state__in', ('pending', 'scheduled', 'running'))), fields=('name',), name='deployment_active_name_unique'),
                            models.CheckConstraint(condition=models.Q(('replicas__gte', 1)), name='deployment_replicas_positive'),
                        ],
                        'db_table': 'partitions_deployment',
                        'ordering': ('-created_at', '-id'),
                    },
                ),
                migrations.CreateModel(
                    name='DeploymentSlot',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('replica', models.PositiveSmallIntegerField()),
                        ('started_at', models.DateTimeField(blank=True, help_text="When the node's agent started this replica.", null=True)),
                        ('deployment', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='slots', to='serving.deployment')),
                        ('partition', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='slot', to='partitions.partition')),
                    ],
                    options={
                        'db_table': 'partitions_deploymentslot',
                        'ordering': ('deployment', 'replica'),
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
