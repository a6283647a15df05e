"""Deployments keep the sizing they were placed with (issue 13, 5): a later edit of the model's
sizing is compared with it. Existing rows are backfilled from their profile as it is now."""

from django.db import migrations, models


def snapshot_of(profile) -> dict:  # type: ignore[no-untyped-def]
    # Kept in step with serving.services.sizing_snapshot (a migration does not import app code).
    model, precision = profile.model, profile.precision
    replica_gb = profile.per_gpu_gb if profile.gpus_needed > 1 and profile.per_gpu_gb else profile.memory_required_gb
    return {
        "model": model.hf_id, "precision": precision.code, "bytes_per_weight": float(precision.bytes_per_weight),
        "gpu_model": profile.gpu_model, "total_params_b": model.total_params_b, "num_layers": model.num_layers,
        "context_tokens": profile.context_tokens, "concurrent_sequences": profile.concurrent_sequences,
        "weights_gb": profile.weights_gb, "kv_cache_gb": profile.kv_cache_gb, "overhead_gb": profile.overhead_gb,
        "memory_required_gb": profile.memory_required_gb, "gpus_needed": profile.gpus_needed,
        "per_gpu_gb": profile.per_gpu_gb, "replica_memory_gb": replica_gb, "backfilled": True,
    }


def backfill(apps, schema_editor) -> None:  # type: ignore[no-untyped-def]
    Deployment = apps.get_model("serving", "Deployment")
    for deployment in Deployment.objects.select_related("profile__model", "profile__precision").iterator(chunk_size=500):
        deployment.sizing_snapshot = snapshot_of(deployment.profile)
        deployment.save(update_fields=["sizing_snapshot"])


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0005_sizing_bounds'),
        ('serving', '0003_serving_runtime'),
    ]

    operations = [
        migrations.AddField(
            model_name='deployment',
            name='sizing_snapshot',
            field=models.JSONField(blank=True, default=dict, help_text="The profile's sizing when the deployment was placed (memory_required_gb, replica_memory_gb, gpus_needed, parameters, context, precision...): what its partitions were chosen for."),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
