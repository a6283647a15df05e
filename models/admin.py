"""Django admin for the catalog. Saves go through models.services so profiles stay computed."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from aimconsole import audit
from models import services, sizing
from models.models import InferenceModel, ModelPrecision, ModelProfile, Precision
from models.services import DEFAULT_CONCURRENT_SEQUENCES, default_context_tokens, default_profiles
from partitions.geometry import GPU_MODELS

# The InferenceModel fields sizing reads, in the order an unattributed sizing error is shown on.
SIZING_FIELDS = ("total_params_b", "active_params_b", "num_layers", "num_attention_heads", "num_kv_heads", "head_dim",
                 "kv_lora_rank", "qk_rope_head_dim", "attention", "context_length")


def _field_for(message: str, changed: Iterable[str], default: str) -> str:
    """The form field a sizing error belongs on: among the fields its message names, the one
    the admin changed (else the first named); when it names none, the first changed sizing
    field (else ``default``)."""
    changed = [f for f in SIZING_FIELDS if f in set(changed)]
    named = [f for f in SIZING_FIELDS if re.search(rf"\b{f}\b", message)]
    return next((f for f in named if f in changed), None) or (named or changed or [default])[0]


def _sizing_failure(profiles: Sequence[ModelProfile], *, name_model: bool = False) -> str | None:
    """Size ``profiles`` in memory (nothing is saved): why the first that cannot be sized
    fails, and how many others fail too; None when all can be."""
    failed: list[tuple[ModelProfile, str]] = []
    for profile in profiles:
        try:
            services.compute_profile(profile, save=False)
        except sizing.SizingError as exc:
            failed.append((profile, str(exc)))
        except ValidationError as exc:
            cause = exc.__cause__
            failed.append((profile, str(cause) if isinstance(cause, sizing.SizingError) else " ".join(exc.messages)))
    if not failed:
        return None
    profile, why = failed[0]
    which = f"{profile.model.hf_id} " if name_model else ""
    more = f" ({len(failed) - 1} more profile(s) cannot be sized either)" if len(failed) > 1 else ""
    return (f"cannot be sized: {which}{profile.precision.code} on {profile.gpu_model} at {profile.context_tokens} "
            f"tokens x {profile.concurrent_sequences} sequence(s): {why}{more}")


def _warn(request: HttpRequest, warnings: Iterable[str]) -> None:
    """Show the save's sizing warnings (running deployments that no longer fit) above the page."""
    for line in warnings:
        messages.warning(request, line)


class PrecisionForm(forms.ModelForm):
    class Meta:
        model = Precision
        fields = ("code", "label", "bytes_per_weight", "description", "sort_order")

    def _post_clean(self) -> None:
        # Saving recomputes every profile at this precision: size them first, so that a size
        # some model cannot take is an error on the field, not a failed save.
        super()._post_clean()  # type: ignore[misc]
        if self.errors or not self.instance.pk or "bytes_per_weight" not in self.changed_data:
            return
        profiles = list(ModelProfile.objects.filter(precision_id=self.instance.pk).select_related("model"))
        for profile in profiles:
            profile.precision = self.instance
        failure = _sizing_failure(profiles, name_model=True)
        if failure:
            self.add_error("bytes_per_weight", failure)


@admin.register(Precision)
class PrecisionAdmin(admin.ModelAdmin):
    form = PrecisionForm
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
            _warn(request, services.sizing_warnings(profile_ids=ModelProfile.objects.filter(precision=obj).values_list("pk", flat=True)))


class ModelPrecisionInline(admin.TabularInline):
    model = ModelPrecision
    extra = 0
    min_num = 1
    verbose_name = "offered precision"
    verbose_name_plural = "offered precisions (one profile per GPU model each)"


