"""Django admin for the catalog. Saves go through models.services so profiles stay computed."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from aimconsole import audit
from models import services
from models.models import InferenceModel, ModelPrecision, ModelProfile, Precision
from models.services import DEFAULT_CONCURRENT_SEQUENCES, DEFAULT_CONTEXT_TOKENS


@admin.register(Precision)
class PrecisionAdmin(admin.ModelAdmin):
    list_display = ("code", "label", "bytes_per_weight", "sort_order")
    search_fields = ("code", "label")

    def save_model(self, request: HttpRequest, obj: Precision, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        audit.record("catalog.precision." + ("update" if change else "create"), obj=obj,
                     before={k: str(form.initial.get(k)) for k in form.changed_data} if change else None,
                     after={k: str(form.cleaned_data.get(k)) for k in form.changed_data})
        if change:
            for model in InferenceModel.objects.filter(precisions=obj):
                services.refresh_profiles(model=model)


class ModelPrecisionInline(admin.TabularInline):
    model = ModelPrecision
    extra = 0
    min_num = 1
    verbose_name = "offered precision"
    verbose_name_plural = "offered precisions (one profile per GPU model each)"


@admin.register(InferenceModel)
class InferenceModelAdmin(admin.ModelAdmin):
    list_display = ("hf_id", "vendor", "family", "architecture", "total_params_b", "active_params_b", "context_length", "config_confidence")
    list_filter = ("vendor", "architecture", "attention", "modality", "config_confidence", "precisions")
    search_fields = ("hf_id", "upstream_id", "name", "family", "vendor")
    inlines = (ModelPrecisionInline,)
    readonly_fields = ("fit_table", "updated_at")
    fieldsets = (
        (None, {"fields": ("hf_id", "upstream_id", "name", "vendor", "family", "modality", "notes")}),
        ("Size", {"fields": ("architecture", "total_params_b", "active_params_b", "context_length")}),
        ("Transformer configuration (sizes the KV cache)", {"fields": (
            "num_layers", "num_attention_heads", "attention", "num_kv_heads", "head_dim",
            "kv_lora_rank", "qk_rope_head_dim", "config_confidence")}),
        ("Computed fit (default profiles: 8192 tokens, 1 sequence)", {"fields": ("fit_table", "updated_at")}),
    )

    @admin.display(description="Fit per GPU model")
    def fit_table(self, obj: InferenceModel) -> SafeString:
        if not obj.pk:
            return SafeString("Computed after the first save.")
        profiles = obj.profiles.with_related().filter(
            context_tokens=DEFAULT_CONTEXT_TOKENS, concurrent_sequences=DEFAULT_CONCURRENT_SEQUENCES
        )
        return SafeString(render_to_string("admin/catalog/fit_table.html", {"profiles": profiles}))

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # Inputs (fields and offered precisions) are saved now; recompute in the same
        # transaction (the admin wraps the whole change view in one).
        services.refresh_profiles(model=form.instance)
        audit.record("catalog.model." + ("update" if change else "create"), obj=form.instance,
                     before={k: str(form.initial.get(k)) for k in form.changed_data} if change else None,
                     after={k: str(form.cleaned_data.get(k)) for k in form.changed_data} or {"precisions": "changed"})

    def delete_model(self, request: HttpRequest, obj: InferenceModel) -> None:
        audit.record("catalog.model.delete", obj=obj, before=audit.snapshot(obj))
        super().delete_model(request, obj)


class ModelProfileForm(forms.ModelForm):
    class Meta:
        model = ModelProfile
        fields = ("model", "precision", "gpu_model", "context_tokens", "concurrent_sequences")

    def _post_clean(self) -> None:
        # Django's hook that runs the model's validation on the form: the computed sizing is
        # checked there too, so its errors show on the form's fields. (Private API, not in the stubs.)
        super()._post_clean()  # type: ignore[misc]
        if not self.errors:
            try:
                services.compute_profile(self.instance, save=False)
            except ValidationError as exc:
                self._update_errors(exc)  # type: ignore[attr-defined]


@admin.register(ModelProfile)
class ModelProfileAdmin(admin.ModelAdmin):
    form = ModelProfileForm
    list_display = ("model", "precision", "gpu_model", "context_tokens", "concurrent_sequences", "memory_required_gb", "smallest_partition", "gpus_needed")
    list_filter = ("gpu_model", "precision", "smallest_partition", "gpus_needed")
    search_fields = ("model__hf_id",)
    list_select_related = ("model", "precision")
    autocomplete_fields = ("model",)
    readonly_fields = (
        "weights_gb", "kv_cache_gb", "overhead_gb", "memory_required_gb", "fits",
        "smallest_partition", "replicas_per_gpu", "gpus_needed", "computed_at",
    )

    def save_model(self, request: HttpRequest, obj: ModelProfile, form, change: bool) -> None:
        obj.save()  # results were computed (and checked) while the form was validated
        audit.record("catalog.profile." + ("update" if change else "create"), obj=obj, after=audit.snapshot(obj))

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelProfile]:
        return ModelProfile.objects.with_related().filter(pk__in=super().get_queryset(request).values("pk"))
