"""Upper bounds (and finiteness) on the catalog's numbers: validators only, no schema change.

The values are written out rather than read from models.models, so this migration keeps
meaning what it meant if the limits change later."""

import django.core.validators
from django.db import migrations, models

from models.models import validate_finite


def _at_most(limit):  # type: ignore[no-untyped-def]
    return [django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(limit)]


_PARAMS = [validate_finite, django.core.validators.MinValueValidator(0.001),
           django.core.validators.MaxValueValidator(100000.0)]


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0002_profile_per_gpu_gb'),
    ]

    operations = [
        migrations.AlterField(
            model_name='inferencemodel', name='total_params_b',
            field=models.FloatField(validators=_PARAMS, verbose_name='total parameters (billions)'),
        ),
        migrations.AlterField(
            model_name='inferencemodel', name='active_params_b',
            field=models.FloatField(blank=True, help_text='Mixture-of-experts models only; all weights stay resident regardless.',
                                    null=True, validators=_PARAMS, verbose_name='active parameters (billions)'),
        ),
        migrations.AlterField(
            model_name='inferencemodel', name='context_length',
            field=models.PositiveIntegerField(validators=_at_most(134217728), verbose_name='maximum context (tokens)'),
        ),
        migrations.AlterField(
            model_name='inferencemodel', name='num_layers',
            field=models.PositiveIntegerField(validators=_at_most(1024)),
        ),
        migrations.AlterField(
            model_name='inferencemodel', name='num_attention_heads',
            field=models.PositiveIntegerField(blank=True, null=True, validators=_at_most(1024)),
        ),
        migrations.AlterField(
            model_name='inferencemodel', name='num_kv_heads',
            field=models.PositiveIntegerField(blank=True, null=True, validators=_at_most(1024)),
        ),
        migrations.AlterField(
            model_name='inferencemodel', name='head_dim',
            field=models.PositiveIntegerField(blank=True, null=True, validators=_at_most(4096)),
        ),
        migrations.AlterField(
            model_name='inferencemodel', name='kv_lora_rank',
            field=models.PositiveIntegerField(blank=True, null=True, validators=_at_most(65536)),
        ),
        migrations.AlterField(
            model_name='inferencemodel', name='qk_rope_head_dim',
            field=models.PositiveIntegerField(blank=True, null=True, validators=_at_most(4096)),
        ),
        migrations.AlterField(
            model_name='modelprofile', name='context_tokens',
            field=models.PositiveIntegerField(default=8192, validators=_at_most(134217728)),
        ),
        migrations.AlterField(
            model_name='modelprofile', name='concurrent_sequences',
            field=models.PositiveIntegerField(default=1, validators=_at_most(65536)),
        ),
    ]
