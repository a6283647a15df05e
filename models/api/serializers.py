from __future__ import annotations

from django.db import transaction
from rest_framework import serializers

from aimconsole import audit
from aimconsole.api import RejectUnknownFieldsMixin
from models import services
from models.models import InferenceModel, ModelProfile, Precision


class PrecisionSerializer(serializers.ModelSerializer[Precision]):
    class Meta:
        model = Precision
        fields = ("code", "label", "bytes_per_weight", "description")
        read_only_fields = fields


def _model_state(model: InferenceModel) -> dict:
    state = audit.snapshot(model, fields=[f.name for f in InferenceModel._meta.concrete_fields if f.name != "updated_at"])
    state["precisions"] = sorted(model.precisions.values_list("code", flat=True))
    return state


class SizingWarningsMixin:
    # Set by update: the warning that running deployments no longer fit the new sizing
    # (models.services.sizing_warnings), returned as the response's ``warnings``.
    sizing_warnings: list[str] = []


class InferenceModelSerializer(SizingWarningsMixin, RejectUnknownFieldsMixin, serializers.ModelSerializer[InferenceModel]):
    precisions = serializers.SlugRelatedField(
        slug_field="code", many=True, queryset=Precision.objects.all(),
        help_text="Precision codes the model is offered in; one profile per GPU model each.",
    )

    class Meta:
        model = InferenceModel
        fields = (
            "id", "hf_id", "upstream_id", "name", "vendor", "family", "architecture", "modality",
            "total_params_b", "active_params_b", "context_length", "num_layers",
            "num_attention_heads", "attention", "num_kv_heads", "head_dim", "kv_lora_rank",
            "qk_rope_head_dim", "native_precision", "config_confidence", "notes", "precisions", "updated_at",
        )
        read_only_fields = ("id", "updated_at")

    def validate(self, attrs: dict) -> dict:
        # Run the model's own cross-field rules (one place: InferenceModel.clean) on the
        # merged instance so PATCH is validated as the row that would be saved.
        candidate = InferenceModel(**{**self._current_values(), **{k: v for k, v in attrs.items() if k != "precisions"}})
        candidate.clean()
        return attrs

    def _current_values(self) -> dict:
        if self.instance is None:
            return {}
        return {f.name: getattr(self.instance, f.name) for f in InferenceModel._meta.concrete_fields}

    @transaction.atomic
    def create(self, validated_data: dict) -> InferenceModel:
        precisions = validated_data.pop("precisions")
        model = InferenceModel.objects.create(**validated_data)
        services.set_model_precisions(model=model, precisions=precisions)
        services.refresh_profiles(model=model)
        audit.record("catalog.model.create", obj=model, after=_model_state(model))
        return model

    @transaction.atomic
    def update(self, instance: InferenceModel, validated_data: dict) -> InferenceModel:
        before = _model_state(instance)
        precisions = validated_data.pop("precisions", None)
        for name, value in validated_data.items():
            setattr(instance, name, value)
        instance.save()
        if precisions is not None:
            services.set_model_precisions(model=instance, precisions=precisions)
        services.refresh_profiles(model=instance)
        audit.record("catalog.model.update", obj=instance, before=before, after=_model_state(instance))
        self.sizing_warnings = services.model_sizing_warnings(model=instance)
        return instance


class ModelProfileSerializer(SizingWarningsMixin, RejectUnknownFieldsMixin, serializers.ModelSerializer[ModelProfile]):
    model = serializers.SlugRelatedField(slug_field="hf_id", queryset=InferenceModel.objects.all())
    precision = serializers.SlugRelatedField(slug_field="code", queryset=Precision.objects.all())
    gpu = serializers.ChoiceField(source="gpu_model", choices=list(ModelProfile._meta.get_field("gpu_model").choices or ()))
    fits = serializers.DictField(
        child=serializers.BooleanField(), read_only=True,
        help_text="Compute mode -> whether one partition of that mode holds the model.",
    )
    replicas_per_gpu = serializers.DictField(child=serializers.IntegerField(), read_only=True)
    partition_memory_estimated = serializers.BooleanField(
        read_only=True, help_text="True where the GPU's per-partition memory is a nominal figure."
    )

    class Meta:
        model = ModelProfile
        fields = (
            "id", "model", "precision", "gpu", "context_tokens", "concurrent_sequences",
            "memory_required_gb", "weights_gb", "kv_cache_gb", "overhead_gb", "fits",
            "smallest_partition", "replicas_per_gpu", "gpus_needed", "per_gpu_gb",
            "partition_memory_estimated", "computed_at",
        )
        read_only_fields = (
            "id", "memory_required_gb", "weights_gb", "kv_cache_gb", "overhead_gb",
            "smallest_partition", "gpus_needed", "per_gpu_gb", "computed_at",
        )

    def validate(self, attrs: dict) -> dict:
        current = {} if self.instance is None else {
            "model": self.instance.model, "precision": self.instance.precision,
            "gpu_model": self.instance.gpu_model, "context_tokens": self.instance.context_tokens,
            "concurrent_sequences": self.instance.concurrent_sequences,
        }
        candidate = ModelProfile(**{**current, **attrs})
        if self.instance is not None:
            candidate.pk = self.instance.pk
        candidate.clean()  # the model's own rules (precision offered by the model)
        candidate.validate_constraints()  # unique inputs, with a message naming the fields
        return attrs

    @transaction.atomic
    def create(self, validated_data: dict) -> ModelProfile:
        profile = ModelProfile(**validated_data)
        services.compute_profile(profile)
        audit.record("catalog.profile.create", obj=profile, after=audit.snapshot(profile))
        return profile

    @transaction.atomic
    def update(self, instance: ModelProfile, validated_data: dict) -> ModelProfile:
        before = audit.snapshot(instance)
        for name, value in validated_data.items():
            setattr(instance, name, value)
        services.compute_profile(instance)
        instance.save()  # inputs may change while every result stays the same
        audit.record("catalog.profile.update", obj=instance, before=before, after=audit.snapshot(instance))
        self.sizing_warnings = services.sizing_warnings(profile_ids=[instance.pk])
        return instance
