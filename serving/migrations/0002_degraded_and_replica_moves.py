"""Deployments: the ``degraded`` state (counted as active for the unique name), slot states
(``retiring``: the old copy of a replica moving make-before-break) and ``ReplicaMove`` rows
(issue 11, 3.1 and 3c). Adds a column and a table; existing rows become ``active`` slots."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('planning', '0001_initial'),
        ('serving', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='ReplicaMove',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('replica', models.PositiveSmallIntegerField()),
                ('strategy', models.CharField(choices=[('make_before_break', 'Make before break'), ('stop_then_start', 'Stop then start')], max_length=20)),
                ('state', models.CharField(choices=[('waiting', 'Waiting (old copy serving)'), ('stopped', 'Stopped (waiting for its new partitions)'), ('starting', 'Starting the new copy'), ('done', 'Done'), ('cancelled', 'Cancelled'), ('failed', 'Failed')], max_length=10)),
                ('source', models.JSONField(default=list, help_text='Where the replica was: [{node, gpu_index, partition_index}].')),
                ('target', models.JSONField(default=list, help_text='Where the plan puts it: [{node, gpu_index, partition_index, compute_mode, memory_gb}].')),
                ('message', models.TextField(blank=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('started_at', models.DateTimeField(blank=True, help_text='When the new copy had started on every new partition.', null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'ordering': ('deployment', 'replica', '-created_at'),
            },
        ),
        migrations.RemoveConstraint(
            model_name='deployment',
            name='deployment_active_name_unique',
        ),
        migrations.AddField(
            model_name='deploymentslot',
            name='state',
            field=models.CharField(choices=[('active', 'Active'), ('retiring', 'Retiring (old copy of a moving replica)')], default='active', max_length=8),
        ),
        migrations.AlterField(
            model_name='deployment',
            name='state',
            field=models.CharField(choices=[('pending', 'Pending'), ('scheduled', 'Scheduled'), ('running', 'Running'), ('degraded', 'Degraded'), ('stopped', 'Stopped'), ('failed', 'Failed')], default='pending', max_length=10),
        ),
        migrations.AddConstraint(
            model_name='deployment',
            constraint=models.UniqueConstraint(condition=models.Q(('state__in', ('pending', 'scheduled', 'running', 'degraded'))), fields=('name',), name='deployment_active_name_unique'),
        ),
        migrations.AddField(
            model_name='replicamove',
            name='deployment',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='moves', to='serving.deployment'),
        ),
        migrations.AddField(
            model_name='replicamove',
            name='plan',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='replica_moves', to='planning.plan'),
        ),
        migrations.AddConstraint(
            model_name='replicamove',
            constraint=models.UniqueConstraint(condition=models.Q(('state__in', ('waiting', 'stopped', 'starting'))), fields=('deployment', 'replica'), name='replica_move_one_active_per_replica'),
        ),
    ]
