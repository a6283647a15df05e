"""Plausibility bounds for sizing inputs: at most 10 T parameters (was 100 T, more than any
layout of 1024 GPUs holds) and at most 8 bytes per weight. Validators only, no schema change.

The values are written out rather than read from models.models, so this migration keeps
meaning what it meant if the limits change later."""

import django.core.validators
from django.db import migrations, models

from models.models import validate_finite

_PARAMS = [validate_finite, django.core.validators.MinValueValidator(0.001),
           django.core.validators.MaxValueValidator(
               10000.0, 'Ensure this value is less than or equal to %(limit_value)s (billions of parameters).')]


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0004_profile_serving_command'),
    ]

    operations = [
        migrations.AlterField(
            model_name='inferencemodel', name='active_params_b',
            field=models.FloatField(blank=True, help_text='Mixture-of-experts models only; all weights stay resident regardless.',
                                    null=True, validators=_PARAMS, verbose_name='active parameters (billions)'),
        ),
        migrations.AlterField(
            model_name='inferencemodel', name='total_params_b',
            field=models.FloatField(validators=_PARAMS, verbose_name='total parameters (billions)'),
        ),
        migrations.AlterField(
            model_name='precision', name='bytes_per_weight',
            field=models.DecimalField(decimal_places=2, max_digits=4, validators=[
                django.core.validators.MinValueValidator(0.01), django.core.validators.MaxValueValidator(8)]),
        ),
    ]