class InferenceModelForm(forms.ModelForm):
    """Sizes the model before it is saved: the admin's save recomputes every profile (in
    ``save_related``, too late to show a form error), so inputs that sizing refuses, or that
    no layout holds, are errors on the form's fields here."""

    # The admin's inline formset of offered precisions (set by InferenceModelAdmin.get_form):
    # read from the same POST to know which profiles the save will compute.
    precision_formset: Any = None

    class Meta:
        model = InferenceModel
        # The admin's fieldsets choose the fields shown; these are all the form may take.
        fields = ("hf_id", "upstream_id", "name", "vendor", "family", "modality", "notes", "architecture",
                  "total_params_b", "active_params_b", "context_length", "num_layers", "num_attention_heads",
                  "attention", "num_kv_heads", "head_dim", "kv_lora_rank", "qk_rope_head_dim", "native_precision",
                  "config_confidence")

    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]
        if self.errors:
            return
        try:
            sizing.ModelShape.of(self.instance)
        except sizing.SizingError as exc:
            self.add_error(_field_for(str(exc), self.changed_data, "total_params_b"), str(exc))
            return
        precisions = self._offered_precisions()
        if precisions is None:
            return  # the inline's own errors show
        failure = _sizing_failure(self._profiles(precisions))
        if failure:
            self.add_error(_field_for("", self.changed_data, "total_params_b"), failure)

    def _offered_precisions(self) -> list[Precision] | None:
        if self.precision_formset is None:
            return list(self.instance.precisions.all()) if self.instance.pk else []
        formset = self.precision_formset(self.data, self.files, instance=self.instance,
                                         prefix=self.precision_formset.get_default_prefix())
        if not formset.is_valid():
            return None
        deleted = set(map(id, formset.deleted_forms))
        return [f.cleaned_data["precision"] for f in formset.forms
                if id(f) not in deleted and f.cleaned_data.get("precision") is not None]

    def _profiles(self, precisions: Sequence[Precision]) -> list[ModelProfile]:
        """The profiles ``services.refresh_profiles`` will compute, unsaved, on the edited model."""
        context = default_context_tokens(self.instance.context_length)
        profiles = [ModelProfile(model=self.instance, precision=p, gpu_model=gpu, context_tokens=context,
                                 concurrent_sequences=DEFAULT_CONCURRENT_SEQUENCES)
                    for p in precisions for gpu in GPU_MODELS]
        if self.instance.pk:
            custom = (ModelProfile.objects.filter(model_id=self.instance.pk, precision__in=precisions).select_related("precision")
                      .exclude(context_tokens=context, concurrent_sequences=DEFAULT_CONCURRENT_SEQUENCES))
            profiles += list(custom)
        for profile in profiles:
            profile.model = self.instance
        return profiles


@admin.register(InferenceModel)
class InferenceModelAdmin(admin.ModelAdmin):
    form = InferenceModelForm
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
        ("Computed fit (default profiles: 8192 tokens or the max context, 1 sequence)", {"fields": ("fit_table", "updated_at")}),
    )

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        inline = ModelPrecisionInline(self.model, self.admin_site)
        return type(form.__name__, (form,), {"precision_formset": inline.get_formset(request, obj)})

    @admin.display(description="Fit per GPU model")
    def fit_table(self, obj: InferenceModel) -> SafeString:
        if not obj.pk:
            return SafeString("Computed after the first save.")
        profiles = obj.profiles.with_related().filter(default_profiles())
        return SafeString(render_to_string("admin/catalog/fit_table.html", {"profiles": profiles}))

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # Inputs (fields and offered precisions) are saved now; recompute in the same
        # transaction (the admin wraps the whole change view in one).
        services.refresh_profiles(model=form.instance)
        audit.record("catalog.model." + ("update" if change else "create"), obj=form.instance,
                     before={k: str(form.initial.get(k)) for k in form.changed_data} if change else None,
                     after={k: str(form.cleaned_data.get(k)) for k in form.changed_data} or {"precisions": "changed"})
        if change:
            _warn(request, services.model_sizing_warnings(model=form.instance))

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
            except sizing.SizingError as exc:  # the model's own shape (services sizes it outside its guard)
                self.add_error("model", f"cannot size this profile: {exc}")


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
        if change:
            _warn(request, services.sizing_warnings(profile_ids=[obj.pk]))

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelProfile]:
        return ModelProfile.objects.with_related().filter(pk__in=super().get_queryset(request).values("pk"))
